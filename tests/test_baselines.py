"""Cheap stylizers: exact properties on small images, and the arm format they write."""

import argparse
import json

import numpy as np
import pytest
from PIL import Image

from stylseg.stylize import baselines
from stylseg.data.io import read_image, read_mask, resize_mask, write_image, write_mask
from stylseg.utils import StylsegError


def smooth(seed, h=16, w=20, lo=60, hi=190):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.stack([np.sin(xx / (3 + c) + rng.random() * 6) * np.cos(yy / (4 + c)) for c in range(3)], -1)
    out = (out - out.min()) / (out.max() - out.min())
    return (lo + out * (hi - lo)).round().astype(np.uint8)


def test_fda_beta0_swaps_only_the_channel_means():
    img, sty = smooth(0), smooth(1, lo=90, hi=150)
    out = baselines.fda(img, sty, beta=0.0)  # b = 0: only the DC amplitude is replaced
    expect = img.astype(float) - img.reshape(-1, 3).mean(0) + sty.reshape(-1, 3).mean(0)
    assert np.abs(out.astype(float) - np.clip(expect, 0, 255)).max() <= 1.0
    assert np.array_equal(baselines.fda(img, img, beta=0.05), img)  # self-style: identity


def test_fda_full_window_takes_style_amplitude():
    img, sty = smooth(2, 9, 9), smooth(3, 9, 9)
    out = baselines.fda(img, sty, beta=0.5).astype(float)  # b = 4: the whole 9x9 spectrum
    # amplitude of the output equals the style's wherever no clipping happened
    if out.min() > 0 and out.max() < 255:
        a_out = np.abs(np.fft.fft2(out, axes=(0, 1)))
        a_sty = np.abs(np.fft.fft2(sty.astype(float), axes=(0, 1)))
        assert np.allclose(a_out, a_sty, rtol=0.05, atol=20)
    with pytest.raises(StylsegError, match="beta"):
        baselines.fda(img, sty, beta=0.9)


def test_reinhard_moves_lab_moments_to_the_style():
    from skimage.color import rgb2lab

    img, sty = smooth(4), smooth(5, lo=100, hi=140)
    out = baselines.reinhard(img, sty)
    lo, ls = rgb2lab(out / 255.0).reshape(-1, 3), rgb2lab(sty / 255.0).reshape(-1, 3)
    assert np.allclose(lo.mean(0), ls.mean(0), atol=1.0)
    assert np.allclose(lo.std(0), ls.std(0), atol=1.0)


def test_histogram_match_takes_the_style_values():
    img, sty = smooth(6), smooth(7, lo=10, hi=80)
    out = baselines.histogram_match(img, sty)
    for c in range(3):
        o, t = np.sort(out[..., c].ravel()).astype(float), np.sort(sty[..., c].ravel()).astype(float)
        assert o.min() >= t.min() and o.max() <= t.max()
        assert np.abs(o - t).mean() < 1.5  # same quantiles (up to interpolation between tied levels)
    # rank order of the content is kept (a monotone map per channel)
    a, b = img[..., 0].ravel().astype(int), out[..., 0].ravel().astype(int)
    order = np.argsort(a, kind="stable")
    assert np.all(np.diff(b[order]) >= 0)


def test_unknown_baseline_lists_valid():
    with pytest.raises(StylsegError, match="fda, histogram, reinhard"):
        baselines.BASELINES.get("cyclegan")


def make_pairs(root, n=3):
    for i in range(n):
        write_image(root / "images" / f"{i}.png", smooth(10 + i, 20, 16))
        m = np.zeros((20, 16), bool)
        m[4 + i:12, 3:10 + i] = True
        write_mask(root / "masks" / f"{i}.png", m)


@pytest.mark.parametrize("method", ["histogram", "reinhard", "fda"])
def test_apply_baseline_writes_arm_and_resumes(tmp_path, method):
    make_pairs(tmp_path / "src")
    # style of another size and mode: grayscale 10x10 (and RGBA for fda)
    sty = tmp_path / "style.png"
    if method == "fda":
        Image.fromarray(np.dstack([smooth(9, 10, 10), np.full((10, 10, 1), 255, np.uint8)]), "RGBA").save(sty)
    else:
        Image.fromarray(smooth(9, 10, 10)[..., 0], "L").save(sty)
    out = baselines.apply_baseline(method, sty, tmp_path / "src", tmp_path / "arm", size=12, progress=False)
    man = json.loads((out / "manifest.json").read_text())
    assert man["method"] == method and man["size"] == 12 and len(man["items"]) == 3
    assert man["params"] == ({"beta": 0.01} if method == "fda" else {})
    for i in range(3):
        im = read_image(out / "images" / f"{i}.png")
        assert im.shape == (12, 12, 3)
        src_mask = read_mask(tmp_path / "src" / "masks" / f"{i}.png")
        assert np.array_equal(read_mask(out / "masks" / f"{i}.png"), resize_mask(src_mask, 12))
    mtime = (out / "images" / "0.png").stat().st_mtime_ns
    baselines.apply_baseline(method, sty, tmp_path / "src", tmp_path / "arm", size=12, progress=False)
    assert (out / "images" / "0.png").stat().st_mtime_ns == mtime  # resumed: nothing rewritten


def test_missing_mask_is_named(tmp_path):
    make_pairs(tmp_path / "src", 2)
    (tmp_path / "src" / "masks" / "1.png").unlink()
    write_image(tmp_path / "s.png", smooth(1))
    with pytest.raises(StylsegError, match="1.png"):
        baselines.apply_baseline("reinhard", tmp_path / "s.png", tmp_path / "src", tmp_path / "o", 8, progress=False)


def test_baseline_cli_parser(tmp_path):
    make_pairs(tmp_path / "src", 2)
    write_image(tmp_path / "s.png", smooth(1))
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    baselines.add_baseline_parser(sub)
    args = parser.parse_args(["baseline", "--method", "fda", "--beta", "0.05", "--style", str(tmp_path / "s.png"),
                              "--input", str(tmp_path / "src"), "--out", str(tmp_path / "o"), "--size", "8"])
    assert args.func(args) == 0
    man = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert man["params"] == {"beta": 0.05} and len(man["items"]) == 2
    assert read_image(tmp_path / "o" / "images" / "0.png").shape == (8, 8, 3)


def test_ensure_baseline_arms_in_a_run_folder(tmp_path):
    from stylseg.layout import RunLayout

    lay = RunLayout(tmp_path / "run")
    make_pairs(lay.domain("source", "train"), 2)
    write_image(lay.style_image, smooth(3))
    arms = baselines.ensure_baseline_arms(lay, 8, progress=False)
    assert sorted(arms) == ["fda", "histogram", "reinhard"]
    assert json.loads((lay.stylized("fda") / "manifest.json").read_text())["params"] == {"beta": 0.01}
    assert len(list((lay.stylized("reinhard") / "images").iterdir())) == 2
    with pytest.raises(StylsegError, match="00_setup_and_data"):
        baselines.ensure_baseline_arms(RunLayout(tmp_path / "empty"), 8)
