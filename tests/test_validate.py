"""Trustworthy runs: one validation path for paired folders, names and settings checked before any work, files
that take the umask, archives extracted safely, weights verified when used."""

import io
import os
import re
import stat
import tarfile
import time
import warnings
import zipfile

import numpy as np
import pytest
from PIL import Image

from stylseg.cli import main
from stylseg.config import RunConfig, get_profile
from stylseg.data import PairedDataset, validate_paired
from stylseg.data.validate import scan_paired
from stylseg.utils import StylsegError


def _pair(root, stem, size=16, mask_size=None, fill=True, ext="png"):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(stem))
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "images" / f"{stem}.{ext}")
    ms = mask_size or size
    m = np.zeros((ms, ms), np.uint8)
    if fill:
        m[: ms // 2, : ms // 2] = 255
    Image.fromarray(m).save(root / "masks" / f"{stem}.png")


def _folder(root, n=3, **kw):
    for i in range(n):
        _pair(root, f"{i:04d}", **kw)
    return root


def _bad(tmp_path, kind):
    root = _folder(tmp_path / kind)
    if kind == "dup":
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "images" / "0001.jpg")
        return root, r"several files share a stem, '0001' \(0001\.(png|jpg), 0001\.(jpg|png)\)"
    if kind == "size":
        _pair(root, "0002", mask_size=8)
        return root, r"masks/0002\.png: mask is 8x8 but its image 0002\.png is 16x16"
    if kind == "orphan":
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "masks" / "0009.png")
        return root, r"1 mask\(s\) without an image in .*: 0009\.png"
    if kind == "corrupt_mask":
        (root / "masks" / "0001.png").write_bytes(b"\x89PNG broken")
        return root, r"masks/0001\.png: unreadable or corrupt image"
    raise ValueError(kind)


BAD = ("dup", "size", "orphan", "corrupt_mask")


# --------------------------------------------------------------------------- one validation path
@pytest.mark.parametrize("kind", BAD)
def test_every_stage_that_reads_a_paired_folder_refuses_it_alike(tmp_path, kind):
    """stylize apply, diffae train (its image loader), seg train (the dataset) and the validator say the same."""
    from stylseg.data.tensors import load_folder_tensor
    from stylseg.stylize.apply import apply_stylizer

    root, pattern = _bad(tmp_path, kind)
    cfg = get_profile("smoke")
    with pytest.raises(StylsegError, match=pattern):
        validate_paired(root, use="train")
    with pytest.raises(StylsegError, match=pattern):  # before the stylizer or D_A is even looked for
        apply_stylizer(None, root, tmp_path / "arm", cfg, mode="recon", diffae_dir=tmp_path / "no_diffae")
    assert not (tmp_path / "arm").exists()
    with pytest.raises(StylsegError, match=pattern):
        load_folder_tensor(root, 16)
    with pytest.raises(StylsegError, match=pattern):
        PairedDataset(root, 16, mode="seg", use="train")


def test_prediction_never_reads_the_masks(tmp_path):
    import torch

    from stylseg.seg import create_segmenter, predict_folder
    from stylseg.utils import save_model_folder

    root, _ = _bad(tmp_path, "corrupt_mask")
    model = create_segmenter("unet", encoder="resnet18", encoder_depth=3, decoder_channels=(8, 8, 8))
    save_model_folder(tmp_path / "m", "segmenter", {**model.arch_config, "image_size": 32, "normalize": "imagenet"},
                      model.state_dict())
    with torch.no_grad():
        out = predict_folder(tmp_path / "m", root, tmp_path / "pred", device="cpu", progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["0000.png", "0001.png", "0002.png"]


def test_all_zero_masks_refused_for_training_warned_for_evaluation(tmp_path):
    from stylseg.metrics import evaluate_folder
    from stylseg.seg import train_segmenter

    root = _folder(tmp_path / "z", fill=False)
    cfg = get_profile("smoke").override(**{"seg.image_size": 32, "seg.batch_size": 2, "seg.epochs": 1})
    with pytest.raises(StylsegError, match=r"all 3 mask\(s\) are empty.*learns nothing"):
        train_segmenter("unet", root, tmp_path / "seg", cfg, progress=False)
    assert not (tmp_path / "seg").exists()
    with pytest.warns(UserWarning, match=r"all 3 mask\(s\) are empty"):
        assert len(validate_paired(root, use="eval")) == 3
    (tmp_path / "pred").mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 16), 200, np.uint8)).save(tmp_path / "pred" / f"{i:04d}.png")
    with pytest.warns(UserWarning, match=r"all 3 mask\(s\) are empty"):
        evaluate_folder(tmp_path / "pred", root)
    _pair(root, "0003")  # one lesion: empty masks among others are fine everywhere
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(validate_paired(root, use="train")) == 4


