"""One-shot fine-tuning of D_B + SPN on a tiny random DiffAE (docs/method.md sections 3, 4, 7)."""

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from stylseg.checkpoint import load_state
from _testing import tiny_config, tiny_diffae, tiny_domains
from stylseg.stylize.embedders import SUBSTITUTE
from stylseg.stylize.perceptual import STAND_IN
from stylseg.stylize.finetune import finetune
from stylseg.stylize.style_pair import make_style_pair
from stylseg.stylize.stylizer import STYLE_XA, STYLE_Y, Stylizer, load_diffae
from stylseg.utils import StylsegError, load_model_folder


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("ft")
    cfg = tiny_config()
    return {"d": d, "cfg": cfg, "diffae": tiny_diffae(d / "diffae", cfg), **tiny_domains(d / "data")}


def test_style_pair_any_size_and_mode(env, tmp_path):
    rgba = tmp_path / "style_rgba.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 25, 4), dtype=np.uint8), "RGBA").save(rgba)
    m = load_diffae(env["diffae"])
    y, xa, err = make_style_pair(m, rgba, 0.1, 2, tries=3)
    assert y.shape == xa.shape == (1, 3, 16, 16) and err.shape == (3,)
    assert y.min() >= -1 and y.max() <= 1
    # the chosen render is the one with the smallest error (reproduce all three with the same seed)
    _, xa2, err2 = make_style_pair(m, rgba, 0.1, 2, tries=3)
    assert torch.equal(xa, xa2) and torch.equal(err, err2)


def test_style_pair_picked_by_domain_is_the_render_nearest_the_content_mean(env, tmp_path):
    """stylize.style_pair_pick=domain: x_A_style is the render whose embedding is nearest the content images' mean
    embedding. With an embedder that returns an image's mean brightness, a mean far above every render picks the
    brightest and one far below the darkest; fidelity (the default) is what it was; misuse is refused."""
    from stylseg.stylize.style_pair import content_mean_embedding

    m = load_diffae(env["diffae"])
    style = env["style"]
    bright = lambda x: x.mean(dim=(1, 2, 3))[:, None]
    picks = {}
    for target in (100.0, -100.0):
        _, xa, dist = make_style_pair(m, style, 0.5, 2, tries=6, seed=3, pick="domain", embedder=bright,
                                      content_mean=torch.tensor([target]))
        assert dist.shape == (6,) and torch.allclose(dist.min(), (bright(xa)[0, 0] - target).abs(), atol=1e-4)
        picks[target] = (xa, dist)
    (xa_hi, d_hi), (xa_lo, d_lo) = picks[100.0], picks[-100.0]
    means = 100.0 - d_hi  # every render's brightness, from the distances to +100
    assert torch.allclose(-100.0 + d_lo, means, atol=1e-4)
    assert means.max() - means.min() > 1e-3  # the renders differ, so the two picks are two renders
    assert torch.isclose(bright(xa_hi)[0, 0], means.max(), atol=1e-4)
    assert torch.isclose(bright(xa_lo)[0, 0], means.min(), atol=1e-4)
    _, xa_f, _ = make_style_pair(m, style, 0.5, 2, tries=6, seed=3)
    _, xa_f2, _ = make_style_pair(m, style, 0.5, 2, tries=6, seed=3, pick="fidelity", embedder=bright,
                                  content_mean=torch.tensor([100.0]))
    assert torch.equal(xa_f, xa_f2)
    with pytest.raises(StylsegError, match="needs the style embedder"):
        make_style_pair(m, style, 0.5, 2, tries=2, pick="domain")
    with pytest.raises(StylsegError, match="unknown style pair pick 'nearest'.*fidelity, domain"):
        make_style_pair(m, style, 0.5, 2, tries=2, pick="nearest")
    # the content mean is the mean of the embeddings, batch by batch
    x = torch.rand(7, 3, 16, 16) * 2 - 1
    assert torch.allclose(content_mean_embedding(bright, x, batch=3), bright(x).mean(0), atol=1e-6)

    # in finetune: the pair made with the domain pick is recorded as such
    cfg = env["cfg"].override(**{"stylize.style_pair_pick": "domain", "stylize.iterations": 1})
    out = finetune(env["diffae"], style, env["source"], tmp_path / "ft_domain", cfg, device="cpu", progress=False)
    rec = json.loads((out / "style_pair.json").read_text())
    assert rec["pick"] == "domain" and "content images' mean" in rec["criterion"]
    assert rec["best"] == int(np.argmin(rec["errors"])) and len(rec["errors"]) == cfg.stylize.style_pair_tries
    assert json.loads((out / "config.json").read_text())["config"]["stylize"]["style_pair_pick"] == "domain"


