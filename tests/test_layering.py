"""Package layering: each subpackage imports only those below it, and cheap imports stay cheap.

The order is ``graph < datasets < samplers < cuda < storage < loader < nn < train``, with
``cli``, ``distributed`` and the top-level ``graphsys/__init__.py`` above all of them and
the private helpers (``_atomic``, ``_bits``, ``_compat``, ``_pinned``, ``_lazy``, ``_progress``,
``_sizes``, ``_version``, ``errors``) below all of them. Every import counts, module level
or inside a function (a deferred import still makes a cycle, only a later one).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import graphsys

ROOT = Path(graphsys.__file__).resolve().parent
ORDER = ("graph", "datasets", "samplers", "cuda", "storage", "loader", "nn", "train")
BOTTOM = frozenset({"_atomic", "_bits", "_compat", "_lazy", "_pinned", "_progress", "_sizes", "_version",
                    "errors"})
TOP = "top"  # graphsys/__init__.py, cli, distributed, __main__
RANK = {"bottom": -1, **{name: i for i, name in enumerate(ORDER)}, TOP: len(ORDER)}


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name, or None outside graphsys."""
    parts = module.split(".")
    if parts[0] != "graphsys":
        return None
    if len(parts) == 1:
        return TOP
    if parts[1] in ORDER:
        return parts[1]
    return "bottom" if parts[1] in BOTTOM else TOP


def imports_of(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, imported module)`` for every import in ``source``, relative ones resolved.

    ``from pkg import name`` yields ``pkg.name``: the name may be a submodule, and where
    it is not, ``pkg.name`` still maps to ``pkg``'s layer.
    """
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                base_name = ".".join(base + ([node.module] if node.module else []))
            else:
                base_name = node.module or ""
            found += [(node.lineno, f"{base_name}.{alias.name}") for alias in node.names]
    return found


def module_name(path: Path) -> tuple[str, bool]:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def layer_edges() -> list[tuple[str, str, str]]:
    """``(source layer, target layer, where)`` for every graphsys-internal import."""
    edges = []
    for path in sorted(ROOT.rglob("*.py")):
        module, is_package = module_name(path)
        src = layer_of(module)
        for line, target in imports_of(path.read_text(), module, is_package):
            dst = layer_of(target)
            if dst is not None and src is not None:
                edges.append((src, dst, f"{path.relative_to(ROOT.parent)}:{line} {target}"))
    return edges


def upward(edges: list[tuple[str, str, str]]) -> list[str]:
    """The imports that reach a higher layer (bottom modules count as the lowest)."""
    return [where for src, dst, where in edges if src != dst and RANK[dst] > RANK[src]]


def cycle(edges: list[tuple[str, str, str]]) -> list[str] | None:
    """One cycle among the layers, as a list of layers, or None."""
    graph: dict[str, set[str]] = {}
    for src, dst, _ in edges:
        if src != dst:
            graph.setdefault(src, set()).add(dst)
    done: set[str] = set()

    def visit(path: list[str]) -> list[str] | None:
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt in path:
                return path[path.index(nxt):] + [nxt]
            if nxt not in done and (found := visit(path + [nxt])):
                return found
        done.add(path[-1])
        return None

    for start in sorted(graph):
        if start not in done and (found := visit([start])):
            return found
    return None


def test_the_walker_sees_every_kind_of_import() -> None:
    source = (
        "import graphsys.graph.csc\n"
        "from graphsys.samplers import neighbor\n"
        "from . import base\n"
        "from ..loader.dataloader import DataLoader\n"
        "def later():\n"
        "    from graphsys.train.trainer import Trainer\n"
    )
    found = [target for _, target in imports_of(source, "graphsys.storage.fake")]
    assert found == ["graphsys.graph.csc", "graphsys.samplers.neighbor",
                     "graphsys.storage.base", "graphsys.loader.dataloader.DataLoader",
                     "graphsys.train.trainer.Trainer"]
    assert imports_of("from .quant import x", "graphsys.cuda", is_package=True) == [
        (1, "graphsys.cuda.quant.x")]


def test_the_walker_flags_upward_imports_and_cycles() -> None:
    bad = [("storage", layer_of(t), t) for _, t in imports_of(
        "def f():\n    from ..train import trainer\n", "graphsys.storage.fake")]
    assert upward(bad) == ["graphsys.train.trainer"]
    assert upward([("bottom", "graph", "graphsys/_bits.py:1")]) == ["graphsys/_bits.py:1"]
    assert upward([("cuda", "samplers", "ok"), ("nn", "bottom", "ok")]) == []
    assert cycle([("cuda", "storage", "a"), ("storage", "nn", "b"), ("nn", "cuda", "c")]) \
        == ["cuda", "storage", "nn", "cuda"]
    assert cycle([("storage", "cuda", "b"), ("cuda", "samplers", "c")]) is None


def test_no_subpackage_imports_one_above_it() -> None:
    edges = layer_edges()
    assert len(edges) > 100  # the walk found the package
    assert upward(edges) == []


def test_no_cycles_between_subpackages() -> None:
    assert cycle(layer_edges()) is None


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT.parent).stdout
    return set(out.split())


@pytest.mark.parametrize("statement", ["import graphsys", "import graphsys.nn"])
def test_cheap_imports_load_no_kernels_or_stores(statement: str) -> None:
    loaded = _loaded_after(statement)
    heavy = {"numba", "cupy", "graphsys.storage.packed", "graphsys.storage.device_cache"}
    assert heavy & loaded == set()


def test_lazy_names_still_resolve() -> None:
    import graphsys.cuda
    import graphsys.storage

    for package in (graphsys, graphsys.storage, graphsys.cuda):
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"
        assert set(package.__all__) <= set(dir(package))
