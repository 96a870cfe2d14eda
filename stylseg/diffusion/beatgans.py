"""The published DiffAE family: the BeatGANs autoencoder UNet of Preechakul et al. (CVPR 2022).

The Diffusion Autoencoders that the authors trained (``ffhq256_autoenc``, ``ffhq128_autoenc_130M``,
``horse128_autoenc``, ``bedroom128_autoenc``) and that OSASIS, and so the paper, starts from are
this architecture (the reference's ``BeatGANsAutoencModel``). The kit builds it here so that a
``state_dict`` of that family loads with strict key matching and computes the same outputs
(``tests/test_beatgans.py`` checks both against the reference's own numbers):

- :class:`BeatGANsEncoder` ``Enc_phi``: x (B,3,S,S) in [-1,1] -> ``z_sem`` (B, style_ch). Plain
  residual blocks (GN, SiLU, conv; no time input), down-sampling residual blocks between levels,
  single-head attention at ``attention_resolutions``, a middle block res-attn-res, then
  GN, SiLU, ``AdaptiveAvgPool2d(1)`` and a 1x1 conv (the reference's ``adaptivenonzero`` pool).
- :class:`BeatGANsUNet` ``eps_theta(x_t, t, z_sem)``: residual blocks conditioned on two inputs
  (DiffAE eq. 9, the reference's ``resnet_two_cond``)::

      h = conv(SiLU(GN(x)))                  # in_layers (down/up-sampled in between for up/down blocks)
      h = GN(h) * (1 + s_t) + b_t            # (s_t, b_t) = Linear(SiLU(emb_t)), emb_t = MLP(sinusoid(t))
      h = h * (1 + s_z)                      # s_z = Linear(SiLU(z_sem))
      out = skip(x) + conv(dropout(SiLU(h)))

  attention is ``qkv = Conv1d(C, 3C, 1)(GN(h))``, softmax(q k^T / sqrt(C/heads)) v, a zero-initialised
  ``Conv1d`` projection and a residual connection. The decoder concatenates each encoder feature
  map ("lateral") to its input, as every UNet does.
- :func:`build` gives both to :class:`~stylseg.diffusion.model.DiffAE` for a config with
  ``arch = "beatgans"`` (``DiffAE(template_config(NAME))``), so every stage (inversion, rendering,
  fine-tuning's D_B copy, the SPN, applying) takes it unchanged; ``DiffAE.from_pretrained(DIR)`` loads
  either kind of folder. :func:`reference_state_dict` / :func:`load_reference_state_dict` speak the
  reference's weight names.

The schedule is DiffAE's: linear betas 1e-4..0.02, T = 1000, epsilon prediction. ``stylseg diffae
import`` (:mod:`stylseg.diffusion.pretrained`) turns a published Lightning ``last.ckpt`` into a model
folder of this kind.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils import StylsegError
from .blocks import run_block, timestep_embedding, zero_module
from .ddim import SCHEDULE_KEYS, DDIMSchedule

#: value of ``config["arch"]`` in a model folder of this family (the kit's own DiffAE has none)
ARCH = "beatgans"
#: the architecture keys of a model folder of this family (names follow the reference's ``model_conf``)
ARCH_KEYS = ("image_size", "in_channels", "model_channels", "channel_mult", "num_res_blocks",
             "attention_resolutions", "embed_channels", "time_embed_channels", "enc_channel_mult",
             "enc_num_res_blocks", "enc_attn_resolutions", "enc_pool", "z_dim", "num_heads", "num_head_channels",
             "resblock_updown", "resnet_cond_channels", "dropout")
ENC_POOLS = ("adaptivenonzero",)

#: the published checkpoints' configurations (the reference's ``templates.py``), for checkpoints whose
#: ``hyper_parameters`` are absent. Every other key takes :data:`TEMPLATE_BASE`.
TEMPLATE_BASE: Dict[str, Any] = {
    "in_channels": 3, "model_channels": 128, "num_res_blocks": 2, "attention_resolutions": [16],
    "embed_channels": 512, "time_embed_channels": None, "enc_num_res_blocks": 2, "enc_attn_resolutions": None,
    "enc_pool": "adaptivenonzero", "z_dim": 512, "num_heads": 1, "num_head_channels": -1, "resblock_updown": True,
    "resnet_cond_channels": None, "dropout": 0.1, "T": 1000, "beta_start": 1e-4, "beta_end": 0.02,
}
TEMPLATES: Dict[str, Dict[str, Any]] = {
    "ffhq256_autoenc": {"image_size": 256, "channel_mult": [1, 1, 2, 2, 4, 4],
                        "enc_channel_mult": [1, 1, 2, 2, 4, 4, 4]},
    "ffhq128_autoenc_130M": {"image_size": 128, "channel_mult": [1, 1, 2, 3, 4],
                             "enc_channel_mult": [1, 1, 2, 3, 4, 4]},
    "horse128_autoenc": {"image_size": 128, "channel_mult": [1, 1, 2, 3, 4],
                         "enc_channel_mult": [1, 1, 2, 3, 4, 4]},
    "bedroom128_autoenc": {"image_size": 128, "channel_mult": [1, 1, 2, 3, 4],
                           "enc_channel_mult": [1, 1, 2, 3, 4, 4]},
}


def template_config(name: str) -> Dict[str, Any]:
    """The kit config (architecture + schedule) of a published checkpoint named ``name``."""
    if name not in TEMPLATES:
        raise StylsegError(f"unknown DiffAE template {name!r}; valid templates: {', '.join(TEMPLATES)}")
    return {"arch": ARCH, **TEMPLATE_BASE, **TEMPLATES[name]}


# --------------------------------------------------------------------------- building blocks
class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups computed in float32 (the reference's ``normalization``)."""

    def __init__(self, channels: int):
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps).to(x.dtype)


