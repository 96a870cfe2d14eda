"""Scores of a stylizer that doing nothing cannot game (docs/method.md section 7).

``score_arm(input_dir, output_dir, target_dir)`` compares each output image with the input it
was made from (paired by file stem) and the output set with a target-domain set:

Structure (1 = the input's structure kept):

- ``structure_ssim``: SSIM of the locally normalised luminance ``S`` of input and output
  (:func:`stylseg.stylize.losses.structure_map`, which removes colour, brightness and contrast);
- ``structure_ssim_lesion``: the same around the lesion, at half the size (:func:`lesion_ssim`):
  the lesion's location, size and shape, without the frame's corners and the camera's pixel noise,
  which the whole-image score counts as structure (the target look itself scores 0.41 there);
- ``structure_edge_f1``: agreement of Canny edges within 3 px of the lesion boundary
  (F1 of output edges vs input edges, 1 px matching tolerance, inside the 3 px band);
- ``structure_boundary_contrast``: a diagnostic, not a gate (:func:`boundary_contrast`): how much the
  output sharpens the lesion's boundary against the rest of the image, relative to the input (1 = as
  the input; a rim drawn along the lesion, which the contrast-invariant scores above count as kept
  structure, raises it);
- ``oracle_dice_output`` / ``oracle_dice_input`` / ``oracle_dice_ratio``: the Dice against the
  original masks of an *oracle* segmenter (trained on labelled images of both domains,
  :func:`train_oracle`) on the outputs, on the inputs, and their ratio.

Style (toward the target):

- ``style_fd_output`` (and ``style_fd_input`` for the inputs, ``style_fd_ratio``): the Frechet
  distance to the target set of Gaussians fitted to features no loss uses (CIELAB mean, std
  and skewness per channel; uniform LBP histograms at radii 1 and 2), standardised on the
  inputs and targets; also ``style_fd_lbp_*`` on the LBP part alone (the weight-free embedder
  sees colour moments but never LBP);
- ``style_p_target_output`` / ``style_p_target_input``: the mean probability of "target"
  from a logistic-regression domain classifier on those features, trained on held-out
  images (2-fold cross-fitting: the classifier that scores an image never saw it or its
  input), with its held-out accuracy ``style_clf_acc``.

Doing nothing (output = input) scores structure 1, ``style_fd_ratio`` 1 and
``style_p_target_output`` equal to the inputs' value.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..data.dataset import IMAGENET_MEAN, IMAGENET_STD
from ..data.io import list_images, read_image, read_mask, resize_image, resize_mask
from ..utils import StylsegError, load_model_folder, save_model_folder

ORACLE_KIND = "oracle-segmenter"


# --------------------------------------------------------------------------- structure
def structure_map_np(img: np.ndarray) -> np.ndarray:
    """Locally normalised luminance of an RGB uint8 image (H,W,3) -> float32 (H,W)."""
    import torch

    from ..data.io import to_tensor_pm1
    from .losses import structure_map

    with torch.no_grad():
        return structure_map(to_tensor_pm1(img)[None])[0, 0].numpy()


def lnl_ssim(inp: np.ndarray, out: np.ndarray) -> float:
    """SSIM of the locally normalised luminance maps of two RGB uint8 images of the same size."""
    from skimage.metrics import structural_similarity

    a, b = structure_map_np(inp), structure_map_np(out)
    rng = float(max(a.max() - a.min(), b.max() - b.min(), 1e-6))
    win = min(7, (min(a.shape) // 2) * 2 - 1)
    return float(structural_similarity(a, b, data_range=rng, win_size=win))


def lesion_ssim(inp: np.ndarray, out: np.ndarray, mask: np.ndarray, band: float = 1 / 16) -> float:
    """SSIM of the locally normalised luminance maps around the lesion: both images at half their size
    (where a camera's pixel noise and a pixel of blur are averaged out), the SSIM map averaged over
    the pixels within ``band`` x the side (8 px at 128) of the lesion boundary. NaN for an empty or
    full mask. Calibrated on the synthetic domains (``benchmarks/bench_style_factors.py``): the same
    scenes rendered with the whole target look score about 0.85, the input shifted by 3 px about 0.3."""
    from skimage.metrics import structural_similarity

    h = max(16, inp.shape[0] // 2)
    m = resize_mask(mask, h)
    b = boundary_band(m, max(1, int(round(band * h))))
    if not b.any():
        return float("nan")
    a, c = structure_map_np(resize_image(inp, h)), structure_map_np(resize_image(out, h))
    rng = float(max(a.max() - a.min(), c.max() - c.min(), 1e-6))
    _, smap = structural_similarity(a, c, data_range=rng, win_size=7, full=True)
    return float(smap[b].mean())


def boundary_contrast(inp: np.ndarray, out: np.ndarray, mask: np.ndarray, band: float = 1 / 16) -> float:
    """How much the output sharpens (> 1) or softens (< 1) the lesion's boundary against the rest of the image,
    relative to the input: ``(g_out(band) / g_out(image)) / (g_in(band) / g_in(image))`` with ``g`` the mean
    luminance gradient magnitude (Sobel) at half the size and ``band`` the pixels within ``band`` x the side of the
    boundary, as in :func:`lesion_ssim`. A change of look that acts on the whole image alike (colour, brightness,
    contrast, blur) cancels; a dark or bright rim drawn along the lesion, which the locally normalised structure
    scores do not see (they are contrast-invariant by design), raises it. NaN for an empty or full mask.
    Calibrated on the synthetic domains (tests/test_scores.py): the same scene in the target's whole look scores
    about 0.83 (its noise raises the gradient everywhere), a dark 3 px rim along the lesion above 1.3."""
    from scipy import ndimage

    h = max(16, inp.shape[0] // 2)
    b = boundary_band(resize_mask(mask, h), max(1, int(round(band * h))))
    if not b.any():
        return float("nan")

    def grad(img):
        y = _gray(resize_image(img, h))
        return np.hypot(ndimage.sobel(y, 0), ndimage.sobel(y, 1))

    gi, go = grad(inp), grad(out)
    eps = 1e-8
    return float((go[b].mean() / (go.mean() + eps)) / (gi[b].mean() / (gi.mean() + eps) + eps))


def _gray(img: np.ndarray) -> np.ndarray:
    return (img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])) / 255.0


def boundary_band(mask: np.ndarray, width: int = 3) -> np.ndarray:
    """Pixels within ``width`` px of the lesion boundary (bool (H,W)); empty for an empty mask."""
    from scipy import ndimage

    if not mask.any() or mask.all():
        return np.zeros_like(mask, dtype=bool)
    inner = ndimage.distance_transform_edt(mask)
    outer = ndimage.distance_transform_edt(~mask)
    return ((inner > 0) & (inner <= width)) | ((outer > 0) & (outer <= width))


def canny_edges(img: np.ndarray) -> np.ndarray:
    """Canny edges of the luminance with quantile thresholds (0.8 / 0.9): contrast-invariant."""
    from skimage.feature import canny

    return canny(_gray(img), sigma=1.0, low_threshold=0.8, high_threshold=0.9, use_quantiles=True)


def edge_agreement(inp: np.ndarray, out: np.ndarray, mask: np.ndarray, band: int = 3, tol: int = 1) -> float:
    """F1 of the output's Canny edges against the input's, inside the ``band`` px band around the
    lesion boundary, edges matching within ``tol`` px. NaN when the mask is empty or full, or
    neither image has an edge in the band."""
    from scipy import ndimage

    b = boundary_band(mask, band)
    if not b.any():
        return float("nan")
    ei, eo = canny_edges(inp) & b, canny_edges(out) & b
    if not ei.any() and not eo.any():
        return float("nan")
    if not ei.any() or not eo.any():
        return 0.0
    st = ndimage.generate_binary_structure(2, 2)
    di, do = ndimage.binary_dilation(ei, st, iterations=tol), ndimage.binary_dilation(eo, st, iterations=tol)
    p = (eo & di).sum() / eo.sum()
    r = (ei & do).sum() / ei.sum()
    return float(0.0 if p + r == 0 else 2 * p * r / (p + r))


# --------------------------------------------------------------------------- style features
def lab_moments(img: np.ndarray) -> np.ndarray:
    """CIELAB mean, standard deviation and skewness per channel (9,)."""
    from skimage.color import rgb2lab

    lab = rgb2lab(img).reshape(-1, 3)
    mu, sd = lab.mean(0), lab.std(0) + 1e-6
    skew = (((lab - mu) / sd) ** 3).mean(0)
    return np.concatenate([mu, sd, skew])


def lbp_histograms(img: np.ndarray) -> np.ndarray:
    """Uniform LBP histograms of the luminance, (P=8, R=1) and (P=16, R=2): (10 + 18,)."""
    from skimage.feature import local_binary_pattern

    g = np.round(_gray(img) * 255).astype(np.uint8)
    out = []
    for p, r in ((8, 1), (16, 2)):
        codes = local_binary_pattern(g, p, r, method="uniform")
        h, _ = np.histogram(codes, bins=p + 2, range=(0, p + 2))
        out.append(h / max(h.sum(), 1))
    return np.concatenate(out)


N_LAB = 9


def style_features(img: np.ndarray) -> np.ndarray:
    """Features no style loss uses: ``lab_moments`` (9) + ``lbp_histograms`` (28) -> (37,)."""
    return np.concatenate([lab_moments(img), lbp_histograms(img)])


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets a (N,D) and b (M,D):
    ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` (as FID)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1 = np.atleast_2d(np.cov(a, rowvar=False))
    s2 = np.atleast_2d(np.cov(b, rowvar=False))
    # Tr (S1 S2)^(1/2) = sum of the square roots of the eigenvalues of S1 S2 (real, >= 0: S1 S2 is
    # similar to the symmetric S1^(1/2) S2 S1^(1/2))
    ev = np.linalg.eigvals(s1 @ s2)
    tr_covmean = float(np.sqrt(np.clip(ev.real, 0, None)).sum())
    return float(max(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean, 0.0))


class DomainClassifier:
    """Logistic regression on standardised style features: P("target") of an image."""

    def __init__(self, C: float = 1.0):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))

    def fit(self, source_feats: np.ndarray, target_feats: np.ndarray) -> "DomainClassifier":
        x = np.concatenate([source_feats, target_feats])
        y = np.concatenate([np.zeros(len(source_feats)), np.ones(len(target_feats))])
        self.model.fit(x, y)
        return self

    def p_target(self, feats: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(feats)[:, 1]


# --------------------------------------------------------------------------- oracle segmenter
def _make_oracle_net():
    import segmentation_models_pytorch as smp

    return smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(64, 32, 16), classes=1)


_IMNET_MEAN = np.array(IMAGENET_MEAN, dtype=np.float32)
_IMNET_STD = np.array(IMAGENET_STD, dtype=np.float32)


def _seg_tensor(imgs: Sequence[np.ndarray]):
    import torch

    x = (np.stack(imgs).astype(np.float32) / 255.0 - _IMNET_MEAN) / _IMNET_STD
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


def _paired(folder: os.PathLike) -> List[Tuple[Path, Path]]:
    from ..data.validate import validate_paired

    return validate_paired(folder, use="train")  # the oracle trains on them: the shared rules


#: the oracle's photometric augmentation (part of its cache key): it must judge where the lesion is, not its colours
ORACLE_AUGMENT = "photometric-v1: per-image channel gain 0.6-1.4, brightness +-0.25, contrast 0.5-1.5, gamma 0.6-1.6, " \
                 "grey mix 0-0.7, box blur 0-2 px, noise sd 0-0.06"


def photometric_jitter(x, g):
    """Random per-image colour, brightness, contrast, gamma, desaturation, blur and noise (ORACLE_AUGMENT)
    of an ImageNet-normalised batch (B,3,H,W); returns the same normalisation. Geometry is untouched."""
    import torch
    import torch.nn.functional as F

    mean = torch.tensor(_IMNET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(_IMNET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    u = (x * std + mean).clamp(0, 1)
    b = x.shape[0]

    def r(lo, hi, *shape):
        return (lo + (hi - lo) * torch.rand((b, *shape), generator=g)).to(x)

    u = u * r(0.6, 1.4, 3, 1, 1)
    m = u.mean(dim=(1, 2, 3), keepdim=True)
    u = (u - m) * r(0.5, 1.5, 1, 1, 1) + m + r(-0.25, 0.25, 1, 1, 1)
    u = u.clamp(0, 1) ** r(0.6, 1.6, 1, 1, 1)
    grey = u.mean(1, keepdim=True)
    w = r(0.0, 0.7, 1, 1, 1)
    u = (1 - w) * u + w * grey
    k = int(torch.randint(0, 3, (1,), generator=g))
    if k:
        u = F.avg_pool2d(F.pad(u, (k, k, k, k), mode="replicate"), 2 * k + 1, stride=1)
    u = u + r(0.0, 0.06, 1, 1, 1) * torch.randn(u.shape, generator=g).to(x)
    return (u.clamp(0, 1) - mean) / std


def train_oracle(train_dirs: Sequence[os.PathLike], out_dir: os.PathLike, size: int, *, epochs: int = 30,
                 batch_size: int = 16, lr: float = 2e-3, seed: int = 0, device="auto", progress: bool = True) -> Path:
    """Train (or reuse) the oracle segmenter on the labelled paired folders ``train_dirs`` (images of
    BOTH domains) at ``size`` px: a U-Net (ResNet-18 encoder, depth 3, random init), BCE + Dice,
    flips and photometric jitter (``ORACLE_AUGMENT``: it judges where the lesion is, so a colour
    change alone must not move its Dice). Cached as a model folder (kind ``oracle-segmenter``) in
    ``out_dir``: a folder trained on the same files with the same settings is reused."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from ..utils import resolve_device, seed_everything

    pairs = [pm for d in train_dirs for pm in _paired(d)]
    settings = {"files": sorted(f"{Path(p).parent.parent.name}/{Path(p).parent.name}/{Path(p).name}" for p, _ in pairs),
                "size": size, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
                "arch": "smp.Unet resnet18 depth3 (64,32,16)", "augment": ORACLE_AUGMENT}
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        try:
            meta, _ = load_model_folder(out_dir, ORACLE_KIND)
            if meta.get("config") == settings:
                return out_dir
        except StylsegError:
            pass
    seed_everything(seed)
    dev = resolve_device(device)
    imgs = [resize_image(read_image(p), size) for p, _ in pairs]
    masks = [resize_mask(read_mask(m), size) for _, m in pairs]
    x = _seg_tensor(imgs)
    y = torch.from_numpy(np.stack(masks).astype(np.float32))[:, None]
    net = _make_oracle_net().to(dev).train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    steps = epochs * max(1, (n + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    for ep in tqdm(range(epochs), desc="oracle segmenter", disable=not progress, leave=False):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = x[idx].to(dev), y[idx].to(dev)
            if torch.rand(1, generator=g).item() < 0.5:
                xb, yb = xb.flip(-1), yb.flip(-1)
            if torch.rand(1, generator=g).item() < 0.5:
                xb, yb = xb.flip(-2), yb.flip(-2)
            xb = photometric_jitter(xb, g)
            logit = net(xb)
            p = torch.sigmoid(logit)
            dice = 1 - (2 * (p * yb).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + yb.sum((1, 2, 3)) + 1)
            loss = F.binary_cross_entropy_with_logits(logit, yb) + dice.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    save_model_folder(out_dir, ORACLE_KIND, settings, net.state_dict(),
                      extra={"note": "oracle segmenter for stylization structure scores (trained on both domains)"})
    return out_dir


def load_oracle(path: os.PathLike, device="cpu"):
    meta, state = load_model_folder(path, ORACLE_KIND)
    net = _make_oracle_net()
    net.load_state_dict(state)
    return net.to(device).eval(), int(meta["config"]["size"])


def oracle_dice(oracle, imgs: Sequence[np.ndarray], masks: Sequence[np.ndarray], batch: int = 32) -> np.ndarray:
    """Per-image Dice (threshold 0.5) of the oracle's predictions against ``masks``; NaN for an
    image whose mask and prediction are both empty."""
    import torch

    net, size = oracle
    dev = next(net.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(imgs), batch):
            x = _seg_tensor([resize_image(im, size) for im in imgs[i:i + batch]]).to(dev)
            pred = (torch.sigmoid(net(x)) > 0.5).cpu().numpy()[:, 0]
            for k, pm in enumerate(pred):
                m = resize_mask(masks[i + k], size)
                s = pm.sum() + m.sum()
                out.append(float("nan") if s == 0 else 2.0 * (pm & m).sum() / s)
    return np.array(out)


# --------------------------------------------------------------------------- the score
def _load_set(paths: Sequence[Path], size: int) -> List[np.ndarray]:
    return [resize_image(read_image(p), size) for p in paths]


def score_arm(input_dir: os.PathLike, output_dir: os.PathLike, target_dir: os.PathLike, *,
              oracle: Any = None, domain_clf: Optional[DomainClassifier] = None, write_manifest: bool = True,
              seed: int = 0) -> Dict[str, Any]:
    """Structure and style scores of the arm ``output_dir`` made from ``input_dir`` (module doc).

    ``input_dir``: the paired folder the arm was made from (``images/`` + ``masks/``);
    ``output_dir``: the arm (``images/``); ``target_dir``: target-domain images (``images/`` or a
    plain folder). ``oracle``: an oracle model folder (:func:`train_oracle`) or ``(net, size)``;
    None skips the oracle Dice. ``domain_clf``: a fitted :class:`DomainClassifier`; None trains
    one by 2-fold cross-fitting on the inputs and targets. Images are compared at the output's
    size. The scores are added to the arm's manifest when it has one (``write_manifest``).
    """
    from ..data.tensors import image_folder
    from ..data.validate import validate_paired

    in_pairs = validate_paired(input_dir, use="eval")  # the shared rules; its masks give the lesion scores
    in_files = {i.stem: i for i, _ in in_pairs}
    in_masks = {i: m for i, m in in_pairs}
    out_files = [i for i, _ in validate_paired(output_dir, use="images")]
    tgt_files = list_images(image_folder(target_dir))
    pairs = [(in_files[p.stem], p) for p in out_files if p.stem in in_files]
    if not pairs:
        raise StylsegError(f"{output_dir}: no output image has an input of the same name in {input_dir}")
    if len(tgt_files) < 4:
        raise StylsegError(f"{target_dir}: need at least 4 target-domain images for the style scores")
    outs = [read_image(o) for _, o in pairs]
    size = outs[0].shape[0]
    outs = [resize_image(o, size) for o in outs]
    ins = _load_set([i for i, _ in pairs], size)
    tgts = _load_set(tgt_files, size)
    masks = [resize_mask(read_mask(in_masks[i]), size) for i, _ in pairs]

    res: Dict[str, Any] = {"n_images": len(pairs), "n_target": len(tgts), "size": size}
    res["structure_ssim"] = float(np.mean([lnl_ssim(a, b) for a, b in zip(ins, outs)]))
    ef = [edge_agreement(a, b, m) for a, b, m in zip(ins, outs, masks) if m is not None]
    res["structure_edge_f1"] = float(np.nanmean(ef)) if ef and not np.all(np.isnan(ef)) else float("nan")
    ls = [lesion_ssim(a, b, m) for a, b, m in zip(ins, outs, masks) if m is not None]
    res["structure_ssim_lesion"] = float(np.nanmean(ls)) if ls and not np.all(np.isnan(ls)) else float("nan")
    bc = [boundary_contrast(a, b, m) for a, b, m in zip(ins, outs, masks) if m is not None]
    res["structure_boundary_contrast"] = float(np.nanmean(bc)) if bc and not np.all(np.isnan(bc)) else float("nan")

    if oracle is not None:
        orc = load_oracle(oracle) if isinstance(oracle, (str, os.PathLike)) else oracle
        keep = [k for k, m in enumerate(masks) if m is not None]
        d_out = oracle_dice(orc, [outs[k] for k in keep], [masks[k] for k in keep])
        d_in = oracle_dice(orc, [ins[k] for k in keep], [masks[k] for k in keep])
        res["oracle_dice_output"] = float(np.nanmean(d_out))
        res["oracle_dice_input"] = float(np.nanmean(d_in))
        res["oracle_dice_ratio"] = res["oracle_dice_output"] / max(res["oracle_dice_input"], 1e-8)

    f_in = np.stack([style_features(a) for a in ins])
    f_out = np.stack([style_features(b) for b in outs])
    f_tg = np.stack([style_features(t) for t in tgts])
    ref = np.concatenate([f_in, f_tg])
    mu, sd = ref.mean(0), ref.std(0) + 1e-8
    z_in, z_out, z_tg = (f_in - mu) / sd, (f_out - mu) / sd, (f_tg - mu) / sd
    res["style_fd_input"] = frechet_distance(z_in, z_tg)
    res["style_fd_output"] = frechet_distance(z_out, z_tg)
    res["style_fd_ratio"] = res["style_fd_output"] / max(res["style_fd_input"], 1e-12)
    res["style_fd_lbp_input"] = frechet_distance(z_in[:, N_LAB:], z_tg[:, N_LAB:])
    res["style_fd_lbp_output"] = frechet_distance(z_out[:, N_LAB:], z_tg[:, N_LAB:])

    if domain_clf is not None:
        res["style_p_target_input"] = float(domain_clf.p_target(f_in).mean())
        res["style_p_target_output"] = float(domain_clf.p_target(f_out).mean())
        res["style_clf"] = "given"
    else:
        rng = np.random.default_rng(seed)
        fold_in = rng.permutation(len(f_in)) % 2
        fold_tg = rng.permutation(len(f_tg)) % 2
        p_in, p_out = np.zeros(len(f_in)), np.zeros(len(f_in))
        correct, total = 0, 0
        for k in (0, 1):
            tr_s, tr_t = f_in[fold_in != k], f_tg[fold_tg != k]
            if len(tr_s) < 2 or len(tr_t) < 2:
                raise StylsegError("need at least 4 input and 4 target images for the cross-fitted domain classifier")
            clf = DomainClassifier().fit(tr_s, tr_t)
            te = fold_in == k
            p_in[te], p_out[te] = clf.p_target(f_in[te]), clf.p_target(f_out[te])
            pt = clf.p_target(f_tg[fold_tg == k])
            correct += int((p_in[te] < 0.5).sum() + (pt >= 0.5).sum())
            total += int(te.sum() + len(pt))
        res["style_p_target_input"] = float(p_in.mean())
        res["style_p_target_output"] = float(p_out.mean())
        res["style_clf_acc"] = correct / max(total, 1)
        res["style_clf"] = "2-fold cross-fitted logistic regression on inputs vs targets"
    if write_manifest and (Path(output_dir) / "manifest.json").is_file():
        from ..manifest import add_scores

        add_scores(output_dir, {k: v for k, v in res.items()})
    return res


SCORE_COLUMNS = ("structure_ssim", "structure_ssim_lesion", "structure_edge_f1", "structure_boundary_contrast",
                 "oracle_dice_ratio", "style_fd_ratio",
                 "style_p_target_input", "style_p_target_output")


def format_scores(rows: Dict[str, Dict[str, Any]], columns: Sequence[str] = SCORE_COLUMNS) -> str:
    """A plain-text table: one row per arm, the given score columns."""
    w = max([12] + [len(a) + 1 for a in rows])
    cw = [max(22, len(c) + 2) for c in columns]
    head = f"{'arm':<{w}}" + "".join(f"{c:>{k}}" for c, k in zip(columns, cw))
    lines = [head]
    for arm, r in rows.items():
        vals = []
        for c, k in zip(columns, cw):
            v = r.get(c)
            vals.append(f"{v:>{k}.3f}" if isinstance(v, (int, float)) and v == v else f"{'-':>{k}}")
        lines.append(f"{arm:<{w}}" + "".join(vals))
    return "\n".join(lines)
