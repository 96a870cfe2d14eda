"""Scores of a stylizer that doing nothing cannot game (docs/method.md section 7), for any arm: the diffusion
stylizer's, its controls' and the cheap baselines' alike (``stylseg stylize score``).

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

Both together, a diagnostic: ``lpips_to_input``, the mean LPIPS (VGG16, as OSASIS's loss;
:mod:`stylseg.stylize.perceptual`) of each output to its input (0 = unchanged: how far the look moved, structure
and style together), only where the registry's VGG16 weights are present.

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
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..data.io import list_images, read_image, read_mask, resize_image, resize_mask
from ..seg.oracle import load_oracle, oracle_dice
from ..utils import StylsegError

# --------------------------------------------------------------------------- gates
# The acceptance rule of a stylized arm (docs/results.md, "How the stylizer presets were chosen"). Style: the domain
# classifier calls the outputs target and their Frechet distance to the target is at most half the inputs'. Lesion:
# the structure around the lesion is kept and an oracle segmenter finds the lesion on the outputs nearly as well as on
# the inputs. There is no whole-image structure gate: the target look drawn on the very same scenes scores 0.41 there.
STYLE_P_TARGET_MIN = 0.7  #: ``style_p_target_output`` at least this
STYLE_FD_RATIO_MAX = 0.5  #: ``style_fd_ratio`` at most this
LESION_SSIM_MIN = 0.8  #: ``structure_ssim_lesion`` at least this (the target look on the same scenes: 0.85)
ORACLE_DICE_RATIO_MIN = 0.9  #: ``oracle_dice_ratio`` at least this (with the lesion gate)


def gate_verdicts(row: Dict[str, Any]) -> Dict[str, bool]:
    """Whether one row of :func:`score_arm` meets the style gate, the lesion gate and both:
    ``{"style": bool, "lesion": bool, "both": bool}``. A NaN score (no lesion to score) misses its gate."""
    need = ("style_p_target_output", "style_fd_ratio", "structure_ssim_lesion", "oracle_dice_ratio")
    missing = [k for k in need if k not in row]
    if missing:
        raise StylsegError(f"a scores row without {', '.join(missing)}: the gates read a row of score_arm "
                           "scored with an oracle (score_arm(..., oracle=DIR); stylseg stylize score --oracle DIR)")
    style = row["style_p_target_output"] >= STYLE_P_TARGET_MIN and row["style_fd_ratio"] <= STYLE_FD_RATIO_MAX
    lesion = row["structure_ssim_lesion"] >= LESION_SSIM_MIN and row["oracle_dice_ratio"] >= ORACLE_DICE_RATIO_MIN
    return {"style": bool(style), "lesion": bool(lesion), "both": bool(style and lesion)}


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
    full mask. Calibrated on the synthetic domains (docs/results.md, "Can the gates be met at all?"): the same
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


def lesion_ssim_batch(x_in, x_out, masks: Sequence[np.ndarray], min_size: int = 64) -> float:
    """Mean :func:`lesion_ssim` over a batch: inputs and outputs (B,3,S,S) tensors in [-1,1], ``masks`` B boolean
    (H,W) arrays of the inputs' lesions (any size; nearest-resized). Images smaller than ``min_size`` are first
    upsampled (bilinear) to it, so that the band around the lesion is as wide as at the segmentation size of
    notebook 05's scores (at 32 px it would be one pixel of a 16 px map). Images whose band is empty are left out;
    NaN when none is left. What notebooks 03 and 04 print as "the lesion kept"."""
    import torch.nn.functional as F

    from ..data.io import from_tensor_pm1

    if not (len(x_in) == len(x_out) == len(masks)):
        raise StylsegError(f"lesion_ssim_batch: {len(x_in)} inputs, {len(x_out)} outputs and {len(masks)} masks; "
                           f"pass one mask per image")
    if x_in.shape[-1] < min_size:
        x_in, x_out = (F.interpolate(t.detach().float(), size=min_size, mode="bilinear", align_corners=False)
                       for t in (x_in, x_out))
    vals = [lesion_ssim(from_tensor_pm1(a), from_tensor_pm1(b), np.asarray(m, bool))
            for a, b, m in zip(x_in, x_out, masks)]
    vals = [v for v in vals if np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def folder_masks(folder: os.PathLike, files: Sequence[os.PathLike]) -> List[np.ndarray]:
    """The lesion masks (H,W) bool of ``files``, images of the paired ``folder`` (``images/`` + ``masks/``,
    matched by file stem). A missing mask raises :class:`StylsegError` naming it."""
    masks = {p.stem: p for p in list_images(Path(folder) / "masks")} if (Path(folder) / "masks").is_dir() else {}
    missing = [Path(f).name for f in files if Path(f).stem not in masks]
    if missing:
        raise StylsegError(f"{Path(folder) / 'masks'}: no mask for {', '.join(missing[:5])}; a paired folder holds "
                           f"images/ and masks/ with the same file names")
    return [read_mask(masks[Path(f).stem]) for f in files]


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
def _load_set(paths: Sequence[Path], size: int) -> List[np.ndarray]:
    return [resize_image(read_image(p), size) for p in paths]


def score_arm(input_dir: os.PathLike, output_dir: os.PathLike, target_dir: os.PathLike, *,
              oracle: Any = None, domain_clf: Optional[DomainClassifier] = None, write_manifest: bool = True,
              seed: int = 0) -> Dict[str, Any]:
    """Structure and style scores of the arm ``output_dir`` made from ``input_dir`` (module doc).

    ``input_dir``: the paired folder the arm was made from (``images/`` + ``masks/``);
    ``output_dir``: the arm (``images/``); ``target_dir``: target-domain images (``images/`` or a
    plain folder). ``oracle``: an oracle model folder (:func:`~stylseg.seg.oracle.train_oracle`) or ``(net, size)``;
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
    res.update(_structure_scores(ins, outs, masks, oracle))
    res.update(_style_scores(ins, outs, tgts, domain_clf, seed))
    from .perceptual import lpips_available, mean_lpips

    if lpips_available():  # LPIPS (VGG16) distance to the inputs, with `stylseg weights fetch vgg16-imagenet`
        res["lpips_to_input"] = mean_lpips(ins, outs)
    if write_manifest and (Path(output_dir) / "manifest.json").is_file():
        from ..manifest import add_scores

        add_scores(output_dir, {k: v for k, v in res.items()})
    return res


