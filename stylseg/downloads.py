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


def verify(path: os.PathLike, sha256: Optional[str] = None, sha256_prefix: Optional[str] = None,
           source: Optional[str] = None, dest: Optional[os.PathLike] = None) -> str:
    """Check a file's sha256 (full, or a prefix); returns the digest or raises
    :class:`StylsegError` naming the file, the expected and the actual digest.

    For a download checked before it is moved into place, pass ``source`` (the URL) and ``dest`` (the final
    path): the message then names those, not the temporary file (which is deleted), and says that nothing
    was written."""
    path = Path(path)
    digest = sha256_file(path)
    exp = (sha256 or "").lower()
    pre = (sha256_prefix or "").lower()
    if (exp and digest != exp) or (pre and not digest.startswith(pre)):
        want = f"sha256 {exp or pre + '...'}"
        if dest is not None:
            raise StylsegError(f"{source or path}: checksum mismatch, expected {want} but the download has {digest}; "
                               f"it was discarded and nothing was written to {dest}. The source now serves another "
                               f"file (or the transfer was corrupted): try again, or get the file with that checksum "
                               f"by hand and put it at {dest}")
        raise StylsegError(f"{path}: checksum mismatch, expected {want} but the file has "
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
            verify(tmp, sha256, sha256_prefix, source=url, dest=dest)
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
            verify(tmp, sha256, sha256_prefix, source=url, dest=dest)
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
        verify(tmp, sha256, sha256_prefix, source=url, dest=dest)
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


def extract_limit_bytes() -> int:
    """The most an archive may unpack to: ``STYLSEG_EXTRACT_LIMIT_GB`` (default 64) GiB."""
    try:
        gb = float(os.environ.get("STYLSEG_EXTRACT_LIMIT_GB", "64"))
    except ValueError:
        raise StylsegError(f"STYLSEG_EXTRACT_LIMIT_GB={os.environ['STYLSEG_EXTRACT_LIMIT_GB']!r}: expected a number "
                           f"of GiB") from None
    return int(gb * (1 << 30))


def _too_big(archive: Path, total: int, limit: int) -> StylsegError:
    return StylsegError(f"{archive}: unpacks to more than {limit / (1 << 30):.3g} GiB ({total / (1 << 30):.3g} GiB "
                        f"or more); refusing to extract it (a damaged or malicious archive?). If it is right, raise "
                        f"the limit with STYLSEG_EXTRACT_LIMIT_GB")


def _copy_capped(src, dst: Path, budget: list, archive: Path, limit: int) -> None:
    """Copy a member's stream to ``dst`` (a new file, plain permissions), counting against ``budget[0]``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "wb") as out:
        for block in iter(lambda: src.read(1 << 20), b""):
            budget[0] += len(block)
            if budget[0] > limit:
                raise _too_big(archive, budget[0], limit)
            out.write(block)


def _move_into(src: Path, dest: Path) -> None:
    """Move the tree ``src`` into ``dest``, merging folders; never writes through a link in ``dest``."""
    for p in sorted(src.iterdir()):
        target = dest / p.name
        if target.is_symlink():
            raise StylsegError(f"{target}: a symbolic link is in the way of the archive's {p.name}; extraction never "
                               f"writes through links: remove the link (or extract elsewhere with --dest) and rerun")
        if p.is_dir() and target.is_dir():
            _move_into(p, target)
            continue
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        shutil.move(str(p), str(target))


def extract(archive: os.PathLike, dest: os.PathLike, max_bytes: Optional[int] = None) -> Path:
    """Extract a zip or tar archive into ``dest`` safely: no member outside ``dest``, no links or device
    files, no setuid/setgid/sticky bits (files get plain permissions under the umask), at most
    ``max_bytes`` unpacked (default :func:`extract_limit_bytes`), and never through a symbolic link
    already in ``dest``.

    Atomic: members go to a temporary folder next to ``dest`` and are moved in when all are
    out; ``dest/.extracted-<archive name>`` marks a finished extraction, so a second call is
    free. Returns ``dest``.
    """
    archive, dest = Path(archive), Path(dest)
    limit = extract_limit_bytes() if max_bytes is None else int(max_bytes)
    marker = dest / f".extracted-{archive.name}"
    if marker.is_file():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest.parent))
    budget = [0]
    try:
        name = archive.name.lower()
        try:
            if name.endswith(".zip"):
                with zipfile.ZipFile(archive) as z:
                    infos = z.infolist()
                    for m in infos:
                        _safe_target(tmp, m.filename)
                    declared = sum(m.file_size for m in infos)
                    if declared > limit:
                        raise _too_big(archive, declared, limit)
                    for m in infos:
                        if m.is_dir():
                            (tmp / m.filename).mkdir(parents=True, exist_ok=True)
                            continue
                        if (m.external_attr >> 16) & 0o170000 == 0o120000:  # a symlink stored by Unix zip
                            continue
                        with z.open(m) as src:
                            _copy_capped(src, _safe_target(tmp, m.filename), budget, archive, limit)
            else:
                with tarfile.open(archive) as t:
                    members = []
                    for m in t.getmembers():
                        _safe_target(tmp, m.name)
                        if not (m.isfile() or m.isdir()):  # links, devices, fifos
                            continue
                        members.append(m)
                    declared = sum(m.size for m in members if m.isfile())
                    if declared > limit:
                        raise _too_big(archive, declared, limit)
                    for m in members:
                        target = _safe_target(tmp, m.name)
                        if m.isdir():
                            target.mkdir(parents=True, exist_ok=True)
                            continue
                        src = t.extractfile(m)
                        if src is not None:
                            with src:
                                _copy_capped(src, target, budget, archive, limit)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, RuntimeError) as e:
            raise StylsegError(f"{archive}: cannot extract ({e}); the archive is corrupt or incomplete: delete it "
                               f"and fetch again") from None
        _move_into(tmp, dest)
        marker.write_text("ok\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
