"""DDIM: schedule, step grid, deterministic sampling and inversion (docs/method.md sections 2, 7).

Symbols (DDIM, Song et al. 2021; DiffAE, Preechakul et al. 2022):

- ``alpha_bar[t]`` (``a_t`` in docs/method.md) = prod_{s<=t} (1 - beta_s), linear betas, T = 1000,
  the same numbers as diffusers' ``DDIMScheduler(beta_schedule="linear")``.
- forward process (DDPM eq. 4): ``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps``.
- x0-prediction (paper eq. 3): ``f(x_t) = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)``.
- generation step (paper eq. 4/9, DDIM eq. 12 with eta = 0):
  ``x_{t'} = sqrt(a_{t'}) f(x_t) + sqrt(1 - a_{t'} - sigma^2) eps + sigma z`` with
  ``sigma = eta sqrt((1 - a_{t'})/(1 - a_t)) sqrt(1 - a_t/a_{t'})`` (DDIM eq. 16).
- inversion (DiffAE's "stochastic encoding"): the same formula towards a larger t', eps
  evaluated at the current t.

When ``clip_x0`` is on, ``f(x_t)`` is clamped to [-1, 1] and eps is re-derived from the clamped
x0, as DiffAE / guided-diffusion do (diffusers: ``clip_sample=True`` with
``use_clipped_model_output=True``).

Timestep grid over a depth ``t0`` (fraction of T) with ``n`` UNet calls:
``t_i = round(i * t0 * (T - 1) / n)``, i = 0..n; the grid point ``t_0 = 0`` stands for the clean
image (``a = 1``). Inversion walks t_0 -> t_n calling the UNet at t_0..t_{n-1}; generation starts
exactly at t_n and walks down, calling the UNet at t_n..t_1, its last step going to ``a = 1`` (x0).
Both make exactly n UNet calls and, for a fixed epsilon function, are exact mirrors.

One loop: :func:`ddim_steps` walks a grid (:func:`ddim_walk`) a step at a time and every generation and inversion
of the kit goes through it (:func:`ddim_sample`, :func:`ddim_invert`, DiffAE's :func:`encode_stochastic` and
:func:`render`, the stylizer's SPN term and structure guidance as its ``shift``, the fine-tuning's per-step update
and ``L_cycle``'s last-call gradient as its ``grad`` mode). Callbacks have one shape, :data:`Callback`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, List, NamedTuple, Optional, Sequence

import torch
import torch.utils.checkpoint

EpsFn = Callable[..., torch.Tensor]  # eps_fn(x_t (B,C,H,W), t (B,) long, cond) -> eps (B,C,H,W)
#: ``callback(i, t, x_t, x0_pred)``: step index i (0-based), the timestep t at which the UNet was
#: called, the latent x_t it was called on (B,C,H,W) and its clamped x0-prediction (B,C,H,W).
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]
#: the schedule's keys in a model folder's config (linear betas ``beta_start..beta_end`` over ``T`` steps)
SCHEDULE_KEYS = ("T", "beta_start", "beta_end")


@dataclass
class DDIMSchedule:
    """Linear beta schedule, epsilon prediction (as diffusers' ``DDIMScheduler(beta_schedule="linear")``).

    ``betas`` and ``alphas_cumprod`` are float64 tensors of length T (index t = 0..T-1).
    """

    T: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def __post_init__(self):
        self.betas = torch.linspace(self.beta_start, self.beta_end, self.T, dtype=torch.float64)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)  # alpha_bar[t], t = 0..T-1

    @classmethod
    def from_config(cls, cfg) -> "DDIMSchedule":
        """From a :class:`~stylseg.config.DDIMConfig` (fields ``T``, ``beta_start``, ``beta_end``)."""
        return cls(T=cfg.T, beta_start=cfg.beta_start, beta_end=cfg.beta_end)

    def alpha_bar(self, t: int) -> float:
        """``a_t`` at an integer timestep t in [0, T). The clean image (``a = 1``) is no timestep: it is the first
        point ``t_0 = 0`` of a grid (:func:`ddim_walk`)."""
        if not 0 <= int(t) < self.T:
            raise ValueError(f"timestep {t} outside [0, {self.T - 1}]")
        return float(self.alphas_cumprod[int(t)])

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Forward process q(x_t | x0): ``sqrt(a_t) x0 + sqrt(1-a_t) eps``.

        ``x0`` (B,C,H,W) in [-1,1], ``noise`` like ``x0`` (standard normal), ``t`` (B,) long.
        """
        t = torch.as_tensor(t, device=x0.device).long().view(-1)
        a = self.alphas_cumprod.to(x0.device)[t].to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def snr(self, t: int) -> float:
        """Signal-to-noise ratio ``a_t / (1 - a_t)`` at integer t."""
        a = self.alpha_bar(t)
        return a / (1.0 - a)


def ddim_timesteps(t0: float, n: int, T: int = 1000) -> List[int]:
    """The grid ``[t_0=0, ..., t_n]`` with ``t_i = round(i * t0 * (T-1) / n)`` (docs/method.md section 7).

    ``t0`` is a fraction of T in (0, 1]; ``n`` >= 1 UNet calls. Duplicates (when n > t0*(T-1))
    are rejected because they would waste UNet calls. ``ddim_timesteps(0.5, 5)`` ->
    ``[0, 100, 200, 300, 400, 500]`` (rounded from multiples of 99.9).
    """
    if not (0.0 < float(t0) <= 1.0):
        raise ValueError(f"t0 must be a fraction of T in (0, 1], got {t0}")
    if int(n) < 1:
        raise ValueError(f"need at least one step, got {n}")
    grid = [int(round(i * t0 * (T - 1) / n)) for i in range(int(n) + 1)]
    if len(set(grid)) != len(grid):
        raise ValueError(f"{n} steps over t0={t0} (T={T}) give repeated timesteps; use fewer steps")
    return grid


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, a_t: float, clip_x0: bool = True) -> torch.Tensor:
    """Paper eq. 3: ``f(x_t) = (x_t - sqrt(1-a_t) eps) / sqrt(a_t)``, optionally clamped to [-1, 1].

    ``x_t``, ``eps`` (B,C,H,W); ``a_t`` = alpha_bar at t (float in (0, 1]).
    """
    x0 = (x_t - (1.0 - a_t) ** 0.5 * eps) / a_t ** 0.5
    return x0.clamp(-1.0, 1.0) if clip_x0 else x0


