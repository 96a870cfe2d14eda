"""Style losses for fine-tuning D_B + SPN (docs/method.md sections 3 and 7).

Two loss sets, selected by ``StylizeConfig.loss_set``:

``paper`` (paper eq. 13): ``L_style = l1 L_adv + l2 L_cycle + l3 L_SPN`` (``l1`` = 1, ``l2`` = ``w_cycle``,
``l3`` = ``w_structure``)

- ``L_adv`` (``adv``): the directional loss
  ``1 - cos(norm(E(y_B) - E(x_A_style)), norm(E(out_B) - E(x_A)))`` plus its magnitude term
  ``adv_mag`` (weight 1, as ``L_adv``).
- ``L_cycle`` (``cycle``, eq. 11): ``|G(F(G(x))) - G(x)|_1 + |F(G(F(y))) - F(y)|_1``, computed by
  :mod:`stylseg.stylize.finetune` (it needs the models); :func:`cycle_l1` is its distance.
- ``L_SPN`` (``spn``): the kit's interpretation of eq. 12, ``|S(x0_B) - S(x_in)|^2`` with ``S``
  the locally normalised luminance (:func:`structure_map`), a style-invariant structure map.

``osasis`` (what OSASIS's code runs; default weights in brackets):

- ``cross`` [1]: cross-domain directional loss (as ``adv``) + ``cross_mag``;
- ``in_domain`` [0.5]: ``1 - cos(norm(E(x_A) - E(x_A_style)), norm(E(out_B) - E(y_B)))`` + ``in_domain_mag``;
- reconstruction of the style pair through D_B (x_A_style -> D_B -> should give y_B):
  ``recon_embed`` [30] ``1 - cos(E(out_style), E(y_B))``, ``recon_l1`` [10], and ``recon_lpips`` [10], LPIPS with
  VGG16 as OSASIS runs it (:mod:`stylseg.stylize.perceptual`), or, where its VGG16 weights are not at hand
  (``stylize.recon_perceptual``), the stand-in ``recon_msssim`` [10] ``1 - MS-SSIM``, which every output names;
- ``spn`` [0, ``w_structure``]: the paper's ``L_SPN`` added to OSASIS's set (not in OSASIS's code, which
  has no structure term): with it the SPN and D_B are trained to keep the input's structure while the
  other terms move its style. ``stylize.structure_region="lesion"`` restricts it (in both sets) to the lesion
  and a ring around it (:func:`lesion_weight`, from the content images' masks).

The magnitude term (docs/method.md section 7): the cosine ignores how far the output moved (a tiny
step in the right direction scores perfectly), so each directional loss adds
``|dE_out - dE_ref|^2 / |dE_ref|^2`` (relative, so that it is 0 for the reference change and 1
for no change, whatever the embedder's scale).

All images are (B,3,H,W) in [-1,1]; every loss is differentiable with respect to ``out``.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils import StylsegError, check_choice
from .embedders import gaussian_blur

LOSS_SETS = ("paper", "osasis")

#: OSASIS's fixed weights of its in-domain directional loss and of the style pair's reconstruction terms
OSASIS_WEIGHTS = {"in_domain": 0.5, "recon_embed": 30.0, "recon_l1": 10.0, "recon_lpips": 10.0,
                  "recon_msssim": 10.0}
#: the style pair's perceptual reconstruction: LPIPS (OSASIS) or its stand-in; a StyleLoss keeps one of the two
RECON_PERCEPTUAL_TERMS = ("recon_lpips", "recon_msssim")

#: the terms of each set and what scales each of them: config weights (names of StylizeConfig fields) and numbers
#: (the paper's lambda_1 = 1 for L_adv and OSASIS's fixed weights; a magnitude term has its directional loss's weight)
TERMS = {
    "paper": {"adv": 1.0, "adv_mag": 1.0, "spn": "w_structure", "cycle": "w_cycle"},
    "osasis": {"cross": 1.0, "cross_mag": 1.0,
               "in_domain": OSASIS_WEIGHTS["in_domain"], "in_domain_mag": OSASIS_WEIGHTS["in_domain"],
               "recon_embed": OSASIS_WEIGHTS["recon_embed"], "recon_l1": OSASIS_WEIGHTS["recon_l1"],
               "recon_lpips": OSASIS_WEIGHTS["recon_lpips"], "recon_msssim": OSASIS_WEIGHTS["recon_msssim"],
               "spn": "w_structure"},
}


# --------------------------------------------------------------------------- structure map
def luminance(x: torch.Tensor) -> torch.Tensor:
    """Rec. 601 luma of (B,3,H,W) in [-1,1] -> (B,1,H,W) in [0,1]."""
    x01 = (x + 1) * 0.5
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x01 * w).sum(1, keepdim=True)


def structure_map(x: torch.Tensor, sigma_frac: float = 1.0 / 24.0, c: float = 1e-3) -> torch.Tensor:
    """Locally normalised luminance ``S(x) = (Y - G*Y) / sqrt(G*(Y - G*Y)^2 + c)`` (B,1,H,W).

    ``Y`` is the luminance in [0,1], ``G`` a Gaussian of standard deviation ``sigma_frac * W``
    px (scale-free: the same share of the image at any resolution). Subtracting the local
    mean and dividing by the local contrast removes colour, brightness and contrast changes,
    i.e. style, and keeps edges and shapes, i.e. structure. ``c`` keeps flat regions at ~0.
    """
    y = luminance(x)
    s = max(0.5, sigma_frac * x.shape[-1])
    d = y - gaussian_blur(y, s)
    return d / (gaussian_blur(d * d, s) + c).sqrt()


def spn_structure_loss(x0_b: torch.Tensor, x_in: torch.Tensor, weight: Optional[torch.Tensor] = None
                       ) -> torch.Tensor:
    """``L_SPN = mean |S(x0_B) - S(x_in)|^2`` (kit's interpretation of paper eq. 12).

    ``weight`` (B,1,H,W) >= 0, optional: each image's squared difference is averaged with these weights
    (``sum w d^2 / sum w``), then over the batch; ``stylize.structure_region="lesion"`` passes
    :func:`lesion_weight`. An image whose weights are all 0 counts with uniform weights."""
    d2 = (structure_map(x0_b) - structure_map(x_in)) ** 2
    if weight is None:
        return d2.mean()
    w = weight.to(dtype=d2.dtype).expand_as(d2)
    empty = w.flatten(1).sum(1) <= 0
    if bool(empty.any()):
        w = torch.where(empty.view(-1, 1, 1, 1), torch.ones_like(w), w)
    return ((w * d2).flatten(1).sum(1) / w.flatten(1).sum(1)).mean()


#: ``stylize.structure_region="lesion"``: the structure term covers the lesion and a ring of this share of the
#: image side around it (8 px at 64)
LESION_RING = 1.0 / 8.0


def lesion_weight(masks: torch.Tensor, ring: float = LESION_RING) -> torch.Tensor:
    """The region the lesion-focused structure term covers: masks (B,1,H,W) in {0,1} dilated by
    ``ring`` x the side (a square structuring element), as a float {0,1} map. An empty mask gives all
    ones (nothing to focus on: the whole image keeps its structure)."""
    m = (masks > 0.5).to(torch.float32)
    r = max(1, int(round(ring * m.shape[-1])))
    region = F.max_pool2d(m, kernel_size=2 * r + 1, stride=1, padding=r)
    empty = m.flatten(1).sum(1) == 0
    return torch.where(empty.view(-1, 1, 1, 1), torch.ones_like(region), region)


# --------------------------------------------------------------------------- directional
def directional_loss(e_from: torch.Tensor, e_to: torch.Tensor, ref_from: torch.Tensor, ref_to: torch.Tensor,
                     eps: float = 1e-8):
    """Directional loss and its magnitude term (paper ``L_adv``; OSASIS's directional losses).

    ``d_out = e_to - e_from`` (B,D), ``d_ref = ref_to - ref_from`` (B,D) or (1,D). Returns
    ``(1 - cos(d_out, d_ref)).mean()`` and ``(|d_out - d_ref|^2 / |d_ref|^2).mean()``.
    """
    d_out = e_to - e_from
    d_ref = (ref_to - ref_from).expand_as(d_out)
    cos = F.cosine_similarity(d_out, d_ref, dim=-1, eps=eps)
    mag = ((d_out - d_ref) ** 2).sum(-1) / ((d_ref ** 2).sum(-1) + eps)
    return (1.0 - cos).mean(), mag.mean()


# --------------------------------------------------------------------------- (MS-)SSIM
def _ssim_cs(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0):
    """torchmetrics' Gaussian-window SSIM (Wang et al. 2004; sigma 1.5, 11 px, reflect padding) and its
    contrast-structure term, per image (B,), of images (B,C,H,W) in ``data_range``."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(x, y, data_range=data_range, reduction="none",
                                               return_contrast_sensitivity=True)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Gaussian-window SSIM (Wang et al. 2004, sigma 1.5) per image (B,), images (B,C,H,W) (torchmetrics)."""
    return _ssim_cs(x, y, data_range)[0]


_MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, min_size: int = 8) -> torch.Tensor:
    """Multi-scale SSIM (Wang et al. 2003) per image (B,), images (B,C,H,W) in ``data_range``.

    The product over scales of torchmetrics' contrast-structure terms and, at the coarsest scale, its SSIM,
    weighted by the standard exponents. It uses as many of the 5 standard scales as the image allows (each
    at least ``min_size`` px) with the exponents renormalised: torchmetrics' own MS-SSIM asks for more than
    10 (scales - 1)^2 px a side and refuses the kit's 32 and 64 px images at 3 and 4 scales; where it accepts a size
    the two are equal (tested at 256 px). Negative terms are clamped at 0 (its ``normalize="relu"``, as
    pytorch-msssim does) so that fractional powers stay defined.
    """
    levels = 1
    while levels < 5 and min(x.shape[-2:]) // (2 ** levels) >= min_size:
        levels += 1
    w = torch.tensor(_MS_WEIGHTS[:levels], device=x.device, dtype=x.dtype)
    w = w / w.sum()
    vals = []
    for i in range(levels):
        s, cs = _ssim_cs(x, y, data_range)
        vals.append(F.relu(cs if i < levels - 1 else s))
        x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return torch.prod(torch.stack(vals, dim=0) ** w.view(-1, 1), dim=0)


def cycle_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference, the distance of ``L_cycle`` (paper eq. 11)."""
    return (a - b).abs().mean()


# --------------------------------------------------------------------------- the loss sets
class StyleLoss(nn.Module):
    """The selected loss set with its weights, holding the style pair's embeddings.

    ``y_b`` (1,3,S,S) the style image, ``x_a_style`` (1,3,S,S) its domain-A rendering, both in
    [-1,1]; ``embedder`` maps images to (B,D). Call :meth:`terms` with the content batch
    ``x_in`` and D_B's x0-prediction ``x0_b`` (and, for the OSASIS set, the style branch's
    x0-prediction ``x0_style``) to get the unweighted terms, :meth:`total` to weight them. ``perceptual``: the
    LPIPS module of the OSASIS set's reconstruction (:func:`~stylseg.stylize.perceptual.make_recon_perceptual`);
    None runs the stand-in ``recon_msssim`` (:attr:`stand_in`).
    """

    def __init__(self, scfg, embedder: nn.Module, y_b: torch.Tensor, x_a_style: torch.Tensor,
                 perceptual: Optional[nn.Module] = None):
        super().__init__()
        check_choice(scfg.loss_set, LOSS_SETS, "loss set", "stylize.loss_set")
        self.loss_set = scfg.loss_set
        self.embedder = embedder
        self.perceptual = perceptual
        self.weights: Dict[str, float] = {}
        unused = RECON_PERCEPTUAL_TERMS[1 if perceptual is not None else 0]
        for name, w in TERMS[self.loss_set].items():
            if name != unused:
                self.weights[name] = float(getattr(scfg, w) if isinstance(w, str) else w)
        self.register_buffer("y_b", y_b.detach())
        self.register_buffer("x_a_style", x_a_style.detach())
        with torch.no_grad():
            self.register_buffer("e_yb", embedder(y_b).detach())
            self.register_buffer("e_xas", embedder(x_a_style).detach())

    @property
    def needs_style_branch(self) -> bool:
        """True when a term reconstructs the style pair (OSASIS set with a nonzero weight)."""
        return self.loss_set == "osasis" and any(self.active(k) for k in ("recon_embed", "recon_l1",
                                                                            *RECON_PERCEPTUAL_TERMS))

    @property
    def stand_in(self) -> Optional[str]:
        """What stands in for OSASIS's LPIPS term (recorded with the stylizer), or None."""
        from .perceptual import STAND_IN

        return STAND_IN if self.active("recon_msssim") else None

    @property
    def needs_cycle(self) -> bool:
        return self.loss_set == "paper" and self.weights["cycle"] != 0

    def active(self, name: str) -> bool:
        return self.weights.get(name, 0.0) != 0.0

    def terms(self, x_in: torch.Tensor, x0_b: torch.Tensor, x0_style: Optional[torch.Tensor] = None,
              e_in: Optional[torch.Tensor] = None, region: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Unweighted loss terms (scalars). ``e_in`` = E(x_in) may be passed precomputed; ``region`` (B,1,H,W)
        weights the structure term's pixels (:func:`spn_structure_loss`; None = the whole image)."""
        if e_in is None:
            with torch.no_grad():
                e_in = self.embedder(x_in)
        out: Dict[str, torch.Tensor] = {}
        e_out = self.embedder(x0_b)
        if self.loss_set == "paper":
            out["adv"], out["adv_mag"] = directional_loss(e_in, e_out, self.e_xas, self.e_yb)
            if self.active("spn"):
                out["spn"] = spn_structure_loss(x0_b, x_in, region)
        else:
            out["cross"], out["cross_mag"] = directional_loss(e_in, e_out, self.e_xas, self.e_yb)
            # in-domain: the change from y_B to out_B must match the change from x_A_style to x_A
            out["in_domain"], out["in_domain_mag"] = directional_loss(self.e_yb, e_out, self.e_xas, e_in)
            if self.active("spn"):
                out["spn"] = spn_structure_loss(x0_b, x_in, region)
            if self.needs_style_branch:
                if x0_style is None:
                    raise ValueError("the osasis loss set needs the style branch's x0-prediction")
                e_s = self.embedder(x0_style)
                out["recon_embed"] = (1.0 - F.cosine_similarity(e_s, self.e_yb.expand_as(e_s), dim=-1)).mean()
                out["recon_l1"] = (x0_style - self.y_b).abs().mean()
                if self.perceptual is not None:  # OSASIS: LPIPS (VGG16) of the style branch against y_B
                    out["recon_lpips"] = self.perceptual(x0_style, self.y_b).mean()
                else:
                    out["recon_msssim"] = 1.0 - ms_ssim((x0_style + 1) / 2,
                                                        (self.y_b.expand_as(x0_style) + 1) / 2).mean()
        return out

    def total(self, terms: Dict[str, torch.Tensor], exclude=()) -> torch.Tensor:
        """``sum_k w_k * term_k`` over the terms present (but those named in ``exclude``)."""
        tot = None
        for k, v in terms.items():
            w = self.weights.get(k, 0.0)
            if w == 0.0 or k in exclude:
                continue
            tot = w * v if tot is None else tot + w * v
        if tot is None:
            raise StylsegError("every style-loss weight is 0: nothing to train (check stylize.w_* in the config)")
        return tot
