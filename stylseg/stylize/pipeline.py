"""The stylization chain shared by fine-tuning and applying (METHOD.md sections 1, 4, 7).

``G(x)`` (A -> B): encode ``z = Enc(x)``, DDIM-invert ``x`` with the frozen D_A to ``t0``
(``n_inv`` UNet calls), then generate with D_B (``n_gen`` calls), adding the SPN term
before every D_B step::

    x'_t = x_t + lambda * SPN(x_in, t)                                 (paper eq. 7)
    x_{t'} = sqrt(a_{t'}) f_B(x'_t) + sqrt(1 - a_{t'}) eps_B(x'_t, t, z)   (eqs. 8-9)

The ``recon`` control is the same chain with D_A in place of D_B and no SPN.

Also here: loading image folders as tensors, loading D_A with clear errors, a model
folder's checksum, and :class:`Stylizer` (D_A + D_B + SPN loaded from a stylizer folder).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from ..data.io import read_image, resize_image, to_tensor_pm1
from ..diffusion.ddim import DDIMSchedule, ddim_invert, ddim_step, ddim_timesteps
from ..utils import MODEL_CONFIG, MODEL_WEIGHTS, StylsegError, load_model_folder, sha256_file
from .spn import SPN, spn_gate, spn_shift

KIND = "stylizer"


# --------------------------------------------------------------------------- folders and images
def images_of(folder: os.PathLike) -> Path:
    """A paired folder's ``images/`` subfolder, or the folder itself when it holds images."""
    folder = Path(folder)
    if (folder / "images").is_dir():
        return folder / "images"
    if folder.is_dir():
        return folder
    raise StylsegError(f"{folder}: folder not found (expected a paired folder with images/ and masks/)")


def masks_of(folder: os.PathLike) -> Optional[Path]:
    m = Path(folder) / "masks"
    return m if m.is_dir() else None


def list_folder(folder: os.PathLike) -> List[Path]:
    """The images of a paired folder (or a plain folder of images), checked by the shared rules
    (:func:`stylseg.data.validate.validate_paired`, ``use="diffae"``: masks optional, but when
    ``masks/`` is there the pairing and the sizes must be right)."""
    from ..data.validate import validate_paired

    return [i for i, _ in validate_paired(folder, use="diffae")]


def load_image_pm1(path: os.PathLike, size: int) -> torch.Tensor:
    """Any image file -> (3,size,size) in [-1,1]. Grayscale, RGBA (composited on black),
    palette and 16-bit images are converted to RGB; any size or aspect is resized to a square
    (bilinear), as the paper does (documented conversions, ``stylseg.data.io.read_image``)."""
    return to_tensor_pm1(resize_image(read_image(path), size))


def load_folder_tensor(folder: os.PathLike, size: int, files: Optional[Sequence[Path]] = None
                       ) -> Tuple[torch.Tensor, List[Path]]:
    """All images of a (paired) folder as (N,3,size,size) in [-1,1], with their paths."""
    files = list(files) if files is not None else list_folder(folder)
    return torch.stack([load_image_pm1(p, size) for p in files]), files


def load_content_masks(folder: os.PathLike, files: Sequence[Path], size: int) -> torch.Tensor:
    """The masks of ``files`` (images of the paired ``folder``) as (N,1,size,size) float {0,1}, nearest-resized.

    A folder without ``masks/`` or an image without its mask raises :class:`StylsegError` naming the folder
    and the files (``stylseg.data.dataset.load_pairs``); what needs them is ``stylize.structure_region=lesion``
    or ``stylize.spn_region=lesion``."""
    from ..data.dataset import load_pairs
    from ..data.io import read_mask, resize_mask

    try:
        pairs = dict(load_pairs(folder, require_masks=True))
    except StylsegError as e:
        raise StylsegError(f"{e} (stylize.structure_region=lesion and stylize.spn_region=lesion need the content "
                           f"images' masks; or set stylize.structure_region=image and stylize.spn_region=image)") from None
    out = []
    for f in files:
        m = pairs.get(Path(f))
        if m is None:
            raise StylsegError(f"{f}: no mask in {Path(folder) / 'masks'} (stylize.structure_region=lesion and "
                               f"stylize.spn_region=lesion need one per content image, with the image's name)")
        out.append(torch.from_numpy(resize_mask(read_mask(m), size).astype(np.float32))[None])
    return torch.stack(out)


