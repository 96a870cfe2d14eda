"""The report: tables with the right numbers, radar charts, qualitative grid, index.html."""

import json

import numpy as np
import pytest

from stylseg import report
from stylseg.layout import RunLayout
from stylseg.manifest import ArmWriter
from stylseg.utils import write_json

from _fake_runs import fake_seg_runs


def make_run(root):
    """A run folder with hand-made predictions of 2 arms x 2 seeds on a 3-image target test set."""
    lay = RunLayout(root)
    test = lay.domain("target", "test")
    masks = fake_seg_runs(lay, {"direct": 0.4, "histogram": 0.8})
    w = ArmWriter(lay.stylized("histogram"), "histogram", "histogram", {}, source=test, size=16)
    w.add("0", np.zeros((16, 16, 3), np.uint8), masks[0])
    w.set_scores({"structure_ssim": 0.91, "style_fid": 12.5})
    write_json(lay.config, {"profile": "smoke", "seed": 0, "eval": {"protocol": "standard", "bootstrap": 100}})
    (lay.notebooks).mkdir(parents=True)
    (lay.notebooks / "06_segmentation.ipynb").write_text("{}")
    return lay


def test_build_report(tmp_path):
    lay = make_run(tmp_path / "run")
    index = report.build_report(lay.root)
    assert index == lay.index_html and index.is_file()
    ev = lay.eval
    for name in ("results.json", "results.md", "results_standard.csv", "results_paper.csv", "radar_unet.png",
                 "qualitative_target.png"):
        assert (ev / name).is_file(), name
    res = json.loads((ev / "results.json").read_text())
    rows = {(r["arm"], r["protocol"], r["metric"]): r for r in res["seg"]["rows"]}
    # the table's mean is the mean over seeds of each seed's evaluation
    seeds = [json.loads((lay.seg("unet", "histogram", s) / "metrics.json").read_text()) for s in (0, 1)]
    d = [s["tests"]["target"]["paper"]["metrics"]["dice"] for s in seeds]
    assert rows[("histogram", "paper", "dice")]["mean"] == pytest.approx(np.mean(d))
    assert rows[("histogram", "standard", "dice")]["mean"] > rows[("direct", "standard", "dice")]["mean"]
    assert res["stylizers"]["histogram"]["scores"]["structure_ssim"] == 0.91
    md = (ev / "results.md").read_text()
    assert f"{np.mean(d):.4f}" in md and "SSIM_S image" in md and "| histogram | histogram matching | 1 | 0.910 |" in md
    html = index.read_text()
    for link in ("eval/radar_unet.png", "eval/qualitative_target.png", "notebooks/06_segmentation.ipynb",
                 "config.json", "stylized/histogram/manifest.json"):
        assert link in html, link
    # radar values: 1 - MAE on the last axis, means over seeds
    vals = report.radar_values(res["seg"], "unet", "target", "standard")
    assert vals["direct"][-1] == pytest.approx(1 - rows[("direct", "standard", "mae")]["mean"])


def test_report_without_seg_runs_and_cli(tmp_path):
    from stylseg.cli import main

    (tmp_path / "run").mkdir()
    assert main(["report", "--run", str(tmp_path / "run")]) == 0
    assert "No finished runs" in (tmp_path / "run" / "eval" / "results.md").read_text()
    assert main(["report", "--run", str(tmp_path / "nope")]) == 2


def _per_image(lay, arm, metric="dice"):
    """Each test image's standard-protocol value, averaged over the two seeds, from the metrics files."""
    per = [{r["name"]: r[metric] for r in json.loads((lay.seg("unet", arm, s) / "metrics.json").read_text())
            ["tests"]["target"]["standard"]["per_image"]} for s in (0, 1)]
    return {k: np.mean([p[k] for p in per]) for k in per[0]}


