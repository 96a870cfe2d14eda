"""Segmentation models: U-Net and U-Net++ (segmentation-models-pytorch) and PraNet (written here).

Every model maps ImageNet-normalised images ``(B,3,H,W)`` to logits ``(B,1,H,W)`` in eval
mode. PraNet in train mode returns its four side outputs (each ``(B,1,H,W)``, upsampled to
the input size) for deep supervision: ``[S_g (global map), S_5, S_4, S_3]`` in PraNet's naming
(``lateral_map_5, 4, 3, 2`` in its code), the last being the prediction.

PraNet (Fan et al., MICCAI 2020; docs/method.md section 5): Res2Net-50 v1b 26wx4s backbone
(timm ``res2net50d``: deep stem, average-pool shortcut), receptive-field blocks (RFB) on the
last three stages, a partial decoder aggregating them into a coarse global map at 1/8 scale,
then three reverse-attention branches from the deepest stage up: the map upsampled to a
stage's size gives the attention ``1 - sigmoid(map)``, which weights that stage's features;
a small conv stack predicts a residual added to the map.

Parameters: the kit's PraNet with ``res2net50d`` has 30.50 M; the official count of 32.55 M
includes the backbone's unused ImageNet classifier (2048 x 1000 + 1000 = 2.05 M), which the
official code builds and never calls. Outside the paper profile a ``resnet18`` backbone
(or any timm backbone with ``features_only``) may be used.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..utils import Registry, StylsegError

SEGMENTERS: Registry = Registry("segmenter")

# --------------------------------------------------------------------------- PraNet parts
class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm; as in PraNet's code, no activation is applied in forward."""

    def __init__(self, cin: int, cout: int, kernel_size, stride: int = 1, padding=0, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.bn(self.conv(x))


class RFB(nn.Module):
    """Receptive field block (PraNet's ``RFB_modified``): four branches (1x1; and 1x1, 1xk, kx1,
    3x3 dilated k for k = 3, 5, 7), concatenated, fused by a 3x3 conv, plus a 1x1 shortcut, ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.branch0 = nn.Sequential(BasicConv2d(cin, cout, 1))

        def branch(k: int) -> nn.Sequential:
            p = k // 2
            return nn.Sequential(BasicConv2d(cin, cout, 1), BasicConv2d(cout, cout, (1, k), padding=(0, p)),
                                 BasicConv2d(cout, cout, (k, 1), padding=(p, 0)),
                                 BasicConv2d(cout, cout, 3, padding=k, dilation=k))

        self.branch1, self.branch2, self.branch3 = branch(3), branch(5), branch(7)
        self.conv_cat = BasicConv2d(4 * cout, cout, 3, padding=1)
        self.conv_res = BasicConv2d(cin, cout, 1)

    def forward(self, x):
        xs = [self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)]
        return F.relu(self.conv_cat(torch.cat(xs, 1)) + self.conv_res(x))


def _up(x, size, align_corners=True):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


class PartialDecoder(nn.Module):
    """PraNet's ``aggregation``: fuses the RFB outputs of stages 5, 4, 3 (coarse to fine) by
    multiplication and concatenation into a one-channel global map at stage 3's size."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv_upsample1 = BasicConv2d(ch, ch, 3, padding=1)
        self.conv_upsample2 = BasicConv2d(ch, ch, 3, padding=1)
        self.conv_upsample3 = BasicConv2d(ch, ch, 3, padding=1)
        self.conv_upsample4 = BasicConv2d(ch, ch, 3, padding=1)
        self.conv_upsample5 = BasicConv2d(2 * ch, 2 * ch, 3, padding=1)
        self.conv_concat2 = BasicConv2d(2 * ch, 2 * ch, 3, padding=1)
        self.conv_concat3 = BasicConv2d(3 * ch, 3 * ch, 3, padding=1)
        self.conv4 = BasicConv2d(3 * ch, 3 * ch, 3, padding=1)
        self.conv5 = nn.Conv2d(3 * ch, 1, 1)

    def forward(self, x1, x2, x3):
        s2, s3 = x2.shape[-2:], x3.shape[-2:]
        x1_up2, x1_up3 = _up(x1, s2), _up(x1, s3)
        x2_1 = self.conv_upsample1(x1_up2) * x2
        x3_1 = self.conv_upsample2(x1_up3) * self.conv_upsample3(_up(x2, s3)) * x3
        x2_2 = self.conv_concat2(torch.cat((x2_1, self.conv_upsample4(x1_up2)), 1))
        x3_2 = self.conv_concat3(torch.cat((x3_1, self.conv_upsample5(_up(x2_2, s3))), 1))
        return self.conv5(self.conv4(x3_2))


class ReverseAttention(nn.Module):
    """One reverse-attention branch: ``x = (1 - sigmoid(up(map))) * features``; conv stack;
    the residual added to the map. PraNet: 256-channel 5x5 convs on stage 5, 64-channel 3x3 on
    stages 4 and 3."""

    def __init__(self, cin: int, width: int, kernel: int, n_mid: int):
        super().__init__()
        p = kernel // 2
        self.conv1 = BasicConv2d(cin, width, 1)
        self.mid = nn.ModuleList(BasicConv2d(width, width, kernel, padding=p) for _ in range(n_mid))
        self.out = BasicConv2d(width, 1, kernel if n_mid == 2 else 1, padding=p if n_mid == 2 else 0)

    def forward(self, feat, prev_map):
        crop = _up(prev_map, feat.shape[-2:], align_corners=False)
        x = (1 - torch.sigmoid(crop)).expand(-1, feat.shape[1], -1, -1) * feat
        x = self.conv1(x)
        for m in self.mid:
            x = F.relu(m(x))
        return self.out(x) + crop


class PraNet(nn.Module):
    """PraNet with a timm backbone (``res2net50d`` = Res2Net-50 v1b 26wx4s, or e.g. ``resnet18``).

    Input ``(B,3,H,W)`` ImageNet-normalised (H, W multiples of 32 recommended); output logits
    ``(B,1,H,W)`` (eval) or the list of 4 side outputs (train), see the module docstring.
    """

    def __init__(self, backbone: str = "res2net50d", channel: int = 32):
        super().__init__()
        import timm

        self.backbone_name = backbone
        try:
            self.backbone = timm.create_model(backbone, features_only=True, pretrained=False, out_indices=(1, 2, 3, 4))
        except Exception as e:  # timm raises RuntimeError for unknown names
            raise StylsegError(f"PraNet: cannot build backbone {backbone!r} with timm ({e}); "
                               f"use res2net50d (the paper's) or resnet18") from None
        c2, c3, c4, c5 = self.backbone.feature_info.channels()
        self.rfb2, self.rfb3, self.rfb4 = RFB(c3, channel), RFB(c4, channel), RFB(c5, channel)
        self.agg = PartialDecoder(channel)
        self.ra4 = ReverseAttention(c5, 256, 5, 3)
        self.ra3 = ReverseAttention(c4, 64, 3, 2)
        self.ra2 = ReverseAttention(c3, 64, 3, 2)

    def forward(self, x):
        size = x.shape[-2:]
        _, x2, x3, x4 = self.backbone(x)  # strides 8, 16, 32 for x2, x3, x4
        s_g = self.agg(self.rfb4(x4), self.rfb3(x3), self.rfb2(x2))  # global map, stride 8
        s5 = self.ra4(x4, s_g)
        s4 = self.ra3(x3, s5)
        s3 = self.ra2(x2, s4)
        maps = [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in (s_g, s5, s4, s3)]
        return maps if self.training else maps[-1]


# --------------------------------------------------------------------------- factory
def _load_pretrained(module: nn.Module, encoder: str, what: str) -> str:
    """Load ImageNet weights for ``encoder`` into ``module`` through ``stylseg.weights``; returns their sha256.

    Asked-for weights are never silently missing: a file that is not there, fails its checksum or fits no tensor
    of the encoder is a :class:`StylsegError` naming ``stylseg weights fetch NAME`` and the explicit opt-out,
    ``--set seg.pretrained=false`` (recorded as such in the model's configuration)."""
    from .. import weights as wreg

    name = f"{encoder}-imagenet"
    optout = "or train the encoder from random weights with --set seg.pretrained=false"
    if name not in wreg.WEIGHTS:
        raise StylsegError(f"{what}: seg.pretrained=true, but the weights registry has no ImageNet weights for the "
                           f"encoder {encoder!r} ({name}; `stylseg weights list` shows what it has): {optout}")
    p = Path(wreg.path(name))
    if not p.exists():
        e = wreg.WEIGHTS.get(name)
        raise StylsegError(f"{what}: the ImageNet weights {name} are not at {p}: run `stylseg weights fetch {name}` "
                           f"(or download {e.manual_url()} and put it there), {optout}")
    path = Path(wreg.resolve(name))  # verified by its full sha256
    digest = wreg.verify_local(name)
    if path.is_dir():
        cands = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.pth")) + sorted(path.glob("*.pt"))
        if not cands:
            raise StylsegError(f"{what}: {path} holds no weight file: run `stylseg weights fetch {name}`, {optout}")
        path = cands[0]
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = module.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise StylsegError(f"{what}: no tensor of {path} fits the encoder {encoder!r}; is it another network's file? "
                           f"Delete it and run `stylseg weights fetch {name}`, {optout}")
    module.load_state_dict(matched, strict=False)
    missing = [k for k in own if k not in matched and not k.endswith("num_batches_tracked")]
    if missing:
        warnings.warn(f"{what}: {len(missing)} encoder tensors not in {path.name} (e.g. {missing[0]})")
    return digest


def pretrained_weights(arch: str, seg_cfg) -> Optional[str]:
    """The registry name of the ImageNet weights ``arch`` loads under ``seg_cfg`` (None when ``pretrained`` is
    off): ``<encoder>-imagenet`` for U-Net / U-Net++, ``<pranet_backbone>-imagenet`` for PraNet."""
    if not seg_cfg.pretrained:
        return None
    return f"{segmenter_config(arch, seg_cfg)['encoder']}-imagenet"


def _smp(cls_name: str):
    def build(encoder: str = "resnet18", pretrained: bool = False, encoder_depth: int = 5,
              decoder_channels: Sequence[int] = (256, 128, 64, 32, 16), **kw) -> nn.Module:
        import segmentation_models_pytorch as smp

        decoder_channels = tuple(decoder_channels)
        if len(decoder_channels) != encoder_depth:
            raise StylsegError(f"{cls_name}: decoder_channels {decoder_channels} must have encoder_depth="
                               f"{encoder_depth} entries")
        try:
            model = getattr(smp, cls_name)(encoder_name=encoder, encoder_depth=encoder_depth, encoder_weights=None,
                                           decoder_channels=decoder_channels, classes=1, in_channels=3, **kw)
        except KeyError as e:
            raise StylsegError(f"{cls_name}: unknown encoder {encoder!r} ({e})") from None
        # smp keeps the unused deeper stages of a shallow encoder: drop them (ResNet-style names),
        # so that checkpoints hold only what the model computes with
        for level in (3, 4):
            if encoder_depth < level + 1 and isinstance(getattr(model.encoder, f"layer{level}", None), nn.Module):
                delattr(model.encoder, f"layer{level}")
        if pretrained:
            model.pretrained_sha256 = _load_pretrained(model.encoder, encoder, cls_name)
        return model

    return build


SEGMENTERS.add("unet", _smp("Unet"))
SEGMENTERS.add("unetpp", _smp("UnetPlusPlus"))


@SEGMENTERS.register("pranet")
def _build_pranet(encoder: str = "res2net50d", pretrained: bool = False, channel: int = 32, **kw) -> nn.Module:
    model = PraNet(backbone=encoder, channel=channel)
    if pretrained:
        model.pretrained_sha256 = _load_pretrained(model.backbone, encoder, "PraNet")
    return model


def create_segmenter(name: str, *, encoder: str = "resnet18", pretrained: bool = False,
                     image_size: Optional[int] = None, **kw: Any) -> nn.Module:
    """Build a segmenter by name (``unet``, ``unetpp``, ``pranet``); unknown names list the valid ones.

    ``encoder``: the smp encoder for U-Net/U-Net++, the timm backbone for PraNet;
    ``pretrained``: load ImageNet encoder weights through ``stylseg.weights.resolve("<encoder>-imagenet")``
    (a :class:`StylsegError` naming the fetch command when unavailable: never random weights in their place, and
    never a download here; the model's ``pretrained_sha256`` records the file used);
    ``image_size``: checked to be a multiple of the model's output stride;
    ``kw``: ``encoder_depth``, ``decoder_channels`` (smp models), ``channel`` (PraNet).
    The model is returned in eval mode's signature: logits ``(B,1,H,W)``.
    """
    build = SEGMENTERS.get(name)
    if name == "pranet":
        kw = {k: v for k, v in kw.items() if k not in ("encoder_depth", "decoder_channels")}
    model = build(encoder=encoder, pretrained=pretrained, **kw)
    stride = 32 if name == "pranet" else 2 ** int(kw.get("encoder_depth", 5))
    if image_size is not None and image_size % stride:
        raise StylsegError(f"{name}: image_size {image_size} must be a multiple of {stride} "
                           f"(set seg.image_size accordingly)")
    model.arch_config = {"arch": name, "encoder": encoder, **{k: (list(v) if isinstance(v, tuple) else v)
                                                              for k, v in kw.items()}}
    return model


def segmenter_config(arch: str, seg_cfg) -> Dict[str, Any]:
    """The architecture keyword arguments a :class:`~stylseg.config.SegConfig` gives ``arch``."""
    if arch == "pranet":
        return {"arch": arch, "encoder": seg_cfg.pranet_backbone}
    return {"arch": arch, "encoder": seg_cfg.encoder, "encoder_depth": seg_cfg.encoder_depth,
            "decoder_channels": list(seg_cfg.decoder_channels)}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_segmenter(path, device="cpu") -> nn.Module:
    """Rebuild a segmenter from a model folder written by training (``kind="segmenter"``), in eval mode.
    The folder's ``config.json`` holds ``{"arch", "encoder", ...}`` and ``image_size``."""
    from ..utils import load_model_folder

    meta, state = load_model_folder(path, kind="segmenter")
    cfg_path = Path(path) / "config.json"
    c = dict(meta.get("config") or {})
    if "arch" not in c or "encoder" not in c:
        raise StylsegError(f"{cfg_path}: no arch/encoder in its config; retrain with `stylseg seg train`")
    arch, encoder = c.pop("arch"), c.pop("encoder")
    image_size = c.pop("image_size", None)
    c.pop("normalize", None)
    try:
        model = create_segmenter(arch, encoder=encoder, pretrained=False, **c)
    except StylsegError as e:
        raise StylsegError(f"{cfg_path}: {e}") from None
    except (TypeError, ValueError, KeyError, RuntimeError) as e:  # smp/timm reject unknown encoders and options
        raise StylsegError(f"{cfg_path}: cannot build the segmenter it describes ({type(e).__name__}: {e}); "
                           f"retrain with `stylseg seg train` or restore the config.json written with the weights") from None
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    reshaped = [k for k in want if k in state and tuple(want[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or reshaped:
        parts = [f"{len(v)} {what} (e.g. {v[0]})" for what, v in (("tensors missing", missing),
                 ("unexpected tensors", unexpected), ("tensors of another shape", reshaped)) if v]
        raise StylsegError(f"{cfg_path}: its architecture ({arch}, {encoder}) does not match the weights in "
                           f"{Path(path) / 'model.safetensors'}: {'; '.join(parts)}; the config.json was edited or "
                           f"comes from another model: restore it, or retrain with `stylseg seg train`")
    model.load_state_dict(state)
    model.image_size = image_size
    return model.to(device).eval()
