"""Applying a stylizer: the arm format, recon / no-SPN controls, upsampling, resume (docs/method.md 1, 7)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from stylseg.data.io import read_image, read_mask, resize_image
from stylseg.manifest import ArmWriter
from stylseg.config import get_profile
from _testing import tiny_config, tiny_diffae, tiny_domains
from stylseg.stylize.apply import apply_stylizer, upsample_result
from stylseg.stylize.embedders import SUBSTITUTE
from stylseg.stylize.finetune import finetune
from stylseg.stylize.losses import LESION_RING
from stylseg.stylize.perceptual import STAND_IN
from stylseg.stylize.stylizer import Stylizer
from stylseg.utils import StylsegError


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("apply")
    cfg = tiny_config(**{"stylize.iterations": 1})
    da = tiny_diffae(d / "diffae", cfg)
    dom = tiny_domains(d / "data", n=7)
    model = finetune(da, dom["style"], dom["source"], d / "ft", cfg, device="cpu", progress=False)
    return {"d": d, "cfg": cfg, "diffae": da, "model": model, **dom}


def test_st_arm_layout_and_manifest(env):
    out = apply_stylizer(env["model"], env["source"], env["d"] / "st", env["cfg"], device="cpu", progress=False)
    m = json.loads((out / "manifest.json").read_text())
    assert m["arm"] == "st" and m["method"] == "diffusion-st" and len(m["items"]) == 7
    assert m["params"]["unet_calls_per_image"] == 4 and m["params"]["use_spn"] is True
    # what stood in for published weights (no CLIP, no LPIPS trunk here), carried from the stylizer
    assert m["substitute"] == f"{SUBSTITUTE}; {STAND_IN}" and m["size"] == 32
    for it in m["items"]:
        img, mask = read_image(out / it["image"]), read_mask(out / it["mask"])
        assert img.shape == (32, 32, 3) and mask.shape == (32, 32)
        src_mask = read_mask(env["source"] / "masks" / f"{it['name']}.png")
        assert np.array_equal(mask, src_mask)  # masks copied (same size here)


def test_recon_and_nospn_controls(env):
    cfg = env["cfg"]
    rec = apply_stylizer(None, env["source"], env["d"] / "recon", cfg, mode="recon", diffae_dir=env["diffae"],
                         device="cpu", progress=False)
    assert json.loads((rec / "manifest.json").read_text())["substitute"] is None
    nos = apply_stylizer(env["model"], env["source"], env["d"] / "nospn", cfg, use_spn=False, device="cpu",
                         progress=False)
    assert json.loads((nos / "manifest.json").read_text())["arm"] == "st_nospn"
    # reference: the chain by hand with the loaded models
    st = Stylizer.load(env["model"])
    x = torch.stack([torch.from_numpy(resize_image(read_image(p), 16)).permute(2, 0, 1).float() / 127.5 - 1
                     for p in sorted((env["source"] / "images").glob("*.png"))[:2]])
    ref = st.reconstruct(x, cfg.ddim.t0, 2, 2)
    got = np.stack([read_image(rec / "images" / f"{i:04d}.png") for i in range(2)])
    srcs = [read_image(p) for p in sorted((env["source"] / "images").glob("*.png"))[:2]]
    lo = ((ref.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    assert cfg.stylize.upsample == "detail"  # the default: input + upsampled residual
    want = np.stack([upsample_result(a, s, 32, "detail") for a, s in zip(lo, srcs)])
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    # detail_lesion through the command's path: the masks reach it, and the manifest records it
    rec_l = apply_stylizer(None, env["source"], env["d"] / "recon_lesion", cfg, mode="recon", diffae_dir=env["diffae"],
                           device="cpu", progress=False, upsample="detail_lesion")
    params = json.loads((rec_l / "manifest.json").read_text())["params"]
    assert params["upsample"] == "detail_lesion" and params["upsample_ring"] == LESION_RING
    masks = [read_mask(env["source"] / "masks" / f"{i:04d}.png") for i in range(2)]
    want_l = np.stack([upsample_result(a, s, 32, "detail_lesion", m) for a, s, m in zip(lo, srcs, masks)])
    got_l = np.stack([read_image(rec_l / "images" / f"{i:04d}.png") for i in range(2)])
    assert np.abs(got_l.astype(int) - want_l.astype(int)).max() <= 1


def test_untrained_stylizer_equals_recon(env, tmp_path):
    """D_B = D_A and a zero SPN: the st chain is exactly the recon chain."""
    cfg = env["cfg"].override(**{"stylize.iterations": 0})
    m0 = finetune(env["diffae"], env["style"], env["source"], tmp_path / "ft0", cfg, device="cpu", progress=False)
    st = Stylizer.load(m0)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(st.stylize(x, 0.1, 2, 2), st.reconstruct(x, 0.1, 2, 2))


def test_upsample_detail_formula():
    rng = np.random.default_rng(0)
    inp = rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)
    lo = resize_image(inp, 16)
    # no stylization change: detail upsampling returns the full-resolution input exactly
    assert np.array_equal(upsample_result(lo, inp, 32, "detail"), resize_image(inp, 32))
    shifted = np.clip(lo.astype(int) + 10, 0, 255).astype(np.uint8)
    out = upsample_result(shifted, inp, 32, "detail").astype(int)
    hi = resize_image(inp, 32).astype(int)
    inner = (hi > 20) & (hi < 235) & (resize_image(lo, 32) < 240)
    assert np.abs((out - hi)[inner] - 10).max() <= 1
    assert np.array_equal(upsample_result(shifted, inp, 32, "bilinear"), resize_image(shifted, 32))
    with pytest.raises(StylsegError, match="bilinear, detail, detail_lesion"):
        upsample_result(lo, inp, 32, "nearest")


def test_upsample_detail_on_the_lesion_only():
    """upsample=detail_lesion: the input's band above the diffusion size is kept on the lesion and its ring, and
    left out far from it (the plain upsampled output there), with a feathered switch; an empty mask keeps it
    everywhere (= detail); no mask is refused."""
    from stylseg.stylize.apply import detail_gate

    rng = np.random.default_rng(0)
    inp = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)  # all detail: every band is strong
    lo = resize_image(inp, 32)  # the model changed nothing: detail returns the input exactly
    mask = np.zeros((64, 64), bool)
    mask[20:30, 24:34] = True
    hi = resize_image(inp, 64).astype(int)
    out = upsample_result(lo, inp, 64, "detail_lesion", mask).astype(int)
    assert np.abs(out[22:28, 26:32] - hi[22:28, 26:32]).max() <= 1  # on the lesion: the input's detail
    far = (slice(50, 64), slice(0, 14))
    plain = resize_image(lo, 64).astype(int)
    assert np.abs(out[far] - plain[far]).mean() < 1.0 and np.abs(out[far] - hi[far]).mean() > 20
    g = detail_gate(mask, 64)
    band = np.zeros_like(mask)
    band[20 - 4:30 + 4, 24 - 4:34 + 4] = True  # within 1/16 of the side of the lesion: the lesion score's band
    assert g.min() >= 0 and g.max() <= 1 and g[band].min() > 0.95 and g[far].max() < 0.01
    assert np.abs(np.diff(g, axis=0)).max() < 0.5  # feathered: no hard seam
    assert np.abs(upsample_result(lo, inp, 64, "detail_lesion", np.zeros_like(mask)).astype(int) - hi).max() <= 1
    assert np.array_equal(upsample_result(lo, inp, 32, "detail_lesion", mask), lo)  # same size: nothing to do
    with pytest.raises(StylsegError, match="detail_lesion.*needs each image's mask"):
        upsample_result(lo, inp, 64, "detail_lesion")


def test_interrupted_apply_resumes_to_identical_files(env, monkeypatch):
    cfg = env["cfg"]
    full = apply_stylizer(env["model"], env["source"], env["d"] / "full", cfg, device="cpu", progress=False)
    orig_add = ArmWriter.add
    calls = {"n": 0}

    def flaky(self, *a, **k):
        if calls["n"] == 4:  # die in the middle of the second batch (batch size 3)
            raise KeyboardInterrupt
        calls["n"] += 1
        return orig_add(self, *a, **k)

    monkeypatch.setattr(ArmWriter, "add", flaky)
    part = env["d"] / "part"
    with pytest.raises(KeyboardInterrupt):
        apply_stylizer(env["model"], env["source"], part, cfg, device="cpu", progress=False)
    assert len(json.loads((part / "manifest.json").read_text())["items"]) == 3  # the first batch was flushed
    monkeypatch.setattr(ArmWriter, "add", orig_add)
    apply_stylizer(env["model"], env["source"], part, cfg, device="cpu", progress=False)
    for sub in ("images", "masks"):
        a = sorted(p.name for p in (full / sub).iterdir())
        b = sorted(p.name for p in (part / sub).iterdir())
        assert a == b and not any(n.startswith(".") for n in b)  # no temporary files left
        for n in a:
            assert (full / sub / n).read_bytes() == (part / sub / n).read_bytes()


def test_grayscale_and_rgba_inputs_are_converted(env, tmp_path):
    src = tmp_path / "mixed"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    rgb = read_image(env["source"] / "images" / "0000.png")
    Image.fromarray(rgb[..., 0]).save(src / "images" / "g.png")  # grayscale
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), "RGBA").save(src / "images" / "a.png")
    for n in ("g", "a"):
        Image.fromarray((read_mask(env["source"] / "masks" / "0000.png") * 255).astype(np.uint8)).save(src / "masks" / f"{n}.png")
    out = apply_stylizer(env["model"], src, tmp_path / "out", env["cfg"], device="cpu", progress=False)
    for n in ("g", "a"):
        im = Image.open(out / "images" / f"{n}.png")
        assert im.mode == "RGB" and im.size == (32, 32)


def test_bad_model_folders(env, tmp_path):
    cfg = env["cfg"]
    with pytest.raises(StylsegError, match="model folder not found"):
        apply_stylizer(tmp_path / "missing", env["source"], tmp_path / "o", cfg, device="cpu")
    with pytest.raises(StylsegError, match="'diffae' model, but a 'stylizer' model was expected"):
        apply_stylizer(env["diffae"], env["source"], tmp_path / "o", cfg, device="cpu")
    other = tiny_diffae(tmp_path / "other_diffae", cfg, seed=1)
    with pytest.raises(StylsegError, match="differs from the one"):
        apply_stylizer(env["model"], env["source"], tmp_path / "o", cfg, diffae_dir=other, device="cpu")
    with pytest.raises(StylsegError, match="no images/ subfolder .*move them into"):  # the shared paired-folder rules
        apply_stylizer(env["model"], env["source"] / "images", tmp_path / "o", cfg, device="cpu")


def test_cli_apply(env, tmp_path, monkeypatch):
    from stylseg.cli import main
    from _testing import TINY_DIFFAE

    monkeypatch.setenv("STYLSEG_THREADS", "1")
    sets = [a for k, v in TINY_DIFFAE.items() for a in ("--set", f"{k}={v}")]
    assert main(["stylize", "apply", "--model", str(env["model"]), "--input", str(env["source"]), "--out",
                 str(tmp_path / "c"), "--no-spn", "--device", "cpu", *sets]) == 0
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["params"]["use_spn"] is False
    assert main(["stylize", "apply", "--input", str(env["source"]), "--out", str(tmp_path / "d"), "--device", "cpu"]) == 2


def test_apply_arms_shares_inversion_with_identical_results(env):
    from stylseg.stylize.apply import apply_arms

    cfg, d = env["cfg"], env["d"]
    sep_st = apply_stylizer(env["model"], env["source"], d / "sep_st", cfg, device="cpu", progress=False)
    sep_rec = apply_stylizer(env["model"], env["source"], d / "sep_rec", cfg, mode="recon", device="cpu",
                             progress=False)
    both = apply_arms(env["model"], env["source"], [{"out": d / "b_st"}, {"out": d / "b_rec", "mode": "recon"}],
                      cfg, device="cpu", progress=False)
    for a, b in ((sep_st, both[0]), (sep_rec, both[1])):
        for p in sorted((a / "images").iterdir()):
            assert p.read_bytes() == (b / "images" / p.name).read_bytes()
        assert json.loads((a / "manifest.json").read_text())["params"] == \
            json.loads((b / "manifest.json").read_text())["params"]


def test_sensor_match_gives_the_stylized_arms_the_style_images_noise(env, tmp_path):
    """``stylize.sensor=match``: the st arm is the plain st arm followed by the style image's blur and
    noise (same files as applying stylseg.sensor by hand); recon never gets it; a missing style image is
    named with the way out."""
    import shutil

    from stylseg.sensor import SensorMatch
    from stylseg.stylize.apply import apply_arms

    cfg = env["cfg"].override(**{"stylize.sensor": "match"})
    d = env["d"]
    plain = apply_stylizer(env["model"], env["source"], d / "plain_st", env["cfg"], device="cpu", progress=False)
    st, rec = apply_arms(env["model"], env["source"], [{"out": tmp_path / "st"}, {"out": tmp_path / "rec", "mode": "recon"}],
                         cfg, device="cpu", progress=False)
    m = json.loads((st / "manifest.json").read_text())["params"]
    assert m["sensor"] == "match" and m["style_noise"] > 0
    assert json.loads((rec / "manifest.json").read_text())["params"]["sensor"] == "off"
    assert json.loads((plain / "manifest.json").read_text())["params"]["sensor"] == "off"
    match = SensorMatch(resize_image(read_image(env["style"]), 32))
    for p in sorted((plain / "images").iterdir()):
        assert np.array_equal(read_image(st / "images" / p.name), match(read_image(p)))
    want_rec = apply_stylizer(env["model"], env["source"], tmp_path / "rec0", env["cfg"], mode="recon", device="cpu",
                              progress=False)
    for p in sorted((want_rec / "images").iterdir()):
        assert p.read_bytes() == (rec / "images" / p.name).read_bytes()

    with pytest.raises(StylsegError, match="not one of off, match"):
        apply_stylizer(env["model"], env["source"], tmp_path / "x", cfg.override(**{"stylize.sensor": "on"}),
                       device="cpu", progress=False)
    # a folder written before stylizer folders kept a copy of the style image reads it at its recorded path
    moved = tmp_path / "model_copy"
    shutil.copytree(env["model"], moved)
    for copy in moved.glob("style_image.*"):
        copy.unlink()
    cfgj = json.loads((moved / "config.json").read_text())
    cfgj["style"]["path"] = str(tmp_path / "gone.png")
    (moved / "config.json").write_text(json.dumps(cfgj))
    with pytest.raises(StylsegError, match=r"gone.png.*stylize.sensor=off"):
        apply_stylizer(moved, env["source"], tmp_path / "y", cfg, device="cpu", progress=False)


def test_cli_apply_uses_the_stylizers_own_settings(tmp_path, monkeypatch):
    """`stylseg stylize apply --model DIR` with no profile applies the stylizer as it was fine-tuned (its preset's
    upsampling and sensor step, its depth and grid, its segmentation size), not the smoke profile's; a --set still
    changes one setting, and a profile named on the command line does not undo the stylizer's settings."""
    from stylseg.cli import main

    monkeypatch.setenv("STYLSEG_THREADS", "1")
    cfg = tiny_config(**{"stylize.preset": "gates", "stylize.iterations": 1, "stylize.style_pair_tries": 2,
                         "data.seg_size": 40, "ddim.t0": 0.15})
    da = tiny_diffae(tmp_path / "diffae", cfg)
    dom = tiny_domains(tmp_path / "data", n=3)
    model = finetune(da, dom["style"], dom["source"], tmp_path / "ft", cfg, device="cpu", progress=False)
    smoke = get_profile("smoke")
    assert (smoke.stylize.upsample, smoke.stylize.sensor, smoke.data.seg_size) != ("detail_lesion", "match", 40)

    def params(out, *extra):
        assert main(["stylize", "apply", "--model", str(model), "--input", str(dom["source"]), "--out",
                     str(tmp_path / out), "--device", "cpu", *extra]) == 0
        m = json.loads((tmp_path / out / "manifest.json").read_text())
        return dict(m["params"], size=m["size"])

    p = params("a")
    assert (p["upsample"], p["sensor"], p["size"], p["t0"], p["preset"]) == ("detail_lesion", "match", 40, 0.15, "gates")
    assert (p["invert_steps"], p["gen_steps"]) == (cfg.ddim.apply_invert_steps, cfg.ddim.apply_gen_steps)
    p = params("b", "--set", "ddim.t0=0.2", "--set", "stylize.sensor=off")
    assert (p["t0"], p["sensor"], p["upsample"]) == (0.2, "off", "detail_lesion")
    p = params("c", "--profile", "cpu")
    assert (p["t0"], p["sensor"], p["size"]) == (0.15, "match", 40)


