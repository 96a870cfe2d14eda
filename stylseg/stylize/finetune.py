"""One-shot fine-tuning of D_B + SPN from one style image (METHOD.md sections 1, 3, 4, 7).

``finetune(diffae_dir, style_path, content_dir, out_dir, cfg)`` writes a *stylizer* model
folder (kind ``"stylizer"``): D_B's UNet and the SPN's weights, the config (with the path and
sha256 of the D_A folder it was tuned from), the style pair PNGs, ``history.json`` and a
resumable ``checkpoint.safetensors`` (safetensors + JSON, never unpickled).

One iteration (OSASIS's loop, the kit's reading of the paper's Algorithm 1):

1. draw a content batch of random training images ``x_in`` (B,3,S,S) in [-1,1];
2. with the frozen encoder and D_A (no gradient): ``z = Enc(x_in)``, invert ``x_in`` to
   ``t0`` (``cfg.ddim.finetune_invert_steps`` UNet calls); the same for ``x_A_style`` when
   the loss set reconstructs the style pair;
3. walk the generation grid with D_B (``cfg.ddim.finetune_gen_steps`` calls), adding
   ``lambda * SPN(x_in, t)`` before each step; ``backprop="per_step"`` (OSASIS): at every
   step, losses on the x0-prediction, one optimizer step, the latent detached before the
   next step; ``backprop="chain"``: one optimizer step per iteration on the final output,
   gradients through the whole chain with gradient checkpointing.

Data parallel over processes (several GPUs, or several CPU processes): start the same command with
``accelerate launch`` (or ``torchrun``). Every process draws the same global content batch of
``stylize.batch_size`` images and works on its own slice of it; the gradients are averaged over the
processes before each optimizer step, so the run computes what one process with the whole batch
computes (up to float rounding), with 1/N of the activations per device. A single process, the
default, does not touch ``torch.distributed``.

``stylize.spn_role="structure"`` divides the labour as the SPN's name states: the structure term
``L_SPN`` trains the SPN alone and the style terms train D_B alone (two gradient passes through the
same graph per update); ``"guard"`` trains the SPN with the structure term alone and D_B with every
term; ``"joint"`` (default) sums every term into one loss for both, as the paper's eq. 13 is written.

Interpretations (METHOD.md section 7) are the kit's and are parameters: the style pair
(``y_B`` = the style image resized to the DiffAE size, ``x_A_style`` = the best of
``style_pair_tries`` SDEdit renders by D_A, chosen by ``10 L1 + (1 - MS-SSIM)`` or, with
``stylize.style_pair_pick=domain``, the render nearest the content images' mean in the style embedder's space),
``L_SPN``
as a structure-map loss, ``L_cycle`` with gradients through the last D_B call.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from ..data.io import from_tensor_pm1, read_image, write_image
from ..diffusion.ddim import ddim_step
from ..checkpoint import compute_key, files_fingerprint, fingerprint_diff, load_state, read_state_header, refuse_legacy, save_state
from ..lock import stage_lock
from ..utils import (StylsegError, check_choice, json_sha256, read_json, resolve_device,
                     save_model_folder, seed_everything, sha256_file, write_json)
from .embedders import embedder_substitute, make_embedder
from .losses import LOSS_SETS, StyleLoss, cycle_l1, lesion_weight, ms_ssim
from .pipeline import (KIND, diffae_size, folder_sha256, gen_steps_iter, generate, invert, load_content_masks,
                       load_diffae, load_folder_tensor, load_image_pm1)
from .spn import SPN_REGIONS, build_spn, spn_gate, spn_shift

STYLE_Y = "style_y_B.png"
STYLE_XA = "style_x_A.png"
CHECKPOINT = "checkpoint.safetensors"
#: the pickle checkpoint of older versions: never opened
LEGACY_CHECKPOINT = "checkpoint.pt"
HISTORY = "history.json"
BACKPROP = ("per_step", "chain")
#: who learns from the structure term (``stylize.spn_role``, module docstring): joint = D_B and the SPN learn from
#: every term; structure = the SPN from the structure term alone, D_B from the style terms alone; guard = the SPN
#: from the structure term alone, D_B from every term
SPN_ROLES = ("joint", "structure", "guard")
#: where the structure term looks (``stylize.structure_region``): the whole image, or the lesion and a ring
#: around it (:func:`stylseg.stylize.losses.lesion_weight`, from the content images' masks)
STRUCTURE_REGIONS = ("image", "lesion")

#: callback(iteration, step, t, x0_pred): iteration 0-based, step index in the generation walk,
#: the timestep t the UNet was called at, the content batch's x0-prediction (B,3,S,S) in [-1,1]
FinetuneCallback = Callable[[int, int, int, torch.Tensor], None]


# --------------------------------------------------------------------------- the style pair
#: how x_A_style is picked among the D_A renders of the style image (stylize.style_pair_pick)
STYLE_PAIR_PICKS = ("fidelity", "domain")


@torch.no_grad()
def make_style_pair(diffae, style_path: os.PathLike, t0: float, steps: int, tries: int = 4, seed: int = 0,
                    pick: str = "fidelity", embedder=None, content_mean: Optional[torch.Tensor] = None):
    """``(y_B, x_A_style, scores)``: the style image (1,3,S,S) in [-1,1] at the DiffAE size and
    the best of ``tries`` D_A SDEdit renders of it (noise ``y_B`` to ``t0``, denoise with D_A
    conditioned on ``Enc(y_B)``, ``steps`` UNet calls). ``scores`` (tries,), lowest picked:

    - ``pick="fidelity"`` (OSASIS): ``10 L1 + (1 - MS-SSIM)`` against the style image (OSASIS uses
      ``10 L1 + LPIPS``; LPIPS weights are not at hand offline);
    - ``pick="domain"``: the distance of the render's ``embedder`` embedding to ``content_mean``, the mean
      embedding of the domain-A content images. ``x_A_style`` stands for the style image as domain A would
      show it, and the style direction ``E(y_B) - E(x_A_style)`` is only as long and as clean as the render is
      typical of domain A. Fidelity works against that: on the synthetic polyp domains the render nearest the style
      image is the one least like domain A (docs/stylization.md), and the fine-tuning's style depended on which
      render the seed drew. It needs only the source images and the one style image.

    A style image of any size, aspect or mode (grayscale, RGBA, palette, 16-bit) is converted
    to RGB and resized to a square, as the paper resizes every image."""
    check_choice(pick, STYLE_PAIR_PICKS, "style pair pick", "stylize.style_pair_pick")  # before the renders
    if pick == "domain" and (embedder is None or content_mean is None):
        raise StylsegError("style_pair_pick=domain needs the style embedder and the content images' mean "
                           "embedding (finetune passes both)")
    s = diffae_size(diffae)
    dev = next(diffae.parameters()).device
    y = load_image_pm1(style_path, s).unsqueeze(0).to(dev)
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    ys = y.expand(tries, -1, -1, -1)
    noise = torch.randn(ys.shape, generator=g).to(dev)
    t_top = diffae.grid(t0, 1)[-1]
    xt = diffae.schedule.add_noise(ys, noise, torch.full((tries,), t_top, device=dev))
    z = diffae.encoder(y).expand(tries, -1)
    renders = generate(diffae.unet, xt, z, t0, steps, diffae.schedule)
    if pick == "fidelity":
        err = 10 * (renders - ys).abs().mean(dim=(1, 2, 3)) + (1 - ms_ssim((renders + 1) / 2, (ys + 1) / 2))
    else:
        err = (embedder(renders) - content_mean.to(renders.device)).norm(dim=-1)
    best = int(torch.argmin(err))
    return y, renders[best:best + 1], err.cpu()


def content_mean_embedding(embedder, content: torch.Tensor, device="cpu", batch: int = 32) -> torch.Tensor:
    """The mean embedding (D,) of the content images (N,3,S,S) in [-1,1], in batches on ``device``."""
    dev = torch.device(device)
    with torch.no_grad():
        total = sum(embedder(content[i:i + batch].to(dev)).sum(0) for i in range(0, len(content), batch))
    return total / len(content)


#: what style_pair.json names as each pick's criterion
_PICK_CRITERION = {"fidelity": "10*L1 + (1 - MS-SSIM)",
                   "domain": "distance to the content images' mean in the style embedder's space"}


def _load_or_make_style_pair(diffae, style_path, out_dir: Path, cfg, device, embedder=None, content=None):
    """Make the style pair once, save it as PNG in ``out_dir`` and always use the PNG versions
    (so that a resumed run sees exactly the same pair). ``content`` (N,3,S,S): the content images, whose mean
    embedding the ``domain`` pick needs (computed only when the pair is made)."""
    py, px = out_dir / STYLE_Y, out_dir / STYLE_XA
    if not (py.is_file() and px.is_file()):
        t0 = cfg.stylize.style_pair_t0 or cfg.ddim.t0  # both range-checked with the config (config.RANGES)
        pick = cfg.stylize.style_pair_pick
        content_mean = (content_mean_embedding(embedder, content, device)
                        if pick == "domain" and embedder is not None and content is not None else None)
        y, xa, err = make_style_pair(diffae, style_path, t0, cfg.ddim.apply_gen_steps,
                                     cfg.stylize.style_pair_tries, seed=cfg.seed, pick=pick, embedder=embedder,
                                     content_mean=content_mean)
        write_image(py, from_tensor_pm1(y[0]))
        write_image(px, from_tensor_pm1(xa[0]))
        write_json(out_dir / "style_pair.json", {"errors": err.tolist(), "best": int(torch.argmin(err)), "t0": t0,
                                                 "pick": pick, "criterion": _PICK_CRITERION[pick],
                                                 "style": str(style_path)})
    s = diffae_size(diffae)
    return load_image_pm1(py, s).unsqueeze(0).to(device), load_image_pm1(px, s).unsqueeze(0).to(device)


# --------------------------------------------------------------------------- settings
#: StylizeConfig fields that only matter when a stylizer is applied: not part of the fine-tuning settings, so
#: changing them never refits a stylizer
APPLY_ONLY = ("upsample", "sensor", "apply_batch_size")
#: StylizeConfig fields added after stylizer folders were first written. Folders written before hold the digest
#: of every other field (apply-only ones included), which is still accepted
ADDED_LATER = ("sensor",)
#: StylizeConfig fields added after stylizer folders were first written that enter the settings only when set
#: away from their default, so folders written before (with the default's behaviour) keep their digest
OMIT_IF_DEFAULT = ("w_structure", "spn_role", "structure_region", "spn_region", "lesion_ring", "ema_decay",
                   "style_pair_pick")


def _settings(diffae_sha: str, style_path, content_files, cfg, legacy: bool = False) -> Dict[str, Any]:
    st = dataclasses.asdict(cfg.stylize)
    for k in (ADDED_LATER if legacy else APPLY_ONLY):
        st.pop(k, None)
    defaults = type(cfg.stylize)()
    for k in OMIT_IF_DEFAULT:
        if k in st and st[k] == getattr(defaults, k):
            st.pop(k)
    return {
        "stylize": st,
        "ddim": {k: getattr(cfg.ddim, k) for k in ("T", "beta_start", "beta_end", "t0", "finetune_invert_steps",
                                                     "finetune_gen_steps", "apply_gen_steps")},
        "diffae_sha256": diffae_sha,
        "style_sha256": sha256_file(style_path),
        "content": [p.name for p in content_files],
        "content_sha256": files_fingerprint(content_files)["sha256"],
        "seed": cfg.seed,
    }


def _digest(settings: Dict[str, Any]) -> str:
    return json_sha256(settings)[:16]


def finished_digest(out_dir: os.PathLike) -> Optional[str]:
    """The settings digest of a finished stylizer folder, or None."""
    p = Path(out_dir) / "config.json"
    if not p.is_file() or not (Path(out_dir) / "model.safetensors").is_file():
        return None
    try:
        meta = read_json(p)
    except StylsegError:
        return None
    return meta.get("settings_digest") if meta.get("kind") == KIND else None


# --------------------------------------------------------------------------- the resume file
_START_OVER = "choose another --out, or overwrite it (--overwrite / overwrite=True)"


def save_resume(path: Path, state: Dict[str, Any], digest: str, compute: str, settings: Dict[str, Any]) -> None:
    """Write the fine-tuning's resume file (safetensors + JSON, :func:`stylseg.checkpoint.save_state`) with the
    settings digest, the compute it ran on and the settings themselves (to name a difference) as its fingerprint."""
    save_state(path, state, fingerprint={"digest": digest, "compute": compute, "settings": settings})


def load_resume(path: Path, accepted, compute: str, overwrite: bool,
                settings: Optional[Dict[str, Any]] = None) -> Optional[Dict[str, Any]]:
    """The resume file's state when its settings digest is one of ``accepted`` and it ran on the same ``compute``
    (checked before any tensor is read; the file is never unpickled); ``None`` to start afresh when ``overwrite``;
    else :class:`StylsegError` naming what differs (against ``settings``)."""
    fp = read_state_header(path, "pass --overwrite").get("fingerprint") or {}
    if fp.get("digest") not in accepted or fp.get("compute") != compute:
        if overwrite:
            return None
        if fp.get("digest") not in accepted:
            old, new = fp.get("settings") or {}, settings or {}
            diff = fingerprint_diff(_flat(old), _flat(json.loads(json.dumps(new, default=str)))) if old and new else ""
            what = f"other settings or input ({diff or 'style image, content images, D_A'})"
        else:
            what = f"other compute ({fp.get('compute')}; here {compute}: the result would be neither's)"
        raise StylsegError(f"{path.parent}: holds a fine-tuning run with {what}; {_START_OVER}")
    return load_state(path)


def _flat(d: Dict[str, Any]) -> Dict[str, Any]:
    """``{"stylize": {"lr": 1}}`` -> ``{"stylize.lr": 1}`` (one level), to name a changed setting."""
    out: Dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update({f"{k}.{k2}": v2 for k2, v2 in v.items()})
        else:
            out[k] = v
    return out


def _launch_rank() -> int:
    for key in ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def _one_writer(fn):
    """Run ``fn(diffae_dir, style_path, content_dir, out_dir, ...)`` holding ``out_dir``'s stage lock (on the
    main process of a launch)."""
    import functools

    @functools.wraps(fn)
    def wrapper(diffae_dir, style_path, content_dir, out_dir, *args, **kwargs):
        if _launch_rank() != 0:
            return fn(diffae_dir, style_path, content_dir, out_dir, *args, **kwargs)
        with stage_lock(out_dir, "stylize finetune"):
            return fn(diffae_dir, style_path, content_dir, out_dir, *args, **kwargs)

    return wrapper


# --------------------------------------------------------------------------- RNG state
def _rng_state(gen: torch.Generator) -> Dict[str, Any]:
    st = {"gen": gen.get_state(), "torch": torch.get_rng_state(), "numpy": np.random.get_state(),
          "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(gen: torch.Generator, st: Dict[str, Any]) -> None:
    gen.set_state(st["gen"])
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


# --------------------------------------------------------------------------- data parallelism
#: the variables through which a launcher (accelerate launch / torchrun, MPI) tells a process how many there are
LAUNCHER_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE")


def launched_processes() -> int:
    """How many processes ``accelerate launch`` / ``torchrun`` started (1 when run plainly)."""
    for key in LAUNCHER_VARS:
        if os.environ.get(key, "").isdigit():
            return max(1, int(os.environ[key]))
    return 1


class _Parallel:
    """Data parallelism for the fine-tuning loop, through ``accelerate`` when several processes run.

    Every process draws the same global batch (the index generator is seeded alike) and keeps its
    own contiguous slice (:meth:`shard`); :meth:`average_grads` all-reduces the gradients (one flat
    buffer) before the optimizer step. With one process every method is the identity.
    """

    def __init__(self, device: torch.device):
        self.world, self.rank, self.acc = 1, 0, None
        self.device = device
        if launched_processes() > 1:
            from accelerate import Accelerator

            self.acc = Accelerator(cpu=device.type == "cpu")
            self.world, self.rank, self.device = self.acc.num_processes, self.acc.process_index, self.acc.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.world:
            raise StylsegError(f"stylize.batch_size={batch_size} does not split over {self.world} processes; "
                               f"use a multiple of {self.world} (--set stylize.batch_size=...) or launch "
                               f"fewer processes")

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """This process's slice of a global batch (B, ...) -> (B/N, ...)."""
        if self.world == 1:
            return x
        n = x.shape[0] // self.world
        return x[self.rank * n:(self.rank + 1) * n]

    def average_grads(self, params: List[torch.Tensor]) -> None:
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = self.acc.reduce(torch.cat([g.reshape(-1) for g in grads]), reduction="mean")
        i = 0
        for p, g in zip(params, grads):
            p.grad = flat[i:i + g.numel()].view_as(g).clone()
            i += g.numel()

    def mean(self, values: Dict[str, float]) -> Dict[str, float]:
        """Per-process loss values -> their mean over the processes (for the history)."""
        if self.world == 1 or not values:
            return values
        keys = sorted(values)
        v = self.acc.reduce(torch.tensor([values[k] for k in keys], device=self.device, dtype=torch.float64),
                            reduction="mean")
        return dict(zip(keys, v.tolist()))

    def wait(self) -> None:
        if self.acc is not None:
            self.acc.wait_for_everyone()


