"""The arms beyond one folder: union arms (source + a stylized arm) and the colour-jitter arm."""

import json

import pytest

from stylseg.study.arms import arm_role, make_union, union_arms
from stylseg.config import get_profile
from stylseg.data import check_folder
from stylseg.layout import RunLayout
from stylseg.study.compare import compare, compare_run
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


# --------------------------------------------------------------------------- the stylizers and their arms
def _tiny_run(root, styles=1, **sets):
    """A run folder with tiny data, a tiny D_A, ``styles`` style images and its config (as notebooks 00-02 leave
    it)."""
    import shutil

    from _testing import tiny_config, tiny_diffae, tiny_domains

    layout = RunLayout(root)
    cfg = tiny_config(**sets)
    dom = tiny_domains(root / "tmp_data", n=4)
    shutil.copytree(dom["source"], layout.domain("source", "train"))
    layout.style_image.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(dom["style"], layout.style_image)
    if styles > 1:
        others = sorted((dom["target"] / "images").iterdir())[1:styles]
        for k, p in enumerate(others, start=1):
            layout.style_file(k).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, layout.style_file(k))
        write_json(layout.split_json, {"params": {"styles": styles}})
    tiny_diffae(layout.diffae, cfg)
    return layout, cfg


def test_make_arms_fits_one_stylizer_per_style_image_and_writes_every_arm(tmp_path):
    """One library call (what notebooks 04 and 05, and so ``stylseg reproduce``, run): a stylizer per style image,
    then st, st_nospn, recon, the cheap baselines and the sensor arms per style image, each a paired folder whose
    manifest names the stylizer's preset; a second call writes nothing new."""
    from stylseg.study import make_arms

    layout, cfg = _tiny_run(tmp_path / "run", styles=2)
    arms = make_arms(layout, cfg, device="cpu", progress=False)
    per_style = {"st", "st_nospn", "histogram", "reinhard", "fda", "sensor", "st_sensor"}
    assert set(arms) == per_style | {a + "@s1" for a in per_style} | {"recon"}
    for name, folder in arms.items():
        assert folder == layout.stylized(name) and check_folder(folder).ok, name
        assert json.loads((folder / "manifest.json").read_text())["arm"] == name
    assert (layout.finetune / "model.safetensors").is_file() and (layout.finetune_for(1) / "model.safetensors").is_file()
    man = json.loads((arms["st@s1"] / "manifest.json").read_text())
    assert man["params"]["preset"] == "osasis" and man["params"]["sensor"] == "off"
    assert man["style"].endswith("style_1.png")
    stamps = lambda: {p: p.stat().st_mtime_ns for f in arms.values() for p in (f / "images").iterdir()}
    before, ft_stamp = stamps(), (layout.finetune / "model.safetensors").stat().st_mtime_ns
    assert make_arms(layout, cfg, device="cpu", progress=False) == arms
    assert stamps() == before
    assert (layout.finetune / "model.safetensors").stat().st_mtime_ns == ft_stamp


def test_make_arms_with_the_gates_preset_matches_the_sensor_in_st_and_names_missing_inputs(tmp_path):
    from stylseg.study import make_arms

    layout, cfg = _tiny_run(tmp_path / "run", **{"stylize.preset": "gates", "stylize.style_pair_tries": 2})
    arms = make_arms(layout, cfg, device="cpu", progress=False)
    assert "st_sensor" not in arms  # st holds the style image's blur and noise already
    p = json.loads((arms["st"] / "manifest.json").read_text())["params"]
    assert (p["preset"], p["sensor"], p["structure_region"], p["upsample"]) == ("gates", "match", "lesion",
                                                                                 "detail_lesion")
    assert p["preset_changes"] == {"stylize.style_pair_tries": 2}
    empty = RunLayout(tmp_path / "empty")
    with pytest.raises(StylsegError, match=r"diffae.*D_A is missing; make it first with notebook 02"):
        make_arms(empty, cfg, device="cpu", progress=False)
