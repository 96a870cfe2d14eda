"""Style embedders and losses against references and hand-computed cases (docs/method.md 3, 7)."""

import dataclasses

import numpy as np
import pytest
import torch

from stylseg.config import get_profile
from stylseg.stylize.embedders import (SUBSTITUTE, TINY_CLIP, ClipEmbedder, WeightFreeEmbedder, make_embedder,
                                       rgb_to_lab)
from stylseg.stylize.losses import (StyleLoss, directional_loss, ms_ssim, spn_structure_loss, ssim,
                                    structure_map)
from stylseg.utils import StylsegError


pytestmark = pytest.mark.usefixtures("one_thread")


def test_rgb_to_lab_matches_skimage():
    from skimage.color import rgb2lab

    x = torch.rand(2, 3, 8, 8) * 2 - 1
    ref = rgb2lab(((x + 1) / 2).permute(0, 2, 3, 1).numpy())
    assert np.abs(rgb_to_lab(x).permute(0, 2, 3, 1).numpy() - ref).max() < 1e-3


def test_directional_loss_hand_cases():
    e_from = torch.tensor([[1.0, 0.0]])
    ref_from, ref_to = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    same, mag = directional_loss(e_from, e_from + torch.tensor([[0.0, 2.0]]), ref_from, ref_to)
    assert same.item() == pytest.approx(0.0, abs=1e-6) and mag.item() == pytest.approx(0.0, abs=1e-6)
    opp, mag = directional_loss(e_from, e_from - torch.tensor([[0.0, 2.0]]), ref_from, ref_to)
    assert opp.item() == pytest.approx(2.0) and mag.item() == pytest.approx(4.0)  # |(-2)-(2)|^2/|2|^2
    half, mag = directional_loss(e_from, e_from + torch.tensor([[0.0, 1.0]]), ref_from, ref_to)
    assert half.item() == pytest.approx(0.0, abs=1e-6) and mag.item() == pytest.approx(0.25)  # tiny step: cos 0, mag > 0
    _, none = directional_loss(e_from, e_from, ref_from, ref_to)
    assert none.item() == pytest.approx(1.0)  # no change: magnitude term 1


def test_ssim_matches_skimage_and_ms_ssim_identity():
    from skimage.metrics import structural_similarity

    torch.manual_seed(0)
    a = torch.rand(1, 1, 32, 32)
    b = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    ref = structural_similarity(a[0, 0].numpy(), b[0, 0].numpy(), data_range=1.0, gaussian_weights=True,
                                sigma=1.5, use_sample_covariance=False)
    assert ssim(a, b).item() == pytest.approx(ref, abs=0.03)
    assert ms_ssim(a, a).item() == pytest.approx(1.0, abs=1e-5)
    assert ms_ssim(a, b).item() < ms_ssim(a, (a + 0.02 * torch.randn_like(a)).clamp(0, 1)).item() < 1.0