# --------------------------------------------------------------------------- the loop
#: a fine-tuning is flagged as diverging when the mean total loss of its last DIVERGE_WINDOW iterations is at least
#: DIVERGE_FACTOR x the lowest such mean and has given back at least DIVERGE_GIVEN_BACK of what the loss had fallen
#: from its first window to that lowest one (the cpu profile's `guard` SPN at lr_spn=1e-4: 18.5 -> 1.75 -> 33.8)
DIVERGE_WINDOW = 10
DIVERGE_FACTOR = 4.0
DIVERGE_GIVEN_BACK = 0.25


def loss_divergence(history: List[Dict[str, Any]], window: int = DIVERGE_WINDOW, factor: float = DIVERGE_FACTOR,
                    given_back: float = DIVERGE_GIVEN_BACK) -> Optional[Dict[str, Any]]:
    """Whether a fine-tuning's total loss fell and then rose again: None, or ``{"lowest_mean", "lowest_window",
    "last_mean", "first_mean", "window"}`` (means over ``window`` iterations; ``lowest_window``: the iterations
    of the lowest mean). Needs at least 2 x ``window`` iterations; a loss that only falls, or wobbles near its low,
    is not flagged."""
    its = [(int(r["iteration"]), float(r["total"])) for r in history if "total" in r]
    if len(its) < 2 * window:
        return None
    means = [sum(v for _, v in its[i:i + window]) / window for i in range(len(its) - window + 1)]
    lo = min(range(len(means)), key=means.__getitem__)
    first, low, last = means[0], means[lo], means[-1]
    if lo == len(means) - 1 or not (low > 0 and last >= factor * low and last - low >= given_back * (first - low)):
        return None
    return {"lowest_mean": round(low, 6), "lowest_window": [its[lo][0], its[lo + window - 1][0]],
            "last_mean": round(last, 6), "first_mean": round(first, 6), "window": window}


