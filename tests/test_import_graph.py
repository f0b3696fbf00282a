"""Every ``monai_cluster`` module imports, and neither the package nor ``benchmarks/`` has an import cycle.

The graph is read from the source with :mod:`ast`: an edge ``a -> b`` for every ``import b`` / ``from b import x``
in ``a`` (``from pkg import mod`` counts as an edge to ``pkg.mod`` and to ``pkg``), at any depth (an import inside
a function closes a cycle as surely as one at the top, only later), except under ``if TYPE_CHECKING:``. A cycle is
reported with its modules in order, so it cannot come back unnoticed (issue 21: ``networks.backbones`` <->
``networks.nets.contrastive_pretrain`` and ``benchmarks/pseudo_classes.py`` <-> ``_pseudo_classes_disk.py``).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    """Every module name ``tree`` may import (candidates; the caller keeps those that exist)."""
    names: list[str] = []
    pending = list(ast.iter_child_nodes(tree))
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            pending.extend(node.orelse)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names.append(source)
            names.extend(f"{source}.{alias.name}" for alias in node.names)
        else:
            pending.extend(ast.iter_child_nodes(node))
    return names


def import_graph(root: Path, files: list[Path]) -> dict[str, set[str]]:
    """``{module: modules it imports}`` among ``files`` (paths under ``root``; module names relative to it)."""
    modules = {_module_name(path, root): path for path in files}
    graph = {}
    for name, path in modules.items():
        imported = _imported_names(ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py")
        graph[name] = {other for other in imported if other in modules and other != name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The cycles a depth-first search meets (each closed by a back edge), as module lists ending where they start."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    cycles: list[list[str]] = []
    for start in sorted(graph):
        if start in state:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        state[start] = 1
        path.append(start)
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = 2
            elif state.get(child) == 1:
                cycles.append(path[path.index(child) :] + [child])
            elif child not in state:
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph[child]))))
    return cycles


PACKAGE_FILES = sorted((REPO / "monai_cluster").rglob("*.py"))


def test_the_checker_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_reads_relative_lazy_and_type_checking_imports(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("def f():\n    from pkg import b\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    graph = import_graph(tmp_path, sorted(pkg.rglob("*.py")))
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg", "pkg.b"}, "pkg.b": set()}


@pytest.mark.parametrize("module", [_module_name(p, REPO) for p in PACKAGE_FILES])
def test_every_module_imports(module):
    importlib.import_module(module)


def test_monai_cluster_has_no_import_cycle():
    assert len(PACKAGE_FILES) > 50
    cycles = find_cycles(import_graph(REPO, PACKAGE_FILES))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_benchmarks_have_no_import_cycle():
    bench = REPO / "benchmarks"
    cycles = find_cycles(import_graph(bench, sorted(bench.glob("*.py"))))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