class Downsample(nn.Module):
    """x (B,C,H,W) -> (B,C',H/2,W/2): a stride-2 3x3 conv (``op``), or 2x2 average pooling without conv."""

    def __init__(self, channels: int, use_conv: bool, out_channels: Optional[int] = None):
        super().__init__()
        out_channels = out_channels or channels
        self.op = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    """x (B,C,H,W) -> (B,C',2H,2W): nearest-neighbour upsampling, then a 3x3 conv (``conv``) if asked."""

    def __init__(self, channels: int, use_conv: bool, out_channels: Optional[int] = None):
        super().__init__()
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)
        self.use_conv = use_conv

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.use_conv else x


class ResBlock(nn.Module):
    """The reference's ``ResBlock``: x (B,C,H,W) [, emb (B,E), cond (B,Z)] -> (B,C',H',W').

    ``use_condition=False`` (the semantic encoder's blocks): ``skip(x) + conv(SiLU(GN(x)))``.
    ``use_condition=True``: DiffAE's two-condition block (module docstring). ``up``/``down`` resample
    both paths (nearest x2 / 2x2 average) between the in-layers' activation and their conv.
    """

    def __init__(self, channels: int, emb_channels: Optional[int], dropout: float, out_channels: Optional[int] = None,
                 use_condition: bool = True, cond_channels: Optional[int] = None, up: bool = False,
                 down: bool = False):
        super().__init__()
        out_channels = out_channels or channels
        self.use_condition = use_condition
        self.out_channels = out_channels
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        if use_condition:
            self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
            self.cond_emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(cond_channels or emb_channels, out_channels))
            self.out_layers = nn.Sequential(GroupNorm32(out_channels), nn.SiLU(), nn.Dropout(dropout),
                                            zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None,
                cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.in_layers[-1](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        if self.use_condition:
            norm, act, drop, conv = self.out_layers
            h = norm(h)
            s_t, b_t = self.emb_layers(emb).to(h.dtype)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + s_t) + b_t
            if cond is not None:
                h = h * (1 + self.cond_emb_layers(cond).to(h.dtype)[:, :, None, None])
            h = conv(drop(act(h)))
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Spatial self-attention (the reference's ``AttentionBlock`` with its legacy head order):
    x (B,C,H,W) -> x + proj_out(attention(qkv(GN(x)))), ``qkv`` and ``proj_out`` 1-D 1x1 convs."""

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1):
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise StylsegError(f"attention: {channels} channels are not divisible by num_head_channels="
                                   f"{num_head_channels}")
            self.num_heads = channels // num_head_channels
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))  # (B, 3C, L); per head [q; k; v] (legacy order)
        n = qkv.shape[-1]
        ch = c // self.num_heads
        q, k, v = qkv.reshape(b * self.num_heads, 3 * ch, n).split(ch, dim=1)  # (B*heads, ch, L) each
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # (B*h, L, ch)
        h = self.proj_out(a.transpose(1, 2).reshape(b, c, n))
        return (x + h).reshape(b, c, *spatial)


class EmbedSequential(nn.Sequential):
    """A sequence of layers that passes (emb, cond) to the residual blocks among them."""

    def forward(self, x, emb=None, cond=None):
        for layer in self:
            x = layer(x, emb, cond) if isinstance(layer, ResBlock) else layer(x)
        return x


class TimeEmbed(nn.Module):
    """``emb_t = Linear(SiLU(Linear(sinusoid(t))))`` (the reference's ``TimeStyleSeperateEmbed``)."""

    def __init__(self, time_channels: int, out_channels: int):
        super().__init__()
        self.time_embed = nn.Sequential(nn.Linear(time_channels, out_channels), nn.SiLU(),
                                        nn.Linear(out_channels, out_channels))

    def forward(self, e):
        return self.time_embed(e)


def _cfg_list(v) -> List[int]:
    return [int(a) for a in (v or [])]


# --------------------------------------------------------------------------- the two networks
class BeatGANsEncoder(nn.Module):
    """``Enc_phi``: x (B,3,S,S) in [-1,1] -> z_sem (B, z_dim) (the reference's ``BeatGANsEncoderModel``
    with ``use_time_condition=False`` and pool ``adaptivenonzero``)."""

    def __init__(self, cfg: Mapping[str, Any]):
        super().__init__()
        mc, mult = int(cfg["model_channels"]), _cfg_list(cfg["enc_channel_mult"])
        attn_res = set(_cfg_list(cfg["enc_attn_resolutions"] or cfg["attention_resolutions"]))
        heads, head_ch = int(cfg["num_heads"]), int(cfg["num_head_channels"])
        drop, updown = float(cfg["dropout"]), bool(cfg["resblock_updown"])
        ch = mult[0] * mc
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(int(cfg["in_channels"]), ch, 3, padding=1))])
        res = int(cfg["image_size"])
        for level, m in enumerate(mult):
            for _ in range(int(cfg["enc_num_res_blocks"])):
                layers: List[nn.Module] = [ResBlock(ch, None, drop, m * mc, use_condition=False)]
                ch = m * mc
                if res in attn_res:
                    layers.append(AttentionBlock(ch, heads, head_ch))
                self.input_blocks.append(EmbedSequential(*layers))
            if level != len(mult) - 1:
                res //= 2
                self.input_blocks.append(EmbedSequential(
                    ResBlock(ch, None, drop, ch, use_condition=False, down=True) if updown else Downsample(ch, True)))
        self.middle_block = EmbedSequential(ResBlock(ch, None, drop, use_condition=False),
                                            AttentionBlock(ch, heads, head_ch),
                                            ResBlock(ch, None, drop, use_condition=False))
        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), nn.AdaptiveAvgPool2d((1, 1)),
                                 nn.Conv2d(ch, int(cfg["z_dim"]), 1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for block in self.input_blocks:
            h = block(h)
        return self.out(self.middle_block(h))


class BeatGANsUNet(nn.Module):
    """``eps_theta(x_t, t, z_sem)``: x_t (B,3,S,S), t (B,) long in [0,T), z (B,z_dim) -> eps (B,3,S,S)
    (the decoder of the reference's ``BeatGANsAutoencModel``, its names and its arithmetic).

    ``z_coarse`` (OSASIS's "mix" conditioning, as in the kit's own UNet): the middle block and the
    lower-resolution half of the decoder levels take ``z_coarse``, every other block ``z``.
    """

    #: recompute each block's activations in the backward pass (:func:`~stylseg.diffusion.blocks.run_block`)
    grad_checkpoint: bool = False

    def __init__(self, cfg: Mapping[str, Any]):
        super().__init__()
        mc, mult = int(cfg["model_channels"]), _cfg_list(cfg["channel_mult"])
        attn_res = set(_cfg_list(cfg["attention_resolutions"]))
        heads, head_ch = int(cfg["num_heads"]), int(cfg["num_head_channels"])
        drop, updown = float(cfg["dropout"]), bool(cfg["resblock_updown"])
        emb_ch = int(cfg["embed_channels"])
        cond_ch = int(cfg["resnet_cond_channels"] or emb_ch)
        nrb = int(cfg["num_res_blocks"])
        self.time_channels = int(cfg["time_embed_channels"] or mc)
        self.time_embed = TimeEmbed(self.time_channels, emb_ch)

        def res_block(cin, cout=None, **kw):
            return ResBlock(cin, emb_ch, drop, cout, use_condition=True, cond_channels=cond_ch, **kw)

        ch = mult[0] * mc
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(int(cfg["in_channels"]), ch, 3, padding=1))])
        skips: List[List[int]] = [[] for _ in mult]
        skips[0].append(ch)
        #: number of encoder / decoder blocks per level (index = level from the top)
        self.input_num_blocks = [0] * len(mult)
        self.input_num_blocks[0] = 1
        self.output_num_blocks = [0] * len(mult)
        res = int(cfg["image_size"])
        for level, m in enumerate(mult):
            for _ in range(nrb):
                layers: List[nn.Module] = [res_block(ch, m * mc)]
                ch = m * mc
                if res in attn_res:
                    layers.append(AttentionBlock(ch, heads, head_ch))
                self.input_blocks.append(EmbedSequential(*layers))
                skips[level].append(ch)
                self.input_num_blocks[level] += 1
            if level != len(mult) - 1:
                res //= 2
                self.input_blocks.append(EmbedSequential(res_block(ch, ch, down=True) if updown
                                                         else Downsample(ch, True)))
                skips[level + 1].append(ch)
                self.input_num_blocks[level + 1] += 1
        self.middle_block = EmbedSequential(res_block(ch), AttentionBlock(ch, heads, head_ch), res_block(ch))
        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(mult))):
            m = mult[level]
            for i in range(nrb + 1):
                ich = skips[level].pop() if skips[level] else 0
                layers = [res_block(ch + ich, m * mc)]
                ch = m * mc
                if res in attn_res:
                    layers.append(AttentionBlock(ch, heads, head_ch))
                if level and i == nrb:
                    res *= 2
                    layers.append(res_block(ch, ch, up=True) if updown else Upsample(ch, True))
                self.output_blocks.append(EmbedSequential(*layers))
                self.output_num_blocks[level] += 1
        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(),
                                 zero_module(nn.Conv2d(ch, int(cfg["in_channels"]), 3, padding=1)))
        n_levels = len(mult)
        #: decoder levels (index from the top) conditioned on ``z_coarse`` in mix mode: the lower half
        self.coarse_from = (n_levels + 1) // 2

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, z: torch.Tensor,
                z_coarse: Optional[torch.Tensor] = None) -> torch.Tensor:
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        emb = self.time_embed(timestep_embedding(t, self.time_channels).to(x_t.dtype))
        z = z.to(x_t.dtype)
        zc = z if z_coarse is None else z_coarse.to(x_t.dtype)
        hs: List[List[torch.Tensor]] = [[] for _ in self.input_num_blocks]
        h, k = x_t, 0
        for level, n in enumerate(self.input_num_blocks):
            for _ in range(n):
                h = run_block(self, self.input_blocks[k], h, emb, z)
                hs[level].append(h)
                k += 1
        h = run_block(self, self.middle_block, h, emb, zc)
        k = 0
        for level in reversed(range(len(self.output_num_blocks))):
            zz = zc if level >= self.coarse_from else z
            for _ in range(self.output_num_blocks[level]):
                if hs[level]:
                    h = torch.cat([h, hs[level].pop()], dim=1)
                h = run_block(self, self.output_blocks[k], h, emb, zz)
                k += 1
        return self.out(h)


