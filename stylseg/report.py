"""The report of a run: tables in the paper's format, radar charts, the qualitative grid, index.html.

``build_report(run_dir)`` reads ``RUN/seg/<arch>/<arm>/seed<k>/metrics.json`` (written by
:func:`stylseg.study.compare`) and the stylized arms' manifests (``RUN/stylized/<arm>/manifest.json``,
their ``scores``), and writes::

    RUN/eval/results.json, results.md, results_<protocol>.csv   tables with intervals
    RUN/eval/radar_<arch>.png        Dice, IoU, Spec., F_beta^w, S_alpha, E_phi^max, 1-MAE of the teaching arms
                                     (direct, st, histogram, oracle; the paper's Figures 5 and 7)
    RUN/eval/qualitative_<test>.png  image, ground truth, the teaching arms' maps (Figures 4 and 6);
    RUN/eval/qualitative_<test>_all.png  the same with every arm (when the run has more)

Every figure draws an arm in the same colour (:func:`arm_colour`), here and in notebooks 05-07.
    RUN/index.html                   links to everything, executed notebooks included

CLI: ``stylseg report --run DIR``.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .layout import RunLayout
from .metrics import METRIC_LABELS, PAPER_METRICS
from .utils import StylsegError, atomic_path, read_json, write_json

RADAR_AXES = ("dice", "iou", "specificity", "wfm", "s_alpha", "e_max", "mae")
RADAR_LABELS = {"dice": "Dice", "iou": "IoU", "specificity": "Spec.", "wfm": r"$F^w_\beta$",
                "s_alpha": r"$S_\alpha$", "e_max": r"$E_\phi^{max}$", "mae": "1 - MAE"}


# --------------------------------------------------------------------------- one colour per arm
#: the colour of each arm kind in every figure (notebooks 05-07 and the report): references grey and black,
#: the diffusion stylizer and its ablations blues, controls browns, cheap baselines greens / purple / orange
ARM_COLOURS = {"original": "#7f7f7f", "direct": "#7f7f7f", "oracle": "#111111",
               "st": "#1f77b4", "st_nospn": "#6baed6", "st_sensor": "#08519c", "source+st": "#17becf",
               "recon": "#8c564b", "source+recon": "#c49c94", "jitter": "#bcbd22", "sensor": "#e377c2",
               "histogram": "#2ca02c", "source+histogram": "#98df8a", "reinhard": "#9467bd", "fda": "#ff7f0e",
               "target": "#d62728"}
#: colours of arm kinds the table above does not name (chosen by a stable hash of the kind)
_SPARE_COLOURS = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#5254a3", "#8ca252", "#bd9e39")
#: the arms that teach, in the order the figures show them: the baseline, the method, a cheap baseline, the bound
TEACHING_KINDS = ("direct", "st", "histogram", "oracle")


def _shade(colour: str, amount: float) -> str:
    """``colour`` mixed with white (amount > 0) or black (amount < 0), |amount| in [0, 1]."""
    from matplotlib.colors import to_hex, to_rgb

    rgb = np.asarray(to_rgb(colour))
    rgb = rgb + (1 - rgb) * amount if amount >= 0 else rgb * (1 + amount)
    return to_hex(np.clip(rgb, 0, 1))


def arm_colour(arm: str) -> str:
    """The hex colour of arm ``arm`` in every figure: its kind's (:func:`~stylseg.layout.arm_base`; ``st@gates@s1``
    takes ``st``'s), shaded for a style image k > 0 (lighter) and for a preset other than the first one of
    :data:`~stylseg.config.PRESETS` (darker), so that a preset comparison's arms stay apart."""
    import zlib

    from .config import PRESETS
    from .layout import arm_base, arm_preset, split_arm

    kind = arm_base(arm)
    colour = ARM_COLOURS.get(kind) or _SPARE_COLOURS[zlib.crc32(kind.encode()) % len(_SPARE_COLOURS)]
    presets, preset, k = list(PRESETS), arm_preset(arm), split_arm(arm)[1]
    if preset in presets and presets.index(preset) > 0:
        colour = _shade(colour, -0.3 * presets.index(preset) / max(1, len(presets) - 1))
    return _shade(colour, min(0.6, 0.25 * k)) if k else colour


def arm_style(arm: str) -> Dict[str, Any]:
    """Line keywords of arm ``arm`` in a line plot or radar: its colour, dashed for the references direct and
    oracle."""
    from .layout import arm_base

    return {"color": arm_colour(arm), "ls": "--" if arm_base(arm) in ("direct", "oracle") else "-"}


def teaching_arms(arms: Sequence[str], kinds: Sequence[str] = TEACHING_KINDS) -> List[str]:
    """The arms of ``arms`` a figure shows, at most one per kind of ``kinds`` in that order: the first arm of each
    kind made with style image 0 (``st``, or ``st@<preset>`` in a run that compares presets). Every arm of ``arms``
    when none of ``kinds`` is among them."""
    from .layout import arm_base, split_arm

    out = [next((a for a in arms if arm_base(a) == k and split_arm(a)[1] == 0), None) for k in kinds]
    out = [a for a in out if a is not None]
    return out or list(arms)


