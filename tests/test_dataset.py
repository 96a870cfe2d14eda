"""PairedDataset and load_pairs: pairing, errors that name files, sizes, modes, augmentation, cache."""

import numpy as np
import pytest
import torch
from PIL import Image

from stylseg.data import IMAGENET_MEAN, IMAGENET_STD, PairedDataset, load_pairs
from stylseg.data.dataset import paired_augment
from stylseg.utils import StylsegError


def make_pairs(root, n=4, h=20, w=30, ext="png", mask_ext="png", seed=0):
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        m = np.zeros((h, w), np.uint8)
        m[h // 4: 3 * h // 4, w // 4: w // 2 + i] = 255
        Image.fromarray(img).save(root / "images" / f"{i + 1}.{ext}")
        Image.fromarray(m).save(root / "masks" / f"{i + 1}.{mask_ext}")
    return root


# --------------------------------------------------------------------------- load_pairs
def test_load_pairs_matches_by_stem_across_extensions(tmp_path):
    root = make_pairs(tmp_path / "d", n=3, ext="jpg", mask_ext="png")
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / "images" / "10.bmp")
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(root / "masks" / "10.tif")
    pairs = load_pairs(root)
    assert [(i.name, m.name) for i, m in pairs] == [("1.jpg", "1.png"), ("2.jpg", "2.png"), ("3.jpg", "3.png"),
                                                     ("10.bmp", "10.tif")]


def test_load_pairs_missing_folder(tmp_path):
    with pytest.raises(StylsegError, match=r"nope: folder not found.*images/ and masks/"):
        load_pairs(tmp_path / "nope")


def test_load_pairs_no_images_subfolder(tmp_path):
    (tmp_path / "d").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "d" / "a.png")
    with pytest.raises(StylsegError, match=r"no images/ subfolder.*1 image files directly.*move them"):
        load_pairs(tmp_path / "d")


def test_load_pairs_empty_folder(tmp_path):
    (tmp_path / "d" / "images").mkdir(parents=True)
    (tmp_path / "d" / "masks").mkdir()
    with pytest.raises(StylsegError, match=r"images: empty folder"):
        load_pairs(tmp_path / "d")


def test_load_pairs_image_without_mask_names_each_file(tmp_path):
    root = make_pairs(tmp_path / "d", n=4)
    (root / "masks" / "2.png").unlink()
    (root / "masks" / "4.png").unlink()
    with pytest.raises(StylsegError) as e:
        load_pairs(root)
    msg = str(e.value)
    assert "2 image(s) without a mask" in msg and "2.png" in msg and "4.png" in msg
    assert "same name" in msg and "masks/2.png" in msg


def test_load_pairs_mask_without_image(tmp_path):
    root = make_pairs(tmp_path / "d", n=2)
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(root / "masks" / "99.png")
    with pytest.raises(StylsegError, match=r"1 mask\(s\) without an image.*99\.png"):
        load_pairs(root)


def test_load_pairs_duplicate_stems(tmp_path):
    root = make_pairs(tmp_path / "d", n=2)
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / "images" / "1.jpg")
    with pytest.raises(StylsegError, match=r"several files share a stem.*1\.jpg.*1\.png|1\.png.*1\.jpg"):
        load_pairs(root)


def test_load_pairs_no_masks_subfolder(tmp_path):
    root = make_pairs(tmp_path / "d", n=2)
    for p in (root / "masks").iterdir():
        p.unlink()
    (root / "masks").rmdir()
    with pytest.raises(StylsegError, match=r"no masks/ subfolder"):
        load_pairs(root)
    assert [m for _, m in load_pairs(root, require_masks=False)] == [None, None]


def test_image_only_folder_without_masks_gives_zero_masks(tmp_path):
    d = tmp_path / "styles"
    d.mkdir()
    Image.fromarray(np.full((10, 12, 3), 90, np.uint8)).save(d / "s.png")
    ds = PairedDataset(d, 8, require_masks=False)
    it = ds[0]
    assert it["mask"].sum() == 0 and it["orig_size"] == (10, 12) and ds.names == ["s"]