def ddim_step(x_t: torch.Tensor, eps: torch.Tensor, a_t: float, a_next: float, *, clip_x0: bool = True,
              eta: float = 0.0, generator: Optional[torch.Generator] = None,
              noise: Optional[torch.Tensor] = None):
    """One DDIM update from ``t`` (``a_t``) to ``t'`` (``a_next``), either direction.

    ``x_t``, ``eps`` (B,C,H,W). Returns ``(x_next, x0_pred)``. With ``clip_x0`` the x0-prediction
    is clamped to [-1,1] and the noise direction re-derived from it (DiffAE; diffusers'
    ``use_clipped_model_output=True``). ``eta > 0`` (generation direction only) adds
    sigma-scaled fresh noise (DDIM eq. 16), drawn from ``generator`` or given as ``noise``.
    """
    x0 = predict_x0(x_t, eps, a_t, clip_x0=False)
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
        if a_t < 1.0:
            eps = (x_t - a_t ** 0.5 * x0) / (1.0 - a_t) ** 0.5
    sigma = 0.0
    if eta > 0 and a_next > a_t:  # generation direction only
        sigma = eta * ((1 - a_next) / (1 - a_t) * (1 - a_t / a_next)) ** 0.5
    dir_coef = max(1.0 - a_next - sigma ** 2, 0.0) ** 0.5
    x_next = a_next ** 0.5 * x0 + dir_coef * eps
    if sigma > 0:
        if noise is None:
            noise = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        x_next = x_next + sigma * noise
    return x_next, x0


