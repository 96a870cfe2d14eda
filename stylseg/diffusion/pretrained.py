"""Importing the published Diffusion Autoencoders, and where D_A comes from (``diffae.init``).

``stylseg diffae import CKPT --out DIR`` reads a PyTorch Lightning ``last.ckpt`` of the published
DiffAE family (the reference's ``BeatGANsAutoencModel``; ``checkpoints/ffhq256_autoenc/last.ckpt``
is the one OSASIS and the paper start from) and writes a kit model folder (``config.json`` +
``model.safetensors``) that :meth:`DiffAE.from_pretrained <stylseg.diffusion.model.DiffAE.from_pretrained>`
loads and every stage takes unchanged.

- The file is read with ``torch.load(weights_only=True)``: no code in a downloaded file runs. A
  Lightning 1.4.5 checkpoint keys its ``callbacks`` by the ``ModelCheckpoint`` class; that one global
  is allowed as an inert stand-in (:data:`STAND_INS`), nothing else.
- Weights: the EMA copy (``ema_model.*``, what OSASIS and the reference sample with) by default, the
  raw ones (``model.*``) with ``weights="model"``. The ``x_T`` buffer is not needed.
- Config: from the checkpoint's ``hyper_parameters`` (``TrainConfig.as_dict_jsonable()``), or, when
  those are absent, from a named template (``ffhq256_autoenc`` ...) or the one template whose names
  and shapes match the weights.
- A latent checkpoint (``ffhq256_autoenc_latent/last.ckpt``) also holds ``latent_net.*`` (the latent
  DDIM) and ``conds_mean`` / ``conds_std``: the autoencoder is imported; the latent network is
  skipped (the kit samples ``z_sem`` from its Gaussian stand-in), and that Gaussian is set to
  ``N(conds_mean, diag(conds_std^2))``, the checkpoint's own z_sem statistics.
- The checkpoint's sha256 is recorded in the folder's ``config.json`` (``imported.sha256``); for a
  registry file without a published checksum, the first import also records it beside the file and
  later imports check it.

``diffae.init`` (a config field) says where notebook 02 gets D_A: ``train`` (train the kit's own),
a kit model folder, a checkpoint path or a weights-registry name (``diffae-ffhq256-autoenc``, the
paper profile's default). :func:`check_init` stops a run before any work when that source is
missing; :func:`provide_diffae` puts D_A into the run folder.
"""

from __future__ import annotations

import os
import pickle
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch

from ..utils import StylsegError, read_json, sha256_file

#: the Lightning classes a published checkpoint refers to (as dict keys only), allowed as inert stand-ins
STAND_IN_NAMES = ("pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",)
WEIGHT_CHOICES = ("ema", "model")
PREFIXES = {"ema": "ema_model.", "model": "model."}
#: ``diffae.init`` value that trains the kit's own DiffAE
INIT_TRAIN = "train"
#: measured throughput of the paper profile's own DiffAE (153.6 M parameters) on one H200, bf16, batch 32
PAPER_TRAIN_IMAGES_PER_S = 59.6
PAPER_TRAIN_PEAK_GIB = 92


class _StandIn:
    """What an allowed Lightning class unpickles to: an inert marker, never the real class."""

    def __init__(self, *args, **kwargs):
        raise TypeError("a stand-in for a Lightning class cannot be instantiated")


def _stand_in(qualified: str) -> type:
    module, name = qualified.rsplit(".", 1)
    return type(name, (_StandIn,), {"__module__": module, "__qualname__": name, "stands_in_for": qualified})


STAND_INS = tuple(_stand_in(n) for n in STAND_IN_NAMES)


def _reason(msg: str) -> str:
    """The cause in one of torch's loader messages, without the advice to load with ``weights_only=False``
    (which would unpickle the file: never passed on)."""
    if "WeightsUnpickler error:" in msg:
        msg = msg.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    elif "weights_only" in msg:
        msg = "refused by the safe loader"
    return " ".join(msg.split())[:200]


