"""``stylseg data check DIR``: is a paired folder usable? Counts, sizes, mask coverage, and
every bad file by name.

Fast by design: image sizes come from the file headers (PIL opens lazily); masks are decoded
(they are small, single-channel) to measure coverage; ``deep=True`` also decodes every image
to find truncated files.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..utils import StylsegError
from .io import list_images, natural_key, read_image, read_mask

_READ_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, StylsegError)


@dataclass
class CheckReport:
    """Result of :func:`check_folder`.

    ``sizes``: ``{"WxH": count}`` of the images; ``coverage_*``: share of mask pixels that
    are lesion (over readable masks); ``problems``: one line per bad file, naming it.
    """

    root: str
    n_pairs: int = 0
    n_images: int = 0
    n_masks: int = 0
    sizes: Dict[str, int] = field(default_factory=dict)
    coverage_mean: float = float("nan")
    coverage_min: float = float("nan")
    coverage_max: float = float("nan")
    n_empty_masks: int = 0
    problems: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        sizes = ", ".join(f"{k} ({v})" for k, v in sorted(self.sizes.items(), key=lambda kv: -kv[1])[:6])
        if len(self.sizes) > 6:
            sizes += f" ... ({len(self.sizes)} sizes)"
        lines = [f"{self.root}: {self.n_pairs} pairs ({self.n_images} images, {self.n_masks} masks)",
                 f"  image sizes (WxH): {sizes or '-'}"]
        if self.n_masks:
            lines.append(f"  mask coverage: mean {self.coverage_mean:.3f}, min {self.coverage_min:.3f}, "
                         f"max {self.coverage_max:.3f}; empty masks: {self.n_empty_masks}")
        if self.problems:
            lines.append(f"  {len(self.problems)} problem(s):")
            lines += [f"    {p}" for p in self.problems]
        else:
            lines.append("  OK")
        return "\n".join(lines)


def _header_size(path: Path):
    with Image.open(path) as im:
        return im.size  # (W, H)


def check_folder(root: os.PathLike, require_nonempty_masks: bool = False, deep: bool = False) -> CheckReport:
    """Check a paired folder ``root/images`` + ``root/masks`` and report every problem.

    Problems (each naming the file): missing folder or subfolder, empty folder, image without
    a mask, mask without an image, several files with one stem, unreadable image or mask,
    image/mask size mismatch, and (with ``require_nonempty_masks``) masks without any lesion
    pixel. ``deep`` decodes every image (slower; finds truncated images). Never raises for
    a bad folder: the report lists it.
    """
    root = Path(root)
    rep = CheckReport(root=str(root))
    if not root.is_dir():
        rep.problems.append(f"{root}: folder not found")
        return rep
    img_dir, mask_dir = root / "images", root / "masks"
    if not img_dir.is_dir():
        rep.problems.append(f"{root}: no images/ subfolder (a paired folder is images/<name>.png + masks/<name>.png;"
                            f" for a public dataset's own structure see `stylseg data list`)")
        return rep
    if not mask_dir.is_dir():
        rep.problems.append(f"{root}: no masks/ subfolder; put each image's mask in masks/ with the image's name")
    images = list_images(img_dir)
    masks = list_images(mask_dir) if mask_dir.is_dir() else []
    rep.n_images, rep.n_masks = len(images), len(masks)
    if not images:
        rep.problems.append(f"{img_dir}: empty folder, no image files")
        return rep
    by_img: Dict[str, List[Path]] = {}
    for p in images:
        by_img.setdefault(p.stem, []).append(p)
    by_mask: Dict[str, List[Path]] = {}
    for p in masks:
        by_mask.setdefault(p.stem, []).append(p)
    for stem, fs in list(by_img.items()) + list(by_mask.items()):
        if len(fs) > 1:
            rep.problems.append(f"{fs[0].parent}: several files with the name {stem!r}: "
                                f"{', '.join(f.name for f in fs)}; keep one")
    sizes: Counter = Counter()
    cover: List[float] = []
    for stem in sorted(by_img, key=natural_key):
        ip = by_img[stem][0]
        try:
            if deep:
                h, w = read_image(ip).shape[:2]
            else:
                w, h = _header_size(ip)
        except _READ_ERRORS as e:
            msg = str(e) if isinstance(e, StylsegError) else f"{ip}: unreadable or corrupt image ({e})"
            rep.problems.append(msg if msg.startswith(str(ip)) else f"{ip}: {msg}")
            continue
        sizes[f"{w}x{h}"] += 1
        if stem not in by_mask:
            if mask_dir.is_dir():
                rep.problems.append(f"{ip}: no mask (expected masks/{stem}.png, same name as the image)")
            continue
        mp = by_mask[stem][0]
        try:
            m = read_mask(mp)
        except StylsegError as e:
            rep.problems.append(str(e))
            continue
        if m.shape != (h, w):
            rep.problems.append(f"{mp}: mask is {m.shape[1]}x{m.shape[0]} but image {ip.name} is {w}x{h}")
            continue
        rep.n_pairs += 1
        c = float(m.mean())
        cover.append(c)
        if c == 0.0:
            rep.n_empty_masks += 1
            if require_nonempty_masks:
                rep.problems.append(f"{mp}: empty mask (no lesion pixel)")
    for stem in sorted(set(by_mask) - set(by_img), key=natural_key):
        rep.problems.append(f"{by_mask[stem][0]}: mask without an image (expected images/{stem}.*)")
    rep.sizes = dict(sizes)
    if cover:
        rep.coverage_mean, rep.coverage_min, rep.coverage_max = float(np.mean(cover)), min(cover), max(cover)
    return rep