def _check_run_names(root: Path) -> None:
    """Refuse a ``<arch>/<arm>/seed<k>/metrics.json`` under ``root`` whose arch, arm or test names break the command
    line's name rule (:func:`~stylseg.layout.check_name`) or differ from the folders holding it: the report builds
    file names from them, and a run folder received from someone else must not write outside itself."""
    from .layout import check_name

    for p in sorted(root.glob("*/*/seed*/metrics.json")):
        m = read_json(p)
        tests = m.get("tests") if isinstance(m, dict) else None
        names = [("arch", m.get("arch") if isinstance(m, dict) else None, p.parent.parent.parent.name),
                 ("arm", m.get("arm") if isinstance(m, dict) else None, p.parent.parent.name)]
        names += [("test set", t, None) for t in (tests if isinstance(tests, dict) else [None])]
        for what, name, folder in names:
            try:
                ok = check_name(name, what, "") == (folder or name)
            except StylsegError:
                ok = False
            if not ok:
                raise StylsegError(
                    f"{p}: {what} name {name!r} is not a plain folder name (letters, digits, _ . @ + -) or is not "
                    f"the folder that holds the file{f' ({folder!r})' if folder else ''}: the report names files "
                    f"after it and refuses it. This file was not written by stylseg as it is: delete it, or rerun "
                    f"`stylseg seg compare` into this folder")


def _seg_results(layout: RunLayout, n_boot: int) -> Optional[Dict[str, Any]]:
    from .study.tables import aggregate, collect

    root = layout.root / "seg"
    if not root.is_dir() or not collect(root):
        return None
    _check_run_names(root)
    return aggregate(root, n_boot=n_boot)


def _eval_png(ev: Path, kind: str, name: str) -> Path:
    """``ev/<kind>_<name>.png`` for a checked ``name``, refused unless it stays directly under ``ev`` (RUN/eval)."""
    from .layout import check_name

    p = ev / f"{kind}_{check_name(name, kind, '')}.png"
    if p.resolve().parent != ev.resolve():
        raise StylsegError(f"{p}: would be written outside {ev}; the report writes only into RUN/eval")
    return p


def stylizer_scores(layout: RunLayout) -> Dict[str, Dict[str, Any]]:
    """``{arm: {"method", "params", "n_items", "scores"}}`` from ``RUN/stylized/*/manifest.json``."""
    out = {}
    root = layout.root / "stylized"
    if not root.is_dir():
        return out
    for man in sorted(root.glob("*/manifest.json")):
        m = read_json(man)
        out[man.parent.name] = {"method": m.get("method"), "params": m.get("params", {}), "source": m.get("source"),
                                "n_items": len(m.get("items", [])), "substitute": m.get("substitute"),
                                "scores": m.get("scores", {})}
    return out


from .study.tables import primary_test  # noqa: E402  (re-exported: notebooks call report.primary_test)


def primary_arms(results: Mapping[str, Any]) -> List[str]:
    """The arms made with style image 0 (plus direct and oracle): what the figures show; the arms of
    further style images (``st@s1``, ...) appear in the tables and the style-spread table."""
    from .layout import split_arm

    return [a for a in results["arms"] if split_arm(a)[1] == 0]


def radar_values(results: Mapping[str, Any], arch: str, test: str, protocol: str,
                 arms: Optional[Sequence[str]] = None) -> Dict[str, List[float]]:
    """``{arm: [Dice, IoU, Spec., F^w, S_alpha, E_phi^max, 1 - MAE]}`` (means over seeds), for ``arms`` (default:
    every arm of style image 0; :func:`teaching_arms` gives the few a readable chart holds)."""
    from .study.tables import table

    t = table(results, test, protocol)
    out = {}
    for arm in (primary_arms(results) if arms is None else arms):
        row = t.get((arch, arm))
        if row is None:
            continue
        out[arm] = [(1 - row[k]["mean"]) if k == "mae" else row[k]["mean"] for k in RADAR_AXES]
    return out


def plot_radar(values: Mapping[str, Sequence[float]], title: str = "", ax=None):
    """A radar chart over the seven metrics, one polygon per arm in its :func:`arm_colour`, the legend outside the
    polar axes; returns the figure."""
    import matplotlib.pyplot as plt

    n = len(RADAR_AXES)
    ang = np.linspace(0, 2 * np.pi, n, endpoint=False).tolist()
    if ax is None:
        fig, ax = plt.subplots(figsize=(7.0, 4.8), subplot_kw={"projection": "polar"})
    else:
        fig = ax.figure
    lo = min(min(v) for v in values.values())
    rmin = max(0.0, np.floor((lo - 0.05) * 10) / 10)
    for arm, v in values.items():
        v = list(v)
        ax.plot(ang + ang[:1], v + v[:1], lw=1.8, label=arm, **arm_style(arm))
        ax.fill(ang + ang[:1], v + v[:1], alpha=0.06, color=arm_colour(arm))
    ax.set_xticks(ang)
    ax.set_xticklabels([RADAR_LABELS[k] for k in RADAR_AXES])
    ax.set_ylim(rmin, 1.0)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(title, pad=28, fontsize=10)  # above the top axis label
    ax.legend(loc="center left", bbox_to_anchor=(1.15, 0.5), fontsize=9, frameon=False)
    fig.tight_layout()
    return fig


