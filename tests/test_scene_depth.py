"""Applying with the scene deeper than the lesion (``ddim.scene_depth``): the grid, the blend, the arm."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from stylseg.data.io import read_image
from stylseg.diffusion.ddim import ddim_sample, ddim_timesteps
from stylseg.stylize._testing import tiny_config, tiny_diffae, tiny_domains
from stylseg.stylize.apply import apply_stylizer
from stylseg.stylize.finetune import finetune
from stylseg.stylize.pipeline import Stylizer, scene_grid
from stylseg.utils import StylsegError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("scene")
    cfg = tiny_config(**{"stylize.iterations": 1})
    da = tiny_diffae(d / "diffae", cfg)
    dom = tiny_domains(d / "data", n=4)
    model = finetune(da, dom["style"], dom["source"], d / "ft", cfg, device="cpu", progress=False)
    return {"d": d, "cfg": cfg, "diffae": da, "model": model, **dom}


def test_scene_grid_continues_the_usual_grid_with_its_spacing():
    assert scene_grid(0.25, 1.0, 5) == ddim_timesteps(0.25, 5)
    assert scene_grid(0.25, 1.4, 5) == [0, 50, 100, 150, 200, 250, 300, 350]
    g = scene_grid(0.25, 1.4, 20)
    assert g[:21] == ddim_timesteps(0.25, 20) and len(g) == 29 and g[-1] == 350
    with pytest.raises(StylsegError, match=r"scene_depth=5 with ddim.t0=0.25.*1/ddim.t0 \(4\)"):
        scene_grid(0.25, 5.0, 5)


def test_inversion_passes_t0_where_the_usual_inversion_ends(env):
    st = Stylizer.load(env["model"])
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    t0, steps = env["cfg"].ddim.t0, 2
    usual, _ = st.encode_stochastic(x, t0, steps)
    inv = st.invert(x, t0, steps, depth=2.0)
    assert torch.equal(inv.x_t0, usual)
    assert not torch.allclose(inv.x_top, usual)  # it went on, to 0.2 of T
    assert st.invert(x, t0, steps).x_t0 is None


def test_the_blend_gives_the_lesion_the_usual_render_and_the_scene_the_deep_one(env):
    """Where the gate is 1, the render is the usual one from t0 (bit for bit); where it is 0, the plain walk down
    the whole deep grid; the SPN term acts in both."""
    st = Stylizer.load(env["model"])
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    t0, steps = env["cfg"].ddim.t0, 2
    inv = st.invert(x, t0, steps, depth=2.0)
    ones, zeros = torch.ones(2, 1, 16, 16), torch.zeros(2, 1, 16, 16)
    usual = st.render(inv.x_t0, inv.z, x, t0, steps)
    assert torch.equal(st.render_inverted(inv, x, steps, lesion_gate=ones), usual)
    deep = st.render_inverted(inv, x, steps, lesion_gate=zeros)
    from stylseg.stylize.spn import spn_shift_fn

    ref = ddim_sample(st.unet_b, inv.x_top, scene_grid(t0, 2.0, steps), cond=inv.z, schedule=st.schedule,
                      shift=spn_shift_fn(st.spn, x, st.lam))
    assert torch.equal(deep, ref) and not torch.allclose(deep, usual)
    half = torch.zeros(2, 1, 16, 16)
    half[..., :8] = 1.0
    mixed = st.render_inverted(inv, x, steps, lesion_gate=half)
    assert not torch.equal(mixed, usual) and not torch.equal(mixed, deep)
    with pytest.raises(StylsegError, match="needs each image's lesion mask"):
        st.render_inverted(inv, x, steps)


def test_arm_with_a_deeper_scene(env, tmp_path):
    """Through ``apply_stylizer``: the arm records the depth and its UNet calls, differs from the usual arm, and an
    image without a lesion (its gate is 1 everywhere, as for the structure term) comes out as the usual arm has it;
    a depth past T stops before anything is written."""
    src = tmp_path / "src"
    shutil.copytree(env["source"], src)
    empty = sorted((src / "masks").glob("*.png"))[0]
    Image.fromarray(np.zeros_like(np.asarray(Image.open(empty)))).save(empty)
    cfg = env["cfg"]
    usual = apply_stylizer(env["model"], src, tmp_path / "usual", cfg, device="cpu", progress=False)
    deep = apply_stylizer(env["model"], src, tmp_path / "deep", cfg.override(**{"ddim.scene_depth": 2.0}),
                          device="cpu", progress=False)
    m = json.loads((deep / "manifest.json").read_text())
    assert m["params"]["scene_depth"] == 2.0 and m["params"]["unet_calls_per_image"] == 4 + 4
    assert "scene_depth" not in json.loads((usual / "manifest.json").read_text())["params"]
    names = [it["image"] for it in m["items"]]
    same = [np.array_equal(read_image(usual / n), read_image(deep / n)) for n in names]
    assert same[0] and not any(same[1:]), same
    with pytest.raises(StylsegError, match="scene_depth=20"):
        apply_stylizer(env["model"], src, tmp_path / "too_deep", cfg.override(**{"ddim.scene_depth": 20.0}),
                       device="cpu", progress=False)
    assert not (tmp_path / "too_deep").exists()