# --------------------------------------------------------------------------- items
def test_item_shapes_ranges_and_metadata(tmp_path):
    root = make_pairs(tmp_path / "d", n=3, h=20, w=30)
    ds = PairedDataset(root, 16)
    assert len(ds) == 3 and ds.names == ["1", "2", "3"]
    it = ds[1]
    assert tuple(it["image"].shape) == (3, 16, 16) and it["image"].dtype == torch.float32
    assert tuple(it["mask"].shape) == (1, 16, 16)
    assert set(torch.unique(it["mask"]).tolist()) <= {0.0, 1.0} and it["mask"].sum() > 0
    assert it["name"] == "2" and it["path"].endswith("images/2.png") and it["orig_size"] == (20, 30)
    assert -1.0 <= float(it["image"].min()) and float(it["image"].max()) <= 1.0
    # diffusion range equals the resized image / 127.5 - 1
    ref = np.asarray(Image.open(root / "images" / "2.png").resize((16, 16), Image.BILINEAR)).astype(np.float32)
    assert torch.allclose(it["image"], torch.from_numpy(ref / 127.5 - 1).permute(2, 0, 1), atol=1e-5)
    assert ds[-1]["name"] == "3"
    with pytest.raises(IndexError):
        ds[3]


def test_seg_mode_is_imagenet_normalised(tmp_path):
    root = make_pairs(tmp_path / "d", n=1, h=8, w=8)
    raw = np.asarray(Image.open(root / "images" / "1.png")).astype(np.float32) / 255.0
    x = PairedDataset(root, 8, mode="seg")[0]["image"]
    for c in range(3):
        exp = (raw[..., c] - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        assert np.allclose(x[c].numpy(), exp, atol=1e-5)


def test_mask_resized_nearest_matches_reference(tmp_path):
    root = make_pairs(tmp_path / "d", n=1, h=40, w=60)
    m = np.asarray(Image.open(root / "masks" / "1.png").resize((16, 16), Image.NEAREST)) >= 128
    assert np.array_equal(PairedDataset(root, 16)[0]["mask"][0].numpy().astype(bool), m)


def test_unknown_mode_lists_valid(tmp_path):
    root = make_pairs(tmp_path / "d", n=1)
    with pytest.raises(StylsegError, match=r"unknown dataset mode 'rgb'; valid modes: diffusion, seg"):
        PairedDataset(root, 8, mode="rgb")


def test_odd_images_grayscale_rgba_16bit_and_rgb_jpeg_masks(tmp_path):
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    truth = np.zeros((16, 16), bool)
    truth[4:12, 4:12] = True
    Image.fromarray(np.full((16, 16), 100, np.uint8)).save(root / "images" / "gray.png")
    Image.fromarray(np.full((16, 16, 4), 180, np.uint8)).save(root / "images" / "rgba.png")
    Image.fromarray(np.full((16, 16), 30000, np.uint16)).save(root / "images" / "deep.png")
    Image.fromarray(truth.astype(np.uint8)).save(root / "masks" / "gray.png")  # {0,1}
    rgbm = np.zeros((16, 16, 3), np.uint8)
    rgbm[truth] = 255
    Image.fromarray(rgbm).save(root / "masks" / "rgba.png")  # RGB mask
    Image.fromarray(truth.astype(np.uint8) * 255).save(root / "masks" / "deep.jpg", quality=40)  # JPEG-noisy
    ds = PairedDataset(root, 16)
    for i in range(3):
        it = ds[i]
        assert tuple(it["image"].shape) == (3, 16, 16)
        assert (it["mask"][0].numpy().astype(bool) != truth).mean() < 0.02
    assert abs(float(ds[ds.names.index("gray")]["image"][0, 0, 0]) - (100 / 127.5 - 1)) < 1e-5
    assert abs(float(ds[ds.names.index("deep")]["image"][0, 0, 0]) - (round(30000 / 65535 * 255) / 127.5 - 1)) < 1e-5


def test_corrupt_image_refused_when_the_dataset_is_made(tmp_path):
    root = make_pairs(tmp_path / "d", n=2)
    (root / "images" / "2.png").write_bytes(b"garbage")
    with pytest.raises(StylsegError, match=r"images/2\.png: unreadable or corrupt image"):
        PairedDataset(root, 8)  # validated before any item is used


def test_mask_size_mismatch_names_file(tmp_path):
    root = make_pairs(tmp_path / "d", n=1, h=20, w=30)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "masks" / "1.png")
    with pytest.raises(StylsegError, match=r"masks/1\.png: mask is 10x10 but its image 1\.png is 30x20"):
        PairedDataset(root, 8)


