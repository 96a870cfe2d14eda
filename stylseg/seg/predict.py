"""Prediction: probability maps of a trained segmenter as 8-bit PNGs at each image's original size."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.io import write_image
from ..utils import StylsegError, resolve_device, set_threads
from .models import load_segmenter


@torch.no_grad()
def predict_folder(model_dir: os.PathLike, input_dir: os.PathLike, out_dir: os.PathLike, device: str = "auto",
                   batch_size: int = 16, progress: bool = True) -> Path:
    """Write ``out_dir/<stem>.png``: ``round(255 * sigmoid(logits))`` for every image of ``input_dir``
    (a paired folder with ``images/``, or a plain folder of images), resized back (bilinear)
    to the image's original ``(H, W)``. The model sees the image resized to its training size,
    ImageNet-normalised. Returns ``out_dir``."""
    from tqdm.auto import tqdm

    from ..data import PairedDataset

    dev = resolve_device(device)
    if dev.type == "cpu":
        set_threads()
    model = load_segmenter(model_dir, device=dev)
    size = int(getattr(model, "image_size", None) or 0)
    if not size:
        raise StylsegError(f"{model_dir}/config.json: no image_size; retrain with `stylseg seg train`")
    ds = PairedDataset(input_dir, size, mode="seg", require_masks=False, augment=False, use="images")  # masks unread
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    for i in tqdm(range(0, len(ds), batch_size), desc="predict", disable=not progress, leave=False):
        items = [ds[j] for j in range(i, min(i + batch_size, len(ds)))]
        x = torch.stack([it["image"] for it in items]).to(dev)
        with autocast:
            logits = model(x)
        prob = torch.sigmoid(logits.float())
        for it, p in zip(items, prob):
            h, w = it["orig_size"]
            p = F.interpolate(p[None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
            arr = np.clip(np.round(p.cpu().numpy() * 255.0), 0, 255).astype(np.uint8)
            write_image(out / f"{it['name']}.png", arr)
    return out
