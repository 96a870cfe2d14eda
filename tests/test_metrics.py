"""Metrics against hand-computed cases, in both protocols (docs/method.md section 6)."""

import json

import numpy as np
import pytest

from stylseg import metrics
from stylseg.data.io import write_image, write_mask
from stylseg.utils import StylsegError

GT = np.array([[1, 0], [1, 0]], dtype=bool)


def ev(pred, gt, protocol):
    return metrics.evaluate_arrays([np.asarray(pred, dtype=np.float64)], [gt], protocol=protocol)["metrics"]


def test_paper_protocol_hand_computed():
    # pred 1.0 on one lesion pixel, 0.5 on the other, 0 elsewhere. Thresholds t_i = 1 - i/255:
    # t > 0.5 (i = 0..127, 128 thresholds): TP=1 FN=1 -> Dice 2/3, IoU 1/2, spec 1
    # 0 < t <= 0.5 (127 thresholds): perfect -> 1, 1, 1;  t = 0: all positive -> 2/3, 1/2, spec 0
    m = ev([[1.0, 0.0], [0.5, 0.0]], GT, "paper")
    assert m["dice"] == pytest.approx((128 * 2 / 3 + 127 + 2 / 3) / 256)
    assert m["iou"] == pytest.approx((128 * 0.5 + 127 + 0.5) / 256)
    assert m["specificity"] == pytest.approx(255 / 256)
    assert m["mae"] == pytest.approx(0.5 / 4)


def test_paper_protocol_zero_when_no_true_positive_and_no_minmax():
    # lesion pixel never predicted except at t = 0: every value (specificity too) is 0 while TP = 0
    m = ev([[0.0, 1.0], [0.0, 0.0]], np.array([[1, 0], [0, 0]], bool), "paper")
    assert m["dice"] == pytest.approx(0.4 / 256)  # t = 0: TP=1, FP=3 -> 2/(2+3)
    assert m["iou"] == pytest.approx(0.25 / 256)
    assert m["specificity"] == 0.0
    # no min-max: a map in [0.2, 0.6] is read as is
    m2 = ev([[0.6, 0.2], [0.4, 0.2]], GT, "paper")
    assert m2["mae"] == pytest.approx((0.4 + 0.2 + 0.6 + 0.2) / 4)


def test_standard_protocol_minmax_and_thresholds():
    # [0.6,0.2;0.4,0.2] min-max normalises to [1,0;0.5,0]; u8 thresholds T=255..0:
    # T >= 128 (128 thr): Dice 2/3; 1 <= T <= 127 (127): 1; T = 0: 2/3  -> same as the paper case
    m = ev([[0.6, 0.2], [0.4, 0.2]], GT, "standard")
    assert m["dice"] == pytest.approx((128 * 2 / 3 + 127 + 2 / 3) / 256)
    assert m["mae"] == pytest.approx(0.5 / 4)
    assert m["dice_max"] == pytest.approx(1.0)
    # specificity is NOT zeroed when TP = 0 in the standard protocol
    m = ev([[0.0, 1.0], [0.0, 0.0]], np.array([[1, 0], [0, 0]], bool), "standard")
    assert m["dice"] == pytest.approx(0.4 / 256)
    assert m["specificity"] == pytest.approx(255 * (2 / 3) / 256)


def test_s_object_e_measure_and_wfm_simple_cases():
    g = np.zeros((4, 4), bool)
    g[1:3, 1:3] = True
    # constant 0.5 map: O_FG = O_BG = 2*0.5/(0.25+1+0) = 0.8
    assert metrics.s_object(np.full((4, 4), 0.5), g) == pytest.approx(0.8)
    assert metrics.s_object(g.astype(float), g) == pytest.approx(1.0)
    # E-measure of a perfect soft map: align = 1 everywhere -> N/(N-1); constant map: align 0 -> 0.25 N/(N-1)
    assert metrics.e_measure_soft(g.astype(float), g) == pytest.approx(16 / 15)
    assert metrics.e_measure_soft(np.full((4, 4), 0.5), g) == pytest.approx(0.25 * 16 / 15)
    assert metrics.e_measure_soft(np.zeros((4, 4)), np.zeros((4, 4), bool)) == pytest.approx(16 / 15)
    perfect_paper = ev(g.astype(float), g, "paper")
    assert perfect_paper["wfm"] == pytest.approx(1.0)
    assert perfect_paper["s_alpha"] == pytest.approx(1.0)
    perfect_std = ev(g.astype(float), g, "standard")
    assert perfect_std["s_alpha"] == pytest.approx(1.0)  # object and region terms both 1
    assert perfect_std["wfm"] == pytest.approx(1.0)
    assert perfect_std["e_max"] == pytest.approx(16 / 15)
    assert perfect_std["mae"] == 0.0
    # empty ground truth: F^w is 0 by convention
    assert ev(np.zeros((4, 4)), np.zeros((4, 4), bool), "paper")["wfm"] == 0.0


