"""Training (exact resume, checkpoints, history), prediction at the original size, Algorithm 2."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from stylseg.config import get_profile
from stylseg.data.io import write_image, write_mask
from stylseg.seg import load_segmenter, predict_folder, train_segmenter
from stylseg.study import compare
from stylseg.utils import StylsegError

TINY = {"seg.image_size": 32, "seg.batch_size": 4, "seg.epochs": 2, "seg.lr": 3e-3, "seg.encoder_depth": 3,
        "seg.decoder_channels": "8,8,8", "eval.bootstrap": 50}


def make_folder(root, n=6, h=40, w=30, seed=0, tint=(200, 80, 60)):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        cy, cx, r = rng.uniform(10, h - 10), rng.uniform(8, w - 8), rng.uniform(4, 8)
        m = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        img = rng.integers(0, 60, size=(h, w, 3)).astype(np.uint8)
        img[m] = np.array(tint, np.uint8)
        write_image(root / "images" / f"{i}.png", img)
        write_mask(root / "masks" / f"{i}.png", m)
    return root


@pytest.fixture()
def cfg():
    return get_profile("smoke").override(**TINY)


def weights(model_dir):
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def test_exact_resume_and_outputs(tmp_path, cfg):
    train = make_folder(tmp_path / "train")
    val = make_folder(tmp_path / "val", n=3, seed=1)
    full = train_segmenter("unet", train, tmp_path / "a", cfg, val_dir=val, seed=3, progress=False)
    # interrupted after epoch 1, then continued from checkpoints/last.safetensors
    assert train_segmenter("unet", train, tmp_path / "b", cfg, val_dir=val, seed=3, progress=False, stop_after=1) is None
    assert (tmp_path / "b" / "checkpoints" / "last.safetensors").is_file() and not (tmp_path / "b" / "model").exists()
    resumed = train_segmenter("unet", train, tmp_path / "b", cfg, val_dir=val, seed=3, progress=False)
    wa, wb = weights(full), weights(resumed)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    hist = json.loads((tmp_path / "a" / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2] and all(0 <= h["val_dice"] <= 1 for h in hist)
    assert json.loads((tmp_path / "b" / "history.json").read_text())[1]["loss"] == pytest.approx(hist[1]["loss"])
    assert (tmp_path / "a" / "checkpoints" / "best.safetensors").is_file()
    # another seed gives other weights; a finished run is returned as is
    other = train_segmenter("unet", train, tmp_path / "c", cfg, seed=4, progress=False)
    assert not torch.equal(weights(other)["decoder.blocks.0.conv1.0.weight"], wa["decoder.blocks.0.conv1.0.weight"])
    mtime = (full / "model.safetensors").stat().st_mtime_ns
    train_segmenter("unet", train, tmp_path / "a", cfg, val_dir=val, seed=3, progress=False)
    assert (full / "model.safetensors").stat().st_mtime_ns == mtime
    # resuming with other settings is refused, naming what differs
    train_segmenter("unet", train, tmp_path / "d", cfg, seed=3, progress=False, stop_after=1)
    with pytest.raises(StylsegError, match="lr"):
        train_segmenter("unet", train, tmp_path / "d", cfg.override(**{"seg.lr": 1e-4}), seed=3, progress=False)


def test_pranet_multiscale_and_clip_train(tmp_path, cfg):
    train = make_folder(tmp_path / "train", n=4)
    c = cfg.override(**{"seg.epochs": 1, "seg.multiscale": "0.75,1.0", "seg.grad_clip": 0.5,
                        "seg.color_jitter": True})
    md = train_segmenter("pranet", train, tmp_path / "p", c, progress=False)
    model = load_segmenter(md)
    assert model.backbone_name == "resnet18" and not model.training


def test_predict_folder_original_size(tmp_path, cfg):
    train = make_folder(tmp_path / "train")
    md = train_segmenter("unet", train, tmp_path / "m", cfg.override(**{"seg.epochs": 1}), progress=False)
    test = make_folder(tmp_path / "test", n=3, h=45, w=27, seed=5)
    out = predict_folder(md, test, tmp_path / "pred", progress=False)
    files = sorted(p.name for p in out.iterdir())
    assert files == ["0.png", "1.png", "2.png"]
    got = np.asarray(Image.open(out / "1.png"))
    assert got.shape == (45, 27) and got.dtype == np.uint8
    # the same map computed by hand: resize to 32, normalise, sigmoid, resize back, *255
    from stylseg.data import PairedDataset

    model = load_segmenter(md)
    x = PairedDataset(test, 32, mode="seg")[1]["image"][None]
    with torch.no_grad():
        p = torch.sigmoid(model(x))
    p = torch.nn.functional.interpolate(p, size=(45, 27), mode="bilinear", align_corners=False)[0, 0]
    assert np.abs(np.round(p.numpy() * 255) - got).max() <= 1


def test_compare_table_resume_and_cli(tmp_path, cfg):
    from stylseg.cli import main

    train = make_folder(tmp_path / "src")
    arm = make_folder(tmp_path / "arm", seed=0, tint=(90, 150, 60))
    tgt = make_folder(tmp_path / "tgt", n=4, seed=7, tint=(90, 150, 60))
    c = cfg.override(**{"seg.epochs": 1})
    logs = []
    res = compare(train, {"histogram": arm}, {"target": tgt}, ["unet"], 2, tmp_path / "seg", c,
                  oracle_dir=tgt, progress=False, log=logs.append)
    assert res["arms"] == ["direct", "histogram", "oracle"] and res["tests"] == ["target"]
    # seed by seed: every arm's seed 0 is trained before any seed 1 (a run stopped early stays comparable)
    order = [line.split(": ")[0].split()[-2:] for line in logs if "training on" in line]
    assert order == [[a, f"seed{s}"] for s in (0, 1) for a in ("direct", "histogram", "oracle")]
    rows = [r for r in res["rows"] if r["arm"] == "direct" and r["metric"] == "dice" and r["protocol"] == "paper"]
    assert len(rows) == 1 and rows[0]["seeds"] == [0, 1]
    r = rows[0]
    assert r["mean"] == pytest.approx(np.mean(r["values"])) and r["std"] == pytest.approx(np.std(r["values"], ddof=1))
    assert r["ci"][0] <= r["ci"][1]
    m = json.loads((tmp_path / "seg" / "unet" / "direct" / "seed1" / "metrics.json").read_text())
    assert m["tests"]["target"]["paper"]["metrics"]["dice"] == r["values"][1]
    assert len(list((tmp_path / "seg" / "unet" / "oracle" / "seed0" / "predictions" / "target").glob("*.png"))) == 4
    md = (tmp_path / "seg" / "results.md").read_text()
    assert "| unet | histogram |" in md and "gap closed" in md
    assert (tmp_path / "seg" / "results_standard.csv").is_file()
    # rerun through the CLI: every run is done, so nothing is retrained
    mt = (tmp_path / "seg" / "unet" / "direct" / "seed0" / "metrics.json").stat().st_mtime_ns
    argv = ["seg", "compare", "--train", str(train), "--arm", f"histogram={arm}", "--test", f"target={tgt}",
            "--archs", "unet", "--seeds", "2", "--oracle", str(tgt), "--out", str(tmp_path / "seg")]
    for k, v in TINY.items():
        argv += ["--set", f"{k}={v}"]
    assert main(argv + ["--set", "seg.epochs=1"]) == 0
    assert (tmp_path / "seg" / "unet" / "direct" / "seed0" / "metrics.json").stat().st_mtime_ns == mt
    assert main(["seg", "compare", "--train", str(train), "--arm", "oops", "--test", f"t={tgt}",
                 "--out", str(tmp_path / "x")]) == 2
