"""The SPN (docs/method.md sections 4, 7) and the chain that adds it before every D_B step."""

import pytest
import torch

from stylseg.diffusion.ddim import DDIMSchedule, ddim_sample, ddim_timesteps, render
from stylseg.stylize.spn import SPN, pass_through_spn, spn_shift, spn_shift_fn, timestep_embedding
from stylseg.utils import StylsegError


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("form", ["paper", "osasis"])
def test_zero_initialised_adds_nothing(form):
    spn = SPN(form, hidden=16)
    x_in, x_t = torch.rand(2, 3, 8, 8) * 2 - 1, torch.randn(2, 3, 8, 8)
    t = torch.tensor([10, 500])
    assert torch.equal(spn(x_in, t), torch.zeros_like(x_in))
    assert torch.equal(spn_shift(x_t, x_in, t, spn, 0.1), x_t)


@pytest.mark.parametrize("form", ["paper", "osasis"])
def test_per_pixel_function(form):
    """Every layer is a 1x1 conv: permuting the input's pixels permutes the output's."""
    torch.manual_seed(0)
    spn = SPN(form, hidden=16)
    torch.nn.init.normal_(spn.conv_out.weight, std=0.1)
    x = torch.rand(1, 3, 6, 6) * 2 - 1
    perm = torch.randperm(36)
    xp = x.flatten(2)[:, :, perm].view(1, 3, 6, 6)
    t = torch.tensor([250])
    assert torch.allclose(spn(xp, t).flatten(2), spn(x, t).flatten(2)[:, :, perm], atol=1e-6)


def test_time_input_only_in_osasis_form():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 4, 4) * 2 - 1
    for form, differs in (("paper", False), ("osasis", True)):
        spn = SPN(form, hidden=16)
        torch.nn.init.normal_(spn.conv_out.weight, std=0.1)
        a, b = spn(x, torch.tensor([10])), spn(x, torch.tensor([600]))
        assert (not torch.allclose(a, b)) == differs, form
    assert SPN("osasis").uses_time and not SPN("paper").uses_time


def test_timestep_embedding_is_of_the_real_timestep():
    e = timestep_embedding(torch.tensor([0, 499]), 8)
    assert torch.allclose(e[0], torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0]))
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(4) / 4)
    assert torch.allclose(e[1, :4], torch.cos(499 * freqs), atol=1e-5)


def test_unknown_form_lists_valid():
    with pytest.raises(StylsegError, match="paper, osasis"):
        SPN("mlp")


class _Lin(torch.nn.Module):
    """A tiny eps model: eps = 0.3 x_t + 0.01 t (stand-in UNet, conditioning ignored)."""

    def forward(self, x, t, z):
        return 0.3 * x + 0.01 * t.view(-1, 1, 1, 1).float() / 100


def generate(model, x, z, t0, steps, sched, *, spn=None, x_in=None, lam=0.0, spn_gate=None, grad="chain",
             callback=None, constant=True):
    """The stylization chain's D_B rendering: the SPN term as the shift of the one DDIM loop."""
    return render(model, x, z, t0, steps, sched, callback=callback, grad=grad,
                  shift=spn_shift_fn(spn, x_in, lam, spn_gate, constant=constant))


def test_generate_without_spn_matches_ddim_sample():
    sched = DDIMSchedule()
    x = torch.randn(2, 3, 4, 4)
    ref = ddim_sample(_Lin(), x, ddim_timesteps(0.25, 4), cond=None, schedule=sched)
    out = generate(_Lin(), x, None, 0.25, 4, sched)
    assert torch.allclose(out, ref, atol=1e-6)


def test_generate_adds_lambda_spn_before_each_step():
    """One step by hand: x' = x + lam SPN(x_in); x0 = clamp((x' - sqrt(1-a) eps(x'))/sqrt(a));
    eps re-derived from the clamped x0; x_next = sqrt(a') x0 + sqrt(1-a') eps (eq. 7-9)."""
    torch.manual_seed(0)
    sched = DDIMSchedule()
    spn = SPN("paper", hidden=8)
    torch.nn.init.normal_(spn.conv_out.weight, std=0.5)
    x, x_in, lam = torch.randn(1, 3, 4, 4), torch.rand(1, 3, 4, 4) * 2 - 1, 0.2
    seen = []
    out = generate(_Lin(), x, None, 0.1, 2, sched, spn=spn, x_in=x_in, lam=lam,
                   callback=lambda i, t, xn, x0: seen.append(t))
    grid = ddim_timesteps(0.1, 2)
    assert seen == [grid[2], grid[1]]
    xx = x
    for t, an in ((grid[2], sched.alpha_bar(grid[1])), (grid[1], 1.0)):  # the last step goes to the clean image
        tv = torch.tensor([t])
        with torch.no_grad():
            xs = xx + lam * spn(x_in, tv)
        a = sched.alpha_bar(t)
        eps = _Lin()(xs, tv, None)
        x0 = ((xs - (1 - a) ** 0.5 * eps) / a ** 0.5).clamp(-1, 1)
        eps = (xs - a ** 0.5 * x0) / (1 - a) ** 0.5
        xx = an ** 0.5 * x0 + (1 - an) ** 0.5 * eps
    assert torch.allclose(out.detach(), xx.detach(), atol=1e-5)


