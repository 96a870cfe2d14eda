"""DiffAE: shapes, DiffAE conditioning, zero-initialisation, the encode/invert/render API, model folders."""

import json

import pytest
import torch
import torch.nn.functional as F

from stylseg.config import DDIMConfig, DiffAEConfig, get_profile
from stylseg.diffusion import DiffAE, ddim_sample, ddim_timesteps
from stylseg.diffusion.nets import CondResBlock
from stylseg.utils import StylsegError, save_model_folder

TINY = DiffAEConfig(image_size=16, base_channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,),
                    enc_channel_mult=(1, 2), z_dim=8)


def tiny(seed=0, randomize_output=True):
    torch.manual_seed(seed)
    m = DiffAE.from_config(TINY, DDIMConfig()).eval()
    if randomize_output:  # leave the zero-initialised state so that outputs depend on the inputs
        with torch.no_grad():
            for name, p in m.named_parameters():
                if p.abs().sum() == 0 and p.ndim > 1:
                    p.normal_(0, 0.05)
    return m


def test_shapes_and_zero_initialised_output():
    torch.manual_seed(0)
    m = DiffAE.from_config(TINY, DDIMConfig())
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    z = m.encode(x)
    assert z.shape == (3, 8)
    with torch.no_grad():
        eps = m(torch.randn_like(x), torch.tensor([0, 500, 999]), z)
    assert eps.shape == x.shape
    assert float(eps.abs().max()) == 0.0  # zero-initialised output convolution
    # every conditioned block's second conv and every attention output projection start at zero
    zero = [n for n, p in m.named_parameters() if ("conv2" in n or "to_out" in n or "conv_out" in n)]
    assert zero and all(float(dict(m.named_parameters())[n].abs().max()) == 0 for n in zero)
    assert m.config["image_size"] == 16 and m.schedule.T == 1000
    assert m.num_parameters()["total"] == sum(p.numel() for p in m.parameters())


def test_conditioning_matches_diffae_formula():
    """h = GN(h); h = h*(1+s_t)+b_t; h = h*(1+s_z), then SiLU, conv; plus the skip."""
    torch.manual_seed(1)
    blk = CondResBlock(8, 16, temb_dim=12, z_dim=5).eval()
    with torch.no_grad():
        blk.conv2.weight.normal_(0, 0.1)
    x, temb, z = torch.randn(2, 8, 6, 6), torch.randn(2, 12), torch.randn(2, 5)
    h = blk.conv1(F.silu(blk.norm1(x)))
    h = F.group_norm(h, blk.norm2.num_groups, blk.norm2.weight, blk.norm2.bias, blk.norm2.eps)
    st = blk.time_mlp[1](F.silu(temb))
    s_t, b_t = st[:, :16, None, None], st[:, 16:, None, None]
    s_z = blk.z_mlp[1](F.silu(z))[:, :, None, None]
    h = h * (1 + s_t) + b_t
    h = h * (1 + s_z)
    ref = blk.skip(x) + blk.conv2(F.silu(h))
    torch.testing.assert_close(blk(x, temb, z), ref)


def test_outputs_depend_on_t_and_z_and_mix_mode():
    m = tiny()
    x = torch.randn(2, 3, 16, 16)
    z = torch.randn(2, 8)
    t = torch.tensor([100, 100])
    e = m(x, t, z)
    assert (e - m(x, t, z + 1)).abs().max() > 1e-4
    assert (e - m(x, torch.tensor([700, 700]), z)).abs().max() > 1e-4
    torch.testing.assert_close(m(x, t, z, z_coarse=z), e)  # mix with the same code = no mix
    mixed = m(x, t, z, z_coarse=z + 1)
    assert (mixed - e).abs().max() > 1e-5 and (mixed - m(x, t, z + 1)).abs().max() > 1e-5


def test_encode_stochastic_render_use_the_grid():
    m = tiny()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    z = m.encode(x)
    inv, gen = [], []
    with torch.no_grad():
        xt = m.encode_stochastic(x, z, 0.25, 5, callback=lambda i, t, xt, x0: inv.append(t))
        x0 = m.render(xt, z, 0.25, 5, callback=lambda i, t, xt, x0: gen.append(t))
    grid = ddim_timesteps(0.25, 5)
    assert inv == grid[:-1] and gen == grid[::-1][:-1]
    assert x0.shape == x.shape and x0.abs().max() <= 1
    # render is ddim_sample over the same grid with cond = z
    with torch.no_grad():
        torch.testing.assert_close(ddim_sample(m, xt, grid, cond=z, schedule=m.schedule), x0)


def test_untrained_model_round_trip_is_perfect_and_therefore_no_quality_gate():
    torch.manual_seed(0)
    m = DiffAE.from_config(TINY, DDIMConfig()).eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(m.reconstruct(x, 0.5, 10), x, atol=1e-5, rtol=1e-5)


def test_wrong_input_size_names_the_fix():
    m = tiny()
    with pytest.raises(StylsegError, match="image_size=16"):
        m.encode(torch.zeros(1, 3, 32, 32))