def test_domain_pick_embeds_the_content_only_when_the_pair_is_made(env, tmp_path, monkeypatch):
    """A resumed run reads the style pair's PNGs: the content images' mean embedding is not computed again."""
    import stylseg.stylize.style_pair as ft

    calls = []
    real = ft.content_mean_embedding
    monkeypatch.setattr(ft, "content_mean_embedding", lambda *a, **k: calls.append(1) or real(*a, **k))
    m = load_diffae(env["diffae"])
    cfg = env["cfg"].override(**{"stylize.style_pair_pick": "domain"})
    content = torch.rand(5, 3, 16, 16) * 2 - 1
    bright = lambda x: x.mean(dim=(1, 2, 3))[:, None]
    first = ft.style_pair(m, env["style"], tmp_path, cfg, "cpu", bright, content)
    assert len(calls) == 1 and (tmp_path / "style_pair.json").is_file()
    again = ft.style_pair(m, env["style"], tmp_path, cfg, "cpu", bright, content)
    assert len(calls) == 1  # the saved pair, no second pass over the content
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_finetune_writes_a_loadable_stylizer(env):
    cfg, d = env["cfg"], env["d"]
    da_state = {k: v.clone() for k, v in load_diffae(env["diffae"]).state_dict().items()}
    seen = []
    out = finetune(env["diffae"], env["style"], env["source"], d / "ft", cfg, device="cpu", progress=False,
                   callback=lambda it, i, t, x0: seen.append((it, i, t, tuple(x0.shape))))
    meta, state = load_model_folder(out, "stylizer")
    assert meta["diffae"]["sha256"] == load_diffae(env["diffae"]).sha256
    assert meta["substitute"] == f"{SUBSTITUTE}; {STAND_IN}" and meta["config"]["spn_lambda"] == cfg.stylize.spn_lambda
    assert (out / STYLE_Y).is_file() and (out / STYLE_XA).is_file()
    hist = json.loads((out / "history.json").read_text())
    assert hist["substitute"] == f"{SUBSTITUTE}; {STAND_IN}" and len(hist["iterations"]) == cfg.stylize.iterations
    for rec in hist["iterations"]:
        assert {"cross", "cross_mag", "in_domain", "recon_l1", "recon_msssim", "recon_embed", "total"} <= set(rec)
        assert rec["updates"] == cfg.ddim.finetune_gen_steps  # an optimizer step at every generation step
    # callback: every iteration walks the generation grid downwards
    grid = [0, 50, 100]  # ddim_timesteps(0.1, 2)
    assert [(it, i, t) for it, i, t, _ in seen] == [(0, 0, 100), (0, 1, 50), (1, 0, 100), (1, 1, 50)]
    assert all(s == (2, 3, 16, 16) for *_, s in seen) and grid
    # D_A untouched, D_B and the SPN trained
    da_after = load_diffae(env["diffae"]).state_dict()
    assert all(torch.equal(v, da_after[k]) for k, v in da_state.items())
    st = Stylizer.load(out)
    assert any(not torch.equal(v, da_state[f"unet.{k}"]) for k, v in st.unet_b.state_dict().items())
    assert st.spn.conv_out.weight.abs().sum() > 0
    # same settings again: returns at once without retraining
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    finetune(env["diffae"], env["style"], env["source"], out, cfg, device="cpu", progress=False)
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime
    # settings that only matter when applying (upsampling, sensor matching, batch) never refit, even with overwrite
    for kv in ({"stylize.sensor": "match"}, {"stylize.upsample": "bilinear", "stylize.apply_batch_size": 3}):
        finetune(env["diffae"], env["style"], env["source"], out, cfg.override(**kv), device="cpu", progress=False,
                 overwrite=True)
        assert (out / "model.safetensors").stat().st_mtime_ns == mtime, kv
    # other settings: a clear error unless overwrite
    with pytest.raises(StylsegError, match="other settings"):
        finetune(env["diffae"], env["style"], env["source"], out, cfg.override(**{"stylize.lr_spn": 1e-3}),
                 device="cpu", progress=False)


