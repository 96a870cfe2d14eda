"""The stylizer folder (kind ``"stylizer"``, written by ``stylseg stylize finetune``) and the stylization chain
that uses it (docs/method.md sections 1, 4 and 7). This module alone writes, reads and checks such a folder.

``G(x)`` (A -> B): encode ``z = Enc(x)``, DDIM-invert ``x`` with the frozen D_A to ``t0``
(``n_inv`` UNet calls, :func:`~stylseg.diffusion.ddim.encode_stochastic`), then render with D_B
(``n_gen`` calls, :func:`~stylseg.diffusion.ddim.render`), the SPN term shifting the latent
before every D_B step (:func:`~.spn.spn_shift_fn`)::

    x'_t = x_t + lambda * SPN(x_in, t)                                 (paper eq. 7)
    x_{t'} = sqrt(a_{t'}) f_B(x'_t) + sqrt(1 - a_{t'}) eps_B(x'_t, t, z)   (eqs. 8-9)

The ``recon`` control is the same chain with D_A in place of D_B and no SPN. Both directions walk the
one DDIM loop, :func:`stylseg.diffusion.ddim.ddim_steps`.

A stylizer folder holds ``config.json`` (the settings, :class:`StylizerRecord`), ``model.safetensors`` (D_B's UNet
and the SPN), a copy of the style image, the style pair PNGs, ``history.json`` and, while the fine-tuning runs,
its resume file. :func:`save_stylizer` writes it, :meth:`StylizerRecord.read` reads and checks its settings (each
file once), :meth:`Stylizer.load` loads D_A + D_B + SPN from it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..data.io import read_mask
from ..data.tensors import mask_tensor
from ..diffusion.ddim import DDIMSchedule, render
from ..checkpoint import fingerprint_diff, load_state, read_state_header, refuse_legacy, save_state
from ..utils import (MODEL_CONFIG, MODEL_WEIGHTS, StylsegError, load_weights_bytes, parse_json_bytes,
                     save_model_folder, sha256_file)
from .spn import SPN, spn_gate, spn_shift_fn

KIND = "stylizer"
#: the files of a stylizer folder besides the model: the style pair (y_B, x_A_style) and how it was picked, the
#: loss history, the fine-tuning's resume file and the pickled one of earlier versions (refused by name, never
#: opened); the copy of the style image is ``STYLE_COPY`` + its suffix
STYLE_Y = "style_y_B.png"
STYLE_XA = "style_x_A.png"
STYLE_PAIR_JSON = "style_pair.json"
HISTORY = "history.json"
CHECKPOINT = "checkpoint.safetensors"
LEGACY_CHECKPOINT = "checkpoint.pt"
STYLE_COPY = "style_image"
#: StylizeConfig fields that only matter when a stylizer is applied: not part of the fine-tuning settings, so
#: changing them never refits a stylizer
APPLY_FIELDS = ("upsample", "sensor", "apply_batch_size")


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
    """D_A from a DiffAE model folder (``stylseg diffae train`` / notebook 02), frozen, eval mode; ``model.sha256``
    is the folder's checksum (:func:`folder_sha256`), from the bytes read once."""
    from ..diffusion.model import DiffAE

    model = DiffAE.from_pretrained(path, map_location="cpu").to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def diffae_size(model) -> int:
    return int(model.config["image_size"])


# --------------------------------------------------------------------------- the folder's settings
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


