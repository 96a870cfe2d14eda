"""Figures and example inputs for the diffusion notebooks (01, 02): small, reusable, no state.

- :func:`example_images`: n images (n,3,S,S) in [-1,1] from a run folder's source training set,
  or synthetic polyps when the run folder has none yet.
- :func:`show_rows`: a labelled grid of image rows (each (N,3,H,W) in [-1,1]) as a matplotlib figure.
- :func:`plot_schedule`: a_t, sqrt(a_t), sqrt(1-a_t) and the SNR of a :class:`DDIMSchedule`.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import torch


def example_images(run_dir: Optional[os.PathLike], size: int, n: int = 1, seed: int = 0, offset: int = 0,
                   which: str = "source"):
    """``(images (n,3,size,size) in [-1,1], where)``: the first n of ``RUN/data/<which>/train``
    (``which`` in {source, target}) when it exists (from notebook 00), else synthetic polyps of the
    default source or target domain (``stylseg.data.synth.make_sample``)."""
    from ..data.io import list_images, read_image, resize_image, to_tensor_pm1

    if run_dir is not None:
        from ..layout import RunLayout

        folder = RunLayout(run_dir).domain(which, "train") / "images"
        if folder.is_dir():
            files = list_images(folder)[offset:offset + n]
            if len(files) == n:
                imgs = [to_tensor_pm1(np.array(resize_image(read_image(f), size))) for f in files]
                return torch.stack(imgs), str(folder)
    from ..data.synth import default_domains, make_sample

    dom = default_domains("polyp")[0 if which == "source" else 1]
    imgs = [to_tensor_pm1(make_sample("polyp", domain=dom, seed=seed, index=offset + i, size=max(size, 64))[0])
            for i in range(n)]
    x = torch.stack(imgs)
    if x.shape[-1] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                            align_corners=False).clamp(-1, 1)
    return x, f"synthetic polyps, domain {dom!r} (run notebooks/00_setup_and_data.ipynb for the run's own images)"


def show_rows(rows: Sequence[torch.Tensor], row_labels: Sequence[str] = (), col_labels: Sequence[str] = (),
              title: str = "", scale: float = 1.6):
    """A figure with one row per tensor (N,3,H,W) in [-1,1] (values outside are clipped)."""
    import matplotlib.pyplot as plt

    from ..data.io import from_tensor_pm1

    rows = [r.detach().float().cpu() for r in rows]
    nr, nc = len(rows), max(r.shape[0] for r in rows)
    fig, axes = plt.subplots(nr, nc, figsize=(scale * nc, scale * nr + (0.4 if title else 0)), squeeze=False)
    for i, r in enumerate(rows):
        imgs = from_tensor_pm1(r)
        for j in range(nc):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if j < len(imgs):
                ax.imshow(imgs[j], interpolation="nearest")
            if j == 0 and i < len(row_labels):
                ax.set_ylabel(row_labels[i], fontsize=9)
            if i == 0 and j < len(col_labels):
                ax.set_title(col_labels[j], fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_schedule(schedule, marks: Sequence[int] = ()):
    """Two panels: sqrt(a_t) (signal), sqrt(1-a_t) (noise) and a_t against t; log SNR against t."""
    import matplotlib.pyplot as plt

    a = schedule.alphas_cumprod.numpy()
    t = np.arange(len(a))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
    ax1.plot(t, a, label=r"$\bar\alpha_t$")
    ax1.plot(t, np.sqrt(a), label=r"$\sqrt{\bar\alpha_t}$ (signal)")
    ax1.plot(t, np.sqrt(1 - a), label=r"$\sqrt{1-\bar\alpha_t}$ (noise)")
    ax2.semilogy(t, a / (1 - a))
    for m in marks:
        for ax in (ax1, ax2):
            ax.axvline(m, color="grey", lw=0.6, ls="--")
    ax1.set_xlabel("t")
    ax1.legend()
    ax2.set_xlabel("t")
    ax2.set_ylabel(r"SNR $=\bar\alpha_t/(1-\bar\alpha_t)$")
    ax1.set_title("linear beta schedule, T = %d" % len(a))
    ax2.set_title("signal-to-noise ratio")
    fig.tight_layout()
    return fig
