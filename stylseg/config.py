"""Configuration: small frozen dataclasses, one per stage, and four named profiles.

Profiles (DESIGN.md): ``smoke`` (CI, minutes on 2 CPU cores), ``workshop`` (every lesson's effect visible on the
synthetic domains, about 25 minutes on 2 CPU cores: what ``make reproduce`` and the notebooks default to), ``cpu``
(a laptop workshop, hours) and ``paper`` (the paper's settings, GPU). ``get_profile(name)`` returns a
:class:`RunConfig` holding one config per stage; ``override`` replaces fields by
``"stage.field"`` keys (what every command-line flag does), and unknown profile, stage or
field names raise an error that lists the valid ones.

Each stage reads only its own dataclass, so a stage can be rerun alone with the same
``config.json`` that the run folder holds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from .utils import PRECISIONS, StylsegError, read_json, write_json

PROFILES = ("smoke", "workshop", "cpu", "paper")


@dataclass(frozen=True)
class DataConfig:
    """Data: which images, at what size."""

    kind: str = "polyp"  # polyp | skin (synthetic kind, or real data protocol family)
    source_domain: str = ""  # synthetic source domain name ("" = the kind's default source)
    target_domain: str = ""  # synthetic target domain name ("" = the kind's default target)
    n_per_domain: int = 64  # synthetic images per domain (train + test); 0 = all real images
    test_fraction: float = 0.25  # synthetic: share of each domain held out as test
    diffusion_size: int = 32  # px, square: DiffAE and stylization
    seg_size: int = 64  # px, square: segmentation training and evaluation
    synth_size: int = 128  # px, square: resolution at which synthetic scenes are drawn
    seed: int = 0


@dataclass(frozen=True)
class DDIMConfig:
    """The DDIM schedule and the step grids (docs/method.md sections 2 and 7).

    Step counts are UNet calls actually made. ``t0`` is a fraction of T.
    """

    T: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    t0: float = 0.125  # inversion depth as a fraction of T
    finetune_invert_steps: int = 5
    finetune_gen_steps: int = 3
    apply_invert_steps: int = 10
    apply_gen_steps: int = 5


@dataclass(frozen=True)
class DiffAEConfig:
    """The Diffusion Autoencoder's architecture and training."""

    image_size: int = 32
    base_channels: int = 32
    channel_mult: Tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attn_resolutions: Tuple[int, ...] = (8,)
    enc_channel_mult: Tuple[int, ...] = (1, 2, 2)
    z_dim: int = 64
    dropout: float = 0.0
    #: how the semantic encoder reduces its last feature map to z_sem: "mean" (DiffAE's global average
    #: pool) or "flatten" (a linear map of the whole map, keeping where things are: small models trained
    #: for minutes learn a z_sem that matters this way; see docs/diffusion.md)
    enc_pool: str = "mean"
    #: what the UNet's output means: "eps" (DiffAE) or "v" (v-parameterisation, converted to eps inside the
    #: UNet so that samplers and D_B are unchanged; see docs/diffusion.md)
    prediction: str = "eps"
    batch_size: int = 16
    lr: float = 2e-4
    enc_lr_mult: float = 1.0  # the semantic encoder's learning rate is lr * enc_lr_mult
    #: per-timestep weight of the epsilon-MSE: "eps" (DiffAE's simple loss, weight 1), "v" (1/a_t = 1 + 1/SNR:
    #: the MSE of v, the loss that goes with prediction="v"), "min_snr" (min(SNR, gamma)/SNR, Hang et al. 2023)
    #: or "x0_capped" (max(1, min(1/SNR, gamma)): the noisy steps count up to gamma times more)
    loss_weighting: str = "eps"
    loss_gamma: float = 5.0
    train_steps: int = 300
    ema_decay: float = 0.995
    warmup_steps: int = 20
    grad_clip: float = 1.0
    sample_every: int = 100
    checkpoint_every: int = 100
    max_seconds: float = 0.0  # 0 = no wall-clock cap; else stop (and save) after this many seconds
    sample_steps: int = 20  # UNet calls of the full-depth samples in the training previews
    #: micro-batches: 0 computes each step's ``batch_size`` images at once; k > 0 computes them k at a time and
    #: sums the gradients (the same step in less memory; ``batch_size`` must be a multiple of k)
    micro_batch: int = 0
    #: where D_A comes from (notebook 02): "train" (train this config), a kit model folder, a DiffAE Lightning
    #: checkpoint (imported) or a weights-registry name such as "diffae-ffhq256-autoenc" (the published FFHQ
    #: DiffAE that OSASIS and the paper start from; docs/diffusion.md)
    init: str = "train"


