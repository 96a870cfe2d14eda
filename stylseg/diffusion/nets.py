"""The kit's own DiffAE networks (docs/method.md section 2): the family :class:`~.model.DiffAE` builds for a
config without ``arch`` (``stylseg diffae train``; the published family is :mod:`.beatgans`).

- :class:`SemanticEncoder` ``Enc_phi``: x (B,3,H,W) in [-1,1] -> ``z_sem`` (B, z_dim): a
  convolutional down-path of plain residual blocks (channels ``base * enc_channel_mult``),
  global average pooling and a linear map to ``z_dim``.
- :class:`ConditionalUNet` ``eps_theta(x_t, t, z_sem)``: DiffAE's UNet. Every residual block is
  conditioned by adaptive group norm applied in sequence (DiffAE eq. 9 / docs/method.md section 2)::

      h = GN(h);  h = h * (1 + s_t) + b_t;  h = h * (1 + s_z)

  with ``(s_t, b_t) = Linear(SiLU(emb_t))`` and ``s_z = Linear(SiLU(z_sem))``; the convolution
  after it and the UNet's output convolution are zero-initialised, and self-attention
  (diffusers' :class:`~diffusers.models.attention_processor.Attention`, output projection
  zero-initialised) sits at the configured resolutions and in the middle block. The time
  embedding is diffusers' sinusoidal ``get_timestep_embedding`` + ``TimestepEmbedding`` MLP.

Optional "mix" conditioning (OSASIS): ``unet(x_t, t, z, z_coarse=...)`` conditions the middle
block and the coarse half of the decoder levels (the lower-resolution ones) on ``z_coarse``
and every other block on ``z``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils import StylsegError
from .blocks import norm_groups, run_block, timestep_embedding, zero_module
from .ddim import SCHEDULE_KEYS, DDIMSchedule

ARCH_KEYS = ("image_size", "base_channels", "channel_mult", "num_res_blocks", "attn_resolutions",
             "enc_channel_mult", "z_dim", "dropout", "enc_pool", "prediction")
ENC_POOLS = ("mean", "flatten")
PREDICTIONS = ("eps", "v")


class CondResBlock(nn.Module):
    """Residual block with DiffAE's conditioning.

    ``h = conv(SiLU(GN(x)))``; ``h = GN(h)``; ``h = h*(1+s_t)+b_t``; ``h = h*(1+s_z)``;
    ``h = conv_zero(dropout(SiLU(h)))``; returns ``skip(x) + h``. Shapes: x (B,cin,H,W),
    temb (B,temb_dim), z (B,z_dim) -> (B,cout,H,W). Without ``temb_dim`` / ``z_dim`` the block is a
    plain residual block (as used in the semantic encoder).
    """

    def __init__(self, cin: int, cout: int, temb_dim: Optional[int] = None, z_dim: Optional[int] = None,
                 dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(norm_groups(cout), cout)
        self.time_mlp = nn.Sequential(nn.SiLU(), nn.Linear(temb_dim, 2 * cout)) if temb_dim else None
        self.z_mlp = nn.Sequential(nn.SiLU(), nn.Linear(z_dim, cout)) if z_dim else None
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_module(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, temb: Optional[torch.Tensor] = None,
                z: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.time_mlp is not None:
            s_t, b_t = self.time_mlp(temb)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + s_t) + b_t
        if self.z_mlp is not None:
            s_z = self.z_mlp(z)[:, :, None, None]
            h = h * (1 + s_z)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


def _attention(ch: int) -> nn.Module:
    """Single-head spatial self-attention with GroupNorm and a residual connection (diffusers'
    ``Attention`` as its UNet2D middle block builds it), output projection zero-initialised."""
    from diffusers.models.attention_processor import Attention

    attn = Attention(ch, heads=1, dim_head=ch, norm_num_groups=norm_groups(ch), residual_connection=True, bias=True,
                     upcast_softmax=True, _from_deprecated_attn_block=True)
    zero_module(attn.to_out[0])
    return attn


class _Down(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class _Up(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: residual blocks, each optionally followed by attention."""

    def __init__(self):
        super().__init__()
        self.res = nn.ModuleList()
        self.attn = nn.ModuleList()


def _check_arch(cfg: Mapping[str, Any]) -> None:
    size, mult = int(cfg["image_size"]), tuple(cfg["channel_mult"])
    for name, m in (("channel_mult", mult), ("enc_channel_mult", tuple(cfg["enc_channel_mult"]))):
        if len(m) < 1:
            raise StylsegError(f"diffae.{name} must not be empty")
        if size % (2 ** (len(m) - 1)):
            raise StylsegError(f"diffae.image_size={size} is not divisible by 2^{len(m) - 1} "
                               f"(diffae.{name} has {len(m)} levels); pick a size that is a multiple of "
                               f"{2 ** (len(m) - 1)}")


