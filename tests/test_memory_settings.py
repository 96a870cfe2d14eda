"""The memory settings change nothing but memory and time: gradient checkpointing gives the same loss and gradients;
training with micro-batches gives the loss curve of the whole batch; bf16 autocast stays within bf16's precision."""

import pytest
import torch

from stylseg.config import get_profile


def _grads(model, x, t, z):
    model.zero_grad(set_to_none=True)
    loss = (model(x, t, z) - x).pow(2).mean()
    loss.backward()
    return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["kit", "beatgans"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(kind, one_thread):
    from stylseg.diffusion.model import DiffAE

    torch.manual_seed(0)
    if kind == "kit":
        cfg = get_profile("smoke")
        unet = DiffAE.from_config(cfg.diffae, cfg.ddim).unet
        S, zd = cfg.diffae.image_size, cfg.diffae.z_dim
    else:
        from stylseg.diffusion.beatgans import template_config

        cfg = dict(template_config("ffhq256_autoenc"), image_size=16, model_channels=32, channel_mult=[1, 2],
                   enc_channel_mult=[1, 2], attention_resolutions=[8], embed_channels=32, z_dim=32,
                   num_res_blocks=1, enc_num_res_blocks=1, dropout=0.0)
        m = DiffAE(cfg)
        unet, S, zd = m.unet, 16, 32
    for p in unet.parameters():  # zero-initialised output layers would give zero gradients upstream
        p.data.add_(0.02 * torch.randn_like(p))
    unet.train()
    x = torch.randn(2, 3, S, S)
    t = torch.tensor([10, 500])
    z = torch.randn(2, zd)
    loss, g = _grads(unet, x, t, z)
    unet.grad_checkpoint = True
    loss_ck, g_ck = _grads(unet, x, t, z)
    assert loss_ck == pytest.approx(loss, rel=1e-6)
    assert g.keys() == g_ck.keys() and len(g) > 10
    for n in g:
        torch.testing.assert_close(g_ck[n], g[n], rtol=1e-4, atol=1e-6, msg=n)


def _finetune_losses(tmp_path, name, **overrides):
    """The weighted total of each iteration of a 3-iteration tiny fine-tuning."""
    import json

    from _testing import tiny_config, tiny_diffae, tiny_domains
    from stylseg.stylize.finetune import finetune

    d = tmp_path / "env"
    if not (d / "diffae").is_dir():
        tiny_diffae(d / "diffae", tiny_config())
    dom = tiny_domains(d / "data")
    cfg = tiny_config().override(**{"stylize.iterations": 3, **overrides})
    out = finetune(d / "diffae", dom["style"], dom["source"], tmp_path / name, cfg, device="cpu", progress=False)
    return [r["total"] for r in json.loads((out / "history.json").read_text())["iterations"]]


def test_fine_tuning_with_checkpointing_or_bf16_follows_the_same_losses(tmp_path, one_thread):
    base = _finetune_losses(tmp_path, "fp32")
    ck = _finetune_losses(tmp_path, "ckpt", grad_checkpoint=True)
    assert ck == pytest.approx(base, rel=1e-4)
    bf = _finetune_losses(tmp_path, "bf16", precision="bf16")
    assert bf != base  # it did run in bf16
    assert bf == pytest.approx(base, rel=0.05)  # within bf16's precision over a few updates


def _diffae_losses(tmp_path, name, **overrides):
    import json

    from stylseg.data.synth import generate_domain
    from stylseg.diffusion.train import train_diffae

    data = tmp_path / "data"
    if not data.is_dir():
        generate_domain(data, "polyp", "clinic", n=8, size=32, seed=0, progress=False)
    cfg = get_profile("smoke").override(**{"diffae.train_steps": 3, "diffae.batch_size": 8, "diffae.sample_every": 0,
                                           "diffae.checkpoint_every": 100, **overrides})
    out = train_diffae(data, tmp_path / name, cfg, device="cpu", progress=False, log=lambda *a: None)
    return json.loads((out / "history.json").read_text())["loss"]


def test_diffae_training_in_micro_batches_or_with_checkpointing_follows_the_same_losses(tmp_path, one_thread):
    """4 micro-batches of 2 make the step of the batch of 8 (the same draws, the gradients summed): the loss
    curve is the same; so is it with checkpointing. bf16 stays within its precision."""
    base = _diffae_losses(tmp_path, "whole")
    assert len(base) == 3
    assert _diffae_losses(tmp_path, "micro", **{"diffae.micro_batch": 2}) == pytest.approx(base, rel=1e-4)
    assert _diffae_losses(tmp_path, "ckpt", grad_checkpoint=True) == pytest.approx(base, rel=1e-4)
    bf = _diffae_losses(tmp_path, "bf16", precision="bf16")
    assert bf != base and bf == pytest.approx(base, rel=0.05)
    from stylseg.utils import StylsegError

    with pytest.raises(StylsegError, match=r"diffae.micro_batch=3 does not divide diffae.batch_size=8"):
        _diffae_losses(tmp_path, "bad", **{"diffae.micro_batch": 3})
