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

``RUN/config.json`` carries the run-folder format (``run_format``, :data:`RUN_FORMAT`). A folder of
another format gets one message (:func:`check_run_format`) saying what changed and how to
re-prepare, wherever a run folder is opened: ``stylseg reproduce``, every notebook's setup,
``stylseg data prepare``, and every stage that writes into a folder inside a run folder.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Mapping, Optional, Tuple

#: the run-folder format this version reads and writes (``run_format`` in ``RUN/config.json``); raise it when a
#: stage's files change so that folders of the old format can no longer be resumed or reused as they are
RUN_FORMAT = 2
RUN_FORMAT_KEY = "run_format"
#: what each format changed (shown when a folder of an older format is opened)
RUN_FORMAT_CHANGES = {
    2: "resume files are safetensors + JSON instead of pickles (older ones are never opened, since a pickle can "
       "run code); every stage's fingerprint holds the content of its input files (and resume files the CPU thread "
       "count); stylized arms record their input's content; the smoke profile's D_A trains a fixed step budget "
       "instead of stopping after 90 s",
}

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


#: the tag of a stylizer preset in names when a run compares several (``st@gates``, ``finetune@osasis``)
PRESET_TAG = "@"


def arm_name(arm: str, k: int, preset: str = "") -> str:
    """The arm ``arm`` made with style image ``k`` (and the stylizer preset ``preset`` in a run that compares
    presets): ``"st"`` for k = 0, ``"st@s2"`` for k = 2, ``"st@gates"``, ``"st@gates@s2"``."""
    arm = f"{arm}{PRESET_TAG}{preset}" if preset else arm
    return arm if int(k) == 0 else f"{arm}{STYLE_TAG}{int(k)}"


def split_arm(name: str) -> Tuple[str, int]:
    """Inverse of :func:`arm_name`: ``"st@s2" -> ("st", 2)``, ``"st" -> ("st", 0)``."""
    base, sep, k = name.rpartition(STYLE_TAG)
    return (base, int(k)) if sep and base and k.isdigit() else (name, 0)


def arm_base(name: str) -> str:
    """The arm's kind, with neither style image nor preset nor ``@all``: ``"source+st@gates@s1" -> "source+st"``
    (what ``eval.arms`` names)."""
    return split_arm(name)[0].partition(PRESET_TAG)[0]


def arm_preset(name: str) -> str:
    """The stylizer preset in an arm's name (``"st@gates@s1" -> "gates"``); "" when it names none."""
    tag = split_arm(name)[0].partition(PRESET_TAG)[2]
    return "" if tag == "all" else tag.partition(PRESET_TAG)[0]


def save_run_config(path: os.PathLike, cfg) -> Path:
    """Write a :class:`~stylseg.config.RunConfig` as ``RUN/config.json`` with the run-folder format."""
    from .utils import write_json

    return write_json(path, {**cfg.to_dict(), RUN_FORMAT_KEY: RUN_FORMAT})


def is_run_config(d: Any) -> bool:
    """Whether a parsed ``config.json`` is a run folder's (a RunConfig), not a model folder's."""
    return isinstance(d, Mapping) and "profile" in d and "seg" in d and "diffae" in d and "kind" not in d


def check_run_format(root: os.PathLike) -> None:
    """Raise :class:`~stylseg.utils.StylsegError` when the run folder ``root`` (its ``config.json``) is of another
    format than :data:`RUN_FORMAT`: what changed, and how to re-prepare. A folder without ``config.json`` (new)
    passes."""
    from .utils import StylsegError

    root = Path(root)
    path = root / "config.json"
    if not path.is_file():
        return
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # read_json names a broken file where the config is loaded
    if not is_run_config(d):
        return
    fmt = d.get(RUN_FORMAT_KEY, 1)
    if fmt == RUN_FORMAT:
        return
    if isinstance(fmt, int) and fmt < RUN_FORMAT:
        changes = "; ".join(f"format {k}: {v}" for k, v in sorted(RUN_FORMAT_CHANGES.items()) if k > fmt)
        raise StylsegError(
            f"{root}: a run folder of format {fmt}, made by an older stylseg; this version uses format {RUN_FORMAT} "
            f"({changes}). Its checkpoints and outputs cannot be resumed or reused as they are. Re-prepare: run into "
            f"a new folder (`stylseg reproduce --out NEW_DIR ...`, or RUN_DIR = a new folder in the notebooks), or "
            f"delete {root} and run again")
    raise StylsegError(f"{root}: a run folder of format {fmt!r}, made by a newer stylseg; this version reads format "
                       f"{RUN_FORMAT}. Update stylseg (pip install -U stylseg), or run into a new folder")


def enclosing_run(path: os.PathLike, depth: int = 5) -> Optional[Path]:
    """The run folder that holds ``path`` (``path`` itself or one of its ``depth`` nearest parents whose
    ``config.json`` is a run config), or None."""
    p = Path(path).absolute()
    for q in [p, *p.parents][:depth + 1]:
        c = q / "config.json"
        if c.is_file():
            try:
                if is_run_config(json.loads(c.read_text())):
                    return q
            except (OSError, ValueError):
                continue
    return None


def check_enclosing_run(path: os.PathLike) -> None:
    """:func:`check_run_format` of the run folder holding ``path``, if any."""
    root = enclosing_run(path)
    if root is not None:
        check_run_format(root)


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

    def finetune_for(self, k: int, preset: str = "") -> Path:
        """D_B + SPN fine-tuned on style image k (``finetune`` for k = 0) with the stylizer preset ``preset`` in a
        run that compares presets (``finetune@gates``, ``finetune@gates@s1``)."""
        return self.root / arm_name("finetune", k, preset)

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
