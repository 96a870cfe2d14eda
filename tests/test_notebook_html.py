"""The executed notebooks' HTML: every numbered notebook, the playground included, is executed and rendered, and the
pages typeset their equations offline: nbconvert's page loads MathJax from a copy beside it
(stylseg.reproduce.local_mathjax, from the jupyter-server-mathjax package), never from a CDN."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from stylseg.reproduce import MATHJAX_DIR, MATHJAX_FONTS, pipeline_notebooks, render_html

NB01 = Path(__file__).resolve().parents[1] / "notebooks" / "01_ddim_basics.ipynb"


def _executed_notebook(folder: Path) -> Path:
    """A small executed notebook: notebook 01's first display equation and a code cell with its output."""
    cells = json.loads(NB01.read_text())["cells"]
    math = next("".join(c["source"]) for c in cells if c["cell_type"] == "markdown" and "$$" in "".join(c["source"]))
    code = new_code_cell("print(1 + 1)", execution_count=1,
                         outputs=[new_output("stream", name="stdout", text="2\n")])
    nb = new_notebook(cells=[new_markdown_cell(math), code])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "01_ddim_basics.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_reproduce_runs_every_notebook_the_playground_included():
    """08 reads the finished run and renders its default setting once without a browser: `stylseg reproduce` runs it
    last, so that its HTML is in the report (which links every executed notebook)."""
    names = [p.name[:2] for p in pipeline_notebooks()]
    assert names == [f"{i:02d}" for i in range(len(names))] and names[-1] == "08"


def _mathjax_sources(html: str):
    return [s for s in re.findall(r"<script[^>]*\bsrc=[\"']([^\"']+)[\"']", html) if "mathjax" in s.lower()]


def test_html_loads_mathjax_from_a_local_copy(tmp_path):
    page = render_html(_executed_notebook(tmp_path / "run" / "notebooks"), log=lambda *a: None)
    html = page.read_text()
    srcs = _mathjax_sources(html)
    assert srcs, "the page loads no MathJax"
    assert not [s for s in srcs if re.match(r"(https?:)?//", s)], f"MathJax from the web: {srcs}"
    assert not re.search(r"https?://[^\"' ]*mathjax", html, re.I)
    for s in srcs:  # relative to the page, so that the run folder can be moved
        assert s.startswith(f"{MATHJAX_DIR}/") and (page.parent / s.split("?")[0]).is_file()
    assert (page.parent / MATHJAX_DIR / "config" / f"{MATHJAX_FONTS}.js").is_file()  # the fonts the copy ships
    moved = tmp_path / "elsewhere"
    shutil.move(str(tmp_path / "run"), str(moved))
    assert (moved / "notebooks" / srcs[0].split("?")[0]).is_file()


def test_second_page_reuses_the_copy(tmp_path):
    folder = tmp_path / "notebooks"
    render_html(_executed_notebook(folder), log=lambda *a: None)
    marker = folder / MATHJAX_DIR / "MathJax.js"
    before = marker.stat().st_mtime_ns
    other = _executed_notebook(folder).rename(folder / "02_other.ipynb")
    assert render_html(other, log=lambda *a: None).is_file()
    assert marker.stat().st_mtime_ns == before and not list(folder.glob("*.partial"))


def test_offline_browser_typesets_the_math(tmp_path):
    """Chromium with every host name unresolvable (no network) opens the page and MathJax replaces the TeX with
    its typeset elements."""
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no headless browser installed (apt-get install chromium)")
    page = render_html(_executed_notebook(tmp_path / "notebooks"), log=lambda *a: None)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'ud'}",
             "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=20000"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert re.search(r"class=\"MathJax(_Display|_CHTML|_SVG)?\"", dom.stdout), "no typeset math in the DOM"
    assert "class=\"MathJax_Error\"" not in dom.stdout and "Math Processing Error" not in dom.stdout
    assert "STIXMathJax_Main" in dom.stdout, "typeset without the STIX web fonts the copy ships"