class _Stop(Exception):
    """Interrupts a fine-tuning from its callback (:func:`_stop_at_iteration_3`), as a crash or Ctrl-C would."""


def _stop_at_iteration_3(it, i, t, x0):
    if it == 3:
        raise _Stop


def test_exact_resume(env):
    cfg = env["cfg"].override(**{"stylize.iterations": 4, "stylize.checkpoint_every": 2})
    d = env["d"]
    full = finetune(env["diffae"], env["style"], env["source"], d / "full", cfg, device="cpu", progress=False)

    with pytest.raises(_Stop):
        finetune(env["diffae"], env["style"], env["source"], d / "part", cfg, device="cpu", progress=False,
                 callback=_stop_at_iteration_3)
    assert not (d / "part" / "model.safetensors").exists() and (d / "part" / "checkpoint.safetensors").is_file()
    finetune(env["diffae"], env["style"], env["source"], d / "part", cfg, device="cpu", progress=False)
    _, a = load_model_folder(full, "stylizer")
    _, b = load_model_folder(d / "part", "stylizer")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ha = json.loads((full / "history.json").read_text())["iterations"]
    hb = json.loads((d / "part" / "history.json").read_text())["iterations"]
    assert [r["total"] for r in ha] == [r["total"] for r in hb]


def test_paper_preset_trains_with_the_papers_loss_set_and_records_its_name(env):
    cfg = env["cfg"].override(**{"stylize.preset": "paper", "stylize.iterations": 1, "stylize.spn_form": "osasis"})
    out = finetune(env["diffae"], env["style"], env["source"], env["d"] / "paper", cfg, device="cpu", progress=False)
    rec = json.loads((out / "history.json").read_text())["iterations"][0]
    assert {"adv", "adv_mag", "spn", "cycle"} <= set(rec) and rec["updates"] == cfg.ddim.finetune_gen_steps
    st = Stylizer.load(out)
    assert st.spn.form == "osasis"
    assert st.record.preset == "paper" and st.record.preset_changes == {}  # spn_form is not the preset's


def test_loss_divergence_flags_a_loss_that_falls_and_rises_again():
    from stylseg.stylize.finetune import loss_divergence

    hist = lambda totals: [{"iteration": i, "total": v} for i, v in enumerate(totals)]
    falling = [18.5 * 0.95 ** i for i in range(100)]
    assert loss_divergence(hist(falling)) is None
    # wobbling near its low (0.05 -> 0.2, four times the low but nothing given back of the fall from 18.5)
    wobble = [18.5 * 0.8 ** i for i in range(40)] + [0.05, 0.2] * 30
    assert loss_divergence(hist(wobble)) is None
    # the cpu profile's diverging `guard` run: 18.5 -> 1.75 by iteration 30 -> 33.8 at 99
    diverged = [18.5 - (18.5 - 1.75) * i / 30 for i in range(31)] + [1.75 + (33.8 - 1.75) * i / 69 for i in range(1, 70)]
    d = loss_divergence(hist(diverged))
    assert d is not None and d["window"] == 10 and d["lowest_window"][0] <= 30 <= d["lowest_window"][1]
    assert d["last_mean"] > 4 * d["lowest_mean"] and d["first_mean"] > d["lowest_mean"]
    assert loss_divergence(hist(diverged[:19])) is None  # too short to tell
    assert loss_divergence(hist(diverged), window=200) is None


