"""The study's results: one row per (arch, arm, test set, protocol, metric) over seeds, and its tables.

:func:`aggregate` reads every ``<arch>/<arm>/seed<k>/metrics.json`` of a comparison (:mod:`stylseg.study.compare`)
and writes ``results.json``, ``results.md`` and ``results_<protocol>.csv`` beside them; this module owns those
three files. Each row holds the mean and standard deviation over seeds, a bootstrap 95% interval over test images
and the paired difference to ``direct``; the Markdown tables lead with the answer (:func:`headline_markdown`).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..layout import arm_base, arm_preset, split_arm
from ..metrics import METRIC_LABELS, PAPER_METRICS, PROTOCOLS, bootstrap_ci
from ..utils import StylsegError, atomic_path, read_json, write_json
from .arms import arm_order, arm_role


#: standard-protocol metrics that are maxima of a dataset-mean curve (no per-image interval)
DATASET_LEVEL = {"standard": ("dice_max", "iou_max", "e_max", "e_mean"), "paper": ()}


def collect(out_dir: os.PathLike) -> List[Dict[str, Any]]:
    """All ``<arch>/<arm>/seed<k>/metrics.json`` under ``out_dir``."""
    return [read_json(p) for p in sorted(Path(out_dir).glob("*/*/seed*/metrics.json"))]


def aggregate(out_dir: os.PathLike, n_boot: int = 1000, write: bool = True) -> Dict[str, Any]:
    """Summarise every finished run under ``out_dir``: one row per (arch, arm, test, protocol,
    metric) with the mean and standard deviation (ddof 1) over seeds and a bootstrap 95%
    interval over test images (per-image values averaged over seeds, then images resampled).
    Writes ``results.json``, ``results.md`` and ``results_<protocol>.csv`` when ``write``."""
    runs = collect(out_dir)
    if not runs:
        raise StylsegError(f"{out_dir}: no finished segmentation runs (<arch>/<arm>/seed<k>/metrics.json); "
                           f"run `stylseg seg compare` first")
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in runs:
        for tname, t in r["tests"].items():
            for prot in PROTOCOLS:
                if prot in t:
                    groups.setdefault((r["arch"], r["arm"], tname, prot), []).append({"seed": r["seed"], **t[prot]})
    def per_image(items, metric) -> Dict[str, float]:
        """Each test image's value of ``metric``, averaged over the seeds."""
        names = [p["name"] for p in items[0]["per_image"]]
        per = np.mean([[dict((q["name"], q[metric]) for q in it["per_image"])[nm] for nm in names]
                       for it in items], axis=0)
        return dict(zip(names, per.tolist()))

    rows = []
    for (arch, arm, tname, prot), items in sorted(groups.items()):
        items = sorted(items, key=lambda x: x["seed"])
        names = [p["name"] for p in items[0]["per_image"]]
        direct = sorted(groups.get((arch, "direct", tname, prot), []), key=lambda x: x["seed"])
        for metric in items[0]["metrics"]:
            vals = [it["metrics"][metric] for it in items]
            row = {"arch": arch, "arm": arm, "test": tname, "protocol": prot, "metric": metric,
                   "mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                   "values": vals, "seeds": [it["seed"] for it in items], "n_images": len(names), "ci": None,
                   "diff_direct": None}
            if metric not in DATASET_LEVEL[prot] and metric in items[0]["per_image"][0]:
                per = per_image(items, metric)
                row["ci"] = list(bootstrap_ci(list(per.values()), n=n_boot, seed=0))
                if direct and arm != "direct":
                    base = per_image(direct, metric)
                    shared = [nm for nm in per if nm in base]
                    if shared:  # paired: the same test images, each averaged over the seeds
                        d = [per[nm] - base[nm] for nm in shared]
                        row["diff_direct"] = {"mean": float(np.mean(d)), "ci": list(bootstrap_ci(d, n=n_boot, seed=0)),
                                              "n_images": len(shared)}
            rows.append(row)
    res = {"archs": sorted({r[0] for r in groups}), "arms": arm_order(r[1] for r in groups),
           "tests": list(dict.fromkeys(t for r in runs for t in r["tests"])), "protocols": [p for p in PROTOCOLS
                                                                           if any(g[3] == p for g in groups)],
           "n_bootstrap": n_boot, "rows": rows}
    res["style_spread"] = style_spread(res)
    if write:
        out = Path(out_dir)
        write_json(out / "results.json", res)
        with atomic_path(out / "results.md") as tmp:
            tmp.write_text(results_markdown(res))
        for prot in res["protocols"]:
            write_results_csv(out / f"results_{prot}.csv", res, prot)
    return res