def plot_qualitative(layout: RunLayout, results: Mapping[str, Any], test: str, arch: Optional[str] = None,
                     n: int = 4, seed: int = 0, arms: Optional[Sequence[str]] = None):
    """The grid of the paper's Figures 4/6: rows = test images, columns = image, ground truth,
    then the prediction (seed ``seed``) of each arm of ``arms`` (default: :func:`teaching_arms`, ``direct``
    first; ``primary_arms(results)`` for all). Images with the largest Dice spread between the shown arms come
    first (where they differ). Column titles in the arms' colours. Returns the figure."""
    import matplotlib.pyplot as plt

    from .data.io import read_image, read_mask

    arch = arch or results["archs"][0]
    seg = layout.root / "seg" / arch
    arms = teaching_arms(primary_arms(results)) if arms is None else list(arms)
    arms = [a for a in arms if (seg / a / f"seed{seed}" / "metrics.json").is_file()]
    if not arms:
        raise StylsegError(f"{seg}: no finished seed{seed} runs to draw")
    metrics = {a: read_json(seg / a / f"seed{seed}" / "metrics.json") for a in arms}
    from .study.compare import test_sets

    test_dir = test_sets(layout).get(test)  # from the run layout, never a path recorded in a run file
    if test_dir is None:
        raise StylsegError(f"{layout.root}: test set {test!r} is not one of the run's test folders under "
                           f"RUN/data ({', '.join(test_sets(layout)) or 'none'}); no qualitative figure for it")
    per = {a: {r["name"]: r["dice"] for r in metrics[a]["tests"][test]["standard"]["per_image"]} for a in arms}
    names = list(per[arms[0]])
    spread = {nm: np.ptp([per[a].get(nm, 0.0) for a in arms]) for nm in names}
    pick = sorted(names, key=lambda nm: -spread[nm])[:n]
    cols = ["image", "ground truth"] + arms
    fig, axes = plt.subplots(len(pick), len(cols), figsize=(1.7 * len(cols), 1.75 * len(pick)), squeeze=False)
    from .data.io import list_images

    img_files = {p.stem: p for p in list_images(test_dir / "images")}
    mask_files = {p.stem: p for p in list_images(test_dir / "masks")}
    for r, nm in enumerate(pick):
        panels = [read_image(img_files[nm]), read_mask(mask_files[nm])]
        for a in arms:
            pp = seg / a / f"seed{seed}" / "predictions" / test / f"{nm}.png"
            panels.append(np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(pp)) if pp.is_file()
                          else np.zeros_like(panels[1], dtype=np.uint8))
        for c, (ax, im) in enumerate(zip(axes[r], panels)):
            ax.imshow(im, cmap=None if im.ndim == 3 else "gray", vmin=0, vmax=1 if im.dtype == bool else 255)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=9, color=arm_colour(cols[c]) if c >= 2 else "black")
            if c >= 2:
                ax.set_xlabel(f"Dice {per[arms[c - 2]].get(nm, float('nan')):.2f}", fontsize=8)
        axes[r][0].set_ylabel(nm, fontsize=8)
    fig.suptitle(f"{arch}, test '{test}', seed {seed}\n(probability maps; Dice = mean over thresholds)", fontsize=9)
    fig.tight_layout()
    return fig


def arm_dice(results: Mapping[str, Any], test: str, arch: Optional[str] = None, protocol: str = "standard"
             ) -> Dict[str, float]:
    """``{arm: Dice}`` on one test set: the mean over seeds, of the first architecture unless ``arch`` is given
    (what a notebook prints next to a figure)."""
    arch = arch or results["archs"][0]
    return {r["arm"]: float(r["mean"]) for r in results["rows"]
            if r["arch"] == arch and r["test"] == test and r["protocol"] == protocol and r["metric"] == "dice"}


def plot_domain_predictions(layout: RunLayout, arms: Sequence[str] = ("direct",), tests: Sequence[str] = ("source",
                            "target"), arch: str = "unet", seed: int = 0, n: int = 3):
    """One model on two domains, side by side: for each test set in ``tests``, the first ``n`` test images, their
    ground truth and the probability map of each arm in ``arms`` (seed ``seed``), with the per-image Dice under
    each map. Shows where a segmenter that reads the source domain well fails on the target. Returns the figure."""
    import matplotlib.pyplot as plt
    from PIL import Image

    from .data.io import list_images, read_image, read_mask

    seg = layout.root / "seg" / arch
    metrics = {a: read_json(seg / a / f"seed{seed}" / "metrics.json") for a in arms
               if (seg / a / f"seed{seed}" / "metrics.json").is_file()}
    if not metrics:
        raise StylsegError(f"{seg}: no finished seed{seed} run of {', '.join(arms)} to draw (run notebook 06)")
    cols = [(t, c) for t in tests for c in ["image", "ground truth"] + list(metrics)]
    fig, axes = plt.subplots(n, len(cols), figsize=(1.6 * len(cols), 1.7 * n), squeeze=False)
    for t in tests:
        tdir = Path(next(iter(metrics.values()))["tests"][t]["dir"])
        masks = {p.stem: p for p in list_images(tdir / "masks")}
        for r, img in enumerate(list_images(tdir / "images")[:n]):
            for c, (tt, what) in enumerate(cols):
                if tt != t:
                    continue
                ax = axes[r][c]
                if what == "image":
                    ax.imshow(read_image(img))
                elif what == "ground truth":
                    ax.imshow(read_mask(masks[img.stem]), cmap="gray")
                else:
                    pred = seg / what / f"seed{seed}" / "predictions" / t / f"{img.stem}.png"
                    ax.imshow(np.asarray(Image.open(pred)), cmap="gray", vmin=0, vmax=255)
                    per = {q["name"]: q["dice"] for q in metrics[what]["tests"][t]["standard"]["per_image"]}
                    ax.set_xlabel(f"Dice {per.get(img.stem, float('nan')):.2f}", fontsize=8)
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"{t}: {what}", fontsize=8)
    fig.suptitle(f"{arch}, seed {seed}: the same models on the {' and the '.join(tests)} test images", fontsize=9)
    fig.tight_layout()
    return fig


