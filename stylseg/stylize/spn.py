"""The Structure-Preserving Network (SPN) and the term it adds to every D_B step.

docs/method.md sections 4 and 7. The SPN looks at the clean input image ``x_in`` and adds a
pixel-space correction to the latent before each generation step of the fine-tuned decoder
D_B (paper equations 7-9)::

    x'_t = x_t + lambda * SPN(x_in, t)
    x_{t-1} = sqrt(a_{t-1}) f(x'_t) + sqrt(1 - a_{t-1}) eps_B(x'_t, t, z)

Two forms (``form``):

- ``"paper"``: a stack of 1x1 convolutions on the input image, no time input
  (Conv 3->h, SiLU, Conv h->h, SiLU, Conv h->3).
- ``"osasis"``: OSASIS's per-pixel MLP with a time scale-shift: Conv 3->h, two blocks
  (GroupNorm, ``h*(1+s_t)+b_t``, SiLU, 1x1 conv) h->2h->h, Conv h->3; the time embedding
  (diffusers' sinusoidal embedding, two Linear layers) is fed the REAL timestep t in [0, T) (OSASIS fed the grid
  index, a defect not copied).

In both forms the last layer is zero-initialised, so that an untrained SPN adds nothing and
fine-tuning starts from D_A's plain round trip. The same ``lambda`` is used in training and
inference (it is saved with the stylizer).
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..diffusion.ddim import DDIMSchedule, DDIMStep, Shift, ddim_step, render
from ..diffusion.blocks import norm_groups, timestep_embedding
from ..utils import StylsegError, check_choice

SPN_FORMS = ("paper", "osasis")


class _TimeBlock(nn.Module):
    """GroupNorm -> h*(1+s_t)+b_t -> SiLU -> 1x1 conv (OSASIS's SPN block)."""

    def __init__(self, c_in: int, c_out: int, t_dim: int):
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups(c_in, per_group=1), c_in)
        self.t_proj = nn.Linear(t_dim, 2 * c_in)
        self.conv = nn.Conv2d(c_in, c_out, 1)

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        s, b = self.t_proj(temb)[:, :, None, None].chunk(2, dim=1)
        return self.conv(F.silu(self.norm(h) * (1 + s) + b))


