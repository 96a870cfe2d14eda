"""DiffAE quality gates on held-out synthetic polyps. Prints figures and PASS/FAIL.

    python benchmarks/bench_diffae_quality.py                  # smoke profile (~2 min on 2 cores)
    python benchmarks/bench_diffae_quality.py --profile cpu    # cpu profile (trains ~40 min)
    python benchmarks/bench_diffae_quality.py --run /tmp/run   # reuse/resume RUN/diffae of that run folder

A round trip is not a gate (an untrained, zero-output model inverts and renders perfectly). Measured:

1. SDEdit reconstruction at the profile's t0 (fresh noise, own z_sem), PSNR to the held-out image,
   beside a zero-epsilon model on the same noise. Gates: cpu >= 20 dB and >= 10 dB above zero-eps;
   smoke >= 6 dB above zero-eps.
2. The semantic code matters: one fresh x_T (full depth) rendered with each image's own z_sem and
   with z_sem shuffled between images; mean SSIM to the image. Gate (cpu): own - shuffled >= 0.1.
3. Held-out epsilon-MSE at t = 100, t0*T and 750 beside the predictor taking x0 = training mean image.
4. The training loss curve is saved and falls (mean of the last 10% of steps < first 10%).
Exit status 1 when a gate of the chosen profile fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="smoke", choices=["smoke", "cpu"])
    ap.add_argument("--run", default=None, help="run folder (default: <cache>/bench_diffae_<profile>)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: STYLSEG_THREADS or all)")
    ap.add_argument("--set", action="append", default=[], metavar="STAGE.FIELD=VALUE", help="config overrides")
    args = ap.parse_args(argv)

    import torch

    from stylseg.config import get_profile, parse_set_args
    from stylseg.data import prepare_run_data
    from stylseg.data.tensors import load_folder_tensor
    from stylseg.diffusion import DiffAE, train_diffae
    from stylseg.diffusion.quality import code_matters, eps_mse, sdedit_psnr
    from stylseg.layout import RunLayout
    from stylseg.utils import cache_dir, set_threads

    set_threads(args.threads)
    cfg = get_profile(args.profile).override(seed=args.seed, **parse_set_args(args.set))
    layout = RunLayout(args.run or cache_dir() / f"bench_diffae_{args.profile}")
    t_start = time.time()
    if not (layout.domain("source", "test") / "images").is_dir():
        prepare_run_data(layout, cfg, progress=False)
    train_dir, test_dir = layout.domain("source", "train"), layout.domain("source", "test")
    t_train = time.time()
    train_diffae(train_dir, layout.diffae, cfg, device="cpu", progress=sys.stderr.isatty())
    t_train = time.time() - t_train
    model = DiffAE.from_pretrained(layout.diffae)
    S = model.config["image_size"]
    x_test, _ = load_folder_tensor(test_dir, S)
    x_train, _ = load_folder_tensor(train_dir, S)
    hist = json.loads((layout.diffae / "history.json").read_text())
    t0, steps = cfg.ddim.t0, cfg.ddim.apply_gen_steps
    n = model.num_parameters()["total"]
    print(f"profile {args.profile}: DiffAE {n / 1e6:.2f} M params, {hist['steps_done']}/{hist['train_steps']} steps "
          f"({hist['images_per_second']:.1f} images/s, this call {t_train:.0f} s), {len(x_train)} training / "
          f"{len(x_test)} held-out images at {S} px, torch threads {torch.get_num_threads()}")

    gates = []

    def gate(name, ok, applies=True):
        gates.append((name, ok, applies))
        return ("PASS" if ok else "FAIL") if applies else ("pass" if ok else "fail") + " (not gated here)"

    q = sdedit_psnr(model, x_test, t0, steps, seed=args.seed)
    if args.profile == "cpu":
        g1 = gate("sdedit", q["model"] >= 20 and q["gain"] >= 10)
        need = ">= 20 dB and >= 10 dB above zero-eps"
    else:
        g1 = gate("sdedit", q["gain"] >= 6)
        need = ">= 6 dB above zero-eps"
    print(f"1. SDEdit at t0={t0} ({steps} calls), fresh noise, own z_sem: PSNR {q['model']:.2f} dB; zero-eps model "
          f"{q['zero_eps']:.2f} dB; gain {q['gain']:.2f} dB   [{need}] {g1}")

    c = code_matters(model, x_test, steps=cfg.diffae.sample_steps, seed=args.seed)
    g2 = gate("code", c["gain"] >= 0.1, applies=args.profile == "cpu")
    print(f"2. fresh x_T rendered with own z_sem: SSIM {c['own']:.4f}; shuffled z_sem: {c['shuffled']:.4f}; "
          f"difference {c['gain']:.4f}   [cpu: >= 0.1] {g2}")

    ts = [100, int(round(t0 * (cfg.ddim.T - 1))), 750]
    e = eps_mse(model, x_test, ts, x_train.mean(0), seed=args.seed)
    print("3. held-out eps-MSE (model / mean-image predictor): " +
          "; ".join(f"t={t}: {v['model']:.4f} / {v['mean_image']:.4f}" for t, v in e.items()))

    lf = hist["loss_falls"]
    curve = (layout.diffae / "loss_curve.png").is_file()
    g4 = gate("loss", curve and lf["last"] < lf["first"])
    print(f"4. training loss first 10% {lf['first']:.4f} -> last 10% {lf['last']:.4f} (ratio {lf['ratio']:.3f}), "
          f"curve {'saved' if curve else 'MISSING'} at {layout.diffae / 'loss_curve.png'}   {g4}")
    print(f"total {time.time() - t_start:.0f} s (timings on a shared machine are noisy)")
    failed = [g for g, ok, applies in gates if applies and not ok]
    if failed:
        print(f"FAILED gates: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
