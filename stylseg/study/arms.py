"""A run's arms: the stylizers and baselines that make them (:func:`make_arms`), union arms and the jitter arm.

:func:`finetune_styles` fine-tunes one stylizer (D_B + SPN) per style image (``--styles K``) and stylizer preset
(``eval.presets``) of the run, and :func:`make_arms` writes every stylized and baseline arm from them: notebooks 04
and 05 call these two, and so does ``stylseg reproduce`` through them. The arms per style image k (``<arm>@s<k>``
for k >= 1) and, for the stylized ones, per preset (``st@gates``; :func:`~stylseg.layout.arm_name`):

- ``st`` (D_B + SPN, with the style image's blur and noise when ``stylize.sensor=match``), ``st_nospn`` (no SPN
  term), ``recon`` (the D_A round trip, once: it has no style image);
- ``histogram``, ``reinhard``, ``fda`` (cheap one-image stylizers, :mod:`stylseg.stylize.baselines`);
- ``sensor`` (the style image's blur and noise alone) and, when ``st`` is made without them, ``st_sensor``.

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
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

from ..layout import arm_base, arm_name, arm_preset, split_arm
from ..utils import StylsegError, read_json, write_json

UNION = "source+"
ALL = "@all"
JITTER = "jitter"
#: the settings the jitter arm trains with
JITTER_OVERRIDES = {"seg.color_jitter": True}


#: preferred order of arms in tables
ARM_ORDER = ("direct", "st", "st_nospn", "recon", "jitter", "source+st", "source+recon", "histogram", "source+histogram",
             "reinhard", "fda", "oracle")


#: what each arm is, in a few words (tables and the report)
ARM_ROLES = {
    "direct": "trained on the source images as they are (the baseline to beat)",
    "st": "the diffusion stylizer: D_B + SPN (the paper's method)",
    "st_nospn": "the diffusion stylizer without the SPN (ablation)",
    "st_sensor": "the diffusion stylizer, then the style image's blur and noise",
    "recon": "control: the D_A round trip, no style change",
    "jitter": "control: colour-jitter augmentation",
    "sensor": "control: the style image's blur and noise alone",
    "histogram": "cheap baseline: histogram matching to the style image",
    "reinhard": "cheap baseline: Reinhard colour transfer",
    "fda": "cheap baseline: Fourier domain adaptation",
    "oracle": "trained on labelled target images (upper bound)",
    "source+st": "the source images and their stylized copies (style augmentation)",
    "source+recon": "control: the source images and their D_A round trips (as many images as source+st)",
    "source+histogram": "the source images and their histogram-matched copies",
}


def arm_order(names: Iterable[str]) -> List[str]:
    """Arms in ARM_ORDER, each kind's presets side by side (in :data:`~stylseg.config.PRESETS` order), an arm's
    other style images (``st@s1``, ...) right after it, then ``<arm>@all``."""
    from ..config import PRESETS

    presets = list(PRESETS)

    def key(a):
        base, k = (a[:-len(ALL)], 10 ** 6) if a.endswith(ALL) else split_arm(a)
        kind, p = arm_base(base), arm_preset(base)
        return (ARM_ORDER.index(kind) if kind in ARM_ORDER else len(ARM_ORDER), kind,
                presets.index(p) + 1 if p in presets else 0, p, k)

    return sorted(dict.fromkeys(names), key=key)


def arm_role(arm: str) -> str:
    """A few words on what ``arm`` is (``st@s1``: the same as ``st``, made with style image 1; ``st@gates``: made
    with the stylizer preset ``gates``)."""
    if arm.endswith(ALL):
        base = arm[:-len(ALL)]
        return f"{arm_role(base) or base} (every style image)"
    base, k = split_arm(arm)
    kind, preset = arm_base(base), arm_preset(base)
    role = ARM_ROLES.get(kind, "")
    if not role and is_union(kind):
        role = f"the source images together with the {kind[len(UNION):]} arm's"
    notes = ([f"preset {preset}"] if preset else []) + ([f"style image {k}"] if k else [])
    return f"{role} ({', '.join(notes)})" if role and notes else role


def arm_kinds(name: str) -> Set[str]:
    """The names in ``eval.arms`` that select the arm ``name``: its kind (``st`` selects ``st@gates@s1``) and its
    kind with the preset (``st@gates``)."""
    return {arm_base(name), split_arm(name)[0]}


def is_union(name: str) -> bool:
    return name.startswith(UNION)


def _files(folder: Path) -> List[Tuple[str, str]]:
    """``(image, mask)`` file names of a paired folder, in name order (masks matched by stem)."""
    from ..data.io import list_images

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
    arms ``stylized`` (``{arm: folder}``, ``<arm>@s<k>`` and ``<arm>@<preset>`` included): ``source+<arm>`` per style
    image and preset and, with more than one style image, ``source+<arm>[@<preset>]@all`` (per preset). A wanted
    union of an arm the run does not hold is an error naming what it has."""
    source = layout.domain("source", "train")
    out: Dict[str, Path] = {}
    for w in sorted(n for n in wanted if is_union(n)):
        base = w[len(UNION):]
        variants = {a: Path(d) for a, d in stylized.items() if not is_union(a) and base in arm_kinds(a)}
        if not variants:
            have = sorted({arm_base(a) for a in stylized if not is_union(a)})
            raise StylsegError(f"eval.arms names {w}, but RUN/stylized holds no arm {base!r} (it has: "
                               f"{', '.join(have) or 'nothing'}): make {base} first (notebook 05) or drop {w}")
        groups: Dict[str, Dict[str, Path]] = {}  # per preset: its style images' arms
        for a in variants:
            groups.setdefault(split_arm(a)[0], {})[a] = variants[a]
        for name, group in sorted(groups.items()):
            for a in sorted(group, key=lambda a: split_arm(a)[1]):
                out[UNION + a] = make_union(layout.stylized(UNION + a), [("source", source), (a, group[a])])
            if len(group) > 1:
                out[UNION + name + ALL] = make_union(layout.stylized(UNION + name + ALL),
                                                     [("source", source)] + sorted(group.items()))
    return out


