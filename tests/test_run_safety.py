"""Trustworthy runs: resume files that cannot run code, inputs in every fingerprint, one writer per
stage folder, no leftovers of killed saves, one run-folder format, a smoke profile decided by steps."""

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from stylseg import cli
from stylseg.checkpoint import folder_fingerprint, load_state, read_state_header, save_state
from stylseg.config import RunConfig, get_profile
from stylseg.data.io import write_image, write_mask
from stylseg.layout import RUN_FORMAT, RunLayout, check_run_format, save_run_config
from stylseg.lock import LOCK_FILE, stage_lock
from stylseg.manifest import ArmWriter
from stylseg.utils import StylsegError, atomic_path, clean_stale_tmp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEG_TINY = {"seg.image_size": 32, "seg.batch_size": 4, "seg.epochs": 2, "seg.lr": 3e-3, "seg.encoder_depth": 3,
            "seg.decoder_channels": "8,8,8"}
DIFFAE_TINY = {"diffae.image_size": 16, "diffae.base_channels": 8, "diffae.channel_mult": "1,2",
               "diffae.num_res_blocks": 1, "diffae.attn_resolutions": "", "diffae.enc_channel_mult": "1,2",
               "diffae.z_dim": 8, "diffae.batch_size": 4, "diffae.sample_every": 0, "diffae.checkpoint_every": 1,
               "diffae.max_seconds": 0, "diffae.sample_steps": 2, "ddim.apply_invert_steps": 2,
               "ddim.apply_gen_steps": 2}


