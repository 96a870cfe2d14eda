"""Stylize a dataset with a fine-tuned stylizer, or make the ``recon`` control arm (docs/method.md sections 1 and 7).

``apply_stylizer(model_dir, input_dir, out_dir, cfg)`` reads a paired folder (``images/`` +
``masks/``), and for each image: resize to the DiffAE size, invert with D_A to ``t0``
(``cfg.ddim.apply_invert_steps`` UNet calls), generate with D_B + SPN
(``cfg.ddim.apply_gen_steps`` calls) — or with D_A and no SPN in ``mode="recon"`` — and write
the result at ``cfg.data.seg_size`` with :class:`~stylseg.manifest.ArmWriter`. Masks are
copied, resized with nearest neighbour.

Upsampling from the diffusion size to the segmentation size (``cfg.stylize.upsample``):
``bilinear`` resizes the stylized image; ``detail`` (docs/method.md section 7) adds the upsampled
stylization residual to the full-resolution input, ``x_hi + up(stylized_lo - x_lo)``, which
keeps the input's fine detail; ``detail_lesion`` keeps it on the lesion and its ring only. The ``recon`` arm goes
through the same path. ``cfg.stylize.sensor = "match"`` (or an arm asked for with ``sensor="match"``) then gives
the style image's blur and noise (:mod:`stylseg.sensor`; estimated from the style image at the segmentation size);
``recon``, which has no style image, never gets it.

Batched (``cfg.stylize.apply_batch_size``) and resumable: the batches are a fixed partition
of the sorted file list, a batch whose items are all written is skipped, files are written
atomically and the manifest after each batch, so an interrupted run continues to the same
result without corrupt files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..data.io import from_tensor_pm1, read_image, read_mask, resize_image, resize_mask, to_tensor_pm1
from ..data.tensors import mask_tensor
from ..data.validate import validate_paired
from ..manifest import ArmWriter
from ..utils import StylsegError, check_choice, resolve_device
from .losses import LESION_RING
from .stylizer import Stylizer, StylizerRecord, load_diffae

MODES = ("st", "recon")
UPSAMPLE = ("bilinear", "detail", "detail_lesion")
SENSOR = ("off", "match")


def upsample_result(stylized_lo: np.ndarray, input_img: np.ndarray, size: int, how: str = "bilinear",
                    mask: Optional[np.ndarray] = None, ring: float = LESION_RING) -> np.ndarray:
    """Bring a stylized image (S,S,3) uint8 from the diffusion size to ``size`` (seg size).

    ``bilinear``: resize. ``detail``: ``x_hi + up(stylized_lo - x_lo)`` where ``x_hi`` is the input
    at ``size`` and ``x_lo`` the input at the diffusion size (what the model saw): the band above the
    diffusion size's resolution is the input's. ``detail_lesion``: ``up(stylized_lo) + g (x_hi - up(x_lo))``,
    the input's band on the lesion and its ring only (``g``: ``mask`` (size,size) dilated by ``ring`` x the
    side, as ``losses.lesion_weight``, feathered by a Gaussian of a quarter of the ring; all ones for an
    empty mask), the plain upsampled output elsewhere. Rounded and clipped to uint8. All equal a plain
    resize when ``size`` is the diffusion size.
    """
    check_choice(how, UPSAMPLE, "upsampling", "stylize.upsample")
    s = stylized_lo.shape[0]
    if size == s:
        return stylized_lo
    if how == "bilinear":
        return resize_image(stylized_lo, size)
    import torch.nn.functional as F

    up = lambda a: F.interpolate(torch.from_numpy(a).permute(2, 0, 1)[None], size=(size, size), mode="bilinear",
                                 align_corners=False)[0].permute(1, 2, 0).numpy()
    x_lo = resize_image(input_img, s).astype(np.float32)
    x_hi = resize_image(input_img, size).astype(np.float32)
    if how == "detail":
        return np.clip(np.round(x_hi + up(stylized_lo.astype(np.float32) - x_lo)), 0, 255).astype(np.uint8)
    if mask is None:
        raise StylsegError("stylize.upsample=detail_lesion keeps the input's detail around the lesion and needs "
                           "each image's mask (a paired folder with masks/), or set stylize.upsample=detail")
    g = detail_gate(mask, size, ring)[..., None]
    out = up(stylized_lo.astype(np.float32)) + g * (x_hi - up(x_lo))
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def detail_gate(mask: np.ndarray, size: int, ring: float = LESION_RING) -> np.ndarray:
    """Where ``upsample=detail_lesion`` keeps the input's detail: the mask at ``size`` dilated by ``ring`` x the side
    (``losses.lesion_weight``: all ones for an empty mask), feathered by a Gaussian of a quarter of the ring so
    that the switch draws no seam; float32 (size,size) in [0,1]."""
    from scipy import ndimage

    from .losses import lesion_weight

    m = torch.from_numpy((resize_mask(mask, size) > 0).astype(np.float32))[None, None]
    g = lesion_weight(m, ring)[0, 0].numpy()
    if g.min() == 1.0:
        return g
    return np.clip(ndimage.gaussian_filter(g, sigma=max(0.5, ring * size / 4.0)), 0.0, 1.0).astype(np.float32)


def apply_stylizer(model_dir: Optional[os.PathLike], input_dir: os.PathLike, out_dir: os.PathLike, cfg, *,
                   mode: str = "st", use_spn: bool = True, diffae_dir: Optional[os.PathLike] = None,
                   device="auto", upsample: Optional[str] = None, progress: bool = True,
                   arm: Optional[str] = None, overwrite: bool = False, record: Optional[StylizerRecord] = None) -> Path:
    """Write the stylized (``mode="st"``) or round-trip (``mode="recon"``) arm; returns ``out_dir``.

    ``model_dir``: the stylizer folder (``stylseg stylize finetune``; may be None in ``recon``
    mode when ``diffae_dir`` is given). ``input_dir``: a paired folder with ``images/`` (and
    ``masks/``, copied). Images of any mode are converted to RGB (grayscale repeated, RGBA
    composited on black). ``use_spn=False`` drops the SPN term (the ``--no-spn`` control).
    An arm folder made from other input or settings is refused unless ``overwrite`` (made again). ``record``: the
    stylizer folder's settings, when already read (:class:`~.stylizer.StylizerRecord`).
    """
    check_choice(mode, MODES, "mode")
    spec = {"out": out_dir, "mode": mode, "use_spn": use_spn, "arm": arm}
    return apply_arms(model_dir, input_dir, [spec], cfg, diffae_dir=diffae_dir, device=device,
                      upsample=upsample, progress=progress, overwrite=overwrite, record=record)[0]


def apply_arms(model_dir: Optional[os.PathLike], input_dir: os.PathLike, specs: Sequence[Dict[str, Any]], cfg, *,
               diffae_dir: Optional[os.PathLike] = None, device="auto", upsample: Optional[str] = None,
               progress: bool = True, overwrite: bool = False, record: Optional[StylizerRecord] = None) -> List[Path]:
    """Write several arms from one input folder, sharing the D_A inversion (the most expensive
    part: ``apply_invert_steps`` UNet calls) between them; each arm then costs only its
    ``apply_gen_steps`` generation calls. ``specs``: dicts with ``out`` and optional ``mode``
    (st | recon), ``use_spn`` (default True), ``arm`` (name), ``sensor`` (off | match; default
    ``cfg.stylize.sensor``; always off for recon). Each arm is written exactly as
    :func:`apply_stylizer` writes it (same files, manifest and resume behaviour). One process at a time
    writes each arm folder (:func:`stylseg.lock.stage_lock`)."""
    from contextlib import ExitStack

    from ..lock import stage_lock

    with ExitStack() as stack:
        for sp in specs:
            stack.enter_context(stage_lock(sp["out"], "stylize apply"))
        return _apply_arms(model_dir, input_dir, specs, cfg, diffae_dir=diffae_dir, device=device, upsample=upsample,
                           progress=progress, overwrite=overwrite, record=record)


def _apply_arms(model_dir, input_dir, specs, cfg, *, diffae_dir, device, upsample, progress, overwrite, record
                ) -> List[Path]:
    specs = _check_specs(specs, cfg)
    how = upsample or cfg.stylize.upsample
    check_choice(how, UPSAMPLE, "upsampling", "stylize.upsample")
    dev = resolve_device(device)
    # the arm's masks are copied from the input's paired folder: the shared rules, before any work
    pairs = validate_paired(input_dir, use="stylize")
    st, stylizer_sha, diffae_sha = _open_stylizer(model_dir, diffae_dir, specs, dev, record)
    seg = int(cfg.data.seg_size)
    match = _sensor_match(st.record, seg) if any(sp["sensor"] == "match" for sp in specs) else None
    writers = []
    for sp in specs:
        w = _arm_writer(sp, st, cfg, how, input_dir, stylizer_sha, diffae_sha, match, overwrite)
        writers.append((w, sp["mode"], bool(sp["use_spn"]) and sp["mode"] == "st",
                        match if sp["sensor"] == "match" else None))
    _write_batches(st, writers, pairs, cfg, how, dev, progress)
    return [Path(sp["out"]) for sp in specs]


def _check_specs(specs, cfg) -> List[Dict[str, Any]]:
    """The arm specs with their defaults filled in and checked (``sensor``: the spec's, else the config's; off for
    recon)."""
    specs = [dict({"mode": "st", "use_spn": True, "arm": None, "sensor": None}, **sp) for sp in specs]
    for sp in specs:
        check_choice(sp["mode"], MODES, "mode")
        sp["sensor"] = "off" if sp["mode"] == "recon" else (sp["sensor"] or cfg.stylize.sensor)
        check_choice(sp["sensor"], SENSOR, "sensor", "stylize.sensor")
    return specs


def _open_stylizer(model_dir, diffae_dir, specs, dev, record=None):
    """``(stylizer, its folder checksum or None, D_A's checksum)``: the stylizer folder loaded (each file read once),
    or for recon arms alone without ``model_dir`` a chain of D_A only."""
    if any(sp["mode"] == "st" for sp in specs) or model_dir is not None:
        if model_dir is None:
            raise StylsegError("mode 'st' needs the stylizer folder (--model DIR)")
        st = Stylizer.load(model_dir, diffae_dir=diffae_dir, device=dev, record=record)
        return st, st.sha256, st.record.diffae.get("sha256")
    if diffae_dir is None:
        raise StylsegError("mode 'recon' needs --diffae DIR (or --model DIR to take D_A from the stylizer)")
    diffae = load_diffae(diffae_dir, dev)
    return Stylizer(diffae, None, None, 0.0), None, diffae.sha256


def _arm_writer(sp, st: Stylizer, cfg, how: str, input_dir, stylizer_sha, diffae_sha, match, overwrite) -> ArmWriter:
    """The :class:`~stylseg.manifest.ArmWriter` of one arm, with the settings its manifest records."""
    mode, rec = sp["mode"], st.record
    use_spn = bool(sp["use_spn"]) and mode == "st"
    n_inv, n_gen = cfg.ddim.apply_invert_steps, cfg.ddim.apply_gen_steps
    params = {"mode": mode, "use_spn": use_spn, "t0": cfg.ddim.t0, "invert_steps": n_inv, "gen_steps": n_gen,
              "unet_calls_per_image": n_inv + n_gen, "diffusion_size": st.size, "upsample": how,
              "spn_lambda": st.lam if use_spn else 0.0, "structure_region": st.region if use_spn else None,
              "sensor": sp["sensor"], "preset": rec.preset if mode == "st" else None,
              "preset_changes": rec.preset_changes if mode == "st" else None,
              "stylizer_sha256": stylizer_sha if mode == "st" else None, "diffae_sha256": diffae_sha}
    if how == "detail_lesion":
        params["upsample_ring"] = LESION_RING
    if sp["sensor"] == "match":
        params.update(match.params())
    arm = sp["arm"] or (("st" if use_spn else "st_nospn") if mode == "st" else "recon")
    method = "diffusion-st" if mode == "st" else "diffusion-recon"
    st_only = mode == "st" and rec is not None
    return ArmWriter(sp["out"], arm, method, params, source=Path(input_dir),
                     style=rec.style.get("path") if st_only else None, size=int(cfg.data.seg_size),
                     substitute=rec.substitute if st_only else None, overwrite=overwrite)


def _write_batches(st: Stylizer, writers, pairs, cfg, how: str, dev, progress: bool) -> None:
    """Stylize the images of ``pairs`` in batches (``stylize.apply_batch_size``) into every arm of ``writers``: the
    D_A inversion of a batch is shared by the arms; one worker thread writes batch k (upsampling, sensor
    matching, PNGs, manifests) while the UNet calls of batch k+1 run; batches finish in order. Each mask is
    decoded once, then resized to each size it is needed at."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    files, mask_paths = [i for i, _ in pairs], [m for _, m in pairs]
    names = [p.stem for p in files]
    size, seg, t0 = st.size, int(cfg.data.seg_size), cfg.ddim.t0
    bs = max(1, int(cfg.stylize.apply_batch_size))
    batches = [list(range(i, min(i + bs, len(files)))) for i in range(0, len(files), bs)]
    todo = [b for b in batches if not all(w.done(names[i]) for w, *_ in writers for i in b)]
    bar = tqdm(total=len(files), initial=len(files) - sum(len(b) for b in todo),
               desc="+".join(w.manifest["arm"] for w, *_ in writers), disable=not progress)
    gated = st.unet_b is not None and st.region != "image" and any(use for _, _, use, _ in writers)

    def finish(b, imgs, masks, rendered) -> None:
        at_seg: Dict[int, np.ndarray] = {}
        for (w, _mode, _use, sensor), outs in zip(writers, rendered):
            if outs is None:
                continue
            for k, i in enumerate(b):
                if w.done(names[i]):
                    continue
                m = at_seg[k] if k in at_seg else at_seg.setdefault(k, resize_mask(masks[k], seg))
                out = upsample_result(outs[k], imgs[k], seg, how, m, LESION_RING)
                w.add(names[i], sensor(out) if sensor is not None else out, m, source_image=files[i])
            w.flush()

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending, pending_b = None, []
        for b in todo:
            imgs = [read_image(files[i]) for i in b]
            masks = [read_mask(mask_paths[i]) for i in b]
            x = torch.stack([to_tensor_pm1(resize_image(im, size)) for im in imgs]).to(dev)
            lo = torch.stack([mask_tensor(m, size) for m in masks]).to(dev) if gated else None
            rendered = _render_batch(st, writers, [names[i] for i in b], x, lo, cfg)
            if pending is not None:
                pending.result()  # the previous batch is written (its errors surface here)
                bar.update(len(pending_b))
            pending, pending_b = pool.submit(finish, b, imgs, masks, rendered), b
        if pending is not None:
            pending.result()
            bar.update(len(pending_b))
    bar.close()
    for w, *_ in writers:
        w.flush()


def _render_batch(st: Stylizer, writers, names: Sequence[str], x: torch.Tensor, lo: Optional[torch.Tensor], cfg
                  ) -> List[Optional[np.ndarray]]:
    """Each arm's renders (B,S,S,3) uint8 of the batch ``x`` (B,3,S,S) in [-1,1] (None for an arm that has them
    all), from one D_A inversion shared by the arms; ``lo``: the batch's masks (B,1,S,S) for a lesion-gated SPN."""
    t0, n_gen = cfg.ddim.t0, cfg.ddim.apply_gen_steps
    xt, z = st.encode_stochastic(x, t0, cfg.ddim.apply_invert_steps)  # shared by every arm
    rendered = []
    for w, mode, use_spn, _sensor in writers:
        if all(w.done(n) for n in names):
            rendered.append(None)
            continue
        with torch.no_grad():
            y = st.render(xt, z, x, t0, n_gen, use_spn, masks=lo) if mode == "st" else \
                st.diffae.render(xt, z, t0, n_gen)
        rendered.append(from_tensor_pm1(y))
    return rendered


def _sensor_match(record, size: int):
    """The :class:`~stylseg.sensor.SensorMatch` of the stylizer's style image at ``size`` px: the copy the stylizer
    folder keeps (a folder written before copies were kept: the image at its recorded path), checked by its
    sha256."""
    from ..sensor import SensorMatch
    from ..utils import sha256_file

    path, model_dir = record.style_image, record.folder
    if not path.is_file():
        raise StylsegError(f"sensor matching needs the style image the stylizer in {model_dir} was fine-tuned on, "
                           f"recorded as {path}, which is not there: put it back, or run with --set stylize.sensor=off")
    want = record.style.get("sha256")
    if want and sha256_file(path) != want:
        raise StylsegError(f"{path}: not the style image the stylizer in {model_dir} was fine-tuned on (sha256 differs); "
                           f"restore it, or run with --set stylize.sensor=off")
    return SensorMatch(resize_image(read_image(path), size))
