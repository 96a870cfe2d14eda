"""The published DiffAE family (BeatGANs autoencoder) against the reference's own numbers and names."""

import json

import pytest
import torch

from _diffae_reference import require_reference, tiny_hparams, tiny_weights
from stylseg.diffusion.beatgans import (TEMPLATES, config_from_hparams, load_reference_state_dict,
                                        reference_state_dict, template_config)
from stylseg.diffusion.model import DiffAE
from stylseg.utils import StylsegError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ref():
    from safetensors.torch import load_file

    d = require_reference()
    model = DiffAE(config_from_hparams(tiny_hparams(d))).eval()
    load_reference_state_dict(model, tiny_weights(d), strict=True)
    return {"dir": d, "model": model, "io": load_file(str(d / "tiny_autoenc_io.safetensors"))}


def test_golden_outputs_equal_the_reference(ref):
    """z_sem of x_start and epsilon for (x_t, t, z_sem) equal the reference's cond, pred, pred_cond_rolled."""
    m, io = ref["model"], ref["io"]
    with torch.no_grad():
        z = m.encode(io["x_start"])
        eps = m(io["x_t"], io["t"], io["cond"])
        eps_rolled = m(io["x_t"], io["t"], io["cond_rolled"])
    assert z.shape == io["cond"].shape == (3, 64)
    assert torch.allclose(z, io["cond"], atol=1e-5, rtol=0)
    assert torch.allclose(eps, io["pred"], atol=1e-5, rtol=0)
    assert torch.allclose(eps_rolled, io["pred_cond_rolled"], atol=1e-5, rtol=0)
    # the code matters: another z_sem gives another epsilon (so the check above also tests the conditioning)
    assert (io["pred"] - io["pred_cond_rolled"]).abs().max() > 1e-3


def test_parameter_count_of_the_tiny_reference(ref):
    n = sum(p.numel() for p in ref["model"].parameters())
    assert n == json.loads((ref["dir"] / "tiny_autoenc.json").read_text())["n_params"]


def test_ffhq256_state_dict_loads_strictly():
    """Every name and shape of the published ffhq256_autoenc model, and nothing else."""
    d = require_reference()
    keys = json.loads((d / "ffhq256_autoenc_keys.json").read_text())
    hp = json.loads((d / "ffhq256_autoenc_hparams.json").read_text())
    assert config_from_hparams(hp) == template_config("ffhq256_autoenc")
    with torch.device("meta"):
        model = DiffAE(template_config("ffhq256_autoenc"))
        state = {k: torch.empty(tuple(s)) for k, s in keys["state_dict"].items()}
    own = reference_state_dict(model)
    assert sorted(own) == sorted(state)
    assert sum(v.numel() for v in own.values()) == keys["n_params"] == 168_492_291
    load_reference_state_dict(model, state, strict=True)  # no missing, unexpected or misshapen name
    # one name renamed: both sides are named
    bad = dict(state)
    bad["middle_block.1.qkv_renamed.weight"] = bad.pop("middle_block.1.qkv.weight")
    with pytest.raises(StylsegError, match=r"1 missing \(middle_block\.1\.qkv\.weight\).*1 unexpected"):
        load_reference_state_dict(model, bad, strict=True, where="ckpt")


def test_templates_build_with_the_published_sizes():
    with torch.device("meta"):
        for name in TEMPLATES:
            m = DiffAE(template_config(name))
            assert m.config["image_size"] in (128, 256) and m.config["z_dim"] == 512
    with pytest.raises(StylsegError, match="ffhq256_autoenc"):
        template_config("ffhq512")


def test_saved_folder_loads_through_the_kit_diffae(ref, tmp_path):
    m, io = ref["model"], ref["io"]
    m.save_pretrained(tmp_path / "m")
    back = DiffAE.from_pretrained(tmp_path / "m")
    assert back.arch == "beatgans" and isinstance(back.unet, type(m.unet))
    with torch.no_grad():
        assert torch.equal(back(io["x_t"], io["t"], io["cond"]), m(io["x_t"], io["t"], io["cond"]))
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["kind"] == "diffae" and cfg["config"]["arch"] == "beatgans"


def test_mix_conditioning_and_the_ddim_interface(ref):
    """``z_coarse`` conditions the coarse half only; inversion and rendering run through the kit's DDIM."""
    m, io = ref["model"], ref["io"]
    x, t, z = io["x_t"], io["t"], io["cond"]
    with torch.no_grad():
        same = m.unet(x, t, z, z_coarse=z)
        mixed = m.unet(x, t, z, z_coarse=io["cond_rolled"])
        full = m.unet(x, t, io["cond_rolled"])
        assert torch.equal(same, m(x, t, z))
        assert (mixed - same).abs().max() > 1e-4 and (mixed - full).abs().max() > 1e-4
        x0 = io["x_start"]
        xt = m.encode_stochastic(x0, z, 0.5, 4)
        back = m.render(xt, z, 0.5, 4)
    assert xt.shape == back.shape == x0.shape and torch.isfinite(back).all()
    assert float((back - x0).abs().mean()) < float((xt - x0).abs().mean())


def test_unsupported_settings_are_named():
    d = require_reference()
    hp = dict(tiny_hparams(d), net_enc_use_time=True, beta_scheduler="cosine")
    with pytest.raises(StylsegError, match="net_enc_use_time"):
        config_from_hparams(hp)
    hp = tiny_hparams(d)
    hp["model_conf"] = dict(hp["model_conf"], enc_pool="depthconv")
    with pytest.raises(StylsegError, match="adaptivenonzero"):
        DiffAE(config_from_hparams(hp))


def test_config_from_the_net_fields_when_model_conf_is_absent():
    """``as_dict_jsonable()`` may leave out the ``model_conf`` object: the ``net_*`` fields give the same config."""
    d = require_reference()
    for name in ("tiny_autoenc", "ffhq256_autoenc"):
        hp = json.loads((d / f"{name}_hparams.json").read_text())
        full = config_from_hparams(hp)
        hp.pop("model_conf")
        assert config_from_hparams(hp) == full
    assert config_from_hparams(hp) == template_config("ffhq256_autoenc")