def test_structure_guidance_pulls_toward_reference_structure():
    from stylseg.stylize.losses import structure_map
    from stylseg.stylize.spn import structure_guided_generate

    torch.manual_seed(0)
    sched = DDIMSchedule()
    x_ref = torch.rand(1, 3, 16, 16) * 2 - 1
    x_t = torch.randn(1, 3, 16, 16) * 0.3
    plain = structure_guided_generate(_Lin(), x_t, None, 0.3, 3, sched, x_ref, weight=0.0)
    assert torch.allclose(plain, generate(_Lin(), x_t, None, 0.3, 3, sched), atol=1e-6)
    guided = structure_guided_generate(_Lin(), x_t, None, 0.3, 3, sched, x_ref, weight=0.5)
    err = lambda y: ((structure_map(y) - structure_map(x_ref)) ** 2).mean().item()
    assert err(guided) < err(plain)


@pytest.mark.parametrize("form,calls", [("paper", 1), ("osasis", 3)])
def test_generate_computes_a_time_free_spn_term_once(form, calls):
    """The paper-form SPN has no time input, so its term is computed once per chain (applying is faster by
    the SPN's cost times the step count); the osasis form is called before every step. Gradients reach the
    SPN's weights either way."""
    torch.manual_seed(0)
    spn = SPN(form, hidden=8)
    torch.nn.init.normal_(spn.conv_out.weight, std=0.5)
    n = []
    spn.register_forward_hook(lambda *a: n.append(1))
    x, x_in = torch.randn(2, 3, 4, 4), torch.rand(2, 3, 4, 4) * 2 - 1
    out = generate(_Lin(), x, None, 0.1, 3, DDIMSchedule(), spn=spn, x_in=x_in, lam=0.3, grad="checkpoint")
    assert len(n) == calls
    out.sum().backward()
    assert spn.conv_out.weight.grad is not None and spn.conv_out.weight.grad.abs().sum() > 0
    # the per-step update changes the SPN between steps, so there the term is computed before every step, with
    # the same values while the weights stay
    n.clear()
    per_step = generate(_Lin(), x, None, 0.1, 3, DDIMSchedule(), spn=spn, x_in=x_in, lam=0.3, constant=False)
    assert len(n) == 3 and torch.allclose(per_step, out, atol=1e-6)


@pytest.mark.parametrize("form", ["paper", "osasis"])
def test_gated_spn_term_enters_only_where_the_gate_is_on(form):
    """stylize.structure_region=lesion: the SPN term is multiplied by the gate, so the latent moves inside it as without a
    gate and not at all outside; a gate of ones is the plain chain, a gate of zeros the chain without the SPN."""
    torch.manual_seed(0)
    spn = SPN(form, hidden=8)
    torch.nn.init.normal_(spn.conv_out.weight, std=0.5)
    x_t, x_in, t = torch.randn(2, 3, 6, 6), torch.rand(2, 3, 6, 6) * 2 - 1, torch.tensor([300, 300])
    gate = torch.zeros(2, 1, 6, 6)
    gate[..., 1:3, 2:5] = 1
    plain, gated = spn_shift(x_t, x_in, t, spn, 0.3), spn_shift(x_t, x_in, t, spn, 0.3, gate)
    on = gate.expand_as(x_t).bool()
    assert torch.equal(gated[~on], x_t[~on]) and torch.allclose(gated[on], plain[on])
    assert not torch.allclose(plain[on], x_t[on])
    sched, x = DDIMSchedule(), torch.randn(2, 3, 6, 6)
    run = lambda **kw: generate(_Lin(), x, None, 0.2, 3, sched, x_in=x_in, lam=0.3, **kw)
    assert torch.allclose(run(spn=spn, spn_gate=torch.ones(2, 1, 6, 6)), run(spn=spn), atol=1e-6)
    assert torch.allclose(run(spn=spn, spn_gate=torch.zeros(2, 1, 6, 6)), run(spn=None), atol=1e-6)
    assert not torch.allclose(run(spn=spn, spn_gate=gate), run(spn=spn), atol=1e-4)


def test_spn_gate_is_the_dilated_lesion_and_needs_masks():
    from stylseg.stylize.losses import lesion_weight
    from stylseg.stylize.spn import spn_gate

    m = torch.zeros(2, 1, 32, 32)
    m[0, :, 10:14, 12:18] = 1  # the second image has no lesion: its gate is all ones (its whole structure is kept)
    assert spn_gate(m, "image") is None
    g = spn_gate(m, "lesion")
    assert torch.equal(g, lesion_weight(m)) and bool((g[1] == 1).all())
    assert g[0].sum() > m[0].sum() and bool((g[0][m[0] > 0] == 1).all()) and g[0, 0, 0, 0] == 0
    thin = spn_gate(m, "lesion", 1 / 16)  # a thinner ring, still the whole lesion
    assert torch.equal(thin, lesion_weight(m, 1 / 16)) and bool((thin[0][m[0] > 0] == 1).all())
    assert m[0].sum() < thin[0].sum() < g[0].sum() and bool((thin[1] == 1).all())
    with pytest.raises(StylsegError, match="structure_region=lesion.*masks"):
        spn_gate(None, "lesion")
    with pytest.raises(StylsegError, match="unknown SPN region 'ring'"):
        spn_gate(m, "ring")


def test_pass_through_spn_returns_its_input_at_every_t():
    """Notebook 03's stand-in SPN: a paper-form SPN set by hand to ``SPN(x, t) = x``, so ``lambda * SPN`` is a pull
    toward the clean input; far outside [-1, 1] too (silu(u) - silu(-u) = u holds for every u)."""
    spn = pass_through_spn(8)
    assert spn.form == "paper" and spn.hidden == 8
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0)) * 4
    with torch.no_grad():
        for t in (None, torch.tensor([0, 999])):
            assert torch.allclose(spn(x, t), x, atol=1e-5)
    with pytest.raises(ValueError, match="hidden >= 6"):
        pass_through_spn(5)
