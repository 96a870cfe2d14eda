"""DiffAE training: the loss falls, resume is exact, outputs and errors; the diffae CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from stylseg import cli
from stylseg.checkpoint import load_state
from stylseg.config import get_profile
from stylseg.data.io import write_image
from stylseg.data.tensors import load_folder_tensor
from stylseg.diffusion import DiffAE, train_diffae
from stylseg.diffusion.train import checkpoint_line
from stylseg.utils import StylsegError, save_model_folder

TINY = {"diffae.image_size": 16, "diffae.base_channels": 16, "diffae.channel_mult": "1,2", "diffae.num_res_blocks": 1,
        "diffae.attn_resolutions": "8", "diffae.enc_channel_mult": "1,2", "diffae.z_dim": 8, "diffae.batch_size": 8,
        "diffae.lr": 2e-3, "diffae.warmup_steps": 5, "diffae.sample_every": 4, "diffae.checkpoint_every": 3,
        "diffae.max_seconds": 0, "diffae.sample_steps": 4, "ddim.apply_invert_steps": 4, "ddim.apply_gen_steps": 3}


def cfg_with(**kv):
    d = dict(TINY)
    d.update(kv)
    return get_profile("smoke").override(**d)


def _blob_images(folder, n=12, size=24, seed=0, modes=False):
    """Smooth synthetic images: a coloured disc on a gradient (some of other sizes and modes)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        s = size if not modes or i % 3 else size + 8
        yy, xx = np.mgrid[:s, :s] / s
        cx, cy, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.15, 0.3)]
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r)[..., None]
        base = np.stack([0.6 + 0.3 * xx, 0.3 + 0.2 * yy, 0.3 * np.ones_like(xx)], -1)
        img = np.where(disc, [0.9, 0.8, 0.6], base)
        arr = (img * 255).astype(np.uint8)
        if modes and i % 4 == 1:
            Image.fromarray(arr).convert("L").save(folder / f"{i:03d}.png")
        elif modes and i % 4 == 2:
            Image.fromarray(arr).convert("RGBA").save(folder / f"{i:03d}.png")
        else:
            write_image(folder / f"{i:03d}.png", arr)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _blob_images(tmp_path_factory.mktemp("diffae_data") / "images")


def test_load_images_handles_sizes_modes_and_bad_input(tmp_path):
    d = _blob_images(tmp_path / "mixed" / "images", n=8, modes=True)
    x, names = load_folder_tensor(d.parent, 16)  # a paired folder's images/ is found
    assert x.shape == (8, 3, 16, 16) and x.min() >= -1 and x.max() <= 1 and len(names) == 8
    (tmp_path / "empty").mkdir()
    with pytest.raises(StylsegError, match="no images found"):
        load_folder_tensor(tmp_path / "empty", 16)
    (d / "broken.png").write_bytes(b"not a png")
    with pytest.raises(StylsegError, match="broken.png"):
        load_folder_tensor(d, 16)
    with pytest.raises(StylsegError, match="not found"):
        load_folder_tensor(tmp_path / "nope", 16)


def test_training_reduces_the_loss_and_writes_outputs(tmp_path, data):
    cfg = cfg_with(**{"diffae.train_steps": 40})
    out = train_diffae(data, tmp_path / "m", cfg, progress=False, log=lambda *_: None)
    hist = json.loads((out / "history.json").read_text())
    assert hist["steps_done"] == 40 and len(hist["loss"]) == 40 and hist["finished"]
    assert hist["loss_falls"]["ratio"] < 0.7
    for f in ("config.json", "model.safetensors", "loss_curve.png", "checkpoint/state.safetensors", "samples/final.png",
              "samples/step_0000004.png"):
        assert (out / f).is_file(), f
    # held-out denoising loss on fixed (x0, t, noise): untrained model = E[eps^2], trained much lower
    m = DiffAE.from_pretrained(out)
    untrained = DiffAE.from_config(cfg.diffae, cfg.ddim).eval()
    x, _ = load_folder_tensor(data, 16)
    g = torch.Generator().manual_seed(5)
    t = torch.randint(0, 1000, (len(x),), generator=g)
    noise = torch.randn(x.shape, generator=g)
    xt = m.schedule.add_noise(x, noise, t)
    with torch.no_grad():
        before = float(((untrained(xt, t, untrained.encode(x)) - noise) ** 2).mean())
        after = float(((m(xt, t, m.encode(x)) - noise) ** 2).mean())
    assert before == pytest.approx(float((noise ** 2).mean()))
    assert after < 0.6 * before, (before, after)
    # a finished run is not repeated
    msgs = []
    train_diffae(data, out, cfg, progress=False, log=msgs.append)
    assert any("already trained" in s for s in msgs)