def folder_sha256(folder: os.PathLike) -> str:
    """Checksum of a model folder: sha256 over its ``config.json`` and ``model.safetensors``."""
    folder = Path(folder)
    h = hashlib.sha256()
    for name in (MODEL_CONFIG, MODEL_WEIGHTS):
        p = folder / name
        if not p.is_file():
            raise StylsegError(f"{folder}: not a model folder (missing {name})")
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def load_diffae(path: os.PathLike, device="cpu"):
    """D_A from a DiffAE model folder (``stylseg diffae train`` / notebook 02), frozen, eval mode."""
    from ..diffusion.model import DiffAE

    model = DiffAE.from_pretrained(path, map_location="cpu").to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def diffae_size(model) -> int:
    return int(model.config["image_size"])


# --------------------------------------------------------------------------- the chain
def eps_fn(unet: nn.Module, z_coarse: Optional[torch.Tensor] = None) -> Callable:
    """``eps(x_t, t, z)`` for the samplers; ``z_coarse`` = OSASIS's "mix" mode (style z on the
    coarse decoder levels)."""
    if z_coarse is None:
        return lambda x, t, z: unet(x, t, z)
    return lambda x, t, z: unet(x, t, z, z_coarse=z_coarse.expand(x.shape[0], -1))


def invert(unet: nn.Module, x0: torch.Tensor, z: torch.Tensor, t0: float, steps: int, schedule: DDIMSchedule,
           callback=None) -> torch.Tensor:
    """DDIM-invert x0 (B,3,S,S) in [-1,1] with ``unet`` conditioned on z to x_{t0} (``steps`` UNet calls)."""
    return ddim_invert(eps_fn(unet), x0, ddim_timesteps(t0, steps, schedule.T), cond=z, schedule=schedule,
                       callback=callback)