def load_checkpoint(path: os.PathLike) -> Dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with only :data:`STAND_INS` allowed; a file that is
    missing, truncated, not a PyTorch checkpoint or refers to other Python objects raises
    :class:`StylsegError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise StylsegError(f"{path}: checkpoint not found; pass the path of a DiffAE `last.ckpt` (e.g. "
                           f"checkpoints/ffhq256_autoenc/last.ckpt from https://github.com/phizaz/diffae#checkpoints)")
    try:
        with torch.serialization.safe_globals([(c, c.stands_in_for) for c in STAND_INS]), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # torch's note; the error says more
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Unsupported global" in msg or "GLOBAL" in msg:
            glob = msg.split("GLOBAL", 1)[1].split()[0] if "GLOBAL" in msg else "?"
            raise StylsegError(f"{path}: refers to the Python object {glob}, which a DiffAE checkpoint does not hold "
                               f"(only {', '.join(STAND_IN_NAMES)} is allowed, as an inert stand-in); nothing from the "
                               f"file was run. Pass a published DiffAE `last.ckpt`") from None
        raise StylsegError(f"{path}: not a PyTorch checkpoint ({_reason(msg)}); nothing from the file was run. Pass "
                           f"a DiffAE `last.ckpt` (download it again if it came from a link)") from None
    except TypeError as e:  # a pickle that calls an allowed stand-in instead of naming it
        raise StylsegError(f"{path}: tries to create a Lightning object ({_reason(str(e))}), which a DiffAE checkpoint "
                           f"only names; nothing from the file was run. Pass a published DiffAE `last.ckpt`") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as e:
        first = _reason(str(e)) or type(e).__name__
        raise StylsegError(f"{path}: cannot be read as a PyTorch checkpoint ({first}): the file is truncated or not a "
                           f"checkpoint; download it again (compare its size with the source's)") from None
    if not isinstance(obj, Mapping):
        raise StylsegError(f"{path}: holds a {type(obj).__name__}, not a checkpoint dict with a state_dict; pass a "
                           f"DiffAE `last.ckpt`")
    return dict(obj)


def _split_state(path: Path, ckpt: Mapping[str, Any], weights: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """The reference-named weights chosen by ``weights`` and what else the file holds (``prefix``, latent
    parts, ignored entries)."""
    if weights not in WEIGHT_CHOICES:
        raise StylsegError(f"--weights {weights!r} is not one of {', '.join(WEIGHT_CHOICES)}")
    sd = ckpt.get("state_dict")
    if sd is None:  # a bare state_dict
        sd = ckpt if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()) else None
    if not isinstance(sd, Mapping) or not sd:
        raise StylsegError(f"{path}: holds no state_dict (keys: {', '.join(sorted(map(str, ckpt))[:8])}); "
                           f"pass a DiffAE Lightning `last.ckpt`")
    other = {"latent_net": 0}
    has = {w: any(k.startswith(p) for k in sd) for w, p in PREFIXES.items()}
    if has["ema"] or has["model"]:
        prefix = PREFIXES[weights]
        if not has[weights]:
            alt = next(w for w in WEIGHT_CHOICES if has[w])
            raise StylsegError(f"{path}: holds no {prefix}* weights; pass --weights {alt}")
    else:
        prefix = ""  # the bare BeatGANsAutoencModel state_dict
    state: Dict[str, torch.Tensor] = {}
    ignored = []
    for k, v in sd.items():
        if not k.startswith(prefix):
            if k in ("conds_mean", "conds_std"):
                other[k] = v
            elif k.startswith("latent_net."):
                other["latent_net"] += 1
            elif not any(k.startswith(p) for p in PREFIXES.values()) and k != "x_T":
                ignored.append(k)
            continue
        name = k[len(prefix):]
        if name.startswith("latent_net."):
            other["latent_net"] += 1
        else:
            state[name] = v
    if ignored:
        other["ignored"] = ignored
    other["prefix"] = prefix
    return state, other


def _config_for(path: Path, ckpt: Mapping[str, Any], state: Mapping[str, torch.Tensor],
                template: Optional[str]) -> Tuple[Dict[str, Any], str]:
    from .beatgans import TEMPLATES, config_from_hparams, reference_state_dict, template_config
    from .model import DiffAE

    if template:
        return template_config(template), f"template {template}"
    hp = ckpt.get("hyper_parameters")
    if isinstance(hp, Mapping) and hp:
        try:
            return config_from_hparams(hp), "hyper_parameters"
        except StylsegError as e:
            raise StylsegError(f"{path}: {e}; it is not a checkpoint of the published DiffAE family the kit "
                               f"imports") from None
    for name in TEMPLATES:  # no hyper_parameters: the one template whose names and shapes match
        with torch.device("meta"):
            own = reference_state_dict(DiffAE(template_config(name)))
        if set(own) == set(state) and all(tuple(own[k].shape) == tuple(state[k].shape) for k in own):
            return template_config(name), f"template {name} (matched by its weights)"
    raise StylsegError(f"{path}: has no hyper_parameters and its weights match no published configuration; pass "
                       f"--template NAME (one of {', '.join(TEMPLATES)})")


def import_checkpoint(ckpt_path: os.PathLike, out_dir: os.PathLike, weights: str = "ema",
                      template: Optional[str] = None, expected_sha256: Optional[str] = None,
                      log: Callable[[str], None] = print) -> Path:
    """Import a published DiffAE Lightning checkpoint into a kit model folder ``out_dir``; returns it.

    ``weights``: "ema" (``ema_model.*``, default) or "model" (``model.*``). ``template`` names the
    configuration when the file has no ``hyper_parameters`` (see module docstring). ``expected_sha256``,
    when given, must match the file. A checkpoint of another family, a truncated file or a
    non-checkpoint raises :class:`StylsegError` naming the file, and ``out_dir`` is left untouched.
    """
    from .beatgans import load_reference_state_dict
    from .model import DiffAE

    path = Path(ckpt_path)
    _refuse_to_replace(Path(out_dir))
    ckpt = load_checkpoint(path)
    digest = sha256_file(path)
    if expected_sha256 and digest != expected_sha256:
        raise StylsegError(f"{path}: sha256 {digest} differs from the recorded {expected_sha256}; the file changed "
                           f"since its checksum was recorded (download it again, or delete the record "
                           f"{path}.sha256.json if you replaced it on purpose)")
    state, other = _split_state(path, ckpt, weights)
    cfg, cfg_from = _config_for(path, ckpt, state, template)
    model = DiffAE(cfg)
    load_reference_state_dict(model, state, strict=True, where=f"{path} ({other['prefix']}*)")
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt.get("hyper_parameters"), Mapping) else {}
    latent = "none: z_sem sampler is the identity Gaussian (refit it with fit_latent_gaussian)"
    if "conds_mean" in other and "conds_std" in other:
        mean = other["conds_mean"].reshape(-1).float()
        std = other["conds_std"].reshape(-1).float()
        if mean.numel() == model.z_mean.numel() == std.numel():
            with torch.no_grad():
                model.z_mean.copy_(mean)
                model.z_chol.copy_(torch.diag(std))
            latent = "Gaussian stand-in N(conds_mean, diag(conds_std^2)) of the checkpoint"
    if other["latent_net"]:
        log(f"{path.name}: skipped the latent DDIM (latent_net.*, {other['latent_net']} tensors): the kit samples "
            f"z_sem from its Gaussian stand-in; {latent}")
    if other.get("ignored"):
        log(f"{path.name}: ignored {len(other['ignored'])} other entries ({', '.join(other['ignored'][:5])})")
    extra = {"imported": {
        "checkpoint": str(path.resolve()), "sha256": digest, "weights": weights, "config_from": cfg_from,
        "name": hp.get("name"), "global_step": ckpt.get("global_step"), "epoch": ckpt.get("epoch"),
        "lightning_version": ckpt.get("pytorch-lightning_version"), "latent_net_tensors_skipped": other["latent_net"],
        "z_sem_sampler": latent}}
    out = Path(out_dir)
    model.save_pretrained(out, extra=extra)
    n = sum(p.numel() for p in model.parameters())
    log(f"imported {path} ({weights} weights, config from {cfg_from}, {n:,} parameters, sha256 {digest[:12]}...) "
        f"-> {out}")
    return out


def _refuse_to_replace(out: Path) -> None:
    """An ``out`` holding a model that was not imported (a D_A trained by the kit) is not overwritten."""
    if (out / "config.json").is_file() and not is_imported(out):
        raise StylsegError(f"{out}: already holds a model that was not imported (e.g. a D_A trained with "
                           f"diffae.init=train); choose another --out folder, or delete {out} to replace it")


def is_imported(folder: os.PathLike) -> bool:
    """True when ``folder`` is a model folder written by :func:`import_checkpoint`."""
    p = Path(folder) / "config.json"
    if not p.is_file():
        return False
    try:
        meta = read_json(p)
    except Exception:  # an unreadable config is not an imported model
        return False
    return meta.get("kind") == "diffae" and meta.get("config", {}).get("arch") == "beatgans"


# --------------------------------------------------------------------------- diffae.init
def _registry_names():
    from ..weights import WEIGHTS

    return [n for n in WEIGHTS.names() if n.startswith("diffae-")]


def train_cost(cfg) -> str:
    """The cost of ``diffae.init=train`` in the paper profile, from measured throughput."""
    dc = cfg.diffae
    hours = dc.train_steps * dc.batch_size / PAPER_TRAIN_IMAGES_PER_S / 3600
    return (f"{dc.train_steps:,} steps at batch {dc.batch_size}: about {hours:.0f} GPU-hours on one H200 "
            f"(measured {PAPER_TRAIN_IMAGES_PER_S} images/s with bf16, peak {PAPER_TRAIN_PEAK_GIB} GiB, for the paper "
            f"profile's 153.6 M-parameter DiffAE)")


def resolve_init(init: str) -> Tuple[str, Path]:
    """``(kind, path)`` of a ``diffae.init`` value other than "train": kind "folder" (a kit model
    folder), "checkpoint" (a file to import) or "registry" (a registry name; path = its file). Missing
    sources raise :class:`StylsegError` saying where to get them."""
    from .. import weights as W

    if init in W.WEIGHTS:
        e = W.WEIGHTS.get(init)
        p = W.path(init)
        if not p.is_file():
            raise StylsegError(f"diffae.init={init}: the published DiffAE ({e.description}) is not at {p}. Download "
                               f"{e.filename} by hand from {e.page or e.manual_url()} and put it at {p} "
                               f"(or set STYLSEG_WEIGHTS_DIR to the folder holding {init}/{e.filename})")
        return "registry", p
    p = Path(init).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise StylsegError(f"diffae.init={init}: folder without config.json; pass a kit model folder, a DiffAE "
                               f"checkpoint, a registry name ({', '.join(_registry_names())}) or train")
        return "folder", p
    if p.is_file():
        return "checkpoint", p
    raise StylsegError(f"diffae.init={init!r}: no such file, folder or registry name; pass train, a kit model folder, "
                       f"a DiffAE checkpoint (last.ckpt) or a registry name ({', '.join(_registry_names())})")


def check_init(cfg) -> None:
    """Stop at once, before any work, when ``cfg.diffae.init`` names a D_A that is not there; the
    message says where to get it and names ``--set diffae.init=train`` with its cost."""
    init = cfg.diffae.init
    if init == INIT_TRAIN:
        return
    try:
        resolve_init(init)
    except StylsegError as e:
        raise StylsegError(f"{e}. Or train the kit's own DiffAE instead with --set diffae.init=train: "
                           f"{train_cost(cfg)}") from None


def provide_diffae(cfg, out_dir: os.PathLike, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Put D_A into ``out_dir`` from ``cfg.diffae.init`` (not "train"): import a checkpoint or a
    registry file, or copy a kit model folder. An ``out_dir`` already holding the same import is kept.
    Returns ``{"init", "source", "folder"}``."""
    from .. import weights as W
    from .model import DiffAE

    init = cfg.diffae.init
    out = Path(out_dir)
    if init == INIT_TRAIN:
        raise StylsegError("diffae.init=train: D_A is trained (train_diffae), not provided")
    if is_imported(out) and init in _registry_names():
        from .. import weights as W

        if not W.path(init).is_file():  # imported earlier, the download since removed: keep what the run holds
            log(f"D_A: {out} holds the import of {init} (its file is no longer at {W.path(init)}); kept")
            return {"init": init, "source": read_json(out / "config.json")["imported"]["checkpoint"],
                    "folder": str(out)}
    check_init(cfg)
    kind, src = resolve_init(init)
    if kind == "folder":
        same = (out / "config.json").is_file() and all(
            (out / n).is_file() and sha256_file(out / n) == sha256_file(src / n)
            for n in ("config.json", "model.safetensors"))
        if out.resolve() != src.resolve() and not same:
            if (out / "config.json").is_file():
                raise StylsegError(f"{out}: already holds another model; delete it to copy D_A from {src} "
                                   f"(diffae.init), or set diffae.init to that folder")
            DiffAE.from_pretrained(src)  # validates it before copying
            out.mkdir(parents=True, exist_ok=True)
            for name in ("config.json", "model.safetensors"):
                shutil.copyfile(src / name, out / (name + ".tmp"))
            for name in ("model.safetensors", "config.json"):
                os.replace(out / (name + ".tmp"), out / name)
            log(f"D_A: copied the model folder {src} -> {out}")
        return {"init": init, "source": str(src), "folder": str(out)}
    expected = None
    if kind == "registry":
        # the full sha256: the published one, else the one recorded beside the file on its first use
        # (<file>.sha256.json, as for every registry file); a file that changed since is refused
        expected = W.verify_local(init)
    if is_imported(out):
        imp = read_json(out / "config.json").get("imported", {})
        if imp.get("checkpoint") == str(src.resolve()) and imp.get("weights") == "ema":
            digest = sha256_file(src)
            if digest == imp.get("sha256") and (expected is None or expected == digest):
                log(f"D_A: {out} already holds the import of {src}; kept")
                return {"init": init, "source": str(src), "folder": str(out)}
    import_checkpoint(src, out, weights="ema", expected_sha256=expected, log=log)
    return {"init": init, "source": str(src), "folder": str(out)}


def imported_diffae(run_diffae: os.PathLike, name: str = "diffae-ffhq256-autoenc",
                    log: Callable[[str], None] = print) -> Optional[Path]:
    """An imported (published-family) DiffAE to look at, or None: the run's D_A when it is one, else the
    registry file ``name`` when it is present (imported once into the cache folder)."""
    from .. import weights as W
    from ..utils import cache_dir

    if is_imported(run_diffae):
        return Path(run_diffae)
    if not W.path(name).is_file():
        return None
    from ..config import RunConfig, override

    out = cache_dir() / "diffae" / name
    provide_diffae(override(RunConfig(), {"diffae.init": name}), out, log=log)
    return out


__all__ = ["load_checkpoint", "import_checkpoint", "is_imported", "imported_diffae", "resolve_init", "check_init",
           "provide_diffae", "train_cost", "STAND_INS"]
