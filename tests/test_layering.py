"""The import graph of the stylseg package, read from the source with ``ast`` (nothing is imported or run): every
``import`` counts, also those written inside functions. Imports point one way: no circle among the modules, the
weights catalogue imports no stage, the diffusion core nothing of the stylization, the segmentation library nothing of
the stylizer or the study, and ``stylseg reproduce`` does not load the fine-tuning to read a launcher's variables.

Layers are counted on the package graph, the way the design draws the data flow (data, diffusion, stylize, seg,
metrics, study, report): a subpackage (``stylseg.stylize``, ...) is one node, every top-level module one node."""

import ast
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Set

import pytest

PKG = Path(__file__).resolve().parents[1] / "stylseg"
STAGES = ("stylseg.data", "stylseg.diffusion", "stylseg.stylize", "stylseg.seg")
SUBPACKAGES = STAGES + ("stylseg.study",)
#: at most this many layers in the package graph
MAX_LAYERS = 9


def _modules() -> Dict[str, Path]:
    """Module name -> file, for every ``.py`` of the package (a package is named by its ``__init__.py``)."""
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _owner(name: str) -> str:
    """The stylseg module that ``name`` (a module or a name inside one) lives in."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(module: str) -> Set[str]:
    """The stylseg modules ``module`` imports anywhere in its file (module level, functions, methods)."""
    path = MODULES[module]
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            pkg = ".".join(base[:len(base) - node.level + 1] + [node.module or ""]) if node.level else node.module
            pkg = pkg.rstrip(".")
            names = [f"{pkg}.{a.name}" if f"{pkg}.{a.name}" in MODULES else pkg for a in node.names]
        else:
            continue
        found |= {_owner(n) for n in names if n == "stylseg" or n.startswith("stylseg.")}
    return found - {module}


GRAPH = {m: _imports(m) for m in MODULES}


def _cycles() -> List[List[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


CYCLES = _cycles()


#: each module's node of the condensed graph: its circle (when it is in one) or itself
NODE = {m: tuple(c) for c in CYCLES for m in c}


def _deps(node: tuple) -> Set[tuple]:
    return {NODE.get(w, (w,)) for v in node for w in GRAPH[v]} - {node}


@lru_cache(maxsize=None)
def _node_layer(node: tuple) -> int:
    return 1 + max((_node_layer(d) for d in _deps(node)), default=0)


def _layer(module: str) -> int:
    """1 for a module that imports no other stylseg module, else one more than the highest it imports (a circle
    counts as one module)."""
    return _node_layer(NODE.get(module, (module,)))


def _chain() -> List[str]:
    """The longest import chain, from the top module down to a module that imports none (a circle in brackets)."""
    node = max(sorted(NODE.get(m, (m,)) for m in GRAPH), key=_node_layer)
    chain = [node]
    while _deps(node):
        node = max(sorted(_deps(node)), key=_node_layer)
        chain.append(node)
    return [n[0] if len(n) == 1 else "[" + " <-> ".join(n) + "]" for n in chain]


def _summary() -> str:
    chain = _chain()
    text = f"{len(MODULES)} modules on {len(chain)} layers (longest chain: {' -> '.join(chain)})"
    return text + (f"; import circles: {CYCLES}" if CYCLES else "")


def test_no_import_cycle():
    assert not CYCLES, f"import circles among stylseg modules: {CYCLES}. {_summary()}"


def test_no_import_runs_up_a_layer():
    if CYCLES:
        pytest.skip("layers are defined once there is no circle")
    up = [(m, n) for m, deps in GRAPH.items() for n in deps if _layer(n) >= _layer(m)]
    assert not up, f"imports from a module to one on its own layer or above: {up}. {_summary()}"


def test_weights_is_a_catalogue():
    stages = sorted(n for n in GRAPH["stylseg.weights"] if n.startswith(STAGES))
    assert not stages, f"stylseg/weights.py imports the stage(s) {stages}; a run's needs belong to reproduce. " \
                       f"{_summary()}"


def test_diffusion_imports_nothing_of_stylize():
    bad = sorted((m, n) for m, deps in GRAPH.items() if m.startswith("stylseg.diffusion")
                 for n in deps if n.startswith("stylseg.stylize"))
    assert not bad, f"diffusion modules import the stylization: {bad}. {_summary()}"


def test_reproduce_does_not_load_the_fine_tuning():
    assert "stylseg.stylize.finetune" not in GRAPH["stylseg.reproduce"], _summary()


def test_the_graph_is_read_from_function_level_imports_too(tmp_path):
    """The walk sees an import inside a function (the form most of the kit's heavy imports take)."""
    assert "stylseg.diffusion.pretrained" in GRAPH["stylseg.reproduce"]  # imported in a function only
    src = MODULES["stylseg.reproduce"].read_text()
    assert "from .diffusion.pretrained import" in src and "\n    from .diffusion.pretrained import" in src


def _package(module: str) -> str:
    """The node of the package graph that ``module`` belongs to: its subpackage, or itself."""
    return next((p for p in SUBPACKAGES if module == p or module.startswith(p + ".")), module)


PACKAGE_GRAPH: Dict[str, Set[str]] = {}
for _m, _imported in GRAPH.items():
    PACKAGE_GRAPH.setdefault(_package(_m), set()).update(_package(d) for d in _imported)
for _p, _imported in PACKAGE_GRAPH.items():
    _imported.discard(_p)


def _package_layers() -> Dict[str, int]:
    """Each node's layer in the package graph (1 + the highest it imports); raises on a circle."""
    layers: Dict[str, int] = {}

    def layer(p: str, path: tuple) -> int:
        if p in path:
            raise AssertionError(f"packages import each other in a circle: {' -> '.join(path + (p,))}")
        if p not in layers:
            layers[p] = 1 + max((layer(d, path + (p,)) for d in sorted(PACKAGE_GRAPH[p])), default=0)
        return layers[p]

    for p in sorted(PACKAGE_GRAPH):
        layer(p, ())
    return layers


def test_the_package_graph_has_at_most_nine_layers():
    layers = _package_layers()
    top = max(layers.values())
    by = {n: sorted(p for p, v in layers.items() if v == n) for n in range(1, top + 1)}
    assert top <= MAX_LAYERS, f"{top} layers in the package graph (at most {MAX_LAYERS}): {by}"


def test_segmentation_library_imports_no_stylizer_study_or_report():
    banned = ("stylseg.stylize", "stylseg.study", "stylseg.report", "stylseg.arms", "stylseg.baselines")
    bad = sorted((m, n) for m, deps in GRAPH.items() if m.startswith("stylseg.seg")
                 for n in deps if n.startswith(banned))
    assert not bad, f"stylseg.seg imports the stylizer, the study or the report: {bad}. {_summary()}"


def test_the_layer_checks_see_a_package_circle(monkeypatch):
    """The package check fails on a circle and on an import of the study from seg (what the old ``seg.compare`` did)."""
    monkeypatch.setitem(PACKAGE_GRAPH, "stylseg.seg", PACKAGE_GRAPH["stylseg.seg"] | {"stylseg.study"})
    with pytest.raises(AssertionError, match="circle"):
        _package_layers()
    monkeypatch.setitem(GRAPH, "stylseg.seg.train", GRAPH["stylseg.seg.train"] | {"stylseg.study.arms"})
    with pytest.raises(AssertionError, match="stylseg.seg imports"):
        test_segmentation_library_imports_no_stylizer_study_or_report()
