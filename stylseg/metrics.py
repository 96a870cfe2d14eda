"""Evaluation of prediction maps against masks, in two protocols (docs/method.md section 6).

``standard`` (the field's definitions, what the kit reports by default): per image, the
prediction is min-max normalised (MATLAB ``mapminmax``), the ground truth is ``> 128``;
through :mod:`py_sod_metrics`:

- ``dice``, ``iou``, ``specificity``: the mean over 256 thresholds (``pred_u8 >= T``,
  T = 255..0) of ``2TP/(2TP+FP+FN)``, ``TP/(TP+FP+FN)``, ``TN/(TN+FP)`` (0 when a
  denominator is 0); ``dice_max`` / ``iou_max``: the maximum over thresholds of the
  dataset-mean curve (as PraNet's evaluation and py_sod_metrics report them);
- ``wfm``: the weighted F-measure F_beta^w (Margolin et al. 2014, beta^2 = 1);
- ``s_alpha``: the S-measure ``alpha * S_object + (1 - alpha) * S_region`` with alpha 0.5;
- ``e_max`` / ``e_mean``: the E-measure (Fan et al. 2018) of the binarised map, max and
  mean over thresholds of the dataset-mean curve;
- ``mae``: mean ``|pred - gt|``.

``paper``: what the paper's repository computes, so that its published tables can be checked:

- the prediction is read as ``png / 255`` (no min-max), the ground truth as ``> 128``;
- ``dice``, ``iou``, ``specificity``: mean over all (image, threshold) pairs for the 256
  thresholds ``np.linspace(1, 0, 256)``, binarised with ``pred >= t``; every value,
  specificity included, is 0 when TP = 0;
- ``s_alpha`` is the object term ``S_object`` alone (edge cases as the S-measure: an empty
  ground truth scores ``1 - mean(pred)``, a full one ``mean(pred)``);
- ``e_max`` (the paper's "E_phi^max") is the E-measure of the soft map, once per image:
  ``sum((align + 1)^2 / 4) / (N - 1)`` with ``align = 2 dP dG / (dP^2 + dG^2)`` on the
  demeaned soft prediction and ground truth (no threshold, no max);
- ``wfm``: a corrected weighted F-measure (the repository's function crashes as shipped):
  Margolin's F^w on the soft map, 0 for an empty ground truth;
- ``mae``: mean ``|pred - gt|`` on ``png / 255``.

Results are ``{"protocol", "n_images", "metrics": {...}, "per_image": [{"name", ...}, ...]}``;
``stylseg evaluate --pred DIR --gt DIR --protocol standard|paper --json FILE [--csv FILE]``.
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .utils import StylsegError, atomic_path, write_json

PROTOCOLS = ("standard", "paper")
#: the seven metrics of the paper's tables and radar charts, in their order
PAPER_METRICS = ("dice", "iou", "specificity", "wfm", "s_alpha", "e_max", "mae")
METRIC_LABELS = {"dice": "Dice", "iou": "IoU", "specificity": "Spec.", "wfm": "F_beta^w",
                 "s_alpha": "S_alpha", "e_max": "E_phi^max", "mae": "MAE", "dice_max": "maxDice",
                 "iou_max": "maxIoU", "e_mean": "E_phi^mean"}
#: metrics where lower is better
LOWER_IS_BETTER = ("mae",)

_EPS = np.spacing(1)


# --------------------------------------------------------------------------- input handling
def _as_pred(pred: np.ndarray, name: str = "") -> np.ndarray:
    """A prediction map as float64 in [0, 1]: uint8 is divided by 255, uint16 by 65535,
    floats are taken as they are (must lie in [0, 1])."""
    p = np.asarray(pred)
    if p.ndim == 3:
        p = p[..., 0] if p.shape[-1] in (1, 3, 4) else p[0]
    if p.dtype == np.uint8:
        return p.astype(np.float64) / 255.0
    if p.dtype == np.uint16:
        return p.astype(np.float64) / 65535.0
    if p.dtype == bool:
        return p.astype(np.float64)
    p = p.astype(np.float64)
    if p.size and (p.min() < 0 or p.max() > 1):
        raise StylsegError(f"prediction {name or ''} has values outside [0, 1] (min {p.min():.3g}, max {p.max():.3g}); "
                           f"pass probabilities, or uint8 maps in 0..255")
    return p


def _as_gt(gt: np.ndarray) -> tuple:
    """Ground truth as bool (``> 128`` for 8-bit, ``> 0.5`` for floats, as is for bool);
    returns ``(mask, is_binary)`` where ``is_binary`` is False when values other than the two
    extremes were present (the mask was thresholded)."""
    g = np.asarray(gt)
    if g.ndim == 3:
        g = g.max(axis=2)
    if g.dtype == bool:
        return g, True
    if g.dtype == np.uint8:
        u = np.unique(g)
        binary = bool(np.all(np.isin(u, (0, 255))) or np.all(np.isin(u, (0, 1))))
        if binary and u.max(initial=0) == 1:
            return g == 1, True
        return g > 128, binary
    g = g.astype(np.float64)
    u = np.unique(g)
    return g > 0.5, bool(np.all(np.isin(u, (0.0, 1.0))))


# --------------------------------------------------------------------------- standard protocol
def _standard_one(p: np.ndarray, g: np.ndarray, alpha: float = 0.5) -> Dict[str, Any]:
    """Per-image standard metrics on ``p`` in [0,1] (min-max normalised here) and bool ``g``.

    Returns scalar values plus the 256-long Dice/IoU/specificity/E-measure curves
    (index j = threshold ``pred_u8 >= 255 - j``)."""
    import py_sod_metrics as sod

    if p.max() != p.min():
        p = (p - p.min()) / (p.max() - p.min())  # mapminmax, as MATLAB's evaluation
    fm = sod.FmeasureV2(metric_handlers={
        "dice": sod.DICEHandler(with_dynamic=True, with_adaptive=False),
        "iou": sod.IOUHandler(with_dynamic=True, with_adaptive=False),
        "specificity": sod.SpecificityHandler(with_dynamic=True, with_adaptive=False),
    })
    fm.step(p, g, normalize=False)
    curves = {k: np.asarray(v["dynamic"], dtype=np.float64) for k, v in fm.get_results().items()}
    em = sod.Emeasure()
    em.step(p, g, normalize=False)
    e_curve = np.asarray(em.get_results()["em"]["curve"], dtype=np.float64)
    sm = sod.Smeasure(alpha=alpha)
    sm.step(p, g, normalize=False)
    wf = sod.WeightedFmeasure(beta=1)
    wf.step(p, g, normalize=False)
    out = {
        "dice": float(curves["dice"].mean()), "dice_max": float(curves["dice"].max()),
        "iou": float(curves["iou"].mean()), "iou_max": float(curves["iou"].max()),
        "specificity": float(curves["specificity"].mean()),
        "wfm": float(wf.get_results()["wfm"]),
        "s_alpha": float(sm.get_results()["sm"]),
        "e_max": float(e_curve.max()), "e_mean": float(e_curve.mean()),
        "mae": float(np.mean(np.abs(p - g))),
    }
    return out, {"dice": curves["dice"], "iou": curves["iou"], "e": e_curve}


# --------------------------------------------------------------------------- paper protocol
PAPER_THRESHOLDS = np.linspace(1, 0, 256)


def paper_threshold_counts(p: np.ndarray, g: np.ndarray, thresholds: np.ndarray = PAPER_THRESHOLDS):
    """TP, FP, FN, TN for ``p >= t`` at every threshold (exact float comparisons), as arrays."""
    fg = np.sort(p[g].ravel())
    bg = np.sort(p[~g].ravel())
    tp = fg.size - np.searchsorted(fg, thresholds, side="left")
    fp = bg.size - np.searchsorted(bg, thresholds, side="left")
    return tp, fp, fg.size - tp, bg.size - fp


def s_object(p: np.ndarray, g: np.ndarray) -> float:
    """The object term of the S-measure (Fan et al. 2017): ``mu * O_FG + (1 - mu) * O_BG`` with
    ``O = 2 x / (x^2 + 1 + sigma_x)`` (std with ddof 1, as MATLAB). Empty GT: ``1 - mean(p)``;
    full GT: ``mean(p)`` (the S-measure's own edge cases)."""
    import py_sod_metrics as sod

    y = g.mean()
    if y == 0:
        return float(1 - p.mean())
    if y == 1:
        return float(p.mean())
    return float(sod.Smeasure().object(p, g))


def e_measure_soft(p: np.ndarray, g: np.ndarray) -> float:
    """E-measure of the soft map, once (the paper repository's "E_phi^max"):
    ``sum(phi) / (N - 1)``, ``phi = (align + 1)^2 / 4``, ``align = 2 dP dG / (dP^2 + dG^2 + eps)``
    with ``dP = p - mean(p)``, ``dG = g - mean(g)``. Empty GT: ``phi = 1 - p``; full GT: ``phi = p``."""
    n = p.size
    gf = g.astype(np.float64)
    if gf.sum() == 0:
        phi = 1.0 - p
    elif gf.sum() == n:
        phi = p
    else:
        dp, dg = p - p.mean(), gf - gf.mean()
        align = 2 * dp * dg / (dp * dp + dg * dg + _EPS)
        phi = (align + 1) ** 2 / 4
    return float(phi.sum() / (n - 1 + _EPS))


def _paper_one(p: np.ndarray, g: np.ndarray) -> Dict[str, Any]:
    import py_sod_metrics as sod

    tp, fp, fn, tn = paper_threshold_counts(p, g)
    tp, fp, fn, tn = (x.astype(np.float64) for x in (tp, fp, fn, tn))
    pos = tp > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        dice = np.where(pos, 2 * tp / (2 * tp + fp + fn), 0.0)
        iou = np.where(pos, tp / (tp + fp + fn), 0.0)
        spec = np.where(pos & (tn + fp > 0), tn / np.maximum(tn + fp, 1), 0.0)
    wfm = 0.0 if not g.any() else float(sod.WeightedFmeasure(beta=1).cal_wfm(p, g))
    out = {"dice": float(dice.mean()), "iou": float(iou.mean()), "specificity": float(spec.mean()),
           "wfm": wfm, "s_alpha": s_object(p, g), "e_max": e_measure_soft(p, g),
           "mae": float(np.mean(np.abs(p - g)))}
    return out, {"dice": dice, "iou": iou}


# --------------------------------------------------------------------------- public API
def evaluate_arrays(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], protocol: str = "standard",
                    names: Optional[Sequence[str]] = None, alpha: float = 0.5) -> Dict[str, Any]:
    """Evaluate prediction maps against ground-truth masks.

    ``preds``: ``(H,W)`` maps, uint8 in 0..255 (a PNG as read) or float in [0, 1];
    ``gts``: ``(H,W)`` masks (bool, uint8 {0,255} or {0,1}, float {0,1}); same shapes pairwise.
    Returns ``{"protocol", "n_images", "metrics": {name: mean over images}, "per_image": [...]}``
    (see the module docstring for each protocol's definitions).
    """
    if protocol not in PROTOCOLS:
        raise StylsegError(f"unknown protocol {protocol!r}; valid protocols: {', '.join(PROTOCOLS)}")
    if len(preds) != len(gts):
        raise StylsegError(f"{len(preds)} predictions but {len(gts)} ground-truth masks")
    if not len(preds):
        raise StylsegError("no images to evaluate")
    names = list(names) if names is not None else [str(i) for i in range(len(preds))]
    per_image: List[Dict[str, Any]] = []
    curves: Dict[str, List[np.ndarray]] = {}
    non_binary = []
    for name, pr, gt in zip(names, preds, gts):
        p = _as_pred(pr, name)
        g, is_bin = _as_gt(gt)
        if not is_bin:
            non_binary.append(name)
        if p.shape != g.shape:
            raise StylsegError(f"prediction {name}: shape {p.shape} differs from its ground truth {g.shape}; "
                               f"resize it first (evaluate_folder does this)")
        vals, cur = (_standard_one(p, g, alpha) if protocol == "standard" else _paper_one(p, g))
        per_image.append({"name": name, **vals})
        for k, v in cur.items():
            curves.setdefault(k, []).append(v)
    keys = [k for k in per_image[0] if k != "name"]
    metrics = {k: float(np.mean([r[k] for r in per_image])) for k in keys}
    if protocol == "standard":  # the field's max: over thresholds of the dataset-mean curve
        metrics["dice_max"] = float(np.mean(curves["dice"], axis=0).max())
        metrics["iou_max"] = float(np.mean(curves["iou"], axis=0).max())
        metrics["e_max"] = float(np.mean(curves["e"], axis=0).max())
        metrics["e_mean"] = float(np.mean(curves["e"], axis=0).mean())
    out = {"protocol": protocol, "n_images": len(per_image), "metrics": metrics, "per_image": per_image}
    if non_binary:
        out["non_binary_gt"] = non_binary
        warnings.warn(f"{len(non_binary)} ground-truth mask(s) were not binary and were thresholded "
                      f"(> 128 / > 0.5): {', '.join(non_binary[:5])}{' ...' if len(non_binary) > 5 else ''}")
    return out