def md_text(x: Any) -> str:
    """``x`` as text for a Markdown table: HTML special characters escaped (``<`` becomes ``&lt;``), ``|`` and the
    backtick too, so that a name read from a run file shows as itself and never as HTML where the Markdown is
    rendered (notebooks 06/07, their HTML copies). Plain names are unchanged."""
    import html

    return html.escape(str(x), quote=False).replace("|", "&#124;").replace("`", "&#96;")


def table(results: Mapping[str, Any], test: str, protocol: str) -> Dict[tuple, Dict[str, Dict[str, Any]]]:
    """``{(arch, arm): {metric: row}}`` for one test set and protocol."""
    out: Dict[tuple, Dict[str, Dict[str, Any]]] = {}
    for r in results["rows"]:
        if r["test"] == test and r["protocol"] == protocol:
            out.setdefault((r["arch"], r["arm"]), {})[r["metric"]] = r
    return out


def _cell(r: Optional[Mapping[str, Any]]) -> str:
    if r is None:
        return "-"
    s = f"{r['mean']:.4f}"
    if len(r["values"]) > 1:
        s += f" ± {r['std']:.4f}"
    if r.get("ci"):
        s += f" [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]"
    return s


def gap_closed(results: Mapping[str, Any], arch: str, arm: str, test: str, protocol: str,
               metric: str = "dice") -> Optional[float]:
    """``(arm - direct) / (oracle - direct)`` of ``metric``: the share of the domain gap an arm closes.
    None where there is no gap to close (the oracle no better than direct, e.g. on the source test set)."""
    t = table(results, test, protocol)
    try:
        d, o, a = (t[(arch, x)][metric]["mean"] for x in ("direct", "oracle", arm))
    except KeyError:
        return None
    return None if o - d < 1e-12 else (a - d) / (o - d)


def style_spread(results: Mapping[str, Any], metrics: Sequence[str] = ("dice", "iou")) -> List[Dict[str, Any]]:
    """How much the single style image matters (``--styles K``): for every arm made with more than one
    style image (``st``, ``st@s1``, ...), per (arch, test, protocol, metric) the seed-mean of each style
    image and their mean, min and max. Empty when every arm has one style image."""
    by: Dict[tuple, Dict[int, float]] = {}
    for r in results["rows"]:
        if r["metric"] not in metrics:
            continue
        base, k = split_arm(r["arm"])
        by.setdefault((r["arch"], base, r["test"], r["protocol"], r["metric"]), {})[k] = r["mean"]
    out = []
    for (arch, base, test, prot, metric), per in by.items():
        if len(per) < 2:
            continue
        ks = sorted(per)
        vals = [per[k] for k in ks]
        out.append({"arch": arch, "arm": base, "test": test, "protocol": prot, "metric": metric, "styles": ks,
                    "values": vals, "mean": float(np.mean(vals)), "min": float(np.min(vals)),
                    "max": float(np.max(vals))})
    order = {a: i for i, a in enumerate(arm_order(r["arm"] for r in out))}
    return sorted(out, key=lambda r: (r["test"], r["protocol"], r["metric"], r["arch"], order[r["arm"]]))


