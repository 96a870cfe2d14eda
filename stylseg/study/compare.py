"""Algorithm 2 as one call: train on the original set and on each arm, test, evaluate, tabulate.

``compare(train_dir, arms, tests, archs, seeds, out_dir, cfg)`` trains each architecture on
the original training set (arm ``direct``), on every named arm (stylized, control, baseline
folders) and, when ``oracle_dir`` is given, on labelled target-domain images (arm ``oracle``:
the upper bound, showing how much of the domain gap an arm closes), for seeds 0..K-1;
predicts every test set; evaluates in both protocols; writes the run-folder contract::

    out_dir/<arch>/<arm>/seed<k>/model/, checkpoints/, history.json,
                                 predictions/<test>/<stem>.png, metrics.json
    out_dir/results.json, results.md, results_<protocol>.csv

and returns the results (see :func:`aggregate`). Finished (arch, arm, seed) triples, those
whose ``metrics.json`` exists, are skipped, so an interrupted comparison resumes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from ..metrics import PROTOCOLS, evaluate_folder
from ..seg.predict import predict_folder
from ..seg.train import train_segmenter
from ..utils import StylsegError, write_json
from .arms import JITTER, JITTER_OVERRIDES, arm_kinds, arm_order, is_union, union_arms
from .tables import aggregate


def _seeds(seeds: Union[int, Sequence[int]]) -> List[int]:
    return list(range(int(seeds))) if isinstance(seeds, (int, np.integer)) else [int(s) for s in seeds]


def compare(train_dir: os.PathLike, arms: Mapping[str, os.PathLike], tests: Mapping[str, os.PathLike],
            archs: Sequence[str], seeds: Union[int, Sequence[int]], out_dir: os.PathLike, cfg,
            oracle_dir: Optional[os.PathLike] = None, device: str = "auto", progress: bool = True,
            log=print, arm_overrides: Optional[Mapping[str, Mapping[str, Any]]] = None) -> Dict[str, Any]:
    """Algorithm 2. ``arms``: name -> paired folder (``direct`` is ``train_dir``, ``oracle`` is
    ``oracle_dir``); ``tests``: name -> paired folder; ``seeds``: K (seeds 0..K-1) or a list.
    ``arm_overrides``: name -> config overrides its training uses (the ``jitter`` arm:
    ``{"seg.color_jitter": True}``), recorded in its ``metrics.json``."""
    arm_overrides = dict(arm_overrides or {})
    arm_dirs: Dict[str, Path] = {"direct": Path(train_dir)}
    for name, d in arms.items():
        if name in ("direct", "oracle"):
            raise StylsegError(f"arm name {name!r} is reserved (direct = --train, oracle = --oracle); rename it")
        arm_dirs[name] = Path(d)
    if oracle_dir is not None:
        arm_dirs["oracle"] = Path(oracle_dir)
    if not tests:
        raise StylsegError("no test set given; pass at least one --test NAME=DIR")
    stray = sorted(set(arm_overrides) - set(arm_dirs))
    if stray:
        raise StylsegError(f"overrides for arm {stray[0]!r}, which this comparison does not train "
                           f"(arms: {', '.join(arm_dirs)})")
    from ..data.validate import validate_paired
    from ..layout import check_name
    from ..seg.models import SEGMENTERS

    for name in arm_dirs:
        check_name(name, "arm", "--arm")
    for name in tests:
        check_name(name, "test set", "--test")
    for arch in archs:
        SEGMENTERS.get(arch)  # unknown names list the valid ones
    # every folder by the shared rules before any training: an arm is trained on, a test set evaluated on
    for name, d in arm_dirs.items():
        validate_paired(d, use="train")
    for name, d in tests.items():
        validate_paired(d, use="eval")
    out = Path(out_dir)
    seed_list = _seeds(seeds)
    if not seed_list:
        raise StylsegError(f"--seeds {seeds}: expected K >= 1 (seeds 0..K-1), or a list of seeds")
    total = len(archs) * len(arm_dirs) * len(seed_list)
    k = 0
    # seed by seed: a run stopped early holds every arm at the seeds it finished, a comparable table
    for s in seed_list:
        for arch in archs:
            for arm, d in arm_dirs.items():
                k += 1
                run = out / arch / arm / f"seed{s}"
                if (run / "metrics.json").is_file():
                    log(f"[{k}/{total}] {arch} {arm} seed{s}: done, skipped")
                    continue
                ov = dict(arm_overrides.get(arm, {}))
                log(f"[{k}/{total}] {arch} {arm} seed{s}: training on {d}"
                    + (f" with {', '.join(f'{a}={b}' for a, b in ov.items())}" if ov else ""))
                model_dir = train_segmenter(arch, d, run, cfg.override(**ov) if ov else cfg, seed=s, device=device,
                                            progress=progress, keep_last=False)
                res: Dict[str, Any] = {"arch": arch, "arm": arm, "seed": s, "train_dir": str(d), "tests": {}}
                if ov:
                    from ..data.dataset import COLOR_JITTER

                    res["overrides"] = ov
                    if ov.get("seg.color_jitter"):
                        res["color_jitter"] = dict(COLOR_JITTER)
                for tname, tdir in tests.items():
                    pdir = predict_folder(model_dir, tdir, run / "predictions" / tname, device=device,
                                          progress=progress)
                    res["tests"][tname] = {"dir": str(tdir),
                                           **{p: evaluate_folder(pdir, tdir, protocol=p) for p in PROTOCOLS}}
                write_json(run / "metrics.json", res)
    return aggregate(out, n_boot=cfg.eval.bootstrap)


def select_arms(names: Union[str, Sequence[str], None]) -> Optional[set]:
    """``eval.arms`` as a set of base names; None (every arm) for an empty list."""
    if isinstance(names, str):
        names = [a for a in names.split(",") if a]
    names = [str(a).strip() for a in (names or ()) if str(a).strip()]
    return set(names) or None


def filter_arms(arms: Mapping[str, os.PathLike], wanted: Optional[set], log=print) -> Dict[str, Path]:
    """The stylized arms whose base name (``st`` for ``st@s1``) is in ``wanted`` (None: all). A wanted
    name that is neither direct, oracle nor any folder under RUN/stylized is an error naming what there is."""
    if wanted is None:
        return dict(arms)
    have = {kind for a in arms for kind in arm_kinds(a)}
    missing = sorted(wanted - have - {"direct", "oracle"})
    if missing:
        raise StylsegError(f"eval.arms names {', '.join(missing)}, which RUN/stylized does not hold "
                           f"(it has: {', '.join(sorted(have)) or 'nothing'}; direct and oracle are always "
                           f"possible): make the arm first (notebook 05, stylseg stylize apply, stylseg baseline) "
                           f"or drop it from --set eval.arms=...")
    kept = {a: Path(d) for a, d in arms.items() if arm_kinds(a) & wanted}
    skipped = sorted(set(arms) - set(kept))
    if skipped:
        log(f"eval.arms: skipping {', '.join(skipped)}")
    return kept


def compare_run(layout, cfg, archs: Union[str, Sequence[str], None] = None, seeds: Union[int, Sequence[int], None] = None,
                device: str = "auto", make_baselines: bool = True, progress: bool = True, log=print) -> Dict[str, Any]:
    """Algorithm 2 on a run folder: ``direct`` = ``RUN/data/source/train``; every arm under
    ``RUN/stylized/`` (the cheap baselines made first when missing and ``make_baselines``);
    ``oracle`` = ``RUN/data/target/train``; test sets ``target`` (``RUN/data/target/test``) and
    ``source`` (``RUN/data/source/test``); outputs in ``RUN/seg``. ``archs``: names or a
    comma-separated string (empty = ``cfg.seg.archs``); ``seeds``: K (0 or None = ``cfg.seg.seeds``)."""
    from ..stylize.baselines import RUN_BASELINES, ensure_baseline_arms

    if isinstance(archs, str):
        archs = [a for a in archs.split(",") if a]
    archs = list(archs or cfg.seg.archs)
    if not seeds:
        seeds = cfg.seg.seeds
    wanted = select_arms(cfg.eval.arms)
    if make_baselines:
        methods = {m: kw for m, kw in RUN_BASELINES.items() if wanted is None or m in wanted}
        arms = ensure_baseline_arms(layout, cfg.data.seg_size, methods=methods, progress=progress)
    else:
        arms = {p.parent.name: p.parent for p in sorted((layout.root / "stylized").glob("*/manifest.json"))}
    stylized = {a: d for a, d in arms.items() if not is_union(a)}  # union folders are remade from their parts
    extra = {a for a in (wanted or ()) if is_union(a) or a == JITTER}
    arms = filter_arms(stylized, wanted - extra if wanted is not None else None, log=log)
    if extra:
        arms.update(union_arms(layout, extra, stylized))
    overrides = {}
    if JITTER in extra:
        arms[JITTER] = layout.domain("source", "train")
        overrides[JITTER] = dict(JITTER_OVERRIDES)
    arms = {k: arms[k] for k in arm_order(arms)}
    tests = test_sets(layout)
    oracle = layout.domain("target", "train")
    use_oracle = (Path(oracle) / "masks").is_dir() and (wanted is None or "oracle" in wanted)
    return compare(layout.domain("source", "train"), arms, tests, archs, seeds, layout.root / "seg", cfg,
                   oracle_dir=oracle if use_oracle else None, device=device,
                   progress=progress, log=log, arm_overrides=overrides)


def test_sets(layout) -> Dict[str, Path]:
    """The run's test sets: ``target`` (``RUN/data/target/test``, the target domain's, the headline),
    ``target_<name>`` for every further ``RUN/data/target/test_<name>`` (paper-polyp: ``target_seq11``,
    ``target_all``), and ``source`` (``RUN/data/source/test``)."""
    tests = {"target": layout.domain("target", "test")}
    root = layout.data / "target"
    if root.is_dir():
        for d in sorted(root.glob("test_*")):
            tests["target_" + d.name[len("test_"):]] = d
    tests["source"] = layout.domain("source", "test")
    return {k: Path(v) for k, v in tests.items() if (Path(v) / "images").is_dir()}