@dataclass(frozen=True)
class StylizeConfig:
    """One-shot fine-tuning of D_B + SPN and applying it (docs/method.md sections 3, 4 and 7).

    ``preset`` names a bundle of the method's settings (:data:`PRESETS`, docs/stylization.md): setting it
    (``--set stylize.preset=gates``) sets every field the preset holds; later ``--set``s change single fields.
    """

    preset: str = "osasis"  # osasis | paper | gates (PRESETS)
    iterations: int = 10
    lr_unet: float = 1e-4
    lr_spn: float = 1e-4
    batch_size: int = 4
    spn_form: str = "paper"  # paper (1x1 conv stack, no time) | osasis (time scale-shift MLP)
    spn_hidden: int = 64  # the SPN's hidden channels
    spn_lambda: float = 0.1
    loss_set: str = "osasis"  # paper | osasis
    embedder: str = "weightfree"  # weightfree | clip
    clip_model: str = "ViT-B-32"
    clip_pretrained: str = "openai"
    #: the osasis set's perceptual reconstruction of the style pair: lpips (OSASIS's LPIPS, VGG16 weights through the
    #: registry), msssim (the stand-in 1 - MS-SSIM), auto (lpips when its weights are present, else msssim)
    recon_perceptual: str = "auto"
    w_cycle: float = 0.0  # lambda_2: L_cycle (paper set; L_adv / the cross-domain loss has weight lambda_1 = 1)
    w_structure: float = 0.0  # lambda_3: L_SPN, in either loss set (0 in OSASIS as published)
    spn_role: str = "joint"  # joint (every term trains D_B and the SPN) | guard (L_SPN alone trains the SPN)
    structure_region: str = "image"  # image | lesion: where L_SPN compares and where the SPN term enters
    style_pair_tries: int = 4  # D_A renders of the style image to pick x_A_style from
    style_pair_pick: str = "fidelity"  # fidelity (nearest the style image) | domain (most typical of domain A)
    style_pair_t0: float = 0.0  # depth of those renders as a fraction of T; 0 = ddim.t0
    upsample: str = "detail"  # diffusion size -> seg size: detail | detail_lesion | bilinear
    sensor: str = "off"  # off | match: the style image's blur and noise on the st arms, after upsampling
    apply_batch_size: int = 16
    grad_clip: float = 0.0  # 0 = off; else clip D_B + SPN gradients to this norm
    checkpoint_every: int = 5  # fine-tuning iterations between resumable checkpoints


#: The stylizer's named presets: what each sets. ``"ddim.apply_gen_steps": "finetune"`` applies with as many
#: generation steps as the fine-tuning walks (``ddim.finetune_gen_steps``); ``"profile"`` keeps the profile's.
#: docs/stylization.md has the table, docs/results.md the measurements behind ``gates``.
PRESETS: Dict[str, Dict[str, Any]] = {
    # OSASIS as published (its loss set, its style pair), with the paper's SPN
    "osasis": {"loss_set": "osasis", "w_cycle": 0.0, "w_structure": 0.0,
               "spn_role": "joint", "structure_region": "image", "spn_lambda": 0.1, "lr_spn": 1e-4,
               "style_pair_pick": "fidelity", "style_pair_tries": 4, "style_pair_t0": 0.0, "upsample": "detail",
               "sensor": "off", "ddim.apply_gen_steps": "profile"},
    # the paper's loss set (eq. 13: lambda_1 L_adv + lambda_2 L_cycle + lambda_3 L_SPN, each weight 1)
    "paper": {"loss_set": "paper", "w_cycle": 1.0, "w_structure": 1.0,
              "spn_role": "joint", "structure_region": "image", "spn_lambda": 0.1, "lr_spn": 1e-4,
              "style_pair_pick": "fidelity", "style_pair_tries": 4, "style_pair_t0": 0.0, "upsample": "detail",
              "sensor": "off", "ddim.apply_gen_steps": "profile"},
    # the stylizer tuned to the style and lesion gates (scores.gate_verdicts) on the cpu profile: it keeps the
    # lesion on every D_A measured; the style gate it meets or misses narrowly depending on the D_A (docs/results.md)
    "gates": {"loss_set": "osasis", "w_cycle": 0.0, "w_structure": 0.25,
              "spn_role": "guard", "structure_region": "lesion", "spn_lambda": 1.0, "lr_spn": 1e-5,
              "style_pair_pick": "domain", "style_pair_tries": 16, "style_pair_t0": 0.625,
              "upsample": "detail_lesion", "sensor": "match", "ddim.apply_gen_steps": "finetune"},
}