@_one_writer
def finetune(diffae_dir: os.PathLike, style_path: os.PathLike, content_dir: os.PathLike, out_dir: os.PathLike,
             cfg, *, resume: bool = True, overwrite: bool = False, device="auto",
             callback: Optional[FinetuneCallback] = None, progress: bool = True) -> Path:
    """Fine-tune D_B + SPN on ``content_dir`` toward the style of ``style_path``; returns ``out_dir``.

    ``diffae_dir``: D_A's model folder. ``content_dir``: a paired folder (``images/``) or a
    folder of images (domain A, e.g. ``RUN/data/source/train``). ``cfg``: the run's
    :class:`~stylseg.config.RunConfig` (``cfg.stylize``, ``cfg.ddim``, ``cfg.seed``).

    A folder already finished with the same settings is returned at once; a checkpoint with
    the same settings is resumed exactly (``resume=True``); a folder made with other settings
    raises :class:`StylsegError` unless ``overwrite=True`` (start afresh).

    Started by ``accelerate launch`` / ``torchrun`` with N processes, each process takes 1/N of every
    content batch and the gradients are averaged (module docstring); ``callback`` and the progress
    bar run on the main process only, which alone writes files.
    """
    from tqdm.auto import tqdm

    sc = cfg.stylize
    check_choice(sc.loss_set, LOSS_SETS, "loss set", "stylize.loss_set")
    check_choice(sc.spn_role, SPN_ROLES, "SPN role", "stylize.spn_role")
    w_key = "w_structure" if sc.loss_set == "osasis" else "w_spn"
    if sc.spn_role != "joint" and getattr(sc, w_key) == 0:
        raise StylsegError(f"stylize.spn_role={sc.spn_role} trains the SPN with the structure term alone, whose weight is 0 "
                           f"in the {sc.loss_set} loss set: set stylize.{w_key} > 0, or stylize.spn_role=joint")
    check_choice(sc.structure_region, STRUCTURE_REGIONS, "structure region", "stylize.structure_region")
    if sc.structure_region != "image" and getattr(sc, w_key) == 0:
        raise StylsegError(f"stylize.structure_region={sc.structure_region} focuses the structure term, whose weight "
                           f"is 0 in the {sc.loss_set} loss set: set stylize.{w_key} > 0, or "
                           f"stylize.structure_region=image")
    check_choice(sc.spn_region, SPN_REGIONS, "SPN region", "stylize.spn_region")
    check_choice(sc.style_pair_pick, STYLE_PAIR_PICKS, "style pair pick", "stylize.style_pair_pick")
    check_choice(sc.backprop, BACKPROP, "backprop mode", "stylize.backprop")
    if sc.iterations < 0 or sc.batch_size < 1:
        raise StylsegError(f"stylize.iterations must be >= 0 and stylize.batch_size >= 1 "
                           f"(got {sc.iterations}, {sc.batch_size})")
    diffae_dir, style_path, out_dir = Path(diffae_dir), Path(style_path), Path(out_dir)
    if not style_path.is_file():
        raise StylsegError(f"{style_path}: style image not found (pass one target-domain image with --style)")
    read_image(style_path)  # fails clearly on an unreadable file
    par = _Parallel(resolve_device(device))
    par.check_batch(sc.batch_size)
    dev = par.device
    diffae = load_diffae(diffae_dir, dev)
    size = diffae_size(diffae)
    content, files = load_folder_tensor(content_dir, size)
    masks_all = (load_content_masks(content_dir, files, size)
                 if "lesion" in (sc.structure_region, sc.spn_region) else None)
    region_all = lesion_weight(masks_all, sc.lesion_ring) if sc.structure_region == "lesion" else None
    gate_all = spn_gate(masks_all, sc.spn_region, sc.lesion_ring)
    diffae_sha = folder_sha256(diffae_dir)
    settings = _settings(diffae_sha, style_path, files, cfg)
    digest = _digest(settings)
    accepted = {digest, _digest(_settings(diffae_sha, style_path, files, cfg, legacy=True))}

    # ---------------------------------------------------------------- skip / resume / overwrite
    done = finished_digest(out_dir)
    ckpt_path = out_dir / CHECKPOINT
    compute = compute_key(dev)
    ckpt = None
    if done in accepted and resume:
        return out_dir
    if resume and not overwrite:
        refuse_legacy(out_dir / LEGACY_CHECKPOINT, "pass --overwrite (overwrite=True)")
    if resume and ckpt_path.is_file():
        ckpt = load_resume(ckpt_path, accepted, compute, overwrite, settings)
    elif done is not None and done not in accepted and not overwrite:
        raise StylsegError(f"{out_dir}: holds a stylizer made with other settings; choose another --out, "
                           f"or overwrite it (--overwrite / overwrite=True)")
    if ckpt is None and out_dir.exists() and par.main:
        for name in (CHECKPOINT, LEGACY_CHECKPOINT, HISTORY, "config.json", "model.safetensors", STYLE_Y, STYLE_XA, "style_pair.json"):
            if (out_dir / name).exists():
                (out_dir / name).unlink()
    if par.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    par.wait()

    # ---------------------------------------------------------------- models, losses, optimizer
    seed_everything(cfg.seed)
    # the embedder first: style_pair_pick=domain picks x_A_style with it (making the pair draws no global random
    # numbers, so the order leaves every other draw as it was)
    embedder = make_embedder(sc, source=content if sc.embedder == "weightfree" else None, device=dev)
    if par.world > 1:  # the main process makes the style pair's files, the others then read them
        if par.main:
            _load_or_make_style_pair(diffae, style_path, out_dir, cfg, dev, embedder, content)
        par.wait()
    y_b, x_as = _load_or_make_style_pair(diffae, style_path, out_dir, cfg, dev, embedder, content)
    loss = StyleLoss(sc, embedder, y_b, x_as).to(dev)
    split = sc.spn_role in ("structure", "guard")
    unet_b = copy.deepcopy(diffae.unet).to(dev)
    for p in unet_b.parameters():
        p.requires_grad_(True)
    spn = build_spn(sc, T=diffae.schedule.T).to(dev)
    spn_style = spn if sc.spn_region == "image" else None  # the style pair has no mask: no SPN on its branch
    unet_b.train()
    spn.train()
    opt = torch.optim.Adam([{"params": unet_b.parameters(), "lr": sc.lr_unet},
                            {"params": spn.parameters(), "lr": sc.lr_spn}])
    gen = torch.Generator(device="cpu").manual_seed(int(cfg.seed) + 1)
    history: List[Dict[str, Any]] = []
    start = 0
    if ckpt is not None:
        unet_b.load_state_dict(ckpt["unet_b"])
        spn.load_state_dict(ckpt["spn"])
        opt.load_state_dict(ckpt["opt"])
        _set_rng_state(gen, ckpt["rng"])
        history = ckpt["history"]
        start = int(ckpt["iteration"])

    lam, t0 = sc.spn_lambda, cfg.ddim.t0
    n_inv, n_gen = cfg.ddim.finetune_invert_steps, cfg.ddim.finetune_gen_steps
    sched = diffae.schedule
    enc, unet_a = diffae.encoder, diffae.unet
    z_style_mix = None
    with torch.no_grad():
        z_s = enc(x_as)
        xs_top = invert(unet_a, x_as, z_s, t0, n_inv, sched) if loss.needs_style_branch else None
        if sc.mix_style_z:
            z_style_mix = enc(y_b)
    params = [p for g_ in opt.param_groups for p in g_["params"]]
    # stylize.ema_decay: a moving average of D_B's and the SPN's weights, saved as the stylizer at the end
    ema = [p.detach().clone() for p in params] if sc.ema_decay > 0 else None
    if ema is not None and ckpt is not None:
        if ckpt.get("ema") is None:
            raise StylsegError(f"{ckpt_path}: checkpoint holds no weight average for stylize.ema_decay; "
                               f"remove it to start again, or fine-tune with --overwrite")
        for e, v in zip(ema, ckpt["ema"]):
            e.copy_(v)
    unet_params, spn_params = list(unet_b.parameters()), list(spn.parameters())

    def step_opt(terms: Dict[str, torch.Tensor]) -> torch.Tensor:
        """One optimizer step on the weighted terms; returns the total (for the history)."""
        opt.zero_grad(set_to_none=True)
        if not split:
            total = loss.total(terms)
            total.backward()
        else:  # the structure term trains the SPN alone; D_B the style terms ("structure") or every term ("guard")
            structure = loss.weights["spn"] * terms["spn"]
            g_spn = torch.autograd.grad(structure, spn_params, retain_graph=True, allow_unused=True)
            style = loss.total(terms, exclude=("spn",))
            (style if sc.spn_role == "structure" else style + structure).backward(inputs=unet_params)
            for p, g in zip(spn_params, g_spn):
                p.grad = g
            total = style.detach() + structure.detach()
        par.average_grads(params)
        if sc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, sc.grad_clip)
        opt.step()
        if ema is not None:
            with torch.no_grad():
                for e, p in zip(ema, params):
                    e.lerp_(p.detach(), 1.0 - sc.ema_decay)
        return total

    def save_checkpoint(it: int) -> None:
        if not par.main:
            return
        state = {"iteration": it, "unet_b": unet_b.state_dict(), "spn": spn.state_dict(),
                 "opt": opt.state_dict(), "rng": _rng_state(gen), "history": history, "ema": ema}
        save_resume(ckpt_path, state, digest, compute, settings)
        write_json(out_dir / HISTORY, {"substitute": embedder_substitute(embedder), "loss_set": sc.loss_set,
                                       "weights": loss.weights, "iterations": history,
                                       "diverging": loss_divergence(history)})

    if not par.main:
        callback = None
    bar = tqdm(range(start, sc.iterations), desc="fine-tune D_B+SPN", disable=not (progress and par.main),
               initial=start, total=sc.iterations)
    for it in bar:
        tic = time.perf_counter()
        n = content.shape[0]
        idx = torch.randperm(n, generator=gen)[:sc.batch_size] if n >= sc.batch_size else \
            torch.randint(0, n, (sc.batch_size,), generator=gen)
        x_in = par.shard(content[idx]).to(dev)
        region = par.shard(region_all[idx]).to(dev) if region_all is not None else None
        gate = par.shard(gate_all[idx]).to(dev) if gate_all is not None else None
        with torch.no_grad():
            z = enc(x_in)
            x_t = invert(unet_a, x_in, z, t0, n_inv, sched)
            e_in = embedder(x_in)
        xs_t = xs_top
        sums: Dict[str, float] = {}
        n_updates = 0

        def record(terms: Dict[str, torch.Tensor], total: torch.Tensor) -> None:
            nonlocal n_updates
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            sums["total"] = sums.get("total", 0.0) + float(total.detach())
            n_updates += 1

        if sc.backprop == "per_step":
            steps = gen_steps_iter(t0, n_gen, sched.T)
            for i, (t, t_next) in steps:
                tv = torch.full((x_in.shape[0],), int(t), device=dev, dtype=torch.long)
                xp = spn_shift(x_t, x_in, tv, spn, lam, gate)
                eps = _eps(unet_b, xp, tv, z, z_style_mix)
                x_next, x0 = ddim_step(xp, eps, sched.alpha_bar(t), sched.alpha_bar(t_next))
                x0s = xs_next = None
                if xs_t is not None:
                    tvs = tv[:1]
                    xsp = spn_shift(xs_t, x_as, tvs, spn_style, lam)
                    eps_s = _eps(unet_b, xsp, tvs, z_s, z_style_mix)
                    xs_next, x0s = ddim_step(xsp, eps_s, sched.alpha_bar(t), sched.alpha_bar(t_next))
                terms = loss.terms(x_in, x0, x0s, e_in=e_in, region=region)
                if loss.needs_cycle and i == len(steps) - 1:
                    terms["cycle"] = _cycle(x0, x_in, y_b, diffae, unet_b, spn, lam, t0, n_inv, n_gen, gate, spn_style)
                total = step_opt(terms)
                record(terms, total)
                x_t = x_next.detach()
                xs_t = xs_next.detach() if xs_next is not None else None
                if callback is not None:
                    callback(it, i, int(t), x0.detach())
        else:  # chain: backpropagate through every generation step (gradient checkpointing)
            cb = (lambda i, t, xx, x0: callback(it, i, int(t), x0.detach())) if callback is not None else None
            out = generate(unet_b, x_t, z, t0, n_gen, sched, spn=spn, x_in=x_in, lam=lam, z_coarse=z_style_mix,
                           callback=cb, checkpoint=True, spn_gate=gate)
            outs = None
            if xs_t is not None:
                outs = generate(unet_b, xs_t, z_s, t0, n_gen, sched, spn=spn_style, x_in=x_as, lam=lam,
                                z_coarse=z_style_mix, checkpoint=True)
            terms = loss.terms(x_in, out, outs, e_in=e_in, region=region)
            if loss.needs_cycle:
                terms["cycle"] = _cycle(out, x_in, y_b, diffae, unet_b, spn, lam, t0, n_inv, n_gen, gate, spn_style)
            total = step_opt(terms)
            record(terms, total)
        rec = {"iteration": it, "seconds": round(time.perf_counter() - tic, 4), "updates": n_updates}
        rec.update(par.mean({k: v / max(n_updates, 1) for k, v in sums.items()}))
        if not math.isfinite(rec.get("total", 0.0)):  # every process sees the same mean, so all stop here
            bad = sorted(k for k, v in rec.items() if isinstance(v, float) and not math.isfinite(v))
            raise StylsegError(
                f"{out_dir}: the fine-tuning's loss became {rec['total']} at iteration {it} (terms: {', '.join(bad)}); "
                f"the weights are ruined and nothing of this iteration was saved. Lower stylize.lr_unet "
                f"({sc.lr_unet:g}) or stylize.lr_spn ({sc.lr_spn:g}), or set stylize.grad_clip (now {sc.grad_clip:g}), "
                f"and start over (--overwrite, overwrite=True in Python, or another --out folder)")
        history.append(rec)
        if progress:
            bar.set_postfix({k: f"{v:.3g}" for k, v in rec.items() if k not in ("iteration", "seconds", "updates")})
        if (it + 1) % max(1, sc.checkpoint_every) == 0 or it + 1 == sc.iterations:
            save_checkpoint(it + 1)
    bar.close()
    if sc.iterations == 0 or not history:
        save_checkpoint(start)
    if not par.main:
        par.wait()
        return out_dir

    diverging = loss_divergence(history)
    if diverging:
        warnings.warn(
            f"{out_dir}: the fine-tuning's total loss fell to {diverging['lowest_mean']:.3g} (mean of iterations "
            f"{diverging['lowest_window'][0]}-{diverging['lowest_window'][1]}) and rose again to "
            f"{diverging['last_mean']:.3g} (the last {diverging['window']} iterations): it is diverging, and the "
            f"stylized images are likely ruined. Look at them before using the stylizer; lower stylize.lr_spn "
            f"({sc.lr_spn:g}; 1e-5 for spn_role=guard on the cpu profile) or stylize.lr_unet ({sc.lr_unet:g}), or set "
            f"stylize.grad_clip. Recorded as 'diverging' in history.json and the model folder's config.json",
            stacklevel=2)

    # ---------------------------------------------------------------- the model folder
    if ema is not None:  # the stylizer is the weight average (the checkpoint keeps the last weights for a resume)
        with torch.no_grad():
            for e, p in zip(ema, params):
                p.copy_(e)
    state = {f"unet_b.{k}": v for k, v in unet_b.state_dict().items()}
    state.update({f"spn.{k}": v for k, v in spn.state_dict().items()})
    sub = embedder_substitute(embedder)
    config = {"spn": spn.config(), "spn_lambda": lam, "stylize": dataclasses.asdict(sc),
              "ddim": dataclasses.asdict(cfg.ddim), "image_size": size}
    extra = {
        "diffae": {"path": str(diffae_dir.resolve()), "relpath": os.path.relpath(diffae_dir.resolve(), out_dir.resolve()),
                   "sha256": diffae_sha},
        "style": {"path": str(style_path.resolve()), "sha256": settings["style_sha256"],
                  "y_B": STYLE_Y, "x_A_style": STYLE_XA},
        "content": {"path": str(Path(content_dir).resolve()), "n_images": len(files)},
        "embedder": embedder.describe(), "substitute": sub, "loss_set": sc.loss_set, "weights": loss.weights,
        "settings_digest": digest, "iterations_done": sc.iterations, "seed": cfg.seed,
        "diverging": diverging,
    }
    if par.world > 1:
        extra["processes"] = par.world
    save_model_folder(out_dir, KIND, config, state, extra=extra)
    par.wait()
    return out_dir


