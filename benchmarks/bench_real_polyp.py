"""Real data on this CPU: U-Net trained on the 178-frame CVC-ClinicDB split (paper-polyp protocol),
tested on the paper's 20 CVC-ColonDB frames, CVC-ColonDB 226-263, every frame of CVC-ColonDB sequences 6, 7, 9
and 11, and CVC-ClinicDB 491-612, with the direct, histogram, Reinhard and FDA arms (one style frame of CVC-ColonDB
sequence 6 or 9).

Prints the table whatever it shows: Dice and IoU in the standard and the paper protocol, mean over
seeds [bootstrap 95% interval over test images]. Needs ../shared/data (or --data); resumable
(finished arm/seed runs under --out are reused), so a long run can be continued.

    python benchmarks/bench_real_polyp.py [--epochs 20] [--seeds 1] [--size 128] [--oracle] [--out runs/real_polyp]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="", help="folder holding polyp/CVC-ClinicDB and polyp/CVC-ColonDB")
    ap.add_argument("--out", default="runs/bench_real_polyp")
    ap.add_argument("--profile", default="cpu", help="segmentation settings from this profile (cpu: U-Net-R18)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=None, help="default: the profile's")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--arms", default="histogram,reinhard,fda")
    ap.add_argument("--oracle", action="store_true", help="also train on labelled CVC-ColonDB frames of other sequences")
    ap.add_argument("--set", action="append", default=[], metavar="STAGE.FIELD=VALUE")
    args = ap.parse_args(argv)

    from stylseg.stylize.baselines import RUN_BASELINES, ensure_baseline_arms
    from stylseg.config import get_profile, parse_set_args
    from stylseg.data import prepare_run_data
    from stylseg.layout import RunLayout
    from stylseg.study import compare
    from stylseg.study.tables import table
    from stylseg.utils import data_dir, set_threads

    root = Path(args.data) if args.data else data_dir()
    if not (root / "polyp" / "CVC-ClinicDB").is_dir():
        print(f"SKIP: real polyp data not found under {root} (pass --data)")
        return 0
    print(f"torch threads {set_threads()}; timings on a shared machine are noisy")
    cfg = get_profile(args.profile).override(**{"data.seg_size": args.size, "seg.image_size": args.size,
                                                **({"seg.epochs": args.epochs} if args.epochs else {}),
                                                **parse_set_args(args.set)})
    sc = cfg.seg
    print(f"U-Net {sc.encoder} depth {sc.encoder_depth}, {args.size} px, {sc.epochs} epochs, batch {sc.batch_size}, "
          f"lr {sc.lr}, augment {sc.augment}, seeds {args.seeds}")
    layout = RunLayout(args.out)
    layout.root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    prepare_run_data(layout, cfg, kind="polyp", data_dir=str(root), protocol="paper-polyp", progress=False)
    arms_wanted = [a for a in args.arms.split(",") if a]
    made = ensure_baseline_arms(layout, args.size, {a: RUN_BASELINES[a] for a in arms_wanted}, progress=False)
    print(f"data and arms ready ({time.time() - t0:.0f} s)")
    tests = {"colondb_paper20": layout.domain("target", "test"),
             "colondb_226_263": layout.domain("target", "test_seq11"),
             "colondb_seq6_7_9_11": layout.domain("target", "test_all"),
             "clinicdb_491_612": layout.domain("source", "test")}
    res = compare(layout.domain("source", "train"), {a: made[a] for a in arms_wanted}, tests, ["unet"], args.seeds,
                  layout.root / "seg", cfg, oracle_dir=layout.domain("target", "train") if args.oracle else None,
                  progress=False)
    print(f"({time.time() - t0:.0f} s in all)")
    for prot in ("standard", "paper"):
        print(f"\n{prot} protocol: Dice / IoU, mean over seeds [95% interval over images]")
        print(f"{'arm':10s} " + " ".join(f"{t + ' (' + str(len(list((Path(d) / 'images').iterdir()))) + ')':>34s}"
                                         for t, d in tests.items()))
        for arm in res["arms"]:
            cells = []
            for t in tests:
                row = table(res, t, prot).get(("unet", arm))
                if row is None:
                    cells.append(f"{'-':>34s}")
                    continue
                d, i = row["dice"], row["iou"]
                cells.append(f"{d['mean']:.3f} [{d['ci'][0]:.3f},{d['ci'][1]:.3f}] / {i['mean']:.3f}".rjust(34))
            print(f"{arm:10s} " + " ".join(cells))
    print(f"\nfull tables: {layout.root / 'seg' / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
