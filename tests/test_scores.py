"""Structure and style scores (docs/method.md section 7): hand cases and the do-nothing control."""

import json
import shutil

import numpy as np
import pytest
import torch

from stylseg.data.io import read_image, write_image
from _testing import tiny_domains
from stylseg.stylize.scores import (LESION_SSIM_MIN, ORACLE_DICE_RATIO_MIN, STYLE_FD_RATIO_MAX, STYLE_P_TARGET_MIN,
                            boundary_band, boundary_contrast, edge_agreement, frechet_distance, gate_verdicts,
                            lbp_histograms, lesion_ssim, lnl_ssim, score_arm, style_features)
from stylseg.seg.oracle import train_oracle
from stylseg.utils import StylsegError


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dom(tmp_path_factory):
    return tiny_domains(tmp_path_factory.mktemp("scores") / "data", n=12, size=32)


def test_frechet_distance_1d_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 2.0, (20000, 1))
    b = rng.normal(-1.0, 0.5, (20000, 1))
    # (mu1 - mu2)^2 + (s1 - s2)^2 for 1-D Gaussians
    assert frechet_distance(a, b) == pytest.approx(4.0 + 1.5 ** 2, rel=0.03)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_boundary_band_and_edge_agreement_hand_cases():
    mask = np.zeros((32, 32), bool)
    mask[10:22, 10:22] = True
    band = boundary_band(mask, 3)
    assert band[10, 15] and band[7, 15] and band[12, 15] and not band[6, 15] and not band[13, 15]
    assert not boundary_band(np.zeros((8, 8), bool)).any()
    img = np.full((32, 32, 3), 60, np.uint8)
    img[mask] = 200
    assert edge_agreement(img, img, mask) == 1.0
    assert edge_agreement(img, (img * 0.5 + 20).astype(np.uint8), mask) == 1.0  # contrast change: same edges
    moved = np.roll(img, 3, axis=1)
    assert edge_agreement(img, moved, mask) < 0.6
    assert np.isnan(edge_agreement(img, img, np.zeros((32, 32), bool)))


def test_lnl_ssim_ignores_style_and_sees_structure(dom):
    img = read_image(dom["source"] / "images" / "0001.png")
    assert lnl_ssim(img, img) == pytest.approx(1.0)
    restyled = np.clip(img.astype(float) * 0.6 + np.array([60, 10, 0]), 0, 255).astype(np.uint8)
    assert lnl_ssim(img, restyled) > 0.9
    assert lnl_ssim(img, np.flipud(img)) < 0.3


def test_lesion_ssim_sees_the_lesion_not_the_camera():
    """Around the lesion at half the size: the target's whole look on the same scene keeps a high score
    (the whole-image SSIM_S does not), a 3 px shift of the lesion does not, an empty mask is NaN."""
    from stylseg.data.synth import make_sample

    same, shifted, whole = [], [], []
    for i in range(4):
        img, mask = make_sample("polyp", "clinic", 0, i, 128)
        tgt = make_sample("polyp", "colon", 0, i, 128)[0]  # the same scene (and mask) in the target's look
        same.append(lesion_ssim(img, tgt, mask))
        whole.append(lnl_ssim(img, tgt))
        shifted.append(lesion_ssim(img, np.roll(img, 3, axis=1), mask))
        assert lesion_ssim(img, img, mask) == pytest.approx(1.0)
    assert np.mean(same) > 0.75 and np.mean(whole) < 0.6 and np.mean(shifted) < 0.5, (same, whole, shifted)
    assert np.isnan(lesion_ssim(img, img, np.zeros_like(mask)))


def test_boundary_contrast_sees_a_rim_drawn_along_the_lesion():
    """1 for the input itself; below 1 for the target's whole look on the same scene (its noise and blur act on the
    whole image: about 0.83); a dark rim drawn along the lesion boundary raises it above 1.3; NaN for an empty
    mask."""
    from scipy import ndimage

    from stylseg.data.synth import make_sample

    look, rim = [], []
    for i in range(4):
        img, mask = make_sample("polyp", "clinic", 0, i, 128)
        tgt = make_sample("polyp", "colon", 0, i, 128)[0]
        assert boundary_contrast(img, img, mask) == pytest.approx(1.0)
        look.append(boundary_contrast(img, tgt, mask))
        ring = ndimage.binary_dilation(mask, iterations=3) & ~mask
        dark = img.astype(float)
        dark[ring] *= 0.4
        dark = ndimage.gaussian_filter(dark, (1, 1, 0)).clip(0, 255).astype(np.uint8)
        rim.append(boundary_contrast(img, dark, mask))
    assert 0.7 < np.mean(look) < 1.0 and np.mean(rim) > 1.3, (look, rim)
    assert np.isnan(boundary_contrast(img, img, np.zeros_like(mask)))


