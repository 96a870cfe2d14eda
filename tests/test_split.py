"""prepare_run_data: synthetic runs, given folders, the paper-polyp and paper-skin protocols;
idempotent, resumable, and no CVC-ColonDB sequence split across train and test."""

import json

import numpy as np
import pytest
from PIL import Image

from stylseg.cli import main
from stylseg.config import get_profile
from stylseg.data import prepare_run_data
from stylseg.data import split as split_mod
from stylseg.data.check import check_folder
from stylseg.data.split import COLONDB_SEQUENCES, colondb_sequence, polyp_protocol_names, skin_protocol_names
from stylseg.layout import RunLayout
from stylseg.utils import StylsegError


def small_cfg(**kw):
    over = {"data.n_per_domain": 16, "data.synth_size": 32, "data.seg_size": 16}
    over.update(kw)
    return get_profile("smoke").override(**over)


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _names(folder):
    return sorted(p.stem for p in (folder / "images").iterdir())


# --------------------------------------------------------------------------- synthetic
def test_synthetic_run_data(tmp_path):
    layout = RunLayout(tmp_path / "run")
    cfg = small_cfg()
    res = prepare_run_data(layout, cfg, styles=3, progress=False)
    for key in ("source_train", "source_test", "target_train", "target_test"):
        rep = check_folder(res[key])
        assert rep.ok and rep.sizes == {"16x16": rep.n_pairs}
    assert [len(_names(res[k])) for k in ("source_train", "source_test", "target_train", "target_test")] == [12, 4, 12, 4]
    assert not set(_names(res["source_train"])) & set(_names(res["source_test"]))
    doc = json.loads(layout.split_json.read_text())
    assert doc["protocol"] == "synthetic" and doc["params"]["source_domain"] == "clinic"
    assert doc["params"]["target_domain"] == "colon" and doc["sizes"]["target/test"] == 4
    # style.png is one of the target TRAIN images, styles/style_0 is the same, the others differ
    style = np.asarray(Image.open(res["style"]))
    train_imgs = {n: np.asarray(Image.open(res["target_train"] / "images" / f"{n}.png")) for n in _names(res["target_train"])}
    assert any(np.array_equal(style, v) for v in train_imgs.values())
    assert len(res["styles"]) == 3 and np.array_equal(np.asarray(Image.open(res["styles"][0])), style)
    s1, s2 = (np.asarray(Image.open(p)) for p in res["styles"][1:])
    assert not np.array_equal(s1, style) and not np.array_equal(s1, s2)
    # source and target scenes differ (different scene seeds)
    src0 = np.asarray(Image.open(res["source_train"] / "masks" / f"{_names(res['source_train'])[0]}.png"))
    assert not all(np.array_equal(src0, np.asarray(Image.open(res["target_train"] / "masks" / f"{n}.png")))
                   for n in _names(res["target_train"])[:1])


def test_idempotent_resumes_and_refuses_other_parameters(tmp_path):
    layout = RunLayout(tmp_path / "run")
    cfg = small_cfg()
    res = prepare_run_data(layout, cfg, progress=False)
    f = res["source_train"] / "images" / f"{_names(res['source_train'])[0]}.png"
    before, split_before = f.stat().st_mtime_ns, layout.split_json.stat().st_mtime_ns
    again = prepare_run_data(layout, cfg, progress=False)
    assert again == res and f.stat().st_mtime_ns == before and layout.split_json.stat().st_mtime_ns == split_before
    # an interrupted run: a missing file and a missing style are completed, identically
    content = f.read_bytes()
    f.unlink()
    layout.style_image.unlink()
    prepare_run_data(layout, cfg, progress=False)
    assert f.read_bytes() == content and layout.style_image.is_file()
    with pytest.raises(StylsegError, match=r"split\.json: the run's data was prepared with other parameters "
                                           r"\(differ: n_per_domain\).*another RUN_DIR"):
        prepare_run_data(layout, small_cfg(**{"data.n_per_domain": 20}), progress=False)


def test_style_seed_changes_only_the_style(tmp_path):
    a = prepare_run_data(RunLayout(tmp_path / "a"), small_cfg(seed=0), progress=False)
    b = prepare_run_data(RunLayout(tmp_path / "b"), small_cfg(seed=3), progress=False)
    assert _names(a["source_train"]) == _names(b["source_train"])
    sa, sb = (json.loads(p.read_text())["style"]["style.png"] for p in (a["split"], b["split"]))
    assert sa != sb