# --------------------------------------------------------------------------- the family's config and weights
def check_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The architecture and schedule keys of ``config`` (with ``arch``) as a plain dict, checked."""
    missing = [k for k in ARCH_KEYS + SCHEDULE_KEYS if k not in config]
    if missing:
        raise StylsegError(f"BeatGANs DiffAE config lacks {', '.join(missing)}")
    cfg = {"arch": ARCH, **{k: config[k] for k in ARCH_KEYS + SCHEDULE_KEYS}}
    for k in ("channel_mult", "attention_resolutions", "enc_channel_mult"):
        cfg[k] = _cfg_list(cfg[k])
    if cfg["enc_attn_resolutions"] is not None:
        cfg["enc_attn_resolutions"] = _cfg_list(cfg["enc_attn_resolutions"])
    if cfg["enc_pool"] not in ENC_POOLS:
        raise StylsegError(f"enc_pool={cfg['enc_pool']!r}: the kit builds the published DiffAE's encoder pool "
                           f"({', '.join(ENC_POOLS)}) only")
    size = int(cfg["image_size"])
    for name in ("channel_mult", "enc_channel_mult"):
        n = len(cfg[name])
        if n < 1 or size % (2 ** (n - 1)):
            raise StylsegError(f"{name}={cfg[name]}: image_size={size} must be divisible by 2^(levels-1)")
    emb = int(cfg["embed_channels"])
    if int(cfg["resnet_cond_channels"] or emb) != int(cfg["z_dim"]):
        raise StylsegError(f"z_dim={cfg['z_dim']} (style_ch) must equal the residual blocks' condition width "
                           f"{cfg['resnet_cond_channels'] or emb} (resnet_cond_channels or embed_channels)")
    return cfg


def build(cfg: Mapping[str, Any], schedule: DDIMSchedule) -> Tuple[nn.Module, nn.Module]:
    """``(encoder, unet)`` of a checked config (:func:`check_config`), freshly initialised."""
    return BeatGANsEncoder(cfg), BeatGANsUNet(cfg)


def reference_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The weights of a DiffAE of this family under the reference's names (``BeatGANsAutoencModel.state_dict()``):
    the UNet's at the top level, the encoder's under ``encoder.``."""
    sd = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    sd.update(model.unet.state_dict())
    return sd


