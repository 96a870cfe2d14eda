"""Fine-tuning over several processes (``accelerate launch`` / ``torchrun``) and the SPN's role.

Data parallelism must compute what one process with the whole batch computes; the
``stylize.spn_role=guard`` must route the structure term to the SPN alone and every term
terms to D_B alone.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _testing import TINY_DIFFAE, tiny_config, tiny_diffae, tiny_domains
from stylseg.stylize.finetune import finetune
from stylseg.stylize.stylizer import Stylizer
from stylseg.utils import StylsegError, load_model_folder

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("ftpar")
    cfg = tiny_config()
    return {"d": d, "cfg": cfg, "diffae": tiny_diffae(d / "diffae", cfg), **tiny_domains(d / "data")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weights(folder):
    return load_model_folder(folder, "stylizer")[1]


def test_two_processes_compute_what_one_process_computes(env):
    """torchrun with 2 CPU processes, each on half of every batch of 4, gives the weights and the loss history of
    one process on the whole batch (up to float rounding of the gradient average)."""
    d = env["d"]
    sets = {**TINY_DIFFAE, "stylize.batch_size": 4, "stylize.iterations": 3, "stylize.w_structure": 0.5}
    argv = ["stylize", "finetune", "--diffae", str(env["diffae"]), "--style", str(env["style"]),
            "--content", str(env["source"]), "--profile", "smoke", "--device", "cpu"]
    for k, v in sets.items():
        argv += ["--set", f"{k}={v}"]
    run_env = {**os.environ, "OMP_NUM_THREADS": "1", "STYLSEG_THREADS": "1", "PYTHONPATH": str(ROOT)}
    one = subprocess.run([sys.executable, "-m", "stylseg.cli", *argv, "--out", str(d / "one")],
                         env=run_env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                          "-m", "stylseg.cli", *argv, "--out", str(d / "two")],
                         env=run_env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    meta = json.loads((d / "two" / "config.json").read_text())
    assert meta["processes"] == 2 and "processes" not in json.loads((d / "one" / "config.json").read_text())
    w1, w2 = _weights(d / "one"), _weights(d / "two")
    assert w1.keys() == w2.keys()
    da = load_model_folder(env["diffae"], "diffae")[1]
    moved = max(float((w1[k] - da[k.replace("unet_b.", "unet.")]).abs().max()) for k in w1 if k.startswith("unet_b."))
    assert moved > 1e-4  # training did something measurable ...
    for k in w1:  # ... and both runs did the same thing
        if k.endswith("to_k.bias"):
            # an attention key bias shifts every logit of a query alike, so softmax ignores it and its true gradient
            # is 0: what it gets is rounding noise, which Adam scales up to lr-sized steps in either run
            continue
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=2e-5, msg=k)
    h1 = json.loads((d / "one" / "history.json").read_text())["iterations"]
    h2 = json.loads((d / "two" / "history.json").read_text())["iterations"]
    assert len(h1) == len(h2) == 3
    for r1, r2 in zip(h1, h2):
        for k in ("total", "cross", "spn", "recon_l1"):
            assert r2[k] == pytest.approx(r1[k], rel=1e-3, abs=1e-6), k
    # the stylizer written by two processes loads and applies like any other
    assert Stylizer.load(d / "two").spn is not None


def test_a_batch_that_does_not_split_over_the_processes_is_refused(env, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setattr("stylseg.launch.Parallel.__init__",
                        lambda self, device: setattr(self, "world", 3) or setattr(self, "rank", 0)
                        or setattr(self, "acc", None) or setattr(self, "device", device))
    with pytest.raises(StylsegError, match="batch_size=2 does not split over 3 processes"):
        finetune(env["diffae"], env["style"], env["source"], env["d"] / "nosplit", env["cfg"], device="cpu",
                 progress=False)


def _one_update(env, name, **kv):
    cfg = tiny_config(**{"stylize.iterations": 1, "ddim.finetune_gen_steps": 1, **kv})
    out = finetune(env["diffae"], env["style"], env["source"], env["d"] / name, cfg, device="cpu", progress=False)
    w = _weights(out)
    return ({k: v for k, v in w.items() if k.startswith("unet_b.")}, {k: v for k, v in w.items() if k.startswith("spn.")})


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_spn_role_guard_routes_the_structure_term_to_the_spn_alone(env):
    # joint (the osasis preset): the structure weight changes D_B's update
    ub1, jp1 = _one_update(env, "joint1", **{"stylize.w_structure": 1.0})
    ub5, _ = _one_update(env, "joint5", **{"stylize.w_structure": 5.0})
    assert not _same(ub1, ub5)
    # guard (the gates preset): D_B learns from every term (another structure weight, another D_B) ...
    gb1, gp1 = _one_update(env, "guard1", **{"stylize.w_structure": 1.0, "stylize.spn_role": "guard"})
    gb5, _ = _one_update(env, "guard5", **{"stylize.w_structure": 5.0, "stylize.spn_role": "guard"})
    assert not _same(gb1, gb5)
    # ... and the SPN from the structure term alone: not the joint SPN, which also learns the style terms
    assert not _close(gp1, jp1)
    assert float(gp1["spn.conv_out.weight"].abs().sum()) > 0  # the SPN did learn (from the structure term)
    # another D_B step (its learning rate) leaves the guard SPN's first update as it was
    _, gpl = _one_update(env, "guardlr", **{"stylize.w_structure": 1.0, "stylize.spn_role": "guard",
                                            "stylize.lr_unet": 5e-3})
    assert _same(gp1, gpl)
    # the history still holds every term and the total
    hist = json.loads((env["d"] / "guard1" / "history.json").read_text())["iterations"][0]
    assert {"spn", "cross", "recon_l1", "total"} <= set(hist) and hist["spn"] > 0


def test_spn_role_guard_without_a_structure_term_is_refused(env):
    cfg = tiny_config(**{"stylize.spn_role": "guard"})  # w_structure is 0 in the osasis preset
    with pytest.raises(StylsegError, match="w_structure > 0"):
        finetune(env["diffae"], env["style"], env["source"], env["d"] / "norole", cfg, device="cpu", progress=False)
    assert not (env["d"] / "norole").exists()  # refused before anything is written


def _close(a, b):
    return all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def _variant(env, name, masks="full"):
    """A copy of the source folder whose masks cover the whole image (``masks="full"``) or that has none."""
    import shutil

    import numpy as np

    from stylseg.data.io import read_mask, write_mask

    out = env["d"] / name
    if masks == "none":
        shutil.copytree(env["source"] / "images", out / "images")
        return out
    shutil.copytree(env["source"], out)
    for m in (out / "masks").iterdir():
        write_mask(m, np.ones_like(read_mask(m)))
    return out


def test_lesion_focused_structure_term_reads_the_masks(env):
    """stylize.structure_region=lesion weights the structure term by each content image's dilated mask: masks that
    cover the whole image give the image-wide term's update, the real masks another one; without masks the run is
    refused before anything is written, naming the folder and the fix."""
    kv = {"stylize.w_structure": 1.0, "stylize.spn_role": "guard"}
    _, sp_image = _one_update(env, "region_image", **kv)
    _, sp_lesion = _one_update(env, "region_lesion", **kv, **{"stylize.structure_region": "lesion"})
    assert not _close(sp_image, sp_lesion)
    full = _variant(env, "full_masks")
    cfg = tiny_config(**{"stylize.iterations": 1, "ddim.finetune_gen_steps": 1, **kv,
                         "stylize.structure_region": "lesion"})
    out = finetune(env["diffae"], env["style"], full, env["d"] / "region_full", cfg, device="cpu", progress=False)
    sp_full = {k: v for k, v in _weights(out).items() if k.startswith("spn.")}
    assert _close(sp_full, sp_image)
    bare = _variant(env, "no_masks", masks="none")
    with pytest.raises(StylsegError, match="no masks/ subfolder.*structure_region=image"):
        finetune(env["diffae"], env["style"], bare, env["d"] / "region_bare", cfg, device="cpu", progress=False)
    assert not (env["d"] / "region_bare").exists()


def test_lesion_gated_spn_in_training_and_applying(env):
    """stylize.structure_region=lesion also gates the SPN term with the dilated masks when fine-tuning and when applying: masks
    that cover the whole image give the ungated SPN's update and output, the real masks another update; the setting
    is kept in the stylizer folder, recorded in the arm's manifest, and a content folder without masks is refused."""
    import shutil

    import numpy as np

    from stylseg.data.io import read_image
    from stylseg.stylize.apply import apply_stylizer

    kv = {"stylize.w_structure": 1.0, "stylize.spn_role": "guard"}
    _, sp_image = _one_update(env, "gate_image", **kv)
    _, sp_lesion = _one_update(env, "gate_lesion", **kv, **{"stylize.structure_region": "lesion"})
    assert not _close(sp_image, sp_lesion)
    full = _variant(env, "gate_full_masks")
    cfg = tiny_config(**{"stylize.iterations": 1, "ddim.finetune_gen_steps": 1, **kv, "stylize.structure_region": "lesion"})
    out = finetune(env["diffae"], env["style"], full, env["d"] / "gate_full", cfg, device="cpu", progress=False)
    assert _close({k: v for k, v in _weights(out).items() if k.startswith("spn.")}, sp_image)
    assert Stylizer.load(env["d"] / "gate_lesion").region == "lesion"
    assert Stylizer.load(env["d"] / "gate_image").region == "image"

    # applying: a stylizer with a strong SPN, once gated and once (its config edited) not
    strong = tiny_config(**{"stylize.iterations": 2, "stylize.lr_spn": 0.05, "stylize.spn_lambda": 1.0, **kv,
                            "stylize.structure_region": "lesion"})
    gated = finetune(env["diffae"], env["style"], env["source"], env["d"] / "gate_strong", strong, device="cpu",
                     progress=False)
    plain = env["d"] / "gate_strong_image"
    shutil.copytree(gated, plain)
    meta = json.loads((plain / "config.json").read_text())
    meta["config"]["stylize"]["structure_region"] = "image"
    (plain / "config.json").write_text(json.dumps(meta))
    arm = lambda model, src, name: apply_stylizer(model, src, env["d"] / name, strong, device="cpu", progress=False)
    a_gated, a_full, a_plain = arm(gated, env["source"], "a_gated"), arm(gated, full, "a_full"), arm(plain, env["source"], "a_plain")
    imgs = lambda d: np.stack([read_image(p) for p in sorted((d / "images").iterdir())]).astype(int)
    assert np.abs(imgs(a_full) - imgs(a_plain)).max() <= 1  # a gate of ones is the ungated SPN
    assert np.abs(imgs(a_gated) - imgs(a_plain)).max() > 2  # the real masks gate it
    man = json.loads((a_gated / "manifest.json").read_text())["params"]
    assert man["structure_region"] == "lesion"
    assert json.loads((a_plain / "manifest.json").read_text())["params"]["structure_region"] == "image"

    bare = _variant(env, "gate_no_masks", masks="none")
    with pytest.raises(StylsegError, match="no masks/ subfolder.*structure_region=lesion"):
        finetune(env["diffae"], env["style"], bare, env["d"] / "gate_bare", cfg, device="cpu", progress=False)
    assert not (env["d"] / "gate_bare").exists()

    # Stylizer.masks_for, what notebooks 03 and 04 hand to stylize(): the gated stylizer with the masks of a folder
    # whose masks cover everything is the ungated one; with the real masks it is not; an SPN on the whole image
    # needs none, and a folder without masks is refused naming it
    from stylseg.data.tensors import load_folder_tensor

    st_g, st_p = Stylizer.load(gated), Stylizer.load(plain)
    x, files = load_folder_tensor(env["source"], st_g.size)
    full_files = [full / "images" / f.name for f in files]
    run = lambda st, m: st.stylize(x, strong.ddim.t0, 2, 2, masks=m)
    assert st_p.masks_for(env["source"], files) is None
    m = st_g.masks_for(env["source"], files)
    assert m.shape == (len(files), 1, st_g.size, st_g.size) and 0 < m.mean() < 1
    assert torch.allclose(run(st_g, st_g.masks_for(full, full_files)), run(st_p, None), atol=1e-5)
    assert (run(st_g, m) - run(st_p, None)).abs().max() > 1e-2
    with pytest.raises(StylsegError, match="structure_region=lesion"):
        run(st_g, None)
    with pytest.raises(StylsegError, match="gate_no_masks.*masks"):
        st_g.masks_for(bare, [bare / "images" / f.name for f in files])
