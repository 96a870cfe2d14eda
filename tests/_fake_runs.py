"""Hand-made segmentation runs for the report and spread tests (no training)."""

import numpy as np

from stylseg.data.io import write_image, write_mask
from stylseg.metrics import PROTOCOLS, evaluate_folder
from stylseg.utils import write_json


def fake_seg_runs(lay, arms_quality, seeds=(0, 1), n=3, size=16):
    """Write a ``n``-image target test set and, per (arm, seed), predictions ``quality * mask + (1 - quality) *
    noise`` with their ``metrics.json`` under ``lay.seg("unet", arm, seed)``. Returns the test masks."""
    test = lay.domain("target", "test")
    rng = np.random.default_rng(0)
    masks = []
    for i in range(n):
        m = np.zeros((size, size), bool)
        m[3 + i:10 + i, 4:12] = True
        masks.append(m)
        write_image(test / "images" / f"{i}.png", rng.integers(0, 255, (size, size, 3)).astype(np.uint8))
        write_mask(test / "masks" / f"{i}.png", m)
    for arm, quality in arms_quality.items():
        for seed in seeds:
            run = lay.seg("unet", arm, seed)
            pred_dir = run / "predictions" / "target"
            for i, m in enumerate(masks):
                noise = np.random.default_rng(seed * 10 + i).random((size, size))
                p = np.clip(quality * m + (1 - quality) * noise, 0, 1)
                write_image(pred_dir / f"{i}.png", (p * 255).round().astype(np.uint8))
            res = {"arch": "unet", "arm": arm, "seed": seed, "train_dir": "x",
                   "tests": {"target": {"dir": str(test), **{pr: evaluate_folder(pred_dir, test, pr)
                                                               for pr in PROTOCOLS}}}}
            write_json(run / "metrics.json", res)
    return masks