def _tvec(t: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)


def _check_grid(ts: Sequence[int], T: int) -> List[int]:
    ts = [int(t) for t in ts]
    if len(ts) < 2:
        raise ValueError(f"a DDIM grid needs at least two points (one UNet call), got {ts}")
    if any(b <= a for a, b in zip(ts, ts[1:])) or ts[0] < 0 or ts[-1] >= T:
        raise ValueError(f"the DDIM grid must be strictly increasing within [0, {T - 1}], got {ts}")
    return ts


class DDIMStep(NamedTuple):
    """One step of a walk over a grid: the UNet is called at timestep ``t`` and the latent goes from
    ``a_t`` (alpha_bar at t) to ``a_next`` (alpha_bar at the next grid point ``t_next``). ``i`` counts
    the steps of the walk from 0."""

    i: int
    t: int
    t_next: int
    a_t: float
    a_next: float


def ddim_walk(timesteps: Sequence[int], schedule: Optional[DDIMSchedule] = None, *, invert: bool = False
              ) -> List[DDIMStep]:
    """The steps of a walk over the ascending grid ``timesteps = [t_0, ..., t_n]``: generation (``invert=False``)
    goes t_n -> t_{n-1} -> ... -> t_0, inversion t_0 -> ... -> t_n; n steps either way.

    The one convention for the clean end: a grid whose first point is ``t_0 = 0`` means the clean image there
    (``a = 1``), so generation ends at x0 and inversion starts from it.
    """
    schedule = schedule or DDIMSchedule()
    ts = _check_grid(timesteps, schedule.T)
    a = [1.0 if (k == 0 and t == 0) else schedule.alpha_bar(t) for k, t in enumerate(ts)]
    n = len(ts) - 1
    if invert:
        return [DDIMStep(i, ts[i], ts[i + 1], a[i], a[i + 1]) for i in range(n)]
    return [DDIMStep(i, ts[n - i], ts[n - i - 1], a[n - i], a[n - i - 1]) for i in range(n)]


class DDIMOut(NamedTuple):
    """What :func:`ddim_steps` yields per step: the step, the latent ``x_t`` the UNet was called on (after the
    ``shift``), the x0-prediction (clamped to [-1,1] with ``clip_x0``) and the next latent, all (B,C,H,W)."""

    step: DDIMStep
    x_t: torch.Tensor
    x0: torch.Tensor
    x_next: torch.Tensor


#: how gradients flow through a walk (:func:`ddim_steps`): through every step ("chain"), the same with gradient
#: checkpointing of every UNet call ("checkpoint": the memory of one call), through the last UNet call only
#: ("last": earlier steps run without gradient), or through each step alone ("step": the latent is detached
#: before the next step, for one optimizer update per step)
GRAD_MODES = ("chain", "checkpoint", "last", "step")
#: ``shift(x_t, step) -> x'_t``: moves the latent before the UNet call of ``step`` (the SPN term, guidance)
Shift = Callable[[torch.Tensor, DDIMStep], torch.Tensor]


