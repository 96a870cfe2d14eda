"""Diffusion core: DDIM sampling and inversion, the Diffusion Autoencoder and its training.

::

    from stylseg.diffusion import (DDIMSchedule, ddim_timesteps, ddim_step, predict_x0, ddim_sample,
                                   ddim_invert, DiffAE, train_diffae)
    for out in ddim_steps(model, x, grid, cond=z):       # the one DDIM loop, a step at a time
        ...                                              # out.step (i, t, a_t, a_next), out.x_t, out.x0, out.x_next
    model = DiffAE.from_config(cfg.diffae, cfg.ddim)
    z = model.encode(x)                                  # (B,3,S,S) in [-1,1] -> (B, z_dim)
    x_t0 = model.encode_stochastic(x, z, t0, steps)      # DDIM inversion to t0 (fraction of T)
    x0 = model.render(x_t0, z, t0, steps)                # DDIM generation back to x0
    import_checkpoint("last.ckpt", "DIR")                # the published DiffAE (arch "beatgans", same interface)

Heavy modules (the model, training) load lazily.
"""

from __future__ import annotations

from .._lazy import lazy_exports

from .ddim import (DDIMOut, DDIMSchedule, DDIMStep, ddim_invert, ddim_run, ddim_sample, ddim_step, ddim_steps,
                   ddim_timesteps, ddim_walk, encode_stochastic, predict_x0, render, with_coarse)

_LAZY = {
    "DiffAE": "model", "ConditionalUNet": "nets", "SemanticEncoder": "nets", "CondResBlock": "nets",
    "import_checkpoint": "pretrained",
    "train_diffae": "train", "training_status": "train",
    "psnr": "quality", "ssim": "quality", "sdedit_psnr": "quality", "code_matters": "quality", "eps_mse": "quality",
}

__all__ = ["DDIMSchedule", "ddim_timesteps", "ddim_step", "predict_x0", "ddim_walk", "ddim_steps", "ddim_run",
           "ddim_sample", "ddim_invert", "DDIMStep", "DDIMOut", "encode_stochastic", "render",
           "with_coarse"] + sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
