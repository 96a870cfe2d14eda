"""A run's arms: the stylizers and baselines that make them (:func:`make_arms`), union arms and the jitter arm.

:func:`finetune_styles` fine-tunes one stylizer (D_B + SPN) per style image of the run (``--styles K``), and
:func:`make_arms` writes every stylized and baseline arm from them: notebooks 04 and 05 call these two, and so does
``stylseg reproduce`` through them. The arms per style image k (``<arm>@s<k>`` for k >= 1,
:func:`~stylseg.layout.arm_name`):

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
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from ..layout import arm_name, split_arm
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
    """Arms in ARM_ORDER, an arm's other style images (``st@s1``, ...) right after it, then ``<arm>@all``."""
    def key(a):
        base, k = (a[:-len(ALL)], 10 ** 6) if a.endswith(ALL) else split_arm(a)
        return (ARM_ORDER.index(base) if base in ARM_ORDER else len(ARM_ORDER), base, k)

    return sorted(dict.fromkeys(names), key=key)


def arm_role(arm: str) -> str:
    """A few words on what ``arm`` is (``st@s1``: the same as ``st``, made with style image 1)."""
    if arm.endswith(ALL):
        base = arm[:-len(ALL)]
        return f"{arm_role(base) or base} (every style image)"
    base, k = split_arm(arm)
    role = ARM_ROLES.get(base, "")
    if not role and is_union(base):
        role = f"the source images together with the {base[len(UNION):]} arm's"
    return f"{role} (style image {k})" if role and k else role


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


# --------------------------------------------------------------------------- stylizers and their arms
def finetune_styles(layout, cfg, *, device="auto", retrain: bool = False, callback=None,
                    progress: bool = True) -> List[Path]:
    """Fine-tune one stylizer (D_B + SPN, :func:`stylseg.stylize.finetune.finetune`) per style image of the run
    ``layout`` (:meth:`~stylseg.layout.RunLayout.style_images`) from D_A (``RUN/diffae``) on the source training
    set, with ``cfg`` (its ``stylize.preset`` and fields); returns the stylizer folders (``RUN/finetune``,
    ``RUN/finetune@s<k>``). A folder finished with the same settings is kept (``retrain=True`` fits it again);
    one made with other settings is fitted again. ``callback``: as :func:`~stylseg.stylize.finetune.finetune`'s,
    for the first style image only. A missing input is a :class:`StylsegError` naming what makes it."""
    from ..stylize.finetune import finetune

    _need(layout.diffae / "model.safetensors", "the DiffAE D_A", "notebook 02 (stylseg diffae train)")
    content = _need(layout.domain("source", "train"), "the source training images", "notebook 00 (stylseg data)")
    out = []
    for k, style in enumerate(layout.style_images()):
        _need(style, f"style image {k}", "notebook 00 (stylseg data)")
        out.append(finetune(layout.diffae, style, content, layout.finetune_for(k), cfg, resume=not retrain,
                            overwrite=True, device=device, callback=callback if k == 0 else None,
                            progress=progress and k == 0))
    return out


def make_arms(layout, cfg, *, device="auto", retrain: bool = False, progress: bool = True) -> Dict[str, Path]:
    """Write a run's stylized and baseline arms, per style image (module docstring), under ``RUN/stylized/``;
    returns ``{arm: folder}``. Fine-tunes the stylizers first where they are missing (:func:`finetune_styles`).

    Each arm is a paired folder at ``data.seg_size`` with a manifest (method, parameters, the stylizer's
    ``preset``); finished files are kept, so a rerun only writes what is missing (delete ``RUN/stylized/`` after
    changing a setting)."""
    from ..stylize.baselines import RUN_BASELINES, apply_baseline
    from ..stylize.apply import apply_arms

    stylizers = finetune_styles(layout, cfg, device=device, retrain=retrain, progress=progress)
    src = layout.domain("source", "train")
    seg = int(cfg.data.seg_size)
    arms: Dict[str, Path] = {}
    for k, (style, model) in enumerate(zip(layout.style_images(), stylizers)):
        specs = [{"arm": arm_name("st", k)}, {"arm": arm_name("st_nospn", k), "use_spn": False}]
        if k == 0:
            specs.append({"arm": "recon", "mode": "recon"})
        for sp in specs:
            sp["out"] = layout.stylized(sp["arm"])
        for sp, folder in zip(specs, apply_arms(model, src, specs, cfg, device=device, progress=progress)):
            arms[sp["arm"]] = folder
        for method, params in RUN_BASELINES.items():
            name = arm_name(method, k)
            arms[name] = apply_baseline(method, style, src, layout.stylized(name), seg, arm=name, progress=False,
                                        **params)
        name = arm_name("sensor", k)
        arms[name] = apply_baseline("sensor", style, src, layout.stylized(name), seg, arm=name, progress=False)
        if cfg.stylize.sensor == "off":  # st holds them already with sensor=match
            name = arm_name("st_sensor", k)
            arms[name] = apply_baseline("sensor", style, arms[arm_name("st", k)], layout.stylized(name), seg,
                                        arm=name, progress=False)
    return arms


def _need(path: Path, what: str, maker: str) -> Path:
    if not Path(path).exists():
        raise StylsegError(f"{path}: {what} is missing; make it first with {maker}")
    return Path(path)