def test_library_ssim_ms_ssim_and_lab_agree_with_the_numbers_before():
    """SSIM, MS-SSIM (torchmetrics) and sRGB -> CIELAB (kornia) replaced hand-written versions; on the seeded images
    of the pinned fixture (``make_pinned_stylize.pinned_metrics``, computed by the hand-written ones) they agree
    within: SSIM 2e-4, LAB 1e-3 (on a 0-100 scale), MS-SSIM 0.01 (measured at most 0.007, at 32 px and heavy noise:
    the two treat the image border differently at the coarse scales, where the 11 px window covers most of an
    8-16 px image). Where torchmetrics' own MS-SSIM accepts the size (256 px) the kit's is exactly it."""
    from pathlib import Path

    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    before = np.load(Path(__file__).resolve().parent / "fixtures" / "pinned_stylize" / "metrics.npz")
    g = torch.Generator().manual_seed(0)
    for size in (16, 32, 64):
        x = torch.rand(3, 3, size, size, generator=g)
        y = (x + torch.tensor([0.02, 0.1, 0.3]).view(3, 1, 1, 1) * torch.randn(x.shape, generator=g)).clamp(0, 1)
        np.testing.assert_allclose(ssim(x, y).numpy(), before[f"ssim{size}"], atol=2e-4)
        np.testing.assert_allclose(ms_ssim(x, y).numpy(), before[f"ms_ssim{size}"], atol=1e-2)
    np.testing.assert_allclose(rgb_to_lab(torch.rand(2, 3, 8, 8, generator=g) * 2 - 1).numpy(), before["lab"], atol=1e-3)
    x = torch.rand(2, 3, 256, 256, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    w = torch.tensor((0.0448, 0.2856, 0.3001, 0.2363, 0.1333))
    ref = multiscale_structural_similarity_index_measure(x, y, data_range=1.0, reduction="none",
                                                         betas=tuple((w / w.sum()).tolist()), normalize="relu")
    torch.testing.assert_close(ms_ssim(x, y), ref)
    xg = torch.zeros(1, 3, 4, 4, requires_grad=True)  # black: the cube root's linear part keeps gradients finite
    rgb_to_lab(xg - 1).sum().backward()
    assert torch.isfinite(xg.grad).all()


def test_structure_map_ignores_brightness_and_contrast():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32) * 1.2 - 0.6
    gray = x.mean(1, keepdim=True).repeat(1, 3, 1, 1)
    s = structure_map(gray)
    s2 = structure_map((gray * 0.5 + 0.2))  # luminance a*Y + b
    assert torch.corrcoef(torch.stack([s.flatten(), s2.flatten()]))[0, 1] > 0.99
    assert spn_structure_loss(gray, gray).item() == 0.0
    assert spn_structure_loss(gray.flip(-1), gray).item() > 0.1


def test_weightfree_embedder_standardised_no_lbp_and_differentiable():
    torch.manual_seed(0)
    src = torch.rand(16, 3, 16, 16) * 2 - 1
    e = WeightFreeEmbedder().fit(src)
    z = e(src)
    assert torch.allclose(z.mean(0), torch.zeros(e.dim), atol=1e-4)
    assert torch.allclose(z.std(0), torch.ones(e.dim), atol=1e-3)
    assert "lbp" not in " ".join(e.describe()).lower() and e.describe()["substitute"] == SUBSTITUTE
    x = src[:2].clone().requires_grad_(True)
    e(x).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    redder = src.clone()
    redder[:, 0] = (redder[:, 0] + 0.5).clamp(-1, 1)
    assert (e(redder)[:, 2] - e(src)[:, 2]).mean() > 1.0  # mean a* rises with red


def test_tiny_clip_embedder_gradients_and_preprocessing():
    e = ClipEmbedder(TINY_CLIP, "")
    x = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_(True)
    y = e(x)
    assert y.shape == (2, 32) and torch.allclose(y.norm(dim=-1), torch.ones(2), atol=1e-5)
    y.sum().backward()
    assert x.grad.abs().sum() > 0 and not any(p.requires_grad for p in e.parameters())
    assert e.prep(x).shape == (2, 3, 32, 32)
    eo = ClipEmbedder(TINY_CLIP, "", preprocess="osasis")
    assert eo.prep(x).shape == (2, 3, 32, 32)


def test_missing_clip_weights_offline_names_fetch_and_fallback():
    cfg = get_profile("paper").stylize
    with pytest.raises(StylsegError) as ei:
        make_embedder(cfg)
    msg = str(ei.value)
    assert "stylseg weights fetch clip-vit-b-32-openai" in msg and "stylize.embedder=weightfree" in msg
    assert "stylize.clip_pretrained=" in msg  # a local file is the third way
    assert msg.count("stylseg weights fetch") == 1  # said once, with the download address


def test_unknown_embedder_lists_valid():
    cfg = get_profile("smoke").stylize
    from dataclasses import replace

    with pytest.raises(StylsegError, match="clip, weightfree"):
        make_embedder(replace(cfg, embedder="dino"))