class ConditionalUNet(nn.Module):
    """``eps_theta(x_t, t, z_sem)``: x_t (B,3,H,W), t (B,) long in [0,T), z (B,z_dim) -> eps (B,3,H,W).

    Channels ``base_channels * channel_mult[l]`` at level l (resolution ``image_size / 2^l``),
    ``num_res_blocks`` conditioned blocks per level on the way down and one more on the way up,
    attention where the resolution is in ``attn_resolutions``, a middle block res-attn-res,
    zero-initialised output convolution (an untrained model predicts eps = 0).

    ``prediction="v"``: the network's output is read as ``v = sqrt(a_t) eps - sqrt(1-a_t) x0``
    (Salimans & Ho 2022) and converted, so the module still returns eps and every sampler and
    copy (D_B) works unchanged. At high noise v is about ``-x0``: the network must then say what
    the image is, which only ``z_sem`` tells it, so small models trained for minutes learn a code
    that matters (see docs/diffusion.md). An untrained v-model predicts ``eps = sqrt(1-a_t) x_t``.
    """

    #: recompute each block's activations in the backward pass (:func:`run_block`); the ``grad_checkpoint`` setting
    grad_checkpoint: bool = False

    def __init__(self, image_size: int, base_channels: int, channel_mult: Sequence[int], num_res_blocks: int,
                 attn_resolutions: Sequence[int], z_dim: int, dropout: float = 0.0, in_channels: int = 3,
                 prediction: str = "eps", alphas_cumprod: Optional[torch.Tensor] = None):
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding

        if prediction not in PREDICTIONS:
            raise StylsegError(f"diffae.prediction={prediction!r} is not one of {', '.join(PREDICTIONS)}")
        self.prediction = prediction
        if prediction == "v":
            if alphas_cumprod is None:
                raise StylsegError("a v-predicting UNet needs the schedule's alphas_cumprod")
            # derived from the schedule, not weights: kept out of the state dict
            self.register_buffer("sqrt_a", alphas_cumprod.double().sqrt().float(), persistent=False)
            self.register_buffer("sqrt_1ma", (1 - alphas_cumprod.double()).sqrt().float(), persistent=False)

        self.base_channels = base_channels
        temb = 4 * base_channels
        self.time_embed = TimestepEmbedding(base_channels, temb)
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        n_levels = len(channel_mult)
        #: decoder levels (index from the top) conditioned on ``z_coarse`` in mix mode: the lower half
        self.coarse_from = (n_levels + 1) // 2
        attn_res = set(int(a) for a in attn_resolutions)

        ch, res = base_channels, image_size
        skips = [ch]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for lvl, m in enumerate(channel_mult):
            level = _Level()
            for _ in range(num_res_blocks):
                level.res.append(CondResBlock(ch, base_channels * m, temb, z_dim, dropout))
                ch = base_channels * m
                level.attn.append(_attention(ch) if res in attn_res else nn.Identity())
                skips.append(ch)
            self.down.append(level)
            if lvl < n_levels - 1:
                self.downsample.append(_Down(ch))
                skips.append(ch)
                res //= 2
            else:
                self.downsample.append(nn.Identity())
        self.mid1 = CondResBlock(ch, ch, temb, z_dim, dropout)
        self.mid_attn = _attention(ch)
        self.mid2 = CondResBlock(ch, ch, temb, z_dim, dropout)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for lvl in reversed(range(n_levels)):
            m = channel_mult[lvl]
            level = _Level()
            for _ in range(num_res_blocks + 1):
                level.res.append(CondResBlock(ch + skips.pop(), base_channels * m, temb, z_dim, dropout))
                ch = base_channels * m
                level.attn.append(_attention(ch) if res in attn_res else nn.Identity())
            self.up.append(level)  # self.up[k] is level n_levels-1-k
            if lvl > 0:
                self.upsample.append(_Up(ch))
                res *= 2
            else:
                self.upsample.append(nn.Identity())
        assert not skips
        self.norm_out = nn.GroupNorm(norm_groups(ch), ch)
        self.conv_out = zero_module(nn.Conv2d(ch, in_channels, 3, padding=1))

    def time_embedding(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.time_embed(timestep_embedding(t, self.base_channels).to(dtype))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, z: torch.Tensor,
                z_coarse: Optional[torch.Tensor] = None) -> torch.Tensor:
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        temb = self.time_embedding(t, x_t.dtype)
        z = z.to(x_t.dtype)
        zc = z if z_coarse is None else z_coarse.to(x_t.dtype)
        h = self.conv_in(x_t)
        hs = [h]
        for level, down in zip(self.down, self.downsample):
            for res, attn in zip(level.res, level.attn):
                h = run_block(self, lambda a, e, c, res=res, attn=attn: attn(res(a, e, c)), h, temb, z)
                hs.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)
                hs.append(h)
        h = run_block(self, lambda a, e, c: self.mid2(self.mid_attn(self.mid1(a, e, c)), e, c), h, temb, zc)
        n_levels = len(self.up)
        for k, (level, up) in enumerate(zip(self.up, self.upsample)):
            lvl = n_levels - 1 - k
            zz = zc if lvl >= self.coarse_from else z
            for res, attn in zip(level.res, level.attn):
                h = run_block(self, lambda a, e, c, res=res, attn=attn: attn(res(a, e, c)),
                              torch.cat([h, hs.pop()], dim=1), temb, zz)
            h = up(h)
        out = self.conv_out(F.silu(self.norm_out(h)))
        if self.prediction == "v":
            # v = sqrt(a_t) eps - sqrt(1-a_t) x0 (Salimans & Ho 2022)  =>  eps = sqrt(a_t) v + sqrt(1-a_t) x_t
            sa = self.sqrt_a[t].to(out.dtype).view(-1, 1, 1, 1)
            s1 = self.sqrt_1ma[t].to(out.dtype).view(-1, 1, 1, 1)
            out = sa * out + s1 * x_t
        return out


