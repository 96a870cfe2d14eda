"""`stylseg data check`: counts, sizes, coverage, and every bad file named with exit code 1."""

import numpy as np
import pytest
from PIL import Image

from stylseg.cli import main
from stylseg.data import check_folder, generate_domain


def _pair(root, name, h=16, w=16, mask=True, fill=True):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 120, np.uint8)).save(root / "images" / f"{name}.png")
    if mask:
        m = np.zeros((h, w), np.uint8)
        if fill:
            m[: h // 2, : w // 2] = 255
        Image.fromarray(m).save(root / "masks" / f"{name}.png")


def test_good_synthetic_folder(tmp_path):
    out = generate_domain(tmp_path / "s", kind="polyp", domain="clinic", n=6, size=32, progress=False)
    rep = check_folder(out)
    assert rep.ok and rep.n_pairs == 6 and rep.sizes == {"32x32": 6}
    assert 0 < rep.coverage_min <= rep.coverage_mean <= rep.coverage_max < 1
    assert "6 pairs" in rep.summary() and "OK" in rep.summary()


def test_coverage_values_hand_computed(tmp_path):
    _pair(tmp_path, "a", 8, 8)  # quarter covered
    _pair(tmp_path, "b", 8, 8, fill=False)  # empty
    rep = check_folder(tmp_path)
    assert rep.coverage_min == 0.0 and rep.coverage_max == 0.25 and rep.coverage_mean == pytest.approx(0.125)
    assert rep.n_empty_masks == 1 and rep.ok
    strict = check_folder(tmp_path, require_nonempty_masks=True)
    assert not strict.ok and strict.problems == [f"{tmp_path / 'masks' / 'b.png'}: empty mask (no lesion pixel)"]


def test_every_bad_file_is_named(tmp_path):
    root = tmp_path / "bad"
    _pair(root, "1")
    _pair(root, "2", mask=False)  # missing mask
    _pair(root, "3")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "masks" / "3.png")  # size mismatch
    _pair(root, "4")
    (root / "images" / "4.png").write_bytes(b"not an image")  # unreadable image
    _pair(root, "5")
    (root / "masks" / "5.png").write_bytes(b"\x89PNG broken")  # unreadable mask
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "masks" / "6.png")  # mask without image
    rep = check_folder(root)
    text = "\n".join(rep.problems)
    assert rep.n_pairs == 1 and len(rep.problems) == 5
    assert f"{root / 'images' / '2.png'}: no mask (expected masks/2.png" in text
    assert f"{root / 'masks' / '3.png'}: mask is 8x8 but its image 3.png is 16x16" in text
    assert f"{root / 'images' / '4.png'}:" in text and "unreadable" in text
    assert f"{root / 'masks' / '5.png'}: unreadable or corrupt image" in text
    assert f"{root / 'masks' / '6.png'}: mask without an image" in text


def test_check_finds_truncated_image_by_default(tmp_path):
    _pair(tmp_path, "1", 64, 64)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "images" / "1.png")
    data = (tmp_path / "images" / "1.png").read_bytes()
    (tmp_path / "images" / "1.png").write_bytes(data[: len(data) // 2])
    assert check_folder(tmp_path, deep=False).ok  # the header is intact: --quick misses it
    rep = check_folder(tmp_path)
    assert not rep.ok and str(tmp_path / "images" / "1.png") in rep.problems[0]
    assert main(["data", "check", str(tmp_path)]) == 1
    assert main(["data", "check", "--quick", str(tmp_path)]) == 0


def test_check_refuses_all_zero_masks(tmp_path, capsys):
    _pair(tmp_path, "1", fill=False)
    _pair(tmp_path, "2", fill=False)
    rep = check_folder(tmp_path)
    assert not rep.ok and rep.n_empty_masks == 2
    assert rep.problems == [f"{tmp_path / 'masks'}: all 2 mask(s) are empty (no lesion pixel); check that the masks "
                            f"are the lesion maps (white lesion on black) and not blank exports"]
    _pair(tmp_path, "3")  # one mask with a lesion: empty masks are allowed, counted
    assert check_folder(tmp_path).ok and check_folder(tmp_path).n_empty_masks == 2


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "e" / "images").mkdir(parents=True)
    (tmp_path / "e" / "masks").mkdir()
    assert check_folder(tmp_path / "e").problems == [
        f"{tmp_path / 'e' / 'images'}: empty folder, no images (.png, .jpg, .jpeg, .tif, .tiff, .bmp) found"]
    assert "folder not found" in check_folder(tmp_path / "nope").problems[0]
    (tmp_path / "flat").mkdir()
    assert "no images/ subfolder" in check_folder(tmp_path / "flat").problems[0]


def test_cli_exit_codes_and_messages(tmp_path, capsys):
    _pair(tmp_path / "good", "1")
    assert main(["data", "check", str(tmp_path / "good")]) == 0
    assert "1 pairs" in capsys.readouterr().out
    _pair(tmp_path / "bad", "1", mask=False)
    _pair(tmp_path / "bad", "2", fill=False)
    assert main(["data", "check", str(tmp_path / "bad"), "--require-nonempty-masks"]) == 1
    out = capsys.readouterr().out
    assert "2 problem(s)" in out and "images/1.png: no mask" in out and "masks/2.png: empty mask" in out


@pytest.mark.realdata
def test_real_polyp_datasets(real_data, capsys):
    clinic = check_folder(real_data / "polyp" / "CVC-ClinicDB")
    colon = check_folder(real_data / "polyp" / "CVC-ColonDB")
    assert clinic.ok and clinic.n_pairs == 550 and clinic.sizes == {"384x288": 550}
    assert colon.ok and colon.n_pairs == 380 and colon.sizes == {"574x500": 380}
    assert colon.n_empty_masks == 0 and 0.01 < colon.coverage_mean < 0.3
    assert main(["data", "check", str(real_data / "polyp" / "CVC-ClinicDB")]) == 0
    assert "550 pairs" in capsys.readouterr().out
