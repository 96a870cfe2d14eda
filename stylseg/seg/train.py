"""Training a segmenter on a paired folder (docs/method.md section 5), resumable exactly.

``train_segmenter(arch, train_dir, out_dir, cfg)`` writes::

    out_dir/checkpoints/last.safetensors   model + optimizer + RNG states + epoch + history (resume)
    out_dir/checkpoints/best.safetensors   model weights of the best epoch (validation Dice, else train loss)
    out_dir/history.json                   per epoch: loss, validation Dice, seconds
    out_dir/model/                         the final (last-epoch) model folder, kind "segmenter"

Adam at ``cfg.seg.lr_for(arch)`` for ``cfg.seg.epochs_for(arch)`` epochs, batch
``cfg.seg.batch_size``, images ``cfg.seg.image_size`` px (ImageNet-normalised), PraNet's
structure loss (summed over side outputs). Options: PraNet's multi-scale training
(``cfg.seg.multiscale``, e.g. ``(0.75, 1, 1.25)``: one optimizer step per scale and batch,
sizes rounded to multiples of 32, as PraNet's train script), PraNet's gradient clipping
(``cfg.seg.grad_clip``: every gradient element clamped to ``[-c, c]``), paired geometric
augmentation (``augment``) and colour jitter (``color_jitter``). bf16 autocast on CUDA only.

Exact resume: the shuffling order and augmentation of epoch ``e`` are drawn from
``(seed, e)``; the checkpoint holds the model, the optimizer and the RNG states, so a run
interrupted after any epoch and rerun gives the same weights as an uninterrupted one.
The resume file (:mod:`stylseg.checkpoint`: safetensors + JSON, never unpickled) and the
finished model folder carry the run's signature: settings, seed, the training (and validation)
folder's file names and content; the resume file also the compute (CPU thread count: 1 and 2
threads give different weights). A rerun whose signature differs is refused, naming what
changed, unless ``overwrite=True`` (``--overwrite``). One process at a time writes ``out_dir``
(:func:`stylseg.lock.stage_lock`).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import (compute_key, fingerprint_diff, folder_fingerprint, is_rng_state, load_state, refuse_legacy,
                          rng_state, save_state, set_rng_state)
from ..lock import stage_lock
from ..utils import StylsegError, read_json, resolve_device, save_model_folder, seed_everything, set_threads, \
    write_json
from .losses import dice_score, structure_loss
from .models import create_segmenter, segmenter_config

CHECKPOINTS = "checkpoints"
LAST, BEST = "last.safetensors", "best.safetensors"
#: the pickle resume file of older versions: never opened
LEGACY_LAST = "last.pt"


def _batches(n: int, bs: int, g: torch.Generator) -> List[torch.Tensor]:
    """A shuffled split of ``range(n)`` into batches of ``bs``; a last batch of one item is merged
    into the previous one (BatchNorm needs two)."""
    perm = torch.randperm(n, generator=g)
    out = list(torch.split(perm, bs))
    if len(out) > 1 and len(out[-1]) == 1:
        out[-2] = torch.cat([out[-2], out.pop()])
    return out


def _signature(arch: str, cfg, seed: int, train_dir: Path, n: int, val_dir: Optional[Path] = None) -> Dict[str, Any]:
    """What a resumed or finished run must have been made from: settings, seed, the training (and validation)
    folder's names and content (not its path: a run folder may be moved or handed out)."""
    sc = cfg.seg
    return {"model": segmenter_config(arch, sc), "pretrained": sc.pretrained, "image_size": sc.image_size,
            "batch_size": sc.batch_size, "lr": sc.lr_for(arch), "multiscale": list(sc.multiscale),
            "grad_clip": sc.grad_clip, "augment": sc.augment, "color_jitter": sc.color_jitter, "seed": seed,
            "n_train": n, "train_data": folder_fingerprint(train_dir),
            "val_data": folder_fingerprint(val_dir) if val_dir is not None else None}


def load_batch(ds, idx, device):
    """Stack items ``idx`` of a :class:`~stylseg.data.PairedDataset` (mode "seg") into
    ``(images (B,3,S,S), masks (B,1,S,S))`` on ``device``."""
    items = [ds[int(i)] for i in idx]
    x = torch.stack([it["image"] for it in items]).to(device)
    m = torch.stack([it["mask"] for it in items]).to(device)
    return x, m


