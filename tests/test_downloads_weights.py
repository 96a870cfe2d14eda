"""Downloads (file:// URLs, checksums, offline), archives, the dataset fetch registry and the
weights registry, all offline with files the tests make."""

import hashlib
import io
import tarfile
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from stylseg import weights
from stylseg.cli import main
from stylseg.data import fetch as fetch_mod
from stylseg.data.fetch import DatasetEntry, RemoteFile, fetch_dataset
from stylseg.downloads import download_url, extract, fetch, is_offline, verify
from stylseg.utils import StylsegError


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def payload(tmp_path):
    p = tmp_path / "src" / "blob.bin"
    p.parent.mkdir()
    data = b"stylseg weights " * 1000
    p.write_bytes(data)
    return p, data


# --------------------------------------------------------------------------- downloads
def test_file_url_download_verified(tmp_path, payload):
    src, data = payload
    dest = download_url(src.as_uri(), tmp_path / "out" / "blob.bin", sha256=_sha(data), progress=False)
    assert dest.read_bytes() == data
    assert download_url(src.as_uri(), dest, sha256=_sha(data)) == dest  # present: verified and kept
    assert verify(dest, sha256_prefix=_sha(data)[:8]) == _sha(data)


def test_wrong_checksum_leaves_nothing_behind(tmp_path, payload):
    src, data = payload
    dest = tmp_path / "out" / "blob.bin"
    with pytest.raises(StylsegError, match=r"checksum mismatch, expected sha256 0{64} but the download has "
                       + _sha(data)) as e:
        download_url(src.as_uri(), dest, sha256="0" * 64, progress=False)
    assert not dest.exists() and not list(dest.parent.iterdir())
    # the message names the source and the destination, never the temporary file it already deleted
    msg = str(e.value)
    assert msg.startswith(src.as_uri()) and f"nothing was written to {dest}" in msg and ".tmp" not in msg
    with pytest.raises(StylsegError, match=r"expected sha256 deadbeef\.\.\."):
        download_url(src.as_uri(), dest, sha256_prefix="deadbeef")