def test_skin_kind_and_unknown_names(tmp_path):
    res = prepare_run_data(RunLayout(tmp_path / "s"), small_cfg(), kind="skin", progress=False)
    assert json.loads(res["split"].read_text())["params"]["target_domain"] == "derm_pink"
    with pytest.raises(StylsegError, match=r"unknown synthetic data kind 'eye'; valid names: polyp, skin"):
        prepare_run_data(RunLayout(tmp_path / "e"), small_cfg(), kind="eye")
    with pytest.raises(StylsegError, match=r"unknown polyp domain 'x'; valid names: clinic, colon, etis"):
        prepare_run_data(RunLayout(tmp_path / "x"), small_cfg(**{"data.target_domain": "x"}))
    with pytest.raises(StylsegError, match=r"unknown protocol 'paper'; valid protocols: paper-polyp, paper-skin"):
        prepare_run_data(RunLayout(tmp_path / "p"), small_cfg(), protocol="paper")


# --------------------------------------------------------------------------- given folders
def _paired(root, n, h=10, w=12, value=0):
    for i in range(n):
        _png(root / "images" / f"{i}.png", np.full((h, w, 3), (value + 10 * i) % 256, np.uint8))
        m = np.zeros((h, w), np.uint8)
        m[2:6, 2:6] = 255
        _png(root / "masks" / f"{i}.png", m)
    return root


def test_given_folders(tmp_path):
    src = _paired(tmp_path / "src", 8)
    _paired(tmp_path / "tgt" / "train", 5, value=3)
    _paired(tmp_path / "tgt" / "test", 3, value=5)
    style = tmp_path / "style.jpg"
    Image.fromarray(np.full((20, 30, 3), 77, np.uint8)).save(style)
    layout = RunLayout(tmp_path / "run")
    res = prepare_run_data(layout, small_cfg(), source=str(src), target=str(tmp_path / "tgt"), style=str(style),
                           progress=False)
    assert len(_names(res["source_train"])) == 6 and len(_names(res["source_test"])) == 2
    assert _names(res["target_train"]) == [str(i) for i in range(5)] and len(_names(res["target_test"])) == 3
    assert check_folder(res["target_test"]).sizes == {"16x16": 3}
    st = np.asarray(Image.open(res["style"]))
    assert st.shape == (16, 16, 3) and abs(int(st.mean()) - 77) <= 2
    with pytest.raises(StylsegError, match=r"the target folder is missing: give both"):
        prepare_run_data(RunLayout(tmp_path / "r2"), small_cfg(), source=str(src))
    with pytest.raises(StylsegError, match=r"nothing: folder not found"):
        prepare_run_data(RunLayout(tmp_path / "r3"), small_cfg(), source=str(src), target=str(tmp_path / "nothing"))


def test_changed_source_or_style_content_stops_naming_it(tmp_path):
    """Same command, same paths, other pixels: the stale copies are never reused silently."""
    src, tgt = _paired(tmp_path / "src", 6), _paired(tmp_path / "tgt", 6, value=3)
    style = tmp_path / "style.png"
    _png(style, np.full((20, 20, 3), 77, np.uint8))
    layout = RunLayout(tmp_path / "run")
    kw = dict(source=str(src), target=str(tgt), style=str(style), progress=False)
    prepare_run_data(layout, small_cfg(), **kw)
    before = (layout.data / "split.json").read_bytes()
    prepare_run_data(layout, small_cfg(), **kw)  # unchanged input: reused
    img = src / "images" / "0.png"
    _png(img, 255 - np.asarray(Image.open(img)))
    with pytest.raises(StylsegError, match=rf"content of the input changed.*the source {src} .*--out NEW_DIR"):
        prepare_run_data(layout, small_cfg(), **kw)
    _png(img, 255 - np.asarray(Image.open(img)))  # back as it was
    prepare_run_data(layout, small_cfg(), **kw)
    _png(style, np.full((20, 20, 3), 200, np.uint8))
    with pytest.raises(StylsegError, match=rf"the style {style} \(1 file, sha256 [0-9a-f]+ -> 1 file,"):
        prepare_run_data(layout, small_cfg(), **kw)
    assert (layout.data / "split.json").read_bytes() == before