def test_lbp_features_are_histograms():
    img = (np.random.default_rng(1).random((32, 32, 3)) * 255).astype(np.uint8)
    h = lbp_histograms(img)
    assert h.shape == (28,) and h[:10].sum() == pytest.approx(1.0) and h[10:].sum() == pytest.approx(1.0)
    assert style_features(img).shape == (37,)


def _arm_from(src_paths, dst, names):
    (dst / "images").mkdir(parents=True)
    for p, n in zip(src_paths, names):
        shutil.copy(p, dst / "images" / f"{n}.png")
    return dst


def test_doing_nothing_scores_structure_one_and_source_style(dom, tmp_path):
    src, tgt = dom["source"], dom["target"]
    oracle = train_oracle([src, tgt], tmp_path / "oracle", 32, epochs=1, batch_size=8, device="cpu", progress=False)
    assert train_oracle([src, tgt], tmp_path / "oracle", 32, epochs=1, batch_size=8, device="cpu") == oracle  # cached
    ident = _arm_from(sorted((src / "images").glob("*.png")), tmp_path / "ident",
                      [p.stem for p in sorted((src / "images").glob("*.png"))])
    (ident / "manifest.json").write_text(json.dumps({"arm": "ident", "items": [], "scores": {}}))
    r = score_arm(src, ident, tgt, oracle=oracle)
    assert r["structure_ssim"] == pytest.approx(1.0) and r["structure_edge_f1"] == pytest.approx(1.0)
    assert r["structure_ssim_lesion"] == pytest.approx(1.0)
    assert r["oracle_dice_output"] == r["oracle_dice_input"]
    assert r["style_fd_output"] == pytest.approx(r["style_fd_input"]) and r["style_fd_ratio"] == pytest.approx(1.0)
    assert r["style_p_target_output"] == pytest.approx(r["style_p_target_input"])
    assert r["style_p_target_input"] < 0.3 and r["style_clf_acc"] > 0.8  # the domains are told apart
    assert json.loads((ident / "manifest.json").read_text())["scores"]["structure_ssim"] == pytest.approx(1.0)
    # the acceptance rule cannot be gamed by doing nothing: the lesion is kept, the style gate is missed
    assert gate_verdicts(r) == {"style": False, "lesion": True, "both": False}


def test_perfect_style_scores_target(dom, tmp_path):
    """An 'arm' whose images are target-domain images (same lesion geometry, other style):
    P(target) rises to the targets' level and the Frechet distance falls."""
    src, tgt = dom["source"], dom["target"]
    names = [p.stem for p in sorted((src / "images").glob("*.png"))]
    arm = _arm_from(sorted((tgt / "images").glob("*.png")), tmp_path / "perfect", names)
    # score against a held-out target set: the same generator, other seeds
    from stylseg.data.synth import generate_domain

    held = generate_domain(tmp_path / "held", "polyp", "colon", n=12, size=32, seed=5, progress=False)
    r = score_arm(src, arm, held)
    assert r["style_p_target_output"] > 0.7 > r["style_p_target_input"]
    assert r["style_fd_ratio"] < 0.5


def _row(lesion=0.834, p=0.726, fd=0.25, oracle=0.98, ssim=0.5):
    return {"structure_ssim_lesion": lesion, "style_p_target_output": p, "style_fd_ratio": fd,
            "oracle_dice_ratio": oracle, "structure_ssim": ssim}


def test_gates_are_the_documented_thresholds():
    assert (STYLE_P_TARGET_MIN, STYLE_FD_RATIO_MAX, LESION_SSIM_MIN, ORACLE_DICE_RATIO_MIN) == (0.7, 0.5, 0.8, 0.9)


