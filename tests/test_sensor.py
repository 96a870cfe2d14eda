"""Sensor matching (stylseg.sensor): the style image's blur and noise, estimated from it alone."""

import json

import numpy as np
import pytest
from scipy import ndimage

from stylseg.stylize.baselines import apply_baseline
from stylseg.data.io import read_image, write_image, write_mask
from stylseg.data.synth import make_sample
from stylseg.sensor import SensorMatch, noise_sigma
from stylseg.utils import StylsegError


def _degrade(img, blur, noise, seed=0):
    f = ndimage.gaussian_filter(img.astype(float) / 255, (blur, blur, 0)) if blur else img.astype(float) / 255
    f = f + np.random.default_rng(seed).normal(0, noise, f.shape)
    return np.clip(np.round(f * 255), 0, 255).astype(np.uint8)


def test_noise_estimate_recovers_added_noise():
    clean = make_sample("polyp", "clinic", 0, 0, 128)[0]
    base = noise_sigma(clean)
    for sigma in (0.02, 0.05):
        est = noise_sigma(_degrade(clean, 1.0, sigma))
        assert abs(est - sigma) < 0.2 * sigma, (sigma, est)
    assert base < 0.02  # the clinic domain's own noise is 0.008


@pytest.mark.parametrize("blur", [0.8, 1.6])
def test_blur_and_noise_of_another_scene_are_matched(blur):
    """The style image is another scene. One image's blur estimate is off by up to about 0.5 px,
    depending on its scene; over a few style scenes and inputs it is the style's, and the output has
    the style's noise."""
    fits, noise = [], []
    for sc in (1, 10, 11):
        m = SensorMatch(_degrade(make_sample("polyp", "clinic", 0, sc, 128)[0], blur, 0.03, seed=sc))
        for i in range(2, 5):
            img = make_sample("polyp", "clinic", 0, i, 128)[0]
            out = m(img)
            fits.append(m.last["blur_sigma"])
            noise.append(noise_sigma(out))
            assert abs(out.astype(float).mean() - img.astype(float).mean()) < 2  # no colour change
    assert abs(np.mean(fits) - blur) <= 0.35, fits
    assert abs(np.mean(noise) - 0.03) < 0.006, noise
    assert np.array_equal(out, m(img))  # seeded by the content: the same input gives the same output


def test_a_blurrier_style_gets_more_blur():
    imgs = [make_sample("polyp", "clinic", 0, i, 128)[0] for i in range(2, 6)]
    style = make_sample("polyp", "clinic", 0, 12, 128)[0]
    fitted = [np.mean([SensorMatch(_degrade(style, b, 0.0)).fit_blur(im) for im in imgs]) for b in (0.0, 1.0, 2.0)]
    assert fitted[0] < fitted[1] < fitted[2], fitted


def test_a_sharp_clean_style_leaves_the_image_almost_unchanged():
    img = make_sample("polyp", "clinic", 0, 3, 128)[0]
    m = SensorMatch(img)  # the image's own blur and noise
    out = m(img)
    assert m.last["blur_sigma"] == 0 and m.last["noise_added"] < 1e-6
    assert np.array_equal(out, img)


def test_bad_inputs_are_named():
    with pytest.raises(StylsegError, match="too small"):
        SensorMatch(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(StylsegError, match="RGB uint8"):
        SensorMatch(np.zeros((64, 64), np.float32))
    with pytest.raises(StylsegError, match="step"):
        SensorMatch(np.zeros((64, 64, 3), np.uint8), step=0)


def test_baseline_arms_with_the_sensor_step(tmp_path):
    src = tmp_path / "src"
    for i in range(3):
        img, mask = make_sample("polyp", "clinic", 0, i, 64)
        write_image(src / "images" / f"{i}.png", img)
        write_mask(src / "masks" / f"{i}.png", mask)
    style = tmp_path / "style.png"
    write_image(style, make_sample("polyp", "colon", 0, 9, 64)[0])
    plain = apply_baseline("histogram", style, src, tmp_path / "h", 64, progress=False)
    sens = apply_baseline("histogram", style, src, tmp_path / "hs", 64, progress=False, sensor=True)
    alone = apply_baseline("sensor", style, src, tmp_path / "s", 64, progress=False)
    man = json.loads((sens / "manifest.json").read_text())
    assert man["arm"] == "histogram_sensor" and man["params"]["sensor"] == "match" and man["params"]["style_noise"] > 0
    a, b = read_image(plain / "images" / "0.png"), read_image(sens / "images" / "0.png")
    assert noise_sigma(b) > noise_sigma(a) + 0.005  # colon's noise (0.03) added after the colour transfer
    with pytest.raises(StylsegError, match="too small.*--size"):  # refused before any folder is made
        apply_baseline("sensor", style, src, tmp_path / "tiny", 16, progress=False)
    assert not (tmp_path / "tiny").exists()
    c, x = read_image(alone / "images" / "0.png"), read_image(src / "images" / "0.png")
    assert abs(c.astype(float).mean() - x.astype(float).mean()) < 3 and not np.array_equal(c, x)