def test_uint8_input_equals_float_input():
    rng = np.random.default_rng(0)
    p8 = rng.integers(0, 256, size=(8, 8)).astype(np.uint8)
    g = rng.random((8, 8)) > 0.6
    for prot in metrics.PROTOCOLS:
        a = metrics.evaluate_arrays([p8], [g], prot)["metrics"]
        b = metrics.evaluate_arrays([p8 / 255.0], [g.astype(np.uint8) * 255], prot)["metrics"]
        for k in a:
            assert a[k] == pytest.approx(b[k]), (prot, k)


def test_unknown_protocol_lists_valid():
    with pytest.raises(StylsegError, match="standard, paper"):
        metrics.evaluate_arrays([np.zeros((2, 2))], [GT], "nope")


def test_evaluate_folder_resize_missing_extra_nonbinary(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    g = np.zeros((8, 8), bool)
    g[2:6, 2:6] = True
    write_mask(gt_dir / "masks" / "a.png", g)
    write_mask(gt_dir / "masks" / "b.png", g)
    write_image(pred_dir / "a.png", (g * 255).astype(np.uint8))
    with pytest.raises(StylsegError, match="b.png"):  # missing prediction named
        metrics.evaluate_folder(pred_dir, gt_dir)
    # a prediction at twice the size is resized to the mask (nearest-like for a blocky map)
    big = np.kron(g, np.ones((2, 2), bool))
    write_image(pred_dir / "b.png", (big * 255).astype(np.uint8))
    write_image(pred_dir / "extra.png", np.zeros((8, 8), np.uint8))
    with pytest.warns(UserWarning, match="extra"):
        res = metrics.evaluate_folder(pred_dir, gt_dir, protocol="paper")
    assert res["n_images"] == 2 and res["resized_predictions"] == ["b"]
    assert res["extra_predictions"] == ["extra"]
    assert res["metrics"]["mae"] < 0.05
    # non-binary ground truth is thresholded at 128 and reported by name
    from PIL import Image

    soft = (g * 200 + 20).astype(np.uint8)
    Image.fromarray(soft).save(gt_dir / "masks" / "b.png")
    with pytest.warns(UserWarning, match="not binary"):
        res = metrics.evaluate_folder(pred_dir, gt_dir / "masks")
    assert res["non_binary_gt"] == ["b"]


def test_cli_json_and_csv(tmp_path):
    from stylseg.cli import main

    g = np.zeros((6, 6), bool)
    g[1:4, 1:4] = True
    write_mask(tmp_path / "gt" / "x.png", g)
    write_image(tmp_path / "pred" / "x.png", (g * 255).astype(np.uint8))
    rc = main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--protocol", "paper",
               "--json", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv")])
    assert rc == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["protocol"] == "paper" and r["n_images"] == 1
    assert set(metrics.PAPER_METRICS) <= set(r["metrics"])
    # perfect binary map: Dice 1 at every t > 0; at t = 0 all 36 pixels are positive: 18/(18+27)
    assert r["metrics"]["dice"] == pytest.approx((255 + 18 / 45) / 256)
    assert (tmp_path / "r.csv").read_text().splitlines()[0].startswith("name,")


def test_bootstrap_ci_brackets_mean():
    v = np.linspace(0, 1, 21)
    lo, hi = metrics.bootstrap_ci(v, n=500)
    assert lo < v.mean() < hi
    assert metrics.bootstrap_ci([0.3]) == (0.3, 0.3)
