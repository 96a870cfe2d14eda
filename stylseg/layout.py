"""The run folder: the contract between stages (DESIGN.md).

```
RUN/config.json, RUN/env.json
RUN/data/{source,target}/{train,test}/images|masks, RUN/data/style.png, RUN/data/split.json
RUN/diffae/                      D_A model folder (+ samples/, history.json)
RUN/finetune/                    D_B + SPN model folder (+ history.json)
RUN/finetune@s<k>/               the same for style image k >= 1 (``--styles K``)
RUN/stylized/<arm>/images|masks + manifest.json   (<arm>@s<k>: the arm made with style image k >= 1)
RUN/seg/<arch>/<arm>/seed<k>/    checkpoints, predictions/<test>/, metrics.json
RUN/eval/results.json, results.md, radar_*.png, qualitative_*.png
RUN/index.html
```
Every notebook and command uses these helpers, never hand-built paths.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Tuple

from .utils import StylsegError

#: an arm made with style image k >= 1 is named ``<arm>@s<k>``; style image 0 (``data/style.png``) keeps the plain name
STYLE_TAG = "@s"


#: what an arm, test-set or architecture name may be: one folder name (letters, digits, _ . @ + -), so that
#: ``OUT/<arch>/<arm>/seed<k>/`` stays inside ``OUT``
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@+-]*")


def check_name(name: str, what: str = "arm", flag: str = "--arm") -> str:
    """``name`` if it is a plain folder name (letters, digits, ``_ . @ + -``, not starting with ``.``, no
    ``..``); else a :class:`~stylseg.utils.StylsegError` naming ``flag``: a name becomes a folder under
    ``--out`` and must not reach outside it (``../../x``) nor hide (``.x``)."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise StylsegError(f"{what} name {name!r} ({flag}) is not a plain folder name: use letters, digits and "
                           f"_ . @ + - only (it becomes a folder under --out, which it must not leave)")
    return name


def arm_name(arm: str, k: int) -> str:
    """The arm ``arm`` made with style image ``k``: ``"st"`` for k = 0, ``"st@s2"`` for k = 2."""
    return arm if int(k) == 0 else f"{arm}{STYLE_TAG}{int(k)}"


def split_arm(name: str) -> Tuple[str, int]:
    """Inverse of :func:`arm_name`: ``"st@s2" -> ("st", 2)``, ``"st" -> ("st", 0)``."""
    base, sep, k = name.rpartition(STYLE_TAG)
    return (base, int(k)) if sep and base and k.isdigit() else (name, 0)


@dataclass(frozen=True)
class RunLayout:
    root: Path

    def __init__(self, root: os.PathLike):
        object.__setattr__(self, "root", Path(root))

    # top level
    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def env(self) -> Path:
        return self.root / "env.json"

    @property
    def index_html(self) -> Path:
        return self.root / "index.html"

    # data
    @property
    def data(self) -> Path:
        return self.root / "data"

    def domain(self, which: str, split: str) -> Path:
        """``which`` in {source, target}, ``split`` in {train, test, ...}: a paired folder."""
        return self.data / which / split

    @property
    def style_image(self) -> Path:
        return self.data / "style.png"

    def style_file(self, k: int) -> Path:
        """``data/styles/style_<k>.png``: style image k of ``--styles K`` (``style_0`` is a copy of ``style.png``)."""
        return self.data / "styles" / f"style_{int(k)}.png"

    def style_images(self) -> List[Path]:
        """The run's style images, index k = style image k: ``data/style.png`` first, then
        ``data/styles/style_<k>.png`` for k = 1..K-1 where ``--styles K`` (from ``data/split.json``;
        one image when the split does not say)."""
        k = 1
        if self.split_json.is_file():
            import json

            k = int(json.loads(self.split_json.read_text()).get("params", {}).get("styles", 1) or 1)
        return [self.style_image] + [self.style_file(i) for i in range(1, k)]

    @property
    def split_json(self) -> Path:
        return self.data / "split.json"

    # diffusion and stylization
    @property
    def diffae(self) -> Path:
        return self.root / "diffae"

    @property
    def finetune(self) -> Path:
        return self.root / "finetune"

    def finetune_for(self, k: int) -> Path:
        """D_B + SPN fine-tuned on style image k (``finetune`` for k = 0)."""
        return self.finetune if int(k) == 0 else self.root / f"finetune{STYLE_TAG}{int(k)}"

    def stylized(self, arm: str) -> Path:
        return self.root / "stylized" / arm

    # segmentation and evaluation
    def seg(self, arch: str, arm: str, seed: int) -> Path:
        return self.root / "seg" / arch / arm / f"seed{seed}"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"


def images_dir(folder: os.PathLike) -> Path:
    return Path(folder) / "images"


def masks_dir(folder: os.PathLike) -> Path:
    return Path(folder) / "masks"