def plot_arms(layout: RunLayout, arms: Sequence[str], n: int = 3):
    """The first ``n`` training images of the original set (``direct``) and of each arm, side by side in the table
    order of the arms, each title in the arm's colour (union arms, which hold the source images and another arm's,
    are left out)."""
    import matplotlib.pyplot as plt

    from .study.arms import arm_order, is_union
    from .data.io import list_images, read_image

    folders = {"direct": layout.domain("source", "train")}
    folders.update({a: layout.stylized(a) for a in arm_order(arms) if not is_union(a)})
    folders["oracle (target)"] = layout.domain("target", "train")
    folders = {k: v for k, v in folders.items() if (Path(v) / "images").is_dir()}
    fig, axes = plt.subplots(n, len(folders), figsize=(1.7 * len(folders), 1.7 * n), squeeze=False)
    for c, (name, folder) in enumerate(folders.items()):
        files = list_images(Path(folder) / "images")[:n]
        for r in range(n):
            ax = axes[r][c]
            if r < len(files):
                ax.imshow(read_image(files[r]))
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0][c].set_title(name, fontsize=9, color=arm_colour(name.split(" ")[0]))
    fig.tight_layout()
    return fig


def plot_histories(layout: RunLayout, arch: Optional[str] = None, seed: int = 0):
    """Training loss per epoch of every arm (``RUN/seg/<arch>/<arm>/seed<k>/history.json``), each in its
    :func:`arm_colour`, the legend beside the last panel."""
    import matplotlib.pyplot as plt

    root = layout.root / "seg"
    archs = [arch] if arch else sorted(p.name for p in root.iterdir() if p.is_dir())
    from .study.arms import arm_order

    fig, axes = plt.subplots(1, len(archs), figsize=(4.5 * len(archs) + 1.8, 3.2), squeeze=False)
    for ax, a in zip(axes[0], archs):
        hists = {h.parent.parent.name: h for h in (root / a).glob(f"*/seed{seed}/history.json")}
        for arm in arm_order(hists):
            hist = read_json(hists[arm])
            ax.plot([e["epoch"] for e in hist], [e["loss"] for e in hist], marker=".", label=arm, **arm_style(arm))
        ax.set_title(f"{a}, seed {seed}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("structure loss")
    axes[0][-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def protocol_table(results: Mapping[str, Any], test: str, arch: Optional[str] = None) -> str:
    """Markdown: each of the seven metrics in the standard and the paper protocol, per arm."""
    from .study.tables import md_text, table

    arch = arch or results["archs"][0]
    std, pap = table(results, test, "standard"), table(results, test, "paper")
    lines = ["| arm | " + " | ".join(f"{METRIC_LABELS[m]} std / paper" for m in PAPER_METRICS) + " |",
             "|" + "---|" * (1 + len(PAPER_METRICS))]
    for arm in primary_arms(results):
        if (arch, arm) in std and (arch, arm) in pap:
            lines.append(f"| {md_text(arm)} | " + " | ".join(
                f"{std[(arch, arm)][m]['mean']:.3f} / {pap[(arch, arm)][m]['mean']:.3f}" for m in PAPER_METRICS) + " |")
    return "\n".join(lines)


def plot_protocols(layout: RunLayout, results: Mapping[str, Any], test: str, arch: Optional[str] = None,
                   seed: int = 0, metrics: Sequence[str] = ("dice", "specificity", "s_alpha", "e_max"),
                   arms: Optional[Sequence[str]] = None):
    """Per-image values, standard (x) against paper (y) protocol, each arm of ``arms`` (default:
    :func:`teaching_arms`) of seed ``seed`` in its :func:`arm_colour`: points off the diagonal are images the two
    definitions judge differently."""
    import matplotlib.pyplot as plt

    arch = arch or results["archs"][0]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.3), squeeze=False)
    for arm in (teaching_arms(primary_arms(results)) if arms is None else arms):
        p = layout.seg(arch, arm, seed) / "metrics.json"
        if not p.is_file():
            continue
        t = read_json(p)["tests"][test]
        pap = {r["name"]: r for r in t["paper"]["per_image"]}
        for ax, m in zip(axes[0], metrics):
            xs = [r[m] for r in t["standard"]["per_image"]]
            ys = [pap[r["name"]][m] for r in t["standard"]["per_image"]]
            ax.scatter(xs, ys, s=12, alpha=0.7, label=arm, color=arm_colour(arm))
    for ax, m in zip(axes[0], metrics):
        ax.plot([0, 1.05], [0, 1.05], "k:", lw=1)
        ax.set_title(METRIC_LABELS[m])
        ax.set_xlabel("standard")
        ax.set_ylabel("paper")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


