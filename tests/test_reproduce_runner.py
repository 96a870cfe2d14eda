"""The papermill runner: order, parameters passed only where declared, resume, clear failure."""

import json
import os
import shutil

import pytest

from stylseg.nbtools import new_notebook, strip_outputs, write_notebook
from stylseg.reproduce import pipeline_notebooks, run_notebooks
from stylseg.utils import StylsegError

PARAMS = '''PROFILE = "smoke"  # profile
SEED = 0  # seed
DEVICE = "auto"  # device
DATA_DIR = ""  # data
RUN_DIR = "../runs/x"  # run folder'''


def _nb(folder, name, body, extra_params=""):
    nb = new_notebook([
        ("md", f"# {name}"),
        ("code", PARAMS + extra_params, ["parameters"]),
        ("code", "from stylseg import nbtools\ncfg, layout, device = nbtools.setup(globals(), quiet=True)"),
        ("code", body),
    ])
    write_notebook(nb, folder / name)


@pytest.fixture
def nbdir(tmp_path):
    d = tmp_path / "notebooks"
    d.mkdir()
    _nb(d, "00_first.ipynb", "import pathlib\n(layout.root / 'first.txt').write_text(str(SEED) + PROFILE)")
    _nb(d, "01_second.ipynb", "(layout.root / 'second.txt').write_text(str(EXTRA))", "\nEXTRA = 1  # extra")
    _nb(d, "09_not_pipeline.ipynb", "raise SystemExit('must not run')")
    return d


def test_runs_in_order_resumes_and_passes_declared_params(nbdir, tmp_path):
    run = tmp_path / "run"
    nbs = pipeline_notebooks(nbdir)
    assert [p.name for p in nbs] == ["00_first.ipynb", "01_second.ipynb"]
    recs = run_notebooks(run, {"PROFILE": "smoke", "SEED": 3, "EXTRA": 7, "UNUSED": 1}, nbs, log=lambda *_: None)
    assert [r["status"] for r in recs] == ["ran", "ran"]
    assert (run / "first.txt").read_text() == "3smoke"
    assert (run / "second.txt").read_text() == "7"
    done = json.loads((run / "notebooks" / "00_first.done.json").read_text())
    assert "UNUSED" not in done["parameters"] and "EXTRA" not in done["parameters"]
    assert json.loads((run / "config.json").read_text())["seed"] == 3
    # second call: skipped; changed parameter: rerun
    assert [r["status"] for r in run_notebooks(run, {"PROFILE": "smoke", "SEED": 3, "EXTRA": 7}, nbs,
                                               log=lambda *_: None)] == ["skipped", "skipped"]
    recs = run_notebooks(run, {"PROFILE": "smoke", "SEED": 3, "EXTRA": 8}, nbs, log=lambda *_: None)
    assert [r["status"] for r in recs] == ["skipped", "ran"]
    assert (run / "second.txt").read_text() == "8"


def test_failure_names_notebook_and_bad_parameter(nbdir, tmp_path):
    nbs = pipeline_notebooks(nbdir)
    with pytest.raises(StylsegError, match="notebook 00_first.ipynb failed.*PROFILE='fast' is unknown"):
        run_notebooks(tmp_path / "run", {"PROFILE": "fast"}, nbs, log=lambda *_: None)
    assert not (tmp_path / "run" / "notebooks" / "00_first.done.json").exists()


def test_strip_outputs(nbdir, tmp_path):
    run_notebooks(tmp_path / "run", {}, pipeline_notebooks(nbdir), log=lambda *_: None)
    executed = tmp_path / "run" / "notebooks" / "00_first.ipynb"
    assert strip_outputs(executed) is True
    nb = json.loads(executed.read_text())
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
    assert strip_outputs(executed) is False


def test_missing_notebooks_folder(tmp_path):
    with pytest.raises(StylsegError, match="notebooks folder not found"):
        pipeline_notebooks(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StylsegError, match="no numbered notebooks"):
        pipeline_notebooks(tmp_path / "empty")


