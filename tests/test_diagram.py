"""The method diagram the notebooks show at their top (stylseg.diagram)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

from stylseg.diagram import BOXES, HIGHLIGHT, plot_method  # noqa: E402


def _highlighted(fig):
    ax = fig.axes[0]
    boxes = [p for p in ax.patches if isinstance(p, FancyBboxPatch)]
    assert len(boxes) == len(BOXES)
    texts = [t.get_text() for t in ax.texts]
    return {b.key for b, p in zip(BOXES, boxes) if p.get_facecolor() == to_rgba(HIGHLIGHT)}, texts


@pytest.mark.parametrize("stage", range(9))
def test_each_notebook_highlights_its_own_boxes(stage):
    fig = plot_method(stage)
    try:
        assert isinstance(fig, Figure)
        on, texts = _highlighted(fig)
        assert on == {b.key for b in BOXES if stage in b.stages} and on, f"notebook {stage:02d} highlights {on}"
        assert f"notebook {stage:02d}" in fig.axes[0].get_title(loc="left")
        fig.canvas.draw()  # the mathtext in every box parses
    finally:
        plt.close(fig)


def test_no_stage_highlights_nothing_and_draws_into_a_given_axes():
    fig, ax = plt.subplots()
    try:
        assert plot_method(None, ax=ax) is fig
        assert _highlighted(fig)[0] == set()
    finally:
        plt.close(fig)


def test_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="valid: 0..8"):
        plot_method(9)
