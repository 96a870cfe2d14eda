"""The Diffusion Autoencoder (DiffAE, Preechakul et al. CVPR 2022; docs/method.md section 2).

:class:`DiffAE` = a DDIM schedule plus one network family, picked from :data:`ARCHS` by ``config["arch"]``
(composition, as segmentation-models-pytorch maps names to architectures): the kit's own nets
(:mod:`.nets`, a config without ``arch``; ``stylseg diffae train``) or the published DiffAE family
(:mod:`.beatgans`, ``arch = "beatgans"``; ``stylseg diffae import``). Either family gives a semantic encoder
``Enc_phi`` (``model.encoder``) and a conditional UNet ``eps_theta(x_t, t, z_sem[, z_coarse])`` (``model.unet``).
The model gives ``encode``, ``encode_stochastic`` (DDIM inversion to t0) and ``render`` (DDIM generation from t0),
and a Gaussian fitted to the training set's ``z_sem`` so that ``sample`` can draw new images (DiffAE proper trains
a latent DDIM for that; a Gaussian is the kit's lightweight stand-in).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch
import torch.nn as nn

from ..utils import StylsegError, load_model_folder, save_model_folder
from . import beatgans, nets
from .ddim import SCHEDULE_KEYS, DDIMSchedule, ddim_timesteps, encode_stochastic, render

KIND = "diffae"
#: the network families, by ``config["arch"]`` (None: the kit's own); each module gives ``check_config(config)``
#: (the checked architecture + schedule dict) and ``build(cfg, schedule)`` (``(encoder, unet)``)
ARCHS = {None: nets, beatgans.ARCH: beatgans}

def randn(shape, generator: Optional[torch.Generator] = None, device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device (CPU by default) and moved to ``device``,
    so that a seeded CPU generator gives the same noise whatever the model's device."""
    gdev = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(tuple(shape), generator=generator, device=gdev, dtype=torch.float32).to(device=device,
                                                                                               dtype=dtype)