class SemanticEncoder(nn.Module):
    """``Enc_phi``: x (B,3,H,W) in [-1,1] -> z_sem (B, z_dim).

    Plain residual blocks (``num_res_blocks`` per level, channels ``base * enc_channel_mult``,
    attention at ``attn_resolutions``), stride-2 downsampling between levels, then GN, SiLU,
    global average pooling and a linear map to ``z_dim`` (DiffAE's encoder ends in the same pool
    and a 1x1 projection).
    """

    def __init__(self, image_size: int, base_channels: int, enc_channel_mult: Sequence[int], num_res_blocks: int,
                 attn_resolutions: Sequence[int], z_dim: int, dropout: float = 0.0, in_channels: int = 3,
                 pool: str = "mean"):
        super().__init__()
        attn_res = set(int(a) for a in attn_resolutions)
        self.pool = pool
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        blocks: List[nn.Module] = []
        ch, res = base_channels, image_size
        for lvl, m in enumerate(enc_channel_mult):
            for _ in range(num_res_blocks):
                blocks.append(_Plain(CondResBlock(ch, base_channels * m, dropout=dropout)))
                ch = base_channels * m
                if res in attn_res:
                    blocks.append(_attention(ch))
            if lvl < len(enc_channel_mult) - 1:
                blocks.append(_Down(ch))
                res //= 2
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = nn.GroupNorm(norm_groups(ch), ch)
        self.proj = nn.Linear(ch * (res * res if pool == "flatten" else 1), z_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm_out(self.blocks(self.conv_in(x))))
        h = h.flatten(1) if self.pool == "flatten" else h.mean(dim=(2, 3))
        return self.proj(h)


class _Plain(nn.Module):
    """Adapter so that an unconditioned :class:`CondResBlock` fits in ``nn.Sequential``."""

    def __init__(self, block: CondResBlock):
        super().__init__()
        self.block = block

    def forward(self, x):
        return self.block(x)


def check_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The architecture and schedule keys of ``config`` as a plain dict (lists of ints), checked."""
    missing = [k for k in ARCH_KEYS + SCHEDULE_KEYS if k not in config]
    if missing:
        raise StylsegError(f"DiffAE config lacks {', '.join(missing)}: a model folder written by an earlier stylseg "
                           f"is not migrated; train D_A again (notebook 02 with RETRAIN = True, or "
                           f"`stylseg diffae train ... --no-resume`)")
    cfg = {k: config[k] for k in ARCH_KEYS + SCHEDULE_KEYS}
    for k in ("channel_mult", "attn_resolutions", "enc_channel_mult"):
        cfg[k] = [int(v) for v in cfg[k]]
    _check_arch(cfg)
    if cfg["enc_pool"] not in ENC_POOLS:
        raise StylsegError(f"diffae.enc_pool={cfg['enc_pool']!r} is not one of {', '.join(ENC_POOLS)}")
    return cfg


def build(cfg: Mapping[str, Any], schedule: DDIMSchedule) -> Tuple[nn.Module, nn.Module]:
    """``(encoder, unet)`` of a checked config (:func:`check_config`), freshly initialised."""
    encoder = SemanticEncoder(cfg["image_size"], cfg["base_channels"], cfg["enc_channel_mult"],
                              cfg["num_res_blocks"], cfg["attn_resolutions"], cfg["z_dim"],
                              float(cfg["dropout"]), pool=cfg["enc_pool"])
    unet = ConditionalUNet(cfg["image_size"], cfg["base_channels"], cfg["channel_mult"],
                           cfg["num_res_blocks"], cfg["attn_resolutions"], cfg["z_dim"],
                           float(cfg["dropout"]), prediction=cfg["prediction"],
                           alphas_cumprod=schedule.alphas_cumprod)
    return encoder, unet
