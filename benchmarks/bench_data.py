"""Data-layer speed: synthetic generation, PairedDataset loading uncached vs cached (with and
without augmentation), and `stylseg data check`, on the built-in synthetic data and, when
present, the real CVC-ClinicDB / CVC-ColonDB.

    python benchmarks/bench_data.py [--size 64] [--n 128] [--threads 1]

Prints images per second. Timings on shared machines are noisy: run it twice.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from stylseg.data import PairedDataset, check_folder, generate_domain
from stylseg.utils import data_dir, set_threads


def _rate(n: int, seconds: float) -> str:
    return f"{n / max(seconds, 1e-9):8.1f} img/s ({seconds:6.2f} s for {n})"


def bench_folder(label: str, folder: Path, size: int, limit: int = 0) -> None:
    ds = PairedDataset(folder, size, mode="seg", cache=True)
    n = len(ds) if not limit else min(limit, len(ds))
    t = time.perf_counter()
    for i in range(n):
        ds[i]
    first = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(n):
        ds[i]
    cached = time.perf_counter() - t
    aug = PairedDataset(folder, size, mode="seg", augment=True, color_jitter=True)
    for i in range(n):
        aug.load_arrays(i)
    t = time.perf_counter()
    for i in range(n):
        aug[i]
    augmented = time.perf_counter() - t
    t = time.perf_counter()
    ds.tensors() if not limit else None
    stack = time.perf_counter() - t
    print(f"{label:<28} size {size:>3}: uncached {_rate(n, first)} | cached {_rate(n, cached)} | "
          f"cached+augment+jitter {_rate(n, augmented)}" + (f" | tensors() {stack:.2f} s" if not limit else ""))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--n", type=int, default=128, help="synthetic images")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    set_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        for kind, dom in (("polyp", "colon"), ("skin", "derm_pink")):
            t = time.perf_counter()
            generate_domain(Path(tmp) / kind, kind=kind, domain=dom, n=a.n, size=128, progress=False)
            print(f"synth {kind}/{dom:<10} 128 px: {_rate(a.n, time.perf_counter() - t)}")
        for s in a.size:
            bench_folder("synthetic polyp 128 px", Path(tmp) / "polyp", s)
    real = data_dir() / "polyp"
    for name in ("CVC-ClinicDB", "CVC-ColonDB"):
        folder = real / name
        if not (folder / "images").is_dir():
            print(f"{name}: not found under {real} (skipped)")
            continue
        t = time.perf_counter()
        rep = check_folder(folder)
        print(f"data check {name:<14}: {rep.n_pairs} pairs in {time.perf_counter() - t:.2f} s")
        for s in a.size:
            bench_folder(name, folder, s, limit=200)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