def test_set_overrides_reach_every_notebook_and_count_for_resume(tmp_path):
    """`stylseg reproduce --set seg.epochs=2`: written into RUN/config.json before the notebooks run, read by
    each notebook's setup; a rerun with the same --set skips, another --set reruns; bad fields fail at once."""
    from stylseg.reproduce import write_run_config

    d = tmp_path / "notebooks"
    d.mkdir()
    _nb(d, "00_a.ipynb", "(layout.root / 'a.txt').write_text(str(cfg.seg.epochs))")
    _nb(d, "01_b.ipynb", "(layout.root / 'b.txt').write_text(str(cfg.seg.epochs) + ' ' + str(cfg.diffae.lr))")
    run, nbs, quiet = tmp_path / "run", pipeline_notebooks(d), (lambda *_: None)
    sets = write_run_config(run, "smoke", ["seg.epochs=2", "diffae.lr=0.01"])
    recs = run_notebooks(run, {"PROFILE": "smoke"}, nbs, log=quiet, config_overrides=sets)
    assert [r["status"] for r in recs] == ["ran", "ran"]
    assert (run / "a.txt").read_text() == "2" and (run / "b.txt").read_text() == "2 0.01"
    sets = write_run_config(run, "smoke", ["seg.epochs=2", "diffae.lr=0.01"])
    assert [r["status"] for r in run_notebooks(run, {"PROFILE": "smoke"}, nbs, log=quiet,
                                               config_overrides=sets)] == ["skipped", "skipped"]
    sets = write_run_config(run, "smoke", ["seg.epochs=3"])  # the earlier lr override stays in the run's config
    assert [r["status"] for r in run_notebooks(run, {"PROFILE": "smoke"}, nbs, log=quiet,
                                               config_overrides=sets)] == ["ran", "ran"]
    assert (run / "b.txt").read_text() == "3 0.01"
    with pytest.raises(StylsegError, match="unknown field 'epoch'"):
        write_run_config(run, "smoke", ["seg.epoch=3"])
    assert write_run_config(tmp_path / "other", "smoke", []) == {} and not (tmp_path / "other").exists()
    with pytest.raises(StylsegError, match="unknown field 'epoch'"):  # a fresh run folder is not made for nothing
        write_run_config(tmp_path / "fresh", "smoke", ["seg.epoch=3"])
    assert not (tmp_path / "fresh").exists()


def test_refused_under_a_launcher(tmp_path, monkeypatch, capsys):
    """Started by torchrun / accelerate launch, every process would run every notebook into one folder (and the
    kernels would wait for peers): refused at once, naming the launcher and the stage commands, nothing written."""
    from stylseg.cli import main

    run = tmp_path / "run"
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["reproduce", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "one of 2 processes" in err and "Run it plainly" in err and "stylize finetune" in err
    assert not run.exists()
    monkeypatch.setenv("WORLD_SIZE", "1")  # a launcher with one process is a plain run: the check lets it pass
    from stylseg.reproduce import _refuse_launcher

    _refuse_launcher()
    monkeypatch.delenv("WORLD_SIZE")  # mpirun's variable is named, not WORLD_SIZE
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "3")
    assert main(["reproduce", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "one of 3 processes (OMPI_COMM_WORLD_SIZE=3" in err


@pytest.mark.skipif(os.name != "posix", reason="local-socket kernels are a Linux/macOS transport")
def test_notebook_kernels_talk_over_local_sockets(tmp_path, capfd, monkeypatch):
    """The kernels the runner starts listen on local sockets, not on TCP ports of localhost that any user of the
    machine could connect to (and so print no "running over TCP without encryption" warning per notebook).
    A runtime folder too long for a socket's path keeps TCP."""
    import tempfile

    from stylseg.reproduce import kernel_manager_class

    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / ("x" * 60)))
    assert kernel_manager_class().__name__ == "KernelManager"
    short = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # a short path: tmp_path can be too long for a socket
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", short)
    d = tmp_path / "notebooks"
    d.mkdir()
    _nb(d, "00_transport.ipynb", "from ipykernel.kernelapp import IPKernelApp\n"
                                 "(layout.root / 'transport.txt').write_text(IPKernelApp.instance().transport)")
    run = tmp_path / "run"
    try:
        recs = run_notebooks(run, {"PROFILE": "smoke"}, pipeline_notebooks(d), log=lambda *_: None)
        assert [r["status"] for r in recs] == ["ran"]
        assert (run / "transport.txt").read_text() == "ipc"
        assert "without encryption" not in capfd.readouterr().err
        assert not os.listdir(short)  # the kernel's sockets and connection file are gone with it
    finally:
        shutil.rmtree(short, ignore_errors=True)
