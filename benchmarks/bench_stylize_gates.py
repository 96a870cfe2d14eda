"""Gates of the one-shot stylization: style, structure, the SPN, and the cheap baselines.

Synthetic polyp data, source domain (clinic) stylized toward the target domain (colon) from one
target image. Prints, for each arm (st per stylizer preset, st_nospn, recon, histogram, reinhard, fda, and each of them but
recon followed by sensor matching, ``<arm>_sensor``, plus the sensor step alone):
structure (SSIM of locally normalised luminance, boundary-edge F1, oracle Dice ratio) and style
(Frechet distance ratio to the target, mean P(target) of a held-out domain classifier), then the
gate verdicts:

- style: P(target) rises from the inputs' value to >= 0.7 and the Frechet distance falls by >= half;
  the recon control does neither;
- structure: SSIM_S >= 0.8 and oracle Dice on stylized >= 0.9 x on originals; and the same with
  SSIM_S around the lesion at half the size (``structure_ssim_lesion``), the form a perfect transfer
  of the target look meets (``benchmarks/bench_style_factors.py``: 0.41 whole-image, 0.85 around the lesion);
- SPN: at matched style (|dP| <= 0.05), structure with the SPN > without (by >= 0.005, whole image and
  around the lesion);
- where a baseline wins, said plainly.

    python benchmarks/bench_stylize_gates.py --profile cpu --run runs/gates_cpu   # the real gate (~1 h on 2 cores)
    python benchmarks/bench_stylize_gates.py --profile smoke --run /tmp/gates     # ~3 min, smoke-sized models
    python benchmarks/bench_stylize_gates.py --profile cpu ... --presets gates,osasis   # presets side by side

    python benchmarks/bench_stylize_gates.py --profile cpu ... --finetune-seeds 0 1 2   # a setting over 3 fine-tunings
    python benchmarks/bench_stylize_gates.py --profile cpu ... --finetune-seeds 0 1 2 --summary-only   # after parallel runs

Reuses whatever the run folder already holds (data, D_A, fine-tuned stylizers, arms, oracle). ``--finetune-seed N``
fine-tunes and applies once more with another seed on the same data, D_A, oracle and classifier (a replicate of one
setting's fine-tuning noise, in a folder of its own). ``--presets`` (default: the profile's own, ``gates`` on the cpu
profile) fine-tunes one stylizer per named preset (arms ``st_<preset>``, ``st_nospn_<preset>``; ``--set``s change
single fields of each). The st arms are written without sensor matching and ``<arm>_sensor`` with it, whatever the
preset's ``stylize.sensor`` (``st_gates_sensor`` is the gates preset's own ``st`` arm). Settings that only change how a
stylizer is applied (``stylize.upsample``, ``stylize.sensor``, ``stylize.apply_batch_size``) reuse the fine-tuning of the same settings
without them (``RUN/bench_stylize/finetunes/``): trying one costs an apply, not a fine-tuning.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
#: the SPN gate asks for structure higher with the SPN than without it by at least this much (SSIM_S, whole image
#: and around the lesion), so that a difference in the third decimal is not read as a pass
SPN_MARGIN = 0.005
#: "matched style" for the SPN gate: P(target) with and without the SPN within this much
MATCHED_DP = 0.05
#: an SPN arm whose FD ratio exceeds the SPN-free arm's by more than this is flagged "further from the target"
FD_FLAG = 0.05


def _tag(sets, finetune_seed=None) -> str:
    """A folder name for a list of ``--set`` items (``stylize.w_structure=0.15`` -> ``w_structure0p15``)."""
    tag = "_".join(x.replace("stylize.", "").replace("=", "").replace(".", "p") for x in sets) or "default"
    return tag + (f"_ftseed{finetune_seed}" if finetune_seed is not None else "")


def gate_verdicts(r) -> tuple:
    """(style, structure on the whole image, structure around the lesion) of one scored arm: the gates."""
    style = r["style_p_target_output"] >= 0.7 and r["style_fd_ratio"] <= 0.5
    struct = r["structure_ssim"] >= 0.8 and r["oracle_dice_ratio"] >= 0.9
    lesion = r["structure_ssim_lesion"] >= 0.8 and r["oracle_dice_ratio"] >= 0.9
    return style, struct, lesion


def spn_line(a, b) -> tuple:
    """(|dP(target)|, matched, SPN higher) of an SPN arm ``a`` against the same stylizer without its SPN ``b``."""
    dp = abs(a["style_p_target_output"] - b["style_p_target_output"])
    better = all(a[k] - b[k] >= SPN_MARGIN for k in ("structure_ssim", "structure_ssim_lesion"))
    return dp, dp <= MATCHED_DP, better


def seed_summary(scores_by_seed, arm: str) -> str:
    """One line per fine-tuning seed for ``arm`` (around the lesion / oracle Dice ratio / FD ratio / P(target), the
    gate verdicts, the SPN line against ``st_nospn_*``), then how many seeds meet the style and lesion gates together:
    whether a setting passes in every fine-tuning, not in one. ``scores_by_seed``: {seed: scores.json rows or None}."""
    nospn = arm.replace("st_", "st_nospn_", 1)
    lines = [f"{arm}, per fine-tuning seed (around the lesion / oracle Dice ratio / FD ratio / P(target)):"]
    n = both = n_style = n_lesion = n_spn = 0
    for seed in sorted(scores_by_seed):
        rows = scores_by_seed[seed]
        r = (rows or {}).get(arm)
        if r is None:
            lines.append(f"  seed {seed}: not scored yet")
            continue
        n += 1
        style, _, lesion = gate_verdicts(r)
        n_style += style
        n_lesion += lesion
        both += style and lesion
        line = (f"  seed {seed}: {r['structure_ssim_lesion']:.3f} / {r['oracle_dice_ratio']:.3f} / "
                f"{r['style_fd_ratio']:.3f} / {r['style_p_target_output']:.3f}   style {'PASS' if style else 'fail'}, "
                f"lesion {'PASS' if lesion else 'fail'}")
        b = rows.get(nospn)
        if b is not None:
            dp, matched, better = spn_line(r, b)
            ok = matched and better
            n_spn += ok
            line += f"; SPN line {'met' if ok else 'not met'} (dP {dp:.3f}, around the lesion {r['structure_ssim_lesion'] - b['structure_ssim_lesion']:+.3f})"
        lines.append(line)
    lines.append(f"  style and lesion gates together in {both} of {n} fine-tunings (style {n_style}, lesion "
                 f"{n_lesion}, SPN line {n_spn}){': every seed passes' if n and both == n else ''}")
    return "\n".join(lines)


def preset_config(profile: str, preset: str, sets):
    """The config a preset's stylizer is fine-tuned and applied with: the profile, the preset, then the ``--set``s."""
    from stylseg.config import get_profile

    return get_profile(profile).override(**{"stylize.preset": preset, **dict(sets)})