def test_offline_fails_at_once_naming_url_and_path(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLSEG_OFFLINE", "1")
    assert is_offline()
    dest = tmp_path / "w" / "model.pth"
    t = time.time()
    with pytest.raises(StylsegError) as e:
        download_url("https://example.org/model.pth", dest, sha256="ab" * 32)
    assert time.time() - t < 1.0
    msg = str(e.value)
    assert "offline" in msg and "https://example.org/model.pth" in msg and str(dest) in msg and "ab" * 32 in msg
    with pytest.raises(StylsegError, match=r"Hugging Face repository timm/x.*put it at"):
        fetch("hf://timm/x/model.safetensors", tmp_path / "m.safetensors")


def test_unreachable_host_fails_naming_url(tmp_path, monkeypatch):
    monkeypatch.delenv("STYLSEG_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("STYLSEG_DOWNLOAD_TIMEOUT", "2")
    dest = tmp_path / "x.bin"
    with pytest.raises(StylsegError, match=r"cannot download http://127\.0\.0\.1:9/x\.bin .*put it at " + str(dest)):
        download_url("http://127.0.0.1:9/x.bin", dest, progress=False)
    with pytest.raises(StylsegError, match="unsupported scheme 'ftp'"):
        download_url("ftp://host/x", dest)
    with pytest.raises(StylsegError, match="file not found"):
        download_url((tmp_path / "absent.bin").as_uri(), dest)


def _zip(path, files):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def _png_bytes(arr):
    b = io.BytesIO()
    Image.fromarray(arr).save(b, format="PNG")
    return b.getvalue()


def test_extract_zip_and_tar_atomically(tmp_path):
    z = _zip(tmp_path / "a.zip", {"top/x.txt": b"x", "top/sub/y.txt": b"y"})
    out = extract(z, tmp_path / "out")
    assert (out / "top" / "x.txt").read_bytes() == b"x" and (out / "top" / "sub" / "y.txt").read_bytes() == b"y"
    (out / "top" / "x.txt").write_bytes(b"changed")
    extract(z, tmp_path / "out")  # done: not extracted again
    assert (out / "top" / "x.txt").read_bytes() == b"changed"
    t = tmp_path / "b.tar.gz"
    with tarfile.open(t, "w:gz") as tf:
        info = tarfile.TarInfo("d/z.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"z"))
    assert (extract(t, tmp_path / "out2") / "d" / "z.txt").read_bytes() == b"z"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".extract-")]


def test_extract_refuses_path_traversal_and_corrupt_archives(tmp_path):
    z = _zip(tmp_path / "evil.zip", {"../../escape.txt": b"x"})
    with pytest.raises(StylsegError, match=r"outside .*refusing"):
        extract(z, tmp_path / "out")
    assert not (tmp_path.parent / "escape.txt").exists()
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK not really")
    with pytest.raises(StylsegError, match=r"bad\.zip: cannot extract.*delete it and fetch again"):
        extract(bad, tmp_path / "out3")


# --------------------------------------------------------------------------- dataset fetch
def _kvasir_zip(path):
    m = np.zeros((10, 12), np.uint8)
    m[2:6, 3:8] = 255
    files = {}
    for n in ("cju1", "cju2"):
        files[f"Kvasir-SEG/images/{n}.png"] = _png_bytes(np.full((10, 12, 3), 99, np.uint8))
        files[f"Kvasir-SEG/masks/{n}.png"] = _png_bytes(m)
    return _zip(path, files)


def test_fetch_dataset_from_file_url(tmp_path, monkeypatch):
    z = _kvasir_zip(tmp_path / "kvasir.zip")
    entry = DatasetEntry("tiny-kvasir", "test", (RemoteFile(z.as_uri(), "kvasir.zip", _sha(z.read_bytes())),),
                         layout="kvasir-seg")
    monkeypatch.setitem(fetch_mod.FETCH._items, "tiny-kvasir", entry)
    root = fetch_dataset("tiny-kvasir", tmp_path / "dest", progress=False)
    assert root == tmp_path / "dest" / "Kvasir-SEG" and len(list((root / "images").iterdir())) == 2
    assert fetch_dataset("tiny-kvasir", tmp_path / "dest") == root  # rerun: nothing to do
    bad = DatasetEntry("bad-kvasir", "test", (RemoteFile(z.as_uri(), "k2.zip", "1" * 64),), layout="kvasir-seg")
    monkeypatch.setitem(fetch_mod.FETCH._items, "bad-kvasir", bad)
    with pytest.raises(StylsegError, match="checksum mismatch"):
        fetch_dataset("bad-kvasir", tmp_path / "dest2")
    wrong = DatasetEntry("wrong", "test", (RemoteFile(z.as_uri(), "k3.zip"),), layout="ham10000")
    monkeypatch.setitem(fetch_mod.FETCH._items, "wrong", wrong)
    with pytest.raises(StylsegError, match=r"do not look like layout ham10000"):
        fetch_dataset("wrong", tmp_path / "dest3")


def test_fetch_manual_dataset_says_where_to_put_files(tmp_path, monkeypatch):
    with pytest.raises(StylsegError) as e:
        fetch_dataset("ham10000", tmp_path / "d")
    msg = str(e.value)
    assert "by hand" in msg and "https://doi.org/10.7910/DVN/DBW86T" in msg
    assert "HAM10000_images_part_1.zip -> " in msg and "downloads/ham10000/HAM10000_images_part_1.zip" in msg


def test_fetch_real_entry_offline_names_url(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STYLSEG_OFFLINE", "1")
    t = time.time()
    assert main(["data", "fetch", "kvasir-seg", "--dest", str(tmp_path / "k")]) == 2
    err = capsys.readouterr().err
    assert time.time() - t < 2 and "https://datasets.simula.no/downloads/kvasir-seg.zip" in err
    assert "downloads/kvasir-seg/kvasir-seg.zip" in err
    assert main(["data", "fetch", "nope"]) == 2
    assert "unknown dataset 'nope'; valid names:" in capsys.readouterr().err


# --------------------------------------------------------------------------- weights
def test_registry_entries_agree_with_open_clip_and_torchvision():
    import open_clip

    cfg = open_clip.get_pretrained_cfg("ViT-B-32", "openai")
    e = weights.WEIGHTS.get("clip-vit-b-32-openai")
    assert e.url == cfg["url"] and e.sha256 == cfg["url"].split("/")[-2]
    tv = pytest.importorskip("torchvision.models")
    for name, w in (("resnet18", tv.ResNet18_Weights), ("resnet34", tv.ResNet34_Weights),
                    ("resnet50", tv.ResNet50_Weights)):
        e = weights.WEIGHTS.get(f"{name}-imagenet")
        assert e.url == w.IMAGENET1K_V1.url and e.url.endswith(f"-{e.sha256_prefix}.pth")
    assert weights.WEIGHTS.get("res2net50d-imagenet").hf_repo == "timm/res2net50d.in1k"
    assert {"clip-vit-b-32-openai", "resnet18-imagenet", "resnet34-imagenet", "resnet50-imagenet",
            "res2net50d-imagenet"} <= set(weights.WEIGHTS.names())


def test_resolve_missing_says_how_to_get_it():
    p = weights.path("resnet18-imagenet")
    with pytest.raises(StylsegError) as e:
        weights.resolve("resnet18-imagenet")
    msg = str(e.value)
    assert f"weights resnet18-imagenet not found at {p}" in msg
    assert "run `stylseg weights fetch resnet18-imagenet` on a machine with internet" in msg
    assert "download https://download.pytorch.org/models/resnet18-f37072fd.pth and put it at" in msg
    with pytest.raises(StylsegError, match=r"unknown weights 'vgg'; valid names: clip-vit-b-32-openai"):
        weights.resolve("vgg")


def test_fetch_and_resolve_with_a_local_entry(tmp_path, monkeypatch, payload):
    src, data = payload
    entry = weights.WeightsEntry("tiny", "tiny-" + _sha(data)[:8] + ".pth", "test weights", url=src.as_uri(),
                                 sha256_prefix=_sha(data)[:8])
    monkeypatch.setitem(weights.WEIGHTS._items, "tiny", entry)
    p = weights.fetch("tiny", progress=False)
    assert p == weights.path("tiny") and p.read_bytes() == data and weights.resolve("tiny") == p
    assert str(p).startswith(str(tmp_path.parent.parent)) or "weights" in str(p)
    rows = {r["name"]: r for r in weights.list_weights()}
    assert rows["tiny"]["present"] and not rows["resnet18-imagenet"]["present"]
    assert rows["res2net50d-imagenet"]["checksum"].startswith("no published checksum")
    bad = weights.WeightsEntry("tiny-bad", "t.pth", "x", url=src.as_uri(), sha256="f" * 64)
    monkeypatch.setitem(weights.WEIGHTS._items, "tiny-bad", bad)
    with pytest.raises(StylsegError, match="checksum mismatch"):
        weights.fetch("tiny-bad")
    assert not weights.path("tiny-bad").exists()


def test_weights_cli(tmp_path, monkeypatch, capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "clip-vit-b-32-openai" in out and "[missing]" in out and "no published checksum" in out
    assert "only this prefix is published" in out
    assert main(["weights", "path", "resnet34-imagenet"]) == 1
    assert capsys.readouterr().out.strip().endswith("resnet34-imagenet/resnet34-b627a593.pth")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.time()
    assert main(["weights", "fetch", "res2net50d-imagenet"]) == 2
    err = capsys.readouterr().err
    assert time.time() - t < 2 and "timm/res2net50d.in1k" in err and "model.safetensors" in err
