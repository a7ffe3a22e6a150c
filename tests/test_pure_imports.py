"""Pure modules (clock, ops, fold rules, domain rules, the sans-IO protocol, receipt rendering) load
no network, discovery or database code, so the simulator and property tests run them anywhere."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"zmq", "zeroconf", "sqlite3", "_sqlite3", "socket", "_socket"}


def _every(folder: str) -> list[str]:
    return sorted(
        f"meshpos.{folder}.{p.stem}"
        for p in (ROOT / "meshpos" / folder).glob("*.py")
        if p.stem != "__init__"
    )


PURE = [
    *_every("core"),
    *_every("domain"),
    "meshpos.ledger.fold",
    "meshpos.ledger.records",
    "meshpos.sync.messages",
    "meshpos.sync.protocol",
    "meshpos.node.core",
    "meshpos.devices.layout",
    "meshpos.devices.receipt",
    "meshpos.devices.barcodes",
    "meshpos.devices.hid",
    "meshpos.web.views",
]

# Loaded by a third-party dependency, not by our code: `layout` renders through python-escpos,
# whose `escpos.printer` package imports every printer backend, the network one (`socket`)
# included. The AST test below still holds `layout` itself to the rule.
INDIRECT = {"meshpos.devices.layout": {"socket", "_socket"}}
# `typing_extensions` (which msgspec, the op decoder in meshpos/core/ops.py, imports) loads the C
# module `_socket` for a type name; it opens nothing. Socket code of ours would import `socket`,
# which stays forbidden everywhere but `layout`.
EVERYWHERE = {"_socket"}


def _source(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + ".py")


def _exists(module: str) -> bool:
    return _source(module).exists()


@pytest.mark.parametrize("module", PURE)
def test_importing_a_pure_module_loads_no_io_module(module: str) -> None:
    if not _exists(module):
        pytest.skip(f"{module} does not exist yet")
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        f"bad = {sorted(FORBIDDEN)!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in bad)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    allowed = INDIRECT.get(module, set()) | EVERYWHERE
    assert not loaded - allowed, f"{module} loads {sorted(loaded)}"


def _direct_imports(path: Path, package: str) -> set[str]:
    """Top-level names of every module this source imports itself (at any depth in the code)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
                names.add(base)
            elif node.module:
                names.add(node.module)
    return names


def _closure(module: str) -> dict[str, set[str]]:
    """For `module` and every meshpos module it imports (transitively), its direct imports."""
    seen: dict[str, set[str]] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _source(name)
        if not path.exists():
            path = ROOT / name.replace(".", "/") / "__init__.py"
        if not path.exists():
            seen[name] = set()  # `from meshpos.x import name` where name is not a module
            continue
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        seen[name] = _direct_imports(path, package)
        parts = name.split(".")
        parents = [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += [m for m in seen[name] | set(parents) if m.split(".")[0] == "meshpos"]
    return seen


@pytest.mark.parametrize("module", PURE)
def test_no_meshpos_module_behind_a_pure_module_imports_io_itself(module: str) -> None:
    if not _exists(module):
        pytest.skip(f"{module} does not exist yet")
    offenders = {
        name: sorted(m for m in imports if m.split(".")[0] in FORBIDDEN)
        for name, imports in _closure(module).items()
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_ast_check_sees_an_offender(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import socket\nfrom sqlite3 import connect\n")
    assert {"socket", "sqlite3"} <= _direct_imports(bad, "x")