def _gt_folder(gt_dir: Path) -> Path:
    return gt_dir / "masks" if (gt_dir / "masks").is_dir() else gt_dir


def _read_gray(path: Path) -> np.ndarray:
    from .data.io import _open

    im = _open(path)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.asarray(im).astype(np.uint16)
    if im.mode in ("RGBA", "LA"):
        im = im.convert("RGB") if im.mode == "RGBA" else im.convert("L")
    if im.mode != "L":
        arr = np.asarray(im.convert("RGB"))
        return arr.max(axis=2)
    return np.asarray(im)


def load_pairs(pred_dir: os.PathLike, gt_dir: os.PathLike, allow_missing: bool = False):
    """Read matching prediction maps and masks (by file stem); predictions of another size are
    resized to the mask's size (bilinear). Returns ``(names, preds, gts, notes)``.

    ``gt_dir`` is a mask folder or a paired folder holding ``masks/``. A mask without a
    prediction raises (naming the files) unless ``allow_missing``; a prediction without a mask
    is ignored and reported in ``notes["extra_predictions"]``.
    """
    from PIL import Image

    from .data.io import list_images
    from .data.validate import validate_paired

    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    if not pred_dir.is_dir():
        raise StylsegError(f"{pred_dir}: prediction folder not found (write it with `stylseg seg predict`)")
    if not gt_dir.is_dir():
        raise StylsegError(f"{gt_dir}: ground-truth folder not found")
    if not list_images(_gt_folder(gt_dir)):
        raise StylsegError(f"{_gt_folder(gt_dir)}: no mask images found")
    # the shared rules (stylseg.data.validate): a paired folder's pairing and sizes, no two files with one stem;
    # the all-empty warning is given below, also for a folder of masks alone
    if (gt_dir / "images").is_dir():
        gt_files = {m.stem: m for _, m in validate_paired(gt_dir, use="eval", deep=False, warn=False)}
    else:
        gt_files = {m.stem: m for m, _ in validate_paired(_gt_folder(gt_dir), use="images", deep=False)}
    if (pred_dir / "images").is_dir() and not list_images(pred_dir):
        raise StylsegError(f"{pred_dir}: a paired folder, not a folder of prediction maps (<stem>.png); pass the "
                           f"folder written by `stylseg seg predict`")
    pred_files = {p.stem: p for p, _ in validate_paired(pred_dir, use="images", deep=False)}
    missing = [s for s in gt_files if s not in pred_files]
    extra = [s for s in pred_files if s not in gt_files]
    if missing and not allow_missing:
        raise StylsegError(f"{pred_dir}: {len(missing)} prediction(s) missing for masks in {_gt_folder(gt_dir)}, "
                           f"e.g. {', '.join(missing[:5])}.png; rerun the prediction or pass allow_missing")
    if extra:
        warnings.warn(f"{pred_dir}: {len(extra)} prediction(s) have no mask and are ignored, e.g. {', '.join(extra[:5])}")
    names, preds, gts, resized = [], [], [], []
    for stem, gpath in gt_files.items():
        if stem not in pred_files:
            continue
        g = _read_gray(gpath)
        p = _read_gray(pred_files[stem])
        if p.shape != g.shape:
            resized.append(stem)
            if p.dtype == np.uint16:
                p = (p.astype(np.float64) / 65535 * 255).round().astype(np.uint8)
            p = np.asarray(Image.fromarray(p).resize((g.shape[1], g.shape[0]), Image.BILINEAR))
        names.append(stem)
        preds.append(p)
        gts.append(g)
    if gts and not any(_as_gt(g)[0].any() for g in gts):
        # the rule of stylseg.data.validate (use "eval"): all-zero masks are evaluated, with a warning
        warnings.warn(f"{_gt_folder(gt_dir)}: all {len(gts)} mask(s) are empty (no lesion pixel); check that the "
                      f"masks are the lesion maps (white lesion on black) and not blank exports; Dice and IoU are "
                      f"undefined on them")
    notes = {"missing_predictions": missing, "extra_predictions": extra, "resized_predictions": resized}
    return names, preds, gts, notes