def test_a_diverging_fine_tuning_warns_and_is_recorded(env, tmp_path, monkeypatch):
    """The loss terms scaled to fall and then rise (as the cpu profile's `guard` SPN at lr_spn=1e-4 did): the
    fine-tuning finishes, warns naming the fix, and records it in history.json and the model folder."""
    from stylseg.stylize.losses import StyleLoss

    cfg = env["cfg"].override(**{"stylize.iterations": 24})
    per_it = cfg.ddim.finetune_gen_steps
    calls = {"n": 0}
    orig = StyleLoss.terms

    def scaled(self, *a, **k):
        it = calls["n"] // per_it
        calls["n"] += 1
        f = 10.0 if it < 8 else (1.0 if it < 14 else 40.0)
        return {name: v * f for name, v in orig(self, *a, **k).items()}

    monkeypatch.setattr(StyleLoss, "terms", scaled)
    out = tmp_path / "ft_div"
    with pytest.warns(UserWarning, match="diverging.*stylize.lr_spn"):
        finetune(env["diffae"], env["style"], env["source"], out, cfg, device="cpu", progress=False)
    assert calls["n"] == 24 * per_it
    h = json.loads((out / "history.json").read_text())
    assert h["diverging"] and h["diverging"]["last_mean"] > 4 * h["diverging"]["lowest_mean"]
    assert json.loads((out / "config.json").read_text())["diverging"] == h["diverging"]
    with pytest.warns(UserWarning, match="was diverging.*likely ruined"):  # and whoever loads it later is told
        Stylizer.load(out)
    # the same run without the rise is not flagged
    monkeypatch.setattr(StyleLoss, "terms", orig)
    out2 = tmp_path / "ft_ok"
    finetune(env["diffae"], env["style"], env["source"], out2, cfg, device="cpu", progress=False)
    assert json.loads((out2 / "history.json").read_text())["diverging"] is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Stylizer.load(out2)
    assert not [w for w in caught if "diverging" in str(w.message)]  # none for a stylizer that did not diverge


def test_a_non_finite_loss_stops_the_fine_tuning_naming_the_fix(env, tmp_path):
    cfg = env["cfg"].override(**{"stylize.iterations": 3, "stylize.lr_unet": 10.0, "stylize.lr_spn": 10.0})
    out = tmp_path / "ft_nan"
    with pytest.raises(StylsegError, match=r"loss became (nan|inf|-inf) at iteration \d.*Lower stylize.lr_unet \(10\)"):
        finetune(env["diffae"], env["style"], env["source"], out, cfg, device="cpu", progress=False)
    assert not (out / "model.safetensors").exists()


def test_bad_inputs(env, tmp_path):
    cfg = env["cfg"]
    (tmp_path / "notamodel").mkdir()
    with pytest.raises(StylsegError, match="not a stylseg model folder"):
        finetune(tmp_path / "notamodel", env["style"], env["source"], tmp_path / "o", cfg, device="cpu")
    with pytest.raises(StylsegError, match="style image not found"):
        finetune(env["diffae"], tmp_path / "nope.png", env["source"], tmp_path / "o", cfg, device="cpu")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(StylsegError, match="unreadable or corrupt"):
        finetune(env["diffae"], bad, env["source"], tmp_path / "o", cfg, device="cpu")


def test_cli_finetune(env, tmp_path, monkeypatch):
    monkeypatch.setenv("STYLSEG_THREADS", "1")
    from stylseg.cli import main

    from _testing import TINY_DIFFAE

    sets = []
    for k, v in dict(TINY_DIFFAE, **{"stylize.iterations": 1}).items():
        sets += ["--set", f"{k}={v}"]
    rc = main(["stylize", "finetune", "--diffae", str(env["diffae"]), "--style", str(env["style"]), "--content",
               str(env["source"]), "--out", str(tmp_path / "cli"), "--device", "cpu", *sets])
    assert rc == 0 and (tmp_path / "cli" / "model.safetensors").is_file()
    assert main(["stylize", "finetune", "--diffae", str(tmp_path), "--style", str(env["style"]), "--content",
                 str(env["source"]), "--out", str(tmp_path / "cli2"), "--device", "cpu"]) == 2