@dataclass(frozen=True)
class SegConfig:
    """Segmentation training (docs/method.md section 5)."""

    archs: Tuple[str, ...] = ("unet",)
    encoder: str = "resnet18"
    encoder_depth: int = 5
    decoder_channels: Tuple[int, ...] = (256, 128, 64, 32, 16)
    pranet_backbone: str = "resnet18"
    pretrained: bool = False  # ImageNet encoder weights through the weights registry
    image_size: int = 64
    batch_size: int = 12
    epochs: int = 3
    lr: float = 1e-3
    epochs_by_arch: Tuple[Tuple[str, int], ...] = ()
    lr_by_arch: Tuple[Tuple[str, float], ...] = ()
    multiscale: Tuple[float, ...] = ()  # PraNet-style multi-scale training, e.g. (0.75, 1.0, 1.25)
    grad_clip: float = 0.0
    color_jitter: bool = False
    augment: bool = True
    seeds: int = 1

    def epochs_for(self, arch: str) -> int:
        return dict(self.epochs_by_arch).get(arch, self.epochs)

    def lr_for(self, arch: str) -> float:
        return dict(self.lr_by_arch).get(arch, self.lr)


@dataclass(frozen=True)
class EvalConfig:
    protocol: str = "standard"  # standard | paper
    bootstrap: int = 1000
    #: the arms notebook 06 trains and every table shows, by base name (``--styles K`` adds each one's
    #: ``<arm>@s<k>``): direct, oracle, any folder under RUN/stylized (notebook 05 writes st, st_nospn,
    #: recon, histogram, reinhard, fda), ``source+<arm>`` (the source set with that arm's images) and
    #: ``jitter`` (colour jitter; ``stylseg.arms``); e.g. ``--set eval.arms=direct,st,source+st,recon``
    arms: Tuple[str, ...] = ("direct", "st", "st_nospn", "recon", "histogram", "reinhard", "fda", "oracle")
    #: stylizer presets compared in one run (``stylseg reproduce --presets osasis,paper,gates``): one stylizer per
    #: preset on the shared D_A, its arms named ``<arm>@<preset>`` (``st@gates``); empty = ``stylize.preset`` alone
    presets: Tuple[str, ...] = ()


