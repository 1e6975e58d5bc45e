"""The house's rules, checked on the code: the import order docs/architecture.md documents.

Every import in ``gateway/`` (at module level or inside a function) is read with ``ast``. A
package may import only itself and the packages to its left in the documented order; no two
modules may import each other, directly or round a longer loop; the root holds a small
kernel; the offline verifier never loads a store.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import gateway

PACKAGE = Path(gateway.__file__).resolve().parent
REPO = PACKAGE.parent
ARCHITECTURE = REPO / "docs" / "architecture.md"
KERNEL = "kernel"
"""The modules directly in ``gateway/`` (``errors`` apart: it is the floor)."""
ENTRY_POINTS = frozenset({"gateway", "gateway.__main__"})
MAX_ROOT_MODULES = 12


def documented_order() -> list[str]:
    """The layers, lowest first, from the line ``errors ← _internal ← … ← cli`` of the doc."""
    for line in ARCHITECTURE.read_text(encoding="utf-8").splitlines():
        if re.fullmatch(r"\s*errors( ← [a-z_]+)+\s*", line):
            return [name.strip() for name in line.split("←")]
    raise AssertionError(f"{ARCHITECTURE} documents no import order (errors ← … ← cli)")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> Iterator[str]:
    """Every ``gateway`` module ``path`` imports, wherever the import statement stands."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "gateway":
                yield from (f"gateway.{alias.name}" for alias in node.names)
            elif node.module.startswith("gateway."):
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("gateway."))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            raise AssertionError(f"{path}: relative import (write gateway.… in full)")


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {t for t in imports(path) if t in modules} for name, path in modules.items()}


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return KERNEL
    if parts[1] == "errors":
        return "errors"
    if (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return KERNEL


def test_the_documented_order_names_every_package_once() -> None:
    order = documented_order()
    assert len(order) == len(set(order))
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages | {"errors", KERNEL} == set(order)


def test_no_import_goes_against_the_documented_order() -> None:
    order = documented_order()
    against = sorted(
        f"{source} ({layer(source)}) imports {target} ({layer(target)})"
        for source, targets in graph().items()
        if source not in ENTRY_POINTS
        for target in targets
        if target not in ENTRY_POINTS and order.index(layer(target)) > order.index(layer(source))
    )
    assert against == []


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components with more than one member (each is an import cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_module_import_cycle() -> None:
    assert strongly_connected(graph()) == []


def test_no_package_import_cycle() -> None:
    edges: dict[str, set[str]] = {}
    for source, targets in graph().items():
        if source in ENTRY_POINTS:
            continue
        edges.setdefault(layer(source), set()).update(
            layer(t) for t in targets if t not in ENTRY_POINTS and layer(t) != layer(source)
        )
    assert strongly_connected(edges) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_the_root_is_a_small_kernel() -> None:
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= MAX_ROOT_MODULES, root


def test_a_layer_is_read_from_the_module_path() -> None:
    assert layer("gateway.errors") == "errors"
    assert layer("gateway.config") == KERNEL
    assert layer("gateway.federation.peers") == "federation"
    assert layer("gateway.storage") == "storage"


def closure(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(edges.get(module, ()))
    return seen


@pytest.mark.parametrize(
    "verifier", ["gateway.certificates.verification", "gateway.certificates.revocation"]
)
def test_the_offline_verifier_imports_no_store(verifier: str) -> None:
    reached = closure(verifier, graph())
    assert sorted(m for m in reached if layer(m) in ("storage", "services", "federation")) == []


def test_the_offline_verifier_loads_no_database_driver() -> None:
    probe = (
        "import sys, gateway.certificates.verification as v; "
        "print(sorted(m for m in sys.modules if m in ('sqlite3', '_sqlite3', 'aiohttp')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout.strip()
    assert loaded == "[]"


def test_handlers_reach_no_store() -> None:
    """Data flows handler → service → store: nothing in http/ or cli/ imports storage/
    (the composition root in server/ is the one place that opens stores)."""
    offenders = sorted(
        f"{source} imports {target}"
        for source, targets in graph().items()
        if layer(source) in ("http",)
        for target in targets
        if layer(target) == "storage"
    )
    assert offenders == []
