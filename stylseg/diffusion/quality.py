"""Quality measures of a DiffAE that an untrained model cannot pass (its quality gates).

A DDIM round trip is not one: with its zero-initialised output an untrained model predicts
eps = 0 and inverts and renders any image exactly. What is measured instead, on held-out
images x (B,3,S,S) in [-1,1]:

- :func:`sdedit_psnr`: SDEdit reconstruction, what stylization relies on: noise x to t0 with
  *fresh* noise, render it with its own z_sem; PSNR against x, beside the same for a zero-eps
  model (whose render is ``x + sqrt((1-a)/a) noise``, clamped).
- :func:`code_matters`: render the same fresh x_T (full depth) with each image's own z_sem and
  with z_sem shuffled between images; mean SSIM to the image in both cases.
- :func:`code_reconstruction`: SDEdit from depth t0 with each image's own z_sem against the same
  fresh noise rendered with the mean training code (a decoder told nothing about the image):
  what z_sem adds to a reconstruction, per depth.
- :func:`eps_mse`: held-out epsilon-MSE at given t beside the trivial predictor that takes x0
  as the training set's mean image (``eps_hat = (x_t - sqrt(a) mean) / sqrt(1-a)``).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import torch

from .ddim import DDIMSchedule, ddim_sample, ddim_timesteps


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image of x, y (B,C,H,W) in [-1,1], on the [0,1] scale (data range 1)."""
    mse = ((x.float().clamp(-1, 1) - y.float().clamp(-1, 1)) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM per image (scikit-image, Gaussian window of sigma 1.5, colour channels averaged) of
    x, y (B,3,H,W) in [-1,1], compared as uint8 images."""
    from skimage.metrics import structural_similarity

    from ..data.io import from_tensor_pm1

    a, b = from_tensor_pm1(x), from_tensor_pm1(y)
    if a.ndim == 3:
        a, b = a[None], b[None]
    vals = []
    for u, v in zip(a, b):
        win = min(7, u.shape[0] - (1 - u.shape[0] % 2))
        vals.append(structural_similarity(u, v, channel_axis=2, data_range=255, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False, win_size=None if win >= 7 else win))
    return torch.tensor(vals, dtype=torch.float32)


@torch.no_grad()
def round_trip_error(eps_fn, x: torch.Tensor, t0: float, steps: int, cond=None,
                     schedule: Optional[DDIMSchedule] = None) -> float:
    """Mean absolute error of DDIM inversion to t0 and generation back (``steps`` calls each) of
    x (B,3,S,S) in [-1,1]: the sampler's discretisation error for this eps model (a unit test of
    the sampler, not a quality gate: eps = 0 scores a perfect 0)."""
    from .ddim import ddim_invert

    schedule = schedule or DDIMSchedule()
    grid = ddim_timesteps(t0, steps, schedule.T)
    xt = ddim_invert(eps_fn, x, grid, cond=cond, schedule=schedule)
    return float((ddim_sample(eps_fn, xt, grid, cond=cond, schedule=schedule) - x).abs().mean())


def zero_eps(x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
    """The trivial epsilon model eps = 0 (what a zero-initialised UNet predicts)."""
    return torch.zeros_like(x)


@torch.no_grad()
def sdedit_psnr(model, x: torch.Tensor, t0: float, steps: int, seed: int = 0) -> Dict[str, float]:
    """Mean PSNR of SDEdit reconstructions of x (B,3,S,S): the model's (own z_sem) and a zero-eps
    model's, on the same fresh noise. Returns ``{"model", "zero_eps", "gain"}`` in dB."""
    g = torch.Generator().manual_seed(seed)
    z = model.encode(x)
    xt = model.noise_to(x, t0, generator=g)
    rec = model.render(xt, z, t0, steps)
    zero = ddim_sample(zero_eps, xt, ddim_timesteps(t0, steps, model.schedule.T), schedule=model.schedule)
    pm, pz = float(psnr(rec, x).mean()), float(psnr(zero, x).mean())
    return {"model": pm, "zero_eps": pz, "gain": pm - pz}


