"""Synthetic domains: exact masks, same scene in every domain, a real appearance shift,
visible lesions, resumable generation, helpful errors."""

import json
import time

import numpy as np
import pytest
from PIL import Image

from stylseg.cli import main
from stylseg.data import SYNTH_DOMAINS, generate_domain, make_sample
from stylseg.data.synth import DEFAULT_DOMAINS, default_domains, domain_names
from stylseg.utils import StylsegError

KINDS = ("polyp", "skin")


@pytest.mark.parametrize("kind", KINDS)
def test_at_least_three_domains_and_defaults(kind):
    names = domain_names(kind)
    assert len(names) >= 3
    src, tgt = default_domains(kind)
    assert src in names and tgt in names and src != tgt
    assert DEFAULT_DOMAINS["polyp"] == ("clinic", "colon")


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_lesion_in_every_domain(kind):
    for idx in range(3):
        masks = [make_sample(kind, d, seed=3, index=idx, size=64)[1] for d in domain_names(kind)]
        assert all(np.array_equal(masks[0], m) for m in masks[1:])
        assert 0.005 < masks[0].mean() < 0.6
    a = make_sample(kind, "", seed=3, index=0, size=64)[1]
    b = make_sample(kind, "", seed=3, index=1, size=64)[1]
    c = make_sample(kind, "", seed=4, index=0, size=64)[1]
    assert not np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("kind", KINDS)
def test_sample_types_and_determinism(kind):
    img, m = make_sample(kind, default_domains(kind)[1], seed=0, index=5, size=48)
    assert img.shape == (48, 48, 3) and img.dtype == np.uint8 and m.shape == (48, 48) and m.dtype == bool
    img2, m2 = make_sample(kind, default_domains(kind)[1], seed=0, index=5, size=48)
    assert np.array_equal(img, img2) and np.array_equal(m, m2)


def test_mask_is_resolution_independent():
    """The lesion boundary is analytic: the 128 px mask, box-downsampled, matches the 32 px one."""
    for idx in range(4):
        m32 = make_sample("polyp", "clinic", seed=1, index=idx, size=32)[1]
        m128 = make_sample("polyp", "clinic", seed=1, index=idx, size=128)[1]
        down = m128.reshape(32, 4, 32, 4).mean(axis=(1, 3)) >= 0.5
        assert (down != m32).mean() < 0.03


def _ring(mask, width=4):
    from scipy import ndimage

    return ndimage.binary_dilation(mask, iterations=width) & ~ndimage.binary_dilation(mask, iterations=1)


@pytest.mark.parametrize("kind", KINDS)
def test_lesion_visible_in_every_domain_and_not_under_the_frame(kind):
    for d in domain_names(kind):
        contrasts = []
        for idx in range(8):
            img, m = make_sample(kind, d, seed=0, index=idx, size=96)
            f = img.astype(float)
            inside, ring = f[m].mean(axis=0), f[_ring(m)].mean(axis=0)
            contrasts.append(np.abs(inside - ring).sum())
            # no lesion pixel is black (a frame never covers the lesion)
            assert (f[m].sum(axis=1) > 30).mean() > 0.98, (d, idx)
        assert np.median(contrasts) > 12, (kind, d, contrasts)


@pytest.mark.parametrize("kind", KINDS)
def test_default_domains_differ_substantially_in_appearance(kind):
    src, tgt = default_domains(kind)
    a = np.stack([make_sample(kind, src, 0, i, 64)[0] for i in range(8)]).astype(float)
    b = np.stack([make_sample(kind, tgt, 0, i, 64)[0] for i in range(8)]).astype(float)
    mean_shift = np.abs(a.mean(axis=(0, 1, 2)) - b.mean(axis=(0, 1, 2))).sum()
    assert mean_shift > 40, mean_shift  # sum over RGB of the mean colour change, in 8-bit levels


def test_colon_domain_has_black_frame_and_clinic_has_none():
    img_c, _ = make_sample("polyp", "colon", 0, 0, 64)
    img_k, _ = make_sample("polyp", "clinic", 0, 0, 64)
    corners = (slice(0, 3), slice(0, 3))
    assert img_c[corners].max() < 30
    assert img_k[corners].mean() > 60


def test_generate_domain_writes_files_and_params_and_resumes(tmp_path):
    out = tmp_path / "colon"
    t = time.time()
    generate_domain(out, kind="polyp", domain="colon", n=12, size=64, seed=2, progress=False)
    assert time.time() - t < 15
    names = sorted(p.name for p in (out / "images").iterdir())
    assert names == [f"{i:04d}.png" for i in range(12)]
    assert sorted(p.name for p in (out / "masks").iterdir()) == names
    meta = json.loads((out / "domain.json").read_text())
    assert meta["kind"] == "polyp" and meta["domain"] == "colon" and meta["n"] == 12 and meta["seed"] == 2
    assert meta["style"]["frame"] > 0
    img, m = make_sample("polyp", "colon", 2, 7, 64)
    assert np.array_equal(np.asarray(Image.open(out / "images" / "0007.png")), img)
    assert np.array_equal(np.asarray(Image.open(out / "masks" / "0007.png")) == 255, m)
    # resume: a deleted file comes back identical, the others are not rewritten
    before = (out / "images" / "0003.png").stat().st_mtime_ns
    (out / "images" / "0007.png").unlink()
    generate_domain(out, kind="polyp", domain="colon", n=12, size=64, seed=2, progress=False)
    assert np.array_equal(np.asarray(Image.open(out / "images" / "0007.png")), img)
    assert (out / "images" / "0003.png").stat().st_mtime_ns == before
    with pytest.raises(StylsegError, match=r"domain\.json.*other parameters.*choose another --out"):
        generate_domain(out, kind="polyp", domain="colon", n=12, size=64, seed=3, progress=False)


def test_unknown_kind_and_domain_list_valid_names(tmp_path):
    with pytest.raises(StylsegError, match=r"unknown synthetic data kind 'eye'; valid names: polyp, skin"):
        generate_domain(tmp_path / "x", kind="eye")
    with pytest.raises(StylsegError, match=r"unknown polyp domain 'kvasir'; valid names: clinic, colon, etis"):
        make_sample("polyp", "kvasir")
    with pytest.raises(StylsegError, match=r"derm_dark, derm_light, derm_pink"):
        SYNTH_DOMAINS.get("skin").get("nope")


def test_cli_synth(tmp_path, capsys):
    rc = main(["data", "synth", "--out", str(tmp_path / "s"), "--kind", "skin", "--domain", "derm_dark", "--n", "3",
               "--size", "32", "--seed", "1"])
    assert rc == 0 and len(list((tmp_path / "s" / "images").iterdir())) == 3
    rc = main(["data", "synth", "--out", str(tmp_path / "t"), "--kind", "skin", "--domain", "nope"])
    assert rc == 2
    assert "valid names: derm_dark, derm_light, derm_pink" in capsys.readouterr().err