def evaluate_folder(pred_dir: os.PathLike, gt_dir: os.PathLike, protocol: str = "standard",
                    allow_missing: bool = False, alpha: float = 0.5) -> Dict[str, Any]:
    """Evaluate the prediction PNGs in ``pred_dir`` (``<stem>.png``, 8-bit probability maps)
    against the masks of ``gt_dir`` (a mask folder, or a paired folder with ``masks/``)."""
    names, preds, gts, notes = load_pairs(pred_dir, gt_dir, allow_missing=allow_missing)
    res = evaluate_arrays(preds, gts, protocol=protocol, names=names, alpha=alpha)
    res["pred_dir"], res["gt_dir"] = str(pred_dir), str(gt_dir)
    res.update({k: v for k, v in notes.items() if v})
    return res


def write_csv(path: os.PathLike, result: Mapping[str, Any]) -> Path:
    """Per-image values of an evaluation result as CSV (one row per image)."""
    rows = result["per_image"]
    keys = ["name"] + [k for k in rows[0] if k != "name"]
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            for r in rows:
                w.writerow({k: (f"{r[k]:.6f}" if isinstance(r[k], float) else r[k]) for k in keys})
    return Path(path)


def bootstrap_ci(values: Sequence[float], n: int = 1000, level: float = 0.95, seed: int = 0):
    """Percentile bootstrap interval of the mean of ``values`` (resampling images)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return (float("nan"), float("nan"))
    if v.size == 1 or n <= 0:
        return (float(v.mean()), float(v.mean()))
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n, v.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return (float(lo), float(hi))


def format_metrics(metrics: Mapping[str, float], keys: Sequence[str] = PAPER_METRICS) -> str:
    return "  ".join(f"{METRIC_LABELS.get(k, k)} {metrics[k]:.4f}" for k in keys if k in metrics)


# --------------------------------------------------------------------------- CLI
def register(parser) -> None:
    """``stylseg evaluate --pred DIR --gt DIR [--protocol standard|paper] --json FILE [--csv FILE]``."""
    parser.add_argument("--pred", required=True, help="folder of prediction PNGs (<stem>.png, 0..255)")
    parser.add_argument("--gt", required=True, help="mask folder, or a paired folder holding masks/")
    parser.add_argument("--protocol", default="standard", choices=PROTOCOLS,
                        help="standard (the field's definitions) or paper (the paper repository's code)")
    parser.add_argument("--json", default=None, help="write the result here (metrics + per-image values)")
    parser.add_argument("--csv", default=None, help="write per-image values here")
    parser.add_argument("--allow-missing", action="store_true", help="evaluate only masks that have a prediction")
    parser.set_defaults(func=_cli_evaluate)


def _cli_evaluate(args) -> int:
    res = evaluate_folder(args.pred, args.gt, protocol=args.protocol, allow_missing=args.allow_missing)
    print(f"{res['protocol']} protocol, {res['n_images']} images")
    for k, v in res["metrics"].items():
        print(f"  {k:12s} {v:.4f}")
    if args.json:
        write_json(args.json, res)
        print(f"wrote {args.json}")
    if args.csv:
        write_csv(args.csv, res)
        print(f"wrote {args.csv}")
    return 0
