"""OSASIS's LPIPS term (lpips.LPIPS(net='vgg')) with its VGG16 trunk through the weights registry, and the MS-SSIM
stand-in that every output names when the trunk's file is absent. Offline: the trunk files are made here."""

import dataclasses
import hashlib
import json

import pytest
import torch

from stylseg import weights as W
from stylseg.reproduce import required_weights
from stylseg.stylize import perceptual as P
from stylseg.stylize.embedders import SUBSTITUTE
from stylseg.utils import StylsegError

pytestmark = pytest.mark.usefixtures("one_thread")


def _vgg16_features(seed: int = 1):
    """torchvision's VGG16 trunk (``features``), randomly initialised: what the published file holds, less the
    classifier (a 59 MB file instead of 528 MB)."""
    from torchvision.models import vgg

    torch.manual_seed(seed)
    return vgg.make_layers(vgg.cfgs["D"])


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    """A weights folder of this test's own, so that a trunk file made here is seen by no other test."""
    monkeypatch.setenv("STYLSEG_WEIGHTS_DIR", str(tmp_path / "weights"))
    return tmp_path / "weights"


@pytest.fixture
def vgg_file(weights_dir, monkeypatch):
    """A VGG16 state dict (``features.*``) at the registry's path, the entry's checksum set to the file's (a file
    made here cannot carry torchvision's published prefix). Returns (path, the trunk it holds)."""
    feats = _vgg16_features()
    dest = W.path(P.LPIPS_WEIGHTS)
    dest.parent.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}, dest)
    sha = hashlib.sha256(dest.read_bytes()).hexdigest()
    entry = dataclasses.replace(W.WEIGHTS.get(P.LPIPS_WEIGHTS), sha256=sha, sha256_prefix=None)
    monkeypatch.setitem(W.WEIGHTS._items, P.LPIPS_WEIGHTS, entry)
    return dest, feats


def test_random_trunk_has_gradients_is_zero_for_identical_images_and_draws_no_caller_random_numbers():
    P._lpips_vgg.cache_clear()
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    d = P.LPIPSDistance()  # random trunk, lpips's calibrated linear layers
    assert torch.equal(torch.rand(3), want)  # building it left the caller's random numbers as they were
    x = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(d(x.detach(), x.detach()), torch.zeros(2))
    dist = d(x, y)
    assert dist.shape == (2,) and bool((dist > 0).all())
    dist.sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all()) and x.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in d.parameters())  # a frozen metric
    assert not d.train().lpips.training  # stays in eval mode (no dropout in the linear layers)
    d1 = d(x[:1], y[:1])  # a single reference is broadcast over the batch, as y_B in the loss
    assert torch.allclose(d(x, y[:1])[:1], d1)


def test_the_kit_lpips_equals_lpips_on_the_same_weights_and_downloads_nothing(vgg_file, monkeypatch):
    import lpips
    import lpips.pretrained_networks as pn

    path, feats = vgg_file

    def no_download(*a, **k):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    kit = P.load_lpips()
    assert W.verify_local(P.LPIPS_WEIGHTS) == hashlib.sha256(path.read_bytes()).hexdigest()
    # the reference: lpips itself with its pretrained trunk, which it asks torchvision for
    # (tv.vgg16(pretrained=True)); here torchvision hands it the same trunk
    monkeypatch.setattr(pn.tv, "vgg16", lambda *a, **k: type("VGG", (), {"features": feats})())
    ref = lpips.LPIPS(net="vgg", verbose=False)
    g = torch.Generator().manual_seed(0)
    for size in (16, 64):
        x = torch.rand(3, 3, size, size, generator=g) * 2 - 1
        y = torch.rand(3, 3, size, size, generator=g) * 2 - 1
        with torch.no_grad():
            assert (kit(x, y) - ref(x, y).flatten()).abs().max() <= 1e-6
    # the osasis loss set's term is this distance to y_B, weighted 10 as in OSASIS
    from stylseg.config import get_profile
    from stylseg.stylize.losses import StyleLoss

    sc = get_profile("smoke").stylize
    assert sc.loss_set == "osasis" and P.make_recon_perceptual(sc) is not None
    loss = StyleLoss(sc, lambda im: im.flatten(1)[:, :8], y[:1], x[:1], kit)
    t = loss.terms(x, x, x0_style=x)
    assert "recon_msssim" not in t and loss.weights["recon_lpips"] == 10.0 and "recon_msssim" not in loss.weights
    assert torch.allclose(t["recon_lpips"], kit(x, y[:1]).mean()) and loss.stand_in is None