def test_prepare_takes_the_stage_lock_before_reading_split_json(tmp_path, monkeypatch):
    """A second `data prepare` into a folder being prepared stops at once; split.json is read under the lock."""
    from stylseg.lock import stage_lock

    layout = RunLayout(tmp_path / "run")
    with stage_lock(layout.data, "data prepare"):
        with pytest.raises(StylsegError, match=r"is writing into this folder"):
            prepare_run_data(layout, small_cfg(), progress=False)
    assert not layout.split_json.exists()
    seen = []
    real = split_mod.read_json
    monkeypatch.setattr(split_mod, "read_json", lambda p: (seen.append((layout.data / ".stylseg.lock").exists()),
                                                           real(p))[1])
    prepare_run_data(layout, small_cfg(), progress=False)
    prepare_run_data(layout, small_cfg(), progress=False)
    assert seen and all(seen)


# --------------------------------------------------------------------------- paper-polyp
CLINIC_MISSING = set(range(14, 600, 10))  # 59 frames absent, as in the shared copy (550 of 612)


def fake_cvc(base):
    """polyp/CVC-ClinicDB (frames 1-612 minus some) and polyp/CVC-ColonDB (1-380), 6x8 px, value = frame % 251."""
    for name, frames in (("CVC-ClinicDB", [f for f in range(1, 613) if f not in CLINIC_MISSING]),
                         ("CVC-ColonDB", range(1, 381))):
        root = base / "polyp" / name
        for f in frames:
            _png(root / "images" / f"{f}.png", np.full((6, 8, 3), f % 251, np.uint8))
            m = np.zeros((6, 8), np.uint8)
            m[1:4, 2:5] = 255
            _png(root / "masks" / f"{f}.png", m)
    return base