def generate(unet: nn.Module, x_t: torch.Tensor, z: torch.Tensor, t0: float, steps: int, schedule: DDIMSchedule, *,
             spn: Optional[SPN] = None, x_in: Optional[torch.Tensor] = None, lam: float = 0.0,
             z_coarse: Optional[torch.Tensor] = None, callback=None, checkpoint: bool = False,
             spn_gate: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Generate from x_{t0} (B,3,S,S) to x0 in [-1,1] with ``unet`` (``steps`` calls), adding
    ``lambda * SPN(x_in, t)`` to the latent before every step (paper eqs. 7-9); ``spn_gate`` (B,1,S,S),
    optional, restricts that term to where the gate is on (``stylize.spn_region=lesion``, :func:`~.spn.spn_gate`).

    ``callback(i, t, x_next, x0_pred)`` sees every step. ``checkpoint=True`` wraps each UNet call
    in gradient checkpointing (backpropagation through the whole chain at the memory of one call).
    """
    grid = ddim_timesteps(t0, steps, schedule.T)
    down = grid[::-1][:-1]
    targets = grid[::-1][1:-1] + [-1]
    f = eps_fn(unet, z_coarse)
    x = x_t
    # the paper-form SPN has no time input: its term is the same before every step, so it is computed once
    # (the SPN's weights do not change within one chain; gradients still reach them through every step)
    shift = (spn_shift(torch.zeros_like(x_in), x_in, None, spn, lam, spn_gate)
             if spn is not None and lam != 0.0 and not spn.uses_time else None)
    for i, (t, t_next) in enumerate(zip(down, targets)):
        tv = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        xs = x + shift if shift is not None else spn_shift(x, x_in, tv, spn, lam, spn_gate)
        if checkpoint and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint as ckpt

            eps = ckpt(f, xs, tv, z, use_reentrant=False)
        else:
            eps = f(xs, tv, z)
        x, x0 = ddim_step(xs, eps, schedule.alpha_bar(t), schedule.alpha_bar(t_next))
        if callback is not None:
            callback(i, t, x, x0)
    return x


def gen_steps_iter(t0: float, steps: int, T: int):
    """``(i, t, t_next)`` of a generation walk over ``ddim_timesteps(t0, steps, T)`` (t_next = -1: clean)."""
    grid = ddim_timesteps(t0, steps, T)
    down = grid[::-1][:-1]
    targets = grid[::-1][1:-1] + [-1]
    return list(enumerate(zip(down, targets)))


# --------------------------------------------------------------------------- the stylizer
class Stylizer(nn.Module):
    """D_A (frozen encoder + UNet) + D_B (fine-tuned UNet) + SPN, and the chain that uses them.

    ``stylize(x)`` maps (B,3,S,S) in [-1,1] to the stylized (B,3,S,S) in [-1,1];
    ``reconstruct(x)`` is the D_A round trip (``recon`` control arm) through the same grid.
    """

    def __init__(self, diffae, unet_b: nn.Module, spn: SPN, lam: float, meta: Optional[dict] = None):
        super().__init__()
        self.diffae, self.unet_b, self.spn, self.lam = diffae, unet_b, spn, float(lam)
        self.meta = dict(meta or {})

    @property
    def schedule(self) -> DDIMSchedule:
        return self.diffae.schedule

    @property
    def size(self) -> int:
        return diffae_size(self.diffae)

    @property
    def spn_region(self) -> str:
        """Where this stylizer's SPN term enters (``stylize.spn_region`` at fine-tuning; ``image`` for folders made
        before the option): the same at inference as in training, like lambda."""
        return str(self.meta.get("config", {}).get("stylize", {}).get("spn_region", "image"))

    @property
    def lesion_ring(self) -> float:
        """The ring around the lesion that the gate covers (``stylize.lesion_ring`` at fine-tuning; the default
        ``losses.LESION_RING`` for folders made before the option)."""
        from .losses import LESION_RING

        return float(self.meta.get("config", {}).get("stylize", {}).get("lesion_ring", LESION_RING))

    def gate(self, masks: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """The SPN term's gate for a batch with these masks (B,1,S,S) {0,1} or None (:func:`~.spn.spn_gate`)."""
        return spn_gate(masks, self.spn_region, self.lesion_ring)

    def masks_for(self, folder: os.PathLike, files: Sequence[Path]) -> Optional[torch.Tensor]:
        """What :meth:`stylize` takes as ``masks`` for these ``files`` of the paired ``folder``: their lesion masks at
        this stylizer's size and on its device for a stylizer fine-tuned with ``stylize.spn_region=lesion``, None for
        one whose SPN covers the whole image (it needs none). A folder or file without a mask raises
        :class:`StylsegError` naming it (:func:`load_content_masks`)."""
        if self.spn_region == "image":
            return None
        return load_content_masks(folder, files, self.size).to(next(self.unet_b.parameters()).device)

    @torch.no_grad()
    def invert(self, x: torch.Tensor, t0: float, steps: int) -> Tuple[torch.Tensor, torch.Tensor]:
        z = self.diffae.encoder(x)
        return invert(self.diffae.unet, x, z, t0, steps, self.schedule), z

    @torch.no_grad()
    def stylize(self, x: torch.Tensor, t0: float, inv_steps: int, gen_steps: int, use_spn: bool = True,
                z_style: Optional[torch.Tensor] = None, callback=None, masks: Optional[torch.Tensor] = None
                ) -> torch.Tensor:
        """``masks`` (B,1,S,S) {0,1}: the lesions, needed by a stylizer fine-tuned with ``stylize.spn_region=lesion``
        (:meth:`masks_for` loads them for images of a paired folder)."""
        gate = self.gate(masks) if use_spn else None
        xt, z = self.invert(x, t0, inv_steps)
        return generate(self.unet_b, xt, z, t0, gen_steps, self.schedule, spn=self.spn if use_spn else None,
                        x_in=x, lam=self.lam, z_coarse=z_style, callback=callback, spn_gate=gate)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, t0: float, inv_steps: int, gen_steps: int, callback=None) -> torch.Tensor:
        xt, z = self.invert(x, t0, inv_steps)
        return generate(self.diffae.unet, xt, z, t0, gen_steps, self.schedule, callback=callback)

    @classmethod
    def load(cls, model_dir: os.PathLike, diffae_dir: Optional[os.PathLike] = None, device="cpu") -> "Stylizer":
        """Load a stylizer folder (``stylseg stylize finetune``) and the D_A it was tuned from.

        D_A is found at ``diffae_dir`` if given, else at the absolute path recorded in the
        folder, else at the recorded path relative to the folder (a moved run folder); its
        checksum must match the recorded one."""
        import copy

        model_dir = Path(model_dir)
        meta, state = load_model_folder(model_dir, KIND)
        cfg = meta.get("config", {})
        try:
            da = meta["diffae"]
            spn_cfg = cfg["spn"]
            lam = float(cfg["spn_lambda"])
        except KeyError as e:
            raise StylsegError(f"{model_dir / MODEL_CONFIG}: stylizer config lacks {e}; re-run "
                               f"`stylseg stylize finetune` to rebuild this folder") from None
        cands = [Path(diffae_dir)] if diffae_dir else [Path(da.get("path", "")), model_dir / da.get("relpath", "")]
        found = next((c for c in cands if str(c) and (c / MODEL_CONFIG).is_file()), None)
        if found is None:
            raise StylsegError(f"{model_dir}: the D_A model it was tuned from is not at {da.get('path')!r}; "
                               f"pass it with --diffae DIR (diffae_dir=...)")
        sha = folder_sha256(found)
        if da.get("sha256") and sha != da["sha256"]:
            raise StylsegError(f"{found}: this D_A differs from the one {model_dir} was fine-tuned from "
                               f"(sha256 {sha[:12]} != {da['sha256'][:12]}); pass the right --diffae or re-run finetune")
        diffae = load_diffae(found, device)
        unet_b = copy.deepcopy(diffae.unet)
        spn = SPN(**spn_cfg)
        ub = {k[len("unet_b."):]: v for k, v in state.items() if k.startswith("unet_b.")}
        sp = {k[len("spn."):]: v for k, v in state.items() if k.startswith("spn.")}
        try:
            unet_b.load_state_dict(ub, strict=True)
            spn.load_state_dict(sp, strict=True)
        except RuntimeError as e:
            raise StylsegError(f"{model_dir / MODEL_WEIGHTS}: weights do not fit the recorded architecture "
                               f"({str(e).splitlines()[0]}); re-run `stylseg stylize finetune`") from None
        meta["diffae_dir_used"] = str(found)
        if meta.get("diverging"):  # recorded by finetune: its loss fell and rose again
            d = meta["diverging"]
            warnings.warn(f"{model_dir}: this stylizer's fine-tuning was diverging (mean total loss "
                          f"{d.get('lowest_mean', float('nan')):.3g} -> {d.get('last_mean', float('nan')):.3g}, "
                          f"history.json); its outputs are likely ruined: look at them, or fine-tune again with a "
                          f"lower stylize.lr_spn / stylize.lr_unet", stacklevel=2)
        st = cls(diffae, unet_b.to(device).eval(), spn.to(device).eval(), lam, meta)
        for p in st.parameters():
            p.requires_grad_(False)
        return st


