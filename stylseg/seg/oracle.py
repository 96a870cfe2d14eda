"""The oracle segmenter of the stylization scores (:mod:`stylseg.stylize.scores`): a small U-Net trained on labelled
images of BOTH domains, with photometric jitter, so that its Dice on a stylized image against the input's mask says
whether the lesion survived the stylization (``oracle_dice_ratio``: its Dice on the outputs / on the inputs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from ..data.dataset import IMAGENET_MEAN, IMAGENET_STD
from ..data.io import read_image, read_mask, resize_image, resize_mask
from ..utils import StylsegError, load_model_folder, save_model_folder

ORACLE_KIND = "oracle-segmenter"


def _make_oracle_net():
    import segmentation_models_pytorch as smp

    return smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(64, 32, 16), classes=1)


_IMNET_MEAN = np.array(IMAGENET_MEAN, dtype=np.float32)
_IMNET_STD = np.array(IMAGENET_STD, dtype=np.float32)


def _seg_tensor(imgs: Sequence[np.ndarray]):
    import torch

    x = (np.stack(imgs).astype(np.float32) / 255.0 - _IMNET_MEAN) / _IMNET_STD
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


def _paired(folder: os.PathLike) -> List[Tuple[Path, Path]]:
    from ..data.validate import validate_paired

    return validate_paired(folder, use="train")  # the oracle trains on them: the shared rules


#: the oracle's photometric augmentation (part of its cache key): it must judge where the lesion is, not its colours
ORACLE_AUGMENT = "photometric-v1: per-image channel gain 0.6-1.4, brightness +-0.25, contrast 0.5-1.5, gamma 0.6-1.6, " \
                 "grey mix 0-0.7, box blur 0-2 px, noise sd 0-0.06"


def photometric_jitter(x, g):
    """Random per-image colour, brightness, contrast, gamma, desaturation, blur and noise (ORACLE_AUGMENT)
    of an ImageNet-normalised batch (B,3,H,W); returns the same normalisation. Geometry is untouched."""
    import torch
    import torch.nn.functional as F

    mean = torch.tensor(_IMNET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(_IMNET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    u = (x * std + mean).clamp(0, 1)
    b = x.shape[0]

    def r(lo, hi, *shape):
        return (lo + (hi - lo) * torch.rand((b, *shape), generator=g)).to(x)

    u = u * r(0.6, 1.4, 3, 1, 1)
    m = u.mean(dim=(1, 2, 3), keepdim=True)
    u = (u - m) * r(0.5, 1.5, 1, 1, 1) + m + r(-0.25, 0.25, 1, 1, 1)
    u = u.clamp(0, 1) ** r(0.6, 1.6, 1, 1, 1)
    grey = u.mean(1, keepdim=True)
    w = r(0.0, 0.7, 1, 1, 1)
    u = (1 - w) * u + w * grey
    k = int(torch.randint(0, 3, (1,), generator=g))
    if k:
        u = F.avg_pool2d(F.pad(u, (k, k, k, k), mode="replicate"), 2 * k + 1, stride=1)
    u = u + r(0.0, 0.06, 1, 1, 1) * torch.randn(u.shape, generator=g).to(x)
    return (u.clamp(0, 1) - mean) / std


def train_oracle(train_dirs: Sequence[os.PathLike], out_dir: os.PathLike, size: int, *, epochs: int = 30,
                 batch_size: int = 16, lr: float = 2e-3, seed: int = 0, device="auto", progress: bool = True) -> Path:
    """Train (or reuse) the oracle segmenter on the labelled paired folders ``train_dirs`` (images of
    BOTH domains) at ``size`` px: a U-Net (ResNet-18 encoder, depth 3, random init), BCE + Dice,
    flips and photometric jitter (``ORACLE_AUGMENT``: it judges where the lesion is, so a colour
    change alone must not move its Dice). Cached as a model folder (kind ``oracle-segmenter``) in
    ``out_dir``: a folder trained on the same files with the same settings is reused."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from ..utils import resolve_device, seed_everything

    pairs = [pm for d in train_dirs for pm in _paired(d)]
    settings = {"files": sorted(f"{Path(p).parent.parent.name}/{Path(p).parent.name}/{Path(p).name}" for p, _ in pairs),
                "size": size, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
                "arch": "smp.Unet resnet18 depth3 (64,32,16)", "augment": ORACLE_AUGMENT}
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        try:
            meta, _ = load_model_folder(out_dir, ORACLE_KIND)
            if meta.get("config") == settings:
                return out_dir
        except StylsegError:
            pass
    seed_everything(seed)
    dev = resolve_device(device)
    imgs = [resize_image(read_image(p), size) for p, _ in pairs]
    masks = [resize_mask(read_mask(m), size) for _, m in pairs]
    x = _seg_tensor(imgs)
    y = torch.from_numpy(np.stack(masks).astype(np.float32))[:, None]
    net = _make_oracle_net().to(dev).train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    steps = epochs * max(1, (n + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    for ep in tqdm(range(epochs), desc="oracle segmenter", disable=not progress, leave=False):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = x[idx].to(dev), y[idx].to(dev)
            if torch.rand(1, generator=g).item() < 0.5:
                xb, yb = xb.flip(-1), yb.flip(-1)
            if torch.rand(1, generator=g).item() < 0.5:
                xb, yb = xb.flip(-2), yb.flip(-2)
            xb = photometric_jitter(xb, g)
            logit = net(xb)
            p = torch.sigmoid(logit)
            dice = 1 - (2 * (p * yb).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + yb.sum((1, 2, 3)) + 1)
            loss = F.binary_cross_entropy_with_logits(logit, yb) + dice.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    save_model_folder(out_dir, ORACLE_KIND, settings, net.state_dict(),
                      extra={"note": "oracle segmenter for stylization structure scores (trained on both domains)"})
    return out_dir


def load_oracle(path: os.PathLike, device="cpu"):
    meta, state = load_model_folder(path, ORACLE_KIND)
    net = _make_oracle_net()
    net.load_state_dict(state)
    return net.to(device).eval(), int(meta["config"]["size"])


def oracle_dice(oracle, imgs: Sequence[np.ndarray], masks: Sequence[np.ndarray], batch: int = 32) -> np.ndarray:
    """Per-image Dice (threshold 0.5) of the oracle's predictions against ``masks``; NaN for an
    image whose mask and prediction are both empty."""
    import torch

    net, size = oracle
    dev = next(net.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(imgs), batch):
            x = _seg_tensor([resize_image(im, size) for im in imgs[i:i + batch]]).to(dev)
            pred = (torch.sigmoid(net(x)) > 0.5).cpu().numpy()[:, 0]
            for k, pm in enumerate(pred):
                m = resize_mask(masks[i + k], size)
                s = pm.sum() + m.sum()
                out.append(float("nan") if s == 0 else 2.0 * (pm & m).sum() / s)
    return np.array(out)


# --------------------------------------------------------------------------- the score
