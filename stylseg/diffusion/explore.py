"""What ``z_sem`` carries versus ``x_T`` (notebook 02; DiffAE's manipulations, Preechakul et al. sec. 4).

A DiffAE splits an image into a semantic code ``z_sem = Enc(x)`` and a stochastic latent
``x_T = encode_stochastic(x, z_sem, t0=1)`` (deterministic DDIM inversion). Rendering
``(x_T, z_sem)`` reproduces the image; swapping or interpolating the two parts shows which
carries what.
"""

from __future__ import annotations

from typing import Dict, Sequence

import torch


def slerp(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spherical interpolation per sample of noise latents a, b (B,...) (DiffAE interpolates x_T this way)."""
    af, bf = a.flatten(1), b.flatten(1)
    cos = (af * bf).sum(1) / (af.norm(dim=1) * bf.norm(dim=1)).clamp_min(1e-12)
    th = torch.arccos(cos.clamp(-1, 1)).view(-1, *([1] * (a.ndim - 1)))
    s = torch.sin(th).clamp_min(1e-6)
    return torch.sin((1 - alpha) * th) / s * a + torch.sin(alpha * th) / s * b


@torch.no_grad()
def encode_pair(model, x: torch.Tensor, t0: float = 1.0, steps: int = 20):
    """``(z (B,z_dim), x_t0 (B,3,S,S))`` of images x (B,3,S,S) in [-1,1]: code and inverted latent."""
    z = model.encode(x)
    return z, model.encode_stochastic(x, z, t0, steps)


@torch.no_grad()
def swap_codes(model, x_a: torch.Tensor, x_b: torch.Tensor, t0: float = 1.0, steps: int = 20
               ) -> Dict[str, torch.Tensor]:
    """Render the four combinations of (x_T, z_sem) of two images x_a, x_b (1,3,S,S).

    Returns ``{"A": render(xT_a, z_a), "xT A + z B": ..., "xT B + z A": ..., "B": ...}``, each (1,3,S,S)."""
    x = torch.cat([x_a, x_b])
    z, xt = encode_pair(model, x, t0, steps)
    combos = [(0, 0), (0, 1), (1, 0), (1, 1)]
    out = model.render(torch.cat([xt[i:i + 1] for i, _ in combos]), torch.cat([z[j:j + 1] for _, j in combos]),
                       t0, steps)
    names = ["A", "xT A + z B", "xT B + z A", "B"]
    return {n: out[k:k + 1] for k, n in enumerate(names)}


@torch.no_grad()
def interpolate(model, x_a: torch.Tensor, x_b: torch.Tensor, alphas: Sequence[float], t0: float = 1.0,
                steps: int = 20, mode: str = "z") -> torch.Tensor:
    """Renders (len(alphas),3,S,S) between two images (1,3,S,S) each.

    ``mode="z"``: keep x_T of image A and interpolate z_sem linearly from A to B (what the code
    alone changes); ``mode="both"``: DiffAE's interpolation, z_sem linearly and x_T by slerp."""
    if mode not in ("z", "both"):
        raise ValueError(f"mode must be 'z' or 'both', got {mode!r}")
    z, xt = encode_pair(model, torch.cat([x_a, x_b]), t0, steps)
    zs = torch.cat([(1 - a) * z[:1] + a * z[1:] for a in alphas])
    if mode == "z":
        xs = xt[:1].expand(len(alphas), -1, -1, -1).contiguous()
    else:
        xs = torch.cat([slerp(xt[:1], xt[1:], a) for a in alphas])
    return model.render(xs, zs, t0, steps)


@torch.no_grad()
def foreign_inversion(model, x: torch.Tensor, t0: float = 0.5, steps: int = 25, seed: int = 0) -> Dict[str, object]:
    """What a DiffAE trained on another domain (the published FFHQ one, on polyps) does with these images
    at depth ``t0`` (OSASIS inverts at 0.5): x (B,3,S,S) in [-1,1] at the model's size.

    Returns the rows ``x``, ``x_t0`` (the DDIM-inverted latent), ``round_trip`` (rendered back from it with
    the image's own z_sem), ``sdedit`` (noised to t0 with fresh noise, rendered with its own z_sem: what the
    model draws where the latent does not pin the image) and ``shuffled`` (the inverted latent rendered with
    another image's code), each (B,3,S,S); and their mean PSNR (dB) and SSIM to x as ``metrics``."""
    from .quality import psnr, ssim

    z = model.encode(x)
    xt = model.encode_stochastic(x, z, t0, steps)
    rows = {"x": x, "x_t0": xt, "round_trip": model.render(xt, z, t0, steps)}
    g = torch.Generator().manual_seed(seed)
    rows["sdedit"] = model.render(model.noise_to(x, t0, generator=g), z, t0, steps)
    rows["shuffled"] = model.render(xt, z.roll(1, 0), t0, steps) if x.shape[0] > 1 else rows["round_trip"]
    metrics = {k: {"psnr": float(psnr(rows[k], x).mean()), "ssim": float(ssim(rows[k], x).mean())}
               for k in ("round_trip", "sdedit", "shuffled")}
    return {"rows": rows, "metrics": metrics, "t0": t0, "steps": steps}
