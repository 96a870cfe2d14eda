"""DDIM against diffusers' DDIMScheduler, grid rules, callbacks, inversion/sampling round trips."""

import math

import pytest
import torch

from stylseg.diffusion import DDIMSchedule, ddim_invert, ddim_sample, ddim_step, ddim_timesteps, predict_x0
from stylseg.diffusion.toy import GaussianEps


def _scheduler(clip: bool):
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                         clip_sample=clip, set_alpha_to_one=True, steps_offset=0, prediction_type="epsilon",
                         timestep_spacing="leading")


def _eps_fn(x, t, cond=None):
    """A fixed, x- and t-dependent stand-in for a UNet (large enough that clamping matters)."""
    tt = t.float().view(-1, 1, 1, 1) / 1000.0
    return torch.tanh(1.7 * x + 0.3) * (0.5 + tt) + 0.2 * torch.sin(3 * x)


def test_alphas_cumprod_match_diffusers():
    sch = DDIMSchedule()
    ref = _scheduler(False).alphas_cumprod.double()
    assert sch.alphas_cumprod.shape == (1000,)
    torch.testing.assert_close(sch.alphas_cumprod, ref, atol=2e-6, rtol=1e-5)
    # hand values: a_0 = 1 - 1e-4, a_1 = (1 - 1e-4)(1 - beta_1)
    b1 = 1e-4 + (0.02 - 1e-4) / 999
    assert sch.alpha_bar(0) == pytest.approx(1 - 1e-4, abs=1e-12)
    assert sch.alpha_bar(1) == pytest.approx((1 - 1e-4) * (1 - b1), abs=1e-12)
    with pytest.raises(ValueError, match="outside"):  # the clean end is a grid's t_0 = 0 (ddim_walk), no timestep
        sch.alpha_bar(-1)


def test_add_noise_matches_diffusers():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1, torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    ours = DDIMSchedule().add_noise(x0, noise, t)
    ref = _scheduler(False).add_noise(x0, noise, t)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_generation_steps_match_diffusers(clip, eta):
    """Every step of a 10-step generation (t = 900..0, last to a = 1): x0-prediction and x_prev."""
    sch, ours = _scheduler(clip), DDIMSchedule()
    sch.set_timesteps(10)
    assert sch.timesteps.tolist() == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 8, 8, generator=g)
    x_ref = x.clone()
    for t in sch.timesteps.tolist():
        eps = _eps_fn(x_ref, torch.full((2,), t))
        noise = torch.randn(x.shape, generator=g)
        out = sch.step(eps, t, x_ref, eta=eta, use_clipped_model_output=clip,
                       variance_noise=noise if eta > 0 else None)
        a_t, a_prev = ours.alpha_bar(t), (ours.alpha_bar(t - 100) if t >= 100 else 1.0)  # diffusers: set_alpha_to_one
        x_new, x0 = ddim_step(x_ref, eps, a_t, a_prev, clip_x0=clip, eta=eta, noise=noise)
        torch.testing.assert_close(x0, out.pred_original_sample, atol=2e-4, rtol=1e-4)
        torch.testing.assert_close(x_new, out.prev_sample, atol=2e-4, rtol=1e-4)
        x_ref = out.prev_sample
    if clip:
        assert x_ref.abs().max() <= 1.0 + 1e-5


def test_clipped_steps_differ_from_unclipped_diffusers_default():
    """Clamping x0 re-derives eps (DiffAE), which is diffusers' use_clipped_model_output=True, not its default."""
    sch = _scheduler(True)
    sch.set_timesteps(10)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 3
    eps = _eps_fn(x, torch.full((2,), 500))
    plain = sch.step(eps, 500, x).prev_sample
    ours, _ = ddim_step(x, eps, DDIMSchedule().alpha_bar(500), DDIMSchedule().alpha_bar(400), clip_x0=True)
    assert (ours - plain).abs().max() > 1e-2