@dataclass(frozen=True)
class RunConfig:
    """Everything one run uses; written as ``RUN/config.json``."""

    profile: str = "smoke"
    seed: int = 0
    device: str = "auto"
    #: arithmetic of DiffAE training and fine-tuning: "auto" (bf16 autocast on a GPU that supports it, else fp32),
    #: "bf16" or "fp32"
    precision: str = "auto"
    #: recompute the UNet's activations in the backward pass of DiffAE training and fine-tuning (less memory,
    #: about a third more time per step)
    grad_checkpoint: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    ddim: DDIMConfig = field(default_factory=DDIMConfig)
    diffae: DiffAEConfig = field(default_factory=DiffAEConfig)
    stylize: StylizeConfig = field(default_factory=StylizeConfig)
    seg: SegConfig = field(default_factory=SegConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunConfig":
        # "run_format": the run-folder format that RUN/config.json carries (stylseg.layout), not a setting
        cfg = _from_dict(cls, {k: v for k, v in d.items() if k != "run_format"} if isinstance(d, Mapping) else d,
                         "config")
        _check_multiscale(cfg.seg)
        return cfg

    @classmethod
    def load(cls, path) -> "RunConfig":
        """The config saved at ``path``; a file that is not a run config raises :class:`StylsegError` naming it."""
        try:
            return cls.from_dict(read_json(path))
        except StylsegError as e:
            if str(e).startswith(str(path)):
                raise
            raise StylsegError(f"{path}: {e} (fix the file, or delete it to start from the profile)") from None

    def override(self, **kv: Any) -> "RunConfig":
        """Replace fields: ``cfg.override(**{"seg.epochs": 5, "seed": 1})``."""
        return override(self, kv)


STAGES = ("data", "ddim", "diffae", "stylize", "seg", "eval")

#: fields that take one of a few names, checked whenever a config is made or overridden, so that a typo in
#: ``--set stylize.upsample=detial`` stops the run at once instead of in the stage that first reads it (the
#: modules that use them hold the same tuples: tests/test_config.py checks that they agree). Registries that
#: users extend (style embedders, architectures) are checked by the registry itself.
CHOICES: Dict[str, Tuple[str, ...]] = {
    "data.kind": ("polyp", "skin"),
    "precision": PRECISIONS,
    "diffae.enc_pool": ("mean", "flatten"),
    "diffae.prediction": ("eps", "v"),
    "diffae.loss_weighting": ("eps", "v", "min_snr", "x0_capped"),
    "stylize.spn_form": ("paper", "osasis"),
    "stylize.loss_set": ("paper", "osasis"),
    "stylize.preset": tuple(PRESETS),
    "stylize.spn_role": ("joint", "guard"),
    "stylize.structure_region": ("image", "lesion"),
    "stylize.upsample": ("bilinear", "detail", "detail_lesion"),
    "stylize.sensor": ("off", "match"),
    "stylize.style_pair_pick": ("fidelity", "domain"),
    "stylize.recon_perceptual": ("auto", "lpips", "msssim"),
    "eval.protocol": ("standard", "paper"),
}


#: numeric fields with a range, checked like CHOICES: ``--set ddim.apply_gen_steps=0`` would otherwise fail deep in
#: the sampler, after the arm's folder was made. (low, high, what): low inclusive, high inclusive or None
RANGES: Dict[str, Tuple[float, Optional[float], str]] = {
    "ddim.T": (1, None, "an integer >= 1"),
    "ddim.t0": (1e-9, 1.0, "a fraction of T in (0, 1]"),
    "ddim.finetune_invert_steps": (1, None, "an integer >= 1 (UNet calls)"),
    "ddim.finetune_gen_steps": (1, None, "an integer >= 1 (UNet calls)"),
    "ddim.apply_invert_steps": (1, None, "an integer >= 1 (UNet calls)"),
    "ddim.apply_gen_steps": (1, None, "an integer >= 1 (UNet calls)"),
    "stylize.style_pair_t0": (0.0, 1.0, "0 (= ddim.t0) or a fraction of T in (0, 1]"),
    # sizes, counts and learning rates: a zero or negative count would run nothing and write an untrained model,
    # a NaN learning rate would train to NaN weights (every float in RANGES must also be finite)
    "data.diffusion_size": (8, None, "a size in pixels >= 8"),
    "data.seg_size": (8, None, "a size in pixels >= 8"),
    "data.n_per_domain": (0, None, "0 (all real images) or a count >= 1"),
    "data.test_fraction": (1e-9, 0.999999, "a share in (0, 1)"),
    "diffae.image_size": (8, None, "a size in pixels >= 8"),
    "diffae.batch_size": (1, None, "an integer >= 1"),
    "diffae.lr": (1e-12, None, "a finite learning rate > 0"),
    "diffae.enc_lr_mult": (0.0, None, "a finite multiplier >= 0"),
    "diffae.train_steps": (1, None, "an integer >= 1"),
    "diffae.ema_decay": (0.0, 0.99999, "0 (off) or a decay in (0, 1)"),
    "diffae.grad_clip": (0.0, None, "0 (off) or a finite norm > 0"),
    "diffae.max_seconds": (0.0, None, "0 (no cap) or seconds > 0"),
    "diffae.micro_batch": (0, None, "0 (the whole batch at once) or a count >= 1 that divides diffae.batch_size"),
    "stylize.iterations": (0, None, "an integer >= 0"),
    "stylize.lr_unet": (0.0, None, "a finite learning rate >= 0"),
    "stylize.lr_spn": (0.0, None, "a finite learning rate >= 0"),
    "stylize.batch_size": (1, None, "an integer >= 1"),
    "stylize.apply_batch_size": (1, None, "an integer >= 1"),
    "seg.image_size": (8, None, "a size in pixels >= 8"),
    "seg.batch_size": (2, None, "an integer >= 2 (BatchNorm needs two images per batch)"),
    "seg.epochs": (1, None, "an integer >= 1"),
    "seg.lr": (1e-12, None, "a finite learning rate > 0"),
    "seg.grad_clip": (0.0, None, "0 (off) or a finite bound > 0"),
    "seg.seeds": (1, None, "an integer >= 1"),
    "eval.bootstrap": (0, None, "0 (off) or a count >= 1"),
}

#: per-architecture values (tuples of ``(arch, value)``): each value is checked like the RANGES entry named
PER_ARCH_RANGES = {"seg.epochs_by_arch": "seg.epochs", "seg.lr_by_arch": "seg.lr"}


#: list fields whose every item is checked like the CHOICES entry named
ITEM_CHOICES = {"eval.presets": "stylize.preset"}


def _check_choice(key: str, value: Any, shown: Optional[str] = None, set_key: Optional[str] = None) -> None:
    if key in ITEM_CHOICES:
        valid = CHOICES[ITEM_CHOICES[key]]
        bad = [v for v in value if v not in valid]
        if bad or len(set(value)) != len(value):
            what = f"{bad[0]!r} is not one of {', '.join(valid)}" if bad else "a name is given twice"
            raise StylsegError(f"{key}={','.join(map(str, value))}: {what} (set it with --set {key}=NAME,NAME,..."
                               + (", or stylseg reproduce --presets NAME,NAME,...)" if key == "eval.presets" else ")"))
        return
    valid = CHOICES.get(key)
    if valid is not None and value not in valid:
        raise StylsegError(f"{key}={value!r} is not one of {', '.join(valid)} (set it with --set {key}=NAME)")
    if key in PER_ARCH_RANGES:
        for item in value:
            if len(item) != 2:
                raise StylsegError(f"{key}: expected (arch, value) pairs, got {item!r}")
            _check_choice(PER_ARCH_RANGES[key], item[1], shown=f"{key} ({item[0]})", set_key=key)
        return
    rng = RANGES.get(key)
    if rng is None:
        return
    bad = not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
    if bad or not (value >= rng[0] and (rng[1] is None or value <= rng[1])):
        raise StylsegError(f"{shown or key}={value!r} is out of range: expected {rng[2]} (set it with --set "
                           f"{set_key or key}=VALUE)")


def _paper_seg() -> SegConfig:
    return SegConfig(
        archs=("unet", "unetpp", "pranet"), encoder="resnet34", pranet_backbone="res2net50d",
        pretrained=True, image_size=256, batch_size=12, epochs=30, lr=5e-5,
        epochs_by_arch=(("pranet", 40), ("unet", 30), ("unetpp", 30)),
        lr_by_arch=(("pranet", 1e-4), ("unet", 5e-5), ("unetpp", 8e-5)),
        grad_clip=0.5, seeds=3,
    )


def _workshop() -> RunConfig:
    """The workshop profile: the cpu profile's recipe (v-prediction, flattened code, the ``gates`` stylizer) with the
    smoke profile's diffusion size, step budgets (never a clock) and about 19 CPU-minutes for notebooks 00-07. On the
    built-in synthetic domains z_sem, the structure term's hold on the lesion, the restyling and direct training's
    failure on the target show; the stylized arm beating direct does not (docs/results.md, "The workshop profile")."""
    return RunConfig(
        profile="workshop",
        # segmentation at 128 px, as the cpu profile: the gates preset's sensor matching estimates the style image's
        # blur at the segmentation size, and at 64 px it finds 2.7 px (the lesion's structure falls to 0.52) where at
        # 128 px it finds 0.9 px (0.97), docs/results.md
        data=DataConfig(n_per_domain=128, diffusion_size=32, seg_size=128),
        ddim=DDIMConfig(t0=0.25, finetune_invert_steps=10, finetune_gen_steps=5, apply_invert_steps=20,
                        apply_gen_steps=10),
        diffae=DiffAEConfig(image_size=32, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                            attn_resolutions=(8,), enc_channel_mult=(1, 2, 2), z_dim=64, batch_size=16,
                            # 1250 steps: renders from pure noise with the image's own z_sem put the polyp and the lumen
                            # where the image has them, the mean code does not (SSIM +0.08, docs/results.md); 500 steps
                            # do not yet (+0.02)
                            lr=1e-3, train_steps=1250, sample_every=500, checkpoint_every=250, max_seconds=0.0,
                            enc_pool="flatten", prediction="v", loss_weighting="v"),
        stylize=StylizeConfig(iterations=60, lr_unet=1e-4, batch_size=4),  # preset gates, in _profiles
        seg=SegConfig(archs=("unet",), encoder="resnet18", encoder_depth=3, decoder_channels=(32, 16, 8),
                      image_size=128, batch_size=8, epochs=12, lr=3e-3, seeds=1),
        eval=EvalConfig(arms=("direct", "st", "recon", "histogram", "oracle")),
    )


def _profiles_base() -> Dict[str, RunConfig]:
    """The profiles before their presets are applied (what a preset's ``"profile"`` step count reads)."""
    return _profiles(presets=False)


def _profiles(presets: bool = True) -> Dict[str, RunConfig]:
    smoke = RunConfig(
        profile="smoke",
        data=DataConfig(n_per_domain=64, diffusion_size=32, seg_size=64),
        ddim=DDIMConfig(t0=0.125, finetune_invert_steps=5, finetune_gen_steps=3, apply_invert_steps=10, apply_gen_steps=5),
        diffae=DiffAEConfig(image_size=32, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                            attn_resolutions=(8,), enc_channel_mult=(1, 2, 2), z_dim=64, batch_size=16,
                            # a step budget, not a clock: the same D_A on every machine (~90 s on 2 idle cores)
                            lr=1e-3, train_steps=240, sample_every=100, checkpoint_every=100, max_seconds=0.0),
        stylize=StylizeConfig(iterations=10, lr_unet=1e-4, batch_size=4),  # preset osasis: CI checks the plumbing
        seg=SegConfig(archs=("unet",), encoder="resnet18", encoder_depth=3, decoder_channels=(32, 16, 8),
                      image_size=64, batch_size=8, epochs=8, lr=3e-3, seeds=1),
        eval=EvalConfig(arms=("direct", "st", "st_nospn", "recon", "jitter", "source+st", "source+recon", "histogram",
                              "source+histogram", "reinhard", "fda", "oracle")),
    )
    workshop = _workshop()
    cpu = RunConfig(
        profile="cpu",
        data=DataConfig(n_per_domain=256, diffusion_size=64, seg_size=128),
        ddim=DDIMConfig(t0=0.25, finetune_invert_steps=10, finetune_gen_steps=5, apply_invert_steps=20, apply_gen_steps=10),
        # 3.7 M params; 4000 steps ~ 33 min on 2 idle cores (0.49 s/step at batch 16), capped at 40 min.
        # flatten + v: a z_sem that matters after minutes of training (eps/mean: SSIM own = shuffled), and the
        # code-matters gate needs the 4000 steps (+0.039 SSIM after 2000, +0.107 after 4000; docs/diffusion.md)
        diffae=DiffAEConfig(image_size=64, base_channels=24, channel_mult=(1, 2, 4, 4), num_res_blocks=1,
                            attn_resolutions=(8,), enc_channel_mult=(1, 2, 2, 4), z_dim=128, batch_size=16,
                            lr=5e-4, train_steps=4000, sample_every=500, checkpoint_every=250, max_seconds=2400.0,
                            enc_pool="flatten", prediction="v", loss_weighting="v"),
        stylize=StylizeConfig(iterations=100, lr_unet=1e-4, batch_size=4),  # preset gates, below
        seg=SegConfig(archs=("unet",), encoder="resnet18", image_size=128, batch_size=12, epochs=20, lr=3e-4, seeds=3),
        # st_nospn is still made and scored by notebook 05; training on it (3 more segmentation runs, about 15 min
        # on 2 cores) is left to --set eval.arms=...,st_nospn
        eval=EvalConfig(arms=("direct", "st", "recon", "histogram", "reinhard", "fda", "oracle")),
    )
    paper = RunConfig(
        profile="paper",
        data=DataConfig(n_per_domain=0, diffusion_size=256, seg_size=256, synth_size=256),
        ddim=DDIMConfig(t0=0.5, finetune_invert_steps=25, finetune_gen_steps=10, apply_invert_steps=50, apply_gen_steps=25),
        diffae=DiffAEConfig(image_size=256, base_channels=128, channel_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2,
                            attn_resolutions=(16,), enc_channel_mult=(1, 1, 2, 2, 4, 4), z_dim=512, dropout=0.1,
                            batch_size=32, lr=1e-4, train_steps=100_000, ema_decay=0.9999, warmup_steps=1000,
                            sample_every=5000, checkpoint_every=2000, max_seconds=0.0,
                            # 4 micro-batches of 8: batch 32 within 40 GiB (92 GiB at once, measured on an H200)
                            micro_batch=8,
                            # D_A is the published FFHQ DiffAE, as OSASIS and the paper ran it; the fields above
                            # are what --set diffae.init=train trains instead (about 15 GPU-hours on one H200)
                            init="diffae-ffhq256-autoenc"),
        # the published settings: OSASIS's loss set and style pair, CLIP, LPIPS, OSASIS's learning rate for D_B
        stylize=StylizeConfig(iterations=200, lr_unet=5e-6, batch_size=8, embedder="clip", recon_perceptual="lpips"),
        seg=_paper_seg(),
    )
    if not presets:
        return {"smoke": smoke, "workshop": workshop, "cpu": cpu, "paper": paper}
    return {"smoke": smoke, "workshop": with_preset(workshop, "gates"), "cpu": with_preset(cpu, "gates"),
            "paper": paper}


def with_preset(cfg: RunConfig, name: str) -> RunConfig:
    """``cfg`` with the stylizer preset ``name`` (:data:`PRESETS`): ``stylize.preset`` and every field the preset
    holds are set; the rest of ``cfg`` is kept. An unknown name lists the valid ones."""
    _check_choice("stylize.preset", name)
    bundle = PRESETS[name]
    out = replace(cfg, stylize=replace(cfg.stylize, preset=name, **{k: v for k, v in bundle.items() if "." not in k}))
    steps = bundle["ddim.apply_gen_steps"]
    if steps == "finetune":
        n = cfg.ddim.finetune_gen_steps
    else:  # the profile's own count
        base = _profiles_base().get(cfg.profile)
        n = base.ddim.apply_gen_steps if base is not None else DDIMConfig().apply_gen_steps
    return replace(out, ddim=replace(out.ddim, apply_gen_steps=n))


def preset_changes(cfg: RunConfig) -> Dict[str, Any]:
    """The fields a preset holds that ``cfg`` sets otherwise: ``{"stage.field": value}`` ({} = the preset as it
    is). Recorded with every stylizer and arm, next to the preset's name."""
    ref = with_preset(cfg, cfg.stylize.preset)
    out = {}
    for key in PRESETS[cfg.stylize.preset]:
        stage, name = key.split(".", 1) if "." in key else ("stylize", key)
        if getattr(getattr(cfg, stage), name) != getattr(getattr(ref, stage), name):
            out[f"{stage}.{name}"] = getattr(getattr(cfg, stage), name)
    return out


def get_profile(name: str = "smoke") -> RunConfig:
    """The named profile's :class:`RunConfig`; unknown names list the valid ones."""
    profs = _profiles()
    if name not in profs:
        raise StylsegError(f"unknown profile {name!r}; valid profiles: {', '.join(PROFILES)}")
    return profs[name]


# --------------------------------------------------------------------------- overrides
def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a value (possibly a command-line string) to the annotated type."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise StylsegError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            inner = args[0]
            return tuple(_coerce(v, inner, where) for v in value)
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise StylsegError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise StylsegError(f"{where}: expected an integer, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError, OverflowError):
            raise StylsegError(f"{where}: expected an integer, got {value!r}") from None
        if not math.isfinite(f) or f != int(f):  # nan, inf and 1e400 are no integer
            rule = RANGES.get(where[len("config."):] if where.startswith("config.") else where)
            raise StylsegError(f"{where}: expected {rule[2] if rule else 'an integer'}, got {value!r}")
        return int(f)
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise StylsegError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str):
            raise StylsegError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _hints(cls) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


#: settings the kit no longer has, at the one value that behaves as the kit does now: dropped when an earlier
#: config holding them is read (any other value is refused as unknown)
RETIRED = {"DDIMConfig": {"eta": 0.0}}


def _from_dict(cls, d: Mapping[str, Any], where: str):
    if not isinstance(d, Mapping):
        raise StylsegError(f"{where}: expected a JSON object of {cls.__name__} fields, got {type(d).__name__} "
                           f"{str(d)[:40]!r}")
    hints = _hints(cls)
    valid = {f.name for f in fields(cls)}
    retired = RETIRED.get(cls.__name__, {})
    d = {k: v for k, v in d.items() if not (k in retired and v == retired[k])}
    unknown = set(d) - valid
    if unknown:
        hint = (" (written by an earlier stylseg, whose stylizer switches are now presets: make the run again in a "
                "new folder, with --set stylize.preset=NAME)" if cls is StylizeConfig else "")
        raise StylsegError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; valid fields: "
                           f"{', '.join(sorted(valid))}{hint}")
    kw = {}
    for k, v in d.items():
        tp = hints[k]
        if dataclasses.is_dataclass(tp):
            kw[k] = _from_dict(tp, v, f"{where}.{k}")
        else:
            if typing.get_origin(tp) is tuple and isinstance(v, list):
                args = typing.get_args(tp)
                if args and typing.get_origin(args[0]) is tuple:  # tuple of pairs
                    v = tuple(tuple(x) for x in v)
                    kw[k] = v
                    _check_choice(f"{where}.{k}".split(".", 1)[-1], v)
                    continue
            kw[k] = _coerce(v, tp, f"{where}.{k}")
            _check_choice(f"{where}.{k}".split(".", 1)[-1], kw[k])  # "config.stylize.upsample" -> "stylize.upsample"
    return cls(**kw)


