"""Image and mask reading/writing: every input encoding the kit promises to accept."""


import numpy as np
import pytest
from PIL import Image

from stylseg.data.io import (from_tensor_pm1, list_images, read_image, read_mask, resize_image, resize_mask,
                             to_tensor_pm1, write_image, write_mask)
from stylseg.utils import StylsegError


def _save(path, arr, mode=None, **kw):
    Image.fromarray(arr, mode=mode).save(path, **kw) if mode else Image.fromarray(arr).save(path, **kw)
    return path


def test_read_image_grayscale_repeated_to_rgb(tmp_path):
    g = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    img = read_image(_save(tmp_path / "g.png", g))
    assert img.shape == (6, 8, 3) and img.dtype == np.uint8
    assert np.array_equal(img[..., 0], g) and np.array_equal(img[..., 1], g) and np.array_equal(img[..., 2], g)


def test_read_image_rgba_composited_on_black(tmp_path):
    a = np.zeros((4, 4, 4), np.uint8)
    a[..., :3] = 200
    a[..., 3] = 255
    a[0, 0, 3] = 0  # fully transparent pixel -> black
    a[1, 1, 3] = 128  # half transparent -> about half the colour
    img = read_image(_save(tmp_path / "a.png", a))
    assert img.shape == (4, 4, 3)
    assert tuple(img[0, 0]) == (0, 0, 0)
    assert abs(int(img[1, 1, 0]) - round(200 * 128 / 255)) <= 1
    assert tuple(img[2, 2]) == (200, 200, 200)


def test_read_image_16bit_scaled(tmp_path):
    a = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    p = tmp_path / "i16.png"
    Image.fromarray(a).save(p)
    assert Image.open(p).mode.startswith("I")
    img = read_image(p)
    assert img.dtype == np.uint8 and img.shape == (2, 2, 3)
    assert img[0, 0, 0] == 0 and img[0, 1, 0] == 255 and img[1, 0, 0] == 128
    assert img[1, 1, 0] == round(1000 / 65535 * 255)