@torch.no_grad()
def code_matters(model, x: torch.Tensor, steps: int = 20, seed: int = 0, t0: float = 1.0) -> Dict[str, float]:
    """Render one fresh x_T per image (depth ``t0``, default full) with its own z_sem and with the
    z_sem of another image (a cyclic shift); mean SSIM to the image. ``{"own", "shuffled", "gain"}``."""
    from .model import randn

    if x.shape[0] < 2:
        raise ValueError("need at least two images to shuffle their codes")
    g = torch.Generator().manual_seed(seed)
    z = model.encode(x)
    xT = randn(x.shape, g, x.device)
    if t0 < 1.0:
        xT = model.noise_to(x, t0, generator=g)
    own = model.render(xT, z, t0, steps)
    shuf = model.render(xT, z.roll(1, dims=0), t0, steps)
    so, ss = float(ssim(own, x).mean()), float(ssim(shuf, x).mean())
    return {"own": so, "shuffled": ss, "gain": so - ss}


@torch.no_grad()
def code_reconstruction(model, x: torch.Tensor, z_mean: torch.Tensor, t0s: Sequence[float] = (0.5, 0.75, 1.0),
                        steps: int = 10, seed: int = 0) -> Dict[float, Dict[str, object]]:
    """What z_sem adds to a reconstruction. For each depth t0 in ``t0s`` (fraction of T; 1.0 is pure noise), noise
    the images x (B,3,S,S) in [-1,1] to t0 with fresh noise (the same draw for both) and render it with each
    image's own ``z_sem`` and with ``z_mean`` (z_dim,), the mean training code, which tells the decoder nothing
    about the image. Returns ``{t0: {"own", "mean_code"}: mean SSIM to x, "gain": own - mean_code,
    "psnr_own", "psnr_mean_code": dB, "renders": {"own", "mean_code"}: (B,3,S,S) in [-1,1]}}``.
    A model that ignores its code scores gain 0 at every depth."""
    z = model.encode(x)
    zm = z_mean.to(z).reshape(1, -1).expand_as(z)
    out: Dict[float, Dict[str, object]] = {}
    for t0 in t0s:
        g = torch.Generator().manual_seed(seed)
        xt = model.noise_to(x, t0, generator=g)
        own, mean = model.render(xt, z, t0, steps), model.render(xt, zm, t0, steps)
        so, sm = float(ssim(own, x).mean()), float(ssim(mean, x).mean())
        out[float(t0)] = {"own": so, "mean_code": sm, "gain": so - sm, "psnr_own": float(psnr(own, x).mean()),
                          "psnr_mean_code": float(psnr(mean, x).mean()), "renders": {"own": own, "mean_code": mean}}
    return out


@torch.no_grad()
def eps_mse(model, x: torch.Tensor, ts: Sequence[int], train_mean: torch.Tensor, seed: int = 0,
            repeats: int = 4) -> Dict[int, Dict[str, float]]:
    """Held-out epsilon-MSE at each t in ``ts`` for the model (own z_sem) and for the trivial
    predictor ``eps = (x_t - sqrt(a_t) m) / sqrt(1-a_t)`` with m (3,S,S) the training mean image.
    ``repeats`` noise draws per image. Returns ``{t: {"model", "mean_image"}}``."""
    g = torch.Generator().manual_seed(seed)
    z = model.encode(x)
    sch: DDIMSchedule = model.schedule
    out = {}
    from .model import randn

    for t in ts:
        a = sch.alpha_bar(int(t))
        mm, mt = [], []
        for _ in range(repeats):
            noise = randn(x.shape, g, x.device)
            tv = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
            xt = sch.add_noise(x, noise, tv)
            mm.append(float(((model(xt, tv, z) - noise) ** 2).mean()))
            triv = (xt - a ** 0.5 * train_mean.to(x)) / (1 - a) ** 0.5
            mt.append(float(((triv - noise) ** 2).mean()))
        out[int(t)] = {"model": float(np.mean(mm)), "mean_image": float(np.mean(mt))}
    return out