def test_sample_loop_matches_diffusers_loop():
    """ddim_sample over [100, 200, ..., 900] equals diffusers' loop 900 -> 100 (8 calls)."""
    sch = _scheduler(True)
    sch.set_timesteps(10)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    ref = x.clone()
    for t in [900, 800, 700, 600, 500, 400, 300, 200]:
        ref = sch.step(_eps_fn(ref, torch.full((2,), t)), t, ref, use_clipped_model_output=True).prev_sample
    ours = ddim_sample(_eps_fn, x, list(range(100, 1000, 100)))
    torch.testing.assert_close(ours, ref, atol=2e-4, rtol=1e-4)


def test_grid_rules():
    # t_i = round(i * t0 * (T-1) / n): hand-computed
    assert ddim_timesteps(0.125, 5) == [0, 25, 50, 75, 100, 125]
    assert ddim_timesteps(1.0, 3) == [0, 333, 666, 999]
    assert ddim_timesteps(0.5, 4) == [0, 125, 250, 375, 500]  # 124.875 -> 125, 374.625 -> 375, 499.5 -> 500
    with pytest.raises(ValueError):
        ddim_timesteps(0.0, 5)
    with pytest.raises(ValueError):
        ddim_timesteps(0.01, 50)  # repeated timesteps
    with pytest.raises(ValueError):
        ddim_timesteps(0.5, 0)


def test_call_counts_and_generation_starts_where_inversion_stopped():
    grid = ddim_timesteps(0.25, 5)
    inv_ts, gen_ts = [], []

    def rec(store):
        def f(x, t, cond=None):
            store.append(int(t[0]))
            return _eps_fn(x, t)
        return f

    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(4)) * 2 - 1
    xt = ddim_invert(rec(inv_ts), x, grid)
    ddim_sample(rec(gen_ts), xt, grid)
    assert inv_ts == grid[:-1]  # n calls at t_0 .. t_{n-1}
    assert gen_ts == grid[::-1][:-1]  # n calls at t_n .. t_1: starts exactly at the last inversion time
    assert len(inv_ts) == len(gen_ts) == 5


def test_last_generation_step_goes_to_clean_image():
    """With eps = c constant, one generation step from t_1 lands on f(x_{t_1}) with a = 1."""
    c = 0.3
    sch = DDIMSchedule()
    x = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(5)) * 0.5
    out = ddim_sample(lambda x, t, cond=None: torch.full_like(x, c), x, [0, 40])
    a = sch.alpha_bar(40)
    torch.testing.assert_close(out, ((x - math.sqrt(1 - a) * c) / math.sqrt(a)).clamp(-1, 1))


def test_callback_contents():
    grid = ddim_timesteps(0.5, 4)
    seen, model_in = [], []

    def f(x, t, cond=None):
        model_in.append(x.clone())
        return _eps_fn(x, t)

    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(6)) * 2 - 1
    ddim_sample(f, x, grid, callback=lambda i, t, xt, x0: seen.append((i, t, xt.clone(), x0.clone())))
    assert [s[0] for s in seen] == [0, 1, 2, 3]
    assert [s[1] for s in seen] == [500, 375, 250, 125]
    sch = DDIMSchedule()
    for (i, t, xt, x0), xin in zip(seen, model_in):
        torch.testing.assert_close(xt, xin)  # the latent the UNet saw
        ref = predict_x0(xt, _eps_fn(xt, torch.full((2,), t)), sch.alpha_bar(t), clip_x0=True)
        torch.testing.assert_close(x0, ref)
        assert x0.abs().max() <= 1.0
    seen.clear()
    ddim_invert(_eps_fn, x, grid, callback=lambda i, t, xt, x0: seen.append((i, t, xt.clone(), x0.clone())))
    assert [s[1] for s in seen] == [0, 125, 250, 375]
    torch.testing.assert_close(seen[0][2], x)
    torch.testing.assert_close(seen[0][3], x)  # at t_0 = 0 the image is its own x0-prediction


