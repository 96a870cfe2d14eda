"""An exact epsilon predictor for Gaussian data: DDIM without training (notebook 01, tests).

If every pixel of the data is independent Gaussian, ``x0 ~ N(mu, s^2)`` (mu may be an image),
then ``x_t = sqrt(a) x0 + sqrt(1-a) eps`` is Gaussian too and the minimum-MSE noise prediction is
linear in x_t::

    E[eps | x_t] = sqrt(1-a) (x_t - sqrt(a) mu) / (a s^2 + 1 - a)

This is what a perfectly trained network would output on such data, so DDIM sampling with it
(from x_T ~ N(0, I)) draws from N(mu, s^2) up to the discretisation error of few steps, and
inversion + generation with it show the sampler's own error, free of any training noise.
"""

from __future__ import annotations

from typing import Union

import torch

from .ddim import DDIMSchedule


class GaussianEps:
    """``eps(x_t, t, cond=None)`` for data N(mean, var) per pixel.

    ``mean``: float or tensor broadcastable to (B,C,H,W) (e.g. an image (3,H,W) in [-1,1]);
    ``var``: float > 0 or tensor like ``mean``. ``calls`` counts the evaluations (UNet calls).
    """

    def __init__(self, mean: Union[float, torch.Tensor] = 0.0, var: Union[float, torch.Tensor] = 0.25,
                 schedule: DDIMSchedule = None):
        self.mean = torch.as_tensor(mean, dtype=torch.float32)
        self.var = torch.as_tensor(var, dtype=torch.float32)
        self.schedule = schedule or DDIMSchedule()
        self.calls = 0

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        self.calls += 1
        a = self.schedule.alphas_cumprod[t.long().cpu()].to(x_t.device, torch.float32).view(-1, 1, 1, 1)
        mu, var = self.mean.to(x_t.device), self.var.to(x_t.device)
        return (1 - a).sqrt() * (x_t - a.sqrt() * mu) / (a * var + 1 - a)

    @classmethod
    def fit(cls, x: torch.Tensor, min_var: float = 1e-3, schedule: DDIMSchedule = None) -> "GaussianEps":
        """The Gaussian fitted to images x (N,3,H,W): per-pixel mean and variance (at least ``min_var``)."""
        var = x.var(0, unbiased=False) if x.shape[0] > 1 else torch.full_like(x[0], 0.1)
        return cls(mean=x.mean(0), var=var.clamp_min(min_var), schedule=schedule)

    def sample_data(self, shape, generator: torch.Generator = None) -> torch.Tensor:
        """Draw x0 ~ N(mean, var) of ``shape`` (B,C,H,W)."""
        e = torch.randn(tuple(shape), generator=generator)
        return self.mean + self.var.sqrt() * e
