"""Shared utilities: errors, registries, seeding, devices, directories, atomic files,
model folders (config JSON + safetensors) and the environment report.

Everything here is small and dependency-light so that every stage can import it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Generic, Iterator, Mapping, Optional, TypeVar

import numpy as np

#: the kit's version, defined once (``stylseg.__version__``; pyproject.toml reads it from here)
__version__ = "0.1.0"

T = TypeVar("T")


class StylsegError(Exception):
    """An error caused by the user's input or environment, with a message saying what to do.

    The command line prints the message (no traceback) and exits with status 2.
    """


def check_choice(value, valid, what: str, field: Optional[str] = None) -> None:
    """Raise :class:`StylsegError` when ``value`` is not one of ``valid``: "unknown <what> <value>; valid: ...",
    with "(set <field>)" when the value came from a config field."""
    if value not in valid:
        hint = f" (set {field})" if field else ""
        raise StylsegError(f"unknown {what} {value!r}; valid: {', '.join(valid)}{hint}")

# --------------------------------------------------------------------------- registries
class Registry(Generic[T]):
    """A name -> object mapping whose unknown-name error lists the valid names.

    >>> r = Registry("segmenter"); r.register("unet")(object)  # doctest: +ELLIPSIS
    <class 'object'>
    """

    def __init__(self, what: str):
        self.what = what
        self._items: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.what} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> T:
        return self.register(name)(obj)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise StylsegError(
                f"unknown {self.what} {name!r}; valid names: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def items(self):
        return sorted(self._items.items())


# --------------------------------------------------------------------------- seeding, threads, device
def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so that CPU runs repeat exactly."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def set_threads(n: Optional[int] = None) -> int:
    """Set torch's intra-op threads (default: ``STYLSEG_THREADS`` or the CPU count, at most 2
    on the 2-core development machines when ``OMP_NUM_THREADS`` says so). Returns the value."""
    import torch

    if n is None:
        env = os.environ.get("STYLSEG_THREADS") or os.environ.get("OMP_NUM_THREADS")
        n = int(env) if env else max(1, os.cpu_count() or 1)
    torch.set_num_threads(max(1, int(n)))
    return torch.get_num_threads()


def resolve_device(device: str = "auto"):
    """``"auto"`` -> CUDA if available, else CPU; ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` as given.

    Asking for CUDA on a machine without it raises a :class:`StylsegError`.
    """
    import torch

    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise StylsegError(f"device {device!r} requested but CUDA is not available; use --device cpu or auto")
    if not (str(device) == "cpu" or str(device).startswith("cuda") or str(device) == "mps"):
        raise StylsegError(f"unknown device {device!r}; valid: auto, cpu, cuda, cuda:N, mps")
    return torch.device(device)


# --------------------------------------------------------------------------- directories
def project_root() -> Path:
    """The repository root when running from a checkout (the folder holding ``stylseg/``)."""
    return Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """Where datasets live: ``$STYLSEG_DATA_DIR``, else ``../shared/data`` next to a checkout
    when it exists, else ``~/.cache/stylseg/data``."""
    env = os.environ.get("STYLSEG_DATA_DIR")
    if env:
        return Path(env).expanduser()
    shared = project_root().parent / "shared" / "data"
    if shared.is_dir():
        return shared
    return cache_dir() / "data"


def cache_dir() -> Path:
    """``$STYLSEG_CACHE_DIR`` or ``~/.cache/stylseg``."""
    env = os.environ.get("STYLSEG_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "stylseg"


def weights_dir() -> Path:
    """``$STYLSEG_WEIGHTS_DIR`` or ``<cache>/weights``: where fetched or hand-placed weights live."""
    env = os.environ.get("STYLSEG_WEIGHTS_DIR")
    return Path(env).expanduser() if env else cache_dir() / "weights"


# --------------------------------------------------------------------------- atomic files
def _host() -> str:
    import socket

    return "".join(c if c.isalnum() or c == "-" else "-" for c in socket.gethostname())[:64] or "host"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


@contextmanager
def atomic_path(path: os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    An interrupted write never leaves a half-written file under the final name. The temporary
    name, ``.<name>.<host>.<pid>.<random>.tmp<suffix>``, says which process wrote it, so that
    :func:`clean_stale_tmp` can remove what a killed writer left.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_host()}.{os.getpid()}.", suffix=".tmp" + path.suffix,
                               dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():  # mkstemp makes 0600; the file gets what a plain open() would give: 0666 less the umask
            os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def current_umask() -> int:
    """The process's umask (read without changing it where /proc tells it, else set and restored at once)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def clean_stale_tmp(folder: os.PathLike, name: Optional[str] = None, recursive: bool = False) -> int:
    """Remove the temporary files that :func:`atomic_path` writers on this machine left when they were killed
    (their process is gone) in ``folder`` (``recursive``: and below), only those of the target ``name`` when
    given. Files of live processes and of other machines are kept. Returns how many were removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    host = _host()
    pattern = f".{name}.*.tmp*" if name else ".*.tmp*"
    removed = 0
    for f in (folder.rglob(pattern) if recursive else folder.glob(pattern)):
        rest = f.name[1:f.name.rfind(".tmp")]  # <name>.<host>.<pid>.<random>
        parts = rest.rsplit(".", 3)
        if len(parts) != 4 or parts[1] != host or not parts[2].isdigit() or not f.is_file():
            continue
        if name is not None and parts[0] != name:
            continue
        if not pid_alive(int(parts[2])):
            try:
                f.unlink()
                removed += 1
            except OSError:
                pass
    return removed


def write_json(path: os.PathLike, obj: Any) -> Path:
    """Write JSON atomically (sorted keys, indent 2)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")
    return Path(path)


def read_json(path: os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise StylsegError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise StylsegError(f"{path}: not valid JSON ({e}); delete it and rerun the stage that writes it") from None


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def json_sha256(obj: Any) -> str:
    """sha256 (hex) of a JSON-able object, keys sorted (what resume checks compare settings by)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def sha256_file(path: os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- model folders
MODEL_CONFIG = "config.json"
MODEL_WEIGHTS = "model.safetensors"


def save_model_folder(path: os.PathLike, kind: str, config: Mapping[str, Any], state_dict: Mapping[str, Any],
                      extra: Optional[Mapping[str, Any]] = None) -> Path:
    """Write a model folder: ``config.json`` (``{"kind", "stylseg_version", "config", ...extra}``)
    and ``model.safetensors``, both atomically. ``kind`` names the architecture family
    (``"diffae"``, ``"segmenter"``, ``"stylizer"`` ...) so that loading the wrong folder fails clearly."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    with atomic_path(path / MODEL_WEIGHTS) as tmp:
        save_file(tensors, str(tmp))
    meta = {"kind": kind, "stylseg_version": __version__, "config": dict(config)}
    if extra:
        meta.update(extra)
    write_json(path / MODEL_CONFIG, meta)
    return path


def model_folder_sha256(config_bytes: bytes, weights_bytes: bytes) -> str:
    """Checksum of a model folder from the contents of its ``config.json`` and ``model.safetensors``: sha256 over
    the two files' sha256 hex digests."""
    h = hashlib.sha256()
    for data in (config_bytes, weights_bytes):
        h.update(hashlib.sha256(data).hexdigest().encode())
    return h.hexdigest()


def parse_json_bytes(data: bytes, path: os.PathLike) -> Any:
    """``data`` (the contents of the JSON file ``path``) parsed; invalid JSON raises :class:`StylsegError` naming it."""
    try:
        return json.loads(data.decode())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StylsegError(f"{path}: not valid JSON ({e}); delete it and rerun the stage that writes it") from None


def load_weights_bytes(data: bytes, path: os.PathLike, map_location: str = "cpu") -> Dict[str, Any]:
    """The tensors of a safetensors file's contents ``data`` (read from ``path``) on ``map_location``."""
    from safetensors.torch import load

    try:
        state = load(data)
    except Exception as e:  # safetensors raises several types on corrupt files
        raise StylsegError(f"{path}: cannot read weights ({e}); the file is corrupt, retrain or re-copy it") from None
    return state if str(map_location) == "cpu" else {k: v.to(map_location) for k, v in state.items()}


def load_model_folder(path: os.PathLike, kind: str, map_location: str = "cpu", *, checksum: bool = False):
    """Read a model folder written by :func:`save_model_folder`, each file once.

    Returns ``(meta, state_dict)`` where ``meta["config"]`` is the architecture config, and with ``checksum`` also
    the folder's checksum (:func:`model_folder_sha256`). Raises :class:`StylsegError` naming the file when the
    folder is missing, incomplete, corrupt or of another kind.
    """

    path = Path(path)
    cfg_path, w_path = path / MODEL_CONFIG, path / MODEL_WEIGHTS
    if not path.is_dir():
        raise StylsegError(f"{path}: model folder not found (it should hold {MODEL_CONFIG} and {MODEL_WEIGHTS})")
    if not cfg_path.is_file() or not w_path.is_file():
        missing = [p.name for p in (cfg_path, w_path) if not p.is_file()]
        raise StylsegError(f"{path}: not a stylseg model folder, missing {', '.join(missing)}")
    raw_cfg = cfg_path.read_bytes()
    meta = parse_json_bytes(raw_cfg, cfg_path)
    if not isinstance(meta, dict) or not isinstance(meta.get("config", {}), dict):
        found = type(meta).__name__ if not isinstance(meta, dict) else f"a {type(meta['config']).__name__} as config"
        raise StylsegError(f"{cfg_path}: not a stylseg model config (expected a JSON object with 'kind' and a "
                           f"'config' object, found {found}); re-copy the model folder or train it again")
    if meta.get("kind") != kind:
        raise StylsegError(
            f"{cfg_path}: this folder holds a {meta.get('kind')!r} model, but a {kind!r} model was expected; "
            f"pass the folder written by the stage that trains a {kind}"
        )
    raw_w = w_path.read_bytes()
    state = load_weights_bytes(raw_w, w_path, map_location)
    return (meta, state, model_folder_sha256(raw_cfg, raw_w)) if checksum else (meta, state)


# --------------------------------------------------------------------------- environment report
def env_report(device: str = "auto", seed: Optional[int] = None) -> Dict[str, Any]:
    """Versions, hardware and device: written as ``env.json`` next to every run's outputs."""
    import importlib.metadata as md

    def ver(name: str) -> Optional[str]:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    rep: Dict[str, Any] = {
        "stylseg": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "seed": seed,
        "packages": {
            n: ver(n)
            for n in ("torch", "torchvision", "numpy", "diffusers", "open_clip_torch", "lpips",
                      "segmentation-models-pytorch", "timm", "pysodmetrics", "papermill", "accelerate")
        },
    }
    try:
        import torch

        dev = resolve_device(device)
        rep.update(device=str(dev), torch_threads=torch.get_num_threads(),
                   cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
        if dev.type == "cuda":
            rep["gpu"] = torch.cuda.get_device_name(dev)
    except Exception as e:  # report, never fail, here
        rep["device_error"] = str(e)
    return rep


def format_env(rep: Mapping[str, Any]) -> str:
    pk = rep.get("packages", {})
    lines = [f"stylseg {rep.get('stylseg')} | python {rep.get('python')} | {rep.get('platform')}",
             f"device {rep.get('device')} ({rep.get('gpu', 'no GPU')}), torch threads {rep.get('torch_threads')}",
             "packages: " + ", ".join(f"{k} {v}" for k, v in pk.items() if v)]
    return "\n".join(lines)


#: the arithmetic of DiffAE training and fine-tuning (the ``precision`` setting)
PRECISIONS = ("auto", "bf16", "fp32")


def autocast(device, precision: str):
    """The context the UNet and the losses run in: ``torch.autocast`` to bfloat16 when ``precision`` is "bf16"
    (bf16 has fp32's range, so no loss scaling is needed), else no autocast. ``precision`` as resolved by
    :func:`stylseg.config.resolve_precision`."""
    import contextlib

    import torch

    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