def _presets(args, cfg) -> list:
    """The presets ``--presets`` names, or the profile's own (after the --sets)."""
    return [p.strip() for p in args.presets.split(",") if p.strip()] or [cfg.stylize.preset]


def _without_seed_list(argv):
    """``argv`` without ``--finetune-seeds N [N ...]`` and ``--summary-only``."""
    out, skip = [], False
    for a in argv:
        if a == "--finetune-seeds":
            skip = True
            continue
        if skip and not a.startswith("--"):
            continue
        skip = False
        if a != "--summary-only":
            out.append(a)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="smoke", choices=("smoke", "cpu", "paper"))
    ap.add_argument("--run", default=None, help="run folder (default: runs/gates_<profile>)")
    ap.add_argument("--presets", default="", help="stylizer presets to fine-tune and compare, comma-separated "
                    "(default: the profile's stylize.preset)")
    ap.add_argument("--set", action="append", default=[], metavar="STAGE.FIELD=VALUE", help="config overrides")
    ap.add_argument("--oracle-epochs", type=int, default=15)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-sensor", action="store_true", help="skip the sensor-matched arms (<arm>_sensor, sensor)")
    ap.add_argument("--no-baselines", action="store_true",
                    help="only the stylizer arms (st, st_nospn, recon, with their sensor versions): for sweeps of a "
                         "stylizer setting whose baselines a default run already scored")
    ap.add_argument("--finetune-seed", type=int, default=None, metavar="N",
                    help="seed of the fine-tuning only (its content batches and the SPN's initialisation), on the "
                         "run's own data, D_A, oracle and domain classifier: a replicate of one "
                         "setting's fine-tuning noise without a new D_A (default: the run's seed)")
    ap.add_argument("--finetune-seeds", type=int, nargs="+", default=None, metavar="N",
                    help="run once per fine-tuning seed (the run's own seed without --finetune-seed), then print one "
                         "line per seed and in how many the stylizer meets the style and lesion gates together")
    ap.add_argument("--summary-only", action="store_true",
                    help="with --finetune-seeds: only print that summary from the folders already scored (e.g. after "
                         "running the seeds as parallel processes)")
    args = ap.parse_args(argv)
    if args.finetune_seeds:
        return _seeds(args, _without_seed_list(sys.argv[1:] if argv is None else list(argv)))

    from stylseg.baselines import apply_baseline
    from stylseg.config import get_profile, parse_set_args
    from stylseg.data.split import prepare_run_data
    from stylseg.diffusion.train import train_diffae
    from stylseg.layout import RunLayout, save_run_config
    from stylseg.stylize.apply import apply_arms
    from stylseg.stylize.finetune import APPLY_FIELDS, finetune
    from stylseg.seg.oracle import train_oracle
    from stylseg.scores import format_scores, score_arm
    from stylseg.utils import set_threads, write_json

    set_threads()
    sets = parse_set_args(args.set)
    cfg = get_profile(args.profile).override(**sets)
    layout = RunLayout(Path(args.run or ROOT / "runs" / f"gates_{args.profile}"))
    layout.root.mkdir(parents=True, exist_ok=True)
    if not layout.config.is_file():  # never overwrite a run's own config with the benchmark's overrides
        save_run_config(layout.config, cfg)
    tic = time.perf_counter()
    prepare_run_data(layout, cfg, progress=False)
    src, tgt_tr, tgt_te = (layout.domain("source", "train"), layout.domain("target", "train"),
                           layout.domain("target", "test"))
    # D_A: a line per checkpoint (step, loss, seconds a step, time left); on the cpu profile it takes 35-110 min
    train_diffae(src, layout.diffae, cfg, device=args.device, progress=False,
                 log=lambda m: print(f"[{time.perf_counter() - tic:.0f}s] {m}", flush=True))
    print(f"[{time.perf_counter() - tic:.0f}s] data + D_A ready ({layout.diffae})", flush=True)
    tag = _tag(args.set, args.finetune_seed)
    bench = layout.root / "bench_stylize" / tag
    # settings that only change how a stylizer is applied (stylize.upsample, .sensor, ...) share one fine-tuning:
    # it lives under bench_stylize/finetunes/<tag without them>, so trying an apply-only option costs an apply,
    # not a fine-tuning. A folder that already holds its own finetune_<loss set> (written before) keeps using it
    apply_only = {f"stylize.{k}" for k in APPLY_FIELDS}
    ft_root = layout.root / "bench_stylize" / "finetunes" / _tag(
        [x for x in args.set if x.split("=", 1)[0].strip() not in apply_only], args.finetune_seed)
    oracle = train_oracle([src, tgt_tr], layout.root / "bench_stylize" / "oracle", min(cfg.data.seg_size, 64), epochs=args.oracle_epochs,
                          seed=cfg.seed, device=args.device, progress=False)
    arms = {}
    for ls in _presets(args, cfg):
        c = preset_config(args.profile, ls, sets)
        if args.finetune_seed is not None:  # data, D_A, oracle and classifier keep cfg.seed
            c = c.override(seed=args.finetune_seed)
        ft_dir = bench / f"finetune_{ls}"
        if not ft_dir.is_dir():
            ft_dir = ft_root / f"finetune_{ls}"
        ft = finetune(layout.diffae, layout.style_image, src, ft_dir, c, device=args.device,
                      progress=False, overwrite=True)
        print(f"[{time.perf_counter() - tic:.0f}s] {ls}: stylizer {ft}", flush=True)
        specs = [{"out": bench / f"st_{ls}", "arm": f"st_{ls}", "sensor": "off"},
                 {"out": bench / f"st_nospn_{ls}", "arm": f"st_nospn_{ls}", "use_spn": False, "sensor": "off"}]
        if not arms:
            specs.append({"out": bench / "recon", "arm": "recon", "mode": "recon"})
        apply_arms(ft, src, specs, c, device=args.device, progress=False)
        arms.update({s["arm"]: s["out"] for s in specs})
        print(f"[{time.perf_counter() - tic:.0f}s] {ls}: fine-tuned and applied", flush=True)
    baselines = {} if args.no_baselines else {"histogram": {}, "reinhard": {}, "fda": {"beta": 0.01}}
    for method, params in baselines.items():
        arms[method] = apply_baseline(method, layout.style_image, src, bench / method, cfg.data.seg_size,
                                      progress=False, **params)
    if not args.no_sensor:
        # every arm followed by the style image's blur and noise (stylseg.sensor), and the step alone. For the
        # st arms this is exactly what --set stylize.sensor=match writes (tests/test_apply.py checks it)
        for a, d in list(arms.items()):
            if a != "recon":  # the control has no style image
                arms[f"{a}_sensor"] = apply_baseline("sensor", layout.style_image, d, bench / f"{a}_sensor",
                                                     cfg.data.seg_size, arm=f"{a}_sensor", progress=False)
        if not args.no_baselines:
            arms["sensor"] = apply_baseline("sensor", layout.style_image, src, bench / "sensor", cfg.data.seg_size,
                                            progress=False)
        print(f"[{time.perf_counter() - tic:.0f}s] sensor-matched arms written", flush=True)
    rows = {a: score_arm(src, d, tgt_te, oracle=oracle, seed=cfg.seed) for a, d in arms.items()}
    for r in rows.values():  # config.json below holds the run's seed; the stylizers' own seed is recorded here
        r["finetune_seed"] = cfg.seed if args.finetune_seed is None else args.finetune_seed
    write_json(bench / "scores.json", rows)
    save_run_config(bench / "config.json", cfg)
    any_row = next(iter(rows.values()))
    print(f"\nprofile {cfg.profile}: {any_row['n_images']} source training images at {any_row['size']} px, "
          f"{any_row['n_target']} target test images; inputs: P(target) = {any_row['style_p_target_input']:.3f}, "
          f"oracle Dice = {any_row['oracle_dice_input']:.3f}, classifier held-out accuracy "
          f"{any_row['style_clf_acc']:.2f}")
    cols = ("structure_ssim", "structure_ssim_lesion", "structure_edge_f1", "structure_boundary_contrast",
            "oracle_dice_ratio", "style_fd_ratio", "style_p_target_output")
    print(format_scores(rows, cols))

    print("\ngates (style: P(target) >= 0.7 and FD ratio <= 0.5; structure: SSIM_S >= 0.8 and oracle Dice ratio >= 0.9; "
          "structure around the lesion: SSIM_S there >= 0.8 and the same oracle Dice ratio; "
          "benchmarks/bench_style_factors.py shows why the second structure gate is the one a perfect stylizer meets)")
    w = max(len(a) for a in rows) + 2
    for a, r in rows.items():
        s, t, l = gate_verdicts(r)
        print(f"  {a:<{w}} style {'PASS' if s else 'fail'}   structure {'PASS' if t else 'fail'}   "
              f"structure around the lesion {'PASS' if l else 'fail'}")
    rec = rows.get("recon")
    if rec:
        moved = rec["style_p_target_output"] >= 0.7 or rec["style_fd_ratio"] <= 0.5
        print(f"  recon control moves the style: {'YES (bad)' if moved else 'no (good)'}")
    for ls in _presets(args, cfg):
        for suffix in ("", "_sensor"):
            a, b = rows.get(f"st_{ls}{suffix}"), rows.get(f"st_nospn_{ls}{suffix}")
            if a and b:
                # higher by more than a rounding difference, on the whole image and around the lesion
                dp, _, better = spn_line(a, b)
                print(f"  SPN ({ls}{suffix}): dP(target) = {dp:.3f} ({'matched' if dp <= MATCHED_DP else 'NOT matched'}), "
                      f"SSIM_S with {a['structure_ssim']:.3f} vs without {b['structure_ssim']:.3f} (around the lesion "
                      f"{a['structure_ssim_lesion']:.3f} vs {b['structure_ssim_lesion']:.3f}): "
                      f"{'with SPN higher' if better else f'with SPN NOT higher by >= {SPN_MARGIN}'}; FD ratio with "
                      f"{a['style_fd_ratio']:.3f} vs without {b['style_fd_ratio']:.3f}"
                      # the match is in P(target) only: an SPN arm further from the target kept structure by taking
                      # back style, which the reader should see next to the verdict
                      + (" (further from the target with the SPN)" if a["style_fd_ratio"] > b["style_fd_ratio"] + FD_FLAG
                         else ""))
    for suffix in ("", "_sensor"):
        st_best = max((r for k, r in rows.items() if k.startswith("st_") and "nospn" not in k
                       and k.endswith("_sensor") == bool(suffix)), key=lambda r: r["style_p_target_output"], default=None)
        if not st_best:
            continue
        for m in ("histogram", "reinhard", "fda"):
            r = rows.get(m + suffix)
            if r is None:
                continue
            wins = [k for k, better in (("style P(target)", r["style_p_target_output"] > st_best["style_p_target_output"]),
                                        ("style FD", r["style_fd_ratio"] < st_best["style_fd_ratio"]),
                                        ("structure SSIM_S", r["structure_ssim"] > st_best["structure_ssim"]),
                                        ("SSIM_S around the lesion",
                                         r["structure_ssim_lesion"] > st_best["structure_ssim_lesion"]),
                                        ("oracle Dice", r["oracle_dice_ratio"] > st_best["oracle_dice_ratio"])) if better]
            print(f"  {m + suffix} beats the best st{suffix} arm on: {', '.join(wins) if wins else 'nothing'}")
    if args.profile != "cpu":
        print(f"\nthis was the {args.profile} profile; the gates are set for the cpu profile: "
              f"python benchmarks/bench_stylize_gates.py --profile cpu (D_A ~40 min + fine-tuning on 2 cores)")
    print(f"total {time.perf_counter() - tic:.0f}s (shared CPU: timings are noisy)")
    return 0


