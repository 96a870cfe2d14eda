"""Segmentation speed: data-loading overhead of a training step, and inference images/s.

Gate: a training step that assembles its batch from the cached, augmented dataset takes at most
1.1x a step on a batch already in memory. Prints both step times, their ratio, and inference
images/s for each architecture. Timings on a shared machine are noisy: the median of the
repeats is reported.

    python benchmarks/bench_seg_speed.py [--size 64] [--batch 8] [--steps 6] [--archs unet,unetpp,pranet]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def median_time(fn, n: int) -> float:
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6, help="timed repeats (median)")
    ap.add_argument("--archs", default="unet,unetpp,pranet")
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)

    from stylseg.config import get_profile
    from stylseg.data import PairedDataset
    from stylseg.data.synth import generate_domain
    from stylseg.seg.models import create_segmenter, segmenter_config
    from stylseg.seg.train import load_batch, train_step
    from stylseg.utils import set_threads

    print(f"torch threads: {set_threads(args.threads)} (shared machine: timings are noisy)")
    cfg = get_profile(args.profile).override(**{"seg.image_size": args.size, "seg.batch_size": args.batch})
    sc = cfg.seg
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_domain(Path(tmp) / "d", "polyp", "clinic", n=4 * args.batch, size=args.size, seed=0,
                               progress=False)
        ds = PairedDataset(root, args.size, mode="seg", augment=True, seed=0, cache=True)
        ds.tensors()  # fill the cache, as the first epoch does
        kw = segmenter_config("unet", sc)
        model = create_segmenter(kw.pop("arch"), **kw).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        x0, m0 = load_batch(ds, range(args.batch), "cpu")
        k = [0]

        def with_loading():
            k[0] += 1
            ds.set_epoch(k[0])
            idx = torch.randperm(len(ds))[:args.batch]
            x, m = load_batch(ds, idx, "cpu")
            train_step(model, opt, x, m, sc)

        def in_memory():
            train_step(model, opt, x0, m0, sc)

        in_memory(), with_loading()  # warm-up
        t_mem, t_load = [], []
        for _ in range(args.steps):  # interleaved, so that load changes hit both alike
            t_mem.append(median_time(in_memory, 1))
            t_load.append(median_time(with_loading, 1))
        a, b = statistics.median(t_load), statistics.median(t_mem)
        print(f"train step, U-Net {kw.get('encoder')} at {args.size} px, batch {args.batch}: "
              f"with data loading {a * 1000:.1f} ms, in memory {b * 1000:.1f} ms, ratio {a / b:.3f} "
              f"(gate <= 1.10: {'PASS' if a / b <= 1.10 else 'FAIL'})")
        load_only = median_time(lambda: load_batch(ds, torch.randperm(len(ds))[:args.batch], "cpu"), args.steps)
        print(f"batch assembly alone (augmentation + stacking): {load_only * 1000:.1f} ms")

        x = torch.randn(args.batch, 3, args.size, args.size)
        for arch in [a for a in args.archs.split(",") if a]:
            kw = segmenter_config(arch, sc)
            m = create_segmenter(kw.pop("arch"), **kw).eval()
            with torch.no_grad():
                m(x)
                t = median_time(lambda: m(x), max(3, args.steps // 2))
            print(f"inference {arch:7s} ({kw.get('encoder')}): {args.batch / t:8.1f} images/s at {args.size} px")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