@dataclasses.dataclass(frozen=True)
class StylizerRecord:
    """The settings a stylizer folder's ``config.json`` records, read and checked once (:meth:`read`).

    ``stylize`` / ``ddim``: the fine-tuning's :class:`~stylseg.config.StylizeConfig` and DDIM settings (as dicts);
    ``spn`` the SPN's architecture and ``spn_lambda`` its weight; ``diffae`` where D_A was (``path``, ``relpath``
    from the folder, ``sha256``); ``style`` the style image (``path``, ``sha256``, the pair's PNG names; its copy in
    the folder is :attr:`style_image`); ``run`` the profile and segmentation size it was made under."""

    folder: Path
    config_sha256: str
    stylize: Dict[str, Any]
    ddim: Dict[str, Any]
    spn: Dict[str, Any]
    spn_lambda: float
    diffae: Dict[str, Any]
    style: Dict[str, Any]
    run: Dict[str, Any]
    preset: Optional[str] = None
    preset_changes: Optional[Dict[str, Any]] = None
    substitute: Optional[str] = None
    settings_digest: Optional[str] = None
    diverging: Optional[Dict[str, Any]] = None

    @property
    def region(self) -> str:
        """Where the SPN term enters (``stylize.structure_region`` at fine-tuning)."""
        return str(self.stylize.get("structure_region", "image"))

    @property
    def style_image(self) -> Path:
        """The style image: its copy in the folder (``style_image.<suffix>``), or (a folder written before copies
        were kept) the recorded path."""
        copies = sorted(self.folder.glob(STYLE_COPY + ".*"))
        return copies[0] if copies else Path(self.style.get("path") or "")

    def apply_settings(self) -> Dict[str, Any]:
        """``{"ddim.K": v, "stylize.K": v, "data.seg_size": n}``: every setting the stylizer is applied with."""
        from ..config import RETIRED

        gone = RETIRED["DDIMConfig"]
        kv: Dict[str, Any] = {f"ddim.{k}": v for k, v in self.ddim.items() if not (k in gone and v == gone[k])}
        kv.update({f"stylize.{k}": v for k, v in self.stylize.items()})
        if "seg_size" in self.run:
            kv["data.seg_size"] = self.run["seg_size"]
        return kv

    @classmethod
    def read(cls, model_dir: os.PathLike) -> "StylizerRecord":
        """Read ``model_dir/config.json`` once; a missing folder or file, another kind of model, an earlier kit's
        settings or a config without the stylizer's keys raise :class:`StylsegError` naming the file and the fix."""
        folder = Path(model_dir)
        cfg_path = folder / MODEL_CONFIG
        if not folder.is_dir():
            raise StylsegError(f"{folder}: model folder not found (it should hold {MODEL_CONFIG} and {MODEL_WEIGHTS})")
        if not cfg_path.is_file():
            raise StylsegError(f"{folder}: not a stylizer folder (no {MODEL_CONFIG}); pass the folder written by "
                               f"`stylseg stylize finetune --out DIR`")
        raw = cfg_path.read_bytes()
        meta = parse_json_bytes(raw, cfg_path)
        if meta.get("kind") != KIND:
            raise StylsegError(f"{cfg_path}: this folder holds a {meta.get('kind')!r} model, but a {KIND!r} model "
                               f"was expected; pass the folder written by `stylseg stylize finetune --out DIR`")
        check_stylizer_config(folder, meta)
        cfg = meta.get("config", {})
        try:
            return cls(folder, hashlib.sha256(raw).hexdigest(), dict(cfg["stylize"]), dict(cfg.get("ddim", {})),
                       dict(cfg["spn"]), float(cfg["spn_lambda"]), dict(meta["diffae"]), dict(meta.get("style", {})),
                       dict(meta.get("run", {})), meta.get("preset"), meta.get("preset_changes"),
                       meta.get("substitute"), meta.get("settings_digest"), meta.get("diverging"))
        except KeyError as e:
            raise StylsegError(f"{cfg_path}: stylizer config lacks {e}; re-run `stylseg stylize finetune` to rebuild "
                               f"this folder") from None


def finished_digest(out_dir: os.PathLike) -> Optional[str]:
    """The settings digest of a finished stylizer folder, or None. A folder fine-tuned by an earlier stylseg raises
    :class:`StylsegError` telling to fit it again (:func:`check_stylizer_config`)."""
    p = Path(out_dir) / MODEL_CONFIG
    if not p.is_file() or not (Path(out_dir) / MODEL_WEIGHTS).is_file():
        return None
    try:
        meta = parse_json_bytes(p.read_bytes(), p)
    except StylsegError:
        return None
    if meta.get("kind") != KIND:
        return None
    check_stylizer_config(out_dir, meta)
    return meta.get("settings_digest")


