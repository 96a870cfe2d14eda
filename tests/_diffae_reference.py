"""The published-DiffAE reference data (``../shared/reference/diffae``) and Lightning-shaped checkpoints
built from its tiny weights, for the import tests."""

from __future__ import annotations

import json
import os
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

LIGHTNING_CLASS = "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"


def reference_dir() -> Path:
    env = os.environ.get("STYLSEG_DIFFAE_REFERENCE")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "diffae"


def require_reference() -> Path:
    d = reference_dir()
    if not (d / "tiny_autoenc.safetensors").is_file():
        pytest.skip(f"DiffAE reference data not found at {d} (set STYLSEG_DIFFAE_REFERENCE to the folder holding "
                    f"tiny_autoenc.safetensors, tiny_autoenc_io.safetensors and ffhq256_autoenc_keys.json)")
    return d


def tiny_weights(d: Path):
    from safetensors.torch import load_file

    return load_file(str(d / "tiny_autoenc.safetensors"))


def tiny_hparams(d: Path) -> dict:
    return json.loads((d / "tiny_autoenc_hparams.json").read_text())


@contextmanager
def fake_lightning():
    """Make ``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint`` importable while saving (so that
    pickle can refer to it, as a real Lightning checkpoint does), and remove it again."""
    names = ["pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"]
    saved = {n: sys.modules.get(n) for n in names}
    mods = {n: types.ModuleType(n) for n in names}
    cls = type("ModelCheckpoint", (), {"__module__": names[-1], "__qualname__": "ModelCheckpoint"})
    mods[names[-1]].ModelCheckpoint = cls
    mods[names[0]].callbacks = mods[names[1]]
    mods[names[1]].model_checkpoint = mods[names[2]]
    sys.modules.update(mods)
    try:
        yield cls
    finally:
        for n in names:
            if saved[n] is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = saved[n]


def lightning_checkpoint(path: Path, weights: dict, hparams=None, raw_scale: float = 0.5, latent: bool = False,
                         z_dim: int = 64) -> Path:
    """A file shaped like a Lightning 1.4.5 ``last.ckpt`` of DiffAE: ``model.*`` (here the reference weights
    times ``raw_scale``, so that they differ from the EMA copy), ``ema_model.*`` (the reference weights), the
    ``x_T`` buffer, ``hyper_parameters``, ``callbacks`` keyed by the ModelCheckpoint class, optimizer, scheduler
    and AMP states; ``latent`` adds ``latent_net.*`` and ``conds_mean`` / ``conds_std``."""
    g = torch.Generator().manual_seed(3)
    sd = {f"model.{k}": v * raw_scale for k, v in weights.items()}
    sd.update({f"ema_model.{k}": v.clone() for k, v in weights.items()})
    sd["x_T"] = torch.randn(4, 3, 32, 32, generator=g)
    if latent:
        for pre in ("model.", "ema_model."):
            sd[f"{pre}latent_net.layers.0.linear.weight"] = torch.randn(128, z_dim, generator=g)
            sd[f"{pre}latent_net.layers.0.linear.bias"] = torch.randn(128, generator=g)
        sd["conds_mean"] = torch.randn(1, z_dim, generator=g)
        sd["conds_std"] = torch.rand(1, z_dim, generator=g) + 0.5
    first = next(iter(weights.values()))
    with fake_lightning() as mc:
        ckpt = {
            "epoch": 3, "global_step": 1234, "pytorch-lightning_version": "1.4.5", "state_dict": sd,
            "callbacks": {mc: {"monitor": None, "best_model_score": None, "best_model_path": "",
                               "current_score": None, "dirpath": "checkpoints/tiny_autoenc"}},
            "optimizer_states": [{"state": {0: {"step": 1234, "exp_avg": torch.zeros_like(first),
                                                "exp_avg_sq": torch.zeros_like(first)}},
                                  "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8,
                                                    "weight_decay": 0, "amsgrad": False, "params": [0]}]}],
            "lr_schedulers": [{"base_lrs": [1e-4], "last_epoch": 1234, "_step_count": 1235, "verbose": False,
                               "_get_lr_called_within_step": False, "_last_lr": [1e-4], "lr_lambdas": [None]}],
            "native_amp_scaling_state": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                         "growth_interval": 2000, "_growth_tracker": 7},
        }
        if hparams is not None:
            ckpt["hyper_parameters"] = hparams
        torch.save(ckpt, path)
    return path
