"""The workshop playground behind ``notebooks/08_workshop_playground.ipynb``.

:class:`Playground` loads what a run folder holds (the fine-tuned stylizer D_B + SPN, D_A, a
segmenter, the source and target images) and renders one input under chosen settings:
inversion depth ``t0``, SPN strength ``lam``, UNet calls ``steps``, and a style image whose
semantic code drives the coarse decoder levels (OSASIS's "mix" mode; the fine-tuned style
needs none). :meth:`Playground.render` returns the images, the structure and style scores and
the segmenter's prediction on the stylized image, so the notebook only wires widgets to it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from .data.dataset import IMAGENET_MEAN, IMAGENET_STD
from .data.io import list_images, read_image, read_mask, resize_image, resize_mask, to_tensor_pm1, from_tensor_pm1
from .layout import RunLayout
from .utils import StylsegError, resolve_device

FINE_TUNED = "fine-tuned style (no mix)"


@dataclass
class Rendered:
    input: np.ndarray  # (S,S,3) uint8, the input at the diffusion size
    stylized: np.ndarray  # (S,S,3) uint8
    mask: np.ndarray  # (S,S) bool, the input's mask
    prediction: Optional[np.ndarray]  # (S,S) float in [0,1], the segmenter on the stylized image
    scores: Dict[str, float]


class Playground:
    """Interactive stylization on a run folder made by notebooks 00-06."""

    def __init__(self, run_dir: os.PathLike, device: str = "auto", seg_arch: Optional[str] = None):
        from .stylize.scores import DomainClassifier
        from .stylize import Stylizer
        from .stylize.scores import style_features

        self.layout = L = RunLayout(run_dir)
        self.device = resolve_device(device)
        from .study.arms import main_variant

        self.main = main_variant(L)
        if not (self.main.folder / "config.json").is_file():
            raise StylsegError(f"{self.main.folder}: no fine-tuned stylizer; run notebooks/04_oneshot_finetuning.ipynb "
                               f"with RUN_DIR={L.root}")
        self.stylizer = Stylizer.load(self.main.folder, diffae_dir=L.diffae if L.diffae.is_dir() else None,
                                      device=self.device)
        self.size = self.stylizer.size
        self.base_lam = float(self.stylizer.lam)
        src = L.domain("source", "test")
        if not (src / "images").is_dir():
            src = L.domain("source", "train")
        self.inputs = {p.stem: p for p in list_images(src / "images")}
        if not self.inputs:
            raise StylsegError(f"{src}: no input images; run notebooks/00_setup_and_data.ipynb first")
        self.mask_dir = src / "masks"
        styles = [L.style_image] + sorted((L.data / "styles").glob("*.png"))
        tgt = L.domain("target", "train") / "images"
        styles += list_images(tgt)[:8] if tgt.is_dir() else []
        self.styles: Dict[str, Optional[Path]] = {FINE_TUNED: None}
        for p in styles:
            if p.is_file():
                self.styles.setdefault(f"{p.parent.name}/{p.name}", p)
        # a domain classifier on features no loss uses (source vs target test images)
        tgt_test = L.domain("target", "test") / "images"
        src_imgs = [resize_image(read_image(p), self.size) for p in list(self.inputs.values())[:32]]
        tgt_imgs = [resize_image(read_image(p), self.size) for p in list_images(tgt_test)[:32]] if tgt_test.is_dir() else []
        self.style_features = style_features
        self.domain_clf = None
        if len(tgt_imgs) >= 4:
            self.domain_clf = DomainClassifier().fit(np.stack([style_features(i) for i in src_imgs]),
                                                     np.stack([style_features(i) for i in tgt_imgs]))
        self.segmenter, self.seg_size, self.seg_name = self._load_segmenter(seg_arch)

    # ------------------------------------------------------------------ helpers
    def _load_segmenter(self, arch: Optional[str]):
        from .seg import load_segmenter

        L = self.layout
        for arm in ("oracle", "direct", self.main.arm("st")):
            cands = sorted((L.root / "seg").glob(f"{arch or '*'}/{arm}/seed0/model/config.json"))
            if cands:
                model = load_segmenter(cands[0].parent, device=self.device).eval()
                size = int(getattr(model, "image_size", 0) or self.size)
                return model, size, f"{cands[0].parents[2].name} trained on '{arm}'"
        return None, 0, "none (run notebooks/06_segmentation.ipynb)"

    @torch.no_grad()
    def _predict(self, img: np.ndarray) -> Optional[np.ndarray]:
        if self.segmenter is None:
            return None
        x = resize_image(img, self.seg_size).astype(np.float32) / 255.0
        mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
        t = torch.from_numpy(((x - mean) / std).astype(np.float32)).permute(2, 0, 1)[None].to(self.device)
        logits = self.segmenter(t)
        if isinstance(logits, (list, tuple)):
            logits = logits[-1]
        p = torch.sigmoid(logits)[0, 0].float().cpu().numpy()
        return np.asarray(resize_image((p * 255).astype(np.uint8)[..., None].repeat(3, 2), self.size)[..., 0]) / 255.0

    def _z_style(self, style: str) -> Optional[torch.Tensor]:
        if style not in self.styles:
            raise StylsegError(f"unknown style {style!r}; valid: {', '.join(self.styles)}")
        path = self.styles[style]
        if path is None:
            return None
        x = to_tensor_pm1(resize_image(read_image(path), self.size))[None].to(self.device)
        return self.stylizer.diffae.encoder(x)

    # ------------------------------------------------------------------ the one call the notebook makes
    @torch.no_grad()
    def render(self, name: str, style: str = FINE_TUNED, t0: float = 0.25, lam: Optional[float] = None,
               steps: int = 10, use_spn: bool = True) -> Rendered:
        """Stylize input ``name`` at depth ``t0`` (fraction of T) with ``steps`` UNet calls each way,
        SPN strength ``lam`` (None = the trained lambda) and the style image's code in mix mode.

        Scores: ``lnl_ssim`` (structure, 1 = unchanged), ``edge_f1`` (edges kept within 3 px of the
        lesion boundary), ``p_target`` (domain classifier's probability of "target", input -> output)
        and ``dice`` (segmenter on the stylized image vs the input's mask).
        """
        from .stylize.scores import edge_agreement, lnl_ssim

        if name not in self.inputs:
            raise StylsegError(f"unknown input {name!r}; valid: {', '.join(list(self.inputs)[:10])}, ...")
        img = resize_image(read_image(self.inputs[name]), self.size)
        mpath = next(iter(sorted(self.mask_dir.glob(name + ".*"))), None)
        mask = resize_mask(read_mask(mpath), self.size) if mpath else np.zeros(img.shape[:2], bool)
        x = to_tensor_pm1(img)[None].to(self.device)
        st = self.stylizer
        old = st.lam
        try:
            st.lam = self.base_lam if lam is None else float(lam)
            m = torch.from_numpy(mask.astype(np.float32))[None, None].to(self.device)
            y = st.stylize(x, float(t0), int(steps), max(1, int(steps) // 2), use_spn=use_spn,
                           z_style=self._z_style(style), masks=m)
        finally:
            st.lam = old
        out = from_tensor_pm1(y[0])
        pred = self._predict(out)
        scores = {"lnl_ssim": lnl_ssim(img, out), "edge_f1": edge_agreement(img, out, mask)}
        if self.domain_clf is not None:
            pin, pout = self.domain_clf.p_target(np.stack([self.style_features(img), self.style_features(out)]))
            scores.update(p_target_input=float(pin), p_target_output=float(pout))
        if pred is not None:
            b = pred >= 0.5
            inter, tot = np.logical_and(b, mask).sum(), b.sum() + mask.sum()
            scores["dice"] = float(2 * inter / tot) if tot else 1.0
        return Rendered(img, out, mask, pred, scores)

    def figure(self, r: Rendered, style: str = FINE_TUNED):
        """A matplotlib figure: input, style image, stylized, mask, prediction, with the scores."""
        import matplotlib.pyplot as plt

        spath = self.styles.get(style) or self.layout.style_image
        panels = [("input", r.input), ("style", resize_image(read_image(spath), self.size) if spath and Path(spath).is_file() else None),
                  ("stylized", r.stylized), ("mask", r.mask), (f"prediction\n{self.seg_name}", r.prediction)]
        fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.4))
        for ax, (title, im) in zip(axes, panels):
            if im is not None:
                ax.imshow(im, cmap="gray" if im.ndim == 2 else None, vmin=0, vmax=1 if im.ndim == 2 else None)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        fig.suptitle("  ".join(f"{k} {v:.3f}" for k, v in r.scores.items()), fontsize=9)
        fig.tight_layout()
        return fig
