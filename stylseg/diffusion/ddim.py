"""DDIM: schedule, step grid, deterministic sampling and inversion (METHOD.md sections 2, 7).

Symbols (DDIM, Song et al. 2021; DiffAE, Preechakul et al. 2022):
- ``alpha_bar[t]`` (``a_t`` in METHOD.md) = prod_{s<=t} (1 - beta_s), linear betas, T = 1000.
- x0-prediction (paper eq. 3): ``f(x_t) = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)``.
- generation step (eq. 4/9 with eta = 0): ``x_{t'} = sqrt(a_{t'}) f(x_t) + sqrt(1 - a_{t'}) eps``.
- inversion ("stochastic encoding"): the same formula towards a larger t', eps at the current t.

Timestep grid over a depth ``t0`` (fraction of T) with ``n`` UNet calls:
``t_i = round(i * t0 * (T - 1) / n)``, i = 0..n. Inversion walks t_0 -> t_n calling the UNet at
t_0..t_{n-1}; generation starts exactly at t_n and walks down, its last step going to
``a = 1`` (x0), calling the UNet at each grid point it leaves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch

EpsFn = Callable[..., torch.Tensor]  # eps_fn(x_t (B,C,H,W), t (B,) long, cond) -> eps (B,C,H,W)


@dataclass
class DDIMSchedule:
    """Linear beta schedule, epsilon prediction (as diffusers' ``DDIMScheduler(beta_schedule="linear")``)."""

    T: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def __post_init__(self):
        self.betas = torch.linspace(self.beta_start, self.beta_end, self.T, dtype=torch.float64)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)  # alpha_bar[t], t = 0..T-1

    @classmethod
    def from_config(cls, cfg) -> "DDIMSchedule":
        return cls(T=cfg.T, beta_start=cfg.beta_start, beta_end=cfg.beta_end)

    def alpha_bar(self, t: int) -> float:
        """``a_t``; ``t = -1`` means the clean image (``a = 1``)."""
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Forward process q(x_t | x0): ``sqrt(a_t) x0 + sqrt(1-a_t) eps``; ``t`` (B,) long."""
        a = self.alphas_cumprod.to(x0.device)[t].float().view(-1, *([1] * (x0.ndim - 1)))
        return a.sqrt() * x0 + (1 - a).sqrt() * noise


def ddim_timesteps(t0: float, n: int, T: int = 1000) -> List[int]:
    """The grid ``[t_0=0, ..., t_n]`` with ``t_i = round(i * t0 * (T-1) / n)`` (METHOD.md section 7).

    ``t0`` is a fraction of T in (0, 1]; ``n`` >= 1 UNet calls. Duplicates (when n > t0*(T-1))
    are rejected because they would waste UNet calls.
    """
    if not (0.0 < t0 <= 1.0):
        raise ValueError(f"t0 must be a fraction of T in (0, 1], got {t0}")
    if n < 1:
        raise ValueError(f"need at least one step, got {n}")
    grid = [int(round(i * t0 * (T - 1) / n)) for i in range(n + 1)]
    if len(set(grid)) != len(grid):
        raise ValueError(f"{n} steps over t0={t0} (T={T}) give repeated timesteps; use fewer steps")
    return grid


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, a_t: float, clip_x0: bool = True) -> torch.Tensor:
    """Paper eq. 3: ``f(x_t) = (x_t - sqrt(1-a_t) eps) / sqrt(a_t)``, optionally clamped to [-1, 1]."""
    x0 = (x_t - (1.0 - a_t) ** 0.5 * eps) / a_t ** 0.5
    return x0.clamp(-1.0, 1.0) if clip_x0 else x0


def ddim_step(x_t: torch.Tensor, eps: torch.Tensor, a_t: float, a_next: float, *, clip_x0: bool = True,
              eta: float = 0.0, a_prev_for_sigma: Optional[float] = None, generator=None):
    """One DDIM update from ``t`` (``a_t``) to ``t'`` (``a_next``), either direction.

    Returns ``(x_next, x0_pred)``. With ``clip_x0`` the noise direction is recomputed from the
    clamped x0 so that the update stays consistent (as diffusers does). ``eta > 0`` (generation
    only) adds sigma-scaled fresh noise (DDIM eq. 16).
    """
    x0 = predict_x0(x_t, eps, a_t, clip_x0=False)
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
        eps = (x_t - a_t ** 0.5 * x0) / (1.0 - a_t) ** 0.5
    sigma = 0.0
    if eta > 0 and a_next > a_t:  # generation direction only
        sigma = eta * ((1 - a_next) / (1 - a_t) * (1 - a_t / a_next)) ** 0.5
    dir_coef = max(1.0 - a_next - sigma ** 2, 0.0) ** 0.5
    x_next = a_next ** 0.5 * x0 + dir_coef * eps
    if sigma > 0:
        noise = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype) \
            if generator is not None else torch.randn_like(x_t)
        x_next = x_next + sigma * noise
    return x_next, x0


def _tvec(t: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)


def ddim_sample(model: EpsFn, x: torch.Tensor, timesteps: Sequence[int], *, cond=None, eta: float = 0.0,
                clip_x0: bool = True, callback=None, schedule: Optional[DDIMSchedule] = None,
                generator=None) -> torch.Tensor:
    """Generate: walk the ascending grid ``timesteps`` (``[t_0=0, ..., t_n]``) downwards from
    ``x`` = x_{t_n} (B,C,H,W) to x0 in [-1,1], making exactly ``n = len(timesteps)-1`` UNet calls.

    The UNet is called at t_n, ..., t_1; the last step goes from t_1 to ``a = 1``. A grid
    starting at ``t_0 = 0`` is walked the same way (one more call at t_0 = 0 is not made).
    ``callback(i, t, x_t, x0_pred)`` sees every step.
    """
    schedule = schedule or DDIMSchedule()
    ts = list(timesteps)
    down = ts[::-1][:-1]  # t_n ... t_1
    targets = ts[::-1][1:-1] + [-1]  # t_{n-1} ... t_1, then clean
    for i, (t, t_next) in enumerate(zip(down, targets)):
        eps = model(x, _tvec(t, x), cond)
        x, x0 = ddim_step(x, eps, schedule.alpha_bar(t), schedule.alpha_bar(t_next), clip_x0=clip_x0, eta=eta,
                          generator=generator)
        if callback is not None:
            callback(i, t, x, x0)
    return x


def ddim_invert(model: EpsFn, x: torch.Tensor, timesteps: Sequence[int], *, cond=None, eta: float = 0.0,
                clip_x0: bool = True, callback=None, schedule: Optional[DDIMSchedule] = None) -> torch.Tensor:
    """Invert (DiffAE's deterministic "stochastic encoding"): from x0 (B,C,H,W) in [-1,1] walk
    the ascending grid up to x_{t_n}, epsilon evaluated at the current t, ``n`` UNet calls.

    The first step goes from the clean image (``a = 1``, the UNet called at t_0) to t_1, so that
    :func:`ddim_sample` over the same grid is its exact mirror. ``eta`` must be 0.
    """
    if eta != 0.0:
        raise ValueError("DDIM inversion is deterministic: eta must be 0")
    schedule = schedule or DDIMSchedule()
    ts = list(timesteps)
    for i in range(len(ts) - 1):
        t, t_next = ts[i], ts[i + 1]
        a_t = 1.0 if i == 0 else schedule.alpha_bar(t)
        eps = model(x, _tvec(t, x), cond)
        if i == 0:
            x0 = x.clamp(-1, 1) if clip_x0 else x
            x_new = schedule.alpha_bar(t_next) ** 0.5 * x0 + (1 - schedule.alpha_bar(t_next)) ** 0.5 * eps
        else:
            x_new, x0 = ddim_step(x, eps, a_t, schedule.alpha_bar(t_next), clip_x0=clip_x0)
        x = x_new
        if callback is not None:
            callback(i, t_next, x, x0)
    return x
