"""Training the Diffusion Autoencoder (DiffAE's simple loss, docs/method.md section 2).

Loss (DDPM's "simple" objective, DiffAE eq. 8): with x0 a training image, ``t ~ U{0..T-1}``,
``eps ~ N(0, I)`` and ``x_t = sqrt(a_t) x0 + sqrt(1-a_t) eps``::

    L = || eps_theta(x_t, t, Enc_phi(x0)) - eps ||^2

encoder and UNet trained jointly. AdamW with linear warm-up, gradient clipping, EMA weights
(diffusers' ``EMAModel``; the EMA weights are the saved model), bf16 autocast on GPU only.

Runs on `accelerate <https://huggingface.co/docs/accelerate>`_: one CPU, one GPU, or many GPUs
and nodes with ``accelerate launch -m stylseg.cli diffae train --data DIR --out DIR --profile
paper`` (``cfg.diffae.batch_size`` is per process; each process draws its own batches; resuming is
bit-exact on one process, and statistically equivalent on several).

The output folder ``out_dir`` is itself the model folder (``config.json`` + ``model.safetensors``,
EMA weights, loadable by ``DiffAE.from_pretrained(out_dir)``) and also holds ``samples/`` (sample
and reconstruction grids), ``history.json``, ``loss_curve.png`` and ``checkpoint/state.safetensors`` (model,
EMA, optimizer, LR schedule, step and RNG states, as safetensors + JSON: never unpickled; a rerun resumes exactly
where it stopped). The checkpoint's fingerprint holds the settings, the training images' names and content and
the compute (CPU thread count): a rerun from other data, even with as many images, is refused (``--no-resume``
starts over), and so is training on with another thread count; a finished model is reused on any machine. One process at a time writes ``out_dir`` (:func:`stylseg.lock.stage_lock`).
"""

from __future__ import annotations

import copy
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn

from ..data.tensors import load_folder
from ..checkpoint import (compute_key, files_fingerprint, load_state, read_state_header, refuse_legacy, rng_state,
                          save_state, set_rng_state)
from ..launch import main_writer
from ..utils import StylsegError, atomic_path, read_json, resolve_device, write_json
from .ddim import SCHEDULE_KEYS
from .model import DiffAE

CHECKPOINT = "checkpoint"
STATE_FILE = "state.safetensors"
#: the pickle checkpoint of older versions: never opened
LEGACY_STATE_FILE = "state.pt"
LOSS_WEIGHTINGS = ("eps", "v", "min_snr", "x0_capped")
#: DiffAEConfig fields that may change between a run and its resumption
RESUMABLE_CHANGES = ("train_steps", "max_seconds", "sample_every", "checkpoint_every", "sample_steps", "init",
                     "micro_batch")


# --------------------------------------------------------------------------- helpers
class _LossModule(nn.Module):
    """The training objective as one module, so that ``accelerate`` (DDP, autocast) wraps its forward.

    forward(x0 (B,3,S,S) in [-1,1], t (B,) long, noise (B,3,S,S)) -> scalar MSE (DiffAE eq. 8)."""

    def __init__(self, model: DiffAE, weighting: str = "eps", gamma: float = 5.0):
        super().__init__()
        if weighting not in LOSS_WEIGHTINGS:
            raise StylsegError(f"diffae.loss_weighting={weighting!r} is not one of {', '.join(LOSS_WEIGHTINGS)}")
        self.model = model
        a = model.schedule.alphas_cumprod.float()
        snr = a / (1 - a)
        if weighting == "eps":
            w = torch.ones_like(a)
        elif weighting == "v":
            # |v_hat - v|^2 = |eps_hat - eps|^2 / a_t: the v-MSE (Salimans & Ho 2022)
            w = 1 / a
        elif weighting == "min_snr":
            # min-SNR-gamma (Hang et al. 2023) for epsilon prediction: min(SNR, gamma) / SNR
            w = snr.clamp(max=gamma) / snr
        else:  # "x0_capped": x0-MSE capped at gamma x eps-MSE, i.e. weight max(1, min(1/SNR, gamma))
            w = (1 / snr).clamp(min=1.0, max=gamma)
        self.register_buffer("weight", w, persistent=False)

    def forward(self, x0, t, noise):
        z = self.model.encoder(x0)
        x_t = self.model.schedule.add_noise(x0, noise, t)
        eps = self.model.unet(x_t, t, z)
        per = ((eps.float() - noise.float()) ** 2).flatten(1).mean(1)
        return torch.mean(self.weight.to(per.device)[t] * per)


