"""Resume files that cannot run code, and the fingerprints that decide whether a run may resume.

A resume file (``save_state`` / ``load_state``) is one safetensors file: every tensor of the state
(model, optimizer moments, RNG states ...) is a tensor entry, and everything else (step counters,
history, settings, the fingerprint) is plain JSON in the safetensors header. Nothing is unpickled
on load, so a file planted in a shared run folder can at worst fail to load; it cannot run code.

The JSON part is read first (:func:`read_state_header`, no tensor is touched) and compared with
what the caller expects; only a matching file has its tensors loaded::

    save_state(path, {"model": sd, "step": 10, "rng": {...}}, fingerprint=fp)
    state = load_state(path, fingerprint=fp, what="diffae", hint="pass --no-resume to start over")

Input fingerprints (:func:`folder_fingerprint`): the names and content (sha256) of the files a
stage was made from, so that a resumed or skipped stage notices changed input.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence

import numpy as np

from .utils import StylsegError, _json_default, atomic_path, clean_stale_tmp

#: the safetensors header key holding the JSON part of a state file
FORMAT = "stylseg-state"
FORMAT_VERSION = 1
_MARKERS = ("__tensor__", "__tuple__", "__ndarray__", "__items__")


# --------------------------------------------------------------------------- encoding
def _encode(obj: Any, tensors: Dict[str, Any], seen: Dict[int, str]) -> Any:
    import torch

    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu")
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        if ptr is not None and ptr in seen or not t.is_contiguous():
            t = t.contiguous().clone()  # safetensors stores no shared or strided storage
        elif ptr is not None:
            seen[ptr] = "x"
        key = f"t{len(tensors)}"
        tensors[key] = t
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype), "shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, seen) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors, seen) for v in obj]
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) for k in obj) and not any(k in _MARKERS for k in obj):
            return {k: _encode(v, tensors, seen) for k, v in obj.items()}
        return {"__items__": [[_encode(k, tensors, seen), _encode(v, tensors, seen)] for k, v in obj.items()]}
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"a resume file holds tensors, numbers, strings, lists, tuples and dicts, not {type(obj).__name__}")


def _decode(obj: Any, tensors) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors(obj["__tensor__"])
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__ndarray__" in obj:
        return np.asarray(obj["__ndarray__"], dtype=obj["dtype"]).reshape(obj["shape"])
    if "__items__" in obj:
        return {_hashable(_decode(k, tensors)): _decode(v, tensors) for k, v in obj["__items__"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def _hashable(k: Any) -> Any:
    return tuple(_hashable(v) for v in k) if isinstance(k, (list, tuple)) else k


# --------------------------------------------------------------------------- save / load
def save_state(path: os.PathLike, state: Mapping[str, Any], *, fingerprint: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``state`` (nested dicts, lists and tuples of tensors, numpy arrays, numbers and strings; e.g.
    ``model.state_dict()``, ``opt.state_dict()``, ``torch.get_rng_state()``, ``np.random.get_state()``) as one
    safetensors file, atomically; ``fingerprint`` (JSON) is what :func:`load_state` checks before loading.
    Temporary files of earlier writers of ``path`` that were killed are removed."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors: Dict[str, Any] = {}
    skeleton = _encode(dict(state), tensors, {})
    header = {"format": FORMAT, "version": FORMAT_VERSION, "fingerprint": fingerprint, "state": skeleton}
    meta = {FORMAT: json.dumps(header, default=_json_default)}
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(path.parent, path.name)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_state_header(path: os.PathLike, hint: str = "") -> Dict[str, Any]:
    """The JSON part of a resume file (``{"format", "version", "fingerprint", "state"}``) without loading any
    tensor. A file that is not a stylseg resume file (a pickle, a truncated file ...) raises
    :class:`StylsegError` naming it; it is never unpickled."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
        header = json.loads(meta[FORMAT])
        if header.get("format") != FORMAT or not isinstance(header.get("state"), dict):
            raise ValueError("no stylseg state")
    except Exception:  # safetensors raises several types on foreign or corrupt files
        raise StylsegError(f"{path}: not a stylseg resume file (a safetensors file with a JSON header); it was not "
                           f"opened further (resume files are never unpickled). Delete it to start over"
                           + (f", or {hint}" if hint else "")) from None
    return header


def fingerprint_diff(old: Optional[Mapping[str, Any]], new: Mapping[str, Any]) -> str:
    """``"key: old -> new, ..."`` for the keys whose values differ (long values abbreviated)."""
    old = old or {}

    def short(v: Any) -> str:
        s = repr(v)
        return s if len(s) <= 60 else s[:57] + "..."

    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k}: {short(old.get(k))} -> {short(new.get(k))}" for k in keys if old.get(k) != new.get(k))


def is_rng_state(v: Any) -> bool:
    """Whether ``v`` is a random state as :func:`rng_state` records it (and :func:`set_rng_state` accepts): torch's
    byte tensor, numpy's MT19937 state (a dict, or the tuple ``np.random.get_state()`` gives) and Python's
    ``random.getstate()``; what a resume file's ``rng`` must hold."""
    import torch

    try:
        t, n, p = v["torch"], v["numpy"], v["python"]
        if isinstance(n, dict):
            n = (n["kind"], np.asarray(n["keys"], dtype=np.int64), n["pos"], n["has_gauss"], n["cached"])
        keys = np.asarray(n[1])
        return (isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.numel() == torch.get_rng_state().numel()
                and len(n) == 5 and n[0] == "MT19937" and keys.shape == (624,) and keys.dtype.kind in "iu"
                and bool(((keys >= 0) & (keys < 2 ** 32)).all()) and _int(n[2], 0, 624) and _int(n[3], 0, 1)
                and isinstance(n[4], (int, float)) and isinstance(p, (tuple, list)) and len(p) == 3 and p[0] == 3
                and isinstance(p[1], (tuple, list)) and len(p[1]) == 625
                and all(_int(x, 0, 2 ** 32 - 1) for x in p[1][:624]) and _int(p[1][624], 0, 624)
                and (p[2] is None or isinstance(p[2], float)))
    except (KeyError, TypeError, IndexError, ValueError):
        return False


