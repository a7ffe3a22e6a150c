"""The package's folders are layers, and imports only go down.

    cli, demo > sim > node > web, hq > service > sync > ledger, devices > domain > core

A module may import any module of a lower layer and of its own folder; never one of a higher
layer or of a sibling folder on the same layer. No import cycles between modules (imports inside
functions and under `TYPE_CHECKING` count: a cycle hidden in a function is still a cycle). Only
`meshpos.ledger` and HQ's storage modules import `sqlite3`. The checker is plain AST reading, and
a test below plants each kind of violation to show that it is caught.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "meshpos"

LAYERS: dict[str, int] = {
    "core": 0,
    "domain": 1,
    "ledger": 2,
    "devices": 2,
    "sync": 3,
    "service": 4,
    "web": 5,
    "hq": 5,
    "node": 6,
    "sim": 7,
    "cli": 8,
    "demo": 8,
}
SQLITE = {"sqlite3", "_sqlite3", "sqlcipher3"}
SQLITE_ALLOWED = ("meshpos.ledger", "meshpos.hq.storage")


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, name: str, known: Iterable[str]) -> set[str]:
    """Every module `path` imports, at any depth of its code, resolved to known module names
    where it names one (`from pkg import mod` is an import of `pkg.mod`)."""
    known = set(known)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = importlib.util.resolve_name("." * node.level + base, package)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in known else base)
    return found


def graph(root: Path, top: str = "meshpos") -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (resolved to the nearest known)."""
    paths = {module_name(p, root): p for p in (root / top).rglob("*.py")}
    out: dict[str, set[str]] = {}
    for name, path in paths.items():
        edges = set()
        for target in imports_of(path, name, paths):
            if target.split(".")[0] not in (top, *SQLITE):
                continue
            while target not in paths and "." in target:
                target = target.rpartition(".")[0]
            if target != name:
                edges.add(target)
        out[name] = edges
    return out


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else None


def direction_violations(edges: Mapping[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in sorted(edges.items()):
        for dst in sorted(targets):
            if dst.split(".")[0] != src.split(".")[0]:
                continue
            a, b = layer(src), layer(dst)
            if a == b:
                continue
            if a is None or b is None or a not in LAYERS or b not in LAYERS:
                if dst != src.split(".")[0]:  # the package's own __init__ carries only a version
                    bad.append(f"{src} -> {dst}: outside the layers ({sorted(LAYERS)})")
                continue
            if LAYERS[b] >= LAYERS[a]:
                bad.append(f"{src} ({a}) imports {dst} ({b}): imports go down only")
    return bad


def sqlite_violations(edges: Mapping[str, set[str]]) -> list[str]:
    return [
        f"{src} imports {dst}: only meshpos.ledger and HQ's storage talk to SQLite"
        for src, targets in sorted(edges.items())
        for dst in sorted(targets)
        if dst in SQLITE and not src.startswith(SQLITE_ALLOWED)
    ]


def test_only_the_ledger_and_hq_storage_import_sqlite(edges: dict[str, set[str]]) -> None:
    assert sqlite_violations(edges) == []


def cycles(edges: Mapping[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            for nxt in it:
                if nxt not in edges:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(edges.get(nxt, ())))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        comp.add(member)
                        if member == node:
                            break
                    if len(comp) > 1:
                        found.append(comp)
    return found


@pytest.fixture(scope="module")
def edges() -> dict[str, set[str]]:
    return graph(ROOT)


def test_every_module_lives_in_a_layer_folder(edges: dict[str, set[str]]) -> None:
    stray = sorted(m for m in edges if m != "meshpos" and layer(m) not in LAYERS)
    assert stray == [], f"modules outside the layer folders: {stray}"


def test_imports_go_down_the_layers(edges: dict[str, set[str]]) -> None:
    assert direction_violations(edges) == []


def test_no_import_cycles(edges: dict[str, set[str]]) -> None:
    found = cycles(edges)
    assert found == [], f"import cycles: {[sorted(c) for c in found]}"


def _plant(tmp_path: Path, files: dict[str, str]) -> dict[str, set[str]]:
    for rel, text in files.items():
        path = tmp_path / "meshpos" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in {p.parent for p in (tmp_path / "meshpos").rglob("*.py")}:
        (folder / "__init__.py").touch()
    return graph(tmp_path)


def test_the_checker_catches_each_planted_violation(tmp_path: Path) -> None:
    planted = _plant(
        tmp_path,
        {
            "core/clock.py": "def f():\n    from meshpos.service import terminal\n",
            "service/terminal.py": "from meshpos.core import clock\n",
            "domain/money.py": "import sqlite3\n",
            "ledger/store.py": "import sqlite3\n",
            "web/a.py": "from meshpos.hq import b\n",
            "hq/b.py": "",
            "sync/x.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from meshpos.sync import y\n",
            "sync/y.py": "from meshpos.sync.x import thing\n",
            "stray.py": "",
        },
    )
    assert direction_violations(planted) == [
        "meshpos.core.clock (core) imports meshpos.service.terminal (service): imports go down only",
        "meshpos.web.a (web) imports meshpos.hq.b (hq): imports go down only",
    ]
    assert sqlite_violations(planted) == [
        "meshpos.domain.money imports sqlite3: only meshpos.ledger and HQ's storage talk to SQLite"
    ]
    assert sorted(sorted(c) for c in cycles(planted)) == [
        ["meshpos.core.clock", "meshpos.service.terminal"],
        ["meshpos.sync.x", "meshpos.sync.y"],
    ]
    assert "meshpos.stray" in {m for m in planted if layer(m) not in LAYERS}
