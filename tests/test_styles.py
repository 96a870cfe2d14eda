"""One-shot spread (``--styles K``): arms per style image, their names, and the spread table."""

import json

import numpy as np
import pytest

from stylseg import report
from stylseg.stylize import baselines
from stylseg.data.io import read_image, write_image, write_mask
from stylseg.layout import RunLayout, arm_name, split_arm
from stylseg.study.arms import arm_order
from stylseg.study.tables import aggregate, style_spread, style_spread_markdown
from stylseg.utils import write_json

from _fake_runs import fake_seg_runs


def test_arm_names_round_trip():
    for arm in ("st", "st_nospn", "histogram", "fda"):
        assert arm_name(arm, 0) == arm
        for k in (0, 1, 12):
            assert split_arm(arm_name(arm, k)) == (arm, k)
    assert arm_name("st", 2) == "st@s2"
    assert split_arm("odd@sx") == ("odd@sx", 0) and split_arm("@s3") == ("@s3", 0)


def test_arm_order_keeps_styles_with_their_arm():
    names = ["oracle", "fda@s1", "histogram@s2", "st@s1", "direct", "histogram", "st", "fda", "histogram@s1", "recon"]
    assert arm_order(names) == ["direct", "st", "st@s1", "recon", "histogram", "histogram@s1", "histogram@s2", "fda",
                             "fda@s1", "oracle"]


def _pairs(folder, rng, n=2):
    """``n`` random 12 px images with one rectangular lesion each, as a paired folder."""
    for i in range(n):
        write_image(folder / "images" / f"{i}.png", rng.integers(60, 200, (12, 12, 3)).astype(np.uint8))
        m = np.zeros((12, 12), bool)
        m[3:8, 2:9] = True
        write_mask(folder / "masks" / f"{i}.png", m)


def _split(lay, styles):
    write_json(lay.split_json, {"params": {"styles": styles}, "splits": {}})


def test_style_images_follow_the_split(tmp_path):
    lay = RunLayout(tmp_path / "run")
    assert lay.style_images() == [lay.style_image]  # no split.json yet: one style image
    _split(lay, 3)
    assert lay.style_images() == [lay.style_image, lay.data / "styles" / "style_1.png",
                                  lay.data / "styles" / "style_2.png"]
    assert lay.finetune_for(0) == lay.finetune and lay.finetune_for(2) == lay.root / "finetune@s2"


def test_baseline_arms_repeat_per_style_image(tmp_path):
    lay = RunLayout(tmp_path / "run")
    _pairs(lay.domain("source", "train"), np.random.default_rng(0))
    _split(lay, 2)
    write_image(lay.style_image, np.full((12, 12, 3), (200, 40, 40), np.uint8))
    with pytest.raises(Exception, match="style_1.png"):  # the second style image is missing: named
        baselines.ensure_baseline_arms(lay, 12, progress=False)
    write_image(lay.data / "styles" / "style_1.png", np.full((12, 12, 3), (30, 60, 210), np.uint8))
    arms = baselines.ensure_baseline_arms(lay, 12, progress=False)
    assert sorted(arms) == ["fda", "fda@s1", "histogram", "histogram@s1", "reinhard", "reinhard@s1"]
    a = read_image(lay.stylized("histogram") / "images" / "0.png").astype(float)
    b = read_image(lay.stylized("histogram@s1") / "images" / "0.png").astype(float)
    assert a[..., 0].mean() > a[..., 2].mean() and b[..., 2].mean() > b[..., 0].mean()  # each took its own style
    man = json.loads((lay.stylized("histogram@s1") / "manifest.json").read_text())
    assert man["arm"] == "histogram@s1" and man["method"] == "histogram"


