import json
import os

import numpy as np
import pytest
import torch

from stylseg.manifest import ArmWriter, read_manifest
from stylseg.utils import (Registry, StylsegError, atomic_path, check_choice, load_model_folder, resolve_device,
                           save_model_folder, seed_everything, write_json)


def test_registry_unknown_lists_valid():
    r = Registry("segmenter")
    r.add("unet", 1)
    r.add("pranet", 2)
    assert r.get("unet") == 1 and r.names() == ["pranet", "unet"]
    with pytest.raises(StylsegError, match="unknown segmenter 'unet3'; valid names: pranet, unet"):
        r.get("unet3")
    with pytest.raises(ValueError):
        r.add("unet", 3)


def test_check_choice_names_value_choices_and_field():
    check_choice("st", ("st", "recon"), "mode")  # a valid value passes
    with pytest.raises(StylsegError, match=r"^unknown SPN region 'ring'; valid: image, lesion "
                                           r"\(set stylize.structure_region\)$"):
        check_choice("ring", ("image", "lesion"), "SPN region", "stylize.structure_region")
    with pytest.raises(StylsegError, match=r"^unknown mode 'x'; valid: st, recon$"):
        check_choice("x", ("st", "recon"), "mode")


def test_seeding_repeats():
    seed_everything(5)
    a = (torch.rand(3), np.random.rand(3))
    seed_everything(5)
    b = (torch.rand(3), np.random.rand(3))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(StylsegError, match="valid: auto, cpu"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(StylsegError, match="CUDA is not available"):
            resolve_device("cuda")


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"x": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"x": 1}
    assert sorted(os.listdir(tmp_path)) == ["a.json"]


def test_model_folder_round_trip_and_errors(tmp_path):
    sd = {"w": torch.randn(3, 4), "b": torch.zeros(2)}
    save_model_folder(tmp_path / "m", "segmenter", {"arch": "unet"}, sd)
    meta, back = load_model_folder(tmp_path / "m", "segmenter")
    assert meta["config"] == {"arch": "unet"} and torch.equal(back["w"], sd["w"])
    with pytest.raises(StylsegError, match="holds a 'segmenter' model, but a 'diffae' model was expected"):
        load_model_folder(tmp_path / "m", "diffae")
    with pytest.raises(StylsegError, match="model folder not found"):
        load_model_folder(tmp_path / "nope", "diffae")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(StylsegError, match="corrupt"):
        load_model_folder(tmp_path / "m", "segmenter")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(StylsegError, match="missing model.safetensors"):
        load_model_folder(tmp_path / "m", "segmenter")


def test_arm_writer_resumes_and_refuses_other_settings(tmp_path):
    img = np.zeros((8, 8, 3), np.uint8)
    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:5] = True
    w = ArmWriter(tmp_path / "arm", "histogram", "histogram", {"a": 1}, source="src", size=8)
    w.add("0", img, mask)
    w.flush()
    w.add("1", img, mask)  # written, but manifest not flushed: an interrupted run
    w2 = ArmWriter(tmp_path / "arm", "histogram", "histogram", {"a": 1}, source="src", size=8)
    assert w2.done("0") and not w2.done("1")
    w2.add("1", img, mask)
    w2.flush()
    assert [it["name"] for it in read_manifest(tmp_path / "arm")["items"]] == ["0", "1"]
    with pytest.raises(StylsegError, match="other settings"):
        ArmWriter(tmp_path / "arm", "histogram", "histogram", {"a": 2}, source="src", size=8)


def test_arm_writer_accepts_a_moved_run_but_not_another_style(tmp_path):
    from stylseg.data.io import write_image

    img = np.zeros((8, 8, 3), np.uint8)
    mask = np.zeros((8, 8), bool)
    style = write_image(tmp_path / "a" / "style.png", np.full((8, 8, 3), 9, np.uint8))
    w = ArmWriter(tmp_path / "arm", "hist", "histogram", {}, source=tmp_path / "a", style=style, size=8)
    w.add("0", img, mask)
    w.flush()
    moved = tmp_path / "b" / "style.png"
    moved.parent.mkdir()
    moved.write_bytes(style.read_bytes())
    w2 = ArmWriter(tmp_path / "arm", "hist", "histogram", {}, source="../b", style=moved, size=8)
    assert w2.done("0") and w2.manifest["style"] == str(moved)
    other = write_image(tmp_path / "c" / "style.png", np.full((8, 8, 3), 200, np.uint8))
    with pytest.raises(StylsegError, match="other settings"):
        ArmWriter(tmp_path / "arm", "hist", "histogram", {}, source="x", style=other, size=8)


def test_lazy_packages_do_not_import_torch_until_used():
    """``stylseg data check`` and ``--help`` stay quick: the data and stylize packages list their public
    names without importing torch, and the first use of a torch-backed name imports it."""
    import subprocess
    import sys

    code = ("import sys, stylseg.data as d, stylseg.stylize as s\n"
            "assert 'SPN' in dir(s) and 'PairedDataset' in dir(d)\n"
            "d.check_folder\n"
            "assert 'torch' not in sys.modules, 'torch imported early'\n"
            "s.SPN\n"
            "assert 'torch' in sys.modules and 'SPN' in vars(s)\n"
            "try:\n    d.nope\nexcept AttributeError as e:\n    assert 'stylseg.data' in str(e)\n"
            "else:\n    raise SystemExit('no AttributeError')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("text", ["[1, 2]", '{"kind": "segmenter", "config": [1]}'])
def test_a_model_config_of_the_wrong_shape_is_named(tmp_path, text):
    from stylseg.utils import MODEL_CONFIG, MODEL_WEIGHTS, StylsegError, load_model_folder

    (tmp_path / MODEL_CONFIG).write_text(text)
    (tmp_path / MODEL_WEIGHTS).write_bytes(b"")
    with pytest.raises(StylsegError, match=r"config.json: not a stylseg model config .*re-copy"):
        load_model_folder(tmp_path, "segmenter")