def style_spread_markdown(results: Mapping[str, Any], metric: str = "dice") -> str:
    """The :func:`style_spread` of ``metric`` as markdown tables (one per test set and protocol), with
    the direct arm's value beside it; empty string when the run has one style image."""
    spread = results.get("style_spread") or style_spread(results)
    spread = [r for r in spread if r["metric"] == metric]
    if not spread:
        return ""
    lines = [f"## Spread over style images ({METRIC_LABELS.get(metric, metric)})", "",
             "One-shot: each stylized or baseline arm was made once per style image (`--styles K`); "
             "`s0` is `data/style.png`. A wide min-max range means the result depends on which single "
             "image was the reference.", ""]
    for test in results["tests"]:
        for prot in results["protocols"]:
            rows = [r for r in spread if r["test"] == test and r["protocol"] == prot]
            if not rows:
                continue
            t = table(results, test, prot)
            k_max = max(len(r["styles"]) for r in rows)
            head = ["arch", "arm", "direct"] + [f"s{k}" for k in range(k_max)] + ["mean", "min-max"]
            lines += [f"### test `{md_text(test)}`, {prot} protocol", "", "| " + " | ".join(head) + " |",
                      "|" + "---|" * len(head)]
            for r in rows:
                d = t.get((r["arch"], "direct"), {}).get(metric)
                per = dict(zip(r["styles"], r["values"]))
                cells = [md_text(r["arch"]), md_text(r["arm"]), f"{d['mean']:.4f}" if d else "-"] + \
                        [f"{per[k]:.4f}" if k in per else "-" for k in range(k_max)] + \
                        [f"{r['mean']:.4f}", f"{r['min']:.4f}-{r['max']:.4f}"]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def primary_test(results: Mapping[str, Any]) -> str:
    """The target-domain test set when present (``target``, or a name containing it), else the first."""
    tests = list(results["tests"])
    for t in tests:
        if t == "target":
            return t
    for t in tests:
        if "target" in t or "tgt" in t:
            return t
    return tests[0]


def headline(results: Mapping[str, Any], test: Optional[str] = None, protocol: str = "standard",
             metric: str = "dice") -> List[Dict[str, Any]]:
    """The answer of a run, one row per (arch, arm) of test set ``test`` (default: the target domain's):
    ``{"arch", "arm", "role", "mean", "std", "ci", "seeds", "n_images", "diff"}``, where ``diff`` is the
    paired difference to ``direct`` (mean over test images of the per-image difference, each image averaged over
    the seeds, with its bootstrap 95% interval), or None for ``direct`` itself."""
    test = test or primary_test(results)
    t = table(results, test, protocol)
    out = []
    for arch in results["archs"]:
        for arm in results["arms"]:
            r = t.get((arch, arm), {}).get(metric)
            if r is None:
                continue
            out.append({"arch": arch, "arm": arm, "role": arm_role(arm), "mean": r["mean"], "std": r["std"],
                        "ci": r.get("ci"), "seeds": len(r["values"]), "n_images": r["n_images"],
                        "diff": r.get("diff_direct")})
    return out


def _interval(ci: Optional[Sequence[float]], signed: bool = False) -> str:
    if not ci:
        return ""
    f = "{:+.3f}" if signed else "{:.3f}"
    return f" [{f.format(ci[0])}, {f.format(ci[1])}]"


#: a resolved Dice difference smaller than this is reported as "negligible", not as better or worse
NEGLIGIBLE = 0.01


def headline_cells(row: Mapping[str, Any]) -> Dict[str, str]:
    """Formatted cells of a :func:`headline` row: ``dice`` (mean ± sd over seeds [interval over images]),
    ``gain`` (the paired difference to direct [interval]) and ``verdict`` (where the interval excludes 0)."""
    dice = f"{row['mean']:.3f}" + (f" ± {row['std']:.3f}" if row["seeds"] > 1 else "") + _interval(row["ci"])
    d = row["diff"]
    if d is None:
        return {"dice": dice, "gain": "", "verdict": ""}
    gain = f"{d['mean']:+.3f}" + _interval(d["ci"], signed=True)
    lo, hi = d["ci"]
    verdict = "not resolved" if lo <= 0 <= hi else "negligible" if abs(d["mean"]) < NEGLIGIBLE else \
        "better" if lo > 0 else "worse"
    return {"dice": dice, "gain": gain, "verdict": verdict}


