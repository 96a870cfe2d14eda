"""One-shot fine-tuning of D_B + SPN from one style image (docs/method.md sections 1, 3, 4 and 7).

``finetune(diffae_dir, style_path, content_dir, out_dir, cfg)`` writes a *stylizer* model
folder (kind ``"stylizer"``, :mod:`.stylizer`): D_B's UNet and the SPN's weights, the config (with the path and
sha256 of the D_A folder it was tuned from), a copy of the style image, the style pair PNGs (:mod:`.style_pair`),
``history.json`` and a resumable ``checkpoint.safetensors`` (safetensors + JSON, never unpickled). It reads in three
parts: the training state (:class:`TrainState`; its resume file: :func:`~.stylizer.save_checkpoint`), one
iteration (:class:`_Iteration`) and :func:`finetune`, which strings them together with the style pair and saving
(:func:`~.stylizer.save_stylizer`).

One iteration (OSASIS's loop, the kit's reading of the paper's Algorithm 1):

1. draw a content batch of random training images ``x_in`` (B,3,S,S) in [-1,1];
2. with the frozen encoder and D_A (no gradient): ``z = Enc(x_in)``, invert ``x_in`` to
   ``t0`` (``cfg.ddim.finetune_invert_steps`` UNet calls); the same for ``x_A_style`` when
   the loss set reconstructs the style pair;
3. walk the generation grid with D_B (``cfg.ddim.finetune_gen_steps`` calls) through the one DDIM loop
   (:func:`stylseg.diffusion.ddim.ddim_steps`), adding ``lambda * SPN(x_in, t)`` before each step (its
   ``shift``); as OSASIS does, at every step: losses on the x0-prediction, one optimizer step, the latent
   detached before the next step.

Data parallel over processes (several GPUs, or several CPU processes): start the same command with
``accelerate launch`` (or ``torchrun``). Every process draws the same global content batch of
``stylize.batch_size`` images and works on its own slice of it; the gradients are averaged over the
processes (``Accelerator.reduce``) before each optimizer step, so the run computes what one process with the whole batch
computes (up to float rounding), with 1/N of the activations per device. A single process, the
default, does not touch ``torch.distributed``.

``stylize.spn_role="guard"`` trains the SPN with the structure term ``L_SPN`` alone and D_B with every term (two
gradient passes through the same graph per update); ``"joint"`` sums every term into one loss for both, as the
paper's eq. 13 is written.

Interpretations (docs/method.md section 7) are the kit's and are parameters: the style pair
(``y_B`` = the style image resized to the DiffAE size, ``x_A_style`` = the best of
``style_pair_tries`` SDEdit renders by D_A, chosen by ``10 L1 + (1 - MS-SSIM)`` or, with
``stylize.style_pair_pick=domain``, the render nearest the content images' mean in the style embedder's space),
``L_SPN`` as a structure-map loss, ``L_cycle`` with gradients through the last D_B call."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn as nn

from ..checkpoint import compute_key, files_fingerprint, rng_state, set_rng_state
from ..config import preset_changes
from ..data.io import read_image
from ..data.tensors import load_folder
from ..diffusion.ddim import ddim_run, ddim_steps, ddim_timesteps, encode_stochastic
from ..launch import Parallel, launch_rank, main_writer
from ..utils import StylsegError, check_choice, json_sha256, read_json, resolve_device, seed_everything, write_json
from .embedders import embedder_substitute, make_embedder
from .losses import LOSS_SETS, StyleLoss, cycle_l1, lesion_weight
from .perceptual import make_recon_perceptual, resolve_recon_config
from .spn import build_spn, spn_gate, spn_shift_fn
from .style_pair import STYLE_PAIR_PICKS, style_pair
from .stylizer import (APPLY_FIELDS, CHECKPOINT, HISTORY, STYLE_XA, STYLE_Y, diffae_size, load_diffae,
                       open_out_dir, save_checkpoint, save_stylizer)

#: who learns from the structure term (``stylize.spn_role``, module docstring): joint = D_B and the SPN learn from
#: every term; guard = the SPN from the structure term alone, D_B from every term
SPN_ROLES = ("joint", "guard")
#: where the structure term looks and the SPN's term enters (``stylize.structure_region``): the whole image, or
#: the lesion and a ring around it (:func:`stylseg.stylize.losses.lesion_weight`, from the content images' masks)
STRUCTURE_REGIONS = ("image", "lesion")

#: callback(iteration, step, t, x0_pred): iteration 0-based, step index in the generation walk,
#: the timestep t the UNet was called at, the content batch's x0-prediction (B,3,S,S) in [-1,1]
FinetuneCallback = Callable[[int, int, int, torch.Tensor], None]


# --------------------------------------------------------------------------- settings
def _settings(diffae_sha: str, style_sha: str, content_files, cfg) -> Dict[str, Any]:
    st = {k: v for k, v in dataclasses.asdict(cfg.stylize).items() if k not in APPLY_FIELDS}
    ddim = ("T", "beta_start", "beta_end", "t0", "finetune_invert_steps", "finetune_gen_steps", "apply_gen_steps")
    return {"stylize": st, "ddim": {k: getattr(cfg.ddim, k) for k in ddim}, "diffae_sha256": diffae_sha,
            "style_sha256": style_sha, "content": [p.name for p in content_files],
            "content_sha256": files_fingerprint(content_files)["sha256"], "precision": cfg.precision, "seed": cfg.seed}


def _digest(settings: Dict[str, Any]) -> str:
    return json_sha256(settings)[:16]


# --------------------------------------------------------------------------- the training state, with resume
@dataclass
class TrainState:
    """What a fine-tuning changes as it runs, and what its checkpoint holds: D_B's UNet, the SPN, the optimizer,
    the batch generator, the loss history and the number of iterations done."""

    unet_b: nn.Module
    spn: nn.Module
    opt: torch.optim.Optimizer
    gen: torch.Generator
    history: List[Dict[str, Any]]
    iteration: int = 0

    @property
    def params(self) -> List[torch.Tensor]:
        """D_B's parameters, then the SPN's (the optimizer's order)."""
        return [p for g in self.opt.param_groups for p in g["params"]]

    @classmethod
    def start(cls, diffae, sc, seed: int, device) -> "TrainState":
        """D_B = a trainable copy of D_A's UNet, a fresh SPN (its term starts at 0), Adam with the two learning
        rates, the batch generator seeded with ``seed + 1``."""
        unet_b = copy.deepcopy(diffae.unet).to(device).train().requires_grad_(True)
        spn = build_spn(sc, T=diffae.schedule.T).to(device).train()
        opt = torch.optim.Adam([{"params": unet_b.parameters(), "lr": sc.lr_unet},
                                {"params": spn.parameters(), "lr": sc.lr_spn}])
        return cls(unet_b, spn, opt, torch.Generator(device="cpu").manual_seed(int(seed) + 1), [])

    def state_dict(self, digest: str) -> Dict[str, Any]:
        """Tensors, numbers, strings and lists only (loadable with ``torch.load(weights_only=True)``)."""
        return {"digest": digest, "iteration": self.iteration, "unet_b": self.unet_b.state_dict(),
                "spn": self.spn.state_dict(), "opt": self.opt.state_dict(), "history": self.history,
                "rng": rng_state(gen=self.gen)}

    def load_state_dict(self, ckpt: Dict[str, Any], path: Path) -> None:
        self.unet_b.load_state_dict(ckpt["unet_b"])
        self.spn.load_state_dict(ckpt["spn"])
        self.opt.load_state_dict(ckpt["opt"])
        set_rng_state(ckpt["rng"], gen=self.gen)
        self.history, self.iteration = list(ckpt["history"]), int(ckpt["iteration"])


# --------------------------------------------------------------------------- the loss history
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


# --------------------------------------------------------------------------- one training iteration
@dataclass
class _Batch:
    """One iteration's content batch on this process: ``x_in`` (b,3,S,S) in [-1,1], its code ``z`` (b,z_dim), its
    inversion ``x_t`` to t0 with D_A, its embedding ``e_in``, and the lesion ``region`` / SPN ``gate`` (b,1,S,S)."""

    x_in: torch.Tensor
    z: torch.Tensor
    x_t: torch.Tensor
    e_in: torch.Tensor
    region: Optional[torch.Tensor]
    gate: Optional[torch.Tensor]


class _Iteration:
    """One fine-tuning iteration (OSASIS's loop; module docstring): draw a batch, walk D_B's generation grid with
    the SPN term (:func:`stylseg.diffusion.ddim.ddim_steps`), update D_B and the SPN from the style losses.

    Holds what stays fixed over the iterations (D_A, the losses, the style pair and its inversion, the content
    images); the :class:`TrainState` changes.
    """

    def __init__(self, diffae, loss: StyleLoss, embedder, cfg, par: Parallel, state: TrainState, y_b, x_as,
                 content, region_all, gate_all):
        from ..config import resolve_precision

        self.diffae, self.loss, self.embedder, self.par, self.state = diffae, loss, embedder, par, state
        self.sc = cfg.stylize
        # the memory settings: bf16 autocast where the device supports it, activations recomputed in backward
        self.precision = resolve_precision(cfg, par.device)
        state.unet_b.grad_checkpoint = bool(cfg.grad_checkpoint)
        self.t0, self.n_inv, self.n_gen = cfg.ddim.t0, cfg.ddim.finetune_invert_steps, cfg.ddim.finetune_gen_steps
        self.lam, self.y_b, self.x_as = self.sc.spn_lambda, y_b, x_as
        self.content, self.region_all, self.gate_all = content, region_all, gate_all
        self.spn_style = state.spn if self.sc.structure_region == "image" else None  # the style pair has no mask
        with torch.no_grad():
            self.z_s = diffae.encode(x_as)
            self.xs_t = (diffae.encode_stochastic(x_as, self.z_s, self.t0, self.n_inv)
                         if loss.needs_style_branch else None)

    def batch(self) -> _Batch:
        n, bs, dev = self.content.shape[0], self.sc.batch_size, self.par.device
        gen = self.state.gen
        idx = torch.randperm(n, generator=gen)[:bs] if n >= bs else torch.randint(0, n, (bs,), generator=gen)
        pick = lambda a: self.par.shard(a[idx]).to(dev) if a is not None else None
        x_in = pick(self.content)
        with torch.no_grad():
            z = self.diffae.encode(x_in)
            x_t = self.diffae.encode_stochastic(x_in, z, self.t0, self.n_inv)
            e_in = self.embedder(x_in)
        return _Batch(x_in, z, x_t, e_in, pick(self.region_all), pick(self.gate_all))

    def walk(self, x_t, z, x_in, spn, gate=None, grad="chain"):
        """D_B's generation walk from x_t (b,3,S,S) at t0, the SPN term of ``x_in`` before every step."""
        constant = grad != "step"  # per-step updates change the SPN between steps
        grid = ddim_timesteps(self.t0, self.n_gen, self.diffae.schedule.T)
        return ddim_steps(self.state.unet_b, x_t, grid, cond=z, schedule=self.diffae.schedule,
                          grad=grad, shift=spn_shift_fn(spn, x_in, self.lam, gate, constant=constant))

    def __call__(self, it: int, callback: Optional[FinetuneCallback] = None) -> Dict[str, float]:
        """Run iteration ``it``; returns its record for the history (the loss terms' means over its updates)."""
        from ..utils import autocast

        tic = time.perf_counter()
        with autocast(self.par.device, self.precision):  # the walks are lazy: every UNet call happens in here
            self._run(it, callback)
        rec = {"iteration": it, "seconds": round(time.perf_counter() - tic, 4), "updates": self.updates}
        rec.update(self.par.mean({k: v / max(self.updates, 1) for k, v in self.sums.items()}))
        return rec

    def _run(self, it: int, callback: Optional[FinetuneCallback]) -> None:
        b = self.batch()
        self.sums: Dict[str, float] = {}
        self.updates = 0
        # one update per step (OSASIS), the latent detached between steps
        steps = self.walk(b.x_t, b.z, b.x_in, self.state.spn, b.gate, "step")
        style = (self.walk(self.xs_t, self.z_s, self.x_as, self.spn_style, None, "step")
                 if self.xs_t is not None else itertools.repeat(None))
        for out, out_s in zip(steps, style):  # the two walks advance together, after each update
            self.update(b, out.x0, out_s.x0 if out_s is not None else None, out.step.i == self.n_gen - 1)
            if callback is not None:
                callback(it, out.step.i, out.step.t, out.x0.detach())

    def update(self, b: _Batch, x0: torch.Tensor, x0_style: Optional[torch.Tensor], last: bool) -> None:
        """One optimizer step on the loss terms of the x0-prediction (b,3,S,S) (``L_cycle`` at the ``last`` step)."""
        terms = self.loss.terms(b.x_in, x0, x0_style, e_in=b.e_in, region=b.region)
        if self.loss.needs_cycle and last:
            terms["cycle"] = self.cycle(x0, b.gate)
        st, sc = self.state, self.sc
        st.opt.zero_grad(set_to_none=True)
        if sc.spn_role == "joint":
            total = self.loss.total(terms)
            total.backward()
        else:  # guard: the structure term trains the SPN alone, D_B learns from every term
            spn_params = list(st.spn.parameters())
            structure = self.loss.weights["spn"] * terms["spn"]
            g_spn = torch.autograd.grad(structure, spn_params, retain_graph=True, allow_unused=True)
            style = self.loss.total(terms, exclude=("spn",))
            (style + structure).backward(inputs=list(st.unet_b.parameters()))
            for p, g in zip(spn_params, g_spn):
                p.grad = g
            total = style.detach() + structure.detach()
        self.par.average_grads(st.params)
        if sc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(st.params, sc.grad_clip)
        st.opt.step()
        for k, v in [*terms.items(), ("total", total)]:
            self.sums[k] = self.sums.get(k, 0.0) + float(v.detach())
        self.updates += 1

    def g(self, x: torch.Tensor, spn, gate=None, grad: str = "chain") -> torch.Tensor:
        """G: invert x (b,3,S,S) with D_A, render with D_B + the SPN term; ``grad`` as in ``ddim_steps``."""
        with torch.no_grad():
            z = self.diffae.encode(x)
            xt = self.diffae.encode_stochastic(x, z, self.t0, self.n_inv)
        return ddim_run(self.walk(xt, z, x, spn, gate, grad))

    @torch.no_grad()
    def f(self, x: torch.Tensor) -> torch.Tensor:
        """F: invert x (b,3,S,S) with D_B, render with D_A (no gradient)."""
        z = self.diffae.encode(x)
        return self.diffae.render(encode_stochastic(self.state.unet_b, x, z, self.t0, self.n_inv,
                                                    self.diffae.schedule), z, self.t0, self.n_gen)

    def cycle(self, g_x: torch.Tensor, gate=None) -> torch.Tensor:
        """``L_cycle = |G(F(G(x))) - G(x)|_1 + |F(G(F(y))) - F(y)|_1`` (paper eq. 11).

        ``g_x`` = G(x_in) carries the gradient of the current D_B call; G(F(G(x))) gets its gradient through its
        last D_B call (with the content's SPN ``gate``). The second term ends in D_A, so under the kit's rule (the
        latent is detached between UNet calls) it carries no gradient to D_B: it is computed and logged as the
        paper's value, without gradient (its G uses no SPN when the SPN is gated: the style image has no mask).
        """
        term1 = cycle_l1(self.g(self.f(g_x.detach()), self.state.spn, gate, grad="last"), g_x)
        with torch.no_grad():
            f_y = self.f(self.y_b)
            term2 = cycle_l1(self.f(self.g(f_y, self.spn_style)), f_y)
        return term1 + term2


# --------------------------------------------------------------------------- the fine-tuning
def check_settings(sc) -> None:
    """Refuse fine-tuning settings that cannot work together, naming the fix (before anything is loaded)."""
    check_choice(sc.loss_set, LOSS_SETS, "loss set", "stylize.loss_set")
    check_choice(sc.spn_role, SPN_ROLES, "SPN role", "stylize.spn_role")
    w_key = "w_structure"
    if sc.spn_role != "joint" and getattr(sc, w_key) == 0:
        raise StylsegError(f"stylize.spn_role={sc.spn_role} trains the SPN with the structure term alone, whose weight is 0 "
                           f"in the {sc.loss_set} loss set: set stylize.{w_key} > 0, or stylize.spn_role=joint")
    check_choice(sc.structure_region, STRUCTURE_REGIONS, "structure region", "stylize.structure_region")
    check_choice(sc.style_pair_pick, STYLE_PAIR_PICKS, "style pair pick", "stylize.style_pair_pick")
    if sc.iterations < 0 or sc.batch_size < 1:
        raise StylsegError(f"stylize.iterations must be >= 0 and stylize.batch_size >= 1 "
                           f"(got {sc.iterations}, {sc.batch_size})")


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
    content batch and the gradients are averaged (module docstring); ``callback(iteration, step, t, x0_pred)``
    and the progress bar run on the main process only, which alone writes files (holding the folder's lock).
    """
    with main_writer(out_dir, "stylize finetune", launch_rank() == 0):
        return _finetune(Path(diffae_dir), Path(style_path), content_dir, Path(out_dir), cfg, resume=resume,
                         overwrite=overwrite, device=device, callback=callback, progress=progress)


def _finetune(diffae_dir: Path, style_path: Path, content_dir, out_dir: Path, cfg, *, resume, overwrite, device,
              callback, progress) -> Path:
    cfg = resolve_recon_config(cfg)  # recon_perceptual=auto as it runs: the settings and outputs say which
    sc = cfg.stylize
    check_settings(sc)
    style_img, style_sha = _read_style_image(style_path)
    par = Parallel(resolve_device(device))
    par.check_batch(sc.batch_size)
    dev = par.device
    diffae = load_diffae(diffae_dir, dev)
    data = _load_content(content_dir, diffae_size(diffae), sc)
    settings = _settings(diffae.sha256, style_sha, data.files, cfg)
    digest = _digest(settings)
    compute = compute_key(dev)
    finished, ckpt = open_out_dir(out_dir, {digest}, resume, overwrite, par, compute, settings)
    if finished:
        return out_dir

    seed_everything(cfg.seed)
    # the embedder first: style_pair_pick=domain picks x_A_style with it (making the pair draws no global random
    # numbers, so the order leaves every other draw as it was)
    embedder = make_embedder(sc, source=data.images if sc.embedder == "weightfree" else None, device=dev)
    y_b, x_as = style_pair(diffae, style_path, out_dir, cfg, dev, embedder, data.images, par, style_image=style_img)
    loss = StyleLoss(sc, embedder, y_b, x_as, make_recon_perceptual(sc, dev)).to(dev)
    state = TrainState.start(diffae, sc, cfg.seed, dev)
    if ckpt is not None:
        state.load_state_dict(ckpt, out_dir / CHECKPOINT)
    region_all = lesion_weight(data.masks) if data.masks is not None else None
    step = _Iteration(diffae, loss, embedder, cfg, par, state, y_b, x_as, data.images, region_all,
                      spn_gate(data.masks, sc.structure_region))

    def save(it: int) -> None:
        if par.main:
            state.iteration = it
            save_checkpoint(out_dir / CHECKPOINT, state, digest, compute, settings)
            write_json(out_dir / HISTORY, {"substitute": _substitute(embedder, loss), "loss_set": sc.loss_set,
                                           "weights": loss.weights, "iterations": state.history,
                                           "diverging": loss_divergence(state.history)})

    _iterate(step, state, out_dir, sc, par, save, callback, progress)
    if par.main:
        _save(out_dir, state, cfg, loss, embedder, diffae, diffae_dir, style_path, content_dir, data.files, settings,
              digest, par)
    par.wait()
    return out_dir


def _iterate(step: "_Iteration", state: TrainState, out_dir: Path, sc, par: Parallel, save: Callable[[int], None],
             callback: Optional[FinetuneCallback], progress: bool) -> None:
    """Run the iterations from ``state.iteration`` to ``stylize.iterations``, saving every ``checkpoint_every``."""
    from tqdm.auto import tqdm

    bar = tqdm(range(state.iteration, sc.iterations), desc="fine-tune D_B+SPN", disable=not (progress and par.main),
               initial=state.iteration, total=sc.iterations)
    for it in bar:
        rec = step(it, callback if par.main else None)
        _check_finite(rec, out_dir, sc)
        state.history.append(rec)
        if progress:
            bar.set_postfix({k: f"{v:.3g}" for k, v in rec.items() if k not in ("iteration", "seconds", "updates")})
        if (it + 1) % max(1, sc.checkpoint_every) == 0 or it + 1 == sc.iterations:
            save(it + 1)
    bar.close()
    if sc.iterations == 0 or not state.history:
        save(state.iteration)


def _read_style_image(style_path: Path):
    """``(image (H,W,3) uint8, sha256)`` of the style image, decoded once; a missing or unreadable file raises
    :class:`StylsegError` naming it."""
    import hashlib

    if not style_path.is_file():
        raise StylsegError(f"{style_path}: style image not found (pass one target-domain image with --style)")
    return read_image(style_path), hashlib.sha256(style_path.read_bytes()).hexdigest()


def _load_content(content_dir, size: int, sc):
    """The content images (and, for ``stylize.structure_region=lesion``, their masks) at the DiffAE size."""
    lesion = sc.structure_region == "lesion"
    try:
        return load_folder(content_dir, size, masks=lesion)
    except StylsegError as e:
        if not lesion:
            raise
        raise StylsegError(f"{e} (stylize.structure_region=lesion needs the content images' masks; "
                           f"or set stylize.structure_region=image)") from None


def _check_finite(rec: Dict[str, Any], out_dir: Path, sc) -> None:
    """A non-finite loss ruins the weights: stop before anything of this iteration is saved (every process sees
    the same mean, so all stop here)."""
    if math.isfinite(rec.get("total", 0.0)):
        return
    bad = sorted(k for k, v in rec.items() if isinstance(v, float) and not math.isfinite(v))
    raise StylsegError(
        f"{out_dir}: the fine-tuning's loss became {rec['total']} at iteration {rec['iteration']} (terms: "
        f"{', '.join(bad)}); the weights are ruined and nothing of this iteration was saved. Lower stylize.lr_unet "
        f"({sc.lr_unet:g}) or stylize.lr_spn ({sc.lr_spn:g}), or set stylize.grad_clip (now {sc.grad_clip:g}), "
        f"and start over (--overwrite, overwrite=True in Python, or another --out folder)")


# --------------------------------------------------------------------------- saving the stylizer
def _save(out_dir: Path, state: TrainState, cfg, loss: StyleLoss, embedder, diffae, diffae_dir: Path,
          style_path: Path, content_dir, files, settings: Dict[str, Any], digest: str, par: Parallel) -> Path:
    """Write the stylizer folder (:func:`~.stylizer.save_stylizer`) with where D_A, the style image and the content
    came from, the settings digest and the loss history's verdict. A diverging loss (:func:`loss_divergence`)
    warns and is recorded."""
    sc = cfg.stylize
    diverging = loss_divergence(state.history)
    if diverging:
        warnings.warn(
            f"{out_dir}: the fine-tuning's total loss fell to {diverging['lowest_mean']:.3g} (mean of iterations "
            f"{diverging['lowest_window'][0]}-{diverging['lowest_window'][1]}) and rose again to "
            f"{diverging['last_mean']:.3g} (the last {diverging['window']} iterations): it is diverging, and the "
            f"stylized images are likely ruined. Look at them before using the stylizer; lower stylize.lr_spn "
            f"({sc.lr_spn:g}; 1e-5 for spn_role=guard on the cpu profile) or stylize.lr_unet ({sc.lr_unet:g}), or set "
            f"stylize.grad_clip. Recorded as 'diverging' in history.json and the model folder's config.json",
            stacklevel=4)
    return save_stylizer(out_dir, state.unet_b, state.spn, cfg, diffae_size(diffae), style_path, {
        "diffae": {"path": str(diffae_dir.resolve()), "sha256": diffae.sha256,
                   "relpath": os.path.relpath(diffae_dir.resolve(), out_dir.resolve())},
        "style": {"path": str(style_path.resolve()), "sha256": settings["style_sha256"],
                  "y_B": STYLE_Y, "x_A_style": STYLE_XA},
        "content": {"path": str(Path(content_dir).resolve()), "n_images": len(files)},
        "settings_digest": digest, "seed": cfg.seed, "preset": sc.preset,
        # the profile and size `stylseg stylize apply --model DIR` applies the stylizer with (docs/stylization.md)
        "run": {"profile": cfg.profile, "seg_size": int(cfg.data.seg_size)},
        "preset_changes": preset_changes(cfg), **({"processes": par.world} if par.world > 1 else {}),
        "embedder": embedder.describe(), "substitute": _substitute(embedder, loss), "loss_set": sc.loss_set,
        "weights": loss.weights, "iterations_done": sc.iterations, "diverging": diverging})


def _substitute(embedder, loss: StyleLoss) -> Optional[str]:  # the stand-ins for CLIP and LPIPS, or None
    return "; ".join(s for s in (embedder_substitute(embedder), loss.stand_in) if s) or None


def load_history(model_dir: os.PathLike) -> Dict[str, Any]:
    """``history.json`` of a fine-tuning run: ``{"iterations": [{"iteration", "total", term...}], ...}``."""
    return read_json(Path(model_dir) / HISTORY)
