"""Known public layouts, read from tiny fake folders shaped like the real downloads."""

import numpy as np
import pytest
from PIL import Image

from stylseg.cli import main
from stylseg.data import LAYOUTS, check_folder, materialise, open_layout
from stylseg.data.layouts import detect_layout
from stylseg.utils import StylsegError


def _img(path, h=12, w=16, value=None, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8) if value is None else \
        np.full((h, w, 3), value, np.uint8)
    Image.fromarray(arr).save(path)


def _mask(path, h=12, w=16, rgb=False, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros((h, w), np.uint8)
    m[2:8, 3:9] = 255
    Image.fromarray(np.repeat(m[..., None], 3, 2) if rgb else m).save(path, **kw)


def build(name, root):
    """A tiny fake of each layout; returns the folder to pass and the expected names."""
    if name == "pranet-train":
        for n in ("1", "cju0qkwl35piu0993l0dewei2"):
            _img(root / "TrainDataset" / "images" / f"{n}.png")
            _mask(root / "TrainDataset" / "masks" / f"{n}.png")
        return root, ["1", "cju0qkwl35piu0993l0dewei2"]
    if name == "pranet-test":
        for sub in ("CVC-300", "Kvasir"):
            for n in ("150", "151"):
                _img(root / "TestDataset" / sub / "images" / f"{n}.png")
                _mask(root / "TestDataset" / sub / "masks" / f"{n}.png")
        return root, ["CVC-300_150", "CVC-300_151", "Kvasir_150", "Kvasir_151"]
    if name == "cvc-colondb-tiff":
        for n in (1, 2, 10):
            _img(root / "CVC-ColonDB" / f"{n}.tiff")
            _mask(root / "CVC-ColonDB" / f"p{n}.tiff")
        return root, ["1", "2", "10"]
    if name == "cvc-clinicdb-original":
        for n in (1, 2):
            _img(root / "CVC-ClinicDB" / "Original" / f"{n}.tif")
            _mask(root / "CVC-ClinicDB" / "Ground Truth" / f"{n}.tif")
        return root, ["1", "2"]
    if name == "kvasir-seg":
        for n in ("cju0qoxqj9q6s0835b43399p4", "cju0roawvklrq0799vmjorwfv"):
            _img(root / "Kvasir-SEG" / "images" / f"{n}.jpg")
            _mask(root / "Kvasir-SEG" / "masks" / f"{n}.jpg", rgb=True, quality=50)
        (root / "Kvasir-SEG" / "kavsir_bboxes.json").write_text("{}")
        return root, ["cju0qoxqj9q6s0835b43399p4", "cju0roawvklrq0799vmjorwfv"]
    if name == "ham10000":
        for n, part in (("ISIC_0024306", 1), ("ISIC_0034320", 2)):
            _img(root / f"HAM10000_images_part_{part}" / f"{n}.jpg")
            _mask(root / "HAM10000_segmentations_lesion_tschandl" / f"{n}_segmentation.png")
        return root, ["ISIC_0024306", "ISIC_0034320"]
    if name == "isic2018-task1":
        for n in ("ISIC_0000000", "ISIC_0000001"):
            _img(root / "ISIC2018_Task1-2_Training_Input" / f"{n}.jpg")
            _mask(root / "ISIC2018_Task1_Training_GroundTruth" / f"{n}_segmentation.png")
        (root / "ISIC2018_Task1-2_Training_Input" / "ATTRIBUTION.txt").write_text("x")
        (root / "ISIC2018_Task1-2_Training_Input" / "LICENSE.txt").write_text("x")
        return root, ["ISIC_0000000", "ISIC_0000001"]
    if name == "paired":
        for n in ("a", "b"):
            _img(root / "images" / f"{n}.png")
            _mask(root / "masks" / f"{n}.png")
        return root, ["a", "b"]
    raise KeyError(name)


ALL = ["pranet-train", "pranet-test", "cvc-colondb-tiff", "cvc-clinicdb-original", "kvasir-seg", "ham10000",
       "isic2018-task1", "paired"]


def test_registry_lists_all_layouts():
    assert set(ALL) <= set(LAYOUTS.names())


@pytest.mark.parametrize("name", ALL)
def test_each_layout_reads_and_materialises(tmp_path, name):
    root, names = build(name, tmp_path / "dl")
    pairs = open_layout(name, root)
    assert len(pairs) == len(names)
    for img, mask in pairs:
        assert img.is_file() and mask.is_file()
    out = materialise(name, root, tmp_path / "paired", size=8, progress=False)
    rep = check_folder(out)
    assert rep.ok and rep.n_pairs == len(names) and rep.sizes == {"8x8": len(names)}
    assert sorted(p.stem for p in (out / "images").iterdir()) == sorted(names)
    m = np.asarray(Image.open(out / "masks" / f"{names[0]}.png"))
    assert set(np.unique(m)) <= {0, 255} and (m == 255).any()
    assert detect_layout(root) == name or (name == "pranet-train" and detect_layout(root) in ("pranet-train",))


def test_pranet_test_subsets(tmp_path):
    root, _ = build("pranet-test", tmp_path)
    assert [p[0].parent.parent.name for p in open_layout("pranet-test", root, subset="Kvasir")] == ["Kvasir"] * 2
    assert len(open_layout("pranet-test", root / "TestDataset" / "CVC-300")) == 2  # a subset folder directly
    with pytest.raises(StylsegError, match=r"unknown subset 'CVC-612'.*valid subsets: CVC-300, CVC-ClinicDB"):
        open_layout("pranet-test", root, subset="CVC-612")


def test_missing_masks_in_a_layout_are_named(tmp_path):
    root, _ = build("cvc-colondb-tiff", tmp_path)
    (root / "CVC-ColonDB" / "p2.tiff").unlink()
    with pytest.raises(StylsegError, match=r"1 image\(s\) without a mask: 2\.tiff.*pN\.tiff"):
        open_layout("cvc-colondb-tiff", root)
    root, _ = build("ham10000", tmp_path / "h")
    (root / "HAM10000_segmentations_lesion_tschandl" / "ISIC_0034320_segmentation.png").unlink()
    with pytest.raises(StylsegError, match=r"ISIC_0034320\.jpg.*_segmentation\.png"):
        open_layout("ham10000", root)


def test_wrong_folder_and_unknown_layout(tmp_path):
    root, _ = build("kvasir-seg", tmp_path / "k")
    with pytest.raises(StylsegError, match=r"not a ham10000 folder; expected HAM10000_images_part_1.*found: Kvasir-SEG/"):
        open_layout("ham10000", root)
    with pytest.raises(StylsegError, match=r"unknown dataset layout 'cvc-612'; valid names: .*kvasir-seg.*pranet-test"):
        open_layout("cvc-612", root)
    with pytest.raises(StylsegError, match="folder not found"):
        open_layout("kvasir-seg", tmp_path / "absent")


def test_cli_list_and_convert(tmp_path, capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in ALL:
        assert name in out
    assert "polyp/clinic (default source)" in out and "skin/derm_pink (default target)" in out
    root, names = build("isic2018-task1", tmp_path / "isic")
    assert main(["data", "convert", "isic2018-task1", str(root), "--out", str(tmp_path / "o"), "--size", "10"]) == 0
    assert check_folder(tmp_path / "o").sizes == {"10x10": 2}