def test_round_trip_exact_with_fixed_epsilon():
    """For a fixed eps (independent of x and t) inversion and generation are exact mirrors."""
    g = torch.Generator().manual_seed(7)
    x = torch.rand(2, 3, 8, 8, generator=g) * 1.6 - 0.8
    e = torch.randn(2, 3, 8, 8, generator=g)
    f = lambda x, t, cond=None: e  # noqa: E731
    for t0, n in [(0.125, 5), (0.5, 10), (1.0, 20)]:
        grid = ddim_timesteps(t0, n)
        back = ddim_sample(f, ddim_invert(f, x, grid, clip_x0=False), grid, clip_x0=False)
        torch.testing.assert_close(back, x, atol=1e-4, rtol=1e-4)
    # with clamping on, still exact for images in [-1, 1] (the clean image is its own x0)
    grid = ddim_timesteps(0.25, 5)
    torch.testing.assert_close(ddim_sample(f, ddim_invert(f, x, grid), grid), x, atol=1e-4, rtol=1e-4)


def test_round_trip_error_falls_with_steps_for_exact_gaussian_eps():
    """With the exact eps of Gaussian data the round-trip error is discretisation error: it falls with n."""
    g = torch.Generator().manual_seed(8)
    model = GaussianEps(mean=0.1, var=0.2)
    x = model.sample_data((4, 3, 8, 8), generator=g).clamp(-1, 1)
    errs = []
    for n in (2, 5, 20, 50):
        grid = ddim_timesteps(0.5, n)
        back = ddim_sample(model, ddim_invert(model, x, grid), grid)
        errs.append(float((back - x).abs().mean()))
    assert all(b < a for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 0.2 * errs[0]
    assert model.calls == 2 * (2 + 5 + 20 + 50)


def test_gaussian_eps_sampling_recovers_data_statistics():
    """DDIM with the exact Gaussian eps turns N(0, I) into N(mu, s^2), up to a discretisation error
    that shrinks with the number of steps (eta = 0 and eta = 1)."""
    g = torch.Generator().manual_seed(9)
    model = GaussianEps(mean=0.2, var=0.09)
    for eta in (0.0, 1.0):
        stds = []
        for n in (10, 50, 200):
            xT = torch.randn(128, 3, 8, 8, generator=g)
            x0 = ddim_sample(model, xT, ddim_timesteps(1.0, n), eta=eta, clip_x0=False, generator=g)
            assert float(x0.mean()) == pytest.approx(0.2, abs=0.02)
            stds.append(float(x0.std()))
        assert stds[0] < stds[1] < stds[2], stds
        assert stds[2] == pytest.approx(0.3, abs=0.02 if eta == 0 else 0.03)


def test_inversion_rejects_eta_and_bad_grids():
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError):
        ddim_invert(_eps_fn, x, [0, 10], eta=0.5)
    with pytest.raises(ValueError):
        ddim_sample(_eps_fn, x, [10, 5])
    with pytest.raises(ValueError):
        ddim_sample(_eps_fn, x, [0])


class _Scale(torch.nn.Module):
    """eps = w * x_t: one weight, so that gradients through a walk can be checked by hand."""

    def __init__(self, w: float = 0.4):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w))

    def forward(self, x, t, cond=None):
        return self.w * x


def test_walk_is_the_grid_both_ways_with_the_clean_end_at_t0():
    from stylseg.diffusion import ddim_walk

    sch = DDIMSchedule()
    grid = ddim_timesteps(0.25, 3)
    gen, inv = ddim_walk(grid, sch), ddim_walk(grid, sch, invert=True)
    assert [(s.t, s.t_next) for s in gen] == [(grid[3], grid[2]), (grid[2], grid[1]), (grid[1], 0)]
    assert [(s.t, s.t_next) for s in inv] == [(0, grid[1]), (grid[1], grid[2]), (grid[2], grid[3])]
    assert gen[-1].a_next == 1.0 and inv[0].a_t == 1.0  # the one convention for the clean end
    assert gen[0].a_t == sch.alpha_bar(grid[3]) and [s.i for s in gen] == [0, 1, 2]
    # a grid that does not start at 0 ends at x_{t_0} (no clean end)
    assert ddim_walk([100, 200], sch)[0].a_next == sch.alpha_bar(100)


