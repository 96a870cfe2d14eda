"""One writer at a time per run-folder stage.

``with stage_lock(out_dir, "seg train"):`` holds ``out_dir/.stylseg.lock`` for the stage's
whole run. A second writer into the same folder stops at once with a :class:`StylsegError`
naming the process that holds it (pid, host, command, since when). The lock is an OS file
lock (``fcntl.flock``) on that file: the kernel drops it when its process dies, however it
dies (SIGKILL included), so a lock left by a killed process is taken over by the next writer
without any guessing; the file's text (pid, host, command) is only for the message.
On entry the folder's temporary files left by killed writers are removed, and a folder inside a
run folder of another format (:func:`stylseg.layout.check_run_format`) is refused.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .utils import StylsegError, _host, clean_stale_tmp

LOCK_FILE = ".stylseg.lock"


def _describe(text: str) -> str:
    try:
        d = json.loads(text)
        return (f"process {d.get('pid')} on {d.get('host')} ({d.get('stage')}, since {d.get('since')}: "
                f"{d.get('command')})")
    except (ValueError, AttributeError):
        return "another process"


@contextmanager
def stage_lock(folder: os.PathLike, stage: str = "") -> Iterator[Path]:
    """Hold ``folder/.stylseg.lock`` while the body runs (``folder`` is created, and removed again when the body
    wrote nothing in it). Raises :class:`StylsegError` at once when another live process holds it."""
    from .layout import check_enclosing_run

    folder = Path(folder)
    check_enclosing_run(folder)  # a stage writing into a run folder of another format stops before writing
    made = [q for q in [folder, *folder.parents] if not q.exists()]  # removed again if the stage writes nothing
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no OS lock; run as before
        yield path
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = _describe(os.pread(fd, 4096, 0).decode(errors="replace"))
            finally:
                os.close(fd)
            raise StylsegError(f"{folder}: {holder} is writing into this folder ({path} is held); wait for it to "
                               f"finish, or stop it, or write into another --out folder. Two writers into one "
                               f"folder would mix their results") from None
        # the holder before us may have removed the file after we opened it: lock the file that is there now
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        info = {"pid": os.getpid(), "host": _host(), "stage": stage, "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        clean_stale_tmp(folder, recursive=True)
        yield path
    finally:
        try:
            os.unlink(path)  # while still holding it, so that no one locks a file that is going away
        except FileNotFoundError:
            pass
        os.close(fd)
        for q in made:  # a stage refused before writing anything leaves no empty folder behind
            try:
                q.rmdir()
            except OSError:
                break