# --------------------------------------------------------------------------- stylizers and their arms
class Variant(NamedTuple):
    """One stylizer of a run: style image ``k`` (``style``), fitted with ``cfg`` (its preset applied) into
    ``folder``; ``preset`` is "" unless the run compares presets (``eval.presets``)."""

    k: int
    style: Path
    preset: str
    folder: Path
    cfg: Any

    def arm(self, kind: str) -> str:
        """The name of this stylizer's arm of ``kind`` (``st`` -> ``st@gates@s1``)."""
        return arm_name(kind, self.k, self.preset)


def stylizer_variants(layout, cfg) -> List[Variant]:
    """The run's stylizers, preset by preset (``eval.presets``; the run's one ``stylize.preset`` when empty) and
    style image by style image (``--styles K``). The first is the run's main stylizer, the one the notebooks show."""
    from ..config import with_preset

    presets = list(cfg.eval.presets) or [""]
    return [Variant(k, style, p, layout.finetune_for(k, p), with_preset(cfg, p) if p else cfg)
            for p in presets for k, style in enumerate(layout.style_images())]


def main_variant(layout, cfg=None) -> Variant:
    """The run's main stylizer, the one the notebooks show: the first of :func:`stylizer_variants` (``RUN/finetune``,
    its arm ``st``; ``RUN/finetune@<preset>`` and ``st@<preset>`` of the first preset in a run that compares
    presets). ``cfg``: the run's ``RUN/config.json`` when not given."""
    if cfg is None:
        from ..config import RunConfig, get_profile

        cfg = RunConfig.load(layout.config) if layout.config.is_file() else get_profile("smoke")
    return stylizer_variants(layout, cfg)[0]