def test_read_image_palette_and_tiff(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (5, 7, 3)
    Image.fromarray(rgb).save(tmp_path / "x.tiff")
    assert np.array_equal(read_image(tmp_path / "x.tiff"), rgb)


def test_read_corrupt_and_missing_files_name_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(StylsegError, match=r"broken\.png.*(unreadable|corrupt).*replace or remove"):
        read_image(bad)
    with pytest.raises(StylsegError, match=r"broken\.png"):
        read_mask(bad)
    with pytest.raises(StylsegError, match=r"nothere\.png: file not found"):
        read_image(tmp_path / "nothere.png")


@pytest.mark.parametrize("encoding", ["01", "0255", "rgb_red", "rgba", "jpeg", "label38", "16bit_1000", "16bit_full"])
def test_read_mask_encodings(tmp_path, encoding):
    truth = np.zeros((32, 32), bool)
    truth[8:24, 10:22] = True
    p = tmp_path / f"m_{encoding}.png"
    if encoding == "01":
        _save(p, truth.astype(np.uint8))
    elif encoding == "0255":
        _save(p, truth.astype(np.uint8) * 255)
    elif encoding == "rgb_red":
        a = np.zeros((32, 32, 3), np.uint8)
        a[truth, 0] = 255
        _save(p, a)
    elif encoding == "rgba":
        a = np.zeros((32, 32, 4), np.uint8)
        a[..., 3] = 255
        a[truth, :3] = 255
        _save(p, a)
    elif encoding == "jpeg":
        p = tmp_path / "m.jpg"
        _save(p, truth.astype(np.uint8) * 255, quality=30)
        raw = np.asarray(Image.open(p))
        assert len(np.unique(raw)) > 2  # really noisy
    elif encoding == "label38":
        _save(p, truth.astype(np.uint8) * 38)
    elif encoding == "16bit_1000":
        Image.fromarray(truth.astype(np.uint16) * 1000).save(p)
    elif encoding == "16bit_full":
        Image.fromarray(truth.astype(np.uint16) * 65535).save(p)
    m = read_mask(p)
    assert m.dtype == bool and m.shape == (32, 32)
    if encoding == "jpeg":
        assert (m != truth).mean() < 0.01
    else:
        assert np.array_equal(m, truth)


def test_empty_mask_reads_as_all_false(tmp_path):
    m = read_mask(_save(tmp_path / "e.png", np.zeros((5, 5), np.uint8)))
    assert not m.any()


@pytest.mark.parametrize("value", ["bool", "float01", "uint8_255"])
def test_write_mask_roundtrip(tmp_path, value):
    truth = np.random.default_rng(1).random((9, 11)) > 0.5
    arr = {"bool": truth, "float01": truth.astype(np.float32), "uint8_255": truth.astype(np.uint8) * 255}[value]
    p = write_mask(tmp_path / "sub" / "m.png", arr)
    raw = np.asarray(Image.open(p))
    assert Image.open(p).mode == "L" and set(np.unique(raw)) <= {0, 255}
    assert np.array_equal(raw == 255, truth)
    assert not list((tmp_path / "sub").glob(".*tmp*"))  # no temporary left behind


def test_write_image_png_exact_and_jpeg(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 255, (6, 5, 3), dtype=np.uint8)
    assert np.array_equal(read_image(write_image(tmp_path / "a.png", rgb)), rgb)
    j = read_image(write_image(tmp_path / "a.jpg", rgb))
    assert j.shape == rgb.shape
    assert Image.open(tmp_path / "a.jpg").format == "JPEG"


def test_list_images_natural_order_and_filter(tmp_path):
    for n in ("10.png", "2.png", "1.jpg", "notes.txt", ".hidden.png", "3.TIF"):
        (tmp_path / n).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["1.jpg", "2.png", "3.TIF", "10.png"]


def test_resize_image_bilinear_and_mask_nearest():
    img = np.zeros((4, 4, 3), np.uint8)
    img[:, 2:] = 200
    up = resize_image(img, 8)
    assert up.shape == (8, 8, 3)
    assert 0 < up[0, 3, 0] < 200 or 0 < up[0, 4, 0] < 200  # bilinear creates in-between values
    m = np.zeros((4, 4), bool)
    m[1:3, 1:3] = True
    mu = resize_mask(m, 8)
    assert mu.dtype == bool and mu.sum() == 16 and mu[2:6, 2:6].all()
    md = resize_mask(np.kron(m, np.ones((4, 4), bool)), 4)
    assert np.array_equal(md, m)


def test_tensor_pm1_roundtrip():
    rgb = np.random.default_rng(3).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    t = to_tensor_pm1(rgb)
    assert tuple(t.shape) == (3, 5, 6) and float(t.min()) >= -1 and float(t.max()) <= 1
    assert abs(float(t[0, 0, 0]) - (rgb[0, 0, 0] / 127.5 - 1)) < 1e-6
    assert np.array_equal(from_tensor_pm1(t), rgb)
    assert np.array_equal(from_tensor_pm1(t[None])[0], rgb)


@pytest.mark.parametrize("labels", [(0, 1, 2), (0, 100, 200), (0, 3, 7, 255)])
def test_label_masks_keep_every_non_zero_label_as_lesion(tmp_path, labels):
    """docs/data.md's mask rule: in a lossless label image every non-zero label is lesion (none is dropped)."""
    a = np.zeros((32, 32), np.uint8)
    for i, v in enumerate(labels[1:]):
        a[4 + 8 * i:10 + 8 * i, 5:20] = v
    m = read_mask(_save(tmp_path / "m.png", a))
    assert np.array_equal(m, a != 0)


def test_label_masks_pass_the_validation_path(tmp_path):
    """A folder of {0,1,2} label masks is not 'all empty' for data check and training."""
    from stylseg.data.validate import scan_paired

    for sub in ("images", "masks"):
        (tmp_path / "d" / sub).mkdir(parents=True)
    for i in range(3):
        _save(tmp_path / "d" / "images" / f"{i}.png", np.full((16, 16, 3), 90, np.uint8))
        a = np.zeros((16, 16), np.uint8)
        a[2:6, 2:6], a[8:12, 8:12] = 1, 2
        _save(tmp_path / "d" / "masks" / f"{i}.png", a)
    scan = scan_paired(tmp_path / "d", use="train")
    assert not scan.problems and scan.coverage == [32 / 256] * 3


def test_a_decompression_bomb_is_refused_naming_the_file(tmp_path, monkeypatch):
    """An image over Pillow's pixel limit is an error naming the file, in read_image, read_mask and the
    header-only validation (Pillow raises past twice MAX_IMAGE_PIXELS)."""
    from PIL import Image as PILImage

    from stylseg.data.validate import scan_paired

    for sub in ("images", "masks"):
        (tmp_path / "d" / sub).mkdir(parents=True)
        _save(tmp_path / "d" / sub / "0.png", np.zeros((64, 64), np.uint8))
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)
    for read in (read_image, read_mask):
        with pytest.raises(StylsegError, match=r"d/images/0.png: image too large to decode safely .*remove this file"):
            read(tmp_path / "d" / "images" / "0.png")
    for deep in (True, False):
        scan = scan_paired(tmp_path / "d", use="train", deep=deep)
        assert [p.kind for p in scan.problems] == ["unreadable"] and "too large" in scan.problems[0].text