def stylizer_apply_config(model_dir: os.PathLike, base=None, sets: Optional[Dict[str, Any]] = None,
                          record: Optional[StylizerRecord] = None):
    """The run config to apply the stylizer folder ``model_dir`` with, as ``stylseg stylize apply`` builds it:
    ``base`` (a profile or a run's config; default: the profile the stylizer was fine-tuned under), then every
    setting the stylizer recorded (its DDIM grid and depth, its preset and stylize settings, the segmentation size
    it was made for), then ``sets`` (``--set``). So the stylizer is applied as it was fine-tuned unless a ``--set``
    says otherwise, whatever profile the command names. ``record``: the folder's settings, when already read."""
    from ..config import get_profile

    record = record or StylizerRecord.read(model_dir)
    cfg = base if base is not None else get_profile(record.run.get("profile", "smoke"))
    return cfg.override(**record.apply_settings()).override(**(sets or {}))


def clear_stylizer_folder(out_dir: Path) -> None:
    """Delete a stylizer folder's files (the model, the style pair and the copy of the style image, the history,
    the resume files) before a fine-tuning starts afresh in it."""
    names = [CHECKPOINT, LEGACY_CHECKPOINT, HISTORY, MODEL_CONFIG, MODEL_WEIGHTS, STYLE_Y, STYLE_XA, STYLE_PAIR_JSON]
    for p in [out_dir / n for n in names] + sorted(out_dir.glob(STYLE_COPY + ".*")):
        if p.exists():
            p.unlink()


def save_stylizer(out_dir: Path, unet_b: nn.Module, spn: SPN, cfg, size: int, style_path: Path,
                  extra: Dict[str, Any]) -> Path:
    """Write the stylizer model folder (kind ``"stylizer"``): D_B's (``unet_b``) and the SPN's weights, the settings
    (``cfg.stylize``, ``cfg.ddim``, the DiffAE ``size``) and ``extra`` (where D_A, the style image and the content
    came from, the settings digest, ...), and a copy of the style image (which ``apply`` reads)."""
    sc = cfg.stylize
    copy_name = STYLE_COPY + style_path.suffix.lower()
    shutil.copyfile(style_path, out_dir / (copy_name + ".tmp"))
    os.replace(out_dir / (copy_name + ".tmp"), out_dir / copy_name)
    weights = {f"unet_b.{k}": v for k, v in unet_b.state_dict().items()}
    weights.update({f"spn.{k}": v for k, v in spn.state_dict().items()})
    config = {"spn": spn.config(), "spn_lambda": sc.spn_lambda, "stylize": dataclasses.asdict(sc),
              "ddim": dataclasses.asdict(cfg.ddim), "image_size": size}
    return save_model_folder(out_dir, KIND, config, weights, extra=extra)


# --------------------------------------------------------------------------- opening the folder, the resume file
def open_out_dir(out_dir: Path, accepted, resume: bool, overwrite: bool, par, compute: str,
                 settings: Dict[str, Any]):
    """``(finished, checkpoint)`` for ``out_dir``: a folder finished with these settings (``accepted`` digests) is
    finished; a resume file with them, written on the same ``compute``, is read for a resume; other settings or
    compute raise :class:`StylsegError` naming them unless ``overwrite``, which clears the folder's fine-tuning
    files. A pickled resume file of an earlier version is refused by name, never opened. ``par``: the processes
    (:class:`~stylseg.launch.Parallel`); the main one clears and makes the folder."""
    done = finished_digest(out_dir)
    if done in accepted and resume:
        return True, None
    ckpt = None
    if resume and not overwrite:
        refuse_legacy(out_dir / LEGACY_CHECKPOINT, "pass --overwrite (overwrite=True)")
    if resume and (out_dir / CHECKPOINT).is_file():
        ckpt = load_checkpoint(out_dir / CHECKPOINT, accepted, compute, overwrite, settings)
    elif done is not None and done not in accepted and not overwrite:
        raise StylsegError(f"{out_dir}: holds a stylizer made with other settings; {_START_OVER}")
    if ckpt is None and out_dir.exists() and par.main:
        clear_stylizer_folder(out_dir)
    if par.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    par.wait()
    return False, ckpt