def _eps(unet, x, t, z, z_coarse):
    if z_coarse is None:
        return unet(x, t, z)
    return unet(x, t, z, z_coarse=z_coarse.expand(x.shape[0], -1))


def _generate_grad_last(unet, x_t, z, t0, steps, sched, spn=None, x_in=None, lam=0.0, gate=None):
    """Generation whose gradient flows through the last UNet call only (earlier steps no_grad)."""
    walk = gen_steps_iter(t0, steps, sched.T)
    x = x_t
    for i, (t, t_next) in walk:
        tv = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        with torch.set_grad_enabled(i == len(walk) - 1 and torch.is_grad_enabled()):
            xs = spn_shift(x, x_in, tv, spn, lam, gate)
            x, _ = ddim_step(xs, unet(xs, tv, z), sched.alpha_bar(t), sched.alpha_bar(t_next))
    return x


def _cycle(g_x: torch.Tensor, x_in: torch.Tensor, y_b: torch.Tensor, diffae, unet_b, spn, lam, t0, n_inv, n_gen,
           gate=None, spn_y=None):
    """``L_cycle = |G(F(G(x))) - G(x)|_1 + |F(G(F(y))) - F(y)|_1`` (paper eq. 11).

    G: invert with D_A, generate with D_B + SPN; F: invert with D_B, generate with D_A.
    ``g_x`` = G(x_in) carries the gradient of the current D_B call; G(F(G(x))) gets its
    gradient through its last D_B call (with the content's SPN ``gate``; ``spn_y``: the SPN of the style
    image's chain, None when the SPN is gated, since that image has no mask). The second term ends in D_A, so under the kit's rule
    (the latent is detached between UNet calls) it carries no gradient to D_B: it is computed
    and logged as the paper's value, without gradient.
    """
    enc, unet_a, sched = diffae.encoder, diffae.unet, diffae.schedule
    with torch.no_grad():
        gx = g_x.detach()
        z1 = enc(gx)
        f_gx = generate(unet_a, invert(unet_b, gx, z1, t0, n_inv, sched), z1, t0, n_gen, sched)
        z2 = enc(f_gx)
        xt2 = invert(unet_a, f_gx, z2, t0, n_inv, sched)
    g_f_g_x = _generate_grad_last(unet_b, xt2, z2, t0, n_gen, sched, spn=spn, x_in=f_gx, lam=lam, gate=gate)
    term1 = cycle_l1(g_f_g_x, g_x)
    with torch.no_grad():
        zy = enc(y_b)
        f_y = generate(unet_a, invert(unet_b, y_b, zy, t0, n_inv, sched), zy, t0, n_gen, sched)
        zf = enc(f_y)
        g_f_y = generate(unet_b, invert(unet_a, f_y, zf, t0, n_inv, sched), zf, t0, n_gen, sched,
                         spn=spn_y, x_in=f_y, lam=lam)
        zg = enc(g_f_y)
        f_g_f_y = generate(unet_a, invert(unet_b, g_f_y, zg, t0, n_inv, sched), zg, t0, n_gen, sched)
        term2 = cycle_l1(f_g_f_y, f_y)
    return term1 + term2


def load_history(model_dir: os.PathLike) -> Dict[str, Any]:
    """``history.json`` of a fine-tuning run: ``{"iterations": [{"iteration", "total", term...}], ...}``."""
    return read_json(Path(model_dir) / HISTORY)