def paired(root, n=6, size=24, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        m = np.zeros((size, size), bool)
        m[4 + i % 5:14 + i % 5, 5:15] = True
        write_image(root / "images" / f"{i}.png", rng.integers(0, 255, (size, size, 3)).astype(np.uint8))
        write_mask(root / "masks" / f"{i}.png", m)
    return root


class _Planted:
    """A pickle that, when unpickled, creates the file ``marker``: what a hostile resume file would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant(path, marker):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"model": _Planted(marker)}))


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra)
    return env


# --------------------------------------------------------------------------- resume files
def test_state_round_trip_restores_tensors_rng_and_plain_values(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    gen = torch.Generator().manual_seed(5)
    random.seed(1)
    np.random.seed(2)
    state = {"model": model.state_dict(), "opt": opt.state_dict(), "step": 7, "history": [{"loss": 0.5}],
             "best": -float("inf"), "tied": [model.weight, model.weight], "none": None,
             "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                     "gen": gen.get_state()}}
    p = save_state(tmp_path / "s.safetensors", state, fingerprint={"seed": 1})
    expect = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=gen))
    back = load_state(p, fingerprint={"seed": 1})
    assert back["step"] == 7 and back["history"] == [{"loss": 0.5}] and back["best"] == -float("inf")
    assert back["none"] is None and torch.equal(back["tied"][0], back["tied"][1])
    assert all(torch.equal(back["model"][k], v) for k, v in model.state_dict().items())
    opt2 = torch.optim.Adam(model.parameters(), lr=1e-3)
    opt2.load_state_dict(back["opt"])  # int keys and tuples (betas) survive
    assert opt2.state_dict()["param_groups"][0]["betas"] == (0.9, 0.999)
    torch.set_rng_state(back["rng"]["torch"])
    np.random.set_state(back["rng"]["numpy"])
    random.setstate(back["rng"]["python"])
    gen.set_state(back["rng"]["gen"])
    again = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=gen))
    assert torch.equal(expect[0], again[0]) and np.array_equal(expect[1], again[1])
    assert expect[2] == again[2] and torch.equal(expect[3], again[3])
    # another fingerprint is refused before any tensor is read, naming the field
    with pytest.raises(StylsegError, match=r"seed: 1 -> 2.*--no-resume"):
        load_state(p, fingerprint={"seed": 2}, hint="pass --no-resume")
    assert read_state_header(p)["fingerprint"] == {"seed": 1}


def test_a_planted_pickle_is_never_unpickled(tmp_path):
    marker = tmp_path / "ran"
    for name in ("x.safetensors", "x.pt"):
        plant(tmp_path / name, marker)
        with pytest.raises(StylsegError, match="not a stylseg resume file"):
            load_state(tmp_path / name)
    assert not marker.exists()


def test_seg_train_never_runs_a_planted_resume_file(tmp_path):
    from stylseg.seg import train_segmenter

    cfg = get_profile("smoke").override(**SEG_TINY)
    train = paired(tmp_path / "train")
    marker = tmp_path / "ran"
    for name in ("last.pt", "last.safetensors"):
        out = tmp_path / name
        plant(out / "checkpoints" / name, marker)
        with pytest.raises(StylsegError, match=name.replace(".", r"\.")):
            train_segmenter("unet", train, out, cfg, seed=0, progress=False)
    assert not marker.exists()


def test_diffae_train_never_runs_a_planted_resume_file(tmp_path):
    from stylseg.diffusion import train_diffae

    cfg = get_profile("smoke").override(**DIFFAE_TINY, **{"diffae.train_steps": 1})
    data = paired(tmp_path / "data", n=4, size=16)
    marker = tmp_path / "ran"
    for name in ("state.pt", "state.safetensors"):
        out = tmp_path / name
        plant(out / "checkpoint" / name, marker)
        with pytest.raises(StylsegError, match=name.replace(".", r"\.")):
            train_diffae(data, out, cfg, progress=False, log=lambda *_: None)
    assert not marker.exists()


def test_stylize_finetune_never_runs_a_planted_resume_file(tmp_path):
    from _testing import tiny_config, tiny_diffae, tiny_domains
    from stylseg.stylize.finetune import finetune

    cfg = tiny_config()
    diffae = tiny_diffae(tmp_path / "diffae", cfg)
    dom = tiny_domains(tmp_path / "data")
    marker = tmp_path / "ran"
    for name in ("checkpoint.pt", "checkpoint.safetensors"):
        out = tmp_path / name
        plant(out / name, marker)
        with pytest.raises(StylsegError, match=name.replace(".", r"\.")):
            finetune(diffae, dom["style"], dom["source"], out, cfg, device="cpu", progress=False)
    assert not marker.exists()


# --------------------------------------------------------------------------- inputs in every fingerprint
def test_seg_train_refuses_other_data_and_other_threads_but_resumes_the_same(tmp_path, monkeypatch):
    from stylseg.seg import train_segmenter

    cfg = get_profile("smoke").override(**SEG_TINY)
    train = paired(tmp_path / "train")
    out = tmp_path / "run"
    monkeypatch.setenv("STYLSEG_THREADS", "1")
    assert train_segmenter("unet", train, out, cfg, seed=0, progress=False, stop_after=1) is None
    # one image changed, same names and count: refused, naming the data and the flag
    write_image(train / "images" / "0.png", np.full((24, 24, 3), 7, np.uint8))
    with pytest.raises(StylsegError, match=r"train_data.*--overwrite"):
        train_segmenter("unet", train, out, cfg, seed=0, progress=False)
    paired(tmp_path / "train")  # the same content again: resumes
    # another thread count gives other weights: the resume is refused, naming the compute
    monkeypatch.setenv("STYLSEG_THREADS", "2")
    with pytest.raises(StylsegError, match=r"compute: 'cpu, 1 thread' -> 'cpu, 2 threads'"):
        train_segmenter("unet", train, out, cfg, seed=0, progress=False)
    monkeypatch.setenv("STYLSEG_THREADS", "1")
    model = train_segmenter("unet", train, out, cfg, seed=0, progress=False)
    assert json.loads((out / "history.json").read_text())[-1]["epoch"] == 2
    # a finished model is reused with the same input (on any thread count), refused with other input
    monkeypatch.setenv("STYLSEG_THREADS", "2")
    mtime = (model / "model.safetensors").stat().st_mtime_ns
    train_segmenter("unet", train, out, cfg, seed=0, progress=False)
    assert (model / "model.safetensors").stat().st_mtime_ns == mtime
    monkeypatch.setenv("STYLSEG_THREADS", "1")
    (out / "checkpoints" / "last.safetensors").unlink()
    other = paired(tmp_path / "other", seed=5)
    with pytest.raises(StylsegError, match=r"other input or settings.*--overwrite"):
        train_segmenter("unet", other, out, cfg, seed=0, progress=False)
    train_segmenter("unet", other, out, cfg, seed=0, progress=False, overwrite=True)
    assert json.loads((model / "config.json").read_text())["train"]["train_data"] == folder_fingerprint(other)


def test_seg_train_never_relabels_a_longer_run_as_fewer_epochs(tmp_path, monkeypatch):
    from stylseg.seg import train_segmenter

    monkeypatch.setenv("STYLSEG_THREADS", "1")
    train, out = paired(tmp_path / "train"), tmp_path / "run"
    model = train_segmenter("unet", train, out, get_profile("smoke").override(**SEG_TINY), seed=0, progress=False)
    weights, meta = (model / "model.safetensors").read_bytes(), (model / "config.json").read_text()
    one = get_profile("smoke").override(**{**SEG_TINY, "seg.epochs": 1})
    with pytest.raises(StylsegError, match=r"trained for 2 epochs, more than the 1 asked for.*seg.epochs=2.*--overwrite"):
        train_segmenter("unet", train, out, one, seed=0, progress=False)
    assert (model / "model.safetensors").read_bytes() == weights and (model / "config.json").read_text() == meta
    train_segmenter("unet", train, out, one, seed=0, progress=False, overwrite=True)
    assert json.loads((model / "config.json").read_text())["epochs"] == 1
    assert len(json.loads((out / "history.json").read_text())) == 1


@pytest.mark.parametrize("damage", ["epoch", "numpy_rng", "python_rng", "history"])
def test_a_resume_file_with_wrongly_typed_values_is_called_damaged(tmp_path, monkeypatch, damage):
    """A crafted resume file with the right fingerprint but values of the wrong type: one clear message, no
    TypeError or IndexError from deep inside the resume."""
    from stylseg.seg import train_segmenter

    monkeypatch.setenv("STYLSEG_THREADS", "1")
    cfg = get_profile("smoke").override(**SEG_TINY)
    train, out = paired(tmp_path / "train"), tmp_path / "run"
    assert train_segmenter("unet", train, out, cfg, seed=0, progress=False, stop_after=1) is None
    last = out / "checkpoints" / "last.safetensors"
    fp = read_state_header(last)["fingerprint"]
    state = load_state(last)
    if damage == "epoch":
        state["epoch"] = "abc"
    elif damage == "numpy_rng":
        state["rng"]["numpy"] = ("MT19937", 5)
    elif damage == "python_rng":
        state["rng"]["python"] = (3, (1, 2), None)
    else:
        state["history"] = 7
    save_state(last, state, fingerprint=fp)
    with pytest.raises(StylsegError, match=r"last.safetensors: resume file is damaged .*delete it"):
        train_segmenter("unet", train, out, cfg, seed=0, progress=False)
    assert not (out / "model").exists()


def test_diffae_train_notices_other_data_with_as_many_images(tmp_path):
    from stylseg.diffusion import train_diffae

    cfg = get_profile("smoke").override(**DIFFAE_TINY, **{"diffae.train_steps": 2})
    a, b = paired(tmp_path / "a", n=4, size=16), paired(tmp_path / "b", n=4, size=16, seed=9)
    out = train_diffae(a, tmp_path / "m", cfg, progress=False, log=lambda *_: None)
    msgs = []
    train_diffae(a, out, cfg, progress=False, log=msgs.append)  # same data: nothing to do, as before
    assert any("already trained" in m for m in msgs)
    with pytest.raises(StylsegError, match=r"other input or settings \(data: .*--no-resume"):
        train_diffae(b, out, cfg, progress=False, log=lambda *_: None)


def test_an_arm_made_from_other_input_is_refused_and_overwrite_remakes_it(tmp_path):
    from stylseg.stylize.baselines import apply_baseline

    a, b = paired(tmp_path / "a"), paired(tmp_path / "b", seed=3)
    style = write_image(tmp_path / "style.png", np.random.default_rng(1).integers(0, 255, (24, 24, 3)).astype(np.uint8))
    out = apply_baseline("histogram", style, a, tmp_path / "arm", 16, progress=False)
    before = (out / "images" / "0.png").read_bytes()
    apply_baseline("histogram", style, a, out, 16, progress=False)  # the same input resumes (nothing to do)
    with pytest.raises(StylsegError, match=r"other input.*--overwrite"):
        apply_baseline("histogram", style, b, out, 16, progress=False)
    m = json.loads((out / "manifest.json").read_text())
    assert m["source"] == str(a) and (out / "images" / "0.png").read_bytes() == before  # nothing was touched
    apply_baseline("histogram", style, b, out, 16, progress=False, overwrite=True)
    m = json.loads((out / "manifest.json").read_text())
    assert m["source"] == str(b) and m["source_fingerprint"] == folder_fingerprint(b)
    assert (out / "images" / "0.png").read_bytes() != before


def test_an_arm_made_with_another_style_image_names_the_style(tmp_path):
    from stylseg.stylize.baselines import apply_baseline

    a = paired(tmp_path / "a")
    style = write_image(tmp_path / "style.png", np.random.default_rng(1).integers(0, 255, (24, 24, 3)).astype(np.uint8))
    out = apply_baseline("histogram", style, a, tmp_path / "arm", 16, progress=False)
    write_image(style, np.random.default_rng(2).integers(0, 255, (24, 24, 3)).astype(np.uint8))
    with pytest.raises(StylsegError, match=rf"other settings \(the style image {style}: content [0-9a-f]+ -> "
                                           rf"[0-9a-f]+\).*--overwrite"):
        apply_baseline("histogram", style, a, out, 16, progress=False)


def test_a_damaged_arm_item_is_made_again_on_rerun(tmp_path):
    from stylseg.stylize.baselines import apply_baseline

    a = paired(tmp_path / "a")
    style = write_image(tmp_path / "style.png", np.random.default_rng(1).integers(0, 255, (24, 24, 3)).astype(np.uint8))
    out = apply_baseline("histogram", style, a, tmp_path / "arm", 16, progress=False)
    good = (out / "images" / "4.png").read_bytes()
    (out / "images" / "4.png").write_bytes(good[:100])  # truncated
    (out / "masks" / "2.png").write_bytes(b"not a png")
    apply_baseline("histogram", style, a, out, 16, progress=False)
    assert (out / "images" / "4.png").read_bytes() == good
    from stylseg.data.check import check_folder

    assert not check_folder(out).problems


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_arm_never_writes_through_a_symlinked_folder(tmp_path, overwrite):
    from stylseg.stylize.baselines import apply_baseline

    a = paired(tmp_path / "a")
    style = write_image(tmp_path / "style.png", np.random.default_rng(1).integers(0, 255, (24, 24, 3)).astype(np.uint8))
    out = apply_baseline("histogram", style, a, tmp_path / "arm", 16, progress=False)
    victim = tmp_path / "outside_victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    import shutil

    shutil.rmtree(out / "images")
    (out / "images").symlink_to(victim, target_is_directory=True)
    manifest = (out / "manifest.json").read_bytes()
    with pytest.raises(StylsegError, match=r"arm/images: a symbolic link; .*never through links"):
        apply_baseline("histogram", style, a, out, 16, progress=False, overwrite=overwrite)
    assert sorted(p.name for p in victim.iterdir()) == ["keep.txt"]
    assert (out / "manifest.json").read_bytes() == manifest  # nothing half-done


def test_stylize_apply_into_an_arm_of_other_input_exits_2(tmp_path, capsys):
    from _testing import tiny_config, tiny_diffae, tiny_domains

    cfg = tiny_config()
    diffae = tiny_diffae(tmp_path / "diffae", cfg)
    dom = tiny_domains(tmp_path / "data")
    cfg.save(tmp_path / "cfg.json")
    args = ["stylize", "apply", "--mode", "recon", "--diffae", str(diffae), "--out", str(tmp_path / "arm"),
            "--config", str(tmp_path / "cfg.json"), "--device", "cpu"]
    assert cli.main(args + ["--input", str(dom["source"])]) == 0
    capsys.readouterr()
    assert cli.main(args + ["--input", str(dom["target"])]) == 2
    assert "other input" in capsys.readouterr().err
    assert json.loads((tmp_path / "arm" / "manifest.json").read_text())["source"] == str(dom["source"])
    assert cli.main(args + ["--input", str(dom["target"]), "--overwrite"]) == 0


# --------------------------------------------------------------------------- one writer at a time
HOLD = textwrap.dedent("""
    import os, signal, sys, time
    from stylseg.lock import stage_lock
    with stage_lock(sys.argv[1], "test holder"):
        print("held", flush=True)
        if sys.argv[2] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)