def test_results_md_and_index_lead_with_the_answer(tmp_path):
    """The headline (target Dice of every arm, the paired gain over direct) comes first in results.md and before
    any figure in index.html; the gain is the mean per-image difference, computed here by hand."""
    lay = make_run(tmp_path / "run")
    report.build_report(lay.root)
    hist, direct = _per_image(lay, "histogram"), _per_image(lay, "direct")
    gain = np.mean([hist[k] - direct[k] for k in hist])
    md = (lay.eval / "results.md").read_text()
    first_table = md[md.index("| arch |"):]
    first_table = first_table[:first_table.index("\n\n")]
    assert "## The answer" in md.split("| arch |")[0]
    hist_row = next(line for line in first_table.splitlines() if line.startswith("| unet | histogram |"))
    assert f"{np.mean(list(hist.values())):.3f}" in hist_row and f"{gain:+.3f}" in hist_row
    assert "better" in hist_row  # quality 0.8 against 0.4 on every image: the interval excludes 0
    html = lay.index_html.read_text()
    assert html.index("The answer") < html.index("<img") < html.index("All tables")
    assert f"{gain:+.3f}" in html[:html.index("<img")]


def test_gains_on_every_target_test_set(tmp_path):
    """A run with a second target test set (as paper-polyp's target_seq11 / target_all) gets the gain over direct
    per test set: here the second set holds the arms' predictions swapped, so the gain flips sign there."""
    lay = make_run(tmp_path / "run")
    docs = {arm: [json.loads((lay.seg("unet", arm, s) / "metrics.json").read_text()) for s in (0, 1)]
            for arm in ("direct", "histogram")}
    for arm, other in (("direct", "histogram"), ("histogram", "direct")):
        for s in (0, 1):
            doc = docs[arm][s]
            doc["tests"]["target_all"] = docs[other][s]["tests"]["target"]
            write_json(lay.seg("unet", arm, s) / "metrics.json", doc)
    report.build_report(lay.root)
    hist, direct = _per_image(lay, "histogram"), _per_image(lay, "direct")
    gain = np.mean([hist[k] - direct[k] for k in hist])
    md = (lay.eval / "results.md").read_text()
    section = md[md.index("## The gain over direct on every target test set"):md.index("## All tables")]
    assert "`target` (3)" in section and "`target_all` (3)" in section
    row = next(line for line in section.splitlines() if line.startswith("| unet | histogram |"))
    first, second = row.split(" | ")[2:4]
    assert f"{gain:+.3f}" in first and "better" in first
    assert f"{-gain:+.3f}" in second and "worse" in second
    html = lay.index_html.read_text()
    assert f"{-gain:+.3f}" in html[:html.index("<img")]


def test_index_escapes_names_and_links_rendered_notebooks(tmp_path):
    lay = make_run(tmp_path / "run")
    odd = "a<b>&c"
    w = ArmWriter(lay.stylized(odd), odd, "histogram", {}, source=lay.domain("target", "test"), size=16)
    w.add("0", np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16), bool))
    w.set_scores({"structure_ssim": 0.5})
    (lay.notebooks / "06_segmentation.html").write_text("<html></html>")
    html = report.build_report(lay.root).read_text()
    assert odd not in html and "a&lt;b&gt;&amp;c" in html
    assert "href='notebooks/06_segmentation.html'" in html