def finetune_styles(layout, cfg, *, device="auto", retrain: bool = False, callback=None,
                    progress: bool = True) -> List[Path]:
    """Fine-tune every stylizer of the run (D_B + SPN, :func:`stylseg.stylize.finetune.finetune`;
    :func:`stylizer_variants`: one per style image and preset) from D_A (``RUN/diffae``) on the source training
    set; returns their folders (``RUN/finetune``, ``RUN/finetune@s<k>``, ``RUN/finetune@<preset>``), the main one
    first. A folder finished with the same settings is kept (``retrain=True`` fits it again); one made with other
    settings is fitted again. ``callback``: as :func:`~stylseg.stylize.finetune.finetune`'s, for the main stylizer
    only. A missing input is a :class:`StylsegError` naming what makes it."""
    from ..stylize.finetune import finetune

    _need(layout.diffae / "model.safetensors", "the DiffAE D_A", "notebook 02 (stylseg diffae train)")
    content = _need(layout.domain("source", "train"), "the source training images", "notebook 00 (stylseg data)")
    out = []
    for i, v in enumerate(stylizer_variants(layout, cfg)):
        _need(v.style, f"style image {v.k}", "notebook 00 (stylseg data)")
        out.append(finetune(layout.diffae, v.style, content, v.folder, v.cfg, resume=not retrain,
                            overwrite=True, device=device, callback=callback if i == 0 else None,
                            progress=progress and i == 0))
    return out


def make_arms(layout, cfg, *, device="auto", retrain: bool = False, progress: bool = True) -> Dict[str, Path]:
    """Write a run's stylized and baseline arms (module docstring) under ``RUN/stylized/``: the stylized arms per
    stylizer (style image and preset), the baselines once per style image, ``recon`` once; returns
    ``{arm: folder}``. Fine-tunes the stylizers first where they are missing (:func:`finetune_styles`).

    Each arm is a paired folder at ``data.seg_size`` with a manifest (method, parameters, the stylizer's
    ``preset``); finished files are kept, so a rerun only writes what is missing (delete ``RUN/stylized/`` after
    changing a setting)."""
    from ..stylize.apply import apply_arms
    from ..stylize.baselines import RUN_BASELINES, apply_baseline, ensure_baseline_arms

    finetune_styles(layout, cfg, device=device, retrain=retrain, progress=progress)
    src = layout.domain("source", "train")
    arms: Dict[str, Path] = {}
    for i, v in enumerate(stylizer_variants(layout, cfg)):
        specs = [{"arm": v.arm("st")}, {"arm": v.arm("st_nospn"), "use_spn": False}]
        if i == 0:
            specs.append({"arm": "recon", "mode": "recon"})
        for sp in specs:
            sp["out"] = layout.stylized(sp["arm"])
        for sp, folder in zip(specs, apply_arms(v.folder, src, specs, v.cfg, device=device, progress=progress)):
            arms[sp["arm"]] = folder
        if v.cfg.stylize.sensor == "off":  # st holds them already with sensor=match
            name = v.arm("st_sensor")
            arms[name] = apply_baseline("sensor", v.style, arms[v.arm("st")], layout.stylized(name),
                                        int(cfg.data.seg_size), arm=name, progress=False)
    # the baselines need no stylizer: once per style image, by the one function that makes a run's baselines
    methods = {**RUN_BASELINES, "sensor": {}}
    made = ensure_baseline_arms(layout, int(cfg.data.seg_size), methods=methods, progress=False)
    arms.update({a: made[a] for k in range(len(layout.style_images())) for a in (arm_name(m, k) for m in methods)})
    return arms


def _need(path: Path, what: str, maker: str) -> Path:
    if not Path(path).exists():
        raise StylsegError(f"{path}: {what} is missing; make it first with {maker}")
    return Path(path)
