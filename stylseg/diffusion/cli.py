"""``stylseg diffae train | reconstruct | sample``.

::

    stylseg diffae train --data RUN/data/source/train --out RUN/diffae --profile smoke [--set diffae.train_steps=500]
    accelerate launch -m stylseg.cli diffae train --data DIR --out DIR --profile paper   # many GPUs / nodes
    stylseg diffae reconstruct --model RUN/diffae --input DIR --out DIR [--t0 0.25 --steps 10 --fresh-noise]
    stylseg diffae sample --model RUN/diffae --n 16 --out DIR
    stylseg diffae import checkpoints/ffhq256_autoenc/last.ckpt --out DIR [--weights ema|model] [--template NAME]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..utils import StylsegError, set_threads, write_json


def register(parser: argparse.ArgumentParser) -> None:
    from ..cli import add_common

    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser("train", help="train a Diffusion Autoencoder on a folder of images (resumes)",
                       description="Train a DiffAE (EMA weights, samples, checkpoints) into --out. Rerunning the "
                                   "same command resumes from --out/checkpoint. Multi-GPU: accelerate launch -m "
                                   "stylseg.cli diffae train ...")
    p.add_argument("--data", required=True, help="folder of training images, or a paired folder with images/")
    p.add_argument("--out", required=True, help="output model folder")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("reconstruct", help="reconstruct images through the DiffAE; prints PSNR and SSIM",
                       description="Invert each image to t0 with its own z_sem and render it back (or, with "
                                   "--fresh-noise, SDEdit: noise it to t0 with fresh noise and render it). Writes "
                                   "the reconstructions at the model's size and metrics.json.")
    p.add_argument("--model", required=True, help="DiffAE model folder (from `stylseg diffae train`)")
    p.add_argument("--input", required=True, help="folder of images (or a paired folder with images/)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--t0", type=float, default=None, help="depth as a fraction of T (default: the profile's ddim.t0)")
    p.add_argument("--steps", type=int, default=None,
                   help="UNet calls for inversion and generation (default: the profile's apply steps)")
    p.add_argument("--fresh-noise", action="store_true", help="SDEdit: fresh Gaussian noise instead of inversion")
    p.add_argument("--batch-size", type=int, default=16)
    add_common(p)
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("sample", help="draw new images from the DiffAE (z_sem from its fitted Gaussian)")
    p.add_argument("--model", required=True, help="DiffAE model folder")
    p.add_argument("--n", type=int, default=16, help="number of images")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--steps", type=int, default=None, help="UNet calls (default: the profile's diffae.sample_steps)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0 = deterministic)")
    add_common(p)
    p.set_defaults(func=cmd_sample)

    from .beatgans import TEMPLATES

    p = sub.add_parser("import", help="import a published DiffAE checkpoint (Lightning last.ckpt) as a model folder",
                       description="Read a Lightning last.ckpt of the published Diffusion Autoencoders "
                                   "(e.g. checkpoints/ffhq256_autoenc/last.ckpt, https://github.com/phizaz/diffae"
                                   "#checkpoints) with torch.load(weights_only=True), and write a kit model folder "
                                   "(config.json + model.safetensors, the checkpoint's sha256 recorded) that every "
                                   "stage takes as D_A. CKPT may also be a weights-registry name "
                                   "(diffae-ffhq256-autoenc).")
    p.add_argument("ckpt", metavar="CKPT", help="the checkpoint file, or a weights-registry name")
    p.add_argument("--out", required=True, help="output model folder")
    p.add_argument("--weights", default="ema", choices=("ema", "model"),
                   help="ema: the EMA weights (ema_model.*, what OSASIS and DiffAE sample with; default); "
                        "model: the raw weights (model.*)")
    p.add_argument("--template", default=None, choices=tuple(TEMPLATES),
                   help="the configuration, for a checkpoint without hyper_parameters (default: from the file)")
    p.set_defaults(func=cmd_import)


def cmd_train(args) -> int:
    from .train import train_diffae

    cfg = config_for(args)
    set_threads()
    train_diffae(args.data, args.out, cfg, resume=not args.no_resume, device=cfg.device,
                 progress=not args.quiet)
    return 0


def config_for(args):
    from ..cli import config_from_args

    return config_from_args(args)


def _load(args, cfg):
    from ..utils import resolve_device
    from .model import DiffAE

    dev = resolve_device(cfg.device)
    model = DiffAE.from_pretrained(args.model, map_location=str(dev))
    if getattr(args, "profile", None) and not getattr(args, "config", None):
        want = cfg.diffae.image_size
        if want != model.config["image_size"]:
            cfg_file = Path(args.model) / "config.json"
            raise StylsegError(f"{cfg_file}: this model works at {model.config['image_size']} px "
                               f"but --profile {args.profile} uses diffae.image_size={want}; pass the profile the "
                               f"model was trained with, or a model trained in profile {args.profile}")
    return model, dev


def cmd_reconstruct(args) -> int:
    import torch

    from ..data.io import from_tensor_pm1, write_image
    from .quality import psnr, ssim
    from ..data.tensors import load_folder_tensor

    cfg = config_for(args)
    set_threads()
    model, dev = _load(args, cfg)
    t0 = cfg.ddim.t0 if args.t0 is None else args.t0
    inv_steps = args.steps or cfg.ddim.apply_invert_steps
    gen_steps = args.steps or cfg.ddim.apply_gen_steps
    if not (0 < t0 <= 1):
        raise StylsegError(f"--t0 {t0}: must be a fraction of T in (0, 1]")
    x, files = load_folder_tensor(args.input, model.config["image_size"], log=print)
    names = [f.name for f in files]
    out = Path(args.out)
    g = torch.Generator().manual_seed(cfg.seed)
    ps, ss = [], []
    from tqdm.auto import tqdm

    with torch.no_grad():
        for i in tqdm(range(0, len(x), args.batch_size), desc="reconstruct", unit="batch"):
            xb = x[i:i + args.batch_size].to(dev)
            if args.fresh_noise:
                rec = model.sdedit(xb, t0, gen_steps, generator=g)
            else:
                rec = model.reconstruct(xb, t0, inv_steps, gen_steps)
            ps += psnr(rec, xb).tolist()
            ss += ssim(rec, xb).tolist()
            for name, img in zip(names[i:i + args.batch_size], from_tensor_pm1(rec)):
                write_image(out / (Path(name).stem + ".png"), img)
    import numpy as np

    res = {"model": str(args.model), "input": str(args.input), "t0": t0, "invert_steps": None if args.fresh_noise
           else inv_steps, "gen_steps": gen_steps, "mode": "sdedit" if args.fresh_noise else "inversion",
           "psnr_mean": float(np.mean(ps)), "ssim_mean": float(np.mean(ss)),
           "per_image": {n: {"psnr": p, "ssim": s} for n, p, s in zip(names, ps, ss)}}
    write_json(out / "metrics.json", res)
    print(f"{len(names)} images, {res['mode']} at t0={t0}: mean PSNR {res['psnr_mean']:.2f} dB, "
          f"mean SSIM {res['ssim_mean']:.4f} -> {out}")
    return 0


def cmd_sample(args) -> int:
    import torch

    from ..data.io import from_tensor_pm1, write_image
    from .train import to_uint8_grid

    cfg = config_for(args)
    set_threads()
    model, dev = _load(args, cfg)
    if args.n < 1:
        raise StylsegError(f"--n {args.n}: need at least one sample")
    g = torch.Generator().manual_seed(cfg.seed)
    steps = args.steps or cfg.diffae.sample_steps
    out = Path(args.out)
    imgs = []
    with torch.no_grad():
        for i in range(0, args.n, 16):
            imgs.append(model.sample(min(16, args.n - i), steps=steps, generator=g, eta=args.eta).cpu())
    x = torch.cat(imgs)
    for i, img in enumerate(from_tensor_pm1(x)):
        write_image(out / f"sample_{i:04d}.png", img)
    write_image(out / "grid.png", to_uint8_grid([x[j:j + 8] for j in range(0, len(x) - len(x) % 8, 8)] or [x]))
    print(f"{args.n} samples ({steps} DDIM steps, eta {args.eta}) -> {out}")
    return 0


def cmd_import(args) -> int:
    from .. import weights as W
    from .pretrained import import_checkpoint

    ckpt, expected = Path(args.ckpt), None
    if args.ckpt in W.WEIGHTS and not ckpt.exists():
        # a registry file: checked by its full sha256 (published, or recorded beside it on first use)
        ckpt = W.resolve(args.ckpt)
        expected = W.verify_local(args.ckpt)
    import_checkpoint(ckpt, args.out, weights=args.weights, template=args.template, expected_sha256=expected)
    return 0