def test_truncated_image_refused_by_default(tmp_path):
    root = _folder(tmp_path / "t", n=2, size=64)
    data = (root / "images" / "0001.png").read_bytes()
    (root / "images" / "0001.png").write_bytes(data[: len(data) // 2])
    assert scan_paired(root, use="train", deep=False).ok  # the header alone looks fine
    with pytest.raises(StylsegError, match=r"images/0001\.png: unreadable or corrupt image"):
        validate_paired(root, use="train")


def test_image_only_uses_ignore_masks_and_accept_plain_folders(tmp_path):
    root = _folder(tmp_path / "p", n=2)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "masks" / "0001.png")  # wrong size: unread here
    assert [m for _, m in validate_paired(root, use="images")] == [None, None]
    plain = tmp_path / "plain"
    plain.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(plain / "a.png")
    assert [i.name for i, _ in validate_paired(plain, use="diffae")] == ["a.png"]
    with pytest.raises(StylsegError, match="no images/ subfolder"):
        validate_paired(plain, use="train")


# --------------------------------------------------------------------------- settings
@pytest.mark.parametrize("key,value", [("seg.epochs", "0"), ("seg.epochs", "-2"), ("seg.batch_size", "0"),
                                       ("seg.lr", "nan"), ("seg.lr", "inf"), ("diffae.lr", "nan"),
                                       ("diffae.batch_size", "0"), ("stylize.lr_unet", "nan")])
def test_numeric_settings_are_range_checked(key, value):
    with pytest.raises(StylsegError, match=rf"{key}={value}.* is out of range: expected .*--set {key}=VALUE"
                       .replace("=nan.*", "=nan").replace("=inf.*", "=inf")):
        get_profile("smoke").override(**{key: value})


def test_range_checks_also_apply_to_a_config_file_and_per_arch_values(tmp_path):
    d = get_profile("smoke").to_dict()
    d["seg"]["lr_by_arch"] = [["unet", float("nan")]]
    with pytest.raises(StylsegError, match=r"seg.lr_by_arch \(unet\)=nan is out of range"):
        RunConfig.from_dict(d)
    d = get_profile("smoke").to_dict()
    d["seg"]["epochs"] = 0
    with pytest.raises(StylsegError, match=r"seg.epochs=0 is out of range"):
        RunConfig.from_dict(d)
    for name in ("smoke", "cpu", "paper"):  # every profile is within its own ranges
        assert RunConfig.from_dict(get_profile(name).to_dict()) == get_profile(name)


def test_seg_train_with_zero_epochs_exits_2_and_writes_nothing(tmp_path, capsys):
    root = _folder(tmp_path / "g")
    rc = main(["seg", "train", "--arch", "unet", "--train", str(root), "--out", str(tmp_path / "o"),
               "--set", "seg.epochs=0"])
    assert rc == 2 and not (tmp_path / "o").exists()
    assert "seg.epochs=0 is out of range" in capsys.readouterr().err
    rc = main(["seg", "train", "--arch", "unet", "--train", str(root), "--val", str(tmp_path / "nope"),
               "--out", str(tmp_path / "o")])  # a bad validation folder: before a model is built
    assert rc == 2 and not (tmp_path / "o").exists()
    assert "nope: folder not found" in capsys.readouterr().err


def test_compare_refuses_zero_seeds_and_evaluate_a_paired_folder_as_predictions(tmp_path, capsys):
    good = _folder(tmp_path / "good")
    assert main(["seg", "compare", "--train", str(good), "--test", f"t={good}", "--out", str(tmp_path / "c"),
                 "--seeds", "0"]) == 2
    assert "--seeds 0: expected K >= 1" in capsys.readouterr().err and not (tmp_path / "c").exists()
    assert main(["evaluate", "--pred", str(good), "--gt", str(good)]) == 2
    assert "a paired folder, not a folder of prediction maps" in capsys.readouterr().err


def test_segmenter_config_that_does_not_match_its_weights(tmp_path):
    from stylseg.seg import create_segmenter, load_segmenter
    from stylseg.utils import read_json, save_model_folder, write_json

    model = create_segmenter("unet", encoder="resnet18", encoder_depth=3, decoder_channels=(8, 8, 8))
    save_model_folder(tmp_path / "m", "segmenter", {**model.arch_config, "image_size": 32}, model.state_dict())
    meta = read_json(tmp_path / "m" / "config.json")
    meta["config"]["decoder_channels"] = [16, 8, 8]
    write_json(tmp_path / "m" / "config.json", meta)
    with pytest.raises(StylsegError, match=r"config.json: its architecture \(unet, resnet18\) does not match the "
                                           r"weights .*tensors of another shape"):
        load_segmenter(tmp_path / "m")
    meta["config"]["arch"] = "segformer"
    write_json(tmp_path / "m" / "config.json", meta)
    with pytest.raises(StylsegError, match=r"config.json: unknown segmenter 'segformer'"):
        load_segmenter(tmp_path / "m")


# --------------------------------------------------------------------------- reproduce: names before notebook 00
@pytest.fixture
def no_notebooks(monkeypatch):
    """reproduce's notebook runner replaced by a recorder: a check that failed late would reach it."""
    from stylseg import reproduce

    calls = []
    monkeypatch.setattr(reproduce, "run_notebooks", lambda run_dir, params, **kw: calls.append(params) or [])
    monkeypatch.setattr(reproduce, "pipeline_notebooks", lambda upto=7: [])
    return calls


@pytest.mark.parametrize("extra,pattern", [
    (["--archs", "unet,foo"], r"unknown segmenter 'foo'; valid names: pranet, unet, unetpp"),
    (["--set", "eval.arms=direct,stt"], r"eval.arms names 'stt', which no notebook makes"),
    (["--set", "eval.arms=../x"], r"arm name '../x' \(eval.arms\) is not a plain folder name"),
    (["--protocol", "paper-x"], r"unknown protocol 'paper-x'"),
    (["--protocol", "paper-skin"], r"protocol paper-skin is for kind skin"),
    (["--protocol", "paper-polyp", "--data", "nowhere"], r"nowhere: CVC-ClinicDB and CVC-ColonDB not found"),
    (["--source", "src", "--target", "tgt"], r"/src: folder not found \(the source folder; a relative path is "
                                             r"read from the folder the command runs in"),
    (["--set", "seg.lr=nan"], r"seg.lr=nan is out of range"),
    (["--kind", "liver"], r"unknown kind \(--kind\) 'liver'; valid: polyp, skin"),
    (["--data", "somewhere"], r"--data .* is read only with --protocol"),
])
def test_reproduce_checks_names_and_paths_before_notebook_00(tmp_path, monkeypatch, capsys, no_notebooks, extra,
                                                            pattern):
    import re

    monkeypatch.chdir(tmp_path)
    t = time.time()
    assert main(["reproduce", "--out", "run"] + extra) == 2
    err = capsys.readouterr().err
    assert re.search(pattern, err), err
    assert time.time() - t < 10 and no_notebooks == [] and not (tmp_path / "run").exists()


def test_reproduce_resolves_relative_paths_against_the_working_directory(tmp_path, monkeypatch, no_notebooks):
    src, tgt = _folder(tmp_path / "work" / "src"), _folder(tmp_path / "work" / "tgt")
    monkeypatch.chdir(tmp_path / "work")
    assert main(["reproduce", "--out", "run", "--source", "src", "--target", "tgt"]) == 0
    (params,) = no_notebooks
    assert params["SOURCE_DIR"] == str(src.resolve()) and params["TARGET_DIR"] == str(tgt.resolve())


def test_reproduce_checks_the_style_count_and_one_kind_before_notebook_00(tmp_path, monkeypatch, capsys,
                                                                           no_notebooks):
    _folder(tmp_path / "src"), _folder(tmp_path / "tgt")
    monkeypatch.chdir(tmp_path)
    assert main(["reproduce", "--out", "run", "--source", "src", "--target", "tgt", "--styles", "100000"]) == 2
    assert re.search(r"styles=100000 \(--styles\) but the target domain holds only \d+ training image\(s\)",
                     capsys.readouterr().err)
    assert main(["reproduce", "--out", "run", "--set", "data.kind=skin", "--kind", "polyp"]) == 2
    assert "--kind polyp contradicts --set data.kind=skin" in capsys.readouterr().err
    assert no_notebooks == [] and not (tmp_path / "run").exists()
    assert main(["reproduce", "--out", "run", "--set", "data.kind=skin"]) == 0
    assert no_notebooks[-1]["KIND"] == "skin"  # the one kind of the run reaches the notebooks


def test_reproduce_notices_changed_input_of_a_prepared_run(tmp_path, monkeypatch, capsys, no_notebooks):
    """Notebook 00 is skipped when its parameters are unchanged, so reproduce checks the input's content itself."""
    from stylseg.data import prepare_run_data
    from stylseg.layout import RunLayout

    src, tgt = _folder(tmp_path / "src", n=4), _folder(tmp_path / "tgt", n=4)
    prepare_run_data(RunLayout(tmp_path / "run"), get_profile("smoke"), source=str(src), target=str(tgt),
                     progress=False)
    monkeypatch.chdir(tmp_path)
    argv = ["reproduce", "--out", "run", "--source", "src", "--target", "tgt"]
    assert main(argv) == 0
    Image.fromarray(np.full((16, 16, 3), 7, np.uint8)).save(tgt / "images" / "0001.png")
    n = len(no_notebooks)
    assert main(argv) == 2
    assert re.search(r"split.json: the content of the input changed .*the target .*tgt", capsys.readouterr().err)
    assert len(no_notebooks) == n


# --------------------------------------------------------------------------- names stay inside --out
@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden", "..", ""])
def test_compare_confines_arm_names_to_out(tmp_path, name, capsys):
    good = _folder(tmp_path / "good")
    out = tmp_path / "deep" / "er" / "cmp"
    rc = main(["seg", "compare", "--train", str(good), "--arm", f"{name}={good}", "--test", f"t={good}",
               "--out", str(out)])
    assert rc == 2 and "is not a plain folder name" in capsys.readouterr().err
    assert not (tmp_path / "deep").exists() and not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- files take the umask
@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_writes_take_the_umask(tmp_path, mask):
    from stylseg.data.io import write_image
    from stylseg.utils import write_json

    old = os.umask(mask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        write_image(tmp_path / "b.png", np.zeros((4, 4, 3), np.uint8))
    finally:
        os.umask(old)
    for f in ("a.json", "b.png"):
        assert stat.S_IMODE((tmp_path / f).stat().st_mode) == 0o666 & ~mask


# --------------------------------------------------------------------------- archives
def _tar(path, members):
    with tarfile.open(path, "w:gz") as tf:
        for name, data, mode in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tf.addfile(info, io.BytesIO(data))
    return path


def test_extract_strips_setuid_and_setgid(tmp_path):
    from stylseg.downloads import extract

    t = _tar(tmp_path / "a.tar.gz", [("d/run.sh", b"#!/bin/sh\n", 0o6755), ("d/sticky", b"s", 0o1777)])
    out = extract(t, tmp_path / "out")
    for f in ("run.sh", "sticky"):
        mode = (out / "d" / f).stat().st_mode
        assert not mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX)


def test_extract_never_writes_through_a_link_in_the_destination(tmp_path):
    from stylseg.downloads import extract

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "d").symlink_to(elsewhere, target_is_directory=True)
    t = _tar(tmp_path / "a.tar.gz", [("d/x.txt", b"x", 0o644)])
    with pytest.raises(StylsegError, match=r"dest/d: a symbolic link is in the way"):
        extract(t, dest)
    assert list(elsewhere.iterdir()) == []
    (dest / "f.txt").symlink_to(elsewhere / "victim.txt")
    z = tmp_path / "b.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("f.txt", b"overwritten")
    with pytest.raises(StylsegError, match="symbolic link"):
        extract(z, dest)
    assert not (elsewhere / "victim.txt").exists()


