"""Helpers the notebooks call: parameter validation, the standard setup, missing-input messages,
and a builder that writes clean notebooks (used to author ``notebooks/NN_*.ipynb``).

Every notebook has one cell tagged ``parameters`` with at least::

    PROFILE = "workshop"  # workshop | smoke | cpu | paper
    SEED = 0            # random seed
    DEVICE = "auto"     # auto | cpu | cuda
    DATA_DIR = ""       # real data folder, empty: the built-in synthetic domains
    RUN_DIR = "../runs/workshop"  # run folder shared by all notebooks
    SET = ""            # config overrides, as --set: "seg.epochs=4 ddim.t0=0.25"

and the next cell calls :func:`setup`, which validates them (unknown or ill-typed values fail) and applies
``SET`` to the run's config, so that every "try this" can be done from the notebook.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

from .config import PROFILES, RunConfig, get_profile
from .layout import RunLayout, check_run_format, save_run_config
from .utils import StylsegError, env_report, format_env, resolve_device, seed_everything, set_threads, write_json

STANDARD = {"PROFILE": str, "SEED": int, "DEVICE": str, "DATA_DIR": str, "RUN_DIR": str}


def parse_set_string(text: str) -> Dict[str, str]:
    """A notebook's ``SET`` parameter, ``"seg.epochs=4 ddim.t0=0.25"`` (space-, newline- or ``;``-separated
    ``STAGE.FIELD=VALUE`` items, the syntax of ``--set``) -> ``{"seg.epochs": "4", "ddim.t0": "0.25"}``."""
    from .config import parse_set_args

    if not isinstance(text, str):
        raise StylsegError(f"notebook parameter SET={text!r} should be a string such as \"seg.epochs=4 ddim.t0=0.25\"")
    items = [it for it in str(text).replace(";", " ").split() if it]
    try:
        return parse_set_args(items)
    except StylsegError as e:
        raise StylsegError(f"notebook parameter SET={text!r}: {e}") from None


def check_parameters(ns: Mapping[str, Any], **types: type) -> Dict[str, Any]:
    """Validate notebook parameters: the standard ones plus ``types`` (name -> type).

    Returns the values as a dict. Raises :class:`StylsegError` on a missing, ill-typed or
    invalid value (unknown profile, bad device) naming the parameter.
    """
    spec = dict(STANDARD)
    spec.update(types)
    out = {}
    for name, tp in spec.items():
        if name not in ns:
            raise StylsegError(f"notebook parameter {name} is missing from the parameters cell")
        v = ns[name]
        if tp is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if tp is int and isinstance(v, bool) or not isinstance(v, tp):
            raise StylsegError(f"notebook parameter {name}={v!r} should be of type {tp.__name__}")
        out[name] = v
    if out["PROFILE"] not in PROFILES:
        raise StylsegError(f"PROFILE={out['PROFILE']!r} is unknown; valid profiles: {', '.join(PROFILES)}")
    resolve_device(out["DEVICE"])  # raises on unknown / unavailable devices
    if out["DATA_DIR"] and not Path(out["DATA_DIR"]).expanduser().exists():
        raise StylsegError(f"DATA_DIR={out['DATA_DIR']!r} does not exist; use \"\" for the built-in synthetic data")
    return out


def setup(ns: Mapping[str, Any], overrides: Optional[Mapping[str, Any]] = None, quiet: bool = False,
          **types: type) -> Tuple[RunConfig, RunLayout, Any]:
    """The standard second cell: validate parameters, set threads and seeds, print the environment.

    Returns ``(cfg, layout, device)``. The run folder's ``config.json`` is reused when present
    with the same profile (so all notebooks of a run agree), else written; ``overrides`` are
    ``{"stage.field": value}`` pairs from the notebook's own parameters.
    """
    p = check_parameters(ns, **types)
    sets = parse_set_string(ns.get("SET", "") or "")
    set_threads()
    seed_everything(p["SEED"])
    layout = RunLayout(Path(p["RUN_DIR"]).expanduser())
    check_run_format(layout.root)
    layout.root.mkdir(parents=True, exist_ok=True)
    cfg = get_profile(p["PROFILE"])
    if layout.config.is_file():
        saved = RunConfig.load(layout.config)
        if saved.profile == p["PROFILE"]:
            cfg = saved
    own = dict(overrides or {})
    if own.get("stylize.preset"):  # a preset (notebook 04's PRESET) first: SET then changes single fields of it
        cfg = cfg.override(**{"stylize.preset": own.pop("stylize.preset")})
    # SET next, so that a notebook's own parameter (e.g. ITERATIONS) wins over a SET of the same field
    cfg = cfg.override(**sets) if sets else cfg
    cfg = cfg.override(seed=p["SEED"], device=p["DEVICE"], **own)
    save_run_config(layout.config, cfg)
    rep = env_report(p["DEVICE"], seed=p["SEED"])
    write_json(layout.env, rep)
    if not quiet:
        print(format_env(rep))
        print(f"profile {cfg.profile}, seed {cfg.seed}, run folder {layout.root.resolve()}"
              + (f"; SET {', '.join(f'{k}={v}' for k, v in sets.items())}" if sets else ""))
    return cfg, layout, resolve_device(p["DEVICE"])


def require(path: os.PathLike, notebook: str, what: str = "") -> Path:
    """Fail clearly when an input made by an earlier notebook is missing."""
    path = Path(path)
    if not path.exists():
        raise StylsegError(f"missing {what or path.name} at {path}: run notebooks/{notebook} first with the same RUN_DIR")
    return path


# --------------------------------------------------------------------------- authoring
def new_notebook(cells: Sequence[Tuple[str, str]] | Sequence[Tuple[str, str, Iterable[str]]]):
    """Build a clean notebook from ``(kind, source[, tags])`` tuples, kind in {"md", "code"}.

    Exactly one code cell must carry the ``parameters`` tag. Returns an ``nbformat`` node.
    """
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook as _nb

    nb = _nb()
    n_params = 0
    for c in cells:
        kind, src = c[0], c[1]
        tags = list(c[2]) if len(c) > 2 else []
        src = src.strip("\n")
        if kind == "md":
            cell = new_markdown_cell(src)
        elif kind == "code":
            cell = new_code_cell(src)
        else:
            raise ValueError(kind)
        if tags:
            cell.metadata["tags"] = tags
        n_params += "parameters" in tags
        nb.cells.append(cell)
    if n_params != 1:
        raise ValueError(f"a notebook needs exactly one 'parameters' cell, got {n_params}")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.validate(nb)
    return nb


def write_notebook(nb, path: os.PathLike) -> Path:
    import nbformat

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def strip_outputs(path: os.PathLike) -> bool:
    """Remove outputs and execution counts in place; returns True if the file changed."""
    path = Path(path)
    nb = json.loads(path.read_text())
    changed = False
    for c in nb.get("cells", []):
        if c.get("cell_type") == "code":
            if c.get("outputs") or c.get("execution_count") is not None:
                changed = True
            c["outputs"], c["execution_count"] = [], None
    if changed:
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return changed