class DiffAE(nn.Module):
    """Diffusion Autoencoder: semantic encoder + conditional DDIM decoder + DDIM schedule.

    ``model(x_t, t, z)`` calls the UNet, so ``ddim_sample(model, x, grid, cond=z)`` works.
    ``model.config`` is a plain dict (architecture + schedule), ``model.schedule`` a
    :class:`~stylseg.diffusion.ddim.DDIMSchedule`.
    """

    def __init__(self, config: Mapping[str, Any]):
        super().__init__()
        family = ARCHS.get(config.get("arch"))
        if family is None:
            raise StylsegError(f"DiffAE architecture {config.get('arch')!r} is unknown to this version of the kit "
                               f"(known: the kit's own, {', '.join(a for a in ARCHS if a)}); update stylseg or "
                               f"re-create the folder")
        cfg = family.check_config(config)
        self.config: Dict[str, Any] = cfg
        self.schedule = DDIMSchedule(T=int(cfg["T"]), beta_start=float(cfg["beta_start"]),
                                     beta_end=float(cfg["beta_end"]))
        self.encoder, self.unet = family.build(cfg, self.schedule)
        zd = int(cfg["z_dim"])
        # Gaussian fitted to the training set's z_sem (see fit_latent_gaussian); identity until fitted
        self.register_buffer("z_mean", torch.zeros(zd))
        self.register_buffer("z_chol", torch.eye(zd))

    # ------------------------------------------------------------------ construction / IO
    @classmethod
    def from_config(cls, diffae_cfg, ddim_cfg=None) -> "DiffAE":
        """From a :class:`~stylseg.config.DiffAEConfig` and :class:`~stylseg.config.DDIMConfig`."""
        from ..config import DDIMConfig

        ddim_cfg = ddim_cfg or DDIMConfig()
        d = {k: getattr(diffae_cfg, k) for k in nets.ARCH_KEYS}
        d.update({k: getattr(ddim_cfg, k) for k in SCHEDULE_KEYS})
        return cls(d)

    def save_pretrained(self, path: os.PathLike, extra: Optional[Mapping[str, Any]] = None) -> Path:
        """Write a model folder (``config.json`` with kind "diffae" + ``model.safetensors``)."""
        return save_model_folder(path, KIND, self.config, self.state_dict(), extra=extra)

    @classmethod
    def from_pretrained(cls, path: os.PathLike, map_location: str = "cpu") -> "DiffAE":
        """Load a folder written by :meth:`save_pretrained` (``stylseg diffae train``), or by
        ``stylseg diffae import`` (the published DiffAE family, ``arch = "beatgans"``).

        Raises :class:`~stylseg.utils.StylsegError` naming the file when the folder is missing,
        holds another kind of model or another architecture, or its weights do not fit."""
        meta, state, sha = load_model_folder(path, KIND, map_location=map_location, checksum=True)
        cfg_path = Path(path) / "config.json"
        arch = meta.get("config", {}).get("arch")
        if arch not in ARCHS:
            raise StylsegError(f"{cfg_path}: DiffAE architecture {arch!r} is unknown to this version of the kit "
                               f"(known: the kit's own, {', '.join(a for a in ARCHS if a)}); update stylseg or "
                               f"re-create the folder")
        try:
            model = cls(meta["config"])
        except (StylsegError, KeyError, TypeError, ValueError) as e:
            raise StylsegError(f"{cfg_path}: not a DiffAE configuration this version can build ({e}); "
                               f"retrain with `stylseg diffae train`") from None
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).splitlines()[0]
            raise StylsegError(f"{Path(path) / 'model.safetensors'}: weights do not match {cfg_path} ({first}); "
                               f"the folder is inconsistent, retrain or re-copy it") from None
        #: the folder's checksum (:func:`~stylseg.utils.model_folder_sha256`), from the bytes just read
        model.sha256 = sha
        return model.to(map_location).eval()

    def num_parameters(self) -> Dict[str, int]:
        enc = sum(p.numel() for p in self.encoder.parameters())
        unet = sum(p.numel() for p in self.unet.parameters())
        return {"encoder": enc, "unet": unet, "total": enc + unet}

    # ------------------------------------------------------------------ the DiffAE API
    def forward(self, x_t: torch.Tensor, t: torch.Tensor, z: torch.Tensor,
                z_coarse: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``eps_theta(x_t, t, z_sem)`` = ``self.unet(...)``: (B,3,H,W), (B,) long, (B,z_dim) -> (B,3,H,W)."""
        return self.unet(x_t, t, z, z_coarse)

    @property
    def arch(self) -> Optional[str]:
        """The network family (``config["arch"]``): None for the kit's own, ``"beatgans"`` for the published one."""
        return self.config.get("arch")

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _check_input(self, x: torch.Tensor) -> None:
        s = self.config["image_size"]
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-1] != s or x.shape[-2] != s:
            raise StylsegError(f"DiffAE expects images (B,3,{s},{s}) in [-1,1], got {tuple(x.shape)}; "
                               f"resize the images to the model's image_size={s}")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``z_sem = Enc_phi(x)``: x (B,3,S,S) in [-1,1] -> (B, z_dim)."""
        self._check_input(x)
        return self.encoder(x)

    def grid(self, t0: float, steps: int) -> List[int]:
        """The DDIM grid over depth ``t0`` (fraction of T) with ``steps`` UNet calls."""
        return ddim_timesteps(t0, steps, self.schedule.T)

    def encode_stochastic(self, x: torch.Tensor, z: torch.Tensor, t0: float, steps: int, callback=None,
                          z_coarse: Optional[torch.Tensor] = None) -> torch.Tensor:
        """DiffAE's deterministic encoding: DDIM-invert x (B,3,S,S) in [-1,1] with z (B,z_dim) over
        ``ddim_timesteps(t0, steps, T)`` to x_{t0} (B,3,S,S) (about unit variance at t0 = 1)
        (:func:`~stylseg.diffusion.ddim.encode_stochastic` with this model's UNet)."""
        self._check_input(x)
        return encode_stochastic(self.unet, x, z, t0, steps, self.schedule, callback=callback, z_coarse=z_coarse)

    def render(self, x_t0: torch.Tensor, z: torch.Tensor, t0: float, steps: int, callback=None, eta: float = 0.0,
               generator: Optional[torch.Generator] = None, z_coarse: Optional[torch.Tensor] = None) -> torch.Tensor:
        """DDIM generation (paper eq. 4/9) from x_{t0} (B,3,S,S) conditioned on z (B,z_dim) over
        the same grid as :meth:`encode_stochastic`; returns x0 (B,3,S,S) in [-1,1]
        (:func:`~stylseg.diffusion.ddim.render` with this model's UNet)."""
        self._check_input(x_t0)
        return render(self.unet, x_t0, z, t0, steps, self.schedule, callback=callback, eta=eta, generator=generator,
                      z_coarse=z_coarse)

    def noise_to(self, x: torch.Tensor, t0: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Forward-noise x (B,3,S,S) to the top of the grid ``t_n = round(t0 (T-1))`` with fresh noise."""
        t = self.grid(t0, 1)[-1]
        noise = randn(x.shape, generator, x.device, x.dtype)
        return self.schedule.add_noise(x, noise, torch.full((x.shape[0],), t, device=x.device))

    @torch.no_grad()
    def sdedit(self, x: torch.Tensor, t0: float, steps: int, generator: Optional[torch.Generator] = None,
               z: Optional[torch.Tensor] = None) -> torch.Tensor:
        """SDEdit reconstruction: noise x (B,3,S,S) to t0 with fresh Gaussian noise, render it with
        its own ``z_sem`` (or ``z``). Returns (B,3,S,S) in [-1,1]."""
        z = self.encode(x) if z is None else z
        return self.render(self.noise_to(x, t0, generator), z, t0, steps)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, t0: float, invert_steps: int, gen_steps: Optional[int] = None
                    ) -> torch.Tensor:
        """Deterministic round trip: encode z, invert to t0, render back (the stylization's ``recon`` arm).

        With ``gen_steps`` != ``invert_steps`` the generation runs its own grid from the same t0."""
        z = self.encode(x)
        xt = self.encode_stochastic(x, z, t0, invert_steps)
        return self.render(xt, z, t0, gen_steps or invert_steps)

    # ------------------------------------------------------------------ sampling new images
    @torch.no_grad()
    def fit_latent_gaussian(self, z: torch.Tensor, shrink: float = 0.1) -> None:
        """Fit ``N(mean, Sigma)`` to training codes z (N, z_dim); Sigma shrunk towards its diagonal
        by ``shrink`` (few images, many dimensions). Stored as buffers, saved with the model."""
        z = z.detach().double()
        mean = z.mean(0)
        zc = z - mean
        cov = zc.T @ zc / max(z.shape[0] - 1, 1)
        cov = (1 - shrink) * cov + shrink * torch.diag(torch.diag(cov))
        cov = cov + 1e-6 * torch.eye(cov.shape[0], dtype=cov.dtype) * max(float(torch.diag(cov).mean()), 1e-6)
        self.z_mean.copy_(mean.to(self.z_mean))
        self.z_chol.copy_(torch.linalg.cholesky(cov).to(self.z_chol))

    def sample_z(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n codes (n, z_dim) from the fitted Gaussian."""
        e = randn((n, self.z_mean.shape[0]), generator, self.z_mean.device)
        return self.z_mean + e @ self.z_chol.T

    @torch.no_grad()
    def sample(self, n: int, steps: int = 20, generator: Optional[torch.Generator] = None,
               z: Optional[torch.Tensor] = None, eta: float = 0.0) -> torch.Tensor:
        """New images (n,3,S,S) in [-1,1]: x_T ~ N(0, I) at full depth, z from the fitted Gaussian
        (or given), ``steps`` DDIM calls."""
        s = self.config["image_size"]
        dev = self.z_mean.device
        if z is None:
            z = self.sample_z(n, generator)
        x = randn((n, 3, s, s), generator, dev)
        return self.render(x, z.to(dev), 1.0, steps, eta=eta, generator=generator)