def test_shift_moves_the_latent_the_unet_sees():
    from stylseg.diffusion import ddim_steps

    grid = ddim_timesteps(0.5, 3)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(7)) * 2 - 1
    seen = []

    def f(x, t, cond=None):
        seen.append(x.clone())
        return _eps_fn(x, t)

    outs = list(ddim_steps(f, x, grid, shift=lambda x, step: x + 0.01 * step.t))
    assert len(outs) == 3 and [o.step.t for o in outs] == grid[::-1][:-1]
    torch.testing.assert_close(outs[0].x_t, x + 0.01 * grid[3])
    for o, s in zip(outs, seen):
        torch.testing.assert_close(o.x_t, s)
    for a, b in zip(outs, outs[1:]):  # each step starts from the last one's output, shifted
        torch.testing.assert_close(b.x_t, a.x_next + 0.01 * b.step.t)


@pytest.mark.parametrize("grad", ["chain", "checkpoint", "last", "step"])
def test_gradient_modes(grad):
    """chain and checkpoint: the gradient of the result through every step, the same; last: through the last
    UNet call only; step: every step's output has the gradient of that step alone (the latent is detached
    between steps)."""
    from stylseg.diffusion import ddim_steps

    grid = ddim_timesteps(0.5, 3)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(8)) * 0.2

    def grad_w(out_fn, mode):
        m = _Scale()
        outs = list(ddim_steps(m, x, grid, grad=mode, clip_x0=False))
        out_fn(outs).sum().backward()
        return m.w.grad

    full = grad_w(lambda o: o[-1].x_next, "chain")
    if grad in ("chain", "checkpoint"):
        torch.testing.assert_close(grad_w(lambda o: o[-1].x_next, grad), full)
        return
    if grad == "last":  # the earlier steps' outputs are constants: the same as one step from the detached input
        m = _Scale()
        with torch.no_grad():
            before = list(ddim_steps(m, x, grid, clip_x0=False))[-2].x_next
        ref = list(ddim_steps(m, before, grid[:2], clip_x0=False))[-1].x_next.sum()
        ref.backward()
        got = grad_w(lambda o: o[-1].x_next, "last")
        torch.testing.assert_close(got, m.w.grad)
        assert not torch.allclose(got, full)
        return
    # step: the second step's output depends on w only through that step
    m = _Scale()
    outs = list(ddim_steps(m, x, grid, grad="step", clip_x0=False))
    assert not outs[1].x_t.requires_grad and outs[1].x_next.requires_grad


def test_steps_are_lazy_so_weights_can_change_between_them():
    """The per-step fine-tuning update: a change of the model between two steps is seen by the next UNet call."""
    from stylseg.diffusion import ddim_steps

    grid = ddim_timesteps(0.5, 2)
    x = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(9)) * 0.2
    m = _Scale(0.4)
    outs = []
    for out in ddim_steps(m, x, grid, grad="step", clip_x0=False):
        outs.append(out)
        with torch.no_grad():
            m.w.fill_(0.0)  # as an optimizer step would
    a = DDIMSchedule().alpha_bar(grid[1])
    # the second step ran with eps = 0: x_next = x_t / sqrt(a) (to the clean end, a = 1)
    torch.testing.assert_close(outs[1].x_next, outs[0].x_next.detach() / math.sqrt(a))


def test_unknown_gradient_mode_lists_valid():
    from stylseg.diffusion import ddim_steps

    with pytest.raises(ValueError, match="chain, checkpoint, last, step"):
        list(ddim_steps(_eps_fn, torch.zeros(1, 3, 4, 4), [0, 10], grad="all"))
