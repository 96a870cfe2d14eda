"""The style pair of a one-shot fine-tuning (docs/method.md section 7): ``y_B``, the style image at the DiffAE size,
and ``x_A_style``, the style image as domain A would show it (the best of several D_A renders of it). The style
direction of the CLIP loss is ``E(y_B) - E(x_A_style)``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from ..data.io import from_tensor_pm1, read_image, resize_image, to_tensor_pm1, write_image
from ..data.tensors import load_image_pm1
from ..utils import StylsegError, check_choice, write_json
from .losses import ms_ssim
from .stylizer import STYLE_PAIR_JSON, STYLE_XA, STYLE_Y, diffae_size

#: how x_A_style is picked among the D_A renders of the style image (stylize.style_pair_pick)
STYLE_PAIR_PICKS = ("fidelity", "domain")


@torch.no_grad()
def make_style_pair(diffae, style: Union[os.PathLike, np.ndarray], t0: float, steps: int, tries: int = 4,
                    seed: int = 0, pick: str = "fidelity", embedder=None, content_mean: Optional[torch.Tensor] = None):
    """``(y_B, x_A_style, scores)``: the style image (1,3,S,S) in [-1,1] at the DiffAE size and
    the best of ``tries`` D_A SDEdit renders of it (noise ``y_B`` to ``t0``, denoise with D_A
    conditioned on ``Enc(y_B)``, ``steps`` UNet calls). ``scores`` (tries,), lowest picked:

    - ``pick="fidelity"`` (OSASIS): ``10 L1 + (1 - MS-SSIM)`` against the style image (OSASIS uses
      ``10 L1 + LPIPS``; LPIPS weights are not at hand offline);
    - ``pick="domain"``: the distance of the render's ``embedder`` embedding to ``content_mean``, the mean
      embedding of the domain-A content images. ``x_A_style`` stands for the style image as domain A would
      show it, and the style direction ``E(y_B) - E(x_A_style)`` is only as long and as clean as the render is
      typical of domain A. Fidelity works against that: on the synthetic polyp domains the render nearest the style
      image is the one least like domain A (docs/results.md), and the fine-tuning's style depended on which
      render the seed drew. It needs only the source images and the one style image.

    ``style``: the style image's file, or the image already decoded (H,W,3) uint8. A style image of any size,
    aspect or mode (grayscale, RGBA, palette, 16-bit) is converted to RGB and resized to a square, as the paper
    resizes every image."""
    check_choice(pick, STYLE_PAIR_PICKS, "style pair pick", "stylize.style_pair_pick")  # before the renders
    if pick == "domain" and (embedder is None or content_mean is None):
        raise StylsegError("style_pair_pick=domain needs the style embedder and the content images' mean "
                           "embedding (finetune passes both)")
    dev = next(diffae.parameters()).device
    img = style if isinstance(style, np.ndarray) else read_image(style)
    y = to_tensor_pm1(resize_image(img, diffae_size(diffae))).unsqueeze(0).to(dev)
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    ys = y.expand(tries, -1, -1, -1)
    noise = torch.randn(ys.shape, generator=g).to(dev)
    xt = diffae.schedule.add_noise(ys, noise, torch.full((tries,), diffae.grid(t0, 1)[-1], device=dev))
    renders = diffae.render(xt, diffae.encode(y).expand(tries, -1), t0, steps)
    if pick == "fidelity":
        err = 10 * (renders - ys).abs().mean(dim=(1, 2, 3)) + (1 - ms_ssim((renders + 1) / 2, (ys + 1) / 2))
    else:
        err = (embedder(renders) - content_mean.to(renders.device)).norm(dim=-1)
    best = int(torch.argmin(err))
    return y, renders[best:best + 1], err.cpu()


def content_mean_embedding(embedder, content: torch.Tensor, device="cpu", batch: int = 32) -> torch.Tensor:
    """The mean embedding (D,) of the content images (N,3,S,S) in [-1,1], in batches on ``device``."""
    dev = torch.device(device)
    with torch.no_grad():
        total = sum(embedder(content[i:i + batch].to(dev)).sum(0) for i in range(0, len(content), batch))
    return total / len(content)


#: what style_pair.json names as each pick's criterion
_PICK_CRITERION = {"fidelity": "10*L1 + (1 - MS-SSIM)",
                   "domain": "distance to the content images' mean in the style embedder's space"}


def style_pair(diffae, style_path, out_dir: Path, cfg, device, embedder=None, content=None, par=None,
               style_image: Optional[np.ndarray] = None):
    """``(y_B, x_A_style)`` (1,3,S,S) in [-1,1] of the fine-tuning in ``out_dir``, read from its PNGs: the main
    process makes them once (:func:`make_style_pair`, recorded in ``style_pair.json``), and every process and every
    resumed run reads the same files, so that all see exactly the same pair. ``content`` (N,3,S,S): the content
    images, whose mean embedding the ``domain`` pick needs (computed only when the pair is made); ``style_image``:
    the style image already decoded (H,W,3) uint8 (else it is read from ``style_path``)."""
    py, px = out_dir / STYLE_Y, out_dir / STYLE_XA
    if (par is None or par.main) and not (py.is_file() and px.is_file()):
        t0 = cfg.stylize.style_pair_t0 or cfg.ddim.t0  # both range-checked with the config (config.RANGES)
        pick = cfg.stylize.style_pair_pick
        content_mean = (content_mean_embedding(embedder, content, device)
                        if pick == "domain" and embedder is not None and content is not None else None)
        y, xa, err = make_style_pair(diffae, style_path if style_image is None else style_image, t0, cfg.ddim.apply_gen_steps,
                                     cfg.stylize.style_pair_tries, seed=cfg.seed, pick=pick, embedder=embedder,
                                     content_mean=content_mean)
        write_image(py, from_tensor_pm1(y[0]))
        write_image(px, from_tensor_pm1(xa[0]))
        write_json(out_dir / STYLE_PAIR_JSON, {"errors": err.tolist(), "best": int(torch.argmin(err)), "t0": t0,
                                                 "pick": pick, "criterion": _PICK_CRITERION[pick],
                                                 "style": str(style_path)})
    if par is not None:
        par.wait()
    s = diffae_size(diffae)
    return load_image_pm1(py, s).unsqueeze(0).to(device), load_image_pm1(px, s).unsqueeze(0).to(device)