@pytest.mark.slow
def test_one_paper_profile_iteration_on_cpu(tmp_path):
    """One fine-tuning iteration of the paper profile (DiffAE-256 architecture, 25 + 10 UNet calls,
    an optimizer step at every generation step) at batch 1 on the CPU: runs, and every term is finite."""
    from stylseg.config import get_profile
    from stylseg.data.synth import generate_domain
    from stylseg.diffusion.model import DiffAE

    cfg = get_profile("paper").override(**{"stylize.iterations": 1, "stylize.batch_size": 1,
                                            "stylize.embedder": "weightfree", "stylize.recon_perceptual": "msssim",
                                            "stylize.style_pair_tries": 1})
    DiffAE.from_config(cfg.diffae, cfg.ddim).save_pretrained(tmp_path / "diffae")
    src = generate_domain(tmp_path / "src", "polyp", "clinic", n=2, size=256, seed=0, progress=False)
    style = generate_domain(tmp_path / "tgt", "polyp", "colon", n=1, size=256, seed=1, progress=False)
    out = finetune(tmp_path / "diffae", style / "images" / "0000.png", src, tmp_path / "ft", cfg, device="cpu",
                   progress=False)
    rec = json.loads((out / "history.json").read_text())["iterations"][0]
    assert rec["updates"] == cfg.ddim.finetune_gen_steps
    assert all(np.isfinite(v) for k, v in rec.items() if k not in ("iteration",))
    print(f"paper profile, batch 1, CPU: {rec['seconds']:.1f} s/iteration")


def test_style_pair_depth_is_its_own_setting(env, tmp_path):
    """stylize.style_pair_t0 renders x_A_style at its own depth (recorded), 0 means ddim.t0; out of range refused."""
    cfg = env["cfg"].override(**{"stylize.iterations": 0})
    out = finetune(env["diffae"], env["style"], env["source"], tmp_path / "default", cfg, device="cpu", progress=False)
    assert json.loads((out / "style_pair.json").read_text())["t0"] == cfg.ddim.t0
    deep = cfg.override(**{"stylize.style_pair_t0": 0.6})
    out2 = finetune(env["diffae"], env["style"], env["source"], tmp_path / "deep", deep, device="cpu", progress=False)
    assert json.loads((out2 / "style_pair.json").read_text())["t0"] == 0.6
    a = np.asarray(Image.open(out / STYLE_XA), dtype=float)
    b = np.asarray(Image.open(out2 / STYLE_XA), dtype=float)
    assert np.abs(a - b).mean() > 0.5  # another depth, another render
    with pytest.raises(StylsegError, match="style_pair_t0=1.5 is out of range"):  # refused with the config
        finetune(env["diffae"], env["style"], env["source"], tmp_path / "bad",
                 cfg.override(**{"stylize.style_pair_t0": 1.5}), device="cpu", progress=False)
    assert not (tmp_path / "bad").exists()


def test_checkpoint_is_read_without_running_code_and_an_old_one_names_the_fix(env, tmp_path):
    """The resume file holds tensors and plain JSON (safetensors, never unpickled); the pickled ``checkpoint.pt``
    of earlier versions is refused by name, unopened, naming what to do, and nothing is changed."""
    from stylseg.stylize.stylizer import CHECKPOINT, LEGACY_CHECKPOINT

    cfg = env["cfg"].override(**{"stylize.iterations": 1, "stylize.checkpoint_every": 1})
    out = finetune(env["diffae"], env["style"], env["source"], tmp_path / "ft", cfg, device="cpu", progress=False)
    ck = load_state(out / CHECKPOINT)
    assert ck["iteration"] == 1 and isinstance(ck["rng"]["numpy"]["keys"], list)
    bad = tmp_path / "old"
    bad.mkdir()
    torch.save({"digest": "x", "rng": {"numpy": np.random.get_state()}}, bad / LEGACY_CHECKPOINT)
    with pytest.raises(StylsegError, match=r"checkpoint.pt.*--overwrite"):
        finetune(env["diffae"], env["style"], env["source"], bad, cfg, device="cpu", progress=False)
    assert sorted(p.name for p in bad.iterdir()) == [LEGACY_CHECKPOINT]