def load_reference_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool = True,
                              where: str = "state_dict") -> None:
    """Load a ``BeatGANsAutoencModel`` ``state_dict`` (names as in the published checkpoints, without
    the Lightning ``model.`` / ``ema_model.`` prefix) into a DiffAE of this family. With ``strict``, a missing or
    unexpected name or a wrong shape raises :class:`StylsegError` naming them (``where`` names the source)."""
    own = reference_state_dict(model)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if strict and (missing or unexpected or wrong):
        diff = describe_key_diff(missing, unexpected, wrong, own, state)
        raise StylsegError(f"{where}: does not fit this DiffAE configuration: {diff}. Pass a checkpoint of the "
                           f"published DiffAE family (https://github.com/phizaz/diffae#checkpoints), or the "
                           f"--template it was trained with")
    enc = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.") and k in own}
    unet = {k: v for k, v in state.items() if not k.startswith("encoder.") and k in own}
    model.encoder.load_state_dict(enc, strict=strict)
    model.unet.load_state_dict(unet, strict=strict)


def describe_key_diff(missing: Sequence[str], unexpected: Sequence[str], wrong: Sequence[str] = (),
                      own: Optional[Mapping[str, torch.Tensor]] = None,
                      other: Optional[Mapping[str, torch.Tensor]] = None, n: int = 5) -> str:
    """A short account of how two sets of weight names differ (the first ``n`` of each list)."""

    def head(keys):
        more = f" and {len(keys) - n} more" if len(keys) > n else ""
        return ", ".join(keys[:n]) + more

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({head(list(missing))})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({head(list(unexpected))})")
    if wrong:
        shapes = [f"{k} {tuple(other[k].shape)} vs {tuple(own[k].shape)}" for k in wrong] if own and other else wrong
        parts.append(f"{len(wrong)} of another shape ({head(list(shapes))})")
    return "; ".join(parts)