def headline_markdown(results: Mapping[str, Any], test: Optional[str] = None, protocol: str = "standard") -> str:
    """The headline table in markdown: target-domain Dice of every arm and its gain over direct."""
    test = test or primary_test(results)
    rows = headline(results, test, protocol)
    if not rows:
        return ""
    n_img, n_seeds = rows[0]["n_images"], max(r["seeds"] for r in rows)
    lines = [f"## The answer: Dice on test set `{md_text(test)}` ({n_img} images), {protocol} protocol", "",
             f"Dice: mean ± standard deviation over {n_seeds} seed(s) [bootstrap 95% interval over test images]. "
             "Gain over direct: the paired per-image difference, averaged over the seeds [bootstrap 95% interval]; "
             "'better' or 'worse' only where the interval excludes 0 and the gain is at least "
             f"{NEGLIGIBLE} ('negligible' below).", "",
             "| arch | arm | what it is | Dice | gain over direct | |", "|---|---|---|---|---|---|"]
    for r in rows:
        c = headline_cells(r)
        lines.append(f"| {md_text(r['arch'])} | {md_text(r['arm'])} | {md_text(r['role'])} | {c['dice']} | "
                     f"{c['gain']} | {c['verdict']} |")
    return "\n".join(lines) + "\n"


def target_tests(results: Mapping[str, Any]) -> List[str]:
    """The run's target-domain test sets, the primary one first (``target``, then ``target_<name>`` for every
    further target test set, e.g. ``target_seq11`` and ``target_all`` in a paper-polyp run)."""
    first = primary_test(results)
    return [first] + [t for t in results["tests"] if t != first and t.startswith("target")]