def check_polyp_protocol(fr, clinic, colon):
    train = fr["source/train"]
    assert len(train) == 178 == len(set(train)) and max(train) < 491
    # whole contiguous blocks of 25 frame numbers, at most one cut short
    blocks = {}
    for f in train:
        blocks.setdefault((f - 1) // 25, []).append(f)
    partial = [b for b, fs in blocks.items() if fs != [f for f in sorted(clinic) if (f - 1) // 25 == b]]
    assert len(partial) <= 1
    assert fr["source/test"] == [f for f in sorted(clinic) if 491 <= f <= 612]
    # the paper's 20 test frames (its prediction maps matched against every CVC-ColonDB mask)
    assert fr["target/test"] == [125, 136, 140, 141, 142, 145, 149, 150, 160, 161, 162, 165, 166, 170, 174, 175,
                                 176, 177, 189, 201]
    assert fr["target/test_seq11"] == list(range(226, 264))
    assert all(colondb_sequence(s) in (6, 9) for s in fr["style"]) and not set(fr["style"]) & set(fr["target/test"])
    # no oracle training frame is in any test set, and no sequence is divided between oracle train and a test set
    seq_train = {colondb_sequence(f) for f in fr["target/train"]}
    for key in ("target/test", "target/test_seq11", "target/test_all"):
        assert not set(fr["target/train"]) & set(fr[key])
        assert not seq_train & {colondb_sequence(f) for f in fr[key]}
    assert {colondb_sequence(f) for f in fr["target/test"]} == {6, 7, 9}
    assert sorted(fr["target/test_all"] + fr["target/train"]) == sorted(colon)
    assert len(fr["target/test_all"]) == (148 - 98 + 1) + (155 - 149 + 1) + (203 - 156 + 1) + (263 - 209 + 1)


def test_colondb_sequence_table_covers_1_to_380_once():
    covered = sorted(f for a, b, _ in COLONDB_SEQUENCES for f in range(a, b + 1))
    assert covered == list(range(1, 381))
    assert colondb_sequence(226) == 11 and colondb_sequence(300) == 15 and colondb_sequence(301) == 4
    with pytest.raises(StylsegError, match="outside 1-380"):
        colondb_sequence(381)


def test_polyp_protocol_names_rules_and_seeds():
    clinic = [f for f in range(1, 613) if f not in CLINIC_MISSING]
    colon = list(range(1, 381))
    fr = polyp_protocol_names(clinic, colon, seed=0, style_seed=0, styles=2)
    check_polyp_protocol(fr, clinic, colon)
    assert polyp_protocol_names(clinic, colon, 0, 0, 2) == fr
    other = polyp_protocol_names(clinic, colon, seed=1, style_seed=0, styles=2)
    assert other["source/train"] != fr["source/train"] and other["style"] == fr["style"]


def test_paper_polyp_materialised(tmp_path):
    data = fake_cvc(tmp_path / "data")
    layout = RunLayout(tmp_path / "run")
    res = prepare_run_data(layout, small_cfg(**{"data.seg_size": 8}), protocol="paper-polyp", data_dir=str(data),
                           progress=False)
    doc = json.loads(layout.split_json.read_text())
    fr = {k: [int(n) for n in v] for k, v in doc["splits"].items()}
    clinic = [f for f in range(1, 613) if f not in CLINIC_MISSING]
    fr["style"] = [int(doc["style"]["style.png"].rsplit("/", 1)[1].split(".")[0])]
    check_polyp_protocol(fr, clinic, list(range(1, 381)))
    assert doc["sizes"] == {"source/train": 178, "source/test": len(fr["source/test"]), "target/test": 20,
                            "target/test_seq11": 38, "target/test_all": 161, "target/train": 219}
    assert res["target_test_all"] == layout.domain("target", "test_all")
    # files carry the right frames: value = frame % 251
    for key, which in (("source/train", "source"), ("target/test", "target")):
        f = fr[key][0]
        img = np.asarray(Image.open(layout.domain(which, key.split("/")[1]) / "images" / f"{f}.png"))
        assert img.shape == (8, 8, 3) and int(img[0, 0, 0]) == f % 251
    assert int(np.asarray(Image.open(res["style"]))[0, 0, 0]) == fr["style"][0] % 251
    with pytest.raises(StylsegError, match=r"CVC-ClinicDB and CVC-ColonDB not found.*polyp/CVC-ClinicDB"):
        prepare_run_data(RunLayout(tmp_path / "r2"), small_cfg(), protocol="paper-polyp", data_dir=str(tmp_path))
    with pytest.raises(StylsegError, match=r"paper-polyp is for kind polyp"):
        prepare_run_data(RunLayout(tmp_path / "r3"), small_cfg(), kind="skin", protocol="paper-polyp",
                         data_dir=str(data))


@pytest.mark.realdata
def test_paper_polyp_names_on_real_data(real_data):
    clinic = [int(p.stem) for p in (real_data / "polyp" / "CVC-ClinicDB" / "images").iterdir()]
    colon = [int(p.stem) for p in (real_data / "polyp" / "CVC-ColonDB" / "images").iterdir()]
    assert len(clinic) == 550 and len(colon) == 380
    fr = polyp_protocol_names(clinic, colon, seed=0, style_seed=0)
    check_polyp_protocol(fr, clinic, colon)
    # the frames the kit uses are the real dataset's frames: each test mask holds a polyp
    from stylseg.data.io import read_mask

    for f in fr["target/test"] + fr["style"]:
        assert read_mask(real_data / "polyp" / "CVC-ColonDB" / "masks" / f"{f}.png").any(), f


# --------------------------------------------------------------------------- paper-skin
BG = {"pink": (235, 140, 150), "white": (246, 242, 238), "tan": (190, 160, 130)}


def fake_ham(root, per=8):
    names = {}
    k = 0
    for kind, rgb in BG.items():
        for j in range(per):
            n = f"ISIC_{k:07d}"
            img = np.zeros((20, 24, 3), np.uint8)
            img[:] = np.clip(np.array(rgb) + (j - per // 2) * 2, 0, 255)
            img[0:2, 0:2] = 0  # a black corner: ignored by the rule (L* < 20)
            m = np.zeros((20, 24), np.uint8)
            m[6:14, 8:16] = 255
            img[m > 0] = (90, 50, 30)
            part = 1 if k % 2 == 0 else 2
            _png(root / f"HAM10000_images_part_{part}" / f"{n}.jpg", img)
            _png(root / "HAM10000_segmentations_lesion_tschandl" / f"{n}_segmentation.png", m)
            names[n] = kind
            k += 1
    return names


def test_background_rule_on_hand_made_backgrounds():
    from stylseg.data.split import background_lab

    img = np.zeros((10, 10, 3), np.uint8)
    img[:] = BG["pink"]
    mask = np.zeros((10, 10), bool)
    mask[3:7, 3:7] = True
    img[mask] = (20, 200, 20)  # a green lesion must not count
    L, a = background_lab(img, mask)
    from skimage.color import rgb2lab

    ref = rgb2lab(np.array([[BG["pink"]]], np.uint8))[0, 0]
    assert L == pytest.approx(ref[0], abs=1e-6) and a == pytest.approx(ref[1], abs=1e-6)


def test_skin_protocol_names_with_lesion_groups():
    stats = {f"p{i}": (60.0, 30.0 + i) for i in range(6)}
    stats.update({f"w{i}": (95.0 - i, 2.0) for i in range(6)})
    stats.update({f"t{i}": (70.0, 12.0) for i in range(6)})
    p = {"n_source": 3, "n_test": 2, "n_target_train": 2}
    fr = skin_protocol_names(stats, 0, 0, styles=1, p=p)
    assert set(fr["target/test"]) | set(fr["style"]) == {"p5", "p4", "p3"}
    assert fr["target/train"] == ["p1", "p2"] and fr["source/train"] == ["w0", "w1", "w2"]
    # w0 is another picture of a target lesion: it is kept out of the source domain
    fr2 = skin_protocol_names(stats, 0, 0, styles=1, p=p, groups={"w0": "L1", "p5": "L1"})
    assert fr2["source/train"] == ["w1", "w2", "w3"]
    with pytest.raises(StylsegError, match="needs at least"):
        skin_protocol_names(stats, 0, 0, p={"n_source": 30})


def test_paper_skin_materialised(tmp_path, monkeypatch):
    monkeypatch.setitem(split_mod.PAPER_SKIN, "n_source", 6)
    monkeypatch.setitem(split_mod.PAPER_SKIN, "n_test", 4)
    monkeypatch.setitem(split_mod.PAPER_SKIN, "n_target_train", 3)
    ham = tmp_path / "data" / "skin" / "HAM10000"
    kinds = fake_ham(ham)
    (ham / "HAM10000_metadata.csv").write_text("lesion_id,image_id,dx\n" + "".join(
        f"HAM_{i:07d},{n},nv\n" for i, n in enumerate(sorted(kinds))))
    layout = RunLayout(tmp_path / "run")
    res = prepare_run_data(layout, small_cfg(), kind="skin", protocol="paper-skin", data_dir=str(tmp_path / "data"),
                           progress=False)
    doc = json.loads(layout.split_json.read_text())
    assert {kinds[n] for n in doc["splits"]["target/test"]} == {"pink"} and len(doc["splits"]["target/test"]) == 4
    assert {kinds[n] for n in doc["splits"]["source/train"]} == {"white"} and len(doc["splits"]["source/train"]) == 6
    assert {kinds[n] for n in doc["splits"]["target/train"]} == {"pink"}
    assert kinds[doc["sources"]["style_images"][0]] == "pink" and doc["sources"]["lesion_groups"]
    assert check_folder(res["target_test"]).sizes == {"16x16": 4}
    assert (layout.data / "skin_background.json").is_file()


def test_cli_prepare_and_split(tmp_path, capsys):
    data = fake_cvc(tmp_path / "data")
    rc = main(["data", "split", "--protocol", "paper-polyp", "--data", str(data), "--out", str(tmp_path / "r"),
               "--set", "data.seg_size=8"])
    assert rc == 0 and "target/test_all" in capsys.readouterr().out
    assert (tmp_path / "r" / "config.json").is_file()
    rc = main(["data", "prepare", "--out", str(tmp_path / "s"), "--set", "data.n_per_domain=8",
               "--set", "data.synth_size=32", "--set", "data.seg_size=16"])
    assert rc == 0 and "synthetic data at 16 px" in capsys.readouterr().out
    assert main(["data", "split", "--protocol", "paper-polyp", "--data", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "z")]) == 2


def test_a_run_prepared_by_an_older_split_version_is_told_to_prepare_again(tmp_path):
    data = fake_cvc(tmp_path / "data")
    layout = RunLayout(tmp_path / "run")
    cfg = small_cfg(**{"data.seg_size": 8})
    prepare_run_data(layout, cfg, protocol="paper-polyp", data_dir=str(data), progress=False)
    doc = json.loads(layout.split_json.read_text())
    doc["params"]["split_version"] = 1
    layout.split_json.write_text(json.dumps(doc))
    with pytest.raises(StylsegError, match=r"split version 1; this kit writes version 2.*new RUN_DIR / --out"):
        prepare_run_data(layout, cfg, protocol="paper-polyp", data_dir=str(data), progress=False)