def config_from_model_conf(mc: Mapping[str, Any], hp: Mapping[str, Any]) -> Dict[str, Any]:
    """The kit config of a reference ``model_conf`` dict (``hyper_parameters['model_conf']``)."""
    return {"arch": ARCH, "image_size": mc["image_size"], "in_channels": mc.get("in_channels", 3),
            "model_channels": mc["model_channels"], "channel_mult": list(mc["channel_mult"]),
            "num_res_blocks": mc["num_res_blocks"], "attention_resolutions": list(mc["attention_resolutions"]),
            "embed_channels": mc["embed_channels"], "time_embed_channels": mc.get("time_embed_channels"),
            "enc_channel_mult": list(mc["enc_channel_mult"]), "enc_num_res_blocks": mc["enc_num_res_block"],
            "enc_attn_resolutions": mc.get("enc_attn_resolutions"), "enc_pool": mc["enc_pool"],
            "z_dim": mc["enc_out_channels"], "num_heads": mc.get("num_heads", 1),
            "num_head_channels": mc.get("num_head_channels", -1), "resblock_updown": mc["resblock_updown"],
            "resnet_cond_channels": mc.get("resnet_cond_channels"), "dropout": mc.get("dropout", 0.0),
            **_schedule(hp)}


def _schedule(hp: Mapping[str, Any]) -> Dict[str, Any]:
    T = int(hp.get("T", 1000))
    sched = hp.get("beta_scheduler", "linear")
    if sched != "linear":
        raise StylsegError(f"beta_scheduler={sched!r}: the kit's DDIM uses DiffAE's linear schedule only")
    scale = 1000 / T  # the reference scales the linear betas with T
    return {"T": T, "beta_start": scale * 1e-4, "beta_end": scale * 0.02}


