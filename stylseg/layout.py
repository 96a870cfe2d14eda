"""The run folder: the contract between stages (DESIGN.md).

```
RUN/config.json, RUN/env.json
RUN/data/{source,target}/{train,test}/images|masks, RUN/data/style.png, RUN/data/split.json
RUN/diffae/                      D_A model folder (+ samples/, history.json)
RUN/finetune/                    D_B + SPN model folder (+ history.json)
RUN/stylized/<arm>/images|masks + manifest.json
RUN/seg/<arch>/<arm>/seed<k>/    checkpoints, predictions/<test>/, metrics.json
RUN/eval/results.json, results.md, radar_*.png, qualitative_*.png
RUN/index.html
```
Every notebook and command uses these helpers, never hand-built paths.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


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
