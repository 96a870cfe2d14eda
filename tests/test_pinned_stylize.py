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
from stylseg.data.tensors import load_folder_tensor
from stylseg.stylize.spn import structure_guided_generate
from stylseg.stylize.stylizer import Stylizer, load_diffae

pytestmark = pytest.mark.usefixtures("one_thread")

FIX = Path(__file__).resolve().parent / "fixtures" / "pinned_stylize"
PINNED = json.loads((FIX / "pinned.json").read_text())
EXPECTED = dict(np.load(FIX / "expected.npz"))

#: the fixture's settings that the kit no longer has, at the value that behaves as the kit does now (OSASIS's fixed
#: weights, the lesion ring, per-step updates, no weight average, no style code mix, the SPN gated where the
#: structure term looks)
_FIXED = {"w_adv": 1.0, "w_magnitude": 1.0, "w_in_domain": 0.5, "w_recon_embed": 30.0, "w_recon_l1": 10.0,
          "w_recon_perceptual": 10.0, "lesion_ring": 0.125, "backprop": "per_step", "ema_decay": 0.0,
          "mix_style_z": False, "clip_preprocess": "tensor"}


def _current(d):
    """The fixture's config (written by an earlier kit) as today's config, or None where it used a setting the
    kit no longer has (those variants are not pinned any more)."""
    st = dict(d["stylize"])
    if any(st.pop(k, v) != v for k, v in _FIXED.items()) or st.pop("spn_region", "image") != st["structure_region"]:
        return None
    if st["spn_role"] not in ("joint", "guard"):
        return None
    w_spn = st.pop("w_spn", 1.0)  # the paper set's L_SPN weight is w_structure now
    if st["loss_set"] == "paper":
        st["w_structure"] = w_spn
    st.setdefault("preset", "osasis")
    return RunConfig.from_dict(dict(d, stylize=st))


VARIANTS = sorted(k for k, v in PINNED["variants"].items() if _current(v) is not None)


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


def test_the_fixture_still_pins_a_fine_tuning():
    assert VARIANTS  # the paper loss set with L_cycle and the time-conditioned SPN, at least


@pytest.mark.parametrize("variant", VARIANTS)
def test_fine_tuned_stylizer_gives_the_pinned_images(variant, content, tmp_path):
    cfg = _current(PINNED["variants"][variant])
    x, files = content
    model = finetune(FIX / "diffae", FIX / "style.png", FIX / "source", tmp_path / variant, cfg, device="cpu",
                     progress=False)
    for png in (STYLE_XA, STYLE_Y):
        _close(f"{variant}/{png[:-4]}", read_image(model / png)[None])
    st = Stylizer.load(model)
    y = st.stylize(x, cfg.ddim.t0, cfg.ddim.apply_invert_steps, cfg.ddim.apply_gen_steps,
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
