"""Figures of the code's shape: import cycles, who imports the composition root and
SQLAlchemy, and the most complex functions.

    .venv/bin/python tools/architecture.py [--verbose]

Imports are read by grimp (the graph import-linter checks), which counts every import
statement of a module, those inside functions included: a cycle hidden by a
function-local import is still a cycle. Complexity is radon's cyclomatic complexity.
`make test` enforces the rules themselves (import-linter contracts in pyproject.toml);
this prints the figures behind them.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import grimp
from radon.complexity import cc_visit

PACKAGE = "bot"
ROOT = Path(__file__).resolve().parents[1]


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components; a component of two or more modules is an import cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return [c for c in found if len(c) > 1]


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def main(verbose: bool) -> None:
    graph = grimp.build_graph(PACKAGE, include_external_packages=True, cache_dir=None)
    modules = sorted(m for m in graph.modules if m.split(".")[0] == PACKAGE)
    imported = {m: graph.find_modules_directly_imported_by(m) for m in modules}
    internal = {m: {i for i in imported[m] if i.split(".")[0] == PACKAGE} for m in modules}

    cycles = strongly_connected(internal)
    packages: dict[str, set[str]] = defaultdict(set)
    for module, targets in internal.items():
        for target in targets:
            if package_of(module) != package_of(target):
                packages[package_of(module)].add(package_of(target))
    package_cycles = strongly_connected(packages)
    print(f"import cycles between modules: {len(cycles)}")
    for cycle in cycles:
        print("   ", " <-> ".join(cycle))
    print(f"import cycles between packages: {len(package_cycles)}")
    for cycle in package_cycles:
        print("   ", " <-> ".join(cycle))

    root = [m for m in modules if f"{PACKAGE}.bootstrap" in internal[m]]
    print(f"modules that import {PACKAGE}.bootstrap: {len(root)}")
    if verbose:
        print("   ", ", ".join(root))
    sql = [
        m
        for m in modules
        if not m.startswith(f"{PACKAGE}.store")
        and any(i.split(".")[0] == "sqlalchemy" for i in imported[m])
    ]
    print(f"modules outside {PACKAGE}.store that import sqlalchemy: {len(sql)}")
    if verbose:
        print("   ", ", ".join(sql))

    blocks = []
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        for block in cc_visit(path.read_text()):
            name = (
                f"{block.classname}.{block.name}"
                if getattr(block, "classname", None)
                else block.name
            )
            blocks.append((block.complexity, f"{path.relative_to(ROOT)}:{block.lineno}", name))
            for inner in getattr(block, "closures", []):
                blocks.append(
                    (
                        inner.complexity,
                        f"{path.relative_to(ROOT)}:{inner.lineno}",
                        f"{name}.{inner.name}",
                    )
                )
    blocks.sort(key=lambda b: (-b[0], b[1]))
    print(f"functions above complexity 15: {sum(1 for b in blocks if b[0] > 15)}")
    print("the ten most complex functions:")
    for complexity, where, name in blocks[:10]:
        print(f"    {complexity:>3}  {name}  ({where})")


if __name__ == "__main__":
    main("--verbose" in sys.argv or "-v" in sys.argv)