_START_OVER = "choose another --out, or overwrite it (--overwrite / overwrite=True)"


def save_checkpoint(path: Path, state, digest: str, compute: str, settings: Dict[str, Any]) -> None:
    """Write the resume file (safetensors + JSON, :func:`stylseg.checkpoint.save_state`; never unpickled) of
    :meth:`~.finetune.TrainState.state_dict`, with the settings digest, the compute it ran on and the settings
    themselves (to name a difference) as its fingerprint."""
    save_state(path, state.state_dict(digest), fingerprint={"digest": digest, "compute": compute,
                                                            "settings": settings})


def load_checkpoint(path: Path, accepted, compute: str, overwrite: bool,
                    settings: Optional[Dict[str, Any]] = None) -> Optional[Dict[str, Any]]:
    """The resume file's state when its settings digest is one of ``accepted`` and it ran on the same ``compute``
    (checked before any tensor is read); ``None`` to start afresh when ``overwrite``; else :class:`StylsegError`
    naming what differs (against ``settings``)."""
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


# --------------------------------------------------------------------------- the stylizer
class Stylizer(nn.Module):
    """D_A (frozen encoder + UNet) + D_B (fine-tuned UNet) + SPN, and the chain that uses them.

    ``stylize(x)`` maps (B,3,S,S) in [-1,1] to the stylized (B,3,S,S) in [-1,1];
    ``reconstruct(x)`` is the D_A round trip (``recon`` control arm) through the same grid.
    """

    def __init__(self, diffae, unet_b: Optional[nn.Module], spn: Optional[SPN], lam: float,
                 record: Optional[StylizerRecord] = None):
        super().__init__()
        self.diffae, self.unet_b, self.spn, self.lam = diffae, unet_b, spn, float(lam)
        #: the folder's settings (:class:`StylizerRecord`); None for a chain built by hand (the recon control)
        self.record = record

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
        return self.record.region if self.record is not None else "image"

    def gate(self, masks: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """The SPN term's gate for a batch with these masks (B,1,S,S) {0,1} or None (:func:`~.spn.spn_gate`)."""
        return spn_gate(masks, self.region)

    def masks_for(self, folder: os.PathLike, files: Sequence[Path]) -> Optional[torch.Tensor]:
        """What :meth:`stylize` takes as ``masks`` for these ``files`` of the paired ``folder``: their lesion masks at
        this stylizer's size and on its device for a stylizer fine-tuned with ``stylize.structure_region=lesion``,
        None for
        one whose SPN covers the whole image (it needs none). A folder or file without a mask raises
        :class:`StylsegError` naming it (:func:`stylseg.data.validate.validate_paired`)."""
        if self.region == "image":
            return None
        from ..data.validate import validate_paired

        try:
            masks = dict(validate_paired(folder, use="stylize", deep=False))
        except StylsegError as e:
            raise StylsegError(f"{e} (stylize.structure_region=lesion needs the content images' masks; "
                               f"or set stylize.structure_region=image)") from None
        missing = [Path(f).name for f in files if Path(f) not in masks]
        if missing:
            raise StylsegError(f"{', '.join(missing[:5])}: not images of {folder} with a mask in "
                               f"{Path(folder) / 'masks'} (stylize.structure_region=lesion needs one per content image, with the image's name)")
        return torch.stack([mask_tensor(read_mask(masks[Path(f)]), self.size) for f in files]
                           ).to(next(self.unet_b.parameters()).device)

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
    def spn_term(self, x: torch.Tensor, t0: float, gen_steps: int, masks: Optional[torch.Tensor] = None
                 ) -> Tuple[torch.Tensor, int]:
        """``(term, t)``: the shift the SPN adds to the latent before D_B's first step, ``lambda * SPN(x, t)``
        (B,3,S,S) at the top ``t`` of the generation grid, gated by ``masks`` as :meth:`stylize` gates it."""
        t_top = self.diffae.grid(t0, gen_steps)[-1]
        term = self.lam * self.spn(x, torch.full((x.shape[0],), t_top, device=x.device))
        gate = self.gate(masks)
        return (term if gate is None else term * gate), t_top

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, t0: float, inv_steps: int, gen_steps: int, callback=None) -> torch.Tensor:
        xt, z = self.encode_stochastic(x, t0, inv_steps)
        return self.diffae.render(xt, z, t0, gen_steps, callback=callback)

    @classmethod
    def load(cls, model_dir: os.PathLike, diffae_dir: Optional[os.PathLike] = None, device="cpu",
             record: Optional[StylizerRecord] = None) -> "Stylizer":
        """Load a stylizer folder (``stylseg stylize finetune``) and the D_A it was tuned from, each file once
        (``record``: the folder's settings, when already read).

        D_A is found at ``diffae_dir`` if given, else at the absolute path recorded in the
        folder, else at the recorded path relative to the folder (a moved run folder); its
        checksum must match the recorded one. ``stylizer.sha256`` is the folder's checksum."""
        model_dir = Path(model_dir)
        rec = record or StylizerRecord.read(model_dir)  # before the weights: an earlier kit's folder gets one message
        w_path = model_dir / MODEL_WEIGHTS
        if not w_path.is_file():
            raise StylsegError(f"{model_dir}: not a stylseg model folder, missing {MODEL_WEIGHTS}")
        raw = w_path.read_bytes()
        state = load_weights_bytes(raw, w_path)
        da = rec.diffae
        cands = [Path(diffae_dir)] if diffae_dir else [Path(da.get("path", "")), model_dir / da.get("relpath", "")]
        found = next((c for c in cands if str(c) and (c / MODEL_CONFIG).is_file()), None)
        if found is None:
            raise StylsegError(f"{model_dir}: the D_A model it was tuned from is not at {da.get('path')!r}; "
                               f"pass it with --diffae DIR (diffae_dir=...)")
        diffae = load_diffae(found, device)
        if da.get("sha256") and diffae.sha256 != da["sha256"]:
            raise StylsegError(f"{found}: this D_A differs from the one {model_dir} was fine-tuned from "
                               f"(sha256 {diffae.sha256[:12]} != {da['sha256'][:12]}); pass the right --diffae or "
                               f"re-run finetune")
        unet_b = copy.deepcopy(diffae.unet)
        spn = SPN(**rec.spn)
        ub = {k[len("unet_b."):]: v for k, v in state.items() if k.startswith("unet_b.")}
        sp = {k[len("spn."):]: v for k, v in state.items() if k.startswith("spn.")}
        try:
            unet_b.load_state_dict(ub, strict=True)
            spn.load_state_dict(sp, strict=True)
        except RuntimeError as e:
            raise StylsegError(f"{w_path}: weights do not fit the recorded architecture "
                               f"({str(e).splitlines()[0]}); re-run `stylseg stylize finetune`") from None
        if rec.diverging:  # recorded by finetune: its loss fell and rose again
            d = rec.diverging
            warnings.warn(f"{model_dir}: this stylizer's fine-tuning was diverging (mean total loss "
                          f"{d.get('lowest_mean', float('nan')):.3g} -> {d.get('last_mean', float('nan')):.3g}, "
                          f"history.json); its outputs are likely ruined: look at them, or fine-tune again with a "
                          f"lower stylize.lr_spn / stylize.lr_unet", stacklevel=2)
        st = cls(diffae, unet_b.to(device).eval(), spn.to(device).eval(), rec.spn_lambda, rec)
        st.sha256 = _folder_sha256(rec, raw)
        st.diffae_dir = found
        for p in st.parameters():
            p.requires_grad_(False)
        return st


def _folder_sha256(record: StylizerRecord, weights_bytes: bytes) -> str:
    """The folder checksum (:func:`folder_sha256`) from the config's recorded digest and the weights' bytes."""
    h = hashlib.sha256()
    h.update(record.config_sha256.encode())
    h.update(hashlib.sha256(weights_bytes).hexdigest().encode())
    return h.hexdigest()
