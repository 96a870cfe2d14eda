"""Tiny fixtures for the stylization tests: a randomly initialised DiffAE folder
and two small synthetic domains (paired folders), made in seconds on a CPU."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

from stylseg.config import get_profile

TINY_DIFFAE = {"diffae.image_size": 16, "diffae.base_channels": 8, "diffae.channel_mult": "1,2",
               "diffae.num_res_blocks": 1, "diffae.attn_resolutions": "", "diffae.enc_channel_mult": "1,2",
               "diffae.z_dim": 8, "data.diffusion_size": 16, "data.seg_size": 32,
               "ddim.t0": 0.1, "ddim.finetune_invert_steps": 2, "ddim.finetune_gen_steps": 2,
               "ddim.apply_invert_steps": 2, "ddim.apply_gen_steps": 2,
               "stylize.iterations": 2, "stylize.batch_size": 2, "stylize.spn_hidden": 8,
               "stylize.style_pair_tries": 2, "stylize.apply_batch_size": 3, "stylize.checkpoint_every": 1}


def tiny_config(**overrides):
    """The smoke profile shrunk to a 16 px DiffAE with 2-step grids (+ ``overrides``)."""
    kv = dict(TINY_DIFFAE)
    kv.update(overrides)
    return get_profile("smoke").override(**kv)


def tiny_diffae(out: os.PathLike, cfg=None, seed: int = 0) -> Path:
    """A randomly initialised DiffAE model folder at ``out`` (kind "diffae")."""
    import torch

    from stylseg.diffusion.model import DiffAE

    cfg = cfg or tiny_config()
    torch.manual_seed(seed)
    m = DiffAE.from_config(cfg.diffae, cfg.ddim)
    # a random UNet whose output conv is zero predicts eps = 0; perturb it so that the chain does something
    with torch.no_grad():
        for p in m.unet.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    m.save_pretrained(out)
    return Path(out)


def tiny_domains(root: os.PathLike, n: int = 6, size: int = 32) -> Dict[str, Path]:
    """Synthetic polyp domains: ``source`` (clinic) and ``target`` (colon) paired folders of ``n``
    images at ``size`` px, plus ``style`` (one target image)."""
    from stylseg.data.synth import generate_domain

    root = Path(root)
    src = generate_domain(root / "source", "polyp", "clinic", n=n, size=size, seed=0, progress=False)
    tgt = generate_domain(root / "target", "polyp", "colon", n=n, size=size, seed=1, progress=False)
    return {"source": src, "target": tgt, "style": tgt / "images" / sorted(os.listdir(tgt / "images"))[0]}
