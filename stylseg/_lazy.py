"""Lazy package exports: ``__getattr__`` and ``__dir__`` for a package whose public names live in
heavy submodules (torch), so that ``stylseg data check`` or ``--help`` stays quick."""

from __future__ import annotations

import importlib
from typing import Callable, Dict, List, Mapping, Tuple


def lazy_exports(package: str, exports: Mapping[str, str], namespace: Dict) -> Tuple[Callable, Callable]:
    """``exports``: public name -> submodule of ``package``. Returns the package's ``__getattr__``
    (imports the submodule on first use and caches the value in ``namespace``) and ``__dir__``."""

    def __getattr__(name: str):
        mod = exports.get(name)
        if mod is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{mod}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> List[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