def test_a_missing_damaged_or_foreign_file_gives_a_clear_error(weights_dir, monkeypatch):
    dest = W.path(P.LPIPS_WEIGHTS)
    with pytest.raises(StylsegError, match=r"weights vgg16-imagenet not found at .*stylseg weights fetch "
                                           r"vgg16-imagenet.*vgg16-397923af\.pth"):
        P.load_lpips()
    assert not P.lpips_available() and P.resolve_recon("auto") == "msssim"
    with pytest.raises(StylsegError, match="not found"):  # asked for by name: no silent stand-in
        P.make_recon_perceptual(dataclasses.replace(_smoke().stylize, recon_perceptual="lpips"))
    # not torchvision's file: its published prefix fails
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"an interrupted download")
    with pytest.raises(StylsegError, match=r"weights vgg16-imagenet fail their checksum.*stylseg weights fetch"):
        P.load_lpips()
    # a file that passed once and was damaged since
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, dest)
    entry = dataclasses.replace(W.WEIGHTS.get(P.LPIPS_WEIGHTS), sha256_prefix=None)
    monkeypatch.setitem(W.WEIGHTS._items, P.LPIPS_WEIGHTS, entry)
    with pytest.raises(StylsegError, match=r"lack or misshape 25 trunk tensors"):  # checksum recorded, wrong content
        P.load_lpips()
    with open(dest, "r+b") as f:
        f.seek(100)
        f.write(b"\0" * 8)
    with pytest.raises(StylsegError, match=r"changed since they were fetched.*stylseg weights fetch vgg16-imagenet"):
        P.load_lpips()


def _smoke():
    from stylseg.config import get_profile

    return get_profile("smoke")


def test_registry_entry_preflight_and_list(weights_dir, capsys):
    from torchvision.models import VGG16_Weights

    from stylseg.cli import main

    e = W.WEIGHTS.get(P.LPIPS_WEIGHTS)
    assert e.url == VGG16_Weights.IMAGENET1K_V1.url and e.url.endswith(f"-{e.sha256_prefix}.pth")
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "vgg16-imagenet" in out and "vgg16-397923af.pth" in out and "528 MB" in out and "BSD-3-Clause" in out
    # auto (smoke, cpu): the stand-in, said by the preflight with the fetch command and the opt-out; nothing required
    cfg = _smoke()
    assert cfg.stylize.recon_perceptual == "auto" and P.LPIPS_WEIGHTS not in [r["name"] for r in required_weights(cfg)]
    note = P.stand_in_note(cfg)
    assert "stylseg weights fetch vgg16-imagenet" in note and "--set stylize.recon_perceptual=msssim" in note
    assert P.stand_in_note(cfg.override(**{"stylize.recon_perceptual": "msssim"})) is None
    # stylseg reproduce prints it before any work (here the run then stops at an arm no notebook makes)
    capsys.readouterr()
    assert main(["reproduce", "--profile", "smoke", "--out", str(weights_dir.parent / "run"),
                 "--set", "eval.arms=direct,nonsense"]) == 2
    err = capsys.readouterr().err
    assert note in err and "no notebook makes" in err
    assert P.stand_in_note(cfg.override(**{"stylize.preset": "paper"})) is None  # no reconstruction term
    # lpips (the paper profile): required before any work, with its opt-out
    lp = cfg.override(**{"stylize.recon_perceptual": "lpips"})
    req = [r for r in required_weights(lp) if r["name"] == "vgg16-imagenet"]
    assert req and req[0]["optout"].startswith("--set stylize.recon_perceptual=msssim")
    with pytest.raises(StylsegError, match="stylize.recon_perceptual='nope' is not one of auto, lpips, msssim"):
        cfg.override(**{"stylize.recon_perceptual": "nope"})


