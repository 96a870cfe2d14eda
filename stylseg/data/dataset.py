"""Paired image/mask folders as a torch ``Dataset``.

A paired folder is ``root/images/<stem>.<ext>`` + ``root/masks/<stem>.<ext>`` (png, jpg,
jpeg, tif, tiff, bmp), matched by file stem. Images of any mode become RGB, masks of any
encoding become {0, 1} (see :mod:`stylseg.data.io`); both are resized to a square
(images bilinear, masks nearest, as the paper does) and cached in memory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from ..utils import StylsegError
from .io import read_image, read_mask, resize_image, resize_mask

#: ImageNet mean and std (every segmenter's input is normalised with them)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MODES = ("diffusion", "seg")


def load_pairs(root: os.PathLike, require_masks: bool = True, use: Optional[str] = None,
               deep: bool = False) -> List[Tuple[Path, Optional[Path]]]:
    """List ``(image_path, mask_path)`` pairs of a paired folder, matched by file stem, naturally sorted.

    The rules are :func:`stylseg.data.validate.scan_paired`'s for ``use`` (default: ``"eval"`` when
    ``require_masks``, else ``"diffae"``: masks optional, a folder without ``masks/`` or a plain folder of
    images gives ``None`` masks). Raises one :class:`StylsegError` naming the folder and every bad file:
    a missing folder, no ``images/`` subfolder, an empty folder, images without a mask, masks without an
    image, several files with one stem, an unreadable mask, a mask of another size than its image.
    ``deep=True`` also decodes every image (truncated files).
    """
    from .validate import validate_paired

    return validate_paired(root, use=use or ("eval" if require_masks else "diffae"), deep=deep)


class PairedDataset:
    """A paired image/mask folder as a torch ``Dataset``.

    ``ds[i]`` -> ``{"image": float (3,S,S), "mask": float (1,S,S) in {0,1}, "name": stem,
    "path": str(image path), "orig_size": (H, W)}`` with ``S = size``.

    ``mode="diffusion"``: image in [-1, 1]. ``mode="seg"``: ImageNet-normalised
    ``(x/255 - mean) / std``. With ``augment=True`` a paired augmentation (horizontal and
    vertical flips, 90-degree rotations, a mild zoom-in crop of 1-1.15x; with
    ``color_jitter`` also brightness, contrast, saturation and a small hue shift of the image
    only) is drawn from ``(seed, epoch, index)``, so it is the same every run; call
    :meth:`set_epoch` each epoch. ``cache=True`` keeps the resized uint8 arrays in memory
    (``S*S*4`` bytes per item). ``require_masks=False`` accepts image-only folders (mask = 0).

    The folder is validated when the dataset is made (:func:`stylseg.data.validate.validate_paired`,
    every file decoded), for ``use``: ``"train"`` refuses all-zero masks, ``"eval"`` warns about them,
    ``"images"`` never looks at ``masks/`` (every mask is 0). Default: ``"eval"``, or ``"diffae"``
    with ``require_masks=False``.
    """

    def __init__(self, root: os.PathLike, size: int, mode: str = "diffusion", augment: bool = False, seed: int = 0,
                 cache: bool = True, require_masks: bool = True, color_jitter: bool = False,
                 use: Optional[str] = None):
        if mode not in MODES:
            raise StylsegError(f"unknown dataset mode {mode!r}; valid modes: {', '.join(MODES)}")
        if int(size) < 1:
            raise StylsegError(f"dataset size must be a positive number of pixels, got {size}")
        self.root = Path(root)
        self.size = int(size)
        self.mode = mode
        self.augment = bool(augment)
        self.color_jitter = bool(color_jitter)
        self.seed = int(seed)
        self.epoch = 0
        self.cache = bool(cache)
        self.require_masks = require_masks
        self.pairs = load_pairs(self.root, require_masks=require_masks, use=use, deep=True)
        self.names = [p[0].stem for p in self.pairs]
        self._cache: Dict[int, Tuple[np.ndarray, np.ndarray, Tuple[int, int]]] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:
        return (f"PairedDataset({str(self.root)!r}, size={self.size}, mode={self.mode!r}, n={len(self)}, "
                f"augment={self.augment})")

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw of ``epoch`` (deterministic per (seed, epoch, index))."""
        self.epoch = int(epoch)

    # ------------------------------------------------------------------ loading
    def load_arrays(self, i: int) -> Tuple[np.ndarray, np.ndarray, Tuple[int, int]]:
        """Resized, un-augmented ``(image uint8 (S,S,3), mask bool (S,S), (H, W))`` of item ``i``."""
        if i in self._cache:
            return self._cache[i]
        ip, mp = self.pairs[i]
        img = read_image(ip)
        h, w = img.shape[:2]
        if mp is not None:
            mask = read_mask(mp)
            if mask.shape != (h, w):
                raise StylsegError(f"{mp}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {ip.name} is {w}x{h}; "
                                   f"masks must have the size of their image (re-export the mask)")
        else:
            mask = np.zeros((h, w), dtype=bool)
        out = (resize_image(img, self.size), resize_mask(mask, self.size), (h, w))
        if self.cache:
            self._cache[i] = out
        return out

    def __getitem__(self, i: int) -> Dict:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        img, mask, hw = self.load_arrays(i)
        if self.augment:
            img, mask = self._augment(img, mask, i)
        return {"image": self._image_tensor(img), "mask": self._mask_tensor(mask), "name": self.names[i],
                "path": str(self.pairs[i][0]), "orig_size": hw}

    def tensors(self):
        """All items, un-augmented: ``(images (N,3,S,S), masks (N,1,S,S))`` in this dataset's mode."""
        import torch

        imgs, masks = [], []
        for i in range(len(self)):
            img, mask, _ = self.load_arrays(i)
            imgs.append(img)
            masks.append(mask)
        x = self._image_tensor(np.stack(imgs))
        m = torch.from_numpy(np.stack(masks)[:, None].astype(np.float32))
        return x, m

    # ------------------------------------------------------------------ conversion
    def _image_tensor(self, img: np.ndarray):
        """uint8 ``(H,W,3)`` or ``(N,H,W,3)`` -> float ``(3,H,W)`` / ``(N,3,H,W)`` in this mode's range."""
        import torch

        t = torch.from_numpy(np.array(img, dtype=np.float32))
        t = t.permute(2, 0, 1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
        if self.mode == "diffusion":
            return t.div_(127.5).sub_(1.0).contiguous()
        mean = torch.tensor(IMAGENET_MEAN).view(-1, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(-1, 1, 1)
        return ((t / 255.0 - mean) / std).contiguous()

    @staticmethod
    def _mask_tensor(mask: np.ndarray):
        import torch

        return torch.from_numpy(np.array(mask, dtype=np.float32)[None])

    # ------------------------------------------------------------------ augmentation
    def _augment(self, img: np.ndarray, mask: np.ndarray, i: int) -> Tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch, i])
        img, mask = paired_augment(img, mask, rng, color_jitter=self.color_jitter)
        return img, mask