def test_cli_apply_refuses_a_folder_that_is_not_a_stylizer(tmp_path, capsys):
    from stylseg.cli import main

    dom = tiny_domains(tmp_path / "data", n=2)
    da = tiny_diffae(tmp_path / "diffae")
    assert main(["stylize", "apply", "--model", str(da), "--input", str(dom["source"]), "--out",
                 str(tmp_path / "x"), "--device", "cpu"]) == 2
    assert "'diffae' model, but a 'stylizer' model was expected" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_sensor_match_reads_the_style_image_kept_in_the_stylizer_folder(tmp_path):
    """`stylize apply --set stylize.sensor=match` works after the original style image was deleted: the stylizer
    folder keeps a copy of it (checked by its recorded sha256)."""
    import shutil

    from stylseg.cli import main
    from stylseg.stylize.stylizer import StylizerRecord

    cfg = tiny_config(**{"stylize.iterations": 1})
    da = tiny_diffae(tmp_path / "diffae", cfg)
    dom = tiny_domains(tmp_path / "data", n=4)
    style = tmp_path / "upload" / "my style.png"
    style.parent.mkdir()
    shutil.copyfile(dom["style"], style)
    model = finetune(da, style, dom["source"], tmp_path / "ft", cfg, device="cpu", progress=False)
    shutil.rmtree(style.parent)  # the user's original is gone
    rec = StylizerRecord.read(model)
    assert rec.style_image.parent == model and rec.style_image.read_bytes() == dom["style"].read_bytes()
    out = tmp_path / "st_sensor"
    assert main(["stylize", "apply", "--model", str(model), "--input", str(dom["source"]), "--out", str(out),
                 "--device", "cpu", "--set", "stylize.sensor=match"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["params"]["sensor"] == "match" and len(m["items"]) == 4
    assert m["style"] == str(style.resolve())  # the manifest names the image the stylizer was fine-tuned on
    # a copy that is not the recorded image is refused, naming the fix
    rec.style_image.write_bytes(read_image.__doc__.encode())
    with pytest.raises(StylsegError, match="sha256 differs.*stylize.sensor=off"):
        apply_stylizer(model, dom["source"], tmp_path / "o2", cfg.override(**{"stylize.sensor": "match"}),
                       device="cpu", progress=False)
