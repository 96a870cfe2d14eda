"""Known public dataset layouts: read the folder structure a user gets when downloading a
dataset, and convert it into the kit's paired layout (``images/`` + ``masks/``, same stem).

``stylseg data list`` prints them. ``open_layout(name, root)`` -> ``[(image, mask), ...]``;
``materialise(name, root, out, size=None)`` writes a paired folder (PNG, optionally resized
to a square: images bilinear, masks nearest). Each reader also finds its dataset one or two
folders below ``root`` (an archive often extracts into an extra folder).

=====================  =====================================================================
name                   folder structure
=====================  =====================================================================
paired                 ``images/<n>.*`` + ``masks/<n>.*`` (the kit's own; PraNet's folders)
pranet-train           PraNet ``TrainDataset/``: ``images/*.png`` + ``masks/*.png`` (Kvasir 900
                       + CVC-ClinicDB 550)
pranet-test            PraNet ``TestDataset/<subset>/images|masks`` for CVC-300, CVC-ClinicDB,
                       CVC-ColonDB, ETIS-LaribPolypDB, Kvasir (``subset=`` one, else all)
cvc-colondb-tiff       original CVC-ColonDB release: ``N.tiff`` image + ``pN.tiff`` mask in one folder
cvc-clinicdb-original  original CVC-ClinicDB release: ``Original/N.tif`` + ``Ground Truth/N.tif``
kvasir-seg             ``Kvasir-SEG/images/*.jpg`` + ``Kvasir-SEG/masks/*.jpg`` (JPEG masks)
ham10000               ``HAM10000_images_part_1/ISIC_*.jpg`` (+ ``part_2``) and
                       ``HAM10000_segmentations_lesion_tschandl/ISIC_*_segmentation.png``
isic2018-task1         ``ISIC2018_Task1-2_Training_Input/ISIC_*.jpg`` +
                       ``ISIC2018_Task1_Training_GroundTruth/ISIC_*_segmentation.png``
                       (``subset=`` training | validation | test)
=====================  =====================================================================
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..utils import Registry, StylsegError, atomic_path, write_json
from .io import list_images, natural_key, read_image, read_mask, resize_image, resize_mask, write_image, write_mask

Named = Tuple[str, Path, Optional[Path]]  # (name, image, mask)


@dataclass(frozen=True)
class Layout:
    """A public dataset's folder structure.

    ``find(root)`` returns the folder the reader starts from (``root`` or a folder below
    it) or ``None``; ``read(folder, subset)`` lists ``(name, image, mask)``.
    """

    name: str
    description: str
    structure: str
    citation: str
    terms: str
    find: Callable[[Path], Optional[Path]]
    read: Callable[[Path, Optional[str]], List[Named]]
    subsets: Tuple[str, ...] = ()

    def matches(self, root: os.PathLike) -> bool:
        return self.find(Path(root)) is not None

    def pairs(self, root: os.PathLike, subset: Optional[str] = None) -> List[Named]:
        root = Path(root)
        if not root.is_dir():
            raise StylsegError(f"{root}: folder not found; download {self.name} and pass the folder it extracts to")
        if subset and self.subsets and subset not in self.subsets:
            raise StylsegError(f"unknown subset {subset!r} of layout {self.name}; valid subsets: "
                               f"{', '.join(self.subsets)}")
        base = self.find(root)
        if base is None:
            raise StylsegError(f"{root}: not a {self.name} folder; expected {self.structure} "
                               f"(found: {_listing(root)})")
        items = self.read(base, subset)
        if not items:
            raise StylsegError(f"{base}: empty {self.name} folder, no image files found; expected {self.structure}")
        return items


LAYOUTS: Registry = Registry("dataset layout")


def _listing(root: Path, limit: int = 8) -> str:
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    except OSError:
        return "unreadable"
    if not names:
        return "nothing"
    return ", ".join(names[:limit]) + (f" ... ({len(names)} entries)" if len(names) > limit else "")


def _search(root: Path, pred: Callable[[Path], bool], depth: int = 2) -> Optional[Path]:
    """``root`` or the first sub-folder (breadth-first, up to ``depth`` levels) where ``pred`` holds."""
    level = [root]
    for _ in range(depth + 1):
        nxt = []
        for d in level:
            if pred(d):
                return d
            try:
                nxt += sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
            except OSError:
                pass
        level = nxt
    return None


def _match(images: Dict[str, Path], masks: Dict[str, Path], where: Path, mask_hint: str) -> List[Named]:
    missing = sorted((k for k in images if k not in masks), key=natural_key)
    if missing:
        shown = ", ".join(images[k].name for k in missing[:20]) + (" ..." if len(missing) > 20 else "")
        raise StylsegError(f"{where}: {len(missing)} image(s) without a mask: {shown}; expected masks named "
                           f"{mask_hint}")
    return [(k, images[k], masks[k]) for k in sorted(images, key=natural_key)]


def _stems(files: Sequence[Path], strip: str = "") -> Dict[str, Path]:
    out = {}
    for f in files:
        s = f.stem
        if strip and s.endswith(strip):
            s = s[: -len(strip)]
        out[s] = f
    return out


# --------------------------------------------------------------------------- paired / PraNet
def _is_paired(d: Path) -> bool:
    return (d / "images").is_dir() and (d / "masks").is_dir()


def _read_paired(d: Path, subset: Optional[str] = None) -> List[Named]:
    from .dataset import load_pairs

    return [(i.stem, i, m) for i, m in load_pairs(d)]


PRANET_SUBSETS = ("CVC-300", "CVC-ClinicDB", "CVC-ColonDB", "ETIS-LaribPolypDB", "Kvasir")

_PRANET = ("Fan et al., PraNet: Parallel Reverse Attention Network for Polyp Segmentation, MICCAI 2020; "
           "and the citation of each subset's dataset")
_CVC_TERMS = "research and education use only, with citation"

LAYOUTS.add("paired", Layout(
    "paired", "the kit's own paired folder (also any PraNet-style subset folder)",
    "images/<name>.<ext> + masks/<name>.<ext>", "", "", lambda r: _search(r, _is_paired, 0), _read_paired))

LAYOUTS.add("pranet-train", Layout(
    "pranet-train", "PraNet's TrainDataset: 900 Kvasir-SEG + 550 CVC-ClinicDB training images (352x352 PNG)",
    "TrainDataset/images/*.png + TrainDataset/masks/*.png", _PRANET, _CVC_TERMS,
    lambda r: _search(r, lambda d: _is_paired(d) and (d.name == "TrainDataset" or d == r), 2), _read_paired))


def _find_pranet_test(r: Path) -> Optional[Path]:
    return _search(r, lambda d: any(_is_paired(d / s) for s in PRANET_SUBSETS) or
                   (d.name in PRANET_SUBSETS and _is_paired(d)), 2)


def _read_pranet_test(d: Path, subset: Optional[str]) -> List[Named]:
    if _is_paired(d) and d.name in PRANET_SUBSETS:  # one subset folder given directly
        if subset and subset != d.name:
            raise StylsegError(f"{d}: this is the {d.name} subset, not {subset}")
        return _read_paired(d)
    subs = [subset] if subset else [s for s in PRANET_SUBSETS if (d / s).is_dir()]
    out: List[Named] = []
    for s in subs:
        if not _is_paired(d / s):
            raise StylsegError(f"{d / s}: subset {s} not found (expected {s}/images and {s}/masks); present: "
                               f"{_listing(d)}")
        items = _read_paired(d / s)
        out += items if subset else [(f"{s}_{n}", i, m) for n, i, m in items]
    return out


LAYOUTS.add("pranet-test", Layout(
    "pranet-test", "PraNet's TestDataset: CVC-300, CVC-ClinicDB (62), CVC-ColonDB (380), ETIS-LaribPolypDB (196), "
                   "Kvasir (100)",
    "TestDataset/<subset>/images/*.png + TestDataset/<subset>/masks/*.png", _PRANET, _CVC_TERMS,
    _find_pranet_test, _read_pranet_test, subsets=PRANET_SUBSETS))

# --------------------------------------------------------------------------- original CVC releases
_TIFF_IMG = re.compile(r"^(\d+)\.tiff?$", re.I)
_TIFF_MASK = re.compile(r"^p(\d+)\.tiff?$", re.I)


def _is_colondb_tiff(d: Path) -> bool:
    try:
        return any(_TIFF_MASK.match(p.name) for p in d.iterdir()) and any(_TIFF_IMG.match(p.name) for p in d.iterdir())
    except OSError:
        return False


def _read_colondb_tiff(d: Path, subset: Optional[str] = None) -> List[Named]:
    files = [p for p in d.iterdir() if p.is_file()]
    images = {m.group(1): p for p in files if (m := _TIFF_IMG.match(p.name))}
    masks = {m.group(1): p for p in files if (m := _TIFF_MASK.match(p.name))}
    orphans = sorted(set(masks) - set(images), key=int)
    if orphans:
        raise StylsegError(f"{d}: mask(s) without an image: {', '.join(masks[k].name for k in orphans[:20])}")
    return _match(images, masks, d, "pN.tiff next to each N.tiff")


LAYOUTS.add("cvc-colondb-tiff", Layout(
    "cvc-colondb-tiff", "the original CVC-ColonDB release: 380 frames (574x500) of 15 sequences",
    "N.tiff (image) + pN.tiff (mask) in one folder",
    "Bernal, Sanchez, Vilarino, Towards automatic polyp detection with a polyp appearance model, "
    "Pattern Recognition 45(9), 2012", _CVC_TERMS, lambda r: _search(r, _is_colondb_tiff, 2), _read_colondb_tiff))


def _is_clinic_original(d: Path) -> bool:
    return (d / "Original").is_dir() and (d / "Ground Truth").is_dir()


def _read_clinic_original(d: Path, subset: Optional[str] = None) -> List[Named]:
    images = _stems(list_images(d / "Original"))
    masks = _stems(list_images(d / "Ground Truth"))
    return _match(images, masks, d, "'Ground Truth/N.tif' for each 'Original/N.tif'")


LAYOUTS.add("cvc-clinicdb-original", Layout(
    "cvc-clinicdb-original", "the original CVC-ClinicDB release: 612 frames (384x288) of 29 sequences",
    "Original/N.tif + 'Ground Truth'/N.tif (or PNG/Original + PNG/Ground Truth)",
    "Bernal et al., WM-DOVA maps for accurate polyp highlighting in colonoscopy, Computerized Medical Imaging "
    "and Graphics 43, 2015", _CVC_TERMS, lambda r: _search(r, _is_clinic_original, 2), _read_clinic_original))

# --------------------------------------------------------------------------- Kvasir-SEG
LAYOUTS.add("kvasir-seg", Layout(
    "kvasir-seg", "Kvasir-SEG: 1000 polyp images with masks (JPEG, various sizes)",
    "Kvasir-SEG/images/*.jpg + Kvasir-SEG/masks/*.jpg",
    "Jha et al., Kvasir-SEG: A Segmented Polyp Dataset, MMM 2020",
    "research and education use only, with citation (see datasets.simula.no/kvasir-seg)",
    lambda r: _search(r, lambda d: _is_paired(d) and (d.name.lower().startswith("kvasir") or d == r), 2),
    _read_paired))

# --------------------------------------------------------------------------- HAM10000 / ISIC 2018
_HAM_MASKS = "HAM10000_segmentations_lesion_tschandl"


def _is_ham(d: Path) -> bool:
    return (d / _HAM_MASKS).is_dir() and any(p.is_dir() for p in d.glob("HAM10000_images*"))


def _read_ham(d: Path, subset: Optional[str] = None) -> List[Named]:
    images: Dict[str, Path] = {}
    for part in sorted(p for p in d.glob("HAM10000_images*") if p.is_dir()):
        images.update(_stems(list_images(part)))
    masks = _stems(list_images(d / _HAM_MASKS), strip="_segmentation")
    return _match(images, masks, d, f"{_HAM_MASKS}/<image id>_segmentation.png")


LAYOUTS.add("ham10000", Layout(
    "ham10000", "HAM10000: 10015 dermatoscopic images (600x450) with the lesion masks of Tschandl et al.",
    f"HAM10000_images_part_1/ISIC_*.jpg, HAM10000_images_part_2/ISIC_*.jpg, {_HAM_MASKS}/ISIC_*_segmentation.png "
    f"(optional HAM10000_metadata.csv)",
    "Tschandl, Rosendahl, Kittler, The HAM10000 dataset, Scientific Data 5, 180161 (2018); masks: Tschandl et al., "
    "Human-computer collaboration for skin cancer recognition, Nature Medicine 26 (2020)",
    "CC BY-NC 4.0 (non-commercial, with attribution)", lambda r: _search(r, _is_ham, 2), _read_ham))

ISIC_SUBSETS = {"training": ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"),
                "validation": ("ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth"),
                "test": ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth")}


def _is_isic(d: Path) -> bool:
    return any((d / a).is_dir() and (d / b).is_dir() for a, b in ISIC_SUBSETS.values())


def _read_isic(d: Path, subset: Optional[str]) -> List[Named]:
    subs = [subset] if subset else [s for s, (a, b) in ISIC_SUBSETS.items() if (d / a).is_dir() and (d / b).is_dir()]
    out: List[Named] = []
    for s in subs:
        a, b = ISIC_SUBSETS[s]
        if not ((d / a).is_dir() and (d / b).is_dir()):
            raise StylsegError(f"{d}: subset {s} needs {a}/ and {b}/ (present: {_listing(d)})")
        items = _match(_stems(list_images(d / a)), _stems(list_images(d / b), strip="_segmentation"), d / a,
                       f"{b}/<image id>_segmentation.png")
        out += items if (subset or len(subs) == 1) else [(f"{s}_{n}", i, m) for n, i, m in items]
    return out


LAYOUTS.add("isic2018-task1", Layout(
    "isic2018-task1", "ISIC 2018 Task 1 lesion boundary segmentation: 2594 training, 100 validation, 1000 test",
    "ISIC2018_Task1-2_Training_Input/ISIC_*.jpg + ISIC2018_Task1_Training_GroundTruth/ISIC_*_segmentation.png "
    "(and _Validation_ / _Test_)",
    "Codella et al., Skin Lesion Analysis Toward Melanoma Detection 2018, arXiv:1902.03368; Tschandl et al., "
    "HAM10000, Scientific Data 2018", "CC BY-NC 4.0 (non-commercial, with attribution)",
    lambda r: _search(r, _is_isic, 2), _read_isic, subsets=tuple(ISIC_SUBSETS)))


# --------------------------------------------------------------------------- public functions
def named_pairs(name: str, root: os.PathLike, subset: Optional[str] = None) -> List[Named]:
    """``[(name, image_path, mask_path), ...]`` of a dataset in layout ``name``."""
    return LAYOUTS.get(name).pairs(root, subset)


def open_layout(name: str, root: os.PathLike, subset: Optional[str] = None) -> List[Tuple[Path, Path]]:
    """``[(image_path, mask_path), ...]`` of the dataset at ``root`` read with layout ``name``
    (unknown names list the valid ones; a folder of another structure says what was expected)."""
    return [(i, m) for _, i, m in named_pairs(name, root, subset)]


def detect_layout(root: os.PathLike) -> str:
    """Name of the first layout that reads ``root`` (``paired`` first); error if none does."""
    root = Path(root)
    if not root.is_dir():
        raise StylsegError(f"{root}: folder not found")
    if _is_paired(root):
        return "paired"
    for name in ("cvc-colondb-tiff", "cvc-clinicdb-original", "ham10000", "isic2018-task1", "pranet-test",
                 "pranet-train", "kvasir-seg"):
        if LAYOUTS.get(name).matches(root):
            return name
    raise StylsegError(f"{root}: not a paired folder (images/ + masks/) nor a known layout (found: {_listing(root)}); "
                       f"known layouts: {', '.join(LAYOUTS.names())} (`stylseg data list`)")


def detect_pairs(root: os.PathLike) -> List[Named]:
    """Pairs of ``root``: a paired folder, else any known layout it matches."""
    root = Path(root)
    if root.is_dir() and not (root / "images").is_dir():
        try:
            name = detect_layout(root)
        except StylsegError:
            name = None
        if name:
            return named_pairs(name, root)
    from .dataset import load_pairs

    return [(i.stem, i, m) for i, m in load_pairs(root)]


def copy_pairs(items: Sequence[Named], out: os.PathLike, size: Optional[int] = None, progress: bool = True,
               desc: str = "", written: Optional[Dict[str, Tuple[Path, Path]]] = None) -> Path:
    """Write ``(name, image, mask)`` items as ``out/images/<name>.png`` + ``out/masks/<name>.png``,
    resized to ``size x size`` when given (images bilinear, masks nearest). Items whose two
    files exist are skipped (resumable); writes are atomic. A mask of ``None`` becomes empty.
    ``written`` (source image path -> written pair) lets several calls copy a pair already
    converted instead of decoding it again."""
    import shutil

    from tqdm.auto import tqdm

    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    todo = [it for it in items if not ((out / "images" / f"{it[0]}.png").is_file()
                                       and (out / "masks" / f"{it[0]}.png").is_file())]
    for name, ip, mp in tqdm(todo, desc=desc or f"write {out.name}", disable=not progress or len(todo) < 32,
                             leave=False):
        key = f"{ip}|{mp}|{size}"
        if written is not None and key in written:
            for src, dst in zip(written[key], (out / "images" / f"{name}.png", out / "masks" / f"{name}.png")):
                with atomic_path(dst) as tmp:
                    shutil.copyfile(src, tmp)
            continue
        img = read_image(ip)
        if mp is not None:
            mask = read_mask(mp)
            if mask.shape != img.shape[:2]:
                raise StylsegError(f"{mp}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {Path(ip).name} is "
                                   f"{img.shape[1]}x{img.shape[0]}; masks must have the size of their image")
        else:
            mask = np.zeros(img.shape[:2], dtype=bool)
        if size:
            img, mask = resize_image(img, size), resize_mask(mask, size)
        write_image(out / "images" / f"{name}.png", img)
        write_mask(out / "masks" / f"{name}.png", mask)
        if written is not None:
            written[key] = (out / "images" / f"{name}.png", out / "masks" / f"{name}.png")
    return out


def materialise(name: str, root: os.PathLike, out: os.PathLike, size: Optional[int] = None,
                subset: Optional[str] = None, progress: bool = True) -> Path:
    """Convert the dataset at ``root`` (layout ``name``) into a paired folder ``out`` (PNG,
    optionally ``size x size``); writes ``out/source.json`` naming where it came from."""
    items = named_pairs(name, root, subset)
    copy_pairs(items, out, size=size, progress=progress, desc=f"{name} -> {Path(out).name}")
    write_json(Path(out) / "source.json", {"layout": name, "root": str(Path(root).resolve()), "subset": subset,
                                           "size": size, "n": len(items)})
    return Path(out)


def describe_layouts() -> str:
    lines = []
    for name, lay in LAYOUTS.items():
        lines.append(f"{name:<22} {lay.description}")
        lines.append(f"{'':<22} structure: {lay.structure}")
        if lay.subsets:
            lines.append(f"{'':<22} subsets: {', '.join(lay.subsets)}")
        if lay.terms:
            lines.append(f"{'':<22} terms: {lay.terms}")
    return "\n".join(lines)