#: the stylizer scores of the report, grouped: (key, column heading, what it says)
STRUCTURE_SCORES = (("structure_ssim", "SSIM_S image", "structure SSIM of the whole image (1 = kept)"),
                    ("structure_ssim_lesion", "SSIM_S lesion", "the same around the lesion"),
                    ("structure_edge_f1", "edge F1", "edges within 3 px of the lesion boundary"),
                    ("oracle_dice_ratio", "oracle Dice ratio", "an oracle segmenter's Dice, output / input"))
STYLE_SCORES = (("style_fd_ratio", "FD ratio", "Frechet distance to the target, output / input (lower is closer)"),
                ("style_p_target_output", "P(target)", "a domain classifier's probability of 'target'"))


METHOD_NAMES = {"histogram": "histogram matching", "reinhard": "Reinhard colour transfer",
                "fda": "Fourier domain adaptation", "sensor": "sensor matching (the style image's blur and noise)",
                "jitter": "colour jitter"}


def _method_name(arm: str, v: Mapping[str, Any]) -> str:
    """The method that made an arm as a reader names it: 'diffusion stylizer (D_B + SPN)', 'histogram matching', ..."""
    params = v.get("params") or {}
    method = str(v.get("method") or "")
    if method.startswith("diffusion"):
        if params.get("mode") == "recon" or method.endswith("recon"):
            return "D_A round trip (no style)"
        return "diffusion stylizer" + (" without SPN" if params.get("use_spn") is False else " (D_B + SPN)")
    name = METHOD_NAMES.get(method, method or arm)
    source = Path(str(v.get("source") or ""))
    if source.parent.name == "stylized":  # a step applied to another arm's images (st_sensor: sensor on st)
        name = f"{source.name}, then {name}"
    return name


def _stylizer_rows(st: Mapping[str, Mapping[str, Any]]) -> List[Dict[str, str]]:
    from .study.arms import arm_order

    rows = []
    for arm in arm_order(st):
        v = st[arm]
        sc = v.get("scores") or {}
        if not any(isinstance(sc.get(k), (int, float)) for k, _, _ in STRUCTURE_SCORES + STYLE_SCORES):
            continue

        def cell(k):
            x = sc.get(k)
            return f"{x:.3f}" if isinstance(x, (int, float)) and x == x else "-"

        rows.append({"arm": arm, "method": _method_name(arm, v), "images": str(int(v.get("n_items", 0))),
                     **{k: cell(k) for k, _, _ in STRUCTURE_SCORES + STYLE_SCORES}})
    return rows


def _stylizer_markdown(st: Mapping[str, Mapping[str, Any]]) -> str:
    """The scored arms in one short table, structure columns then style columns."""
    from .study.tables import md_text

    rows = _stylizer_rows(st)
    if not rows:
        return ""
    cols = STRUCTURE_SCORES + STYLE_SCORES
    lines = ["# Stylized arms: structure and style", "",
             "Structure (1 = the input's structure kept): " + "; ".join(f"{h}: {d}" for _, h, d in STRUCTURE_SCORES)
             + ". Style (toward the target domain): " + "; ".join(f"{h}: {d}" for _, h, d in STYLE_SCORES)
             + ". Doing nothing scores structure 1, FD ratio 1 and the inputs' P(target).", "",
             "| arm | method | images | " + " | ".join(f"structure: {h}" for _, h, _ in STRUCTURE_SCORES) + " | "
             + " | ".join(f"style: {h}" for _, h, _ in STYLE_SCORES) + " |",
             "|" + "---|" * (3 + len(cols))]
    for r in rows:
        lines.append("| " + " | ".join([md_text(r["arm"]), md_text(r["method"]), r["images"]]
                                       + [r[k] for k, _, _ in cols]) + " |")
    return "\n".join(lines) + "\n"


def run_notes(layout: RunLayout) -> List[str]:
    """What the reader of a run's tables must know that the tables do not show: a D_A stopped by the wall-clock cap
    (``diffae.max_seconds``) instead of its step budget, whose results then depend on the machine's speed."""
    notes = []
    p = layout.diffae / "config.json"
    tr = (read_json(p).get("training") or {}) if p.is_file() else {}
    if tr.get("stopped_by") == "time":
        notes.append(f"D_A stopped at step {tr.get('step')} of {tr.get('train_steps')} when the wall-clock cap "
                     f"diffae.max_seconds={tr.get('max_seconds')} was spent: every result built on it depends on this "
                     f"machine's speed, and another run may differ. For a reproducible run, train the D_A by its step "
                     f"budget (--set diffae.max_seconds=0).")
    return notes