class SPN(nn.Module):
    """Structure-Preserving Network: ``SPN(x_in (B,3,H,W) in [-1,1], t (B,) long) -> (B,3,H,W)``.

    Every layer is a 1x1 convolution, so the SPN is a per-pixel function of the input colour
    (plus, in the ``osasis`` form, of the timestep). The output is unbounded; it starts at
    exactly zero (last layer zero-initialised).
    """

    def __init__(self, form: str = "paper", hidden: int = 64, channels: int = 3, T: int = 1000):
        super().__init__()
        check_choice(form, SPN_FORMS, "SPN form", "stylize.spn_form")
        self.form, self.hidden, self.channels, self.T = form, int(hidden), int(channels), int(T)
        h = self.hidden
        self.conv_in = nn.Conv2d(channels, h, 1)
        if form == "paper":
            self.body = nn.Sequential(nn.SiLU(), nn.Conv2d(h, h, 1), nn.SiLU())
        else:
            t_dim = h
            self.t_embed = nn.Sequential(nn.Linear(t_dim, 2 * t_dim), nn.SiLU(), nn.Linear(2 * t_dim, t_dim))
            self.block1 = _TimeBlock(h, 2 * h, t_dim)
            self.block2 = _TimeBlock(2 * h, h, t_dim)
            self.act = nn.SiLU()
        self.conv_out = nn.Conv2d(h, channels, 1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def config(self) -> dict:
        return {"form": self.form, "hidden": self.hidden, "channels": self.channels, "T": self.T}

    @property
    def uses_time(self) -> bool:
        return self.form == "osasis"

    def forward(self, x_in: torch.Tensor, t: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.conv_in(x_in)
        if self.form == "paper":
            h = self.body(h)
        else:
            if t is None:
                raise ValueError("the osasis-form SPN needs the timestep t (B,) long")
            if t.ndim == 0:
                t = t.expand(x_in.shape[0])
            temb = self.t_embed(timestep_embedding(t.to(x_in.device), self.hidden))
            h = self.block2(self.block1(h, temb), temb)
            h = self.act(h)
        return self.conv_out(h)


def spn_shift(x_t: torch.Tensor, x_in: torch.Tensor, t: torch.Tensor, spn: Optional[SPN], lam: float,
              gate: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x'_t = x_t + lambda * SPN(x_in, t)`` (paper eq. 7; docs/method.md sections 1 and 7).

    ``x_t`` (B,3,H,W) latent at timestep ``t`` (B,) long; ``x_in`` (B,3,H,W) in [-1,1], the
    clean input at the latent's resolution. ``spn=None`` or ``lam == 0`` returns ``x_t``.
    ``gate`` (B,1,H,W) in [0,1], optional: the term only where the gate is on,
    ``x_t + gate * lambda * SPN(x_in, t)`` (``stylize.structure_region=lesion``: :func:`spn_gate`).
    """
    if spn is None or lam == 0.0:
        return x_t
    term = lam * spn(x_in, t)
    return x_t + (term if gate is None else gate.to(term.dtype) * term)


def spn_shift_fn(spn: Optional[SPN], x_in: torch.Tensor, lam: float, gate: Optional[torch.Tensor] = None, *,
                 constant: bool = True) -> Optional[Shift]:
    """The SPN term as the ``shift`` of the DDIM loop (:func:`stylseg.diffusion.ddim.ddim_steps`): before every
    step ``x'_t = x_t + lambda * SPN(x_in, t)`` (:func:`spn_shift`, paper eq. 7), gated by ``gate`` (B,1,H,W).
    None (no shift) for ``spn=None`` or ``lam == 0``.

    The paper-form SPN has no time input, so with ``constant=True`` (its weights do not change within the walk)
    its term is computed once for the whole walk; gradients still reach its weights through every step. The
    per-step fine-tuning update changes the weights between steps and passes ``constant=False``.
    """
    if spn is None or lam == 0.0:
        return None
    if constant and not spn.uses_time:
        term = spn_shift(torch.zeros_like(x_in), x_in, None, spn, lam, gate)
        return lambda x, step: x + term

    def shift(x: torch.Tensor, step: DDIMStep) -> torch.Tensor:
        t = torch.full((x.shape[0],), int(step.t), device=x.device, dtype=torch.long)
        return spn_shift(x, x_in, t, spn, lam, gate)

    return shift


#: where the SPN's term enters (``stylize.structure_region``): everywhere (the paper), or on the lesion and the
#: ring the lesion-focused structure term covers (:func:`spn_gate`)
SPN_REGIONS = ("image", "lesion")


def spn_gate(masks: Optional[torch.Tensor], region: str = "image", ring: Optional[float] = None
             ) -> Optional[torch.Tensor]:
    """The gate of the SPN term for ``stylize.structure_region``: ``None`` (everywhere) for ``image``; for
    ``lesion`` the masks (B,1,H,W) {0,1} dilated by the structure term's ring (``losses.LESION_RING``;
    ``losses.lesion_weight``: all ones for an image without a lesion, whose whole
    structure is then kept). ``lesion`` without masks is an error."""
    check_choice(region, SPN_REGIONS, "SPN region", "stylize.structure_region")
    if region == "image":
        return None
    if masks is None:
        raise StylsegError("stylize.structure_region=lesion gates the SPN's term with the lesion masks, and none were "
                           "given (a paired folder with masks/ is needed, or set stylize.structure_region=image)")
    from .losses import LESION_RING, lesion_weight

    return lesion_weight(masks, LESION_RING if ring is None else ring)


def build_spn(scfg, T: int = 1000) -> SPN:
    """The SPN a :class:`~stylseg.config.StylizeConfig` asks for (``spn_form``, ``spn_hidden``)."""
    return SPN(form=scfg.spn_form, hidden=scfg.spn_hidden, T=T)


def count_parameters(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def pass_through_spn(hidden: int = 64) -> SPN:
    """A paper-form SPN whose weights are set by hand so that ``SPN(x_in, t) = x_in`` (B,3,H,W), for any t: a
    stand-in for a trained SPN (notebook 03, before notebook 04 trains one), whose term ``lambda * x_in`` pulls every
    step's latent toward the clean input. Exact up to rounding, by ``silu(u) - silu(-u) = u``: the first layer
    makes the channels ``(x, -x)``, the middle one ``(y, -y)`` with ``y = silu(x) - silu(-x) = x``, the last one
    ``silu(y) - silu(-y)``. ``hidden`` >= 6."""
    if int(hidden) < 6:
        raise ValueError(f"a pass-through SPN needs hidden >= 6 channels, got {hidden}")
    spn = SPN("paper", hidden=hidden)
    eye = torch.eye(3)
    pm = torch.cat([eye, -eye])  # (6, 3): u -> (u, -u)
    diff = torch.cat([eye, -eye], dim=1)  # (3, 6): (silu(u), silu(-u)) -> silu(u) - silu(-u) = u
    mid = spn.body[1]
    with torch.no_grad():
        for conv in (spn.conv_in, mid, spn.conv_out):
            conv.weight.zero_()
            conv.bias.zero_()
        spn.conv_in.weight[:6, :, 0, 0] = pm
        mid.weight[:6, :6, 0, 0] = pm @ diff
        spn.conv_out.weight[:, :6, 0, 0] = diff
    return spn


# --------------------------------------------------------------------------- a hand-made structure term (notebook 03)
def structure_guidance(unet: nn.Module, z: torch.Tensor, x_ref: torch.Tensor, weight: float = 0.3) -> Shift:
    """A hand-made structure term as the ``shift`` of the DDIM loop, instead of a trained SPN (the SPN's idea).

    Before every step the latent is moved against the gradient of the structure loss
    ``|S(f(x_t)) - S(x_ref)|^2`` (``S`` = locally normalised luminance, ``f`` the x0-prediction of ``unet``
    conditioned on ``z``): ``x'_t = x_t - weight * sqrt(1 - a_t) * g / std(g)`` (one more UNet call per step).
    A trained SPN learns a correction of the same kind, ``x'_t = x_t + lambda * SPN(x_in, t)``, without the
    gradient at inference time. ``x_ref`` (B,3,S,S) in [-1,1].
    """
    from .losses import structure_map

    s_ref = structure_map(x_ref).detach()

    def shift(x: torch.Tensor, step: DDIMStep) -> torch.Tensor:
        if not weight:
            return x
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            tv = torch.full((x.shape[0],), int(step.t), device=x.device, dtype=torch.long)
            x0 = ddim_step(xg, unet(xg, tv, z), step.a_t, step.a_next)[1]
            g, = torch.autograd.grad(((structure_map(x0) - s_ref) ** 2).sum(), xg)
        return x - weight * (1 - step.a_t) ** 0.5 * g / (g.std() + 1e-8)

    return shift


@torch.no_grad()
def structure_guided_generate(unet: nn.Module, x_t: torch.Tensor, z: torch.Tensor, t0: float, steps: int,
                              schedule: DDIMSchedule, x_ref: torch.Tensor, weight: float = 0.3,
                              callback=None) -> torch.Tensor:
    """Render x_t (B,3,S,S) at t0 with ``unet`` conditioned on z, guided towards the structure of ``x_ref``
    (:func:`structure_guidance`; ``weight = 0`` is plain rendering). Returns x0 (B,3,S,S) in [-1,1]."""
    return render(unet, x_t, z, t0, steps, schedule, callback=callback,
                  shift=structure_guidance(unet, z, x_ref, weight))


@torch.no_grad()
def guidance_rows(diffae, xa: torch.Tensor, xb: torch.Tensor, t0: float, n_inv: int, n_gen: int,
                  weight: float = 0.3) -> Dict[str, torch.Tensor]:
    """Notebook 03's comparison: A's latent (``xa`` (N,3,S,S) in [-1,1] inverted with D_A ``diffae`` to ``t0``)
    rendered with A's own code, with B's code (``xb``'s) and with B's code plus the hand-made structure term towards
    A (:func:`structure_guided_generate`, ``weight``); ``{row name: (N,3,S,S) in [-1,1]}``."""
    za, zb = diffae.encode(xa), diffae.encode(xb)
    xt = diffae.encode_stochastic(xa, za, t0, n_inv)
    return {"A's latent, own z": diffae.render(xt, za, t0, n_gen),
            "A's latent, B's z": diffae.render(xt, zb, t0, n_gen),
            f"... + structure term (w={weight})": structure_guided_generate(diffae.unet, xt, zb, t0, n_gen,
                                                                           diffae.schedule, x_ref=xa, weight=weight)}
