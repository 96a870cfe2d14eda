"""Pieces shared by both DiffAE network families (the kit's own, :mod:`.nets`, and the published one,
:mod:`.beatgans`) and by the SPN: the sinusoidal time embedding, GroupNorm group counts, zero-initialised layers
and gradient checkpointing of a block."""

from __future__ import annotations

import torch
import torch.nn as nn


def norm_groups(ch: int, per_group: int = 4) -> int:
    """GroupNorm groups: 32 as in DiffAE when channels allow, else at least ``per_group`` channels per group
    (the largest count <= 32 that divides ``ch``)."""
    g = min(32, max(1, ch // per_group))
    while ch % g:
        g -= 1
    return g


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of real timesteps ``t`` (B,) -> (B, dim), diffusers' ``get_timestep_embedding`` in the
    guided-diffusion / DiffAE convention: ``[cos, sin]``, frequencies ``exp(-ln(1e4) k / (dim/2))``, float32."""
    from diffusers.models.embeddings import get_timestep_embedding

    return get_timestep_embedding(t, dim, flip_sin_to_cos=True, downscale_freq_shift=0)


def zero_module(m: nn.Module) -> nn.Module:
    """``m`` with every parameter set to zero (an output layer that starts as the identity's residual)."""
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


def run_block(module: nn.Module, fn, *args):
    """``fn(*args)``, with gradient checkpointing when ``module.grad_checkpoint`` is set and gradients are being
    taken: the block's activations are recomputed in the backward pass instead of kept (less memory, about a
    third more time per training step; the result and the gradients are the same)."""
    if getattr(module, "grad_checkpoint", False) and torch.is_grad_enabled():
        from torch.utils.checkpoint import checkpoint

        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)
