"""Style embedders ``E``: what the directional style losses compare (docs/method.md sections 3, 7).

- :class:`WeightFreeEmbedder` (offline default, since pretrained CLIP weights are not at hand
  on the development machines): differentiable CIELAB colour moments plus the mean and
  standard deviation of the responses of a fixed multi-scale difference-of-Gaussians filter
  bank on L*, a*, b*, standardised on the source domain. It is a *substitute* for CLIP and
  every output that used it says so (``SUBSTITUTE``). It deliberately does not use local
  binary patterns (LBP): the style scores (:mod:`stylseg.stylize.scores`) use LBP histograms
  as features no loss sees.
- :class:`ClipEmbedder`: an open_clip image encoder (ViT-B-32 with OpenAI weights in the
  paper profile) with differentiable tensor preprocessing (bicubic resize to the model's
  input size, CLIP mean/std), or OSASIS's own preprocessing (torchvision ``Resize`` on the
  shorter side + ``CenterCrop`` + ``Normalize``, applied to tensors).

Both map ``(B,3,H,W)`` images in ``[-1,1]`` to ``(B,D)`` embeddings and are differentiable
with respect to the images.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import weights
from ..utils import Registry, StylsegError

SUBSTITUTE = "weight-free style embedder instead of CLIP"
EMBEDDERS: Registry = Registry("style embedder")

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# --------------------------------------------------------------------------- CIELAB
def rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """Differentiable sRGB -> CIELAB (D65), kornia's ``rgb_to_lab`` (as ``skimage.color.rgb2lab``).

    ``x`` (B,3,H,W) in [-1,1] -> (B,3,H,W) with L* in [0,100], a*, b* roughly in [-128,127].
    Gradients are finite everywhere (the cube root is linearised near zero, as CIELAB defines).
    """
    from kornia.color import rgb_to_lab as kornia_rgb_to_lab

    return kornia_rgb_to_lab((x.clamp(-1, 1) + 1) * 0.5)


def gaussian_kernel1d(sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    r = max(1, int(round(3 * sigma)))
    xs = torch.arange(-r, r + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (xs / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B,C,H,W) with reflect padding (radius clipped to the image)."""
    k = gaussian_kernel1d(sigma, x.device, x.dtype)
    r = k.numel() // 2
    r_eff = min(r, x.shape[-1] - 1, x.shape[-2] - 1)
    if r_eff < r:  # image smaller than the kernel: truncate and renormalise
        k = k[r - r_eff: r + r_eff + 1]
        k = k / k.sum()
        r = r_eff
    c = x.shape[1]
    kh = k.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    kv = k.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), kh, groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), kv, groups=c)