def test_resume_is_exact(tmp_path, data):
    """5 steps, then resume to 10 == 10 steps straight (dropout on, so RNG states matter)."""
    cfg10 = cfg_with(**{"diffae.train_steps": 10, "diffae.dropout": 0.1})
    cfg5 = cfg10.override(**{"diffae.train_steps": 5})
    log = lambda *_: None  # noqa: E731
    a = train_diffae(data, tmp_path / "a", cfg10, progress=False, log=log)
    b = train_diffae(data, tmp_path / "b", cfg5, progress=False, log=log)
    assert json.loads((b / "config.json").read_text())["training"]["finished"] is True
    train_diffae(data, b, cfg10, progress=False, log=log)
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=0, rtol=0)
    sa = load_state(a / "checkpoint" / "state.safetensors")
    sb = load_state(b / "checkpoint" / "state.safetensors")
    for k in sa["model"]:
        torch.testing.assert_close(sa["model"][k], sb["model"][k], atol=0, rtol=0)
    assert sa["history"]["loss"] == sb["history"]["loss"]


def test_checkpoints_log_progress_without_a_bar(tmp_path, data):
    """A run without the progress bar (a script, a log file) logs one line per periodic checkpoint."""
    msgs = []
    cfg = cfg_with(**{"diffae.train_steps": 6, "diffae.checkpoint_every": 3})
    train_diffae(data, tmp_path / "m", cfg, progress=False, log=msgs.append)
    lines = [m for m in msgs if m.startswith("DiffAE step ")]
    assert [m.split(":")[0] for m in lines] == ["DiffAE step 3/6", "DiffAE step 6/6"]
    assert all("s a step" in m and "min to go" in m for m in lines)
    assert lines[-1].endswith("about 0 min to go")
    msgs.clear()  # with the bar, no such lines
    train_diffae(data, tmp_path / "b", cfg, progress=True, log=msgs.append)
    assert not [m for m in msgs if m.startswith("DiffAE step ")]


def test_checkpoint_line_rate_and_time_left():
    line = checkpoint_line(250, 4000, [2.0] * 40 + [1.0] * 50, seconds=375.0, steps_here=250)
    assert line == ("DiffAE step 250/4000: loss 1.0000 (mean of the last 50), 1.50 s a step, "
                    "about 94 min to go")
    assert "loss n/a" in checkpoint_line(0, 10, [], seconds=0.0, steps_here=0)


def test_time_cap_stops_cleanly_and_saves(tmp_path, data):
    cfg = cfg_with(**{"diffae.train_steps": 1000, "diffae.max_seconds": 1e-6})
    out = train_diffae(data, tmp_path / "m", cfg, progress=False, log=lambda *_: None)
    meta = json.loads((out / "config.json").read_text())
    assert meta["training"]["finished"] is False and meta["training"]["stopped_by"] == "time"
    DiffAE.from_pretrained(out)
    # a spent budget is not spent again by a rerun with the same settings (model unchanged) ...
    before = (out / "model.safetensors").read_bytes()
    train_diffae(data, out, cfg, progress=False, log=lambda *_: None)
    assert (out / "model.safetensors").read_bytes() == before
    # ... but a larger budget trains on from the checkpoint
    train_diffae(data, out, cfg.override(**{"diffae.train_steps": 3, "diffae.max_seconds": 0}), progress=False,
                 log=lambda *_: None)
    meta = json.loads((out / "config.json").read_text())
    assert meta["training"]["finished"] is True and meta["training"]["step"] == 3


def test_mismatched_checkpoint_and_foreign_out_folder(tmp_path, data):
    cfg = cfg_with(**{"diffae.train_steps": 2})
    out = train_diffae(data, tmp_path / "m", cfg, progress=False, log=lambda *_: None)
    with pytest.raises(StylsegError, match=r"state\.safetensors.*base_channels: 16 -> 8"):
        train_diffae(data, out, cfg.override(**{"diffae.base_channels": 8}), progress=False, log=lambda *_: None)
    save_model_folder(tmp_path / "seg", "segmenter", {"a": 1}, {"w": torch.zeros(1)})
    with pytest.raises(StylsegError, match="segmenter"):
        train_diffae(data, tmp_path / "seg", cfg, progress=False, log=lambda *_: None)