def describe_run(layout: RunLayout) -> List[str]:
    """The run folder in a few lines, read from its own files (never quoted from elsewhere): profile and seed
    (``config.json``), D_A's training (``diffae/config.json``), the stylizer's preset and iterations
    (``finetune/config.json``), each stylized arm's P(target) and structure around the lesion (the manifests'
    scores) and each arm's target-domain Dice (``seg/results.json``). Parts not made yet are said so."""
    lines = []
    cfg = read_json(layout.config) if layout.config.is_file() else {}
    lines.append(f"run folder {layout.root}: profile {cfg.get('profile', '?')}, seed {cfg.get('seed', '?')}")
    p = layout.diffae / "config.json"
    tr = (read_json(p).get("training") or {}) if p.is_file() else {}
    lines.append(f"D_A: {tr.get('step')} of {tr.get('train_steps')} training steps" if tr else "D_A: not trained here")
    from .study.arms import main_variant

    p = main_variant(layout).folder / "config.json"
    st = (read_json(p).get("config") or {}).get("stylize", {}) if p.is_file() else {}
    lines.append(f"stylizer: preset {st.get('preset')}, {st.get('iterations')} fine-tuning iterations" if st
                 else "stylizer: not fine-tuned yet (notebook 04)")
    for arm, v in stylizer_scores(layout).items():
        sc = v["scores"]
        if "style_p_target_output" in sc:
            lines.append(f"arm {arm}: P(target) {sc['style_p_target_output']:.3f}, structure around the lesion "
                         f"{sc.get('structure_ssim_lesion', float('nan')):.3f}")
    p = layout.root / "seg" / "results.json"
    if p.is_file():
        res = read_json(p)
        dice = arm_dice(res, primary_test(res))
        lines.append(f"target-domain Dice ({res['archs'][0]}): " + ", ".join(f"{a} {d:.3f}" for a, d in dice.items()))
    else:
        lines.append("segmentation: not run yet (notebook 06)")
    return lines


def _rel(p: Path, root: Path) -> str:
    return html.escape(os.path.relpath(p, root), quote=True)


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
        "font-size:13px;text-align:left}th{background:#f3f3f3}td.num{font-variant-numeric:tabular-nums;"
        "white-space:nowrap}tr.direct td{background:#f7f7f7}.better{color:#1a7f37;font-weight:600}"
        ".worse{color:#b42318;font-weight:600}.muted{color:#666;font-size:13px}img{max-width:100%}"
        "figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}figure img{max-height:560px}figcaption{font-size:12px;color:#555}")


def _swatch(arm: str) -> str:
    """A small square in the arm's figure colour, before its name in the report's table."""
    return (f"<span style='display:inline-block;width:.8em;height:.8em;margin-right:.35em;vertical-align:-.05em;"
            f"background:{arm_colour(arm)}'></span>")


def _headline_html(results: Mapping[str, Any]) -> List[str]:
    from .study.tables import NEGLIGIBLE, headline, headline_cells, target_tests

    test = primary_test(results)
    rows = headline(results, test, "standard")
    if not rows:
        return []
    n_seeds = max(r["seeds"] for r in rows)
    out = [f"<h2 id='answer'>The answer: Dice on the target test set <code>{_e(test)}</code></h2>",
           f"<p class='muted'>Standard protocol, {rows[0]['n_images']} test images. Dice: mean ± standard deviation "
           f"over {n_seeds} seed(s) [bootstrap 95% interval over test images]. Gain over direct: the paired per-image "
           "difference, averaged over the seeds [bootstrap 95% interval]; <b>better</b> or <b>worse</b> only where "
           f"the interval excludes 0 and the gain is at least {NEGLIGIBLE} (<i>negligible</i> below)"
           + (" (with one seed the intervals cover the test images, not the training's own noise)" if n_seeds == 1
              else "") + ".</p>",
           "<table><tr><th>arch</th><th>arm</th><th>what it is</th><th>Dice</th><th>gain over direct</th>"
           "<th></th></tr>"]
    for r in rows:
        c = headline_cells(r)
        cls = c["verdict"].replace(" ", "-")
        out.append(f"<tr class='{_e(r['arm']) if r['arm'] == 'direct' else ''}'><td>{_e(r['arch'])}</td>"
                   f"<td style='white-space:nowrap'>{_swatch(r['arm'])}<b>{_e(r['arm'])}</b></td>"
                   f"<td>{_e(r['role'])}</td>"
                   f"<td class='num'>{_e(c['dice'])}</td>"
                   f"<td class='num'>{_e(c['gain'])}</td><td class='{cls}'>{_e(c['verdict'])}</td></tr>")
    out.append("</table>")
    tests = target_tests(results)
    if len(tests) > 1:
        cols = {t: {(r["arch"], r["arm"]): r for r in headline(results, t, "standard")} for t in tests}
        out += ["<p class='muted'>The same on every target test set: Dice mean ± sd over seeds; gain over direct "
                "[bootstrap 95% interval].</p>",
                "<table><tr><th>arch</th><th>arm</th>" + "".join(
                    f"<th><code>{_e(t)}</code> ({next(iter(cols[t].values()))['n_images'] if cols[t] else 0})</th>"
                    for t in tests) + "</tr>"]
        for r in rows:
            cells = []
            for t in tests:
                x = cols[t].get((r["arch"], r["arm"]))
                if x is None:
                    cells.append("<td>-</td>")
                    continue
                c = headline_cells(x)
                dice = f"{x['mean']:.3f}" + (f" ± {x['std']:.3f}" if x["seeds"] > 1 else "")
                cls = c["verdict"].replace(" ", "-")
                cells.append(f"<td class='num'>{_e(dice)}" + (f"<br>{_e(c['gain'])} <span class='{cls}'>"
                                                              f"{_e(c['verdict'])}</span>" if c["gain"] else "")
                             + "</td>")
            out.append(f"<tr><td>{_e(r['arch'])}</td><td><b>{_e(r['arm'])}</b></td>{''.join(cells)}</tr>")
        out.append("</table>")
    return out


