"""One validation path for paired folders: every stage that reads ``images/`` (+ ``masks/``) goes through
:func:`scan_paired`, so the same folder is accepted or refused with the same words everywhere.

A paired folder is ``root/images/<stem>.<ext>`` + ``root/masks/<stem>.<ext>``, matched by the file name
without its extension. The rules (each problem names the file and the fix):

* the folder exists, holds ``images/`` (a plain folder of images is accepted where masks are not used)
  and, where masks are used, ``masks/``; ``images/`` holds at least one image;
* no two files of a subfolder share a stem (``0003.png`` and ``0003.jpg``);
* where masks are used: every image has its mask, every mask its image, each mask has its image's size;
* every image and mask that the stage reads decodes completely (a truncated PNG is refused);
* masks that are all zero: refused for training (a model trained on them learns nothing), a warning for
  evaluation and stylization, a problem for ``stylseg data check``.

What each stage uses (``use``):

* ``train`` (``seg train``, ``seg compare``'s arms, the stylize oracle): masks required and read; all-zero
  masks refused;
* ``eval`` (a validation or test set, ``evaluate``): masks required and read; all-zero masks a warning;
* ``stylize`` (``stylize apply``: the masks are copied into the arm): as ``eval``;
* ``diffae`` (``diffae train``, ``stylize finetune --content``): masks optional, but where ``masks/`` exists
  the pairing and the sizes are checked; a plain folder of images is accepted;
* ``images`` (``seg predict``, prediction folders): ``masks/`` is never listed nor read;
* ``check`` (``stylseg data check``): as ``train``, every problem listed instead of raised.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..utils import StylsegError
from .io import IMAGE_EXTS, _open, list_images, natural_key, read_mask, too_large

USES = ("train", "eval", "stylize", "diffae", "images", "check")
_MASKS_REQUIRED = ("train", "eval", "stylize", "check")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a paired folder: ``kind`` (e.g. ``"no_mask"``), the file or folder, the message."""

    kind: str
    path: str
    text: str


@dataclass
class Scan:
    """What :func:`scan_paired` found: the usable ``pairs`` (image, mask or None), the problems and
    warnings, and the facts ``stylseg data check`` prints (``sizes``: ``{"WxH": count}`` of the
    images; ``coverage``: the share of lesion pixels of each readable mask)."""

    root: Path
    use: str
    pairs: List[Tuple[Path, Optional[Path]]] = field(default_factory=list)
    problems: List[Problem] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    n_images: int = 0
    n_masks: int = 0
    sizes: Dict[str, int] = field(default_factory=dict)
    coverage: List[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, kind: str, path, text: str) -> None:
        self.problems.append(Problem(kind, str(path), text))

    def error(self) -> StylsegError:
        """All problems as one :class:`StylsegError`: files without a partner grouped, the rest one per line."""
        lines: List[str] = []
        by_kind: Dict[str, List[Problem]] = {}
        for p in self.problems:
            by_kind.setdefault(p.kind, []).append(p)
        img_dir, mask_dir = self.root / "images", self.root / "masks"
        for kind, ps in by_kind.items():
            names = [Path(p.path).name for p in ps]
            if kind == "no_mask":
                stem = Path(ps[0].path).stem
                lines.append(f"{self.root}: {len(ps)} image(s) without a mask in {mask_dir}: {_list_more(names)}; "
                             f"each mask must have the same name (stem) as its image, e.g. masks/{stem}.png for "
                             f"images/{names[0]}")
            elif kind == "no_image":
                lines.append(f"{self.root}: {len(ps)} mask(s) without an image in {img_dir}: {_list_more(names)}; "
                             f"remove them or add the images with the same name")
            else:
                lines += [p.text for p in ps[:10]]
                if len(ps) > 10:
                    lines.append(f"... and {len(ps) - 10} more like it")
        head = lines[0] if len(lines) == 1 else f"{self.root}: {len(lines)} problems:\n  " + "\n  ".join(lines)
        hint = "" if self.use == "check" else f"\n  (`stylseg data check {self.root}` lists every problem)"
        if self.problems[0].kind in ("not_found", "not_folder", "no_images_dir", "no_masks_dir", "empty"):
            hint = ""
        return StylsegError(head + hint)


def _list_more(items: List[str], limit: int = 20) -> str:
    head = ", ".join(items[:limit])
    return head + (f" ... and {len(items) - limit} more" if len(items) > limit else "")


def _group(files: List[Path], folder: Path, scan: Scan) -> Dict[str, Path]:
    groups: Dict[str, List[Path]] = {}
    for f in files:
        groups.setdefault(f.stem, []).append(f)
    for stem, fs in groups.items():
        if len(fs) > 1:
            scan.add("duplicate", folder / fs[0].name,
                     f"{folder}: several files share a stem, {stem!r} ({', '.join(f.name for f in fs)}); keep one "
                     f"file per name (pairs are matched by the name without extension)")
    return {s: fs[0] for s, fs in groups.items() if len(fs) == 1}


