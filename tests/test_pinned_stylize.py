"""Pinned outputs: fine-tuning + stylizing from a fixed D_A gives the images the kit gave when the fixture was made.

``tests/fixtures/make_pinned_stylize.py`` made ``tests/fixtures/pinned_stylize/`` (a tiny random D_A, four content
images with masks, one style image and the stylized images of a few fine-tuning settings, ``expected.npz``). Here the
current code fine-tunes again from the same files with the same full configs; every stylized image must equal the
pinned one within 1/255 per pixel (float rounding of a reordered computation may move a value across a rounding
boundary, never further).
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stylseg.config import RunConfig
from stylseg.data.io import from_tensor_pm1, read_image
from stylseg.stylize.finetune import STYLE_XA, STYLE_Y, finetune
from stylseg.stylize.pipeline import (Stylizer, load_diffae, load_folder_tensor, load_image_pm1,
                                      structure_guided_generate)

pytestmark = pytest.mark.usefixtures("one_thread")

FIX = Path(__file__).resolve().parent / "fixtures" / "pinned_stylize"
PINNED = json.loads((FIX / "pinned.json").read_text())
EXPECTED = dict(np.load(FIX / "expected.npz"))


def _close(name: str, got: np.ndarray) -> None:
    want = EXPECTED[name]
    assert got.shape == want.shape, name
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1, f"{name}: {int((diff > 1).sum())} values differ by more than 1/255 (max {diff.max()})"


@pytest.fixture(scope="module")
def content():
    x, files = load_folder_tensor(FIX / "source", 16)
    assert [p.name for p in files] == PINNED["content"]
    return x, files


@pytest.mark.parametrize("variant", sorted(PINNED["variants"]))
def test_fine_tuned_stylizer_gives_the_pinned_images(variant, content, tmp_path):
    cfg = RunConfig.from_dict(PINNED["variants"][variant])
    x, files = content
    model = finetune(FIX / "diffae", FIX / "style.png", FIX / "source", tmp_path / variant, cfg, device="cpu",
                     progress=False)
    for png in (STYLE_XA, STYLE_Y):
        _close(f"{variant}/{png[:-4]}", read_image(model / png)[None])
    st = Stylizer.load(model)
    z_style = (st.diffae.encoder(load_image_pm1(model / STYLE_Y, st.size)[None]) if cfg.stylize.mix_style_z
               else None)
    y = st.stylize(x, cfg.ddim.t0, cfg.ddim.apply_invert_steps, cfg.ddim.apply_gen_steps, z_style=z_style,
                   masks=st.masks_for(FIX / "source", files))
    _close(f"{variant}/st", from_tensor_pm1(y))


def test_round_trip_and_structure_guidance_give_the_pinned_images(content):
    x, _ = content
    m = load_diffae(FIX / "diffae")
    st = Stylizer(m, None, None, 0.0)
    r = PINNED["recon"]
    _close("recon", from_tensor_pm1(st.reconstruct(x, r["t0"], r["invert_steps"], r["gen_steps"])))
    g = PINNED["guided"]
    with torch.no_grad():
        z = m.encode(x)
        xt = m.encode_stochastic(x, z, g["t0"], g["steps"])
    out = structure_guided_generate(m.unet, xt, z, g["t0"], g["steps"], m.schedule, x_ref=torch.flip(x, dims=[3]),
                                    weight=g["weight"])
    _close("guided", from_tensor_pm1(out))