def override(cfg: RunConfig, kv: Mapping[str, Any]) -> RunConfig:
    """Return ``cfg`` with ``{"stage.field": value}`` (or top-level ``{"seed": 1}``) replaced.

    Values may be strings (from a command line) and are converted to the field's type.
    ``None`` values are ignored, so unset flags keep the profile's default.
    """
    top_hints = _hints(RunConfig)
    out = cfg
    if kv.get("stylize.preset") is not None:  # the preset first, so that the other keys change single fields of it
        out = with_preset(out, _coerce(kv["stylize.preset"], str, "stylize.preset"))
        kv = {k: v for k, v in kv.items() if k != "stylize.preset"}
    for key, value in kv.items():
        if value is None:
            continue
        if "." in key:
            stage, name = key.split(".", 1)
            if stage not in STAGES:
                raise StylsegError(f"unknown config stage {stage!r} in {key!r}; valid stages: {', '.join(STAGES)}")
            sub = getattr(out, stage)
            hints = _hints(type(sub))
            if name not in hints:
                raise StylsegError(
                    f"unknown field {name!r} in stage {stage!r}; valid fields: {', '.join(sorted(hints))}")
            new_value = _coerce(value, hints[name], key)
            _check_choice(key, new_value)
            new_sub = replace(sub, **{name: new_value})
            out = replace(out, **{stage: new_sub})
        else:
            if key not in top_hints or key in STAGES:
                top = ", ".join(k for k in top_hints if k not in STAGES)
                raise StylsegError(f"unknown config field {key!r}; valid: {top}, or STAGE.FIELD with "
                                   f"STAGE in {', '.join(STAGES)}")
            new_value = _coerce(value, top_hints[key], key)
            _check_choice(key, new_value)
            out = replace(out, **{key: new_value})
    _check_multiscale(out.seg)
    return out