# --------------------------------------------------------------------------- structure guidance (notebook 03)
def structure_guided_generate(unet: nn.Module, x_t: torch.Tensor, z: torch.Tensor, t0: float, steps: int,
                              schedule: DDIMSchedule, x_ref: torch.Tensor, weight: float = 0.3,
                              callback=None) -> torch.Tensor:
    """Generation with a hand-made structure term instead of a trained SPN (the SPN's idea).

    Before every step the latent is moved against the gradient of the structure loss
    ``|S(f(x_t)) - S(x_ref)|^2`` (``S`` = locally normalised luminance, ``f`` the x0-prediction):
    ``x'_t = x_t - weight * sqrt(1 - a_t) * g / std(g)``, then the usual DDIM step from ``x'_t``
    (two UNet calls per step). A trained SPN learns a correction of the same kind,
    ``x'_t = x_t + lambda * SPN(x_in, t)``, without the gradient at inference time.
    ``weight = 0`` is plain generation. Returns x0 (B,3,S,S) in [-1,1].
    """
    from .losses import structure_map

    s_ref = structure_map(x_ref).detach()
    x = x_t.detach()
    for i, (t, t_next) in gen_steps_iter(t0, steps, schedule.T):
        tv = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        a, an = schedule.alpha_bar(t), schedule.alpha_bar(t_next)
        if weight:
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                x0 = ddim_step(xg, unet(xg, tv, z), a, an)[1]
                loss = ((structure_map(x0) - s_ref) ** 2).sum()
                g, = torch.autograd.grad(loss, xg)
            x = x - weight * (1 - a) ** 0.5 * g / (g.std() + 1e-8)
        with torch.no_grad():
            x, x0 = ddim_step(x, unet(x, tv, z), a, an)
        if callback is not None:
            callback(i, t, x, x0)
    return x
