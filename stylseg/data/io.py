"""Robust image and mask reading and atomic writing.

Images of any common mode (grayscale, RGBA, palette, 16-bit, CMYK) come back as RGB
``uint8`` arrays of shape ``(H, W, 3)``; masks of any encoding ({0,1}, {0,255}, label images, RGB,
JPEG-noisy) come back as ``bool`` arrays of shape ``(H, W)`` (the rule: :func:`read_mask`). Failures raise
:class:`~stylseg.utils.StylsegError` naming the file and the fix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..utils import StylsegError, atomic_path

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _open(path: os.PathLike) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise StylsegError(f"{path}: file not found")
    try:
        im = Image.open(path)
        im.load()
        return im
    except Image.DecompressionBombError as e:
        raise StylsegError(too_large(path, e)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise StylsegError(f"{path}: unreadable or corrupt image ({e}); replace or remove this file") from None


def too_large(path: os.PathLike, e: Exception) -> str:
    """The message for an image over Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS`` x 2)."""
    return (f"{path}: image too large to decode safely ({e}); a real image this large is not a lesion photograph: "
            f"resize it (the kit works at most at 256 px) or remove this file")


#: a lossless mask with at most this many distinct values is a label image: every non-zero label is lesion
LABEL_LEVELS = 8


def _levels(arr: np.ndarray) -> int:
    """The number of distinct values of ``arr`` (a bincount for 8- and 16-bit codes)."""
    if arr.dtype in (np.uint8, np.uint16):
        return int(np.count_nonzero(np.bincount(arr.ravel())))
    return len(np.unique(arr))


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale any integer or float array to uint8 (16-bit and float images included)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    a = arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.integer):
        hi = 65535.0 if a.max(initial=0) > 255 else 255.0
        return np.clip(np.round(a / hi * 255.0), 0, 255).astype(np.uint8)
    # float: [0,1] or arbitrary range
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if lo >= 0.0 and hi <= 1.0:
        return np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8)
    return np.clip(np.round((a - lo) / max(hi - lo, 1e-12) * 255.0), 0, 255).astype(np.uint8)


def read_image(path: os.PathLike) -> np.ndarray:
    """Read an image as RGB ``uint8`` ``(H, W, 3)``.

    Grayscale is repeated to three channels; RGBA/LA are composited on black (the alpha
    channel of a medical image carries no content); palette, CMYK, 16-bit and float images
    are converted.
    """
    im = _open(path)
    mode = im.mode
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        a = np.asarray(im, dtype=np.float32)
        rgb = a[..., :3] * (a[..., 3:4] / 255.0)
        return np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = _to_uint8(np.asarray(im))
        return np.repeat(arr[..., None], 3, axis=2) if arr.ndim == 2 else arr[..., :3]
    if mode != "RGB":
        im = im.convert("RGB")
    arr = np.asarray(im)
    if arr.dtype != np.uint8:
        arr = _to_uint8(arr)
    return np.ascontiguousarray(arr)


def read_mask(path: os.PathLike, threshold: float = 0.5) -> np.ndarray:
    """Read a binary mask as ``bool`` ``(H, W)``: lesion True, background (0) False.

    The image is reduced to one channel (max over colour channels, so a red-on-black mask works). Then
    (docs/data.md, "Masks"):

    * a lossless mask (PNG, TIFF, BMP) with at most :data:`LABEL_LEVELS` distinct values is a label image:
      every non-zero value is lesion ({0,1}, {0,255}, {0,38}, 16-bit {0,1000}, labels {0,1,2}, {0,100,200});
    * any other mask (JPEG, whose compression spreads values near 0 and 255; antialiased edges) is scaled to
      [0,1] by its code range (1 when its maximum is <= 1, 255 for 8-bit, 65535 for 16-bit) and thresholded
      at ``threshold``.
    """
    im = _open(path)
    arr = np.asarray(im)
    if im.mode in ("RGBA", "LA", "PA"):
        arr = arr[..., :-1]
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    if arr.dtype == bool:
        return arr.copy()
    top = float(arr.max(initial=0))
    if top <= 0:
        return np.zeros(arr.shape, dtype=bool)
    if im.format != "JPEG" and _levels(arr) <= LABEL_LEVELS:
        return arr != 0  # a label image: background 0, every other label lesion
    scale = 1.0 if top <= 1.0 else 255.0 if top <= 255 else 65535.0
    return arr >= threshold * scale


def write_image(path: os.PathLike, img: np.ndarray) -> Path:
    """Write an RGB ``uint8`` ``(H, W, 3)`` (or ``(H, W)``) array as PNG/JPEG atomically."""
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        arr = _to_uint8(arr)
    with atomic_path(path) as tmp:
        fmt = "JPEG" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "PNG"
        Image.fromarray(arr).save(tmp, format=fmt)
    return Path(path)


def write_mask(path: os.PathLike, mask: np.ndarray) -> Path:
    """Write a mask as single-channel PNG with values {0, 255}, atomically.

    ``mask``: bool, or numbers in [0, 1] (foreground >= 0.5), or 8-bit codes (foreground >= 128)."""
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m.max(axis=2)
    if m.dtype != bool:
        m = m >= (0.5 if m.max(initial=0) <= 1 else 128)
    arr = m.astype(np.uint8) * 255
    with atomic_path(path) as tmp:
        Image.fromarray(arr, mode="L").save(tmp, format="PNG")
    return Path(path)


def list_images(folder: os.PathLike) -> List[Path]:
    """Image files in ``folder`` (not recursive), sorted naturally by stem (2 before 10)."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")]
    return sorted(files, key=lambda p: natural_key(p.stem))


def natural_key(s: str) -> Tuple:
    import re

    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s))


def resize_image(img: np.ndarray, size: int) -> np.ndarray:
    """Resize an RGB uint8 image to ``size x size`` (bilinear, antialiased), as the paper does."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a bool mask to ``size x size`` with nearest neighbour."""
    if mask.shape[0] == size and mask.shape[1] == size:
        return mask
    m = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)
    return np.asarray(m) >= 128


def to_tensor_pm1(img: np.ndarray):
    """RGB uint8 ``(H,W,3)`` -> float tensor ``(3,H,W)`` in [-1, 1] (diffusion convention)."""
    import torch

    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div(127.5).sub(1.0)


def from_tensor_pm1(x) -> np.ndarray:
    """Float tensor ``(3,H,W)`` or ``(B,3,H,W)`` in [-1, 1] -> uint8 ``(H,W,3)`` / ``(B,H,W,3)``."""
    x = x.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to("cpu")
    if x.ndim == 4:
        return x.permute(0, 2, 3, 1).numpy().astype(np.uint8)
    return x.permute(1, 2, 0).numpy().astype(np.uint8)