def ddim_steps(model: EpsFn, x: torch.Tensor, timesteps: Sequence[int], *, invert: bool = False, cond=None,
               eta: float = 0.0, clip_x0: bool = True, schedule: Optional[DDIMSchedule] = None,
               generator: Optional[torch.Generator] = None, shift: Optional[Shift] = None, grad: str = "chain"
               ) -> Iterator[DDIMOut]:
    """The DDIM loop: every generation and inversion of the kit walks through here, one :class:`DDIMOut` per step.

    For each step of :func:`ddim_walk` (``timesteps`` ascending, ``invert`` picks the direction):

    1. ``x'_t = shift(x_t, step)`` (paper eq. 7's SPN term, or a guidance move; none: ``x'_t = x_t``);
    2. ``eps = model(x'_t, t (B,) long, cond)`` (one UNet call);
    3. ``x_next, x0 = ddim_step(x'_t, eps, a_t, a_next)`` (paper eqs. 3, 4/9; DDIM eq. 12/16).

    ``x`` (B,C,H,W) is the latent at the walk's start (x0 in [-1,1] for an inversion from ``t_0 = 0``). ``grad``
    (:data:`GRAD_MODES`) says how gradients flow; the loop is lazy, so a consumer may update the model's weights
    between two steps (``grad="step"``: the per-step fine-tuning update). ``eta > 0`` (generation only) adds
    DDIM's stochastic term drawn from ``generator``.
    """
    if grad not in GRAD_MODES:
        raise ValueError(f"unknown gradient mode {grad!r}; valid: {', '.join(GRAD_MODES)}")
    if invert and eta != 0.0:
        raise ValueError("DDIM inversion is deterministic: eta must be 0")
    walk = ddim_walk(timesteps, schedule, invert=invert)
    outer = torch.is_grad_enabled()
    for step in walk:
        with torch.set_grad_enabled(outer and (grad != "last" or step.i == len(walk) - 1)):
            x_t = shift(x, step) if shift is not None else x
            tv = _tvec(step.t, x_t)
            if grad == "checkpoint" and torch.is_grad_enabled():
                eps = torch.utils.checkpoint.checkpoint(model, x_t, tv, cond, use_reentrant=False)
            else:
                eps = model(x_t, tv, cond)
            x_next, x0 = ddim_step(x_t, eps, step.a_t, step.a_next, clip_x0=clip_x0, eta=eta, generator=generator)
        yield DDIMOut(step, x_t, x0, x_next)
        x = x_next.detach() if grad == "step" else x_next


def ddim_run(steps: Iterable[DDIMOut], callback: Optional[Callback] = None) -> torch.Tensor:
    """Run a walk of :func:`ddim_steps` to its end; returns the last latent. ``callback(i, t, x_t, x0_pred)`` sees
    every step (:data:`Callback`)."""
    x = None
    for out in steps:
        if callback is not None:
            callback(out.step.i, out.step.t, out.x_t, out.x0)
        x = out.x_next
    return x


def ddim_sample(model: EpsFn, x: torch.Tensor, timesteps: Sequence[int], *, cond=None, eta: float = 0.0,
                clip_x0: bool = True, callback: Optional[Callback] = None,
                schedule: Optional[DDIMSchedule] = None, generator: Optional[torch.Generator] = None,
                shift: Optional[Shift] = None, grad: str = "chain") -> torch.Tensor:
    """Generate (paper eq. 4/9): walk the ascending grid ``timesteps`` = ``[t_0, ..., t_n]``
    downwards from ``x`` = x_{t_n} (B,C,H,W) to x_{t_0}, making exactly n UNet calls
    ``model(x_t, t (B,) long, cond)`` at t_n, ..., t_1 (:func:`ddim_steps`).

    With the standard grid (``t_0 = 0``, :func:`ddim_timesteps`) the last step goes to ``a = 1``
    and the result is x0 in [-1,1]; a grid starting at ``t_0 > 0`` stops at x_{t_0}.
    ``eta`` > 0 adds DDIM's stochastic term (``generator`` for reproducible noise).
    ``callback(i, t, x_t, x0_pred)`` sees every step (the latent the UNet was called on).
    ``shift`` and ``grad`` as in :func:`ddim_steps`.
    """
    return ddim_run(ddim_steps(model, x, timesteps, cond=cond, eta=eta, clip_x0=clip_x0, schedule=schedule,
                               generator=generator, shift=shift, grad=grad), callback)