def test_index_renders_in_a_headless_browser(tmp_path):
    """The page as a browser shows it: Chromium's DOM has the headline table before the first figure, and a
    screenshot is drawn (look at it: ``chromium --headless --screenshot=x.png RUN/index.html``)."""
    import shutil
    import subprocess

    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no headless browser installed (apt-get install chromium)")
    lay = make_run(tmp_path / "run")
    index = report.build_report(lay.root)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'ud'}"]
    dom = subprocess.run([browser, *flags, "--dump-dom", index.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "The answer" in dom.stdout and dom.stdout.index("The answer") < dom.stdout.index("<img")
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,900", index.as_uri()],
                   capture_output=True, text=True, timeout=120)
    from PIL import Image

    im = np.asarray(Image.open(shot).convert("L"))
    assert im.shape == (900, 1200) and im.std() > 5  # drawn, not blank


def test_arm_dice_and_domain_predictions(tmp_path):
    """arm_dice reads the mean Dice of each arm on one test set; plot_domain_predictions draws one row per test
    image and, per test set, the image, the truth and each arm's map, and names the notebook when a run is missing."""
    import matplotlib

    matplotlib.use("Agg")
    from stylseg.study.tables import aggregate
    from stylseg.utils import StylsegError

    lay = make_run(tmp_path / "run")
    res = aggregate(lay.root / "seg", n_boot=10, write=False)
    d = report.arm_dice(res, "target")
    assert set(d) == {"direct", "histogram"} and d["histogram"] > d["direct"]
    rows = {r["arm"]: r["mean"] for r in res["rows"] if r["test"] == "target" and r["protocol"] == "standard"
            and r["metric"] == "dice"}
    assert d == pytest.approx(rows)
    fig = report.plot_domain_predictions(lay, arms=("direct", "histogram"), tests=("target",), n=2)
    assert len(fig.axes) == 2 * 4
    assert [a.get_title() for a in fig.axes[:4]] == ["target: image", "target: ground truth", "target: direct",
                                                      "target: histogram"]
    assert fig.axes[2].get_xlabel().startswith("Dice ")
    with pytest.raises(StylsegError, match="notebook 06"):
        report.plot_domain_predictions(lay, arms=("st",), tests=("target",))


def test_describe_run_reads_the_run_it_opens(tmp_path):
    """describe_run says what the run folder holds, from its own files: the profile, what is not made yet, the
    stylized arms' scores and each arm's target Dice as results.json has them."""
    from stylseg.study.tables import aggregate

    lay = make_run(tmp_path / "run")
    lines = report.describe_run(lay)
    assert "profile smoke" in lines[0] and any("not fine-tuned yet" in ln for ln in lines)
    assert any(ln.startswith("segmentation: not run yet") for ln in lines)
    res = aggregate(lay.root / "seg", n_boot=10)
    w = ArmWriter(lay.stylized("st"), "st", "diffusion", {}, source=lay.domain("target", "test"), size=16)
    w.add("0", np.zeros((16, 16, 3), np.uint8), np.ones((16, 16), bool))
    w.set_scores({"style_p_target_output": 0.625, "structure_ssim_lesion": 0.875})
    lines = report.describe_run(lay)
    assert "arm st: P(target) 0.625, structure around the lesion 0.875" in lines
    d = report.arm_dice(res, "target")
    assert f"direct {d['direct']:.3f}" in lines[-1] and f"histogram {d['histogram']:.3f}" in lines[-1]


def _plant_metrics(lay, arch_dir, arm_dir, **changes):
    """A copy of a finished seed's metrics.json planted at ``seg/<arch_dir>/<arm_dir>/seed0`` with ``changes``."""
    from stylseg.utils import read_json

    m = {**read_json(lay.seg("unet", "direct", 0) / "metrics.json"), **changes}
    write_json(lay.root / "seg" / arch_dir / arm_dir / "seed0" / "metrics.json", m)


@pytest.mark.parametrize("field,name", [("arch", "../../../../outside/x"), ("arch", "<script>alert(2)</script>"),
                                        ("arm", "../../escape")])
def test_report_refuses_names_from_run_files_that_leave_the_run(tmp_path, field, name):
    """A received run folder's metrics.json names never become paths: nothing is written outside RUN/eval."""
    from stylseg.utils import StylsegError

    lay = make_run(tmp_path / "deep" / "er" / "run")
    _plant_metrics(lay, "unet", "histogram", **{field: name})
    with pytest.raises(StylsegError, match=r"metrics.json: (arch|arm) name .* delete it"):
        report.build_report(lay.root)
    assert not list(tmp_path.rglob("x_radar.png")) and not list(tmp_path.rglob("radar_*.png"))
    assert not lay.eval.exists()


def test_report_takes_test_folders_from_the_run_layout(tmp_path):
    """``tests[*].dir`` in metrics.json is never read: the qualitative figure shows the run's own test set."""
    from stylseg.utils import read_json

    lay = make_run(tmp_path / "run")
    for p in (lay.root / "seg").rglob("metrics.json"):
        m = read_json(p)
        m["tests"]["target"]["dir"] = str(tmp_path / "elsewhere")
        write_json(p, m)
    report.build_report(lay.root)
    assert (lay.eval / "qualitative_target.png").is_file()


def test_results_markdown_escapes_names_from_run_files(tmp_path):
    """results.md and the Markdown notebooks 06/07 display carry no raw HTML from a run file's names."""
    from stylseg.study.tables import aggregate, results_markdown

    lay = make_run(tmp_path / "run")
    evil = "<img src=x onerror=alert(1)>"
    _plant_metrics(lay, "unet", "planted", arm=evil)
    res = aggregate(lay.root / "seg", n_boot=50)
    for md in (results_markdown(res), (lay.root / "seg" / "results.md").read_text(),
               report.protocol_table(res, "target")):
        assert "<img" not in md and "&lt;img src=x onerror=alert(1)&gt;" in md


def test_arm_colour_one_per_kind():
    """Every figure draws an arm in its kind's colour: the same kind gives the same colour, an arm tagged with a
    preset or a style image keeps its kind's hue (the first preset exactly, others shaded), different kinds differ."""
    from matplotlib.colors import to_rgb

    from stylseg.config import PRESETS

    kinds = ["direct", "st", "st_nospn", "recon", "jitter", "histogram", "source+st", "source+histogram", "oracle",
             "reinhard", "fda", "sensor", "st_sensor", "source+recon"]
    colours = [report.arm_colour(k) for k in kinds]
    assert len(set(colours)) == len(kinds)
    assert report.arm_colour("st") == report.arm_colour("st") == report.ARM_COLOURS["st"]
    first, other = list(PRESETS)[0], list(PRESETS)[-1]
    assert report.arm_colour(f"st@{first}") == report.arm_colour("st")
    assert report.arm_colour("source+st@all") == report.arm_colour("source+st")

    def hue(c):
        import colorsys
        return colorsys.rgb_to_hsv(*to_rgb(c))[0]

    for tagged in (f"st@{other}", "st@s1", f"st@{other}@s2", "histogram@s1", "source+st@s1"):
        base = report.arm_colour(tagged.split("@")[0])
        assert report.arm_colour(tagged) != base, tagged                 # a shade, so the two stay apart
        assert hue(report.arm_colour(tagged)) == pytest.approx(hue(base), abs=0.02), tagged  # of the kind's hue
    assert report.arm_colour("new_arm") == report.arm_colour("new_arm@gates".replace("@gates", ""))  # stable
    assert report.arm_colour("new_arm@s1") not in (report.arm_colour("new_arm"), None)
    assert report.arm_style("direct")["ls"] == "--" and report.arm_style("st@s1")["ls"] == "-"


def test_teaching_arms_pick_few():
    arms = ["direct", "st@osasis", "st@gates", "st_nospn", "recon", "histogram", "fda", "st@s1", "oracle"]
    assert report.teaching_arms(arms) == ["direct", "st@osasis", "histogram", "oracle"]
    assert report.teaching_arms(["recon", "fda"]) == ["recon", "fda"]


def test_figures_use_the_arm_colours(tmp_path):
    """The radar, the loss curves and the protocol scatter draw each arm in arm_colour; the qualitative grid shows
    the teaching arms only, the report adds every arm's grid when there are more."""
    from matplotlib.colors import to_hex

    lay = make_run(tmp_path / "run")
    from stylseg.study.tables import aggregate

    res = aggregate(lay.root / "seg", n_boot=50)
    fig = report.plot_radar(report.radar_values(res, "unet", "target", "standard"))
    lines = {l.get_label(): to_hex(l.get_color()) for l in fig.axes[0].get_lines()}
    assert lines["direct"] == report.arm_colour("direct") and lines["histogram"] == report.arm_colour("histogram")
    fig = report.plot_protocols(lay, res, "target")
    cols = {c.get_label(): to_hex(c.get_facecolor()[0]) for c in fig.axes[0].collections}
    assert cols == {"direct": report.arm_colour("direct"), "histogram": report.arm_colour("histogram")}
    fig = report.plot_qualitative(lay, res, "target", n=2, arms=["direct"])
    assert [a.get_title() for a in fig.axes[:3]] == ["image", "ground truth", "direct"]
    html = report.build_report(lay.root).read_text()
    assert f"background:{report.arm_colour('histogram')}'></span><b>histogram</b>" in html  # the table's key
    assert (lay.eval / "qualitative_target.png").is_file() and not (lay.eval / "qualitative_target_all.png").exists()