#: unsupported reference settings, checked in ``hyper_parameters`` (key: the one value the kit builds)
UNSUPPORTED: Tuple[Tuple[str, Any], ...] = (
    ("net_beatgans_resnet_two_cond", True), ("net_enc_use_time", False), ("net_num_input_res_blocks", None),
    ("net_autoenc_stochastic", False), ("beatgans_rescale_timesteps", False), ("diffusion_type", "beatgans"),
)


def config_from_hparams(hp: Mapping[str, Any]) -> Dict[str, Any]:
    """The kit config of a checkpoint's ``hyper_parameters`` (the reference's
    ``TrainConfig.as_dict_jsonable()``): from its ``model_conf`` when present, else from the ``net_*``
    fields. Settings the kit does not build raise :class:`StylsegError` naming them."""
    bad = [f"{k}={hp[k]!r} (the kit builds {v!r})" for k, v in UNSUPPORTED if k in hp and hp[k] != v]
    mc = hp.get("model_conf")
    if isinstance(mc, Mapping) and mc.get("resnet_two_cond") is False:
        bad.append("model_conf.resnet_two_cond=False (the kit builds True)")
    if isinstance(mc, Mapping) and mc.get("use_new_attention_order"):
        bad.append("model_conf.use_new_attention_order=True (the kit builds the legacy order)")
    if bad:
        raise StylsegError("hyper_parameters describe a DiffAE the kit does not build: " + "; ".join(bad))
    if isinstance(mc, Mapping) and "enc_channel_mult" in mc:
        return config_from_model_conf(mc, hp)
    need = ("img_size", "net_ch", "net_ch_mult", "net_enc_channel_mult", "net_attn", "style_ch")
    missing = [k for k in need if k not in hp]
    if missing:
        raise StylsegError(f"hyper_parameters lack {', '.join(missing)}")
    return {"arch": ARCH, "image_size": hp["img_size"], "in_channels": 3, "model_channels": hp["net_ch"],
            "channel_mult": list(hp["net_ch_mult"]), "num_res_blocks": hp.get("net_num_res_blocks", 2),
            "attention_resolutions": list(hp["net_attn"]),
            "embed_channels": hp.get("net_beatgans_embed_channels", 512), "time_embed_channels": None,
            "enc_channel_mult": list(hp["net_enc_channel_mult"]),
            "enc_num_res_blocks": hp.get("net_enc_num_res_blocks", 2), "enc_attn_resolutions": hp.get("net_enc_attn"),
            "enc_pool": hp.get("net_enc_pool", "adaptivenonzero"), "z_dim": hp["style_ch"],
            "num_heads": hp.get("net_beatgans_attn_head", 1), "num_head_channels": -1,
            "resblock_updown": hp.get("net_resblock_updown", True),
            "resnet_cond_channels": hp.get("net_beatgans_resnet_cond_channels"), "dropout": hp.get("dropout", 0.1),
            **_schedule(hp)}