def train_step(model, opt, x: torch.Tensor, m: torch.Tensor, sc, rate: float = 1.0, autocast=None) -> float:
    """One optimizer step on ``x (B,3,S,S)``, ``m (B,1,S,S)``: resize by ``rate`` (PraNet's
    multi-scale: to ``round(S * rate / 32) * 32``, bilinear), structure loss, backward, PraNet's
    element-wise gradient clamp when ``sc.grad_clip > 0``, Adam step. Returns the loss."""
    if rate != 1.0:
        s = int(round(sc.image_size * rate / 32) * 32)
        x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=True)
        m = F.interpolate(m, size=(s, s), mode="bilinear", align_corners=True)
    if autocast is None:
        autocast = torch.autocast("cpu", enabled=False)
    with autocast:
        pred = model(x)
    loss = structure_loss(pred, m)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if sc.grad_clip > 0:  # PraNet's clip_gradient: element-wise clamp
        for p in model.parameters():
            if p.grad is not None:
                p.grad.clamp_(-sc.grad_clip, sc.grad_clip)
    opt.step()
    return float(loss.detach())


@torch.no_grad()
def evaluate_dice(model, images: torch.Tensor, masks: torch.Tensor, device, batch_size: int = 16) -> float:
    """Mean Dice at threshold 0.5 of ``model`` on ``images (N,3,S,S)`` (normalised) vs ``masks (N,1,S,S)``."""
    was = model.training
    model.eval()
    scores = []
    for i in range(0, len(images), batch_size):
        out = model(images[i:i + batch_size].to(device))
        scores.append(dice_score(out, masks[i:i + batch_size].to(device)).cpu())
    model.train(was)
    return float(torch.cat(scores).mean())


def train_segmenter(arch: str, train_dir: os.PathLike, out_dir: os.PathLike, cfg, *, val_dir: Optional[os.PathLike] = None,
                    seed: int = 0, device: str = "auto", progress: bool = True, stop_after: Optional[int] = None,
                    keep_last: bool = True, overwrite: bool = False) -> Optional[Path]:
    """Train ``arch`` on the paired folder ``train_dir``; returns the final model folder ``out_dir/model``.

    ``cfg``: a :class:`~stylseg.config.RunConfig` (its ``seg`` part is used); ``val_dir``: a
    paired folder scored each epoch (Dice at 0.5); ``stop_after``: stop after this many epochs
    in this call (returns ``None``; rerun to continue from ``checkpoints/last.safetensors``);
    ``keep_last=False`` deletes ``last.safetensors`` once the model folder is written.
    A finished run (model folder present, same signature) is returned as is; a checkpoint or model folder of
    another signature raises :class:`StylsegError` naming what changed, unless ``overwrite`` (start over).
    """
    out = Path(out_dir)
    with stage_lock(out, "seg train"):
        return _train_segmenter(arch, train_dir, out, cfg, val_dir=val_dir, seed=seed, device=device,
                                progress=progress, stop_after=stop_after, keep_last=keep_last, overwrite=overwrite)


def _train_segmenter(arch, train_dir, out: Path, cfg, *, val_dir, seed, device, progress, stop_after, keep_last,
                     overwrite) -> Optional[Path]:
    from tqdm.auto import tqdm

    from ..data import PairedDataset

    sc = cfg.seg
    dev = resolve_device(cfg.device if device in (None, "", "auto") else device)
    if dev.type == "cpu":
        set_threads()
    model_dir, ck_dir = out / "model", out / CHECKPOINTS
    ds = PairedDataset(train_dir, sc.image_size, mode="seg", augment=sc.augment, seed=seed, cache=True,
                       color_jitter=sc.color_jitter, use="train")  # validated: all-zero masks are refused
    n = len(ds)
    if n < 2:
        raise StylsegError(f"{train_dir}: {n} training pair(s); at least 2 are needed")
    if val_dir is not None:  # checked now, before a model is built or anything written
        from ..data.validate import validate_paired

        validate_paired(val_dir, use="eval", deep=False, warn=False)
    sig = _signature(arch, cfg, seed, Path(train_dir), n, Path(val_dir) if val_dir is not None else None)
    # a resume must also run on the same kind of compute (1 and 2 CPU threads give different weights); a finished
    # model is reused on any machine
    ck_fp = dict(sig, compute=compute_key(dev))
    epochs = sc.epochs_for(arch)
    last = ck_dir / LAST
    if _finished(out, sig, epochs, overwrite):
        return model_dir
    seed_everything(seed)
    arch_kw = segmenter_config(arch, sc)
    model = create_segmenter(arch_kw.pop("arch"), pretrained=sc.pretrained, image_size=sc.image_size, **arch_kw)
    model.to(dev).train()
    opt = torch.optim.Adam(model.parameters(), lr=sc.lr_for(arch))
    history: List[Dict[str, Any]] = []
    start, best = 0, -float("inf")
    if last.is_file():
        start, history, best = _resume(last, ck_fp, epochs, model, opt)
    val = None
    if val_dir is not None:
        vds = PairedDataset(val_dir, sc.image_size, mode="seg", augment=False, use="eval")
        val = vds.tensors()
    rates = list(sc.multiscale) or [1.0]
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    steps_per_epoch = len(_batches(n, sc.batch_size, torch.Generator().manual_seed(0))) * len(rates)
    bar = tqdm(total=(epochs - start) * steps_per_epoch, desc=f"{arch} {out.parent.name}/{out.name}"[:40],
               disable=not progress, leave=False)
    done_now = 0
    for epoch in range(start, epochs):
        rec = _train_epoch(model, opt, ds, sc, rates, autocast, dev, seed, epoch, bar)
        if val is not None:
            rec["val_dice"] = evaluate_dice(model, val[0], val[1], dev)
        history.append(rec)
        score = rec["val_dice"] if val is not None else -rec["loss"]
        if score > best:
            best = score
            save_state(ck_dir / BEST, {"model": model.state_dict(), "epoch": epoch + 1, "score": score}, fingerprint=ck_fp)
        save_state(last, {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                          "history": history, "best": best,
                          "rng": rng_state()}, fingerprint=ck_fp)
        write_json(out / "history.partial.json", history)
        done_now += 1
        if stop_after is not None and done_now >= stop_after and epoch + 1 < epochs:
            bar.close()
            return None
    bar.close()
    config = {**segmenter_config(arch, sc), "image_size": sc.image_size, "normalize": "imagenet"}
    save_model_folder(model_dir, "segmenter", config, model.state_dict(),
                      extra={"train": sig, "train_dir": str(Path(train_dir).resolve()), "epochs": epochs,
                             "history": history})
    write_json(out / "history.json", history)
    (out / "history.partial.json").unlink(missing_ok=True)
    if not keep_last:
        last.unlink(missing_ok=True)
    return model_dir