def test_style_spread_table(tmp_path):
    lay = RunLayout(tmp_path / "run")
    fake_seg_runs(lay, {"direct": 0.3, "histogram": 0.9, "histogram@s1": 0.5, "histogram@s2": 0.7, "fda": 0.6})
    res = aggregate(lay.root / "seg", n_boot=50)
    rows = {(r["arm"], r["protocol"], r["metric"]): r["mean"] for r in res["rows"] if r["test"] == "target"}
    sp = [r for r in res["style_spread"] if r["metric"] == "dice" and r["protocol"] == "standard"]
    assert [r["arm"] for r in sp] == ["histogram"]  # fda and direct have one style image: no spread row
    r = sp[0]
    per = [rows[(a, "standard", "dice")] for a in ("histogram", "histogram@s1", "histogram@s2")]
    assert r["styles"] == [0, 1, 2] and r["values"] == pytest.approx(per)
    assert r["min"] == pytest.approx(min(per)) and r["max"] == pytest.approx(max(per))
    assert r["mean"] == pytest.approx(np.mean(per)) and r["max"] - r["min"] > 0.05
    md = (lay.root / "seg" / "results.md").read_text()
    assert "Spread over style images" in md and f"{min(per):.4f}-{max(per):.4f}" in md
    assert style_spread_markdown(res) in md
    # figures show the style-0 arms only; a one-style run has no spread
    assert report.primary_arms(res) == ["direct", "histogram", "fda"]
    assert "histogram@s1" not in report.radar_values(res, "unet", "target", "standard")
    one = {**res, "rows": [x for x in res["rows"] if "@s" not in x["arm"]]}
    assert style_spread(one) == [] and style_spread_markdown({**one, "style_spread": []}) == ""


def test_gap_closed_only_where_there_is_a_gap(tmp_path):
    """On a test set where the oracle is no better than direct (the source test set) there is no gap to close."""
    from stylseg.study.tables import gap_closed

    lay = RunLayout(tmp_path / "run")
    fake_seg_runs(lay, {"direct": 0.3, "histogram": 0.6, "oracle": 0.9}, seeds=(0,))
    res = aggregate(lay.root / "seg", n_boot=20)
    g = gap_closed(res, "unet", "histogram", "target", "standard")
    t = {(r["arm"]): r["mean"] for r in res["rows"] if r["metric"] == "dice" and r["protocol"] == "standard"}
    assert g == pytest.approx((t["histogram"] - t["direct"]) / (t["oracle"] - t["direct"])) and 0 < g < 1
    lay2 = RunLayout(tmp_path / "run2")
    fake_seg_runs(lay2, {"direct": 0.9, "histogram": 0.6, "oracle": 0.3}, seeds=(0,))
    assert gap_closed(aggregate(lay2.root / "seg", n_boot=20), "unet", "histogram", "target", "standard") is None


def test_eval_arms_selects_what_is_trained(tmp_path, monkeypatch):
    """``--set eval.arms=...`` decides which arms notebook 06 trains (with their ``@s<k>`` copies); the
    baselines left out are not even made; a name that no folder holds is an error naming what there is."""
    from stylseg.config import get_profile
    import importlib

    cmp = importlib.import_module("stylseg.study.compare")

    lay = RunLayout(tmp_path / "run")
    rng = np.random.default_rng(0)
    for part in ("source/train", "target/train", "target/test"):
        _pairs(lay.data / part, rng)
    _split(lay, 2)
    write_image(lay.style_image, np.full((12, 12, 3), (200, 40, 40), np.uint8))
    write_image(lay.data / "styles" / "style_1.png", np.full((12, 12, 3), (30, 60, 210), np.uint8))
    for arm in ("st", "st@s1", "st_nospn", "recon"):  # what notebook 05 writes
        write_json(lay.stylized(arm) / "manifest.json", {"arm": arm, "items": []})
        (lay.stylized(arm) / "images").mkdir(parents=True)
    seen = {}
    monkeypatch.setattr(cmp, "compare", lambda train, arms, tests, archs, seeds, out, cfg, oracle_dir=None, **kw:
                        seen.update(arms=list(arms), oracle=oracle_dir, tests=sorted(tests)))

    cfg = get_profile("smoke").override(**{"eval.arms": "direct,st,recon,histogram"})
    cmp.compare_run(lay, cfg, progress=False, log=lambda *a: None)
    assert seen["arms"] == ["st", "st@s1", "recon", "histogram", "histogram@s1"] and seen["oracle"] is None
    assert not lay.stylized("fda").exists() and not lay.stylized("reinhard@s1").exists()  # never made

    cmp.compare_run(lay, get_profile("smoke"), progress=False, log=lambda *a: None)  # default: everything
    assert seen["arms"] == ["st", "st@s1", "st_nospn", "recon", "jitter", "source+st", "source+st@s1",
                            "source+st@all", "source+recon", "histogram", "histogram@s1", "source+histogram",
                            "source+histogram@s1", "source+histogram@all", "reinhard", "reinhard@s1", "fda", "fda@s1"]
    assert seen["oracle"] == lay.domain("target", "train")

    with pytest.raises(Exception, match=r"stt.*it has: fda, histogram, recon, reinhard, st, st_nospn"):
        cmp.compare_run(lay, cfg.override(**{"eval.arms": "direct,stt"}), progress=False, log=lambda *a: None)