def test_extract_has_a_size_limit(tmp_path, monkeypatch):
    from stylseg.downloads import extract

    t = _tar(tmp_path / "a.tar.gz", [("big.bin", b"\0" * 5000, 0o644)])
    with pytest.raises(StylsegError, match=r"unpacks to more than .*STYLSEG_EXTRACT_LIMIT_GB"):
        extract(t, tmp_path / "out", max_bytes=4096)
    assert not (tmp_path / "out" / "big.bin").exists()
    z = tmp_path / "b.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.bin", b"\0" * 5000)
    monkeypatch.setenv("STYLSEG_EXTRACT_LIMIT_GB", str(4096 / (1 << 30)))
    with pytest.raises(StylsegError, match="unpacks to more than"):
        extract(z, tmp_path / "out2")
    assert extract(z, tmp_path / "out3", max_bytes=5000).joinpath("big.bin").stat().st_size == 5000


# --------------------------------------------------------------------------- weights verified when used
def test_weights_verified_by_full_sha256_when_used(tmp_path, monkeypatch):
    import hashlib

    from stylseg import weights

    data = b"weights " * 100
    src = tmp_path / "w.bin"
    src.write_bytes(data)
    full = hashlib.sha256(data).hexdigest()
    monkeypatch.setitem(weights.WEIGHTS._items, "t-full", weights.WeightsEntry("t-full", "w.bin", "x",
                                                                             url=src.as_uri(), sha256=full))
    monkeypatch.setitem(weights.WEIGHTS._items, "t-none", weights.WeightsEntry("t-none", "w.bin", "x",
                                                                             url=src.as_uri()))
    p = weights.fetch("t-full", progress=False)
    assert weights.resolve("t-full") == p
    p.write_bytes(b"X" + data[1:])  # damaged after the fetch
    with pytest.raises(StylsegError, match=r"weights t-full fail their checksum.*weights fetch t-full"):
        weights.resolve("t-full")
    q = weights.fetch("t-none", progress=False)  # nothing published: the fetch records the full sha256
    assert weights.resolve("t-none") == q
    q.write_bytes(b"Y" + data[1:])
    with pytest.raises(StylsegError, match=r"weights t-none changed since they were fetched"):
        weights.resolve("t-none")
    rows = {r["name"]: r["checksum"] for r in weights.list_weights()}
    assert rows["t-full"] == f"sha256 {full}" and rows["t-none"].startswith("no published checksum")
    assert rows["resnet18-imagenet"].startswith("sha256 f37072fd... (only this prefix is published")