def paired_augment(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator, max_zoom: float = 1.15,
                   color_jitter: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Geometric augmentation applied identically to an RGB uint8 image and its bool mask
    (flips, 90-degree rotation, zoom-in crop up to ``max_zoom``), plus optional colour jitter
    of the image only. Draws a fixed number of values from ``rng`` in a fixed order."""
    u = rng.uniform(size=8)
    s = img.shape[0]
    if u[0] < 0.5:
        img, mask = img[:, ::-1], mask[:, ::-1]
    if u[1] < 0.5:
        img, mask = img[::-1], mask[::-1]
    k = int(u[2] * 4) % 4
    if k:
        img, mask = np.rot90(img, k), np.rot90(mask, k)
    zoom = 1.0 + (max_zoom - 1.0) * u[3]
    c = int(round(s / zoom))
    if c < s:
        y0 = int(u[4] * (s - c + 1)) if s > c else 0
        x0 = int(u[5] * (s - c + 1)) if s > c else 0
        y0, x0 = min(y0, s - c), min(x0, s - c)
        img = np.asarray(Image.fromarray(np.ascontiguousarray(img[y0:y0 + c, x0:x0 + c])).resize((s, s), Image.BILINEAR))
        m = Image.fromarray(np.ascontiguousarray(mask[y0:y0 + c, x0:x0 + c]).astype(np.uint8) * 255)
        mask = np.asarray(m.resize((s, s), Image.NEAREST)) >= 128
    if color_jitter:
        img = color_jitter_image(img, rng)
    return np.ascontiguousarray(img), np.ascontiguousarray(mask)


#: the colour jitter of ``seg.color_jitter`` (and of the ``jitter`` arm): relative amounts, hue in turns
COLOR_JITTER = {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.03}


def color_jitter_image(img: np.ndarray, rng: np.random.Generator, brightness: float = COLOR_JITTER["brightness"],
                       contrast: float = COLOR_JITTER["contrast"], saturation: float = COLOR_JITTER["saturation"],
                       hue: float = COLOR_JITTER["hue"]) -> np.ndarray:
    """Random brightness, contrast, saturation (multiplicative, +-amount) and hue rotation
    (+-``hue`` of a turn) of an RGB uint8 image."""
    u = rng.uniform(-1, 1, size=4)
    x = img.astype(np.float32) / 255.0
    x = x * (1 + brightness * u[0])
    mean = x.mean()
    x = (x - mean) * (1 + contrast * u[1]) + mean
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * (1 + saturation * u[2])
    if hue:
        # rotate the chroma around the grey axis (YIQ rotation)
        a = 2 * np.pi * hue * u[3]
        yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=np.float32)
        rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]], dtype=np.float32)
        m = np.linalg.inv(yiq) @ rot @ yiq
        x = x @ m.T.astype(np.float32)
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