# --------------------------------------------------------------------------- cache, tensors
def test_cache_keeps_resized_arrays(tmp_path):
    root = make_pairs(tmp_path / "d", n=2)
    ds = PairedDataset(root, 8, cache=True)
    a = ds[0]["image"].clone()
    (root / "images" / "1.png").unlink()
    assert torch.equal(ds[0]["image"], a)
    nocache = PairedDataset(make_pairs(tmp_path / "e", n=2), 8, cache=False)
    nocache[0]
    (tmp_path / "e" / "images" / "1.png").unlink()
    with pytest.raises(StylsegError, match="file not found"):
        nocache[0]


def test_tensors_stack_all_items_unaugmented(tmp_path):
    root = make_pairs(tmp_path / "d", n=3)
    ds = PairedDataset(root, 12, mode="seg", augment=True)
    x, m = ds.tensors()
    assert tuple(x.shape) == (3, 3, 12, 12) and tuple(m.shape) == (3, 1, 12, 12)
    plain = PairedDataset(root, 12, mode="seg")
    for i in range(3):
        assert torch.allclose(x[i], plain[i]["image"]) and torch.equal(m[i], plain[i]["mask"])


# --------------------------------------------------------------------------- augmentation
def test_augmentation_deterministic_per_seed_epoch_index(tmp_path):
    root = make_pairs(tmp_path / "d", n=3)
    a = PairedDataset(root, 16, augment=True, seed=5)
    b = PairedDataset(root, 16, augment=True, seed=5)
    assert torch.equal(a[1]["image"], b[1]["image"]) and torch.equal(a[1]["mask"], b[1]["mask"])
    first = [a[i]["image"] for i in range(3)]
    a.set_epoch(1)
    assert any(not torch.equal(first[i], a[i]["image"]) for i in range(3))
    a.set_epoch(0)
    assert all(torch.equal(first[i], a[i]["image"]) for i in range(3))
    c = PairedDataset(root, 16, augment=True, seed=6)
    assert any(not torch.equal(first[i], c[i]["image"]) for i in range(3))


def test_augmentation_moves_image_and_mask_together():
    rng = np.random.default_rng(0)
    for trial in range(30):
        mask = np.zeros((32, 32), bool)
        mask[rng.integers(0, 16):rng.integers(17, 32), rng.integers(0, 16):rng.integers(17, 32)] = True
        img = np.repeat((mask * 255).astype(np.uint8)[..., None], 3, axis=2)
        ai, am = paired_augment(img, mask, np.random.default_rng(trial))
        assert ai.shape == (32, 32, 3) and am.shape == (32, 32) and am.dtype == bool
        # the image (the mask drawn in white) still lines up with the transformed mask
        assert ((ai[..., 0] >= 128) != am).mean() < 0.03


def test_color_jitter_changes_image_only(tmp_path):
    root = make_pairs(tmp_path / "d", n=4)
    plain = PairedDataset(root, 16, augment=True, seed=1)
    jit = PairedDataset(root, 16, augment=True, seed=1, color_jitter=True)
    diff = [not torch.allclose(plain[i]["image"], jit[i]["image"]) for i in range(4)]
    assert any(diff)
    assert all(torch.equal(plain[i]["mask"], jit[i]["mask"]) for i in range(4))