def _seeds(args, base_argv) -> int:
    """``--finetune-seeds``: the benchmark once per seed (unless ``--summary-only``), then :func:`seed_summary`."""
    from stylseg.config import get_profile, parse_set_args
    from stylseg.utils import read_json

    cfg = get_profile(args.profile).override(**parse_set_args(args.set))
    root = Path(args.run or ROOT / "runs" / f"gates_{args.profile}")
    tags = {}
    for seed in args.finetune_seeds:
        own = seed == cfg.seed  # the run's own seed is the benchmark without --finetune-seed
        # ... or with it spelled out (--finetune-seed 0 writes its own folder): the summary reads either
        tags[seed] = [_tag(args.set, None), _tag(args.set, seed)] if own else [_tag(args.set, seed)]
        if not args.summary_only:
            print(f"\n===== fine-tuning seed {seed} =====", flush=True)
            rc = main(base_argv + ([] if own else ["--finetune-seed", str(seed)]))
            if rc:
                return rc
    scores = {}
    for seed, candidates in tags.items():
        found = [f for f in (root / "bench_stylize" / t / "scores.json" for t in candidates) if f.is_file()]
        scores[seed] = read_json(found[0]) if found else None
    suffix = "" if args.no_sensor else "_sensor"
    print(f"\nsummary over fine-tuning seeds {', '.join(map(str, args.finetune_seeds))} ({root}; settings: "
          f"{' '.join(args.set) or 'the profile defaults'})")
    for ls in _presets(args, cfg):
        print(seed_summary(scores, f"st_{ls}{suffix}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
