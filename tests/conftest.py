"""Shared fixtures: 2 torch threads, offline, real data when present (skipped with a reason)."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("STYLSEG_THREADS", "2")


@pytest.fixture(autouse=True, scope="session")
def _threads():
    import torch

    torch.set_num_threads(int(os.environ.get("STYLSEG_THREADS", "2")))
    yield


def _real_root():
    env = os.environ.get("STYLSEG_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """``../shared/data`` (or $STYLSEG_DATA_DIR) holding polyp/CVC-ClinicDB and polyp/CVC-ColonDB."""
    root = _real_root()
    if not (root / "polyp" / "CVC-ClinicDB" / "images").is_dir():
        pytest.skip(f"real polyp data not found at {root} (set STYLSEG_DATA_DIR to a folder holding polyp/CVC-ClinicDB)")
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep caches and weights of tests out of the user's home."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("STYLSEG_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("STYLSEG_WEIGHTS_DIR", str(base / "weights"))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and far faster on a shared, oversubscribed CPU)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
