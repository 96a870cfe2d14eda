"""Stylize a dataset with a fine-tuned stylizer, or make the ``recon`` control arm (METHOD.md 1, 7).

``apply_stylizer(model_dir, input_dir, out_dir, cfg)`` reads a paired folder (``images/`` +
``masks/``), and for each image: resize to the DiffAE size, invert with D_A to ``t0``
(``cfg.ddim.apply_invert_steps`` UNet calls), generate with D_B + SPN
(``cfg.ddim.apply_gen_steps`` calls) — or with D_A and no SPN in ``mode="recon"`` — and write
the result at ``cfg.data.seg_size`` with :class:`~stylseg.manifest.ArmWriter`. Masks are
copied, resized with nearest neighbour.

Upsampling from the diffusion size to the segmentation size (``cfg.stylize.upsample``):
``bilinear`` resizes the stylized image; ``detail`` (METHOD.md section 7) adds the upsampled
stylization residual to the full-resolution input, ``x_hi + up(stylized_lo - x_lo)``, which
keeps the input's fine detail. The ``recon`` arm goes through the same path.

Batched (``cfg.stylize.apply_batch_size``) and resumable: the batches are a fixed partition
of the sorted file list, a batch whose items are all written is skipped, files are written
atomically and the manifest after each batch, so an interrupted run continues to the same
result without corrupt files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..data.io import from_tensor_pm1, read_image, read_mask, resize_image, resize_mask
from ..manifest import ArmWriter
from ..utils import StylsegError, resolve_device
from .pipeline import Stylizer, diffae_size, folder_sha256, list_folder, load_diffae, masks_of, to_tensor_pm1

MODES = ("st", "recon")
UPSAMPLE = ("bilinear", "detail")


def upsample_result(stylized_lo: np.ndarray, input_img: np.ndarray, size: int, how: str = "bilinear") -> np.ndarray:
    """Bring a stylized image (S,S,3) uint8 from the diffusion size to ``size`` (seg size).

    ``bilinear``: resize. ``detail``: ``x_hi + up(stylized_lo - x_lo)`` where ``x_hi`` is the input
    at ``size`` and ``x_lo`` the input at the diffusion size (what the model saw); rounded and
    clipped to uint8. Both equal a plain resize when ``size`` is the diffusion size.
    """
    if how not in UPSAMPLE:
        raise StylsegError(f"unknown upsampling {how!r}; valid: {', '.join(UPSAMPLE)} (set stylize.upsample)")
    s = stylized_lo.shape[0]
    if size == s:
        return stylized_lo
    if how == "bilinear":
        return resize_image(stylized_lo, size)
    import torch.nn.functional as F

    x_lo = resize_image(input_img, s).astype(np.float32)
    x_hi = resize_image(input_img, size).astype(np.float32)
    res = torch.from_numpy(stylized_lo.astype(np.float32) - x_lo).permute(2, 0, 1)[None]
    up = F.interpolate(res, size=(size, size), mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
    return np.clip(np.round(x_hi + up), 0, 255).astype(np.uint8)


def apply_stylizer(model_dir: Optional[os.PathLike], input_dir: os.PathLike, out_dir: os.PathLike, cfg, *,
                   mode: str = "st", use_spn: bool = True, diffae_dir: Optional[os.PathLike] = None,
                   device="auto", upsample: Optional[str] = None, progress: bool = True,
                   arm: Optional[str] = None) -> Path:
    """Write the stylized (``mode="st"``) or round-trip (``mode="recon"``) arm; returns ``out_dir``.

    ``model_dir``: the stylizer folder (``stylseg stylize finetune``; may be None in ``recon``
    mode when ``diffae_dir`` is given). ``input_dir``: a paired folder with ``images/`` (and
    ``masks/``, copied). Images of any mode are converted to RGB (grayscale repeated, RGBA
    composited on black). ``use_spn=False`` drops the SPN term (the ``--no-spn`` control).
    """
    from tqdm.auto import tqdm

    if mode not in MODES:
        raise StylsegError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    how = upsample or cfg.stylize.upsample
    if how not in UPSAMPLE:
        raise StylsegError(f"unknown upsampling {how!r}; valid: {', '.join(UPSAMPLE)} (set stylize.upsample)")
    dev = resolve_device(device)
    files = list_folder(input_dir)
    mdir = masks_of(input_dir)
    if mdir is None:
        raise StylsegError(f"{input_dir}: no masks/ folder; the arm's masks are copied from the input's paired folder")
    mask_paths = []
    for p in files:
        cands = [mdir / p.name] + sorted(mdir.glob(p.stem + ".*"))
        m = next((c for c in cands if c.is_file()), None)
        if m is None:
            raise StylsegError(f"{mdir}: no mask for image {p.name} (same file stem expected)")
        mask_paths.append(m)

    substitute = None
    if mode == "st" or model_dir is not None:
        if model_dir is None:
            raise StylsegError("mode 'st' needs the stylizer folder (--model DIR)")
        st = Stylizer.load(model_dir, diffae_dir=diffae_dir, device=dev)
        substitute = st.meta.get("substitute")
        model_sha = folder_sha256(model_dir)
        diffae_sha = st.meta["diffae"].get("sha256")
        style = st.meta.get("style", {}).get("path")
    else:
        if diffae_dir is None:
            raise StylsegError("mode 'recon' needs --diffae DIR (or --model DIR to take D_A from the stylizer)")
        st = Stylizer(load_diffae(diffae_dir, dev), None, None, 0.0)
        model_sha, diffae_sha, style = None, folder_sha256(diffae_dir), None
    size = st.size
    seg = int(cfg.data.seg_size)
    t0, n_inv, n_gen = cfg.ddim.t0, cfg.ddim.apply_invert_steps, cfg.ddim.apply_gen_steps
    z_style = None
    if mode == "st" and cfg.stylize.mix_style_z:
        from .finetune import STYLE_Y
        from .pipeline import load_image_pm1

        with torch.no_grad():
            z_style = st.diffae.encoder(load_image_pm1(Path(model_dir) / STYLE_Y, size)[None].to(dev))
    use_spn = bool(use_spn) and mode == "st"
    params = {"mode": mode, "use_spn": use_spn, "t0": t0, "invert_steps": n_inv, "gen_steps": n_gen,
              "unet_calls_per_image": n_inv + n_gen, "diffusion_size": size, "upsample": how,
              "spn_lambda": st.lam if use_spn else 0.0, "mix_style_z": z_style is not None,
              "stylizer_sha256": model_sha, "diffae_sha256": diffae_sha}
    arm = arm or (("st" if use_spn else "st_nospn") if mode == "st" else "recon")
    method = "diffusion-st" if mode == "st" else "diffusion-recon"
    writer = ArmWriter(out_dir, arm, method, params, source=Path(input_dir), style=style, size=seg,
                       substitute=substitute if mode == "st" else None)
    bs = max(1, int(cfg.stylize.apply_batch_size))
    batches = [list(range(i, min(i + bs, len(files)))) for i in range(0, len(files), bs)]
    names = [p.stem for p in files]
    todo = [b for b in batches if not all(writer.done(names[i]) for i in b)]
    bar = tqdm(total=len(files), initial=len(files) - sum(len(b) for b in todo), desc=f"{arm} arm",
               disable=not progress)
    for b in todo:
        imgs = [read_image(files[i]) for i in b]
        x = torch.stack([to_tensor_pm1(resize_image(im, size)) for im in imgs]).to(dev)
        if mode == "st":
            y = st.stylize(x, t0, n_inv, n_gen, use_spn=use_spn, z_style=z_style)
        else:
            y = st.reconstruct(x, t0, n_inv, n_gen)
        outs = from_tensor_pm1(y)
        for k, i in enumerate(b):
            if writer.done(names[i]):
                continue
            img = upsample_result(outs[k], imgs[k], seg, how)
            mask = resize_mask(read_mask(mask_paths[i]), seg)
            writer.add(names[i], img, mask, source_image=files[i])
        writer.flush()
        bar.update(len(b))
    bar.close()
    writer.flush()
    return Path(out_dir)
