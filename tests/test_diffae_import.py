"""`stylseg diffae import`: Lightning checkpoints of the published DiffAE, built here from the tiny reference
weights, become kit model folders; bad files get clear errors; ``diffae.init`` and the paper profile."""

import json
import sys

import pytest
import torch

from _diffae_reference import lightning_checkpoint, require_reference, tiny_hparams, tiny_weights
from stylseg.cli import main
from stylseg.diffusion.model import DiffAE
from stylseg.diffusion.pretrained import (check_init, import_checkpoint, is_imported, load_checkpoint,
                                          provide_diffae, resolve_init)
from stylseg.utils import StylsegError, sha256_file

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    from safetensors.torch import load_file

    d = require_reference()
    tmp = tmp_path_factory.mktemp("ckpt")
    w = tiny_weights(d)
    return {"dir": d, "weights": w, "hparams": tiny_hparams(d), "io": load_file(str(d / "tiny_autoenc_io.safetensors")),
            "ckpt": lightning_checkpoint(tmp / "last.ckpt", w, tiny_hparams(d)),
            "latent": lightning_checkpoint(tmp / "latent.ckpt", w, tiny_hparams(d), latent=True)}


def test_import_cli_writes_the_ema_weights_and_the_checksum(ref, tmp_path, capsys):
    assert "pytorch_lightning" not in sys.modules
    assert main(["diffae", "import", str(ref["ckpt"]), "--out", str(tmp_path / "m")]) == 0
    assert "pytorch_lightning" not in sys.modules  # nothing was imported to read the file
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    imp = meta["imported"]
    assert imp["sha256"] == sha256_file(ref["ckpt"]) and imp["weights"] == "ema"
    assert imp["config_from"] == "hyper_parameters" and imp["global_step"] == 1234
    assert is_imported(tmp_path / "m")
    m = DiffAE.from_pretrained(tmp_path / "m")
    io = ref["io"]
    with torch.no_grad():
        assert torch.allclose(m.encode(io["x_start"]), io["cond"], atol=1e-5, rtol=0)
        assert torch.allclose(m(io["x_t"], io["t"], io["cond"]), io["pred"], atol=1e-5, rtol=0)
    assert "1,420,259 parameters" in capsys.readouterr().out


def test_raw_weights_on_request(ref, tmp_path):
    import_checkpoint(ref["ckpt"], tmp_path / "raw", weights="model", log=lambda *_: None)
    m = DiffAE.from_pretrained(tmp_path / "raw")
    w = ref["weights"]["input_blocks.0.0.weight"]
    assert torch.equal(m.unet.input_blocks[0][0].weight, w * 0.5)
    assert json.loads((tmp_path / "raw" / "config.json").read_text())["imported"]["weights"] == "model"


def test_the_stand_in_is_inert(ref):
    ck = load_checkpoint(ref["ckpt"])
    (key,) = ck["callbacks"]
    assert key.stands_in_for == "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"
    with pytest.raises(TypeError):
        key()


def test_a_checkpoint_with_another_global_is_refused(tmp_path):
    import argparse

    torch.save({"state_dict": {}, "hyper_parameters": argparse.Namespace(a=1)}, tmp_path / "evil.ckpt")
    with pytest.raises(StylsegError, match=r"evil\.ckpt.*argparse\.Namespace.*nothing from the file was run"):
        load_checkpoint(tmp_path / "evil.ckpt")