# --------------------------------------------------------------------------- fine-tuning
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from _testing import tiny_config, tiny_diffae, tiny_domains

    d = tmp_path_factory.mktemp("lpips_ft")
    cfg = tiny_config(**{"stylize.iterations": 1})
    return {"d": d, "cfg": cfg, "diffae": tiny_diffae(d / "diffae", cfg), **tiny_domains(d / "data", n=4)}


def test_finetuning_with_the_file_records_recon_lpips(tiny, vgg_file, tmp_path):
    from stylseg.stylize.finetune import finetune

    out = finetune(tiny["diffae"], tiny["style"], tiny["source"], tmp_path / "ft", tiny["cfg"], device="cpu",
                   progress=False)
    hist = json.loads((out / "history.json").read_text())
    assert all("recon_lpips" in r and "recon_msssim" not in r for r in hist["iterations"])
    assert hist["weights"]["recon_lpips"] == 10.0 and "recon_msssim" not in hist["weights"]
    assert hist["substitute"] == SUBSTITUTE  # the weight-free embedder still stands in for CLIP; LPIPS ran
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["stylize"]["recon_perceptual"] == "lpips" and meta["substitute"] == SUBSTITUTE


def test_finetuning_without_the_file_says_which_stand_in_ran(tiny, weights_dir, tmp_path, capsys):
    from stylseg.cli import main

    cfg_path = tmp_path / "cfg" / "tiny.json"  # beside the output, a config.json would read as a run folder
    cfg_path.parent.mkdir()
    tiny["cfg"].save(cfg_path)
    out = tmp_path / "ft"
    assert main(["stylize", "finetune", "--diffae", str(tiny["diffae"]), "--style", str(tiny["style"]),
                 "--content", str(tiny["source"]), "--out", str(out), "--config", str(cfg_path),
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert f"stand-ins: {SUBSTITUTE}; {P.STAND_IN}" in printed
    hist = json.loads((out / "history.json").read_text())
    assert all("recon_msssim" in r and "recon_lpips" not in r for r in hist["iterations"])
    meta = json.loads((out / "config.json").read_text())
    assert hist["substitute"] == meta["substitute"] == f"{SUBSTITUTE}; {P.STAND_IN}"
    assert meta["config"]["stylize"]["recon_perceptual"] == "msssim"  # what ran, not "auto"


# --------------------------------------------------------------------------- notebook 05's scores
def test_scores_gain_lpips_to_the_inputs_when_the_file_is_present(tiny, weights_dir, monkeypatch, tmp_path):
    import shutil

    import numpy as np

    from stylseg.data.io import read_image, write_image
    from stylseg.stylize.scores import score_arm

    src, tgt = tiny["source"], tiny["target"]
    assert "lpips_to_input" not in score_arm(src, src, tgt, write_manifest=False)  # no file: no column
    feats = _vgg16_features()
    dest = W.path(P.LPIPS_WEIGHTS)
    dest.parent.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}, dest)
    entry = dataclasses.replace(W.WEIGHTS.get(P.LPIPS_WEIGHTS), sha256_prefix=None)
    monkeypatch.setitem(W.WEIGHTS._items, P.LPIPS_WEIGHTS, entry)
    assert score_arm(src, src, tgt, write_manifest=False)["lpips_to_input"] == 0.0  # unchanged
    arm = tmp_path / "inverted"
    shutil.copytree(src, arm)
    for p in (arm / "images").iterdir():
        write_image(p, 255 - read_image(p))
    got = score_arm(src, arm, tgt, write_manifest=False)["lpips_to_input"]
    ins = [read_image(p) for p in sorted((src / "images").iterdir())]
    outs = [read_image(p) for p in sorted((arm / "images").iterdir())]
    kit = P.load_lpips()
    with torch.no_grad():
        want = np.mean([float(kit(*(torch.tensor(im).permute(2, 0, 1)[None].float() / 127.5 - 1 for im in ab)))
                        for ab in zip(ins, outs)])
    assert got > 0.05 and got == pytest.approx(want, rel=1e-5)
