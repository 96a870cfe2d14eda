"""One smoke reproduction, end to end, as a newcomer's `make reproduce` runs it: every pipeline
notebook executed by papermill into a temporary run folder, then the contract's files checked."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stylseg.layout import RunLayout
from stylseg.reproduce import pipeline_notebooks

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("smoke") / "run"
    env = dict(os.environ, STYLSEG_THREADS=os.environ.get("STYLSEG_THREADS", "2"), MPLBACKEND="Agg")
    r = subprocess.run([sys.executable, "-m", "stylseg", "reproduce", "--profile", "smoke", "--out", str(run)],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=1500)
    assert r.returncode == 0, f"reproduce failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return run, r.stdout


def test_every_pipeline_notebook_ran(smoke_run):
    run, out = smoke_run
    names = [p.name for p in pipeline_notebooks()]
    assert names and names[0].startswith("00_")
    for name in names:
        executed = run / "notebooks" / name
        assert executed.is_file(), f"{name} was not executed"
        nb = json.loads(executed.read_text())
        errors = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
                  if o.get("output_type") == "error"]
        assert not errors, f"{name} holds an error output"
        # every cell that shows a figure carries it as an image (the test runner's MPLBACKEND=Agg must not
        # reach the kernels), and the notebook is rendered to HTML beside it
        # (a cell whose plt.show() is indented may draw nothing by design: a section skipped without real data)
        drawing = [c for c in nb["cells"] if c["cell_type"] == "code"
                   and any(line.startswith("plt.show()") or "; plt.show()" in line and not line.startswith(" ")
                           for line in "".join(c["source"]).splitlines())]
        images = [c for c in nb["cells"] if c["cell_type"] == "code"
                  and any("image/png" in o.get("data", {}) for o in c.get("outputs", []))]
        blank = [c for c in drawing if c not in images]
        assert images and not blank, f"{name}: {len(blank)} of {len(drawing)} figure cells show no figure"
        html = executed.with_suffix(".html")
        assert html.is_file() and html.read_text().count("data:image/png") >= len(images)
        assert (run / "notebooks" / name.replace(".ipynb", ".done.json")).is_file()
    timings = json.loads((run / "notebooks" / "timings.json").read_text())
    assert [t["notebook"] for t in timings] == names


def test_run_folder_contract(smoke_run):
    run, _ = smoke_run
    L = RunLayout(run)
    cfg = json.loads(L.config.read_text())
    assert cfg["profile"] == "smoke"
    assert json.loads(L.env.read_text())["packages"]["torch"]
    names = {p.name[:2] for p in pipeline_notebooks()}
    if "00" in names:
        for which in ("source", "target"):
            for split in ("train", "test"):
                imgs = list((L.domain(which, split) / "images").glob("*.png"))
                masks = list((L.domain(which, split) / "masks").glob("*.png"))
                assert imgs and len(imgs) == len(masks), (which, split)
        assert L.style_image.is_file() and L.split_json.is_file()
    if "02" in names:
        assert (L.diffae / "config.json").is_file() and (L.diffae / "model.safetensors").is_file()
    if "04" in names:
        assert (L.finetune / "config.json").is_file()
    if "05" in names:
        for arm in ("st", "recon", "histogram", "reinhard", "fda", "st_sensor", "sensor"):
            m = json.loads((L.stylized(arm) / "manifest.json").read_text())
            assert len(m["items"]) == len(list((L.domain("source", "train") / "images").glob("*.png"))), arm
    if "06" in names:
        assert list((run / "seg").glob("*/direct/seed0/metrics.json"))
        trained = {p.parent.parent.name for p in (run / "seg").glob("*/*/seed0/metrics.json")}
        assert {"direct", "st", "st_nospn", "recon", "histogram", "oracle", "jitter", "source+st", "source+recon",
                "source+histogram"} <= trained
        union = json.loads((L.seg("unet", "source+st", 0) / "metrics.json").read_text())
        n_src = len(list((L.domain("source", "train") / "images").glob("*.png")))
        assert len(list((Path(union["train_dir"]) / "images").glob("*.png"))) == 2 * n_src
        assert not trained & {"st_sensor", "sensor"}  # made by 05, but not in the default eval.arms
    if "07" in names:
        res = json.loads((L.eval / "results.json").read_text())
        assert {"jitter", "source+st", "source+recon", "source+histogram"} <= set(res["seg"]["arms"])
        assert (L.eval / "results.md").is_file() and list(L.eval.glob("radar_*.png"))
        assert L.index_html.is_file()


def test_rerun_resumes_without_redoing_work(smoke_run):
    run, _ = smoke_run
    r = subprocess.run([sys.executable, "-m", "stylseg", "reproduce", "--profile", "smoke", "--out", str(run)],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[run ]" not in r.stdout and r.stdout.count("[skip]") == len(pipeline_notebooks())


def test_notebooks_run_with_their_defaults_under_nbval(smoke_run, tmp_path):
    """`pytest --nbval-lax` on every notebook (08 included) with its own default parameters but the smoke
    profile, passed as papermill passes it (an injected-parameters cell after the parameters cell), in a copy of
    the project whose `runs/smoke` is the finished smoke run: what a participant gets when opening the notebooks
    after `make reproduce PROFILE=smoke RUN=runs/smoke`."""
    import shutil

    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    run, _ = smoke_run
    proj = tmp_path / "proj"
    # kernel-ipc-*: the local sockets of a kernel that was killed (not files: they cannot be copied)
    shutil.copytree(ROOT / "notebooks", proj / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "kernel-ipc-*"))
    shutil.copytree(run, proj / "runs" / "smoke", ignore=shutil.ignore_patterns("notebooks"))
    for path in sorted((proj / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = parameterize_notebook(load_notebook_node(str(path)), {"PROFILE": "smoke", "RUN_DIR": "../runs/smoke"})
        nbformat.write(nb, path)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "--nbval-lax", "-p", "no:cacheprovider",
                        "--nbval-cell-timeout=600", str(proj / "notebooks")],
                       capture_output=True, text=True, cwd=proj, timeout=1200)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and " failed" not in r.stdout


def test_styles_k_repeats_the_arms_and_reports_the_spread(tmp_path):
    """`stylseg reproduce --styles 2` (shortened with --set): the stylized and baseline arms are made once
    per style image (<arm>@s1), each is trained on, and the results carry the spread over style images."""
    run = tmp_path / "run"
    env = dict(os.environ, STYLSEG_THREADS=os.environ.get("STYLSEG_THREADS", "2"), MPLBACKEND="Agg")
    cmd = [sys.executable, "-m", "stylseg", "reproduce", "--profile", "smoke", "--styles", "2", "--out", str(run),
           "--set", "diffae.train_steps=40", "--set", "diffae.max_seconds=0", "--set", "seg.epochs=1",
           "--set", "stylize.iterations=2"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1500)
    assert r.returncode == 0, f"reproduce failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    L = RunLayout(run)
    cfg = json.loads(L.config.read_text())
    assert cfg["seg"]["epochs"] == 1 and cfg["diffae"]["train_steps"] == 40  # --set reached the notebooks
    styles = L.style_images()
    assert len(styles) == 2 and all(p.is_file() for p in styles)
    assert styles[0].read_bytes() != styles[1].read_bytes()
    assert (L.finetune_for(1) / "model.safetensors").is_file()
    n = len(list((L.domain("source", "train") / "images").glob("*.png")))
    for arm in ("st", "st@s1", "histogram", "histogram@s1", "reinhard@s1", "fda@s1"):
        m = json.loads((L.stylized(arm) / "manifest.json").read_text())
        assert len(m["items"]) == n, arm
        assert (L.seg("unet", arm, 0) / "metrics.json").is_file(), arm
    res = json.loads((L.eval / "results.json").read_text())
    spread = {(s["arm"], s["metric"]) for s in res["seg"]["style_spread"] if s["test"] == "target"}
    assert {("st", "dice"), ("histogram", "dice"), ("fda", "dice")} <= spread
    assert "Spread over style images" in (L.eval / "results.md").read_text()
    r2 = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert r2.returncode == 0 and r2.stdout.count("[skip]") == len(pipeline_notebooks())


def test_notebooks_03_04_show_a_lesion_gated_stylizer(smoke_run, tmp_path, monkeypatch):
    """A stylizer fine-tuned with ``stylize.structure_region=lesion`` gates its SPN term with the lesion masks. The
    notebooks that stylize a few images themselves (04's x0 walk, 03's trained-SPN section) must hand them over
    instead of failing with "none were given" (found in a cpu run with the documented gate recipe)."""
    import shutil

    from stylseg.reproduce import run_notebooks, write_run_config

    run, _ = smoke_run
    copy = tmp_path / "run"
    for part in ("data", "diffae"):
        shutil.copytree(run / part, copy / part)
    shutil.copy(run / "config.json", copy / "config.json")
    monkeypatch.setenv("STYLSEG_THREADS", os.environ.get("STYLSEG_THREADS", "2"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    sets = write_run_config(copy, "smoke", ["stylize.structure_region=lesion", "stylize.w_structure=0.25", "stylize.iterations=2"])
    nbs = {p.name[:2]: p for p in pipeline_notebooks()}
    # 04 first, so that 03 finds the lesion-gated stylizer (in the pipeline's order it would find none yet)
    recs = run_notebooks(copy, {"PROFILE": "smoke"}, [nbs["04"], nbs["03"]], log=lambda *_: None,
                         config_overrides=sets)
    assert [r["status"] for r in recs] == ["ran", "ran"]
    assert json.loads((copy / "finetune" / "config.json").read_text())["config"]["stylize"]["structure_region"] == "lesion"
    nb03 = json.loads((copy / "notebooks" / nbs["03"].name).read_text())
    text = "".join("".join(o.get("text", "")) for c in nb03["cells"] if c["cell_type"] == "code"
                   for o in c.get("outputs", []))
    assert "RUN_DIR/finetune not found" not in text  # the trained-SPN section ran on the gated stylizer


def test_presets_compared_in_one_run(smoke_run, tmp_path):
    """`stylseg reproduce --presets osasis,gates` on a finished smoke run's data and D_A: one stylizer per preset
    (`RUN/finetune@<preset>`, each with its preset's settings), the stylized arms per preset (`st@gates`,
    `source+st@osasis`), the baselines once, every arm trained on, and the presets side by side in the results."""
    import shutil

    run, _ = smoke_run
    copy = tmp_path / "run"
    for part in ("data", "diffae"):
        shutil.copytree(run / part, copy / part)
    env = dict(os.environ, STYLSEG_THREADS=os.environ.get("STYLSEG_THREADS", "2"), MPLBACKEND="Agg")
    cmd = [sys.executable, "-m", "stylseg", "reproduce", "--profile", "smoke", "--presets", "osasis,gates",
           "--out", str(copy), "--set", "stylize.iterations=2", "--set", "seg.epochs=1",
           "--set", "eval.arms=direct,st,source+st,histogram"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1500)
    assert r.returncode == 0, f"reproduce failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    L = RunLayout(copy)
    for preset in ("osasis", "gates"):
        meta = json.loads((L.finetune_for(0, preset) / "config.json").read_text())
        assert meta["config"]["stylize"]["preset"] == preset
    assert not (L.finetune / "config.json").exists()
    made = {p.name for p in (copy / "stylized").iterdir() if (p / "manifest.json").is_file()}
    assert {"st@osasis", "st@gates", "st_nospn@gates", "histogram", "source+st@osasis", "source+st@gates"} <= made
    assert not any(a.startswith("histogram@") for a in made)  # the baselines need no stylizer: made once
    man = json.loads((L.stylized("st@gates") / "manifest.json").read_text())
    assert (man["params"]["preset"], man["params"]["sensor"]) == ("gates", "match")
    trained = {p.parent.parent.name for p in (copy / "seg" / "unet").glob("*/seed0/metrics.json")}
    assert trained == {"direct", "st@osasis", "st@gates", "source+st@osasis", "source+st@gates", "histogram"}
    md = (L.eval / "results.md").read_text()
    assert "## The stylizer presets side by side" in md and "| `osasis` | `gates` |" in md
    from stylseg.study.tables import pooled_gain

    g = pooled_gain(copy / "seg", "unet", "source+st@gates", ["target", "source"], n_boot=50)
    n = sum(len(list((d / "images").glob("*.png"))) for d in (L.domain("target", "test"), L.domain("source", "test")))
    assert g["n_images"] == n and g["ci"][0] <= g["mean"] <= g["ci"][1]