def test_truncated_and_non_checkpoint_files(ref, tmp_path):
    data = ref["ckpt"].read_bytes()
    (tmp_path / "half.ckpt").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.ckpt").write_text("not a checkpoint\n")
    for name in ("half.ckpt", "notes.ckpt"):
        with pytest.raises(StylsegError, match=rf"{name}: .*(truncated|not a PyTorch checkpoint)"):
            import_checkpoint(tmp_path / name, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    rc = main(["diffae", "import", str(tmp_path / "half.ckpt"), "--out", str(tmp_path / "out")])
    assert rc == 2 and not (tmp_path / "out").exists()
    with pytest.raises(StylsegError, match="not found"):
        import_checkpoint(tmp_path / "absent.ckpt", tmp_path / "out")


def test_a_checkpoint_of_another_family_names_the_keys(ref, tmp_path):
    from _testing import tiny_config

    cfg = tiny_config()
    kit = DiffAE.from_config(cfg.diffae, cfg.ddim).state_dict()
    torch.save({"state_dict": {f"ema_model.{k}": v for k, v in kit.items()}, "hyper_parameters": ref["hparams"]},
               tmp_path / "kit.ckpt")
    with pytest.raises(StylsegError, match=r"kit\.ckpt \(ema_model\.\*\): does not fit.*missing \(.*\).*unexpected "
                                           r"\(.*encoder\.blocks"):
        import_checkpoint(tmp_path / "kit.ckpt", tmp_path / "out")
    # a DiffAE without hyper_parameters and no template that fits: the templates are named
    torch.save({"state_dict": {f"ema_model.{k}": v for k, v in ref["weights"].items()}}, tmp_path / "nohp.ckpt")
    with pytest.raises(StylsegError, match="--template NAME.*ffhq256_autoenc"):
        import_checkpoint(tmp_path / "nohp.ckpt", tmp_path / "out")
    # only raw weights in the file: --weights model is named
    torch.save({"state_dict": {f"model.{k}": v for k, v in ref["weights"].items()},
                "hyper_parameters": ref["hparams"]}, tmp_path / "raw.ckpt")
    with pytest.raises(StylsegError, match="no ema_model.* weights; pass --weights model"):
        import_checkpoint(tmp_path / "raw.ckpt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_latent_checkpoint_imports_the_autoencoder_and_its_code_statistics(ref, tmp_path):
    said = []
    import_checkpoint(ref["latent"], tmp_path / "lat", log=said.append)
    assert any("skipped the latent DDIM (latent_net.*, 2 tensors)" in s for s in said)
    m = DiffAE.from_pretrained(tmp_path / "lat")
    ck = load_checkpoint(ref["latent"])
    assert torch.allclose(m.z_mean, ck["state_dict"]["conds_mean"].reshape(-1))
    assert torch.allclose(torch.diag(m.z_chol), ck["state_dict"]["conds_std"].reshape(-1))
    with torch.no_grad():
        assert torch.allclose(m.encode(ref["io"]["x_start"]), ref["io"]["cond"], atol=1e-5, rtol=0)
        x = m.sample(2, steps=2, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 32, 32) and torch.isfinite(x).all()


def test_paper_profile_stops_before_any_work_when_the_published_diffae_is_absent(tmp_path, monkeypatch):
    from stylseg.config import get_profile

    monkeypatch.setenv("STYLSEG_WEIGHTS_DIR", str(tmp_path / "weights"))
    cfg = get_profile("paper")
    assert cfg.diffae.init == "diffae-ffhq256-autoenc" and get_profile("smoke").diffae.init == "train"
    with pytest.raises(StylsegError) as e:
        check_init(cfg)
    msg = str(e.value)
    want = str(tmp_path / "weights" / "diffae-ffhq256-autoenc" / "last.ckpt")
    assert want in msg and "github.com/phizaz/diffae" in msg and "--set diffae.init=train" in msg
    assert "about 15 GPU-hours" in msg
    check_init(cfg.override(**{"diffae.init": "train"}))
    # `stylseg reproduce --profile paper` stops at once: no notebook runs, no run folder is made
    run = tmp_path / "run"
    assert main(["reproduce", "--out", str(run), "--profile", "paper"]) == 2
    assert not run.exists()
    with pytest.raises(StylsegError, match="no such file, folder or registry name"):
        resolve_init(str(tmp_path / "nowhere"))


def test_registry_file_is_imported_and_its_checksum_recorded(ref, tmp_path, monkeypatch):
    from stylseg import weights as W
    from stylseg.config import get_profile

    monkeypatch.setenv("STYLSEG_WEIGHTS_DIR", str(tmp_path / "weights"))
    dest = W.path("diffae-ffhq256-autoenc")
    dest.parent.mkdir(parents=True)
    dest.write_bytes(ref["ckpt"].read_bytes())
    assert W.fetch("diffae-ffhq256-autoenc") == dest  # present: kept, nothing to download
    cfg = get_profile("smoke").override(**{"diffae.init": "diffae-ffhq256-autoenc"})
    said = []
    provide_diffae(cfg, tmp_path / "run" / "diffae", log=said.append)
    rec = dest.with_name("last.ckpt.sha256.json")  # no sha256 is published: recorded on first use
    assert json.loads(rec.read_text())["sha256"] == sha256_file(dest)
    assert is_imported(tmp_path / "run" / "diffae")
    provide_diffae(cfg, tmp_path / "run" / "diffae", log=said.append)
    assert "already holds the import" in said[-1]
    # the file changed after its checksum was recorded: refused
    raw = bytearray(dest.read_bytes())
    dest.write_bytes(bytes(raw) + b"\0")
    with pytest.raises(StylsegError, match="changed since they were fetched"):
        provide_diffae(cfg, tmp_path / "run2" / "diffae", log=said.append)
    # a kit model folder and a checkpoint path work as diffae.init too
    cfg2 = get_profile("smoke").override(**{"diffae.init": str(tmp_path / "run" / "diffae")})
    provide_diffae(cfg2, tmp_path / "run3" / "diffae", log=said.append)
    assert is_imported(tmp_path / "run3" / "diffae")
    cfg3 = get_profile("smoke").override(**{"diffae.init": str(ref["ckpt"])})
    provide_diffae(cfg3, tmp_path / "run4" / "diffae", log=said.append)
    assert is_imported(tmp_path / "run4" / "diffae")
    # importing over a model that was not imported (a trained D_A) is refused; a copied folder is kept
    from _testing import tiny_diffae

    kit = tiny_diffae(tmp_path / "kit")
    with pytest.raises(StylsegError, match="not imported"):
        import_checkpoint(ref["ckpt"], kit)
    provide_diffae(get_profile("smoke").override(**{"diffae.init": str(kit)}), tmp_path / "run5" / "diffae",
                   log=said.append)
    provide_diffae(get_profile("smoke").override(**{"diffae.init": str(kit)}), tmp_path / "run5" / "diffae",
                   log=said.append)
    with pytest.raises(StylsegError, match="already holds another model"):
        provide_diffae(cfg2, tmp_path / "run5" / "diffae", log=said.append)
    # training into a folder that holds an imported model is refused
    from stylseg.diffusion.train import train_diffae

    with pytest.raises(StylsegError, match="imported DiffAE"):
        train_diffae(tmp_path, tmp_path / "run4" / "diffae", get_profile("smoke"), device="cpu")


def test_import_cli_takes_a_registry_name(ref, tmp_path, monkeypatch, capsys):
    from stylseg import weights as W

    monkeypatch.setenv("STYLSEG_WEIGHTS_DIR", str(tmp_path / "w"))
    assert main(["diffae", "import", "diffae-ffhq256-autoenc", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "by hand from https://github.com/phizaz/diffae#checkpoints" in err and not (tmp_path / "m").exists()
    dest = W.path("diffae-ffhq256-autoenc")
    dest.parent.mkdir(parents=True)
    dest.write_bytes(ref["ckpt"].read_bytes())
    assert main(["diffae", "import", "diffae-ffhq256-autoenc", "--out", str(tmp_path / "m")]) == 0
    assert json.loads(dest.with_name("last.ckpt.sha256.json").read_text())["sha256"] == sha256_file(dest)
    assert is_imported(tmp_path / "m")


def test_manual_registry_entry_cannot_be_fetched(tmp_path, monkeypatch):
    from stylseg import weights as W

    monkeypatch.setenv("STYLSEG_WEIGHTS_DIR", str(tmp_path / "w"))
    e = W.WEIGHTS.get("diffae-ffhq256-autoenc-latent")
    assert e.manual and e.source == e.page
    with pytest.raises(StylsegError, match="by hand from https://github.com/phizaz/diffae#checkpoints"):
        W.fetch("diffae-ffhq256-autoenc-latent")
    rows = {r["name"]: r for r in W.list_weights()}
    assert rows["diffae-ffhq256-autoenc"]["present"] is False


def test_imported_model_through_finetune_and_apply(ref, tmp_path, monkeypatch):
    """The imported model as D_A: the smoke `stylize finetune` and `stylize apply` run end to end."""
    from _testing import tiny_domains

    monkeypatch.setenv("STYLSEG_THREADS", "1")
    da = tmp_path / "diffae"
    assert main(["diffae", "import", str(ref["ckpt"]), "--out", str(da)]) == 0
    dom = tiny_domains(tmp_path / "data", n=4, size=32)
    sets = []
    for k, v in {"stylize.iterations": 1, "stylize.batch_size": 2, "stylize.style_pair_tries": 2,
                 "ddim.finetune_invert_steps": 2, "ddim.finetune_gen_steps": 2, "ddim.apply_invert_steps": 2,
                 "ddim.apply_gen_steps": 2, "stylize.apply_batch_size": 2, "stylize.spn_hidden": 8}.items():
        sets += ["--set", f"{k}={v}"]
    assert main(["stylize", "finetune", "--diffae", str(da), "--style", str(dom["style"]), "--content",
                 str(dom["source"]), "--out", str(tmp_path / "ft"), "--device", "cpu", "--profile", "smoke",
                 *sets]) == 0
    assert main(["stylize", "apply", "--model", str(tmp_path / "ft"), "--input", str(dom["source"]), "--out",
                 str(tmp_path / "st"), "--device", "cpu", "--profile", "smoke", *sets]) == 0
    imgs = sorted((tmp_path / "st" / "images").glob("*.png"))
    assert len(imgs) == 4 and len(sorted((tmp_path / "st" / "masks").glob("*.png"))) == 4
    man = json.loads((tmp_path / "st" / "manifest.json").read_text())
    assert man  # the manifest of the arm is written


@pytest.mark.notebooks
@pytest.mark.slow
def test_notebook_02_takes_an_imported_d_a_and_shows_the_face_section(ref, tmp_path, monkeypatch):
    """Notebooks 00-02 with ``diffae.init`` = the tiny Lightning checkpoint: D_A is imported, not trained, and
    its appendix section A.2 (a published-family DiffAE on polyps at t0 = 0.5) runs (about 75 s on one core)."""
    monkeypatch.setenv("STYLSEG_THREADS", "1")
    run = tmp_path / "run"
    assert main(["reproduce", "--out", str(run), "--upto", "2", "--device", "cpu",
                 "--set", f"diffae.init={ref['ckpt']}"]) == 0
    assert is_imported(run / "diffae") and not (run / "diffae" / "history.json").exists()
    nb = json.loads((run / "notebooks" / "02_diffusion_autoencoder.ipynb").read_text())
    text = "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code"
                   for o in c.get("outputs", []))
    assert "imported " in text and "round_trip  PSNR" in text and "sdedit      PSNR" in text


class _System:
    """A pickle that would run a shell command when unpickled (never run: the loader refuses it)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"echo pwned >> {self.marker}",))


def test_a_raw_pickle_is_refused_without_passing_on_torchs_advice(tmp_path):
    import pickle

    marker = tmp_path / "PWNED"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"state_dict": _System(marker)}))
    with pytest.raises(StylsegError, match=r"evil\.pkl: not a PyTorch checkpoint .*nothing from the file was run") as e:
        load_checkpoint(tmp_path / "evil.pkl")
    assert "weights_only" not in str(e.value) and "Re-running" not in str(e.value)
    assert not marker.exists()


def test_a_pickle_that_calls_the_stand_in_is_a_clear_error(tmp_path, monkeypatch):
    """The allowed Lightning stand-in may be named (a dict key), never created: a clear error, not a TypeError."""
    import types

    from stylseg.diffusion.pretrained import STAND_INS

    cls = STAND_INS[0]
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", cls.__module__):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setattr(sys.modules[cls.__module__], cls.__qualname__, cls, raising=False)

    class Calls:
        def __reduce__(self):
            return (cls, ())

    torch.save({"state_dict": {}, "callbacks": {"x": Calls()}}, tmp_path / "standin.ckpt")
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", cls.__module__):
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(StylsegError, match=r"standin\.ckpt: tries to create a Lightning object .*nothing from the "
                                           r"file was run"):
        load_checkpoint(tmp_path / "standin.ckpt")
    assert main(["diffae", "import", str(tmp_path / "standin.ckpt"), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