@pytest.mark.parametrize("loss_set", ["paper", "osasis"])
def test_style_loss_sets(loss_set):
    torch.manual_seed(0)
    sc = get_profile("smoke").override(**{"stylize.preset": loss_set}).stylize  # the presets osasis and paper
    assert sc.loss_set == loss_set
    src = torch.rand(8, 3, 16, 16) * 2 - 1
    emb = make_embedder(sc, source=src)
    y_b = torch.rand(1, 3, 16, 16) * 2 - 1
    x_as = (y_b * 0.5).clamp(-1, 1)
    loss = StyleLoss(sc, emb, y_b, x_as)
    x_in = src[:2]
    out = x_in.clone().requires_grad_(True)
    terms = loss.terms(x_in, out, x0_style=x_as.clone() if loss_set == "osasis" else None)
    expected = {"paper": {"adv", "adv_mag", "spn"},
                "osasis": {"cross", "cross_mag", "in_domain", "in_domain_mag", "recon_embed", "recon_l1",
                           "recon_msssim"}}[loss_set]
    assert set(terms) == expected
    if loss_set == "paper":
        assert terms["adv_mag"].item() == pytest.approx(1.0, abs=1e-4)  # output = input: no change
        assert terms["spn"].item() == 0.0
    else:
        assert terms["recon_l1"].item() == pytest.approx((x_as - y_b).abs().mean().item(), rel=1e-5)
    tot = loss.total(terms)
    manual = sum(loss.weights[k] * v for k, v in terms.items())
    assert tot.item() == pytest.approx(manual.item(), rel=1e-6)
    tot.backward()
    assert out.grad is not None and torch.isfinite(out.grad).all()


def test_osasis_set_takes_the_structure_term_when_weighted():
    """stylize.w_structure adds L_SPN to the OSASIS set: 0 for an unchanged structure, > 0 for a shifted one."""
    from dataclasses import replace

    torch.manual_seed(0)
    base = replace(get_profile("smoke").stylize, loss_set="osasis")
    src = torch.rand(8, 3, 16, 16) * 2 - 1
    emb = make_embedder(base, source=src)
    y_b = torch.rand(1, 3, 16, 16) * 2 - 1
    assert "spn" not in StyleLoss(base, emb, y_b, y_b * 0.5).terms(src[:2], src[:2].clone(), x0_style=y_b.clone())
    loss = StyleLoss(replace(base, w_structure=2.0), emb, y_b, y_b * 0.5)
    assert loss.weights["spn"] == 2.0
    x_in = src[:2]
    same = loss.terms(x_in, (x_in * 0.5 + 0.2).requires_grad_(True), x0_style=y_b.clone())  # brightness/contrast only
    moved = torch.roll(x_in, 3, dims=-1).requires_grad_(True)
    terms = loss.terms(x_in, moved, x0_style=y_b.clone())
    assert terms["spn"].item() > 0.1 and same["spn"].item() < 0.05 * terms["spn"].item()
    loss.total(terms).backward()
    assert moved.grad is not None and moved.grad.abs().sum() > 0


def test_fit_settings_enter_the_digest_and_apply_settings_do_not(tmp_path):
    """Every fine-tuning field (the preset's name included) changes a stylizer's settings digest, so that changing it
    refits; the fields that only change how a stylizer is applied (upsample, apply_batch_size) do not."""
    import importlib

    ft = importlib.import_module("stylseg.stylize.finetune")
    style = tmp_path / "style.png"
    style.write_bytes(b"not really an image, only hashed")
    cfg = get_profile("smoke")
    files = [tmp_path / "a.png", tmp_path / "b.png"]
    for f in files:  # the settings hold the content images' content
        f.write_bytes(f.name.encode())
    now = ft._digest(ft._settings("d" * 64, style, files, cfg))
    for key, value in (("stylize.w_structure", 1.0), ("stylize.structure_region", "lesion"),
                       ("stylize.style_pair_pick", "domain"), ("stylize.preset", "gates"), ("stylize.preset", "paper"),
                       ("ddim.apply_gen_steps", 3)):
        assert ft._digest(ft._settings("d" * 64, style, files, cfg.override(**{key: value}))) != now, key
    for key, value in (("stylize.upsample", "bilinear"), ("stylize.sensor", "match"), ("stylize.apply_batch_size", 5)):
        assert ft._digest(ft._settings("d" * 64, style, files, cfg.override(**{key: value}))) == now, key


