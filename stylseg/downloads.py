"""Downloads that never surprise: a URL (``http(s)://``, ``file://``) or a Hugging Face hub
file, verified against a sha256 (or the sha256 prefix a file name embeds), cached, written
atomically, and archives (zip, tar, tar.gz/bz2/xz) extracted safely.

Offline (``STYLSEG_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``) a remote download fails at once;
online it gives up after ``STYLSEG_DOWNLOAD_TIMEOUT`` seconds (default 20) without an
answer. Either way the :class:`~stylseg.utils.StylsegError` names the URL and the exact
local path where the file can be put by hand; the next call then finds it there.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Optional

from .utils import StylsegError, atomic_path, cache_dir, sha256_file

TRUTHY = ("1", "true", "yes", "on")


def is_offline() -> bool:
    """True when ``STYLSEG_OFFLINE`` or ``HF_HUB_OFFLINE`` is set to a true value."""
    return any(os.environ.get(k, "").strip().lower() in TRUTHY for k in ("STYLSEG_OFFLINE", "HF_HUB_OFFLINE"))


def timeout_s() -> float:
    return float(os.environ.get("STYLSEG_DOWNLOAD_TIMEOUT", "20"))


def downloads_dir() -> Path:
    """``<cache>/downloads``: where archives are kept."""
    return cache_dir() / "downloads"


def _by_hand(url: str, dest: Path, sha256: Optional[str], prefix: Optional[str]) -> str:
    chk = f" (sha256 {sha256})" if sha256 else (f" (sha256 starting {prefix})" if prefix else " (no checksum known)")
    return f"download {url} on a machine with internet and put it at {dest}{chk}; then run the same command again"


def verify(path: os.PathLike, sha256: Optional[str] = None, sha256_prefix: Optional[str] = None) -> str:
    """Check a file's sha256 (full, or a prefix); returns the digest or raises
    :class:`StylsegError` naming the file, the expected and the actual digest."""
    path = Path(path)
    digest = sha256_file(path)
    exp = (sha256 or "").lower()
    pre = (sha256_prefix or "").lower()
    if (exp and digest != exp) or (pre and not digest.startswith(pre)):
        raise StylsegError(f"{path}: checksum mismatch, expected sha256 {exp or pre + '...'} but the file has "
                           f"{digest}; the file is corrupt or another version: delete it and fetch again")
    return digest


def _file_url_path(url: str) -> Path:
    p = urllib.parse.urlparse(url)
    return Path(urllib.request.url2pathname(p.path))


def download_url(url: str, dest: os.PathLike, sha256: Optional[str] = None, sha256_prefix: Optional[str] = None,
                 progress: bool = True, timeout: Optional[float] = None) -> Path:
    """Download ``url`` to ``dest`` (atomically) and verify it; returns ``dest``.

    A ``dest`` already present and matching the checksum is kept (a mismatch raises). Remote
    URLs fail at once when offline, and after ``timeout`` seconds without an answer.
    """
    dest = Path(dest)
    if dest.is_file():
        verify(dest, sha256, sha256_prefix)
        return dest
    scheme = urllib.parse.urlparse(url).scheme
    if scheme == "file":
        src = _file_url_path(url)
        if not src.is_file():
            raise StylsegError(f"{src}: file not found (from {url}); {_by_hand(url, dest, sha256, sha256_prefix)}")
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
            verify(tmp, sha256, sha256_prefix)
        return dest
    if scheme not in ("http", "https"):
        raise StylsegError(f"cannot download {url!r}: unsupported scheme {scheme!r} (use http, https or file)")
    if is_offline():
        raise StylsegError(f"offline (STYLSEG_OFFLINE / HF_HUB_OFFLINE is set): cannot download {url}; "
                           f"{_by_hand(url, dest, sha256, sha256_prefix)}")
    from tqdm.auto import tqdm

    req = urllib.request.Request(url, headers={"User-Agent": "stylseg"})
    try:
        with urllib.request.urlopen(req, timeout=timeout or timeout_s()) as r, atomic_path(dest) as tmp:
            total = int(r.headers.get("Content-Length") or 0) or None
            with open(tmp, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                                            disable=not progress, leave=False) as bar:
                for block in iter(lambda: r.read(1 << 20), b""):
                    f.write(block)
                    bar.update(len(block))
            verify(tmp, sha256, sha256_prefix)
    except StylsegError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise StylsegError(f"cannot download {url} ({reason}); {_by_hand(url, dest, sha256, sha256_prefix)}") from None
    return dest


def download_hf(repo_id: str, filename: str, dest: os.PathLike, revision: Optional[str] = None,
                sha256: Optional[str] = None, sha256_prefix: Optional[str] = None) -> Path:
    """Fetch ``filename`` of the Hugging Face hub repository ``repo_id`` to ``dest`` (a copy
    out of the hub cache, atomically) and verify it. Fails at once when offline."""
    dest = Path(dest)
    url = f"https://huggingface.co/{repo_id}/resolve/{revision or 'main'}/{filename}"
    if dest.is_file():
        verify(dest, sha256, sha256_prefix)
        return dest
    if is_offline():
        raise StylsegError(f"offline (STYLSEG_OFFLINE / HF_HUB_OFFLINE is set): cannot fetch {filename} of the "
                           f"Hugging Face repository {repo_id}; {_by_hand(url, dest, sha256, sha256_prefix)}")
    try:
        from huggingface_hub import hf_hub_download

        os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(int(timeout_s())))
        os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(int(timeout_s())))
        got = hf_hub_download(repo_id, filename, revision=revision, cache_dir=str(cache_dir() / "hf"))
    except Exception as e:  # the hub raises many types (offline, 404, gated, timeouts)
        raise StylsegError(f"cannot fetch {filename} from the Hugging Face hub repository {repo_id} "
                           f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                           f"{_by_hand(url, dest, sha256, sha256_prefix)}") from None
    with atomic_path(dest) as tmp:
        shutil.copyfile(got, tmp)
        verify(tmp, sha256, sha256_prefix)
    return dest


def fetch(source: str, dest: os.PathLike, sha256: Optional[str] = None, sha256_prefix: Optional[str] = None,
          progress: bool = True) -> Path:
    """Generic fetch: ``source`` is a URL or ``hf://OWNER/REPO/PATH/IN/REPO`` (a hub file)."""
    if source.startswith("hf://"):
        parts = source[5:].split("/")
        if len(parts) < 3:
            raise StylsegError(f"hub source {source!r} should read hf://OWNER/REPO/FILE")
        return download_hf("/".join(parts[:2]), "/".join(parts[2:]), dest, sha256=sha256, sha256_prefix=sha256_prefix)
    return download_url(source, dest, sha256=sha256, sha256_prefix=sha256_prefix, progress=progress)