def test_cli_train_reconstruct_sample(tmp_path, data, capsys):
    sets = [f"--set={k}={v}" for k, v in TINY.items()] + ["--set=diffae.train_steps=6"]
    assert cli.main(["diffae", "train", "--data", str(data), "--out", str(tmp_path / "m"), "--quiet",
                     "--device", "cpu"] + sets) == 0
    rc = cli.main(["diffae", "reconstruct", "--model", str(tmp_path / "m"), "--input", str(data), "--out",
                   str(tmp_path / "rec"), "--t0", "0.2", "--steps", "3"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "mean PSNR" in out and "mean SSIM" in out
    res = json.loads((tmp_path / "rec" / "metrics.json").read_text())
    assert len(res["per_image"]) == 12 and len(list((tmp_path / "rec").glob("*.png"))) == 12
    assert res["psnr_mean"] > 10  # a shallow inversion round trip keeps the image
    assert cli.main(["diffae", "reconstruct", "--model", str(tmp_path / "m"), "--input", str(data), "--out",
                     str(tmp_path / "sde"), "--fresh-noise", "--t0", "0.1", "--steps", "2"]) == 0
    assert json.loads((tmp_path / "sde" / "metrics.json").read_text())["mode"] == "sdedit"
    assert cli.main(["diffae", "sample", "--model", str(tmp_path / "m"), "--n", "3", "--out", str(tmp_path / "s"),
                     "--steps", "2"]) == 0
    assert len(list((tmp_path / "s").glob("sample_*.png"))) == 3
    # errors: wrong kind of folder, profile/model size mismatch, empty input: exit 2 with the file named
    save_model_folder(tmp_path / "seg", "segmenter", {"a": 1}, {"w": torch.zeros(1)})
    capsys.readouterr()
    assert cli.main(["diffae", "sample", "--model", str(tmp_path / "seg"), "--out", str(tmp_path / "x")]) == 2
    assert "config.json" in capsys.readouterr().err
    assert cli.main(["diffae", "reconstruct", "--model", str(tmp_path / "m"), "--input", str(data), "--out",
                     str(tmp_path / "x"), "--profile", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "16 px" in err and "image_size=64" in err
    (tmp_path / "empty").mkdir()
    assert cli.main(["diffae", "reconstruct", "--model", str(tmp_path / "m"), "--input", str(tmp_path / "empty"),
                     "--out", str(tmp_path / "x")]) == 2
    assert "no images found" in capsys.readouterr().err


def test_pickle_checkpoint_of_older_versions_is_refused_unopened(tmp_path, data):
    """An older version's checkpoint/state.pt (a pickle) is never opened: resuming names it and --no-resume;
    starting over (resume=False) removes it and trains."""
    log = lambda *_: None  # noqa: E731
    cfg2 = cfg_with(**{"diffae.train_steps": 2})
    out = tmp_path / "m"
    (out / "checkpoint").mkdir(parents=True)
    torch.save({"step": 1}, out / "checkpoint" / "state.pt")
    with pytest.raises(StylsegError, match=r"state\.pt: a resume file in the pickle format.*--no-resume"):
        train_diffae(data, out, cfg2, progress=False, log=log)
    train_diffae(data, out, cfg2, resume=False, progress=False, log=log)
    assert not (out / "checkpoint" / "state.pt").exists()
    assert json.loads((out / "config.json").read_text())["training"]["step"] == 2


def test_v_recipe_trains_and_reloads(tmp_path, data):
    cfg = cfg_with(**{"diffae.train_steps": 6, "diffae.prediction": "v", "diffae.loss_weighting": "v",
                      "diffae.enc_pool": "flatten", "diffae.enc_lr_mult": 2.0})
    out = train_diffae(data, tmp_path / "v", cfg, progress=False, log=lambda *_: None)
    m = DiffAE.from_pretrained(out)
    assert m.config["prediction"] == "v" and m.config["enc_pool"] == "flatten"
    hist = json.loads((out / "history.json").read_text())
    assert hist["steps_done"] == 6 and all(np.isfinite(hist["loss"]))
    st = load_state(out / "checkpoint" / "state.safetensors")
    lrs = [g["lr"] for g in st["optimizer"]["param_groups"]]
    assert lrs[1] == pytest.approx(2 * lrs[0])  # the encoder's group runs at lr * enc_lr_mult
