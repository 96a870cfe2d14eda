"""LPIPS, the perceptual term of OSASIS's style-pair reconstruction (docs/stylization.md).

OSASIS builds ``lpips.LPIPS(net='vgg')`` (LPIPS v0.1 on a VGG16 trunk, Zhang et al. 2018) and adds
``10 * LPIPS(x0_style, y_B)`` to its loss next to ``10 * L1`` (the ``osasis`` loss set,
:mod:`stylseg.stylize.losses`). The kit runs the same ``lpips`` package: its calibrated linear layers ship in
its wheel; the trunk's ImageNet weights (torchvision's ``vgg16-397923af.pth``), which ``lpips`` would download
at run time, come from the kit's weights registry (:data:`LPIPS_WEIGHTS`, ``stylseg weights fetch
vgg16-imagenet``): the trunk is built without weights and loaded from that file, so nothing downloads.

``stylize.recon_perceptual`` chooses (:data:`RECON_PERCEPTUAL`): ``lpips`` (the file is required), ``msssim``
(the stand-in ``1 - MS-SSIM``), or ``auto``: LPIPS when the file is present, else the stand-in. Every output
made with the stand-in says so (:data:`STAND_IN`, next to the weight-free embedder's note).
"""

from __future__ import annotations

import copy
import functools
import warnings
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..utils import StylsegError, check_choice

#: the weights-registry entry of the LPIPS trunk (torchvision's VGG16, ImageNet-1k)
LPIPS_WEIGHTS = "vgg16-imagenet"
#: the values of ``stylize.recon_perceptual``
RECON_PERCEPTUAL = ("auto", "lpips", "msssim")
#: what outputs made with the stand-in record (``"substitute"``, with the embedder's)
STAND_IN = "1 - MS-SSIM instead of LPIPS (VGG16) in the style pair's reconstruction"
_FETCH = f"`stylseg weights fetch {LPIPS_WEIGHTS}`"


def lpips_available() -> bool:
    """True when the LPIPS trunk's file is in the weights folder (not yet verified)."""
    from .. import weights

    return weights.path(LPIPS_WEIGHTS).is_file()


def resolve_recon(choice: str) -> str:
    """``stylize.recon_perceptual`` as it will run: ``auto`` -> ``lpips`` when the file is present, else
    ``msssim``; ``lpips`` and ``msssim`` as given."""
    check_choice(choice, RECON_PERCEPTUAL, "style-pair reconstruction term", "stylize.recon_perceptual")
    if choice == "auto":
        return "lpips" if lpips_available() else "msssim"
    return choice


def resolve_recon_config(cfg):
    """``cfg`` with ``stylize.recon_perceptual=auto`` replaced by what runs (:func:`resolve_recon`) when the loss
    set is osasis (the paper set has no reconstruction term: kept as it is), so that a fine-tuning's settings
    digest and saved config name the term it ran."""
    sc = cfg.stylize
    if sc.loss_set != "osasis" or sc.recon_perceptual != "auto":
        return cfg
    return cfg.override(**{"stylize.recon_perceptual": resolve_recon(sc.recon_perceptual)})


def stand_in_note(cfg) -> Optional[str]:
    """For ``stylseg reproduce``'s preflight: a note when the run's fine-tuning will fall back to the stand-in
    (osasis loss set, ``recon_perceptual=auto``, the file absent), naming the fetch command and the opt-out."""
    from .. import weights

    sc = cfg.stylize
    if sc.loss_set != "osasis" or sc.recon_perceptual != "auto" or lpips_available():
        return None
    return (f"note: {LPIPS_WEIGHTS} (the VGG16 trunk of OSASIS's LPIPS term) is not at "
            f"{weights.path(LPIPS_WEIGHTS)}: the fine-tuning runs the stand-in 1 - MS-SSIM and says so in its "
            f"outputs; {_FETCH} for the published loss, or --set stylize.recon_perceptual=msssim to choose the "
            f"stand-in")


