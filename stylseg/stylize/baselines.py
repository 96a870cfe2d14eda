"""Cheap stylizers from ONE style image: the honest competition of the diffusion stylizer.

- :func:`histogram_match`: per-channel histogram matching (skimage ``match_histograms``).
- :func:`reinhard`: Reinhard et al. 2001 colour transfer, mean and standard deviation of each
  CIELAB channel moved to the style image's.
- :func:`fda`: Fourier Domain Adaptation (Yang & Soatto, CVPR 2020): the low-frequency
  square of the amplitude spectrum (half-width ``floor(beta * min(H, W))`` around the
  centre of the shifted spectrum) is replaced by the style image's; phase kept.
- :func:`sensor_only`: no colour change, only the style image's blur and noise
  (:mod:`stylseg.sensor`); ``apply_baseline(..., sensor=True)`` adds that step after any method.

All take and return RGB ``uint8`` ``(H, W, 3)`` arrays. A style image of another mode
(grayscale, RGBA, palette) is converted to RGB when read (:func:`stylseg.data.io.read_image`);
one of another size is used as is by histogram matching and Reinhard (only its statistics
matter) and resized (bilinear) to the content image's size by FDA, whose spectra must align.

:func:`apply_baseline` writes a whole arm in the contract's format (``images/``, ``masks/``,
``manifest.json``) with :class:`stylseg.manifest.ArmWriter`; masks are copied unchanged
(resized nearest), images resized to ``size`` (bilinear) before stylization; resumable.
CLI: ``stylseg stylize baseline --method histogram|reinhard|fda --style IMG --input DIR --out DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..data.io import list_images, read_image, read_mask, resize_image, resize_mask
from ..utils import Registry, StylsegError

BASELINES: Registry = Registry("baseline stylizer")


def _check_rgb(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise StylsegError(f"{what}: expected an RGB image (H, W, 3), got shape {a.shape}")
    a = a[..., :3]
    if a.dtype != np.uint8:
        raise StylsegError(f"{what}: expected uint8, got {a.dtype}")
    return a


def histogram_match(img: np.ndarray, style: np.ndarray) -> np.ndarray:
    """Match each RGB channel's histogram of ``img`` to ``style``'s (uint8 in, uint8 out)."""
    from skimage.exposure import match_histograms

    img, style = _check_rgb(img, "image"), _check_rgb(style, "style image")
    out = match_histograms(img, style, channel_axis=-1)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def reinhard(img: np.ndarray, style: np.ndarray) -> np.ndarray:
    """Reinhard colour transfer in CIELAB: ``L' = (L - mu_img) * sigma_style / sigma_img + mu_style``
    per channel, then back to RGB (clipped)."""
    from skimage.color import lab2rgb, rgb2lab

    img, style = _check_rgb(img, "image"), _check_rgb(style, "style image")
    a = rgb2lab(img.astype(np.float64) / 255.0)
    b = rgb2lab(style.astype(np.float64) / 255.0)
    mu_a, sd_a = a.reshape(-1, 3).mean(0), a.reshape(-1, 3).std(0)
    mu_b, sd_b = b.reshape(-1, 3).mean(0), b.reshape(-1, 3).std(0)
    out = (a - mu_a) * (sd_b / np.maximum(sd_a, 1e-6)) + mu_b
    rgb = lab2rgb(out)
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


def fda(img: np.ndarray, style: np.ndarray, beta: float = 0.01) -> np.ndarray:
    """Fourier Domain Adaptation: swap the low-frequency amplitude of ``img`` for ``style``'s.

    Per channel: ``A, P = |F(img)|, angle(F(img))``; in the centred spectrum the square of
    half-width ``b = floor(beta * min(H, W))`` (b = 0: the DC term alone, i.e. the channel
    means) takes the style's amplitude; ``out = F^-1(A' exp(iP))``, clipped to uint8.
    ``style`` is resized (bilinear) to ``img``'s size when they differ.
    """
    img, style = _check_rgb(img, "image"), _check_rgb(style, "style image")
    if not 0 <= beta <= 0.5:
        raise StylsegError(f"fda: beta must lie in [0, 0.5], got {beta}")
    h, w = img.shape[:2]
    if style.shape[:2] != (h, w):
        from PIL import Image

        style = np.asarray(Image.fromarray(style).resize((w, h), Image.BILINEAR))
    fs = np.fft.fftshift(np.fft.fft2(img.astype(np.float64), axes=(0, 1)), axes=(0, 1))
    ft = np.fft.fftshift(np.fft.fft2(style.astype(np.float64), axes=(0, 1)), axes=(0, 1))
    amp, pha = np.abs(fs), np.angle(fs)
    b = int(np.floor(min(h, w) * beta))
    ch, cw = h // 2, w // 2
    amp[ch - b:ch + b + 1, cw - b:cw + b + 1] = np.abs(ft)[ch - b:ch + b + 1, cw - b:cw + b + 1]
    out = np.fft.ifft2(np.fft.ifftshift(amp * np.exp(1j * pha), axes=(0, 1)), axes=(0, 1)).real
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


BASELINES.add("histogram", histogram_match)
BASELINES.add("reinhard", reinhard)
BASELINES.add("fda", fda)


def sensor_only(img: np.ndarray, style: np.ndarray) -> np.ndarray:
    """The sensor-matching step alone (blur and noise of ``style``, no colour change): the ablation
    arm of ``st_sensor`` arm (:mod:`stylseg.sensor`)."""
    from ..sensor import match_sensor

    return match_sensor(_check_rgb(img, "content image"), _check_rgb(style, "style image"))


BASELINES.add("sensor", sensor_only)


def _mask_path(masks: Path, stem: str) -> Optional[Path]:
    for ext in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"):
        p = masks / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


def apply_baseline(method: str, style_path: os.PathLike, input_dir: os.PathLike, out_dir: os.PathLike,
                   size: int, arm: Optional[str] = None, progress: bool = True, sensor: bool = False,
                   overwrite: bool = False, **params: Any) -> Path:
    """Stylize every image of the paired folder ``input_dir`` (``images/`` + ``masks/``) with
    ``method`` (``histogram``, ``reinhard``, ``fda``, ``sensor``; ``params`` e.g. ``beta=0.01``) from
    the one image ``style_path``, writing ``out_dir/images``, ``out_dir/masks`` and ``manifest.json``
    at ``size x size`` px. ``sensor=True`` follows the method with sensor matching (the style
    image's blur and noise, :mod:`stylseg.sensor`). Items already written are skipped (resume); an arm
    made from other input or settings is refused unless ``overwrite`` (made again). One process at a time
    writes ``out_dir`` (:func:`stylseg.lock.stage_lock`). Returns ``out_dir``."""
    from ..lock import stage_lock

    with stage_lock(out_dir, f"stylize baseline {method}"):
        return _apply_baseline(method, style_path, input_dir, out_dir, size, arm, progress, sensor, overwrite, params)


def _apply_baseline(method, style_path, input_dir, out_dir, size, arm, progress, sensor, overwrite, params) -> Path:
    from tqdm.auto import tqdm

    from ..manifest import ArmWriter

    fn: Callable = BASELINES.get(method)
    if method != "fda" and params:
        raise StylsegError(f"baseline {method!r} takes no parameters, got {', '.join(params)}")
    input_dir, style_path = Path(input_dir), Path(style_path)
    img_dir, msk_dir = input_dir / "images", input_dir / "masks"
    if not img_dir.is_dir():
        raise StylsegError(f"{input_dir}: not a paired folder (expected images/ and masks/ inside)")
    style = read_image(style_path)
    files = list_images(img_dir)
    if not files:
        raise StylsegError(f"{img_dir}: no images found")
    if method == "fda":
        params = {"beta": float(params.get("beta", 0.01))}
    if (input_dir / "manifest.json").is_file():  # the input is itself an arm (e.g. st -> st_sensor): remember which
        from ..manifest import read_manifest
        from ..utils import json_sha256

        m = read_manifest(input_dir)
        params = dict(params, input_arm={"arm": m.get("arm"), "params_sha256": json_sha256(m.get("params", {}))})
    # FDA's spectra must align and the sensor statistics depend on the size: both see the style at `size`
    style_fit = resize_image(style, size) if method in ("fda", "sensor") else style
    match = None
    if sensor or method == "sensor":
        from ..sensor import SensorMatch

        match = SensorMatch(resize_image(style, size))  # fails here, before any folder is made, on a bad size
        if method == "sensor":
            match = None  # the method is the step itself
        else:
            params = dict(params, sensor="match", **match.params())
    writer = ArmWriter(out_dir, arm=arm or (f"{method}_sensor" if match else method), method=method, params=params,
                       source=input_dir, style=style_path, size=int(size), overwrite=overwrite)
    todo = [f for f in files if not writer.done(f.stem)]
    for i, f in enumerate(tqdm(todo, desc=f"{method}", disable=not progress or not todo)):
        mp = _mask_path(msk_dir, f.stem)
        if mp is None:
            raise StylsegError(f"{f}: no mask with the same name in {msk_dir}; add it or remove the image")
        img = resize_image(read_image(f), size)
        mask = resize_mask(read_mask(mp), size)
        out = fn(img, style_fit, **{k: v for k, v in params.items() if k == "beta"})
        writer.add(f.stem, match(out) if match else out, mask, source_image=f)
        if (i + 1) % 32 == 0:
            writer.flush()
    writer.flush()
    return Path(out_dir)


# --------------------------------------------------------------------------- CLI
def add_baseline_parser(subparsers):
    """Add the ``baseline`` action to a stage's sub-parsers (``stylseg stylize baseline ...``)."""
    from ..cli import add_common

    p = subparsers.add_parser("baseline", help="cheap stylizer from one style image: histogram | reinhard | fda | sensor",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--method", required=True, choices=BASELINES.names())
    p.add_argument("--style", required=True, help="the one style image (target domain)")
    p.add_argument("--input", required=True, help="paired folder (images/ + masks/) to stylize")
    p.add_argument("--out", required=True, help="arm folder to write (images/, masks/, manifest.json)")
    p.add_argument("--size", type=int, default=None, help="output size in px (default: the profile's data.seg_size)")
    p.add_argument("--beta", type=float, default=None, help="FDA: low-frequency window (default 0.01)")
    p.add_argument("--sensor", action="store_true",
                   help="follow the method with the style image's blur and noise (stylseg.sensor); "
                        "arm name <method>_sensor")
    p.add_argument("--arm", default=None, help="arm name in the manifest (default: the method)")
    p.add_argument("--overwrite", action="store_true",
                   help="make the arm again when --out holds one made from other input or settings")
    add_common(p)
    p.set_defaults(func=_cli_baseline)
    return p


def _cli_baseline(args) -> int:
    from ..cli import config_from_args

    cfg = config_from_args(args)
    size = args.size or cfg.data.seg_size
    params = {}
    if args.beta is not None:
        if args.method != "fda":
            raise StylsegError("--beta only applies to --method fda")
        params["beta"] = args.beta
    out = apply_baseline(args.method, args.style, args.input, args.out, size, arm=args.arm, sensor=args.sensor,
                         overwrite=args.overwrite, **params)
    print(f"wrote {out}")
    return 0


#: the cheap arms a run folder gets when missing (method -> parameters)
RUN_BASELINES = {"histogram": {}, "reinhard": {}, "fda": {"beta": 0.01}}


def ensure_baseline_arms(layout, size: int, methods=RUN_BASELINES, progress: bool = True) -> dict:
    """Make the cheap arms of a run folder that are missing: ``RUN/stylized/<method>`` from
    ``RUN/data/source/train`` and ``RUN/data/style.png``, and ``<method>@s<k>`` from each further
    style image of ``--styles K`` (arms already written, e.g. by notebook 05,
    are kept; unfinished ones resume). Returns ``{arm: folder}`` of every arm under ``RUN/stylized``
    that has a manifest."""
    from ..checkpoint import folder_fingerprint
    from ..layout import arm_name
    from ..manifest import read_manifest

    src, styles = layout.domain("source", "train"), layout.style_images()
    for p, what in [(src, "the source training set")] + [(s, "a style image") for s in styles]:
        if not Path(p).exists():
            raise StylsegError(f"missing {what} at {p}: run notebooks/00_setup_and_data.ipynb first with the same RUN_DIR")
    for k, style in enumerate(styles):
        for method, params in dict(methods).items():
            out = layout.stylized(arm_name(method, k))
            if (out / "manifest.json").is_file():
                m = read_manifest(out)
                same_input = m.get("source_fingerprint") in (None, folder_fingerprint(src))
                if same_input and len(m.get("items", [])) >= len(list_images(Path(src) / "images")):
                    continue
            apply_baseline(method, style, src, out, size, arm=arm_name(method, k), progress=progress, **params)
    root = layout.root / "stylized"
    return {p.parent.name: p.parent for p in sorted(root.glob("*/manifest.json"))}