""")


def _holder(folder, how):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), how], stdout=subprocess.PIPE, env=_env())
    if how == "kill":
        p.wait(timeout=60)
        return p
    assert p.stdout.readline().strip() == b"held"
    return p


def test_a_second_writer_stops_at_once_naming_the_first(tmp_path, capsys):
    from stylseg.seg import train_segmenter

    cfg = get_profile("smoke").override(**SEG_TINY)
    train = paired(tmp_path / "train")
    out = tmp_path / "run"
    p = _holder(out, "hold")
    try:
        t = time.perf_counter()
        with pytest.raises(StylsegError, match=rf"process {p.pid} on .*test holder.*another --out"):
            train_segmenter("unet", train, out, cfg, seed=1, progress=False)
        assert time.perf_counter() - t < 5
        rc = cli.main(["seg", "train", "--arch", "unet", "--train", str(train), "--out", str(out)]
                      + [f"--set={k}={v}" for k, v in SEG_TINY.items()])
        assert rc == 2 and f"process {p.pid}" in capsys.readouterr().err
        assert not (out / "checkpoints").exists()
    finally:
        p.kill()
        p.wait()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    p = _holder(tmp_path / "f", "kill")
    assert p.returncode == -signal.SIGKILL and (tmp_path / "f" / LOCK_FILE).is_file()  # left behind
    with stage_lock(tmp_path / "f", "next"):
        assert json.loads((tmp_path / "f" / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / "f" / LOCK_FILE).exists()  # released and removed


# --------------------------------------------------------------------------- no leftovers
KILLED_SAVE = textwrap.dedent("""
    import os, signal, sys
    import safetensors.torch as st
    import torch

    def killed(tensors, path, metadata=None):
        open(path, "wb").write(b"half a checkpoint")
        os.kill(os.getpid(), signal.SIGKILL)

    st.save_file = killed
    from stylseg.checkpoint import save_state
    save_state(sys.argv[1], {"w": torch.zeros(3)})