def ddim_invert(model: EpsFn, x: torch.Tensor, timesteps: Sequence[int], *, cond=None, eta: float = 0.0,
                clip_x0: bool = True, callback: Optional[Callback] = None,
                schedule: Optional[DDIMSchedule] = None) -> torch.Tensor:
    """Invert (DiffAE's deterministic "stochastic encoding"): from ``x`` = x_{t_0} (B,C,H,W) (the
    clean image in [-1,1] when ``t_0 = 0``) walk the ascending grid up to x_{t_n}, epsilon evaluated
    at the current t, exactly n UNet calls at t_0, ..., t_{n-1} (:func:`ddim_steps`).

    ``x_{t_{i+1}} = sqrt(a_{t_{i+1}}) f(x_{t_i}) + sqrt(1 - a_{t_{i+1}}) eps(x_{t_i}, t_i, cond)``;
    at ``t_0 = 0`` the image itself is the x0-prediction (a = 1), so that :func:`ddim_sample` over
    the same grid is its exact mirror. ``eta`` must be 0. ``callback(i, t, x_t, x0_pred)`` as in
    :func:`ddim_sample`.
    """
    return ddim_run(ddim_steps(model, x, timesteps, invert=True, cond=cond, eta=eta, clip_x0=clip_x0,
                               schedule=schedule), callback)


# --------------------------------------------------------------------------- DiffAE's vocabulary, any eps model
def with_coarse(model: EpsFn, z_coarse: Optional[torch.Tensor] = None) -> EpsFn:
    """``eps(x_t, t, z)`` of a DiffAE-style ``model(x_t, t, z, z_coarse=None)``; ``z_coarse`` (1 or B, z_dim) =
    OSASIS's "mix" mode (another code on the coarse decoder levels)."""
    if z_coarse is None:
        return model
    return lambda x, t, z: model(x, t, z, z_coarse=z_coarse.expand(x.shape[0], -1))


def encode_stochastic(model: EpsFn, x: torch.Tensor, z: torch.Tensor, t0: float, steps: int,
                      schedule: Optional[DDIMSchedule] = None, *, callback: Optional[Callback] = None,
                      z_coarse: Optional[torch.Tensor] = None) -> torch.Tensor:
    """DiffAE's deterministic encoding with any eps model ``model(x_t, t, z, z_coarse=None)``: DDIM-invert x
    (B,3,S,S) in [-1,1] conditioned on z (B,z_dim) over ``ddim_timesteps(t0, steps, T)`` to x_{t0} (B,3,S,S)."""
    schedule = schedule or DDIMSchedule()
    return ddim_invert(with_coarse(model, z_coarse), x, ddim_timesteps(t0, steps, schedule.T), cond=z,
                       callback=callback, schedule=schedule)


def render(model: EpsFn, x_t0: torch.Tensor, z: torch.Tensor, t0: float, steps: int,
           schedule: Optional[DDIMSchedule] = None, *, callback: Optional[Callback] = None, eta: float = 0.0,
           generator: Optional[torch.Generator] = None, z_coarse: Optional[torch.Tensor] = None,
           shift: Optional[Shift] = None, grad: str = "chain") -> torch.Tensor:
    """DDIM generation (paper eq. 4/9) with any eps model ``model(x_t, t, z, z_coarse=None)`` from x_{t0}
    (B,3,S,S) conditioned on z (B,z_dim) over the grid of :func:`encode_stochastic`; returns x0 (B,3,S,S) in
    [-1,1]. ``shift`` (the SPN term, :func:`stylseg.stylize.spn.spn_shift_fn`) and ``grad`` as in
    :func:`ddim_steps`."""
    schedule = schedule or DDIMSchedule()
    return ddim_sample(with_coarse(model, z_coarse), x_t0, ddim_timesteps(t0, steps, schedule.T), cond=z, eta=eta,
                       callback=callback, schedule=schedule, generator=generator, shift=shift, grad=grad)
