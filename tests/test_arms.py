"""The arms beyond one folder: union arms (source + a stylized arm) and the colour-jitter arm."""

import json

import pytest

from stylseg.arms import make_union, union_arms
from stylseg.config import get_profile
from stylseg.data import check_folder
from stylseg.layout import RunLayout
from stylseg.seg.compare import arm_role, compare, compare_run
from stylseg.utils import StylsegError, write_json

from test_seg_train import TINY, make_folder


def _arm(layout, name, n, seed):
    """A stylized arm folder with a manifest, as notebook 05 writes one."""
    d = make_folder(layout.stylized(name), n=n, seed=seed, tint=(90, 150, 60))
    write_json(d / "manifest.json", {"arm": name, "method": "histogram", "params": {}, "items": []})
    return d


def test_union_has_every_pair_of_its_parts_and_is_remade_when_a_part_changes(tmp_path):
    src = make_folder(tmp_path / "src", n=5)
    st = make_folder(tmp_path / "st", n=5, seed=3, tint=(90, 150, 60))
    out = make_union(tmp_path / "u", [("source", src), ("st", st)])
    rep = check_folder(out)
    assert rep.ok and rep.n_pairs == 5 + 5
    names = sorted(p.stem for p in (out / "images").iterdir())
    assert names[0] == "source__0" and names[-1] == "st__4"
    man = json.loads((out / "manifest.json").read_text())
    assert man["method"] == "union" and [p["part"] for p in man["params"]["parts"]] == ["source", "st"]
    assert (out / "images" / "st__2.png").read_bytes() == (st / "images" / "2.png").read_bytes()
    # the same parts: kept as it is
    mtime = (out / "manifest.json").stat().st_mtime_ns
    make_union(tmp_path / "u", [("source", src), ("st", st)])
    assert (out / "manifest.json").stat().st_mtime_ns == mtime
    # a part gains an image: made again
    make_folder(tmp_path / "more", n=6, seed=3, tint=(90, 150, 60))
    for sub in ("images", "masks"):
        (tmp_path / "more" / sub / "5.png").rename(st / sub / "5.png")
    make_union(tmp_path / "u", [("source", src), ("st", st)])
    assert check_folder(out).n_pairs == 5 + 6


def test_union_arms_per_style_image_and_over_all(tmp_path):
    lay = RunLayout(tmp_path / "run")
    make_folder(lay.domain("source", "train"), n=4)
    stylized = {"st": _arm(lay, "st", 4, 1), "st@s1": _arm(lay, "st@s1", 4, 2), "recon": _arm(lay, "recon", 4, 3)}
    arms = union_arms(lay, {"source+st", "source+recon"}, stylized)
    assert sorted(arms) == ["source+recon", "source+st", "source+st@all", "source+st@s1"]
    assert check_folder(arms["source+st"]).n_pairs == 4 + 4  # |source| + |stylized|
    assert check_folder(arms["source+st@all"]).n_pairs == 4 + 4 + 4
    assert "every style image" in arm_role("source+st@all") and "style augmentation" in arm_role("source+st")
    with pytest.raises(StylsegError, match=r"eval.arms names source\+fda.*holds no arm 'fda'.*recon, st"):
        union_arms(lay, {"source+fda"}, stylized)


def test_compare_run_trains_union_and_jitter_arms_and_records_the_jitter(tmp_path):
    """The arms reach the results, the union arm trains on |source| + |st| pairs, and the jitter arm's run says
    which colour jitter it trained with (the direct arm none)."""
    lay = RunLayout(tmp_path / "run")
    make_folder(lay.domain("source", "train"), n=6)
    make_folder(lay.domain("target", "test"), n=4, seed=7, tint=(90, 150, 60))
    _arm(lay, "st", 6, 1)
    cfg = get_profile("smoke").override(**{**TINY, "seg.epochs": 1, "eval.arms": "direct,st,source+st,jitter"})
    res = compare_run(lay, cfg, seeds=1, make_baselines=False, progress=False, log=lambda *a: None)
    assert res["arms"] == ["direct", "st", "jitter", "source+st"]
    union = json.loads((lay.seg("unet", "source+st", 0) / "metrics.json").read_text())
    assert check_folder(union["train_dir"]).n_pairs == 12
    jit = json.loads((lay.seg("unet", "jitter", 0) / "metrics.json").read_text())
    assert jit["overrides"] == {"seg.color_jitter": True}
    assert set(jit["color_jitter"]) == {"brightness", "contrast", "saturation", "hue"}
    assert json.loads((lay.seg("unet", "jitter", 0) / "model" / "config.json").read_text())["train"][
        "color_jitter"] is True
    assert "overrides" not in json.loads((lay.seg("unet", "direct", 0) / "metrics.json").read_text())


def test_compare_refuses_overrides_for_an_arm_it_does_not_train(tmp_path):
    src = make_folder(tmp_path / "src", n=4)
    tgt = make_folder(tmp_path / "tgt", n=4, seed=7)
    cfg = get_profile("smoke").override(**TINY)
    with pytest.raises(StylsegError, match="overrides for arm 'jiter'"):
        compare(src, {}, {"target": tgt}, ["unet"], 1, tmp_path / "seg", cfg, arm_overrides={"jiter": {}},
                progress=False, log=lambda *a: None)