# --------------------------------------------------------------------------- archives
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def is_archive(path: os.PathLike) -> bool:
    name = Path(path).name.lower()
    return name.endswith(ARCHIVE_SUFFIXES)


def _safe_target(root: Path, member: str) -> Path:
    target = (root / member).resolve()
    if root.resolve() != target and root.resolve() not in target.parents:
        raise StylsegError(f"archive member {member!r} would be written outside {root}; refusing to extract it")
    return target


def extract(archive: os.PathLike, dest: os.PathLike) -> Path:
    """Extract a zip or tar archive into ``dest`` safely (no member outside ``dest``, no links).

    Atomic: members go to a temporary folder next to ``dest`` and are moved in when all are
    out; ``dest/.extracted-<archive name>`` marks a finished extraction, so a second call is
    free. Returns ``dest``.
    """
    archive, dest = Path(archive), Path(dest)
    marker = dest / f".extracted-{archive.name}"
    if marker.is_file():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest.parent))
    try:
        name = archive.name.lower()
        try:
            if name.endswith(".zip"):
                with zipfile.ZipFile(archive) as z:
                    for m in z.infolist():
                        _safe_target(tmp, m.filename)
                    z.extractall(tmp)
            else:
                with tarfile.open(archive) as t:
                    members = []
                    for m in t.getmembers():
                        _safe_target(tmp, m.name)
                        if m.issym() or m.islnk() or m.isdev():
                            continue
                        members.append(m)
                    t.extractall(tmp, members=members)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
            raise StylsegError(f"{archive}: cannot extract ({e}); the archive is corrupt or incomplete: delete it "
                               f"and fetch again") from None
        for p in tmp.iterdir():
            target = dest / p.name
            if target.exists():
                if target.is_dir() and p.is_dir():
                    shutil.copytree(p, target, dirs_exist_ok=True)
                    continue
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink()
            shutil.move(str(p), str(target))
        marker.write_text("ok\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
