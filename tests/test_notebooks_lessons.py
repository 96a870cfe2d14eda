"""The stage notebooks 04-07 keep the lesson apart from the kit's history: an Appendix section closes each, and the
"Try this" items sit beside the cells they change and say what to expect; their figures show a few arms."""

import json
import re
from pathlib import Path

import pytest

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
STAGES = [NB_DIR / n for n in ("04_oneshot_finetuning.ipynb", "05_stylize_dataset.ipynb", "06_segmentation.ipynb",
                               "07_evaluation.ipynb")]


def _cells(path):
    return [(c["cell_type"], "".join(c["source"])) for c in json.loads(path.read_text())["cells"]]


@pytest.mark.parametrize("path", STAGES, ids=lambda p: p.name)
def test_appendix_closes_the_lesson(path):
    cells = _cells(path)
    heads = [i for i, (kind, src) in enumerate(cells) if kind == "markdown" and re.search(r"^## Appendix", src, re.M)]
    assert len(heads) == 1, "one '## Appendix' section"
    after = "\n".join(src for kind, src in cells[heads[0]:] if kind == "markdown")
    before = "\n".join(src for kind, src in cells[:heads[0]] if kind == "markdown")
    assert not re.search(r"^## ", "\n".join(s for k, s in cells[heads[0] + 1:] if k == "markdown"), re.M), \
        "nothing of the lesson after the Appendix"
    assert "What to change to see it differently" not in before + after, "the changes sit beside their cells"
    if path.name.startswith(("04", "05")):  # the kit's settings live in the Appendix, not in the lesson's text
        assert "Presets" in after and "**Preset:**" not in before
    if path.name.startswith("05"):
        assert "Sensor matching" in after and "Sensor matching" not in before and "Upsampling" in after


@pytest.mark.parametrize("path", STAGES, ids=lambda p: p.name)
def test_try_this_beside_the_cells(path):
    cells = _cells(path)
    app = next(i for i, (k, s) in enumerate(cells) if k == "markdown" and s.startswith("## Appendix"))
    inline = [s for k, s in cells[:app] if k == "markdown" and "*Try this here:*" in s]
    assert len(inline) >= 3, f"{len(inline)} 'Try this here' items in the lesson: put each beside its cell"
    assert all("expect" in s.split("*Try this here:*", 1)[1].lower() for s in inline), "say what to expect"


def test_figures_show_few_arms():
    """05's grid and the 06/07 figures name the arms they show; every arm goes to the Appendix."""
    src = {p.name[:2]: "\n".join(s for k, s in _cells(p) if k == "code") for p in STAGES}
    assert 'SHOW = [ST, ST_NOSPN, "histogram"]' in src["05"] and "arm_colour(arm)" in src["05"]
    assert "ax.annotate" not in src["05"], "the scatter's legend names the arms: no labels to overlap"
    assert "report.teaching_arms(" in src["07"] and "arms=SHOW" in src["07"]
    assert src["06"].count("report.plot_arms(") == 2 and "results.md\").read_text()" not in src["06"]