def _notebook_links(layout: RunLayout) -> List[str]:
    nbs = sorted(layout.notebooks.glob("*.ipynb")) if layout.notebooks.is_dir() else []
    if not nbs:
        return []
    items = []
    for p in nbs:
        h = p.with_suffix(".html")
        main = (f"<a href='{_rel(h, layout.root)}'>{_e(p.stem)}</a>" if h.is_file() else _e(p.stem))
        items.append(f"<li>{main} <span class='muted'>(<a href='{_rel(p, layout.root)}'>.ipynb</a>)</span></li>")
    return ["<h2 id='notebooks'>Executed notebooks</h2><p class='muted'>Rendered to HTML with their figures; "
            "the .ipynb opens in Jupyter.</p><ul>" + "".join(items) + "</ul>"]


def write_index(layout: RunLayout, results: Optional[Mapping[str, Any]] = None,
                figures: Optional[Sequence[Path]] = None) -> Path:
    """``RUN/index.html``: the answer first (target-domain Dice of every arm, its gain over direct), then the
    figures, the stylizer scores, the full tables, the executed notebooks (HTML) and the other outputs.
    ``results`` and ``figures`` default to what ``RUN/eval/`` holds, so the page can be refreshed cheaply
    (``stylseg reproduce`` does so after the last notebook, to link every rendered notebook)."""
    root = layout.root
    saved = read_json(layout.eval / "results.json") if (layout.eval / "results.json").is_file() else {}
    if results is None:
        results = saved.get("seg")
    if figures is None:
        first = f"qualitative_{primary_test(results)}.png" if results else ""
        figures = (sorted(layout.eval.glob("radar_*.png"))
                   + sorted(layout.eval.glob("qualitative_*.png"), key=lambda p: (p.name != first, p.name))
                   if layout.eval.is_dir() else [])
    cfg = read_json(layout.config) if layout.config.is_file() else {}
    cfg = cfg if isinstance(cfg, dict) else {}  # a damaged config.json: the report shows '?' for its settings
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>stylseg run {_e(root.name)}</title><style>{_CSS}</style></head><body>",
             f"<h1>stylseg run <code>{_e(root.name)}</code></h1>",
             f"<p class='muted'>{_e(root.resolve())} · profile <b>{_e(cfg.get('profile', '?'))}</b>, seed "
             f"{_e(cfg.get('seed', '?'))} · <a href='config.json'>config.json</a>"
             + (" · <a href='env.json'>env.json</a>" if layout.env.is_file() else "")
             + (" · <a href='#notebooks'>executed notebooks</a>" if layout.notebooks.is_dir() else "") + "</p>"]
    for note in run_notes(layout):
        parts.append(f"<p><b>Note:</b> {_e(note)}</p>")
    if results:
        parts += _headline_html(results)
    else:
        parts.append("<p>No finished segmentation runs yet (notebook 06 makes them).</p>")
    if figures:
        parts.append("<h2>Figures</h2>" + "".join(
            f"<figure><a href='{_rel(f, root)}'><img src='{_rel(f, root)}' alt='{_e(f.stem)}'></a>"
            f"<figcaption>{_e(f.stem.replace('_', ' '))}</figcaption></figure>" for f in figures))
    st = saved.get("stylizers") if saved else None
    st_rows = _stylizer_rows(st or stylizer_scores(layout))
    if st_rows:
        cols = STRUCTURE_SCORES + STYLE_SCORES
        parts.append("<h2>Stylized arms: structure and style</h2><p class='muted'>"
                     + "; ".join(f"<b>{_e(h)}</b>: {_e(d)}" for _, h, d in cols) + "</p><table><tr><th>arm</th>"
                     "<th>method</th><th>images</th>" + "".join(f"<th>structure: {_e(h)}</th>" for _, h, _ in STRUCTURE_SCORES)
                     + "".join(f"<th>style: {_e(h)}</th>" for _, h, _ in STYLE_SCORES) + "</tr>")
        for r in st_rows:
            parts.append(f"<tr><td>{_e(r['arm'])}</td><td>{_e(r['method'])}</td><td class='num'>{_e(r['images'])}</td>"
                         + "".join(f"<td class='num'>{_e(r[k])}</td>" for k, _, _ in cols) + "</tr>")
        parts.append("</table>")
    if results:
        from .study.tables import _cell, table

        parts.append("<h2>All tables</h2><p class='muted'>Cells: mean ± standard deviation over seeds [bootstrap 95% "
                     "interval over test images]. Files: "
                     + " · ".join(f"<a href='{_rel(p, root)}'>{_e(p.name)}</a>"
                                  for p in sorted(layout.eval.glob("results*"))) + "</p>")
        for test in results["tests"]:
            for prot in results["protocols"]:
                t = table(results, test, prot)
                parts.append(f"<h3>test <code>{_e(test)}</code>, {_e(prot)} protocol</h3><table><tr><th>arch</th>"
                             "<th>arm</th>" + "".join(f"<th>{_e(METRIC_LABELS[m])}</th>" for m in PAPER_METRICS) + "</tr>")
                for (arch, arm), row in sorted(t.items(), key=lambda kv: (kv[0][0], results["arms"].index(kv[0][1]))):
                    parts.append(f"<tr><td>{_e(arch)}</td><td>{_e(arm)}</td>" + "".join(
                        f"<td class='num'>{_e(_cell(row.get(m)))}</td>" for m in PAPER_METRICS) + "</tr>")
                parts.append("</table>")
    parts += _notebook_links(layout)
    st_dir = root / "stylized"
    from .study.arms import main_variant

    other = [p for p in (layout.diffae / "history.json", main_variant(layout).folder / "history.json",
                         layout.split_json, layout.style_image) if p.is_file()]
    other += sorted(st_dir.glob("*/manifest.json")) if st_dir.is_dir() else []
    other += sorted((layout.diffae / "samples").glob("*.png"))[:8] if (layout.diffae / "samples").is_dir() else []
    if other:
        parts.append("<h2>Other outputs</h2><ul>" + "".join(
            f"<li><a href='{_rel(p, root)}'>{_rel(p, root)}</a></li>" for p in other) + "</ul>")
    parts.append("</body></html>")
    with atomic_path(layout.index_html) as tmp:
        tmp.write_text("\n".join(parts))
    return layout.index_html