def _nanmean(v: List[float]) -> float:
    return float(np.nanmean(v)) if v and not np.all(np.isnan(v)) else float("nan")


def _structure_scores(ins, outs, masks, oracle) -> Dict[str, Any]:
    """Structure SSIM (whole image, lesion), edge F1, boundary contrast and, with an ``oracle``, its Dice ratio."""
    res: Dict[str, Any] = {"structure_ssim": float(np.mean([lnl_ssim(a, b) for a, b in zip(ins, outs)]))}
    res["structure_edge_f1"] = _nanmean([edge_agreement(a, b, m) for a, b, m in zip(ins, outs, masks) if m is not None])
    res["structure_ssim_lesion"] = _nanmean([lesion_ssim(a, b, m) for a, b, m in zip(ins, outs, masks)
                                             if m is not None])
    res["structure_boundary_contrast"] = _nanmean([boundary_contrast(a, b, m) for a, b, m in zip(ins, outs, masks)
                                                   if m is not None])
    if oracle is not None:
        orc = load_oracle(oracle) if isinstance(oracle, (str, os.PathLike)) else oracle
        keep = [k for k, m in enumerate(masks) if m is not None]
        d_out = oracle_dice(orc, [outs[k] for k in keep], [masks[k] for k in keep])
        d_in = oracle_dice(orc, [ins[k] for k in keep], [masks[k] for k in keep])
        res["oracle_dice_output"] = float(np.nanmean(d_out))
        res["oracle_dice_input"] = float(np.nanmean(d_in))
        res["oracle_dice_ratio"] = res["oracle_dice_output"] / max(res["oracle_dice_input"], 1e-8)
    return res


def _style_scores(ins, outs, tgts, domain_clf, seed: int) -> Dict[str, Any]:
    """Frechet distances of the style features to the targets' and the domain classifier's P(target)."""
    res: Dict[str, Any] = {}
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
        res.update(_cross_fitted_p_target(f_in, f_out, f_tg, seed))
    return res


def _cross_fitted_p_target(f_in: np.ndarray, f_out: np.ndarray, f_tg: np.ndarray, seed: int) -> Dict[str, Any]:
    """P(target) of the inputs and outputs by a domain classifier cross-fitted in 2 folds on inputs vs targets."""
    res: Dict[str, Any] = {}
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
