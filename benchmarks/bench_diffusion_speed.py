"""Diffusion speed: sampler overhead, training images/s, (GPU) paper-profile throughput and memory.

    python benchmarks/bench_diffusion_speed.py [--threads 2] [--skip-cpu-profile]

1. A DDIM sampling and an inversion loop of n UNet calls take <= 1.1 x (n x one batched UNet call)
   on the same batch (smoke-profile model, batch 16): the sampler adds no hidden work.
2. Training images/s of ``train_diffae`` (everything included but the preview grids) for the smoke
   and cpu profiles on synthetic polyps, and the time 240 smoke steps would take (limit 90 s).
3. With CUDA: the paper profile's training images/s and peak memory at batch 8 (bf16 autocast).
Timings on a shared machine are noisy: run twice and compare.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _median_time(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def sampler_overhead(n_steps: int = 10, batch: int = 16, repeats: int = 5):
    import torch

    from stylseg.config import get_profile
    from stylseg.diffusion import DiffAE, ddim_invert, ddim_sample, ddim_timesteps

    cfg = get_profile("smoke")
    torch.manual_seed(0)
    model = DiffAE.from_config(cfg.diffae, cfg.ddim).eval()
    with torch.no_grad():  # leave the zero-init state so the numbers are those of a trained model
        for p in model.parameters():
            if p.ndim > 1 and p.abs().sum() == 0:
                p.normal_(0, 0.02)
    S = cfg.diffae.image_size
    x = torch.rand(batch, 3, S, S) * 2 - 1
    z = torch.randn(batch, cfg.diffae.z_dim)
    t = torch.full((batch,), 500)
    grid = ddim_timesteps(0.5, n_steps)
    with torch.no_grad():
        model(x, t, z)  # warm-up
        call = _median_time(lambda: model(x, t, z), repeats * 3)
        samp = _median_time(lambda: ddim_sample(model, x, grid, cond=z, schedule=model.schedule), repeats)
        inv = _median_time(lambda: ddim_invert(model, x, grid, cond=z, schedule=model.schedule), repeats)
    return call, samp, inv


def train_speed(profile: str, steps: int, root: Path):
    from stylseg.config import get_profile
    from stylseg.data.synth import default_domains, generate_domain
    from stylseg.diffusion import train_diffae
    import json

    cfg = get_profile(profile)
    data = generate_domain(root / f"data_{profile}", kind="polyp", domain=default_domains("polyp")[0],
                           n=32, size=cfg.diffae.image_size, seed=0, progress=False)
    cfg = cfg.override(**{"diffae.train_steps": steps, "diffae.sample_every": 0, "diffae.checkpoint_every": 0,
                          "diffae.max_seconds": 0, "diffae.warmup_steps": 1})
    out = train_diffae(data, root / f"model_{profile}", cfg, device="cpu", progress=False, log=lambda *_: None)
    h = json.loads((out / "history.json").read_text())
    return h["images_per_second"], cfg.diffae.batch_size


def gpu_paper(batch: int = 8, steps: int = 5):
    import torch

    from stylseg.config import get_profile
    from stylseg.diffusion import DiffAE
    from stylseg.diffusion.train import _LossModule

    cfg = get_profile("paper")
    dev = torch.device("cuda")
    m = _LossModule(DiffAE.from_config(cfg.diffae, cfg.ddim)).to(dev)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    S = cfg.diffae.image_size
    x = torch.rand(batch, 3, S, S, device=dev) * 2 - 1
    torch.cuda.reset_peak_memory_stats()
    for i in range(steps + 1):
        if i == 1:
            torch.cuda.synchronize()
            t = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = m(x, torch.randint(0, 1000, (batch,), device=dev), torch.randn_like(x))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / steps
    return batch / dt, torch.cuda.max_memory_allocated() / 2 ** 30


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: STYLSEG_THREADS or all)")
    ap.add_argument("--skip-cpu-profile", action="store_true", help="measure the smoke profile's training only")
    args = ap.parse_args(argv)
    import torch

    from stylseg.utils import set_threads

    set_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()} (timings on a shared machine are noisy)")
    ok = True
    call, samp, inv = sampler_overhead()
    n = 10
    for name, t in (("sampling", samp), ("inversion", inv)):
        ratio = t / (n * call)
        ok &= ratio <= 1.1
        print(f"1. {name}: {n} steps {t * 1e3:.1f} ms vs {n} x one batched UNet call ({call * 1e3:.2f} ms) = "
              f"{ratio:.3f} x   [<= 1.1] {'PASS' if ratio <= 1.1 else 'FAIL'}")
    with tempfile.TemporaryDirectory() as tmp:
        ips, bs = train_speed("smoke", 20, Path(tmp))
        est = 240 * bs / ips
        print(f"2. smoke training: {ips:.1f} images/s (batch {bs}); 240 steps would take {est:.0f} s "
              f"[<= 90 s on 2 idle cores] {'PASS' if est <= 90 else 'over (the 240-step budget takes longer here)'}")
        if not args.skip_cpu_profile:
            ips, bs = train_speed("cpu", 6, Path(tmp))
            from stylseg.config import get_profile

            steps = get_profile("cpu").diffae.train_steps
            print(f"   cpu training: {ips:.1f} images/s (batch {bs}); {steps} steps would take "
                  f"{steps * bs / ips / 60:.0f} min [<= 40 min]")
    if torch.cuda.is_available():
        ips, mem = gpu_paper()
        print(f"3. paper profile on {torch.cuda.get_device_name()}: {ips:.1f} images/s at batch 8, peak memory "
              f"{mem:.1f} GiB (bf16 autocast)")
    else:
        print("3. paper profile on GPU: no CUDA device here, not measured "
              "(tests/test_diffae.py::test_paper_profile_builds_and_trains_one_step_on_cpu runs one CPU step, -m slow)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
