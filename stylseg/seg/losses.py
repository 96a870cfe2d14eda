"""PraNet's structure loss and the Dice used for validation (docs/method.md section 5)."""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F


def edge_weight(mask: torch.Tensor) -> torch.Tensor:
    """``w = 1 + 5 |avgpool31(mask) - mask|`` (stride 1, zero padding 15, padding counted):
    pixels near a boundary weigh up to 6. ``mask`` ``(B,1,H,W)`` in {0,1}."""
    # the 31x31 box average, computed separably (31x1 then 1x31, zero padding counted): the same
    # sum / 961 as ``F.avg_pool2d(mask, 31, 1, 15)``, ~15x cheaper
    box = F.avg_pool2d(F.avg_pool2d(mask, (31, 1), 1, (15, 0)), (1, 31), 1, (0, 15))
    return 1 + 5 * torch.abs(box - mask)


def _structure_loss_one(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if logits.shape[-2:] != mask.shape[-2:]:
        logits = F.interpolate(logits, size=mask.shape[-2:], mode="bilinear", align_corners=False)
    logits = logits.float()
    w = edge_weight(mask)
    wbce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
    wbce = (w * wbce).sum(dim=(2, 3)) / w.sum(dim=(2, 3))
    p = torch.sigmoid(logits)
    inter = (p * mask * w).sum(dim=(2, 3))
    union = ((p + mask) * w).sum(dim=(2, 3))
    wiou = 1 - (inter + 1) / (union - inter + 1)
    return (wbce + wiou).mean()


def structure_loss(logits: Union[torch.Tensor, Sequence[torch.Tensor]], mask: torch.Tensor) -> torch.Tensor:
    """PraNet's structure loss: edge-weighted BCE (per pixel, ``reduction='none'``, normalised by
    the weight sum) plus weighted IoU ``1 - (sum(w p m) + 1) / (sum(w (p + m)) - sum(w p m) + 1)``,
    averaged over the batch; a list of side outputs (deep supervision) is summed.

    ``logits``: ``(B,1,H,W)`` or a list of them (resized to the mask when needed);
    ``mask``: ``(B,1,H,W)`` float in {0,1}.
    """
    if isinstance(logits, (list, tuple)):
        return sum(_structure_loss_one(l, mask) for l in logits)
    return _structure_loss_one(logits, mask)


def dice_score(logits: torch.Tensor, mask: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Per-image Dice of ``sigmoid(logits) >= threshold`` against ``mask``, ``(B,)``; an empty
    prediction of an empty mask scores 1."""
    pred = (torch.sigmoid(logits.float()) >= threshold).float()
    inter = (pred * mask).sum(dim=(1, 2, 3))
    denom = pred.sum(dim=(1, 2, 3)) + mask.sum(dim=(1, 2, 3))
    return torch.where(denom > 0, 2 * inter / denom.clamp_min(1e-9), torch.ones_like(denom))