def build_report(run_dir: os.PathLike, protocol: Optional[str] = None, n_boot: Optional[int] = None) -> Path:
    """Write ``RUN/eval/*`` and ``RUN/index.html`` from what the run folder holds; returns index.html.
    ``protocol`` for the radar charts (default: the run's ``eval.protocol``, else standard)."""
    import matplotlib.pyplot as plt

    from .study.compare import test_sets
    from .study.tables import results_markdown, write_results_csv

    layout = RunLayout(run_dir)
    if not layout.root.is_dir():
        raise StylsegError(f"{layout.root}: run folder not found")
    cfg = read_json(layout.config) if layout.config.is_file() else {}
    cfg = cfg if isinstance(cfg, dict) and isinstance(cfg.get("eval", {}), dict) else {}  # damaged: the defaults
    protocol = protocol or cfg.get("eval", {}).get("protocol", "standard")
    n_boot = n_boot if n_boot is not None else int(cfg.get("eval", {}).get("bootstrap", 1000))
    results = _seg_results(layout, n_boot)
    st = stylizer_scores(layout)
    ev = layout.eval
    if ev.is_symlink():
        raise StylsegError(f"{ev}: a symbolic link; the report writes only into the run folder itself and never "
                           f"through links: remove the link and run again")
    ev.mkdir(parents=True, exist_ok=True)
    write_json(ev / "results.json", {"seg": results, "stylizers": st, "radar_protocol": protocol})
    md = (results_markdown(results) if results else "# Segmentation results\n\nNo finished runs under seg/.\n")
    notes = run_notes(layout)
    if notes:
        md = "".join(f"> **Note:** {n}\n\n" for n in notes) + md
    with atomic_path(ev / "results.md") as tmp:
        tmp.write_text(md + "\n" + _stylizer_markdown(st))
    figures: List[Path] = []
    if results:
        for prot in results["protocols"]:
            write_results_csv(ev / f"results_{prot}.csv", results, prot)
        test = primary_test(results)
        prot = protocol if protocol in results["protocols"] else results["protocols"][0]
        for arch in results["archs"]:
            vals = radar_values(results, arch, test, prot, arms=teaching_arms(primary_arms(results)))
            if vals:
                out = _eval_png(ev, "radar", arch)
                fig = plot_radar(vals, title=f"{arch}, test '{test}', {prot} protocol")
                with atomic_path(out) as tmp:
                    fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
                plt.close(fig)
                figures.append(out)
        known = test_sets(layout)
        for t in sorted((t for t in results["tests"] if t in known), key=lambda t: t != test):  # the target's first
            every = primary_arms(results)  # the teaching arms, then every arm when they are not all of them
            for name, arms in ((t, None), (f"{t}_all", every))[:1 if teaching_arms(every) == every else 2]:
                out = _eval_png(ev, "qualitative", name)
                fig = plot_qualitative(layout, results, t, arms=arms)
                with atomic_path(out) as tmp:
                    fig.savefig(tmp, dpi=100, format="png", bbox_inches="tight")
                plt.close(fig)
                figures.append(out)
    return write_index(layout, results, figures)


# --------------------------------------------------------------------------- CLI
def register(parser) -> None:
    """``stylseg report --run DIR [--protocol standard|paper]``."""
    parser.add_argument("--run", required=True, help="run folder (RUN/seg, RUN/stylized ...)")
    parser.add_argument("--protocol", default=None, choices=("standard", "paper"),
                        help="protocol of the radar charts (default: the run's eval.protocol)")
    parser.set_defaults(func=_cli_report)


def _cli_report(args) -> int:
    out = build_report(args.run, protocol=args.protocol)
    print(f"wrote {out}")
    return 0