def gains_markdown(results: Mapping[str, Any], protocol: str = "standard", metric: str = "dice") -> str:
    """The headline's gain over direct on every target test set, one column each (empty with a single one):
    ``Dice mean ± sd; gain [interval] verdict`` per (arch, arm)."""
    tests = target_tests(results)
    if len(tests) < 2:
        return ""
    cols = {t: {(r["arch"], r["arm"]): r for r in headline(results, t, protocol, metric)} for t in tests}
    n_img = {t: next(iter(c.values()))["n_images"] for t, c in cols.items() if c}
    lines = ["## The gain over direct on every target test set", "",
             "Each cell: Dice mean ± sd over seeds; the paired per-image gain over direct [bootstrap 95% interval] "
             "and its verdict, as above.", "",
             "| arch | arm | " + " | ".join(f"`{md_text(t)}` ({n_img.get(t, 0)})" for t in tests) + " |",
             "|---|---|" + "---|" * len(tests)]
    for arch in results["archs"]:
        for arm in results["arms"]:
            if not any((arch, arm) in cols[t] for t in tests):
                continue
            cells = []
            for t in tests:
                r = cols[t].get((arch, arm))
                if r is None:
                    cells.append("-")
                    continue
                c = headline_cells(r)
                dice = f"{r['mean']:.3f}" + (f" ± {r['std']:.3f}" if r["seeds"] > 1 else "")
                cells.append(dice + (f"; {c['gain']} {c['verdict']}" if c["gain"] else ""))
            lines.append(f"| {md_text(arch)} | {md_text(arm)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def presets_markdown(results: Mapping[str, Any], protocol: str = "standard", metric: str = "dice") -> str:
    """The stylizer presets side by side (a run with ``eval.presets``): per (arch, arm kind, test set) one
    column per preset, each cell the paired gain over direct [bootstrap 95% interval] and its verdict; empty
    when the run compares no presets."""
    kinds: Dict[str, Dict[str, str]] = {}  # arm kind -> {preset: arm}
    for arm in results["arms"]:
        if arm_preset(arm) and split_arm(arm)[1] == 0 and not arm.endswith("@all"):
            kinds.setdefault(arm_base(arm), {})[arm_preset(arm)] = arm
    if not kinds:
        return ""
    presets = list(dict.fromkeys(arm_preset(a) for a in arm_order(a for k in kinds.values() for a in k.values())))
    lines = ["## The stylizer presets side by side", "",
             f"Each cell: the paired {METRIC_LABELS.get(metric, metric)} gain over direct [bootstrap 95% interval] "
             "and its verdict, as in the headline table.", "",
             "| arch | arm | test set | " + " | ".join(f"`{md_text(p)}`" for p in presets) + " |",
             "|---|---|---|" + "---|" * len(presets)]
    targets = target_tests(results)
    for test in targets + [t for t in results["tests"] if t not in targets]:
        rows = {(r["arch"], r["arm"]): r for r in headline(results, test, protocol, metric)}
        for arch in results["archs"]:
            for kind, by in kinds.items():
                cells = []
                for p in presets:
                    r = rows.get((arch, by.get(p, "")))
                    c = headline_cells(r) if r else None
                    cells.append(f"{c['gain']} {c['verdict']}".strip() if c and c["gain"] else "-")
                lines.append(f"| {md_text(arch)} | {md_text(kind)} | `{md_text(test)}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def pooled_gain(out_dir: os.PathLike, arch: str, arm: str, tests: Sequence[str], metric: str = "dice",
                protocol: str = "standard", n_boot: int = 1000) -> Dict[str, Any]:
    """The paired gain of ``arm`` over direct pooled over several test sets: the images of ``tests`` together, each
    image's value averaged over each arm's seeds, then the per-image differences and their bootstrap 95% interval:
    ``{"mean", "ci", "n_images"}``. How a preset is chosen on validation sets (docs/stylization.md)."""
    per: Dict[str, Dict[tuple, List[float]]] = {"direct": {}, arm: {}}
    for r in collect(out_dir):
        if r["arch"] != arch or r["arm"] not in per:
            continue
        for t in tests:
            for q in r["tests"].get(t, {}).get(protocol, {}).get("per_image", []):
                per[r["arm"]].setdefault((t, q["name"]), []).append(q[metric])
    shared = sorted(set(per["direct"]) & set(per[arm]))
    if not shared:
        raise StylsegError(f"{out_dir}: no test image of {', '.join(tests)} has both {arch}/direct and {arch}/{arm}")
    d = [float(np.mean(per[arm][k]) - np.mean(per["direct"][k])) for k in shared]
    return {"mean": float(np.mean(d)), "ci": list(bootstrap_ci(d, n=n_boot, seed=0)), "n_images": len(d)}


def results_markdown(results: Mapping[str, Any], metrics: Sequence[str] = PAPER_METRICS) -> str:
    """The headline table (:func:`headline_markdown`), then the tables in the paper's format: one per (test set,
    protocol); rows arch x arm; cells ``mean ± std over seeds [bootstrap 95% interval over images]``."""
    extra = [t for t in (gains_markdown(results), presets_markdown(results)) if t]
    lines = ["# Segmentation results", "", headline_markdown(results)] + extra + ["## All tables", "",
             "Cells: mean ± standard deviation over seeds [bootstrap 95% interval over test images]. "
             "MAE: lower is better.", ""]
    for test in results["tests"]:
        for prot in results["protocols"]:
            t = table(results, test, prot)
            if not t:
                continue
            n_img = next(iter(next(iter(t.values())).values()))["n_images"]
            lines += [f"### test `{md_text(test)}` ({n_img} images), {prot} protocol", ""]
            has_oracle = any(arm == "oracle" for _, arm in t)
            head = ["arch", "arm"] + [METRIC_LABELS[m] for m in metrics] + (["gap closed (Dice)"] if has_oracle else [])
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for arch in results["archs"]:
                for arm in results["arms"]:
                    row = t.get((arch, arm))
                    if row is None:
                        continue
                    cells = [md_text(arch), md_text(arm)] + [_cell(row.get(m)) for m in metrics]
                    if has_oracle:
                        g = gap_closed(results, arch, arm, test, prot) if arm not in ("direct", "oracle") else None
                        cells.append(f"{100 * g:.0f}%" if g is not None else "")
                    lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    spread = style_spread_markdown(results)
    if spread:
        lines += [spread]
    return "\n".join(lines)


def write_results_csv(path: os.PathLike, results: Mapping[str, Any], protocol: str) -> Path:
    """One line per (arch, arm, test, metric): mean, std, ci_low, ci_high, n_seeds, n_images."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["arch", "arm", "test", "metric", "mean", "std", "ci_low", "ci_high", "n_seeds", "n_images"])
            for r in results["rows"]:
                if r["protocol"] != protocol:
                    continue
                ci = r.get("ci") or [None, None]
                w.writerow([r["arch"], r["arm"], r["test"], r["metric"], f"{r['mean']:.6f}", f"{r['std']:.6f}",
                            "" if ci[0] is None else f"{ci[0]:.6f}", "" if ci[1] is None else f"{ci[1]:.6f}",
                            len(r["values"]), r["n_images"]])
    return Path(path)
