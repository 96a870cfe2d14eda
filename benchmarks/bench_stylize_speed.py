"""Speed of the stylization: UNet calls per image, images/s, the pipeline's overhead over the
bare UNet calls it makes, and fine-tuning seconds per iteration; on a GPU also the paper profile's
seconds per iteration and peak memory at batch 8.

    python benchmarks/bench_stylize_speed.py                    # smoke-sized random D_A, CPU
    python benchmarks/bench_stylize_speed.py --profile cpu
    python benchmarks/bench_stylize_speed.py --profile paper --device cuda --batch 8   # GPU memory figure

Models are randomly initialised (speed does not depend on the weights). On the shared 2-core
development machines the figures are noisy; run it alone for numbers to quote.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="smoke", choices=("smoke", "cpu", "paper"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n-images", type=int, default=32, help="images to stylize for the images/s figure")
    ap.add_argument("--iterations", type=int, default=3, help="fine-tuning iterations to time")
    ap.add_argument("--batch", type=int, default=0, help="fine-tuning batch (0 = the profile's)")
    args = ap.parse_args(argv)

    import torch

    from stylseg.config import get_profile
    from stylseg.data.synth import generate_domain
    from stylseg.diffusion.model import DiffAE
    from stylseg.stylize.apply import apply_stylizer
    from stylseg.stylize.finetune import finetune
    from stylseg.utils import resolve_device, set_threads

    set_threads()
    dev = resolve_device(args.device)
    cfg = get_profile(args.profile).override(**{"stylize.iterations": args.iterations,
                                                "stylize.checkpoint_every": 10 ** 6})
    if args.batch:
        cfg = cfg.override(**{"stylize.batch_size": args.batch})
    d = Path(tempfile.mkdtemp(prefix="bench_stylize_speed_"))
    torch.manual_seed(0)
    m = DiffAE.from_config(cfg.diffae, cfg.ddim)
    m.save_pretrained(d / "diffae")
    S = cfg.diffae.image_size
    src = generate_domain(d / "src", "polyp", "clinic", n=args.n_images, size=max(S, cfg.data.seg_size), seed=0,
                          progress=False)
    style = generate_domain(d / "tgt", "polyp", "colon", n=1, size=S, seed=1, progress=False) / "images" / "0000.png"
    print(f"profile {cfg.profile}, device {dev}, torch threads {torch.get_num_threads()}, "
          f"D_A {m.num_parameters()['total'] / 1e6:.2f} M parameters at {S} px")

    # ---- fine-tuning seconds per iteration (+ peak memory on CUDA)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t = time.perf_counter()
    ft = finetune(d / "diffae", style, src, d / "ft", cfg, device=str(dev), progress=False)
    total = time.perf_counter() - t
    import json

    hist = json.loads((ft / "history.json").read_text())["iterations"]
    per_it = sum(r["seconds"] for r in hist) / len(hist)
    print(f"fine-tuning: {per_it:.2f} s/iteration (batch {cfg.stylize.batch_size}, {cfg.ddim.finetune_invert_steps} "
          f"inversion + {cfg.ddim.finetune_gen_steps} generation steps with an optimizer step each; "
          f"{total:.1f} s with the style pair and setup)")
    if dev.type == "cuda":
        print(f"fine-tuning peak GPU memory: {torch.cuda.max_memory_allocated(dev) / 2 ** 30:.2f} GiB")

    # ---- applying: images/s and the pipeline vs the bare UNet calls it makes
    n_inv, n_gen = cfg.ddim.apply_invert_steps, cfg.ddim.apply_gen_steps
    calls = n_inv + n_gen
    bs = min(cfg.stylize.apply_batch_size, args.n_images)
    t = time.perf_counter()
    apply_stylizer(ft, src, d / "st", cfg, device=str(dev), progress=False)
    t_apply = time.perf_counter() - t
    unet = m.unet.to(dev).eval()
    x = torch.randn(bs, 3, S, S, device=dev)
    tv = torch.full((bs,), 10, device=dev, dtype=torch.long)
    z = torch.randn(bs, m.config["z_dim"], device=dev)
    with torch.no_grad():
        unet(x, tv, z)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        n_batches = (args.n_images + bs - 1) // bs
        for _ in range(n_batches * calls):
            unet(x, tv, z)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t_bare = time.perf_counter() - t
    print(f"applying: {calls} UNet calls per image ({n_inv} inversion + {n_gen} generation; OSASIS uses 75), "
          f"{args.n_images / t_apply:.2f} images/s at batch {bs}")
    print(f"pipeline {t_apply:.2f} s vs the bare UNet calls it makes {t_bare:.2f} s: ratio {t_apply / t_bare:.2f} "
          f"(target <= 1.1; includes reading, encoding, upsampling and writing PNGs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