def test_stylizer_folder_of_an_earlier_kit_is_refused_with_one_message(tmp_path):
    """A stylizer folder whose config names no preset (written by an earlier stylseg) is not migrated: finetune's
    resume and Stylizer.load both say to fit it again, naming the command."""
    import json

    from stylseg.stylize.stylizer import finished_digest
    from stylseg.stylize.stylizer import Stylizer
    from stylseg.utils import StylsegError

    d = tmp_path / "finetune"
    d.mkdir()
    old = {k: v for k, v in dataclasses.asdict(get_profile("smoke").stylize).items() if k != "preset"}
    old.update(ema_decay=0.0, lesion_ring=0.125, spn_region="image")
    (d / "config.json").write_text(json.dumps({"kind": "stylizer", "config": {"stylize": old, "spn": {},
                                                                               "spn_lambda": 0.1},
                                               "settings_digest": "0" * 16}))
    (d / "model.safetensors").write_bytes(b"")
    for call in (lambda: finished_digest(d), lambda: Stylizer.load(d)):
        with pytest.raises(StylsegError, match=r"fine-tuned by an earlier stylseg.*ema_decay.*--overwrite"):
            call()

def test_lesion_focused_structure_term_looks_only_at_the_lesion_and_its_ring():
    """stylize.structure_region=lesion: the term covers the dilated mask; a change outside it costs nothing, a change
    inside it costs what it costs over the whole image at the same density; an empty mask falls back to the image."""
    from stylseg.stylize.losses import LESION_RING, lesion_weight

    torch.manual_seed(0)
    m = torch.zeros(2, 1, 32, 32)
    m[0, :, 12:18, 12:18] = 1  # a lesion; image 1 has none
    w = lesion_weight(m)
    r = round(LESION_RING * 32)
    assert w[0, 0, 12 - r:18 + r, 12 - r:18 + r].eq(1).all() and w[0].sum() == (6 + 2 * r) ** 2
    assert w[1].eq(1).all()  # nothing to focus on: the whole image
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(spn_structure_loss(x, x, torch.ones_like(w)), spn_structure_loss(x, x))
    far = x.clone()
    far[0, :, 26:, 26:] = -far[0, :, 26:, 26:]  # a corner far from the lesion of image 0
    near = x.clone()
    near[0, :, 13:17, 13:17] = -near[0, :, 13:17, 13:17]  # inside the lesion
    only0 = w.clone()
    only0[1] = 0  # image 1 counts with uniform weights (all zero): unchanged, so 0
    assert spn_structure_loss(far, x, w).item() < 1e-3 * spn_structure_loss(far, x).item() + 1e-6
    assert spn_structure_loss(near, x, w).item() > spn_structure_loss(near, x).item() > 0
    assert spn_structure_loss(near, x, only0).item() == pytest.approx(spn_structure_loss(near, x, w).item())
    # through StyleLoss: the region reaches the term, and the gradient stays inside the focused region's reach
    from dataclasses import replace

    base = replace(get_profile("smoke").stylize, loss_set="osasis", w_structure=1.0)
    emb = make_embedder(base, source=x)
    loss = StyleLoss(base, emb, x[:1], x[1:])
    moved = far.clone().requires_grad_(True)
    terms = loss.terms(x, moved, x0_style=x[:1].clone(), region=w)
    assert terms["spn"].item() < 1e-3 * loss.terms(x, far, x0_style=x[:1].clone())["spn"].item() + 1e-6