def test_save_load_round_trip(tmp_path):
    m = tiny()
    m.fit_latent_gaussian(torch.randn(20, 8) * 2 + 1)
    m.save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["kind"] == "diffae" and meta["config"]["channel_mult"] == [1, 2]
    m2 = DiffAE.from_pretrained(tmp_path / "m")
    x, t, z = torch.randn(2, 3, 16, 16), torch.tensor([3, 600]), torch.randn(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(m2(x, t, z), m(x, t, z))
        torch.testing.assert_close(m2.encode(x), m.encode(x))
    torch.testing.assert_close(m2.z_mean, m.z_mean)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    torch.testing.assert_close(m2.sample_z(4, g1), m.sample_z(4, g2))


def test_latent_gaussian_matches_codes():
    m = tiny()
    z = torch.randn(400, 8) * torch.linspace(0.5, 2, 8) + 3
    m.fit_latent_gaussian(z, shrink=0.0)
    s = m.sample_z(4000, torch.Generator().manual_seed(1))
    torch.testing.assert_close(s.mean(0), z.mean(0), atol=0.15, rtol=0)
    torch.testing.assert_close(s.std(0), z.std(0), atol=0.15, rtol=0.1)


def test_wrong_kind_and_wrong_architecture_errors_name_the_file(tmp_path):
    save_model_folder(tmp_path / "seg", "segmenter", {"arch": "unet"}, {"w": torch.zeros(2)})
    with pytest.raises(StylsegError, match=r"config\.json.*'segmenter'"):
        DiffAE.from_pretrained(tmp_path / "seg")
    save_model_folder(tmp_path / "other", "diffae", {"arch": "something else"}, {"w": torch.zeros(2)})
    with pytest.raises(StylsegError, match=r"other/config\.json"):
        DiffAE.from_pretrained(tmp_path / "other")
    m = tiny()
    cfg = dict(m.config, base_channels=8)
    save_model_folder(tmp_path / "mismatch", "diffae", cfg, m.state_dict())
    with pytest.raises(StylsegError, match=r"model\.safetensors"):
        DiffAE.from_pretrained(tmp_path / "mismatch")
    with pytest.raises(StylsegError, match="not found"):
        DiffAE.from_pretrained(tmp_path / "missing")


def test_profiles_build_with_expected_sizes():
    counts = {}
    for prof in ("smoke", "workshop", "cpu"):
        cfg = get_profile(prof)
        counts[prof] = DiffAE.from_config(cfg.diffae, cfg.ddim).num_parameters()["total"]
    assert 0.7e6 < counts["smoke"] < 2e6
    assert 0.7e6 < counts["workshop"] < 3e6
    assert 2e6 < counts["cpu"] < 6e6


@pytest.mark.slow
def test_paper_profile_builds_and_trains_one_step_on_cpu():
    """DiffAE-256 (base 128, mult 1,1,2,2,4,4, 2 res blocks, attention at 16 px, z 512): one step at batch 1."""
    from stylseg.diffusion.train import _LossModule

    cfg = get_profile("paper")
    torch.manual_seed(0)
    m = DiffAE.from_config(cfg.diffae, cfg.ddim)
    n = m.num_parameters()
    print(f"paper-profile DiffAE parameters: {n}")
    assert 100e6 < n["total"] < 160e6
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    loss = _LossModule(m)(x, torch.tensor([500]), torch.randn_like(x))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and float(loss) == pytest.approx(1.0, abs=0.1)  # zero-init output: MSE = E[eps^2]


# ------------------------------------------------------------------ options: v-prediction, flatten pooling
def test_v_prediction_is_converted_to_eps_exactly():
    """prediction="v": the UNet's raw output r is v, and the module returns eps = sqrt(a) r + sqrt(1-a) x_t."""
    from dataclasses import replace

    torch.manual_seed(0)
    m = DiffAE.from_config(replace(TINY, prediction="v"), DDIMConfig()).eval()
    x0, eps = torch.rand(3, 3, 16, 16) * 2 - 1, torch.randn(3, 3, 16, 16)
    t = torch.tensor([5, 400, 990])
    xt = m.schedule.add_noise(x0, eps, t)
    z = m.encode(x0)
    a = m.schedule.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    with torch.no_grad():
        untrained = m(xt, t, z)  # zero-initialised: v = 0
        torch.testing.assert_close(untrained, (1 - a).sqrt() * xt)
        # make the raw output exactly the true v: then the returned eps is the true eps
        v_true = a.sqrt() * eps - (1 - a).sqrt() * x0
        m.unet.conv_out.register_forward_hook(lambda mod, inp, out: v_true)
        torch.testing.assert_close(m(xt, t, z), eps, atol=1e-5, rtol=1e-5)
    assert "sqrt_a" not in m.state_dict()  # derived from the schedule, not stored


def test_v_loss_weighting_is_the_v_mse():
    from stylseg.diffusion.train import _LossModule

    torch.manual_seed(0)
    m = tiny()
    x0, noise, t = torch.rand(4, 3, 16, 16) * 2 - 1, torch.randn(4, 3, 16, 16), torch.tensor([10, 300, 700, 999])
    with torch.no_grad():
        z = m.encoder(x0)
        xt = m.schedule.add_noise(x0, noise, t)
        e = m.unet(xt, t, z)
        a = m.schedule.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        x0_hat = (xt - (1 - a).sqrt() * e) / a.sqrt()
        v_hat, v = a.sqrt() * e - (1 - a).sqrt() * x0_hat, a.sqrt() * noise - (1 - a).sqrt() * x0
        ref = ((v_hat - v) ** 2).flatten(1).mean(1).mean()
        torch.testing.assert_close(_LossModule(m, "v")(x0, t, noise), ref, rtol=1e-4, atol=1e-6)
        plain = ((e - noise) ** 2).flatten(1).mean(1).mean()
        torch.testing.assert_close(_LossModule(m, "eps")(x0, t, noise), plain)
        snr = (a / (1 - a)).flatten()
        capped = ((1 / snr).clamp(1, 5) * ((e - noise) ** 2).flatten(1).mean(1)).mean()
        torch.testing.assert_close(_LossModule(m, "x0_capped", 5.0)(x0, t, noise), capped, rtol=1e-5, atol=1e-7)
    with pytest.raises(StylsegError, match="loss_weighting='nope'.*eps, v"):
        _LossModule(m, "nope")


def test_flatten_pool_keeps_where_things_are():
    """enc_pool="flatten" maps the whole last feature map to z_sem: its size follows the levels, and
    moving a blob moves z; unknown option values are refused with the valid ones."""
    from dataclasses import replace

    torch.manual_seed(0)
    m = DiffAE.from_config(replace(TINY, enc_pool="flatten"), DDIMConfig()).eval()
    lin = m.encoder.proj
    assert lin.in_features == 32 * 8 * 8  # 2 levels: 16 -> 8 px, 32 channels, flattened
    x = -torch.ones(2, 3, 16, 16)
    x[0, :, 2:6, 2:6] = 1
    x[1, :, 10:14, 10:14] = 1
    with torch.no_grad():
        z = m.encode(x)
    assert z.shape == (2, 8) and (z[0] - z[1]).abs().max() > 1e-3
    with pytest.raises(StylsegError, match="enc_pool='max'.*mean, flatten"):
        DiffAE.from_config(replace(TINY, enc_pool="max"), DDIMConfig())
    with pytest.raises(StylsegError, match="prediction='x0'.*eps, v"):
        DiffAE.from_config(replace(TINY, prediction="x0"), DDIMConfig())


def test_model_folders_of_an_earlier_kit_are_refused_naming_the_fix(tmp_path):
    """Folders written before enc_pool / prediction existed are not migrated: one message says to train again."""
    m = tiny()
    cfg = {k: v for k, v in m.config.items() if k not in ("enc_pool", "prediction")}
    save_model_folder(tmp_path / "old", "diffae", cfg, m.state_dict())
    with pytest.raises(StylsegError, match=r"lacks enc_pool, prediction: .*earlier stylseg.*train D_A again"):
        DiffAE.from_pretrained(tmp_path / "old")


def test_v_model_save_load_round_trip(tmp_path):
    from dataclasses import replace

    torch.manual_seed(3)
    m = DiffAE.from_config(replace(TINY, prediction="v", enc_pool="flatten"), DDIMConfig()).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim > 1 and p.abs().sum() == 0:
                p.normal_(0, 0.05)
    m.save_pretrained(tmp_path / "v")
    m2 = DiffAE.from_pretrained(tmp_path / "v")
    x, t, z = torch.randn(2, 3, 16, 16), torch.tensor([3, 900]), torch.randn(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(m2(x, t, z), m(x, t, z))
        torch.testing.assert_close(m2.encode(x), m.encode(x))


def test_code_reconstruction_measures_what_the_code_adds():
    """An untrained (zero-output) model ignores z_sem: own code and mean code render the same fresh noise alike
    (gain 0). A model whose UNet reads the code renders differently with the mean code; with z_mean set to the
    images' own (identical) code the two renders agree again."""
    from stylseg.diffusion.quality import code_reconstruction

    x = torch.rand(3, 3, 16, 16) * 2 - 1
    zero = DiffAE.from_config(TINY, DDIMConfig()).eval()
    res = code_reconstruction(zero, x, torch.full((8,), 5.0), t0s=(0.5, 1.0), steps=3)
    assert set(res) == {0.5, 1.0}
    for r in res.values():
        assert r["gain"] == 0.0 and r["own"] == r["mean_code"]
        assert r["renders"]["own"].shape == x.shape
    m = tiny()
    far = code_reconstruction(m, x, torch.full((8,), 50.0), t0s=(0.75,), steps=3)[0.75]
    assert not torch.equal(far["renders"]["own"], far["renders"]["mean_code"])
    same = x[:1].expand(3, -1, -1, -1).contiguous()
    with torch.no_grad():
        z = m.encode(same)[0]
    r = code_reconstruction(m, same, z, t0s=(0.75,), steps=3)[0.75]
    torch.testing.assert_close(r["renders"]["own"], r["renders"]["mean_code"])
    assert abs(r["gain"]) < 1e-6
