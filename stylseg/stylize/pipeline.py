"""The stylization chain shared by fine-tuning and applying (docs/method.md sections 1, 4 and 7).

``G(x)`` (A -> B): encode ``z = Enc(x)``, DDIM-invert ``x`` with the frozen D_A to ``t0``
(``n_inv`` UNet calls, :func:`~stylseg.diffusion.ddim.encode_stochastic`), then render with D_B
(``n_gen`` calls, :func:`~stylseg.diffusion.ddim.render`), the SPN term shifting the latent
before every D_B step (:func:`~.spn.spn_shift_fn`)::

    x'_t = x_t + lambda * SPN(x_in, t)                                 (paper eq. 7)
    x_{t'} = sqrt(a_{t'}) f_B(x'_t) + sqrt(1 - a_{t'}) eps_B(x'_t, t, z)   (eqs. 8-9)

The ``recon`` control is the same chain with D_A in place of D_B and no SPN. Both directions walk the
one DDIM loop, :func:`stylseg.diffusion.ddim.ddim_steps`.

Also here: loading image folders as tensors, loading D_A with clear errors, a model
folder's checksum, and :class:`Stylizer` (D_A + D_B + SPN loaded from a stylizer folder).
"""

from __future__ import annotations

import dataclasses

import hashlib
import os
import warnings
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from ..data.io import read_image, resize_image, to_tensor_pm1
from ..diffusion.ddim import DDIMSchedule, DDIMStep, Shift, ddim_step, render
from ..utils import MODEL_CONFIG, MODEL_WEIGHTS, StylsegError, load_model_folder, read_json, sha256_file
from .spn import SPN, spn_gate, spn_shift_fn

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
    and the files (``stylseg.data.dataset.load_pairs``); what needs them is ``stylize.structure_region=lesion``."""
    from ..data.dataset import load_pairs
    from ..data.io import read_mask, resize_mask

    try:
        pairs = dict(load_pairs(folder, require_masks=True))
    except StylsegError as e:
        raise StylsegError(f"{e} (stylize.structure_region=lesion needs the content images' masks; "
                           f"or set stylize.structure_region=image)") from None
    out = []
    for f in files:
        m = pairs.get(Path(f))
        if m is None:
            raise StylsegError(f"{f}: no mask in {Path(folder) / 'masks'} (stylize.structure_region=lesion "
                               f"needs one per content image, with the image's name)")
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


# --------------------------------------------------------------------------- the stylizer
def check_stylizer_config(model_dir: os.PathLike, meta: dict) -> None:
    """Refuse a stylizer folder written by an earlier stylseg (its config names no ``stylize.preset``, or holds
    settings the kit no longer has): one message, naming the command that fits it again."""
    st = meta.get("config", {}).get("stylize", {})
    from ..config import StylizeConfig

    known = {f.name for f in dataclasses.fields(StylizeConfig)}
    if "preset" not in st or set(st) - known:
        extra = sorted(set(st) - known)
        raise StylsegError(
            f"{model_dir}: this stylizer was fine-tuned by an earlier stylseg"
            f"{' (settings ' + ', '.join(extra[:6]) + ' are gone)' if extra else ''}, whose settings this version "
            f"cannot reproduce; fit it again: `stylseg stylize finetune ... --out {model_dir} --overwrite` "
            f"(or rerun notebook 04 with RETRAIN = True), choosing a preset with --set stylize.preset=NAME")


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
    def region(self) -> str:
        """Where this stylizer's SPN term enters (``stylize.structure_region`` at fine-tuning): the same at inference
        as in training, like lambda."""
        return str(self.meta.get("config", {}).get("stylize", {}).get("structure_region", "image"))

    def gate(self, masks: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """The SPN term's gate for a batch with these masks (B,1,S,S) {0,1} or None (:func:`~.spn.spn_gate`)."""
        return spn_gate(masks, self.region)

    def masks_for(self, folder: os.PathLike, files: Sequence[Path]) -> Optional[torch.Tensor]:
        """What :meth:`stylize` takes as ``masks`` for these ``files`` of the paired ``folder``: their lesion masks at
        this stylizer's size and on its device for a stylizer fine-tuned with ``stylize.structure_region=lesion``,
        None for
        one whose SPN covers the whole image (it needs none). A folder or file without a mask raises
        :class:`StylsegError` naming it (:func:`load_content_masks`)."""
        if self.region == "image":
            return None
        return load_content_masks(folder, files, self.size).to(next(self.unet_b.parameters()).device)

    @torch.no_grad()
    def encode_stochastic(self, x: torch.Tensor, t0: float, steps: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(x_t0, z)``: D_A's code z (B,z_dim) of x (B,3,S,S) in [-1,1] and x inverted with D_A to t0 (B,3,S,S)."""
        z = self.diffae.encode(x)
        return self.diffae.encode_stochastic(x, z, t0, steps), z

    @torch.no_grad()
    def render(self, xt: torch.Tensor, z: torch.Tensor, x: torch.Tensor, t0: float, gen_steps: int,
               use_spn: bool = True, z_style: Optional[torch.Tensor] = None, callback=None,
               masks: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Render x_t0 (B,3,S,S) with D_B conditioned on z, the SPN term of the input ``x`` (B,3,S,S) in [-1,1]
        before every step (gated by ``masks``' gate for ``stylize.structure_region=lesion``); ``z_style``: a code
        for the coarse levels (OSASIS's "mix" conditioning, the workshop playground).
        ``callback(i, t, x_t, x0_pred)`` as in
        :func:`~stylseg.diffusion.ddim.ddim_sample`. Returns (B,3,S,S) in [-1,1]."""
        shift = spn_shift_fn(self.spn, x, self.lam, self.gate(masks)) if use_spn else None
        return render(self.unet_b, xt, z, t0, gen_steps, self.schedule, z_coarse=z_style, callback=callback,
                      shift=shift)

    @torch.no_grad()
    def stylize(self, x: torch.Tensor, t0: float, inv_steps: int, gen_steps: int, use_spn: bool = True,
                z_style: Optional[torch.Tensor] = None, callback=None, masks: Optional[torch.Tensor] = None
                ) -> torch.Tensor:
        """``masks`` (B,1,S,S) {0,1}: the lesions, needed by a stylizer fine-tuned with
        ``stylize.structure_region=lesion``
        (:meth:`masks_for` loads them for images of a paired folder)."""
        if use_spn:
            self.gate(masks)  # a lesion-gated stylizer without masks fails before the inversion
        xt, z = self.encode_stochastic(x, t0, inv_steps)
        return self.render(xt, z, x, t0, gen_steps, use_spn, z_style, callback, masks)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, t0: float, inv_steps: int, gen_steps: int, callback=None) -> torch.Tensor:
        xt, z = self.encode_stochastic(x, t0, inv_steps)
        return self.diffae.render(xt, z, t0, gen_steps, callback=callback)

    @classmethod
    def load(cls, model_dir: os.PathLike, diffae_dir: Optional[os.PathLike] = None, device="cpu") -> "Stylizer":
        """Load a stylizer folder (``stylseg stylize finetune``) and the D_A it was tuned from.

        D_A is found at ``diffae_dir`` if given, else at the absolute path recorded in the
        folder, else at the recorded path relative to the folder (a moved run folder); its
        checksum must match the recorded one."""
        import copy

        model_dir = Path(model_dir)
        if (model_dir / MODEL_CONFIG).is_file():  # before the weights: an earlier kit's folder gets one message
            head = read_json(model_dir / MODEL_CONFIG)
            if head.get("kind") == KIND:
                check_stylizer_config(model_dir, head)
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
def structure_guidance(unet: nn.Module, z: torch.Tensor, x_ref: torch.Tensor, weight: float = 0.3) -> Shift:
    """A hand-made structure term as the ``shift`` of the DDIM loop, instead of a trained SPN (the SPN's idea).

    Before every step the latent is moved against the gradient of the structure loss
    ``|S(f(x_t)) - S(x_ref)|^2`` (``S`` = locally normalised luminance, ``f`` the x0-prediction of ``unet``
    conditioned on ``z``): ``x'_t = x_t - weight * sqrt(1 - a_t) * g / std(g)`` (one more UNet call per step).
    A trained SPN learns a correction of the same kind, ``x'_t = x_t + lambda * SPN(x_in, t)``, without the
    gradient at inference time. ``x_ref`` (B,3,S,S) in [-1,1].
    """
    from .losses import structure_map

    s_ref = structure_map(x_ref).detach()

    def shift(x: torch.Tensor, step: DDIMStep) -> torch.Tensor:
        if not weight:
            return x
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            tv = torch.full((x.shape[0],), int(step.t), device=x.device, dtype=torch.long)
            x0 = ddim_step(xg, unet(xg, tv, z), step.a_t, step.a_next)[1]
            g, = torch.autograd.grad(((structure_map(x0) - s_ref) ** 2).sum(), xg)
        return x - weight * (1 - step.a_t) ** 0.5 * g / (g.std() + 1e-8)

    return shift


@torch.no_grad()
def structure_guided_generate(unet: nn.Module, x_t: torch.Tensor, z: torch.Tensor, t0: float, steps: int,
                              schedule: DDIMSchedule, x_ref: torch.Tensor, weight: float = 0.3,
                              callback=None) -> torch.Tensor:
    """Render x_t (B,3,S,S) at t0 with ``unet`` conditioned on z, guided towards the structure of ``x_ref``
    (:func:`structure_guidance`; ``weight = 0`` is plain rendering). Returns x0 (B,3,S,S) in [-1,1]."""
    return render(unet, x_t, z, t0, steps, schedule, callback=callback,
                  shift=structure_guidance(unet, z, x_ref, weight))