def test_gate_verdicts_a_row_that_meets_both_and_rows_that_miss_each_gate():
    """Rows written by hand at the measured figures: one that meets both gates, one miss for each of the four
    conditions (by the margins the measurements missed by), the thresholds themselves, and the whole-image
    structure that no gate reads."""
    assert gate_verdicts(_row()) == {"style": True, "lesion": True, "both": True}
    assert gate_verdicts(_row(p=0.674)) == {"style": False, "lesion": True, "both": False}  # P(target) under 0.7
    assert gate_verdicts(_row(fd=0.6)) == {"style": False, "lesion": True, "both": False}  # FD ratio not halved
    assert gate_verdicts(_row(lesion=0.796)) == {"style": True, "lesion": False, "both": False}  # by 0.004
    assert gate_verdicts(_row(oracle=0.893)) == {"style": True, "lesion": False, "both": False}  # oracle Dice ratio
    assert gate_verdicts(_row(lesion=0.8, p=0.7, fd=0.5, oracle=0.9))["both"]  # at the thresholds: met
    assert gate_verdicts(_row(ssim=0.41))["both"]  # the whole-image SSIM_S is no gate
    assert gate_verdicts(_row(lesion=float("nan")))["lesion"] is False  # no lesion to score: not met


def test_gate_verdicts_need_the_oracle_dice():
    row = _row()
    del row["oracle_dice_ratio"]
    with pytest.raises(StylsegError, match="oracle_dice_ratio.*with an oracle"):
        gate_verdicts(row)


def test_score_errors(dom, tmp_path):
    (tmp_path / "empty" / "images").mkdir(parents=True)
    write_image(tmp_path / "empty" / "images" / "zzz.png", read_image(dom["style"]))
    with pytest.raises(StylsegError, match="no output image has an input of the same name"):
        score_arm(dom["source"], tmp_path / "empty", dom["target"])


def test_cli_score(dom, tmp_path, monkeypatch, capsys):
    from stylseg.cli import main

    monkeypatch.setenv("STYLSEG_THREADS", "1")
    assert main(["stylize", "score", "--input", str(dom["source"]), "--output", str(dom["source"]),
                 "--target", str(dom["target"]), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["structure_ssim"] == pytest.approx(1.0)


def test_cli_score_with_an_oracle_prints_the_gates(dom, tmp_path, monkeypatch, capsys):
    """Doing nothing, scored with an oracle: the table, then the gate verdicts (the lesion kept, no style)."""
    from stylseg.cli import main

    monkeypatch.setenv("STYLSEG_THREADS", "1")
    oracle = train_oracle([dom["source"], dom["target"]], tmp_path / "oracle", 32, epochs=1, batch_size=8,
                          device="cpu", progress=False)
    assert main(["stylize", "score", "--input", str(dom["source"]), "--output", str(dom["source"]),
                 "--target", str(dom["target"]), "--oracle", str(oracle)]) == 0
    out = capsys.readouterr().out
    assert "gates: style fail (P(target) >= 0.7 and FD ratio <= 0.5), lesion PASS" in out


def test_oracle_photometric_jitter_changes_colour_not_geometry():
    from stylseg.seg.oracle import _seg_tensor, photometric_jitter

    img = np.zeros((2, 24, 24, 3), np.uint8)
    img[:, 6:14, 8:18] = (220, 160, 140)
    img[:, :, :, 0] += 40
    x = _seg_tensor(list(img))
    a = photometric_jitter(x, torch.Generator().manual_seed(0))
    b = photometric_jitter(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)  # reproducible from the generator
    assert (a - x).abs().mean() > 0.05  # colours moved
    # geometry kept: the bright square is still where it was (correlation of the luminance maps)
    la, lx = a.mean(1).flatten(1), x.mean(1).flatten(1)
    la, lx = la - la.mean(1, keepdim=True), lx - lx.mean(1, keepdim=True)
    corr = (la * lx).sum(1) / (la.norm(dim=1) * lx.norm(dim=1))
    assert bool((corr > 0.8).all())


def test_lesion_ssim_batch_and_folder_masks(dom):
    """The batch mean of lesion_ssim on tensors, with the masks read from a paired folder by file stem: identical
    outputs score 1, outputs with the lesion moved score less, a mask-count mismatch and a missing mask are named."""
    from stylseg.data.io import list_images, to_tensor_pm1

    from stylseg.stylize.scores import folder_masks, lesion_ssim_batch

    src = dom["source"]
    files = list_images(src / "images")[:3]
    masks = folder_masks(src, files)
    assert len(masks) == 3 and all(m.dtype == bool and m.any() for m in masks)
    x = torch.stack([to_tensor_pm1(read_image(f)) for f in files])
    assert lesion_ssim_batch(x, x.clone(), masks) == pytest.approx(1.0)
    assert lesion_ssim_batch(x, x.roll(4, dims=-1), masks) < 0.9
    with pytest.raises(StylsegError, match="one mask per image"):
        lesion_ssim_batch(x, x, masks[:2])
    with pytest.raises(StylsegError, match="no mask for nothere.png"):
        folder_masks(src, [src / "images" / "nothere.png"])