def vgg16_trunk_state(path: Path) -> Dict[str, torch.Tensor]:
    """The ``features.*`` tensors of a torchvision VGG16 state dict file (read with ``weights_only=True``)."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same directions
        raise StylsegError(f"{path}: cannot read the VGG16 weights ({e}); delete it and run {_FETCH}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    feats = {k: v for k, v in state.items() if isinstance(k, str) and k.startswith("features.")} \
        if isinstance(state, dict) else {}
    if not feats:
        raise StylsegError(f"{path}: holds no torchvision VGG16 'features.*' tensors; is it another network's file? "
                           f"Delete it and run {_FETCH}")
    return feats


@functools.lru_cache(maxsize=1)
def _lpips_vgg() -> nn.Module:
    """``lpips.LPIPS(net='vgg')`` with a random trunk (``pnet_rand``: torchvision builds VGG16 without weights, so
    nothing downloads; seeded 0) and lpips's calibrated linear layers; built once per process (torchvision
    initialises the whole VGG16, classifier included, before lpips keeps its 13 convolutions: seconds on a CPU)."""
    import lpips

    # its own random numbers: building it leaves the caller's draws as they were, first build or not
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(0)
        warnings.simplefilter("ignore", UserWarning)  # lpips asks torchvision with the deprecated pretrained=False
        return lpips.LPIPS(net="vgg", version="0.1", pretrained=True, pnet_rand=True, verbose=False)


class LPIPSDistance(nn.Module):
    """``lpips.LPIPS(net='vgg')`` (v0.1), frozen and in eval mode, whose trunk never downloads.

    ``trunk``: torchvision VGG16 ``features.*`` tensors (:func:`vgg16_trunk_state`); None leaves the trunk random
    (tests). The linear layers are lpips's calibrated ones from its wheel. ``forward(x, y)``: images (B,3,H,W) in
    [-1,1] (``y`` may be (1,3,H,W)) -> LPIPS distances (B,), >= 0, 0 for identical images; differentiable with
    respect to both.
    """

    def __init__(self, trunk: Optional[Dict[str, torch.Tensor]] = None):
        super().__init__()
        self.lpips = copy.deepcopy(_lpips_vgg())
        if trunk is not None:
            self._load_trunk(trunk)
        self.lpips.eval()
        for p in self.lpips.parameters():
            p.requires_grad_(False)

    def _load_trunk(self, trunk: Dict[str, torch.Tensor]) -> None:
        own = self.lpips.net.state_dict()  # "slice<k>.<i>.weight": lpips keeps torchvision's layer index i
        src = {k: "features." + k.split(".", 1)[1] for k in own}
        bad = [s for k, s in src.items() if s not in trunk or tuple(trunk[s].shape) != tuple(own[k].shape)]
        if bad:
            raise StylsegError(f"the VGG16 weights lack or misshape {len(bad)} trunk tensors (e.g. {bad[0]}); "
                               f"delete the file and run {_FETCH}")
        self.lpips.net.load_state_dict({k: trunk[s] for k, s in src.items()})

    def train(self, mode: bool = True):  # the metric stays in eval mode (no dropout)
        super().train(mode)
        self.lpips.eval()
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.lpips(x, y.expand_as(x)).flatten()


def load_lpips(device="cpu") -> LPIPSDistance:
    """LPIPS with the registry's VGG16 trunk (verified by its checksum); a missing or damaged file raises the
    registry's :class:`StylsegError` (fetch command, path). Never downloads."""
    from .. import weights

    return LPIPSDistance(vgg16_trunk_state(weights.resolve(LPIPS_WEIGHTS))).to(device)


def make_recon_perceptual(scfg, device="cpu") -> Optional[LPIPSDistance]:
    """The LPIPS module the osasis loss set's reconstruction uses, or None for the stand-in (``scfg.loss_set``
    is not osasis, or ``scfg.recon_perceptual`` resolves to ``msssim``)."""
    if scfg.loss_set != "osasis" or resolve_recon(scfg.recon_perceptual) != "lpips":
        return None
    return load_lpips(device)


@functools.lru_cache(maxsize=2)
def _scoring_lpips(device: str, sha256: str) -> LPIPSDistance:
    """:func:`load_lpips` once per device and file (notebook 05 scores several arms)."""
    return load_lpips(device)


@torch.no_grad()
def mean_lpips(a: Sequence[np.ndarray], b: Sequence[np.ndarray], device="auto", batch: int = 16) -> float:
    """Mean LPIPS between paired RGB uint8 images (H,W,3) of one size (notebook 05's ``lpips_to_input``)."""
    from .. import weights
    from ..data.io import to_tensor_pm1
    from ..utils import resolve_device

    dev = resolve_device(device)
    weights.resolve(LPIPS_WEIGHTS)  # verified before each use (cheaply: by its recorded size and time)
    model = _scoring_lpips(str(dev), weights.verify_local(LPIPS_WEIGHTS))
    out = []
    for i in range(0, len(a), batch):
        x = torch.stack([to_tensor_pm1(im) for im in a[i:i + batch]]).to(dev)
        y = torch.stack([to_tensor_pm1(im) for im in b[i:i + batch]]).to(dev)
        out.append(model(x, y).float().cpu())
    return float(torch.cat(out).mean())
