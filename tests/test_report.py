"""The report: tables with the right numbers, radar charts, qualitative grid, index.html."""

import json

import numpy as np
import pytest

from stylseg import report
from stylseg.layout import RunLayout
from stylseg.manifest import ArmWriter
from stylseg.utils import write_json

from _fake_runs import fake_seg_runs


def make_run(root):
    """A run folder with hand-made predictions of 2 arms x 2 seeds on a 3-image target test set."""
    lay = RunLayout(root)
    test = lay.domain("target", "test")
    masks = fake_seg_runs(lay, {"direct": 0.4, "histogram": 0.8})
    w = ArmWriter(lay.stylized("histogram"), "histogram", "histogram", {}, source=test, size=16)
    w.add("0", np.zeros((16, 16, 3), np.uint8), masks[0])
    w.set_scores({"structure_ssim": 0.91, "style_fid": 12.5})
    write_json(lay.config, {"profile": "smoke", "seed": 0, "eval": {"protocol": "standard", "bootstrap": 100}})
    (lay.notebooks).mkdir(parents=True)
    (lay.notebooks / "06_segmentation.ipynb").write_text("{}")
    return lay


def test_build_report(tmp_path):
    lay = make_run(tmp_path / "run")
    index = report.build_report(lay.root)
    assert index == lay.index_html and index.is_file()
    ev = lay.eval
    for name in ("results.json", "results.md", "results_standard.csv", "results_paper.csv", "radar_unet.png",
                 "qualitative_target.png"):
        assert (ev / name).is_file(), name
    res = json.loads((ev / "results.json").read_text())
    rows = {(r["arm"], r["protocol"], r["metric"]): r for r in res["seg"]["rows"]}
    # the table's mean is the mean over seeds of each seed's evaluation
    seeds = [json.loads((lay.seg("unet", "histogram", s) / "metrics.json").read_text()) for s in (0, 1)]
    d = [s["tests"]["target"]["paper"]["metrics"]["dice"] for s in seeds]
    assert rows[("histogram", "paper", "dice")]["mean"] == pytest.approx(np.mean(d))
    assert rows[("histogram", "standard", "dice")]["mean"] > rows[("direct", "standard", "dice")]["mean"]
    assert res["stylizers"]["histogram"]["scores"]["structure_ssim"] == 0.91
    md = (ev / "results.md").read_text()
    assert f"{np.mean(d):.4f}" in md and "structure_ssim" in md
    html = index.read_text()
    for link in ("eval/radar_unet.png", "eval/qualitative_target.png", "notebooks/06_segmentation.ipynb",
                 "config.json", "stylized/histogram/manifest.json"):
        assert link in html, link
    # radar values: 1 - MAE on the last axis, means over seeds
    vals = report.radar_values(res["seg"], "unet", "target", "standard")
    assert vals["direct"][-1] == pytest.approx(1 - rows[("direct", "standard", "mae")]["mean"])


def test_report_without_seg_runs_and_cli(tmp_path):
    from stylseg.cli import main

    (tmp_path / "run").mkdir()
    assert main(["report", "--run", str(tmp_path / "run")]) == 0
    assert "No finished runs" in (tmp_path / "run" / "eval" / "results.md").read_text()
    assert main(["report", "--run", str(tmp_path / "nope")]) == 2