def _fingerprint(cfg, n_images: int, data: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Settings (but ``RESUMABLE_CHANGES``), schedule, seed and the training images (``data``: names and content,
    :func:`stylseg.checkpoint.files_fingerprint`)."""
    d = {k: v for k, v in cfg.diffae.__dict__.items() if k not in RESUMABLE_CHANGES}
    d.update({k: getattr(cfg.ddim, k) for k in SCHEDULE_KEYS})
    d["seed"] = cfg.seed
    d["precision"] = cfg.precision  # bf16 and fp32 give other weights; micro-batches and checkpointing do not
    d["n_images"] = n_images
    d["data"] = data
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def to_uint8_grid(rows: List[torch.Tensor], pad: int = 2) -> np.ndarray:
    """Tile rows of images (each (N,3,S,S) in [-1,1], same N) into one uint8 (H,W,3) array."""
    from ..data.io import from_tensor_pm1

    rows = [from_tensor_pm1(r.detach().float().cpu()) for r in rows]
    n, s = rows[0].shape[0], rows[0].shape[1]
    grid = np.full((len(rows) * (s + pad) + pad, n * (s + pad) + pad, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        for j in range(n):
            y, x = pad + i * (s + pad), pad + j * (s + pad)
            grid[y:y + s, x:x + s] = r[j]
    return grid


@torch.no_grad()
def preview(model: DiffAE, x: torch.Tensor, t0: float, steps: int, sample_steps: int, seed: int = 0,
            gaussian: bool = False) -> np.ndarray:
    """The training preview grid: row 1 the images x (N,3,S,S), row 2 their SDEdit reconstructions
    at ``t0`` (fresh noise, own z_sem), row 3 fresh samples from pure noise rendered with each
    image's z_sem (what the code alone carries), row 4 samples with z from the fitted Gaussian
    (meaningful once it is fitted, at the end of training)."""
    g = torch.Generator().manual_seed(seed)
    was = model.training
    model.eval()
    z = model.encode(x)
    rec = model.sdedit(x, t0, steps, generator=g, z=z)
    from .model import randn

    xT = randn(x.shape, g, x.device)
    own = model.render(xT, z, 1.0, sample_steps)
    rows = [x, rec, own]
    if gaussian:
        rows.append(model.render(xT, model.sample_z(x.shape[0], g).to(x.device), 1.0, sample_steps))
    model.train(was)
    return to_uint8_grid(rows)


def save_loss_curve(history: Dict[str, Any], path: os.PathLike) -> Path:
    """Loss per step (light) and its running mean (bold), log scale, as a PNG."""
    from matplotlib.figure import Figure

    steps, loss = np.asarray(history["step"]), np.asarray(history["loss"])
    fig = Figure(figsize=(6, 3.2), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    if len(loss):
        ax.plot(steps, loss, lw=0.6, alpha=0.4, label="loss per step")
        k = max(1, len(loss) // 20)
        sm = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], sm, lw=2, label=f"running mean ({k} steps)")
        ax.set_yscale("log")
        ax.legend(loc="upper right")
    ax.set_xlabel("step")
    ax.set_ylabel("epsilon MSE")
    ax.set_title("DiffAE training loss")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def loss_falls(history: Dict[str, Any], frac: float = 0.1) -> Dict[str, float]:
    """Mean loss over the first and the last ``frac`` of the steps: ``{"first", "last", "ratio"}``."""
    loss = np.asarray(history.get("loss", []), dtype=float)
    if len(loss) < 2:
        return {"first": float("nan"), "last": float("nan"), "ratio": float("nan")}
    k = max(1, int(round(len(loss) * frac)))
    first, last = float(loss[:k].mean()), float(loss[-k:].mean())
    return {"first": first, "last": last, "ratio": last / first}


def training_status(out_dir: os.PathLike) -> Dict[str, Any]:
    """What ``out_dir`` holds: ``{"step", "finished", "model"}`` (model: a loadable model folder)."""
    out = Path(out_dir)
    has_model = (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    st = {"step": 0, "finished": False, "model": has_model}
    if st["model"]:
        meta = read_json(out / "config.json")
        tr = meta.get("training", {})
        st.update(step=int(tr.get("step", 0)), finished=bool(tr.get("finished", False)),
                  train_steps=tr.get("train_steps"), stopped_by=tr.get("stopped_by"),
                  max_seconds=tr.get("max_seconds"))
    return st


def _ema_model(model: DiffAE, ema) -> DiffAE:
    m = copy.deepcopy(model)
    ema.copy_to(m.parameters())
    return m.eval()


# --------------------------------------------------------------------------- training
def train_diffae(data_dir: os.PathLike, out_dir: os.PathLike, cfg, *, resume: bool = True, device: str = "auto",
                 progress: bool = True, log: Callable[[str], None] = print) -> Path:
    """Train a DiffAE on the images in ``data_dir`` into ``out_dir``; returns ``out_dir``.

    ``cfg`` is a :class:`~stylseg.config.RunConfig` (``cfg.diffae``, ``cfg.ddim``, ``cfg.seed``).
    Images are read once (any mode/size), resized to ``cfg.diffae.image_size`` and cached in
    memory; horizontal flips augment them. ``train_steps`` optimizer steps of batch
    ``batch_size`` (per process), stopping early and cleanly after ``max_seconds`` (0 = no cap).
    Every ``sample_every`` steps a preview grid goes to ``out_dir/samples/``; every
    ``checkpoint_every`` steps, and at the end, a checkpoint to ``out_dir/checkpoint/``; without the progress
    bar (``progress=False``) each of these checkpoints also ``log``s the step, the loss, the seconds a step and
    the time left, so that a long run in a script or a log file shows how far it got.

    With ``resume`` (default) a run continues from ``out_dir/checkpoint`` exactly (same result as an
    uninterrupted run); a finished run is not repeated (raise ``train_steps`` to train on). A
    checkpoint made with another architecture or training setup raises :class:`StylsegError`.
    """
    from accelerate import Accelerator

    out = Path(out_dir)
    if (out / "config.json").is_file():
        meta = read_json(out / "config.json")
        kind = meta.get("kind")
        if kind != "diffae":
            raise StylsegError(f"{out / 'config.json'}: --out already holds a {kind!r} model; "
                               f"choose another --out folder")
        if meta.get("config", {}).get("arch") is not None:
            raise StylsegError(f"{out / 'config.json'}: --out holds an imported DiffAE ({meta['config']['arch']}), "
                               f"which training would overwrite; choose another --out folder (in a run folder: "
                               f"delete {out} to train the kit's own D_A with diffae.init=train)")
    dev = resolve_device(device)
    dc = cfg.diffae
    if dc.micro_batch and dc.batch_size % dc.micro_batch:
        raise StylsegError(f"diffae.micro_batch={dc.micro_batch} does not divide diffae.batch_size={dc.batch_size}: "
                           f"set --set diffae.micro_batch to a divisor of it (0 computes the whole batch at once)")
    # the memory settings (bf16 autocast, micro-batches, activations recomputed in backward) are applied in the
    # training loop itself, so that one process can train with different settings one after another
    acc = Accelerator(cpu=dev.type == "cpu", mixed_precision="no")
    with main_writer(out, "diffae train", acc.is_main_process):
        return _train(data_dir, out, cfg, acc, resume=resume, progress=progress, log=log)


@dataclass
class _State:
    """What DiffAE training changes as it runs and what its checkpoint holds."""

    model: DiffAE
    opt: torch.optim.Optimizer
    sched: Any
    ema: Any
    gen: torch.Generator
    step: int = 0
    history: Dict[str, Any] = field(default_factory=lambda: {"step": [], "loss": [], "lr": [], "seconds": []})
    train_seconds: float = 0.0

    def state_dict(self, raw: DiffAE) -> Dict[str, Any]:
        return {"model": raw.state_dict(), "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "ema": self.ema.state_dict(), "step": self.step, "history": self.history,
                "train_seconds": self.train_seconds, "rng": rng_state(generator=self.gen)}


def _start(cfg, acc) -> _State:
    """A fresh model (seeded per process), AdamW with the encoder's own learning rate, linear warm-up, EMA weights
    and the batch generator."""
    from diffusers.training_utils import EMAModel

    dc = cfg.diffae
    torch.manual_seed(cfg.seed + 7919 * acc.process_index)
    model = DiffAE.from_config(dc, cfg.ddim)
    enc_ids = {id(p) for p in model.encoder.parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in enc_ids], "lr": dc.lr},
              {"params": list(model.encoder.parameters()), "lr": dc.lr * dc.enc_lr_mult}]
    opt = torch.optim.AdamW(groups, lr=dc.lr, weight_decay=0.0)
    warm = max(1, dc.warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    ema = EMAModel(model.parameters(), decay=dc.ema_decay)
    gen = torch.Generator(device=acc.device).manual_seed(cfg.seed * 1000 + 17 + acc.process_index)
    return _State(model, opt, sched, ema, gen)


def _resume(st: _State, ckpt_path: Path, fp: Dict[str, Any], compute: str, out: Path, cfg, acc, say) -> bool:
    """Continue ``st`` from the checkpoint (its fingerprint compared before any tensor is read); True when there is
    nothing to train (finished, or stopped by the time budget that still holds)."""
    dc = cfg.diffae
    hint = f"delete {out}, or pass --no-resume (RETRAIN = True in notebook 02) to start over"
    old = dict(read_state_header(ckpt_path, hint).get("fingerprint") or {})
    old_compute = old.pop("compute", None)
    state = load_state(ckpt_path, fingerprint=dict(fp, compute=old_compute), what="DiffAE training", hint=hint)
    st.model.load_state_dict(state["model"])
    st.opt.load_state_dict(state["optimizer"])
    st.sched.load_state_dict(state["scheduler"])
    st.ema.load_state_dict(state["ema"])
    set_rng_state(state["rng"], generator=st.gen)
    st.step, st.history, st.train_seconds = state["step"], state["history"], state.get("train_seconds", 0.0)
    if acc.num_processes > 1:  # the saved generator state is the main process's: give each its own stream
        st.gen.manual_seed(cfg.seed * 1000 + 17 + acc.process_index + 1_000_003 * st.step)
    say(f"resuming from {ckpt_path} at step {st.step}")
    done = training_status(out)
    if st.step >= dc.train_steps and done["model"] and done["step"] == st.step:
        say(f"{out}: already trained ({st.step} steps with this configuration); nothing to do")
        return True
    if done["model"] and done["step"] == st.step and done.get("stopped_by") == "time" \
            and done.get("max_seconds") == dc.max_seconds:
        # the profile's time budget was spent: rerunning (a notebook, `stylseg reproduce`) must not
        # train on silently and invalidate everything built on this model
        say(f"{out}: stopped at step {st.step} when diffae.max_seconds={dc.max_seconds:g} was spent; "
            f"raise diffae.max_seconds (0 = no cap) to train on")
        return True
    if old_compute != compute:
        raise StylsegError(f"{ckpt_path}: this training ran on {old_compute}, here it would go on with {compute}, "
                           f"which gives other weights than either alone; train on with the same thread count "
                           f"(STYLSEG_THREADS) or device, or {hint}")
    return False


def _train(data_dir, out: Path, cfg, acc, *, resume: bool, progress: bool, log: Callable[[str], None]) -> Path:
    dc = cfg.diffae
    main = acc.is_main_process
    say = log if main else (lambda *_: None)

    data = load_folder(data_dir, dc.image_size, log=say)
    images, n_img = data.images, len(data.files)
    fp = _fingerprint(cfg, n_img, files_fingerprint(data.files))
    # training on must also run on the same kind of compute (CPU thread count); a finished model is reused anywhere
    compute = compute_key(acc.device)
    ckpt_path = out / CHECKPOINT / STATE_FILE
    legacy = out / CHECKPOINT / LEGACY_STATE_FILE
    if resume:
        refuse_legacy(legacy, "pass --no-resume (RETRAIN = True in notebook 02)")
    elif main:
        legacy.unlink(missing_ok=True)
    st = _start(cfg, acc)
    if resume and ckpt_path.is_file():
        if _resume(st, ckpt_path, fp, compute, out, cfg, acc, say):
            return out
    elif not resume and ckpt_path.is_file():
        say(f"--no-resume: starting over, {ckpt_path} will be overwritten")

    st.ema.to(acc.device)
    images = images.to(acc.device)
    loss_mod = _LossModule(st.model, dc.loss_weighting, dc.loss_gamma)
    loss_mod, st.opt = acc.prepare(loss_mod, st.opt)
    raw = acc.unwrap_model(loss_mod).model
    fixed = images[: min(8, n_img)]

    def save_checkpoint():
        if main:
            save_state(ckpt_path, st.state_dict(raw), fingerprint=dict(fp, compute=compute))
            write_json(out / "history.json", _history_summary(st.history, st.step, dc, st.train_seconds, n_img))

    def save_preview(m: DiffAE, tag: str, gaussian: bool = False):
        if main:
            from ..data.io import write_image

            write_image(out / "samples" / f"{tag}.png",
                        preview(m, fixed, cfg.ddim.t0, cfg.ddim.apply_gen_steps, dc.sample_steps, seed=cfg.seed,
                                gaussian=gaussian))

    stopped_by = _loop(st, loss_mod, raw, images, cfg, acc, save_checkpoint, save_preview, progress, say)
    acc.wait_for_everyone()
    save_checkpoint()
    if main:
        _finish(st, raw, images, data_dir, out, cfg, fp, stopped_by, save_preview, say)
    acc.wait_for_everyone()
    return out


def _loop(st: _State, loss_mod, raw: DiffAE, images: torch.Tensor, cfg, acc, save_checkpoint, save_preview,
          progress: bool, say) -> str:
    """Optimizer steps until ``diffae.train_steps`` or ``diffae.max_seconds``; returns what stopped it
    (``"steps"`` or ``"time"``)."""
    from tqdm.auto import tqdm

    from ..config import resolve_precision
    from ..utils import autocast

    dc = cfg.diffae
    start, step_start, n_img = time.time(), st.step, images.shape[0]
    bar = tqdm(total=dc.train_steps, initial=min(st.step, dc.train_steps), desc="DiffAE training",
               disable=not (progress and acc.is_local_main_process), dynamic_ncols=True)
    loss_mod.train()
    B = dc.batch_size
    mb = dc.micro_batch or B
    T = cfg.ddim.T
    raw.unet.grad_checkpoint = bool(cfg.grad_checkpoint)
    precision = resolve_precision(cfg, acc.device)
    gen = st.gen
    while st.step < dc.train_steps:
        if dc.max_seconds and time.time() - start >= dc.max_seconds:
            say(f"stopping at step {st.step}: diffae.max_seconds={dc.max_seconds:g} reached (rerun to continue)")
            bar.close()
            return "time"
        t_step = time.time()
        idx = torch.randint(0, n_img, (B,), generator=gen, device=acc.device)
        flip = torch.rand(B, generator=gen, device=acc.device) < 0.5
        x0 = images[idx]
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        t = torch.randint(0, T, (B,), generator=gen, device=acc.device)
        noise = torch.randn(x0.shape, generator=gen, device=acc.device)
        # the batch's draws are made once; micro-batches only split the arithmetic (the same step in less memory)
        loss = x0.new_zeros(())
        chunks = list(zip(*(v.split(mb) for v in (x0, t, noise))))
        for k, (xc, tc, nc) in enumerate(chunks):
            sync = k == len(chunks) - 1 or acc.num_processes == 1
            with acc.no_sync(loss_mod) if not sync else nullcontext():
                with autocast(acc.device, precision):
                    part = loss_mod(xc, tc, nc).float() * (xc.shape[0] / B)
                acc.backward(part)
            loss = loss + part.detach()
        if dc.grad_clip > 0:
            acc.clip_grad_norm_(loss_mod.parameters(), dc.grad_clip)
        st.opt.step()
        st.sched.step()
        st.opt.zero_grad(set_to_none=True)
        st.ema.step(raw.parameters())
        st.step += 1
        st.train_seconds += time.time() - t_step
        lv = float(acc.gather(loss.detach()).mean()) if acc.num_processes > 1 else float(loss.detach())
        _record(st.history, st.step, lv, float(st.sched.get_last_lr()[0]), time.time() - start)
        bar.update(1)
        bar.set_postfix(loss=f"{lv:.4f}")
        if dc.sample_every and st.step % dc.sample_every == 0 and st.step < dc.train_steps:
            save_preview(_ema_model(raw, st.ema), f"step_{st.step:07d}")
        if dc.checkpoint_every and st.step % dc.checkpoint_every == 0:
            save_checkpoint()
            if not progress:
                say(checkpoint_line(st.step, dc.train_steps, st.history["loss"], time.time() - start,
                                    st.step - step_start))
    bar.close()
    return "steps"


def _record(history: Dict[str, Any], step: int, loss: float, lr: float, seconds: float) -> None:
    history["step"].append(step)
    history["loss"].append(loss)
    history["lr"].append(lr)
    history["seconds"].append(round(seconds, 3))


def _finish(st: _State, raw: DiffAE, images: torch.Tensor, data_dir, out: Path, cfg, fp, stopped_by: str,
            save_preview, say) -> None:
    """The main process's last step: the EMA model with its latent Gaussian fitted to the training codes, saved as
    the model folder with the history, the loss curve and the final preview."""
    dc, n_img = cfg.diffae, images.shape[0]
    final = _ema_model(raw, st.ema)
    with torch.no_grad():
        z = torch.cat([final.encode(images[i:i + 64]) for i in range(0, n_img, 64)])
    final.fit_latent_gaussian(z.float().cpu())
    finished = st.step >= dc.train_steps
    summary = _history_summary(st.history, st.step, dc, st.train_seconds, n_img)
    summary.update(finished=finished, stopped_by=stopped_by)
    write_json(out / "history.json", summary)
    final.save_pretrained(out, extra={"training": {
        "step": st.step, "train_steps": dc.train_steps, "finished": finished, "stopped_by": stopped_by,
        "max_seconds": dc.max_seconds,
        "data": str(Path(data_dir)), "n_images": n_img, "seed": cfg.seed, "seconds": round(st.train_seconds, 2),
        "final_loss": summary.get("final_loss"), "diffae": fp}})
    save_loss_curve(st.history, out / "loss_curve.png")
    save_preview(final, "final", gaussian=True)
    say(f"DiffAE: {st.step}/{dc.train_steps} steps, loss {summary.get('final_loss')}, "
        f"{summary['images_per_second']:.1f} images/s -> {out}")


def checkpoint_line(step: int, total: int, losses, seconds: float, steps_here: int) -> str:
    """The line a checkpoint logs without a progress bar: step, mean loss of the last (up to) 50 steps, seconds
    a step over ``steps_here`` steps of this process and the time left at that rate."""
    tail = losses[-50:]
    loss = f"{float(np.mean(tail)):.4f}" if tail else "n/a"
    per = seconds / steps_here if steps_here > 0 else float("nan")
    left = max(0, total - step) * per
    return (f"DiffAE step {step}/{total}: loss {loss} (mean of the last {len(tail)}), {per:.2f} s a step, "
            f"about {left / 60:.0f} min to go")


def _history_summary(history: Dict[str, Any], step: int, dc, train_seconds: float, n_img: int) -> Dict[str, Any]:
    loss = history["loss"]
    k = max(1, len(loss) // 20)
    ips = step * dc.batch_size / train_seconds if train_seconds > 0 else 0.0
    return {**history, "steps_done": step, "train_steps": dc.train_steps, "n_images": n_img,
            "train_seconds": round(train_seconds, 3), "images_per_second": ips,
            "final_loss": float(np.mean(loss[-k:])) if loss else None, "loss_falls": loss_falls(history)}
