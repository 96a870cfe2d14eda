"""Pretrained weights are never silently missing: a run that asks for them stops before any work, naming how to
get each file and the explicit opt-out; a segmenter records the weights it was built from."""

import pytest

from stylseg import weights as W
from stylseg.config import get_profile
from stylseg.reproduce import check_required_weights, required_weights
from stylseg.seg.models import create_segmenter
from stylseg.utils import StylsegError


def test_a_missing_encoder_file_is_an_error_naming_fetch_and_the_opt_out():
    with pytest.raises(StylsegError, match=r"resnet18-imagenet are not at .*stylseg weights fetch resnet18-imagenet.*"
                                           r"--set seg.pretrained=false"):
        create_segmenter("unet", encoder="resnet18", pretrained=True, encoder_depth=3, decoder_channels=(8, 8, 8))
    assert create_segmenter("unet", encoder="resnet18", pretrained=False, encoder_depth=3,
                            decoder_channels=(8, 8, 8)) is not None


def test_a_present_encoder_file_is_loaded_and_its_checksum_recorded(tmp_path, monkeypatch):
    import dataclasses

    import torch
    import torchvision

    # a file made here cannot carry torchvision's published checksum prefix: test with an entry that has none
    entry = dataclasses.replace(W.WEIGHTS.get("resnet18-imagenet"), sha256_prefix=None)
    monkeypatch.setitem(W.WEIGHTS._items, "resnet18-imagenet", entry)
    dest = W.path("resnet18-imagenet")
    dest.parent.mkdir(parents=True, exist_ok=True)
    ref = torchvision.models.resnet18(weights=None)
    torch.save(ref.state_dict(), dest)
    try:
        m = create_segmenter("unet", encoder="resnet18", pretrained=True, encoder_depth=3, decoder_channels=(8, 8, 8))
        assert torch.equal(m.encoder.conv1.weight, ref.conv1.weight)
        assert m.pretrained_sha256 == W.verify_local("resnet18-imagenet")
    finally:
        dest.unlink()


def test_the_paper_profile_lists_every_missing_file_before_any_work(tmp_path):
    from stylseg.cli import main

    cfg = get_profile("paper")
    names = [r["name"] for r in required_weights(cfg)]
    assert names == ["resnet34-imagenet", "res2net50d-imagenet", "clip-vit-b-32-openai", "vgg16-imagenet",
                     "diffae-ffhq256-autoenc"]
    with pytest.raises(StylsegError) as e:
        check_required_weights(cfg)
    msg = str(e.value)
    for n in names:
        assert n in msg
    assert "stylseg weights fetch resnet34-imagenet" in msg and "--set seg.pretrained=false" in msg
    assert "--set stylize.embedder=weightfree" in msg and "--set diffae.init=train" in msg
    assert "--set stylize.recon_perceptual=msssim" in msg
    # the opt-outs, explicit: nothing is required any more
    opted = cfg.override(**{"seg.pretrained": False, "stylize.embedder": "weightfree", "diffae.init": "train",
                            "stylize.recon_perceptual": "msssim"})
    assert required_weights(opted) == []
    check_required_weights(opted)
    # stylseg reproduce stops at once, writing nothing
    out = tmp_path / "run"
    assert main(["reproduce", "--profile", "paper", "--out", str(out)]) == 2
    assert not out.exists()
