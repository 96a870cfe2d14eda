"""The method in one picture (docs/method.md section 1), drawn with matplotlib so that it is part of every executed
notebook and its HTML: the data, D_A, the style pair, D_B + SPN, Algorithm 2, the stylized arms, the segmenters and
the evaluation, each box naming the notebooks that teach it. :func:`plot_method` highlights one notebook's boxes.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

#: the notebooks of the lesson series, by number (00-08)
STAGES = tuple(range(9))


class Box(NamedTuple):
    """One box of the diagram: its centre (x, y) in axes units [0,1], its text and the notebooks that teach it."""

    key: str
    xy: Tuple[float, float]
    text: str
    stages: Tuple[int, ...]


BOXES = (
    Box("data", (0.09, 0.76), "source images $x_A$\n+ masks (domain A)\n[00]", (0,)),
    Box("style", (0.09, 0.24), "one style image $y_B$\n(target domain B,\nno label) [00]", (0,)),
    Box("da", (0.31, 0.76), "$D_A$: DiffAE on A\nEnc $\\to z_{sem}$,\nDDIM decoder [01, 02]", (1, 2)),
    Box("pair", (0.31, 0.24), "style pair $(x_A^{style},\\ y_B)$\n$x_A^{style}$: $D_A$'s render\nof $y_B$ [04]", (4,)),
    Box("db", (0.535, 0.24), "fine-tune $D_B$ + SPN\n($D_B$: a copy of $D_A$;\ndirectional loss) [03, 04]", (3, 4)),
    Box("alg2", (0.535, 0.76), "Algorithm 2: invert $x_A$ to $t_0$\nwith $D_A$, render with $D_B$:\n"
                               "$x'_t = x_t + \\lambda\\,$SPN$(x_{in})$\n[01, 03, 05, 08]", (1, 3, 5, 8)),
    Box("arms", (0.765, 0.76), "stylized arms + masks\nst, recon, histogram,\nFDA, ... [05]", (5,)),
    Box("seg", (0.765, 0.24), "segmenter per arm\ndirect, st, oracle, ...\n[06]", (6,)),
    Box("eval", (0.945, 0.24), "target test\nset: Dice,\nIoU, $S_\\alpha$,\n$E_\\phi$ [07]", (7,)),
)

#: arrows between boxes: (from, to, label)
ARROWS = (
    ("data", "da", "train"), ("style", "pair", ""), ("da", "pair", "render"), ("pair", "db", "loss"),
    ("da", "db", "copy"), ("da", "alg2", "invert"), ("db", "alg2", "render"), ("alg2", "arms", ""),
    ("arms", "seg", "train"), ("seg", "eval", "test"),
)

HIGHLIGHT, PLAIN = "#f6b26b", "#e8eef4"


def _edge(box: Box, towards: Tuple[float, float], half: Tuple[float, float]) -> Tuple[float, float]:
    """The point where the line from the box's centre towards ``towards`` leaves its rectangle (half-sizes)."""
    (x, y), (tx, ty) = box.xy, towards
    dx, dy = tx - x, ty - y
    s = min(half[0] / abs(dx) if dx else float("inf"), half[1] / abs(dy) if dy else float("inf"))
    return x + s * dx, y + s * dy


def plot_method(stage: Optional[int] = None, ax=None, figsize=(11.0, 3.6)):
    """Draw the whole method; the boxes that notebook ``stage`` (0-8, None: no highlight) teaches are filled orange.

    Returns the matplotlib Figure (a new one unless ``ax`` is given). Text in the boxes is matplotlib mathtext, so the
    figure needs no LaTeX installation.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    if stage is not None and stage not in STAGES:
        raise ValueError(f"stage {stage!r} is no notebook number; valid: {STAGES[0]}..{STAGES[-1]} or None")
    fig, ax = (plt.subplots(figsize=figsize) if ax is None else (ax.figure, ax))
    ax.set_xlim(0, 1), ax.set_ylim(0, 1), ax.axis("off")
    half = {b.key: ((0.05, 0.19) if b.key == "eval" else (0.085, 0.17)) for b in BOXES}
    by_key = {b.key: b for b in BOXES}
    for b in BOXES:
        (x, y), (hw, hh) = b.xy, half[b.key]
        on = stage in b.stages
        ax.add_patch(FancyBboxPatch((x - hw, y - hh), 2 * hw, 2 * hh, boxstyle="round,pad=0.005,rounding_size=0.02",
                                    fc=HIGHLIGHT if on else PLAIN, ec="#b45f06" if on else "#7f8c99",
                                    lw=2.0 if on else 0.8, transform=ax.transAxes))
        ax.text(x, y, b.text, ha="center", va="center", fontsize=7.5, transform=ax.transAxes)
    for a, b, label in ARROWS:
        ba, bb = by_key[a], by_key[b]
        p, q = _edge(ba, bb.xy, half[a]), _edge(bb, ba.xy, half[b])
        ax.annotate("", xy=q, xytext=p, xycoords="axes fraction",
                    arrowprops=dict(arrowstyle="-|>", color="#555555", lw=0.9, shrinkA=1, shrinkB=1))
        if label:  # above a horizontal arrow, on a vertical or slanted one
            up = 0.05 if abs(p[1] - q[1]) < 1e-6 else 0.0
            ax.text((p[0] + q[0]) / 2, (p[1] + q[1]) / 2 + up, label, fontsize=6.5, color="#555555", ha="center",
                    va="center", transform=ax.transAxes, bbox=dict(fc="white", ec="none", pad=0.5))
    where = f": notebook {stage:02d} is the orange part" if stage is not None else ""
    ax.set_title(f"The method{where}", fontsize=10, loc="left")
    return fig