# --------------------------------------------------------------------------- weight-free embedder
class WeightFreeEmbedder(nn.Module):
    """CIELAB colour moments + multi-scale DoG statistics, standardised on the source domain.

    Features of an image (B,3,H,W) in [-1,1], each channel of CIELAB scaled to about unit range
    (L/100, a/100, b/100): per channel the mean and standard deviation (6), then for each scale
    sigma in ``sigmas`` and each channel the DoG response ``G_sigma - G_{2 sigma}`` summarised by
    its mean absolute value and standard deviation (``6 * len(sigmas)``). :meth:`fit` stores
    the mean and standard deviation of these features over source-domain images; the
    embedding is then ``(features - mean) / std`` (B, D). No learned weights, no LBP.
    """

    substitute = SUBSTITUTE

    def __init__(self, sigmas=(0.5, 1.0, 2.0)):
        super().__init__()
        self.sigmas = tuple(float(s) for s in sigmas)
        d = self.dim
        self.register_buffer("mu", torch.zeros(d))
        self.register_buffer("sd", torch.ones(d))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @property
    def dim(self) -> int:
        return 6 + 6 * len(self.sigmas)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Raw (unstandardised) features (B, D) of images (B,3,H,W) in [-1,1]."""
        lab = rgb_to_lab(x) / 100.0
        feats = [lab.mean(dim=(2, 3)), _std(lab)]
        for s in self.sigmas:
            dog = gaussian_blur(lab, s) - gaussian_blur(lab, 2 * s)
            feats += [dog.abs().mean(dim=(2, 3)) * 10.0, _std(dog) * 10.0]
        return torch.cat(feats, dim=1)

    @torch.no_grad()
    def fit(self, images: torch.Tensor, batch: int = 64) -> "WeightFreeEmbedder":
        """Standardise on source-domain images (N,3,H,W) in [-1,1] (N >= 2)."""
        if images.shape[0] < 2:
            raise StylsegError("the weight-free embedder needs at least 2 source images to standardise its features")
        f = torch.cat([self.features(images[i:i + batch].to(self.mu.device)) for i in range(0, images.shape[0], batch)])
        self.mu.copy_(f.mean(0))
        self.sd.copy_(f.std(0).clamp(min=1e-3))
        self.fitted.fill_(True)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.features(x) - self.mu) / self.sd

    def describe(self) -> dict:
        return {"name": "weightfree", "sigmas": list(self.sigmas), "dim": self.dim, "substitute": SUBSTITUTE}


def _std(x: torch.Tensor) -> torch.Tensor:
    return (x.var(dim=(2, 3), unbiased=False) + 1e-8).sqrt()


# --------------------------------------------------------------------------- CLIP
TINY_CLIP = "stylseg-tiny-clip"
_TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def register_tiny_clip() -> str:
    """Register a tiny open_clip config (``stylseg-tiny-clip``, ~0.1 M vision parameters) for
    tests and offline demos; returns its name. Randomly initialised (no weights exist)."""
    import open_clip

    if TINY_CLIP in open_clip.list_models():
        return TINY_CLIP
    d = Path(tempfile.mkdtemp(prefix="stylseg_openclip_cfg_"))
    (d / f"{TINY_CLIP}.json").write_text(json.dumps(_TINY_CLIP_CFG))
    open_clip.add_model_config(d)
    return TINY_CLIP


def clip_weights_name(model: str, pretrained: str) -> str:
    """The weights registry's name of CLIP ``model`` with the weights tagged ``pretrained``
    (``clip-vit-b-32-openai``)."""
    return f"clip-{model.lower()}-{pretrained.lower()}"


def resolve_clip_weights(model: str, pretrained: str) -> Optional[str]:
    """Where the CLIP weights come from: ``""``/``"none"`` -> random init (None); an existing
    file -> that file; a tag (``openai``) -> the kit's weights registry. Offline and not
    fetched -> :class:`StylsegError` naming ``stylseg weights fetch`` and the offline fallback."""
    if pretrained in ("", "none", None):
        return None
    p = Path(os.path.expanduser(str(pretrained)))
    if p.is_file():
        return str(p)
    try:
        return str(weights.resolve(clip_weights_name(model, pretrained)))
    except StylsegError as e:
        # the registry's message names `stylseg weights fetch KEY` and the download address, or the valid names
        raise StylsegError(f"CLIP weights {model}/{pretrained} are not available: {e}; or pass a local file "
                           f"with --set stylize.clip_pretrained=/path/to/weights, or work offline with the "
                           f"weight-free substitute: --set stylize.embedder=weightfree") from None


class ClipEmbedder(nn.Module):
    """open_clip image encoder with differentiable preprocessing; unit-length embeddings (B, D).

    ``preprocess="tensor"``: [-1,1] -> [0,1] -> bicubic resize to the model's input size ->
    CLIP mean/std (docs/method.md section 7). ``preprocess="osasis"``: OSASIS's transform on
    tensors: ``Normalize(-1, 2)`` then torchvision ``Resize(size, bicubic)`` of the shorter
    side, ``CenterCrop(size)``, CLIP ``Normalize``. The CLIP weights are frozen.
    """

    def __init__(self, model: str = "ViT-B-32", pretrained: str = "openai", preprocess: str = "tensor"):
        super().__init__()
        import open_clip

        if model == TINY_CLIP:
            register_tiny_clip()
        if model not in open_clip.list_models():
            raise StylsegError(f"unknown open_clip model {model!r} (set stylize.clip_model); "
                               f"e.g. ViT-B-32, ViT-B-16, RN50 or {TINY_CLIP} for tests")
        if preprocess not in ("tensor", "osasis"):
            raise StylsegError(f"unknown CLIP preprocessing {preprocess!r}; valid: osasis, tensor")
        ckpt = resolve_clip_weights(model, pretrained)
        try:
            clip = open_clip.create_model(model, pretrained=ckpt, load_weights=ckpt is not None,
                                          pretrained_text=False)
        except Exception as e:  # corrupt or mismatched checkpoint
            raise StylsegError(f"cannot load CLIP {model} from {ckpt}: {e}; re-fetch it with "
                               f"`stylseg weights fetch` or use --set stylize.embedder=weightfree") from None
        self.visual = clip.visual.eval()
        for p in self.visual.parameters():
            p.requires_grad_(False)
        size = getattr(self.visual, "image_size", 224)
        self.size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.model_name, self.pretrained, self.preprocess = model, pretrained or "none", preprocess
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True):  # the encoder stays in eval mode
        super().train(mode)
        self.visual.eval()
        return self

    def prep(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [-1,1] -> CLIP input (B,3,size,size), differentiable."""
        x01 = (x + 1) * 0.5
        if self.preprocess == "tensor":
            y = F.interpolate(x01, size=(self.size, self.size), mode="bicubic", align_corners=False)
        else:
            import torchvision.transforms as T

            y = T.CenterCrop(self.size)(T.Resize(self.size, interpolation=T.InterpolationMode.BICUBIC)(x01))
        return (y - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.visual(self.prep(x))
        return e / e.norm(dim=-1, keepdim=True).clamp(min=1e-8)

    def describe(self) -> dict:
        return {"name": "clip", "model": self.model_name, "pretrained": self.pretrained,
                "preprocess": self.preprocess, "substitute": None}


# --------------------------------------------------------------------------- factory
@EMBEDDERS.register("weightfree")
def _make_weightfree(scfg, source: Optional[torch.Tensor] = None) -> nn.Module:
    e = WeightFreeEmbedder()
    if source is not None:
        e.fit(source)
    return e


@EMBEDDERS.register("clip")
def _make_clip(scfg, source: Optional[torch.Tensor] = None) -> nn.Module:
    return ClipEmbedder(scfg.clip_model, scfg.clip_pretrained)


def make_embedder(scfg, source: Optional[torch.Tensor] = None, device="cpu") -> nn.Module:
    """The embedder ``scfg.embedder`` names (``weightfree`` | ``clip``); ``source`` (N,3,H,W)
    in [-1,1] standardises the weight-free one. Frozen, in eval mode, on ``device``."""
    e = EMBEDDERS.get(scfg.embedder)(scfg, source).to(device).eval()
    for p in e.parameters():
        p.requires_grad_(False)
    return e


def embedder_substitute(e: nn.Module) -> Optional[str]:
    """``SUBSTITUTE`` for the weight-free embedder, else None (what manifests record)."""
    return getattr(e, "substitute", None)
