"""The synthetic domains show a real shift (the gate the data stage's domains must pass).

U-Net-R18 at 64 px, trained on one synthetic polyp domain for each of K seeds, tested on the
same domain's held-out test set and on the other domains' test sets. Prints the Dice (standard
protocol, mean over thresholds) per (train, test) pair, mean ± std over seeds, and the gate:
the model loses >= 15 Dice points on every other domain against its own domain.

    python benchmarks/bench_domain_shift.py [--source clinic] [--targets colon,etis] [--seeds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", default="polyp")
    ap.add_argument("--source", default="clinic")
    ap.add_argument("--targets", default="colon,etis")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=96)
    ap.add_argument("--n-test", type=int, default=32)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--profile", default="smoke", help="segmentation settings (U-Net-R18) from this profile")
    ap.add_argument("--out", default=None, help="keep the data and models here (default: a temporary folder)")
    args = ap.parse_args(argv)

    from stylseg.config import get_profile
    from stylseg.data.synth import generate_domain
    from stylseg.metrics import evaluate_folder
    from stylseg.seg import predict_folder, train_segmenter
    from stylseg.utils import set_threads

    print(f"torch threads {set_threads()}; timings on a shared machine are noisy")
    cfg = get_profile(args.profile).override(**{"seg.image_size": args.size, "seg.epochs": args.epochs,
                                                "data.seg_size": args.size})
    print(f"U-Net {cfg.seg.encoder} depth {cfg.seg.encoder_depth}, {args.size} px, {args.epochs} epochs, "
          f"batch {cfg.seg.batch_size}, lr {cfg.seg.lr}; {args.n_train} training / {args.n_test} test images")
    targets = [t for t in args.targets.split(",") if t]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        train = generate_domain(root / f"{args.source}_train", args.kind, args.source, n=args.n_train,
                                size=args.size, seed=11, progress=False)
        tests = {d: generate_domain(root / f"{d}_test", args.kind, d, n=args.n_test, size=args.size, seed=22,
                                    progress=False) for d in [args.source] + targets}
        dice = {d: [] for d in tests}
        t0 = time.time()
        for s in range(args.seeds):
            md = train_segmenter("unet", train, root / f"model_seed{s}", cfg, seed=s, progress=False)
            for d, tdir in tests.items():
                pdir = predict_folder(md, tdir, root / f"pred_seed{s}" / d, progress=False)
                dice[d].append(evaluate_folder(pdir, tdir)["metrics"]["dice"])
        print(f"({time.time() - t0:.0f} s)")
        own = float(np.mean(dice[args.source]))
        ok = True
        print(f"{'train':>8s} -> {'test':8s}  Dice (mean ± std over {args.seeds} seeds)   drop")
        for d, v in dice.items():
            drop = own - float(np.mean(v))
            if d != args.source:
                ok &= drop >= 0.15
            print(f"{args.source:>8s} -> {d:8s}  {np.mean(v):.3f} ± {np.std(v):.3f}  "
                  f"{'' if d == args.source else f'drop {100 * drop:.1f} points'}")
        print(f"gate (every other domain >= 15 Dice points below its own): {'PASS' if ok else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
