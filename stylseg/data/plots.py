"""Figures of the data layer (notebook 00): synthetic domains side by side, paired folders
with their masks, and colour statistics of two domains."""

from __future__ import annotations

import os
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from .io import read_image, read_mask, resize_image, resize_mask


def plot_domains(kind: str = "polyp", seed: int = 0, n: int = 5, size: int = 128, domains: Optional[Sequence[str]] = None):
    """Scenes ``0..n-1`` of ``seed`` rendered in every domain of ``kind`` (one row per domain),
    with the shared masks in the last row: the lesion is the same, only the look changes."""
    import matplotlib.pyplot as plt

    from .synth import DEFAULT_DOMAINS, domain_names, make_sample

    domains = list(domains or domain_names(kind))
    fig, axes = plt.subplots(len(domains) + 1, n, figsize=(1.9 * n, 1.9 * (len(domains) + 1)), squeeze=False)
    src, tgt = DEFAULT_DOMAINS[kind]
    for j in range(n):
        mask = None
        for i, d in enumerate(domains):
            img, mask = make_sample(kind, d, seed, j, size)
            axes[i, j].imshow(img)
            if j == 0:
                role = " (source)" if d == src else (" (target)" if d == tgt else "")
                axes[i, j].set_ylabel(d + role, fontsize=9)
        axes[-1, j].imshow(mask, cmap="gray")
        if j == 0:
            axes[-1, j].set_ylabel("mask (all domains)", fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"synthetic {kind} domains: same scenes (seed {seed}), different devices", fontsize=10)
    fig.tight_layout()
    return fig


def _overlay(ax, img: np.ndarray, mask: Optional[np.ndarray]) -> None:
    ax.imshow(img)
    if mask is not None and mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors=["#00ff66"], linewidths=1.0)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_pairs(folders: Mapping[str, os.PathLike], n: int = 5, style: Optional[os.PathLike] = None, size: int = 128,
               seed: int = 0):
    """``n`` images of each paired folder (one row per folder, label = key) with the mask
    outlined in green, and the style image at the end of the first row when given."""
    import matplotlib.pyplot as plt

    from .dataset import load_pairs

    cols = n + (1 if style else 0)
    fig, axes = plt.subplots(len(folders), cols, figsize=(1.9 * cols, 2.0 * len(folders)), squeeze=False)
    rng = np.random.default_rng(seed)
    for r, (label, folder) in enumerate(folders.items()):
        pairs = load_pairs(folder)
        pick = sorted(rng.choice(len(pairs), size=min(n, len(pairs)), replace=False))
        for c in range(cols):
            axes[r, c].axis("off")
        for c, i in enumerate(pick):
            ip, mp = pairs[int(i)]
            img, m = read_image(ip), read_mask(mp)
            _overlay(axes[r, c], resize_image(img, size), resize_mask(m, size))
            axes[r, c].axis("on")
            axes[r, c].set_title(ip.stem, fontsize=7)
            if c == 0:
                axes[r, c].set_ylabel(label, fontsize=9)
    if style:
        ax = axes[0, -1]
        ax.axis("on")
        _overlay(ax, resize_image(read_image(style), size), None)
        ax.set_title("style image", fontsize=8, color="#c04000")
    fig.tight_layout()
    return fig


def colour_stats(folder: os.PathLike, n: int = 80, seed: int = 0, thumb: int = 64) -> Dict[str, np.ndarray]:
    """Per-image colour statistics of up to ``n`` images of a paired (or image-only) folder:
    ``lab`` (N,3) mean CIELAB of the non-black pixels, ``rgb_hist`` (3, 32) mean normalised
    histogram of R, G, B, and ``lesion_contrast`` (N,) CIELAB distance between the mean lesion
    and the mean background colour (0 where there is no mask)."""
    from skimage.color import rgb2lab

    from .dataset import load_pairs

    pairs = load_pairs(folder, require_masks=False)
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(pairs), size=min(n, len(pairs)), replace=False))
    labs, hists, contrast = [], [], []
    for i in pick:
        ip, mp = pairs[int(i)]
        img = read_image(ip)
        m = read_mask(mp) if mp is not None else np.zeros(img.shape[:2], bool)
        img, m = resize_image(img, thumb), resize_mask(m, thumb)
        lab = rgb2lab(img)
        keep = lab[..., 0] > 5  # ignore a black frame
        labs.append(lab[keep].mean(axis=0))
        hists.append([np.histogram(img[..., c][keep], bins=32, range=(0, 256), density=True)[0] for c in range(3)])
        if m.any() and (~m & keep).any():
            contrast.append(float(np.linalg.norm(lab[m].mean(axis=0) - lab[~m & keep].mean(axis=0))))
        else:
            contrast.append(0.0)
    return {"lab": np.array(labs), "rgb_hist": np.mean(hists, axis=0), "lesion_contrast": np.array(contrast),
            "n": np.array(len(pick))}


def plot_colour_stats(folders: Mapping[str, os.PathLike], n: int = 80, seed: int = 0):
    """Two domains (or more) compared: mean L* vs a* per image, and R, G, B histograms."""
    import matplotlib.pyplot as plt

    stats = {k: colour_stats(v, n=n, seed=seed) for k, v in folders.items()}
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (label, s) in enumerate(stats.items()):
        axes[0].scatter(s["lab"][:, 1], s["lab"][:, 0], s=10, alpha=0.6, color=colours[k], label=label)
        axes[1].scatter(s["lab"][:, 2], s["lab"][:, 0], s=10, alpha=0.6, color=colours[k], label=label)
    axes[0].set_xlabel("mean a* (green - red)")
    axes[0].set_ylabel("mean L* (lightness)")
    axes[1].set_xlabel("mean b* (blue - yellow)")
    axes[0].legend(fontsize=8)
    for c, name in enumerate("RGB"):
        ax = axes[2] if c < 2 else axes[3]
        for k, (label, s) in enumerate(stats.items()):
            ax.plot(np.arange(32) * 8 + 4, s["rgb_hist"][c], color=colours[k],
                    ls="-" if c != 1 else "--", label=f"{label} {name}")
        ax.set_xlabel("intensity")
    axes[2].set_title("R (solid) and G (dashed) histograms", fontsize=9)
    axes[3].set_title("B histogram", fontsize=9)
    axes[3].legend(fontsize=7)
    fig.tight_layout()
    return fig, stats