def _int(x: Any, lo: int, hi: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi


def _check_types(state: Mapping[str, Any], types: Mapping[str, Any]) -> None:
    """Raise ``TypeError`` naming the first key of ``state`` whose value does not fit ``types`` (a key -> a type, a
    tuple of types, or a predicate); an int is never a bool here."""
    for key, want in types.items():
        v = state.get(key) if isinstance(state, Mapping) else None
        if isinstance(want, (type, tuple)):
            ok = isinstance(v, want) and not (isinstance(v, bool) and bool not in (want if isinstance(want, tuple)
                                                                                  else (want,)))
        else:
            ok = bool(want(v))
        if not ok:
            raise TypeError(f"{key!r} holds {type(v).__name__} {str(v)[:40]!r}, which no stylseg writer stores there")


def load_state(path: os.PathLike, *, fingerprint: Optional[Mapping[str, Any]] = None, what: str = "run",
               hint: str = "", device: str = "cpu", types: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Read a file written by :func:`save_state`. With ``fingerprint``, the file's fingerprint must equal it
    (compared before any tensor is loaded), else :class:`StylsegError` names each field that changed and
    ``hint`` (the flag that starts over). ``types``: what the state's top-level values must be (key -> type,
    tuple of types or predicate such as :func:`is_rng_state`); a value of another type means a damaged file.
    Returns the state with its tensors on ``device``."""
    from safetensors import safe_open

    path = Path(path)
    header = read_state_header(path, hint)
    if fingerprint is not None:
        want = json.loads(json.dumps(fingerprint, default=_json_default))
        if header.get("fingerprint") != want:
            raise StylsegError(f"{path}: this {what} was started from other input or settings "
                               f"({fingerprint_diff(header.get('fingerprint'), want)}); it is not resumed. "
                               f"Use another --out folder" + (f", or {hint}" if hint else ""))
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            state = _decode(header["state"], f.get_tensor)
        _check_types(state, types or {})
        return state
    except StylsegError:
        raise
    except Exception as e:
        raise StylsegError(f"{path}: resume file is damaged ({type(e).__name__}: {e}); delete it to start over"
                           + (f", or {hint}" if hint else "")) from None


def refuse_legacy(path: os.PathLike, hint: str) -> None:
    """Raise when ``path`` (a pickle resume file of older stylseg versions) exists: it is never opened, since
    unpickling a file from a shared folder can run code."""
    path = Path(path)
    if path.exists():
        raise StylsegError(f"{path}: a resume file in the pickle format of older stylseg versions; it is not opened "
                           f"(unpickling a file can run code). Delete it to start over, or {hint}")


# --------------------------------------------------------------------------- input fingerprints
def compute_key(device) -> str:
    """What a resume fingerprint records about the hardware that changes results: ``"cpu, 2 threads"`` (CPU
    float sums depend on the intra-op thread count) or the device type (``"cuda"``)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cpu":
        n = torch.get_num_threads()
        return f"cpu, {n} thread{'' if n == 1 else 's'}"
    return dev.type


def files_fingerprint(files: Iterable[os.PathLike], root: Optional[os.PathLike] = None) -> Dict[str, Any]:
    """``{"files": n, "sha256": digest}`` over the files' names (relative to ``root``, else the base name) and
    content: equal exactly when the same names hold the same bytes."""
    h = hashlib.sha256()
    n = 0
    for f in sorted(Path(p) for p in files):
        name = f.relative_to(root).as_posix() if root is not None else f.name
        h.update(name.encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
        n += 1
    return {"files": n, "sha256": h.hexdigest()[:32]}


def folder_fingerprint(folder: os.PathLike, subdirs: Sequence[str] = ("images", "masks")) -> Dict[str, Any]:
    """The :func:`files_fingerprint` of a paired folder's ``images/`` and ``masks/`` (or of a plain folder of
    images when it has neither), hidden files excluded."""
    folder = Path(folder)
    dirs = [folder / s for s in subdirs if (folder / s).is_dir()] or [folder]
    files = [p for d in dirs for p in d.iterdir() if p.is_file() and not p.name.startswith(".")]
    return files_fingerprint(files, folder)


# --------------------------------------------------------------------------- random number generator states
def rng_state(**generators) -> Dict[str, Any]:
    """The global random states (torch, CUDA when present, numpy, Python) and those of the named ``generators``
    (``torch.Generator``), as a resume file holds them (:func:`save_state`); :func:`set_rng_state` restores them."""
    import random

    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    st: Dict[str, Any] = {name: g.get_state() for name, g in generators.items()}
    st.update({"torch": torch.get_rng_state(), "python": random.getstate(),
               "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                         "cached": float(cached)}})
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: Mapping[str, Any], **generators) -> None:
    """Restore what :func:`rng_state` recorded (a state without numpy, Python or CUDA entries leaves those alone;
    numpy's state may also be the tuple ``np.random.get_state()`` gives)."""
    import random

    import torch

    for name, g in generators.items():
        g.set_state(st[name])
    torch.set_rng_state(st["torch"])
    n = st.get("numpy")
    if isinstance(n, Mapping):
        np.random.set_state((n["kind"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    elif n is not None:
        np.random.set_state(tuple(n))
    if st.get("python") is not None:
        random.setstate(st["python"])
    if st.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])
