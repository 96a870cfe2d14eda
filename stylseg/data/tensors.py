"""A folder of images (and masks) as tensors: the one loader the diffusion stages use (DiffAE training, fine-tuning,
the notebooks).

``load_folder(folder, size)`` validates the folder once (:func:`stylseg.data.validate.validate_paired`), then
decodes every image once, converts it to RGB and resizes it to a square (bilinear, as the paper does), and every
mask once (nearest neighbour), and returns them with the image paths::

    data = load_folder("RUN/data/source/train", 64, masks=True)
    data.images   # (N,3,64,64) in [-1,1]
    data.masks    # (N,1,64,64) float {0,1} (None unless masks=True)
    data.files    # the image paths, naturally sorted by stem
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch

from ..utils import StylsegError
from .io import list_images, read_image, read_mask, resize_image, resize_mask, to_tensor_pm1


@dataclass
class FolderTensors:
    """What :func:`load_folder` read: ``images`` (N,3,S,S) in [-1,1], ``masks`` (N,1,S,S) float {0,1} or None,
    ``files`` the N image paths."""

    images: torch.Tensor
    masks: Optional[torch.Tensor]
    files: List[Path]

    @property
    def names(self) -> List[str]:
        return [f.name for f in self.files]


def image_folder(path: os.PathLike) -> Path:
    """The folder holding the images: ``path/images`` for a paired folder, else ``path`` itself."""
    path = Path(path)
    if not path.exists():
        raise StylsegError(f"{path}: folder not found; pass a folder of images (or a paired folder with images/)")
    if (path / "images").is_dir():
        return path / "images"
    if not path.is_dir():
        raise StylsegError(f"{path}: not a folder; pass a folder of images (or a paired folder with images/)")
    return path


def load_image_pm1(path: os.PathLike, size: int) -> torch.Tensor:
    """Any image file -> (3,size,size) in [-1,1]. Grayscale, RGBA (composited on black),
    palette and 16-bit images are converted to RGB; any size or aspect is resized to a square
    (bilinear), as the paper does (documented conversions, ``stylseg.data.io.read_image``)."""
    return to_tensor_pm1(resize_image(read_image(path), size))


def mask_tensor(mask: np.ndarray, size: int) -> torch.Tensor:
    """A decoded mask (H,W) -> (1,size,size) float {0,1}, nearest-resized."""
    return torch.from_numpy(resize_mask(mask, size).astype(np.float32))[None]


def load_folder(folder: os.PathLike, size: int, *, masks: bool = False,
                log: Optional[Callable[[str], None]] = None) -> FolderTensors:
    """Every image of a paired folder (or of a plain folder of images) as (N,3,size,size) in [-1,1], with its mask
    when ``masks`` (then every image needs one), after one validation pass by the shared rules (masks optional
    without ``masks``, but when ``masks/`` is there the pairing and the sizes must be right). An empty folder or
    an unreadable file raises :class:`StylsegError` naming it (:func:`~stylseg.data.validate.validate_paired`);
    ``log`` hears how many sizes were resized."""
    from .validate import validate_paired

    if not list_images(image_folder(folder)):
        raise StylsegError(f"{image_folder(folder)}: no images found (png, jpg, tif, bmp); pass a folder of images, "
                           f"e.g. RUN/data/source/train made by `stylseg data synth` or notebook 00")
    pairs = validate_paired(folder, use="stylize" if masks else "diffae")
    sizes, out = set(), []
    for f, _ in pairs:
        img = read_image(f)  # raises StylsegError naming an unreadable file
        sizes.add(img.shape[:2])
        out.append(to_tensor_pm1(resize_image(img, size)))
    if log and (len(sizes) > 1 or (size, size) not in sizes):
        log(f"{image_folder(folder)}: {len(pairs)} images of {len(sizes)} size(s) resized to {size}x{size}")
    m = torch.stack([mask_tensor(read_mask(p), size) for _, p in pairs]) if masks else None
    return FolderTensors(torch.stack(out), m, [f for f, _ in pairs])


def load_folder_tensor(folder: os.PathLike, size: int, log: Optional[Callable[[str], None]] = None
                       ) -> Tuple[torch.Tensor, List[Path]]:
    """``(images, files)`` of :func:`load_folder` without masks."""
    data = load_folder(folder, size, log=log)
    return data.images, data.files