def scan_paired(root: os.PathLike, use: str = "train", deep: bool = True) -> Scan:
    """Check a paired folder for ``use`` (see the module's table) and list what is wrong; never raises for
    a bad folder. ``deep=False`` reads only the image headers (sizes), not the pixels (faster; misses
    truncated images); masks are always decoded where they are used."""
    if use not in USES:
        raise ValueError(f"unknown use {use!r}; valid: {', '.join(USES)}")
    root = Path(root)
    scan = Scan(root=root, use=use)
    masks_used = use != "images"
    masks_required = use in _MASKS_REQUIRED
    if not root.exists():
        scan.add("not_found", root, f"{root}: folder not found; pass a folder holding images/ and masks/ "
                                    f"(or create synthetic data with `stylseg data synth --out {root}`)")
        return scan
    if not root.is_dir():
        scan.add("not_folder", root, f"{root}: not a folder; pass a folder holding images/ and masks/")
        return scan
    img_dir, mask_dir = root / "images", root / "masks"
    if not img_dir.is_dir():
        loose = list_images(root)
        if loose and not masks_required and (use == "images" or not mask_dir.is_dir()):
            img_dir = root  # a plain folder of images
        else:
            hint = (f" (it holds {len(loose)} image files directly: move them into {img_dir} and their masks "
                    f"into {mask_dir})" if loose else "")
            scan.add("no_images_dir", root, f"{root}: no images/ subfolder{hint}; a paired folder is "
                                            f"images/<name>.png + masks/<name>.png; for a known public layout "
                                            f"use `stylseg data list`")
            return scan
    image_files = list_images(img_dir)
    scan.n_images = len(image_files)
    if not image_files:
        scan.add("empty", img_dir, f"{img_dir}: empty folder, no images ({', '.join(IMAGE_EXTS)}) found")
        return scan
    if masks_required and not mask_dir.is_dir():
        scan.add("no_masks_dir", root, f"{root}: no masks/ subfolder; put each image's mask in {mask_dir} with the "
                                       f"image's name (e.g. masks/{image_files[0].stem}.png)")
        return scan
    images = _group(image_files, img_dir, scan)
    masks: Dict[str, Path] = {}
    if masks_used and mask_dir.is_dir() and img_dir != root:
        mask_files = list_images(mask_dir)
        scan.n_masks = len(mask_files)
        masks = _group(mask_files, mask_dir, scan)
        pairing = True
    else:
        pairing = False
    sizes: Counter = Counter()
    n_empty = 0
    for stem in sorted(images, key=natural_key):
        ip = images[stem]
        try:
            with _open(ip) if deep else _header(ip) as im:
                w, h = im.size
        except StylsegError as e:
            scan.add("unreadable", ip, str(e))
            continue
        sizes[f"{w}x{h}"] += 1
        if not pairing:
            scan.pairs.append((ip, None))
            continue
        mp = masks.get(stem)
        if mp is None:
            scan.add("no_mask", ip, f"{ip}: no mask (expected masks/{stem}.png, same name as the image)")
            continue
        try:
            m = read_mask(mp)
        except StylsegError as e:
            scan.add("unreadable", mp, str(e))
            continue
        if m.shape != (h, w):
            scan.add("size", mp, f"{mp}: mask is {m.shape[1]}x{m.shape[0]} but its image {ip.name} is {w}x{h}; "
                                 f"masks must have the size of their image (re-export the mask)")
            continue
        c = float(m.mean())
        scan.coverage.append(c)
        n_empty += c == 0.0
        scan.pairs.append((ip, mp))
    dup_stems = {Path(p.path).stem for p in scan.problems if p.kind == "duplicate"}
    for stem in sorted(set(masks) - set(images) - dup_stems, key=natural_key):
        scan.add("no_image", masks[stem], f"{masks[stem]}: mask without an image (expected images/{stem}.*)")
    scan.sizes = dict(sizes)
    if pairing and scan.coverage and n_empty == len(scan.coverage):
        text = (f"{mask_dir}: all {n_empty} mask(s) are empty (no lesion pixel); check that the masks are the "
                f"lesion maps (white lesion on black) and not blank exports")
        if use in ("train", "check"):
            scan.add("all_empty", mask_dir, text + (" (a segmenter trained on them learns nothing)"
                                                     if use == "train" else ""))
        elif use in ("eval", "stylize"):
            scan.warnings.append(text + ("; Dice and IoU are undefined on them" if use == "eval" else ""))
    return scan


class _header:
    """``with _header(path) as im``: the image opened lazily (size from the header only)."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        from PIL import Image, UnidentifiedImageError

        try:
            self.im = Image.open(self.path)
        except Image.DecompressionBombError as e:
            raise StylsegError(too_large(self.path, e)) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise StylsegError(f"{self.path}: unreadable or corrupt image ({e}); replace or remove this file") from None
        return self.im

    def __exit__(self, *exc):
        self.im.close()
        return False


def validate_paired(root: os.PathLike, use: str = "train", deep: bool = True, warn: bool = True
                    ) -> List[Tuple[Path, Optional[Path]]]:
    """The pairs ``(image, mask or None)`` of a paired folder, naturally sorted by stem (2 before 10);
    raises one :class:`StylsegError` listing every problem (see :func:`scan_paired`) before any work
    is done. Warnings (all-zero masks for evaluation) go through :mod:`warnings` when ``warn``."""
    scan = scan_paired(root, use=use, deep=deep)
    if scan.problems:
        raise scan.error()
    if warn:
        for w in scan.warnings:
            warnings.warn(w, stacklevel=2)
    return scan.pairs


def coverage_stats(scan: Scan) -> Tuple[float, float, float, int]:
    """``(mean, min, max, n_empty)`` of the masks' lesion shares (NaN when no mask was read)."""
    c = scan.coverage
    if not c:
        return float("nan"), float("nan"), float("nan"), 0
    return float(np.mean(c)), min(c), max(c), sum(1 for x in c if x == 0.0)
