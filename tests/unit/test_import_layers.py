"""The packages import each other in layers: no package imports one that imports it back.

Every ``import`` statement of ``saga/``, ``services/`` and ``contracts/`` counts, also
those inside functions or under ``TYPE_CHECKING``: an import moved into a function
hides a circle, it does not break it. A node of the graph is ``saga.<subpackage or
module>``, ``services`` or ``contracts``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("saga", "services", "contracts")

Graph = dict[str, dict[str, list[str]]]
"""Package -> package it imports -> where (``file:line``)."""


def _node(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    return ".".join(parts[:2]) if parts[0] == "saga" else parts[0]


def _imported(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, int]]:
    for stmt in ast.walk(tree):
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                yield alias.name, stmt.lineno
        elif isinstance(stmt, ast.ImportFrom):
            if stmt.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - stmt.level + 1]
                target = ".".join([*base, *([stmt.module] if stmt.module else [])])
            else:
                target = stmt.module or ""
            if target == "saga":  # ``from saga import errors``: the submodule
                for alias in stmt.names:
                    yield f"saga.{alias.name}", stmt.lineno
            else:
                yield target, stmt.lineno


def package_graph() -> Graph:
    graph: Graph = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            module = ".".join(parts[:-1] if is_package else parts)
            source = _node(module)
            assert source is not None
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for target, line in _imported(tree, module, is_package):
                node = _node(target)
                if node is not None and node != source:
                    where = f"{path.relative_to(ROOT)}:{line}"
                    graph.setdefault(source, {}).setdefault(node, []).append(where)
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_package_imports_a_package_that_imports_it_back() -> None:
    graph = package_graph()
    report = [
        f"{a} -> {b} ({', '.join(graph[a][b][:3])})"
        for component in cycles(graph)
        for a in component
        for b in sorted(graph.get(a, {}))
        if b in component
    ]
    assert not report, "import circles between packages:\n" + "\n".join(report)


def test_the_graph_sees_imports() -> None:
    graph = package_graph()
    assert "saga.settings" in graph["services"]
    assert "services" in graph["saga.cli"]
    assert cycles({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}}) == [["a", "b", "c"]]


def test_settings_are_still_importable_from_the_cli() -> None:
    from saga.cli import Settings as CliSettings
    from saga.settings import Settings

    assert CliSettings is Settings