def _check_multiscale(sc) -> None:
    """PraNet's multi-scale rates resize each batch to ``round(seg.image_size * rate / 32) * 32`` px: every rate
    must be finite and give at least 32 px (rate 1 keeps the size), checked before any work."""
    for r in sc.multiscale:
        if r == 1.0 or (math.isfinite(r) and round(sc.image_size * r / 32) * 32 >= 32):
            continue
        shown = ",".join(f"{x:g}" for x in sc.multiscale)
        raise StylsegError(f"seg.multiscale={shown} is out of range: rate {r:g} gives "
                           f"{'no size' if not math.isfinite(r) else f'{round(sc.image_size * r / 32) * 32} px'} at "
                           f"seg.image_size={sc.image_size}; expected rates that give at least 32 px (sizes are "
                           f"rounded to multiples of 32), e.g. 0.75,1,1.25, or nothing for off (set it with --set "
                           f"seg.multiscale=RATES)")


def resolve_precision(cfg, device) -> str:
    """``"bf16"`` or ``"fp32"``: what ``cfg.precision`` means on ``device`` ("auto": bf16 on a CUDA GPU that
    supports it, fp32 elsewhere)."""
    import torch

    p = cfg.precision
    if p == "auto":
        dev = torch.device(device) if not isinstance(device, torch.device) else device
        return "bf16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    return p


def memory_settings(cfg, stage: str) -> Dict[str, Any]:
    """The settings that trade memory for time in ``stage`` ("diffae" training or "stylize" fine-tuning), as a
    table row names them."""
    out: Dict[str, Any] = {"precision": cfg.precision}
    if stage == "diffae" and cfg.diffae.micro_batch:
        out["micro-batch"] = cfg.diffae.micro_batch
    if cfg.grad_checkpoint:
        out["checkpointing"] = "on"
    return out


def parse_set_args(items) -> Dict[str, str]:
    """``["seg.epochs=5", "ddim.t0=0.25"]`` -> dict; used by ``--set`` on the command line."""
    out = {}
    for it in items or ():
        if "=" not in it:
            raise StylsegError(f"--set expects KEY=VALUE (e.g. seg.epochs=5), got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def describe(cfg: RunConfig) -> str:
    """Human-readable dump of a config (for notebooks and ``--help``)."""
    return json.dumps(cfg.to_dict(), indent=2)