""")


def test_a_save_killed_midway_leaves_no_temporary_file_behind(tmp_path):
    path = tmp_path / "ck" / "last.safetensors"
    p = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(path)], env=_env(), timeout=120)
    assert p.returncode == -signal.SIGKILL
    left = [f.name for f in path.parent.iterdir()]
    assert not path.exists() and len(left) == 1 and left[0].startswith(".last.safetensors.")
    save_state(path, {"w": torch.ones(3)})  # the next save of that file removes it
    assert [f.name for f in path.parent.iterdir()] == ["last.safetensors"]
    # a live writer's temporary file is kept; a folder's stage lock removes those of dead writers anywhere below
    with atomic_path(tmp_path / "ck" / "sub" / "x.json") as tmp:
        tmp.write_text("{}")
        assert clean_stale_tmp(tmp.parent) == 0 and tmp.exists()
    subprocess.run([sys.executable, "-c", KILLED_SAVE, str(tmp_path / "ck" / "sub" / "y.safetensors")], env=_env(),
                   timeout=120)
    assert any(f.name.startswith(".y.") for f in (tmp_path / "ck" / "sub").iterdir())
    with stage_lock(tmp_path / "ck"):
        pass
    assert sorted(f.name for f in (tmp_path / "ck" / "sub").iterdir()) == ["x.json"]


# --------------------------------------------------------------------------- run-folder format
def test_run_folder_format_is_written_and_another_gets_one_message(tmp_path):
    from stylseg.nbtools import setup
    from stylseg.reproduce import write_run_config

    ns = {"PROFILE": "smoke", "SEED": 0, "DEVICE": "cpu", "DATA_DIR": "", "RUN_DIR": str(tmp_path / "new")}
    cfg, lay, _ = setup(ns, quiet=True)
    saved = json.loads(lay.config.read_text())
    assert saved["run_format"] == RUN_FORMAT and RunConfig.load(lay.config) == cfg
    setup(ns, quiet=True)  # a folder of this format is reused

    old = RunLayout(tmp_path / "old")
    old.root.mkdir()
    old.config.write_text(json.dumps(get_profile("smoke").to_dict()))  # no run_format: written before it existed
    with pytest.raises(StylsegError, match=r"format 1, made by an older stylseg.*safetensors.*new folder") as e:
        check_run_format(old.root)
    msg = str(e.value)
    for call in (lambda: setup(dict(ns, RUN_DIR=str(old.root)), quiet=True),
                 lambda: write_run_config(old.root, "smoke", ["seg.epochs=2"]),
                 lambda: stage_lock(old.seg("unet", "direct", 0)).__enter__()):
        with pytest.raises(StylsegError) as e2:
            call()
        assert str(e2.value) == msg  # one message wherever the folder is opened
    assert not old.seg("unet", "direct", 0).exists()
    newer = tmp_path / "newer"
    save_run_config(newer / "config.json", get_profile("smoke"))
    d = json.loads((newer / "config.json").read_text())
    d["run_format"] = RUN_FORMAT + 1
    (newer / "config.json").write_text(json.dumps(d))
    with pytest.raises(StylsegError, match="newer stylseg"):
        check_run_format(newer)
    # a model folder's config.json is not a run folder's
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({"kind": "diffae", "config": {}}))
    with stage_lock(tmp_path / "model" / "samples"):
        pass


def test_data_prepare_and_reproduce_refuse_an_old_run_folder(tmp_path, capsys):
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text(json.dumps(get_profile("smoke").to_dict()))
    assert cli.main(["data", "prepare", "--out", str(old), "--profile", "smoke"]) == 2
    assert "format 1" in capsys.readouterr().err and not (old / "data").exists()
    assert cli.main(["reproduce", "--out", str(old), "--upto", "0"]) == 2
    assert "format 1" in capsys.readouterr().err and not (old / "notebooks").exists()


# --------------------------------------------------------------------------- a reproducible smoke profile
def test_smoke_diffae_is_decided_by_its_step_budget_not_the_clock():
    dc = get_profile("smoke").diffae
    assert dc.max_seconds == 0 and dc.train_steps > 0


def test_arm_writer_records_the_input_fingerprint(tmp_path):
    src = paired(tmp_path / "src", n=2)
    w = ArmWriter(tmp_path / "arm", "x", "x", {}, source=src, size=8)
    w.flush()
    assert json.loads((tmp_path / "arm" / "manifest.json").read_text())["source_fingerprint"] == \
        folder_fingerprint(src)


def test_a_time_capped_diffae_is_named_in_the_report(tmp_path):
    from stylseg.report import build_report
    from stylseg.utils import save_model_folder

    lay = RunLayout(tmp_path / "run")
    lay.root.mkdir()
    build_report(lay.root)
    assert "Note" not in (lay.eval / "results.md").read_text()  # a D_A trained by its step budget: no note
    save_model_folder(lay.diffae, "diffae", {}, {"w": torch.zeros(1)},
                      extra={"training": {"step": 216, "train_steps": 240, "stopped_by": "time", "max_seconds": 90.0}})
    build_report(lay.root)
    for f in (lay.eval / "results.md", lay.index_html):
        text = f.read_text()
        assert "step 216 of 240" in text and "diffae.max_seconds=0" in text, f


class _Stop(Exception):
    pass


def _stop_at_1(it, i, t, x0):
    if it == 1:
        raise _Stop


def test_stylize_finetune_notices_other_content_and_other_compute(tmp_path):
    import shutil

    from _testing import tiny_config, tiny_diffae, tiny_domains
    from stylseg.stylize.finetune import finetune

    cfg = tiny_config()
    diffae = tiny_diffae(tmp_path / "diffae", cfg)
    dom = tiny_domains(tmp_path / "data")
    run = lambda content, out, **kw: finetune(diffae, dom["style"], content, out, cfg, device="cpu",  # noqa: E731
                                              progress=False, **kw)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with pytest.raises(_Stop):
            run(dom["source"], tmp_path / "ft", callback=_stop_at_1)
        torch.set_num_threads(2)  # resuming on other compute would give neither run's weights
        with pytest.raises(StylsegError, match=r"other compute \(cpu, 1 thread; here cpu, 2 threads"):
            run(dom["source"], tmp_path / "ft")
        torch.set_num_threads(1)
        out = run(dom["source"], tmp_path / "ft")
        torch.set_num_threads(2)
        assert run(dom["source"], out) == out  # a finished stylizer is reused on any compute
        # the same file names with other content: refused; the same content elsewhere: reused
        other = tmp_path / "other"
        shutil.copytree(dom["source"], other)
        first = sorted((other / "images").iterdir())[0]
        from PIL import Image

        w, h = Image.open(first).size  # another picture of the same size (the pairing rules stay met)
        write_image(first, np.full((h, w, 3), 3, np.uint8))
        with pytest.raises(StylsegError, match=r"other settings.*--overwrite"):
            run(other, out)
        same = tmp_path / "same"
        shutil.copytree(dom["source"], same)
        mtime = (out / "model.safetensors").stat().st_mtime_ns
        assert run(same, out) == out and (out / "model.safetensors").stat().st_mtime_ns == mtime
    finally:
        torch.set_num_threads(threads)


def test_a_fine_tuning_resumed_with_other_settings_names_them(tmp_path):
    from _testing import tiny_config, tiny_diffae, tiny_domains
    from stylseg.stylize.finetune import finetune

    cfg = tiny_config()
    diffae = tiny_diffae(tmp_path / "diffae", cfg)
    dom = tiny_domains(tmp_path / "data")
    with pytest.raises(_Stop):
        finetune(diffae, dom["style"], dom["source"], tmp_path / "ft", cfg, device="cpu", progress=False,
                 callback=_stop_at_1)
    with pytest.raises(StylsegError, match=r"stylize\.lr_spn: 0\.0001 -> 0\.001.*--overwrite"):
        finetune(diffae, dom["style"], dom["source"], tmp_path / "ft", cfg.override(**{"stylize.lr_spn": 1e-3}),
                 device="cpu", progress=False)


def test_a_moved_run_folder_is_reused_as_it_is(tmp_path):
    """Inputs are compared by content, not by path: a run folder handed out (copied elsewhere) is reused."""
    import shutil

    from stylseg.seg import train_segmenter

    cfg = get_profile("smoke").override(**dict(SEG_TINY, **{"seg.epochs": 1}))
    train_segmenter("unet", paired(tmp_path / "a" / "train"), tmp_path / "a" / "run", cfg, seed=0, progress=False)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    model = tmp_path / "b" / "run" / "model"
    mtime = (model / "model.safetensors").stat().st_mtime_ns
    assert train_segmenter("unet", tmp_path / "b" / "train", tmp_path / "b" / "run", cfg, seed=0,
                           progress=False) == model
    assert (model / "model.safetensors").stat().st_mtime_ns == mtime