def _finished(out: Path, sig: Dict[str, Any], epochs: int, overwrite: bool) -> bool:
    """Empty the run folder ``out`` under ``overwrite``; True when it holds a finished model of this signature and
    epoch count. A finished model of other input or settings, with no checkpoint to resume, is refused."""
    model_dir, ck_dir = out / "model", out / CHECKPOINTS
    if overwrite:
        for f in (ck_dir / LAST, ck_dir / BEST, ck_dir / LEGACY_LAST, out / "history.json", out / "history.partial.json"):
            f.unlink(missing_ok=True)
        if model_dir.is_dir():
            shutil.rmtree(model_dir)
    refuse_legacy(ck_dir / LEGACY_LAST, "pass --overwrite (overwrite=True)")
    if (model_dir / "config.json").is_file() and (out / "history.json").is_file():
        meta = read_json(model_dir / "config.json")
        if meta.get("train") == sig and meta.get("epochs") == epochs:
            return True
        if meta.get("train") != sig and not (ck_dir / LAST).is_file():
            raise StylsegError(f"{model_dir}: a segmenter trained from other input or settings "
                               f"({fingerprint_diff(meta.get('train'), sig)}); use another --out folder, or pass "
                               f"--overwrite (overwrite=True) to train it again")
    return False


def _resume(last: Path, ck_fp: Dict[str, Any], epochs: int, model, opt) -> Tuple[int, List[Dict[str, Any]], float]:
    """Load the resume file ``last`` into ``model`` and ``opt`` and restore the RNG; returns (epoch, history, best).
    A run of more epochs than ``epochs`` is refused, never relabelled as a shorter one."""
    ck = load_state(last, fingerprint=ck_fp, what="segmentation run", hint="pass --overwrite (overwrite=True)",
                    types={"model": dict, "optimizer": dict, "epoch": int, "history": list, "best": float,
                           "rng": is_rng_state})
    if ck["epoch"] > epochs:
        raise StylsegError(f"{last}: this run was trained for {ck['epoch']} epochs, more than the {epochs} asked "
                           f"for (seg.epochs); its weights are not a {epochs}-epoch model. Ask for at least "
                           f"{ck['epoch']} epochs (--set seg.epochs={ck['epoch']}), use another --out folder, "
                           f"or pass --overwrite (overwrite=True) to train {epochs} epochs from the start")
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    set_rng_state(ck["rng"])
    return ck["epoch"], ck["history"], ck["best"]


def _train_epoch(model, opt, ds, sc, rates, autocast, dev, seed, epoch: int, bar) -> Dict[str, Any]:
    """One epoch over ``ds`` in the seed's batch order, every batch at each multi-scale rate; its history record."""
    t0 = time.perf_counter()
    ds.set_epoch(epoch)
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch)
    losses = []
    for idx in _batches(len(ds), sc.batch_size, g):
        x, m = load_batch(ds, idx, dev)
        for rate in rates:
            losses.append(train_step(model, opt, x, m, sc, rate, autocast))
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.4f}")
    return {"epoch": epoch + 1, "loss": float(np.mean(losses)), "seconds": time.perf_counter() - t0}
