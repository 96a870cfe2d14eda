"""Sensor matching: give an image the blur and the noise of ONE style image (a one-shot step).

Why it exists: the cpu and smoke profiles run the diffusion model at a lower size than the
segmentation (64 -> 128 px), so the band above the diffusion size's resolution comes from the
input (``stylize.upsample = "detail"``) and keeps the *source* camera's sharpness and noise.
On the synthetic polyp domains those are exactly what the style scores key on
(docs/results.md, "Can the gates be met at all?": the target's colour, tissue and optics transferred
perfectly score P(target) 0.07; with the target's blur and noise as well, 0.96). The paper
profile runs the diffusion at the segmentation size and does not need this step.

The method, from the style image alone:

- noise: Donoho's estimator on the finest diagonal Haar band, ``sigma = median(|HH|) / 0.6745``
  (per channel, averaged; robust to the image's own content);
- sharpness: the shape of the detail-energy profile over Haar levels 2-4 (log energy of the
  horizontal and vertical bands, minus the noise's share, relative to level 4). The input is
  blurred with the Gaussian sigma (0 to ``max_blur`` px in ``step``) whose profile matches the
  style image's best;
- then Gaussian noise is added to reach the style image's noise level (the input's own noise,
  reduced by the blur, counts toward it). The noise is seeded by the image's content, so the
  same input always gives the same output (resumable arms are byte-identical).

``SensorMatch(style)(img)`` returns the matched uint8 image; ``.last`` holds the blur sigma and
the noise added. Used by ``stylize.sensor = "match"`` (the stylized arms) and the
``<method>_sensor`` baseline arms (``stylseg stylize baseline --sensor``; ``--method sensor`` is the
step alone, the ablation that shows what it does without any colour transfer).
"""

from __future__ import annotations

import zlib
from typing import Dict, Tuple

import numpy as np

from .utils import StylsegError

#: Haar levels whose detail energies make the sharpness profile (1 is the finest; it is left out
#: because a blur of a pixel or more leaves only noise there)
PROFILE_LEVELS = (2, 3, 4)


def _haar(g: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One level of the orthonormal 2-D Haar transform of (H, W): HH, HL, LH, LL (each H/2 x W/2)."""
    g = g[: g.shape[0] // 2 * 2, : g.shape[1] // 2 * 2]
    a, b, c, d = g[0::2, 0::2], g[0::2, 1::2], g[1::2, 0::2], g[1::2, 1::2]
    return (a - b - c + d) / 2, (a + b - c - d) / 2, (a - b + c - d) / 2, (a + b + c + d) / 2


def _check(img: np.ndarray, what: str) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise StylsegError(f"{what}: expected an RGB uint8 image (H, W, 3), got {img.dtype} {img.shape}")
    if min(img.shape[:2]) < 2 ** (max(PROFILE_LEVELS) + 1):
        raise StylsegError(f"{what}: {img.shape[1]}x{img.shape[0]} px is too small for sensor matching "
                           f"(at least {2 ** (max(PROFILE_LEVELS) + 1)} px a side; it works at the segmentation "
                           f"size: raise --size / data.seg_size, or leave sensor matching off)")
    return img


def noise_sigma(img: np.ndarray) -> float:
    """Standard deviation of white noise in an RGB uint8 image, in [0, 1] units (Donoho's MAD
    estimator on the finest diagonal Haar band, averaged over the channels)."""
    f = _check(img, "noise_sigma").astype(np.float64) / 255.0
    return float(np.mean([np.median(np.abs(_haar(f[..., c])[0])) / 0.6745 for c in range(3)]))


def detail_profile(img: np.ndarray, noise: float) -> np.ndarray:
    """Log detail energy of the grey image at ``PROFILE_LEVELS`` relative to the coarsest, the
    white noise's share (``noise``, per channel) taken out: a sharpness signature that does not
    depend on the image's contrast."""
    g = np.asarray(img, np.float64).mean(axis=2) / 255.0
    e = []
    for level in range(1, max(PROFILE_LEVELS) + 1):
        _, hl, lh, g = _haar(g)
        if level in PROFILE_LEVELS:
            # orthonormal Haar: white noise keeps its variance in every band; the grey image is the
            # mean of 3 channels, so its noise variance is noise^2 / 3
            e.append(max(((hl ** 2).mean() + (lh ** 2).mean()) / 2 - noise ** 2 / 3, 1e-10))
    e = np.log(np.array(e))
    return e[:-1] - e[-1]


def _blur(f: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_filter(f, (sigma, sigma, 0)) if sigma > 0 else f


def _blurred_noise(noise: float, sigma: float) -> float:
    """The std of white noise after a Gaussian blur of ``sigma`` px (2-D: / (2 sqrt(pi) sigma))."""
    return noise / max(1.0, 2.0 * np.sqrt(np.pi) * sigma)


class SensorMatch:
    """The blur and noise of one style image, ready to apply to any number of images."""

    def __init__(self, style: np.ndarray, max_blur: float = 3.0, step: float = 0.1):
        style = _check(style, "the style image")
        if not 0 < step <= max_blur:
            raise StylsegError(f"sensor matching: need 0 < step <= max_blur, got step {step}, max_blur {max_blur}")
        self.noise = noise_sigma(style)
        self.profile = detail_profile(style, self.noise)
        self.sigmas = np.round(np.arange(0.0, max_blur + 1e-9, step), 6)
        self.last: Dict[str, float] = {}

    def params(self) -> Dict[str, float]:
        return {"style_noise": round(self.noise, 6), "style_profile": [round(float(v), 4) for v in self.profile],
                "max_blur": float(self.sigmas[-1])}

    def fit_blur(self, img: np.ndarray) -> float:
        """The Gaussian sigma (px) that makes ``img``'s sharpness profile closest to the style's."""
        f = _check(img, "sensor matching input").astype(np.float64)
        n_in = noise_sigma(img)
        errs = [float(((detail_profile(_blur(f, s), _blurred_noise(n_in, s)) - self.profile) ** 2).sum())
                for s in self.sigmas]
        return float(self.sigmas[int(np.argmin(errs))])

    def __call__(self, img: np.ndarray) -> np.ndarray:
        img = _check(img, "sensor matching input")
        sigma = self.fit_blur(img)
        left = _blurred_noise(noise_sigma(img), sigma)
        add = float(np.sqrt(max(self.noise ** 2 - left ** 2, 0.0)))
        rng = np.random.default_rng(zlib.crc32(img.tobytes()))
        out = _blur(img.astype(np.float64) / 255.0, sigma) + rng.normal(0.0, add, img.shape)
        self.last = {"blur_sigma": sigma, "noise_added": add}
        return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


def match_sensor(img: np.ndarray, style: np.ndarray) -> np.ndarray:
    """``img`` with the blur and noise of ``style`` (both RGB uint8); see :class:`SensorMatch`."""
    return SensorMatch(style)(img)
