"""The training sets of a run's arms beyond one folder each: union arms and the colour-jitter arm.

The paper's Algorithm 2 *replaces* the training images by their stylized copies (arm ``st``). Domain-generalisation
work more often *adds* them (style augmentation), which keeps what the source images teach. The kit's extension of
the paper, in ``eval.arms``:

- ``source+<arm>``: the source training set together with the stylized arm ``<arm>`` (``source+st``,
  ``source+recon``, ``source+histogram``, ...), |source| + |arm| pairs. With ``--styles K`` it comes per style image
  (``source+st@s1``, ...) and as ``source+st@all``, the source set with the arm of every style image.
  ``source+recon`` has as many images as ``source+st``, so that a gain can be credited to the style and not to
  twice the data. A union arm trains for the same number of epochs as ``direct``, which makes twice the optimizer
  steps (K + 1 times for ``@all``).
- ``jitter``: the source training set with colour-jitter augmentation (:data:`stylseg.data.dataset.COLOR_JITTER`),
  the cheapest competitor of every stylizer.

A union arm is written like any arm, ``RUN/stylized/source+<arm>/images|masks + manifest.json`` (method
``union``), its files hard links to the parts' files where the file system allows (copies otherwise), each named
``<part>__<stem>``. It is remade when a part's files change.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from .layout import split_arm
from .utils import StylsegError, read_json, write_json

UNION = "source+"
ALL = "@all"
JITTER = "jitter"
#: the settings the jitter arm trains with
JITTER_OVERRIDES = {"seg.color_jitter": True}


def is_union(name: str) -> bool:
    return name.startswith(UNION)


def _files(folder: Path) -> List[Tuple[str, str]]:
    """``(image, mask)`` file names of a paired folder, in name order (masks matched by stem)."""
    from .data.io import list_images

    images = list_images(folder / "images")
    masks = {p.stem: p for p in list_images(folder / "masks")} if (folder / "masks").is_dir() else {}
    missing = [p.name for p in images if p.stem not in masks]
    if missing:
        raise StylsegError(f"{folder}: {len(missing)} image(s) without a mask (e.g. {missing[0]}); a union arm "
                           f"needs paired folders")
    return [(p.name, masks[p.stem].name) for p in images]


def _fingerprint(parts: Sequence[Tuple[str, Path]]) -> List[Dict[str, Any]]:
    out = []
    for name, folder in parts:
        files = _files(folder)
        stats = [(folder / "images" / i).stat() for i, _ in files]
        out.append({"part": name, "folder": str(Path(folder).resolve()), "n": len(files),
                    "bytes": sum(s.st_size for s in stats), "mtime": max((s.st_mtime for s in stats), default=0.0)})
    return out


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def make_union(out: os.PathLike, parts: Sequence[Tuple[str, os.PathLike]], arm: Optional[str] = None) -> Path:
    """Write the paired folder ``out`` holding every pair of each ``(part name, paired folder)``, named
    ``<part>__<stem>``, with a manifest (method ``union``). A folder already made from the same files is kept; one
    made from other files is made again. Returns ``out``."""
    out = Path(out)
    parts = [(str(n), Path(d)) for n, d in parts]
    for n, d in parts:
        if not (d / "images").is_dir():
            raise StylsegError(f"{d}: not a paired folder (images/ + masks/); the union arm {out.name} needs it")
    fp = _fingerprint(parts)
    man = out / "manifest.json"
    if man.is_file():
        old = read_json(man)
        if old.get("method") == "union" and old.get("params", {}).get("parts") == fp and all(
                (out / it["image"]).is_file() and (out / it["mask"]).is_file() for it in old.get("items", [])):
            return out
    if out.exists():
        shutil.rmtree(out)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "images").mkdir(parents=True)
    (tmp / "masks").mkdir()
    items = []
    for n, d in parts:
        for img, mask in _files(d):
            stem = f"{n}__{Path(img).stem}"
            _link(d / "images" / img, tmp / "images" / (stem + Path(img).suffix))
            _link(d / "masks" / mask, tmp / "masks" / (stem + Path(mask).suffix))
            items.append({"name": stem, "image": f"images/{stem}{Path(img).suffix}",
                          "mask": f"masks/{stem}{Path(mask).suffix}", "source_image": str(d / "images" / img)})
    write_json(tmp / "manifest.json", {"arm": arm or out.name, "method": "union", "params": {"parts": fp},
                                       "source": str(parts[0][1]), "style": None, "items": items, "scores": {}})
    tmp.rename(out)
    return out


def union_arms(layout, wanted: Set[str], stylized: Mapping[str, os.PathLike]) -> Dict[str, Path]:
    """The union arms ``wanted`` names (``source+<arm>``), made from the run's source training set and its stylized
    arms ``stylized`` (``{arm: folder}``, ``<arm>@s<k>`` included): ``source+<arm>`` per style image and, with more
    than one, ``source+<arm>@all``. A wanted union of an arm the run does not hold is an error naming what it has."""
    source = layout.domain("source", "train")
    out: Dict[str, Path] = {}
    for w in sorted(n for n in wanted if is_union(n)):
        base = w[len(UNION):]
        variants = {a: Path(d) for a, d in stylized.items() if not is_union(a) and split_arm(a)[0] == base}
        if not variants:
            have = sorted({split_arm(a)[0] for a in stylized if not is_union(a)})
            raise StylsegError(f"eval.arms names {w}, but RUN/stylized holds no arm {base!r} (it has: "
                               f"{', '.join(have) or 'nothing'}): make {base} first (notebook 05) or drop {w}")
        for a in sorted(variants, key=lambda a: split_arm(a)[1]):
            out[UNION + a] = make_union(layout.stylized(UNION + a), [("source", source), (a, variants[a])])
        if len(variants) > 1:
            name = UNION + base + ALL
            out[name] = make_union(layout.stylized(name), [("source", source)] + sorted(variants.items()))
    return out
