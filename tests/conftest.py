"""Shared fixtures for the CLI tests: run `meshpos` in-process, and ready-made nodes.

`meshpos.cli.app.main` is called directly with stdout/stderr redirected, so a test sees the same exit
code and `error:` line a shell would, at in-process speed. Nodes with the sample catalogue (and a
few test products with round prices) are built once per session and copied per test.

`make test` runs the suite on one pytest-xdist worker per core, a test file at a time
(`--dist loadfile`: a file's module fixtures and caches are built once). Tests in different files
that must not run at the same time hold a lock (tests/netns.py's `gateway_lab_lock`).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from meshpos.cli.app import main

TEST_CSV = """sku,name,barcode,category,size,colour,price,gst_rate,stock
TEE-M,Test tee,2000000000017,Tops,M,Red,1000.00,12,10
CAP,Test cap,2000000000024,Accessories,,Blue,250.00,5,5
JKT-L,Test jacket,2000000000031,Outerwear,L,Black,3000.00,12,3
LAST,Last unit,2000000000048,Tops,,Grey,500.00,5,1
"""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, put the files with `slow` tests first, so that no worker starts a long file
    when the other is nearly done (`make test` passes --no-loadscope-reorder to keep this
    order). A run without xdist keeps the files' order."""
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run_cli(args: list[str]) -> CliResult:
    """Run `meshpos ARGS` in this process, as the console script would."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return CliResult(code, out.getvalue(), err.getvalue())


@dataclass(frozen=True)
class Node:
    """A node directory and shortcuts for running commands against it."""

    path: Path

    @property
    def db(self) -> Path:
        return self.path / "meshpos.db"

    def run(self, *args: str, user: str | None = None) -> CliResult:
        pre = ["--dir", str(self.path)] + (["--user", user] if user else [])
        return run_cli([*pre, *args])

    def ok(self, *args: str, user: str | None = None) -> CliResult:
        r = self.run(*args, user=user)
        assert r.code == 0, f"meshpos {' '.join(args)} failed ({r.code}): {r.err}"
        return r

    def json(self, *args: str, user: str | None = None) -> Any:
        return self.ok(*args, "--json", user=user).json()

    def fail(self, *args: str, user: str | None = None) -> str:
        """Run a command that must be refused: exit 1, one `error:` line, nothing on stdout."""
        r = self.run(*args, user=user)
        assert r.code == 1, f"expected exit 1, got {r.code}: out={r.out!r} err={r.err!r}"
        lines = r.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), r.err
        assert r.out == ""
        return lines[0]

    def usage_error(self, *args: str) -> str:
        r = self.run(*args)
        assert r.code == 2, r
        assert "Error:" in r.err
        return r.err

    def vv(self) -> dict[str, int]:
        vv: dict[str, int] = self.json("sync", "vv")
        return vv

    def qty(self, sku: str) -> int:
        return int(self.json("stock", sku)[0]["qty"])

    def sell(self, *args: str, user: str | None = None) -> dict[str, Any]:
        sale: dict[str, Any] = self.json("sell", *args, user=user)
        return sale

    def snapshot(self) -> tuple[Any, ...]:
        """Everything a failed command must leave untouched: version vector, log, gaps, nodes."""
        with contextlib.closing(sqlite3.connect(self.db)) as conn:
            counts = tuple(
                conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("ops", "pending", "nodes", "products", "customers", "sales")
            )
        return (self.vv(), counts)


@pytest.fixture
def _no_meshpos_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands see only the --dir and --user a test gives, whatever the caller's shell set."""
    monkeypatch.delenv("MESHPOS_DIR", raising=False)
    monkeypatch.delenv("MESHPOS_USER", raising=False)


@pytest.fixture(scope="session")
def test_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("csv") / "test_products.csv"
    path.write_text(TEST_CSV)
    return path


@pytest.fixture(scope="session")
def _templates(tmp_path_factory: pytest.TempPathFactory, test_csv: Path) -> dict[str, Path]:
    """T1 with the sample catalogue and the test products; T2 of the same store holding T1's ops."""
    root = tmp_path_factory.mktemp("templates")
    t1, t2 = Node(root / "t1"), Node(root / "t2")
    # Plain databases, so that tests can look inside with sqlite3 (`Node.snapshot`); `init`'s
    # default, encryption, is tested in test_hardening_files.py and test_encryption.py.
    t1.ok("init", "--store", "S1", "--name", "T1", "--no-encrypt")
    t1.ok("catalog", "import", "--sample")
    t1.ok("catalog", "import", str(test_csv))
    t2.ok("init", "--store", "S1", "--name", "T2", "--no-encrypt")
    t1.ok("sync", "export", str(root / "t1.bundle"))
    t2.ok("sync", "import", str(root / "t1.bundle"))
    return {"t1": t1.path, "t2": t2.path}


@pytest.fixture
def node(_templates: dict[str, Path], tmp_path: Path, _no_meshpos_env: None) -> Node:
    """A fresh copy of terminal T1 of store S1, catalogue loaded, nothing sold."""
    return Node(Path(shutil.copytree(_templates["t1"], tmp_path / "t1")))


@pytest.fixture
def pair(_templates: dict[str, Path], tmp_path: Path, _no_meshpos_env: None) -> tuple[Node, Node]:
    """Terminals T1 and T2 of store S1, in sync, catalogue loaded, nothing sold."""
    return (
        Node(Path(shutil.copytree(_templates["t1"], tmp_path / "t1"))),
        Node(Path(shutil.copytree(_templates["t2"], tmp_path / "t2"))),
    )


@pytest.fixture
def make_node(tmp_path: Path, _no_meshpos_env: None) -> Callable[..., Node]:
    """A new node directory; initialised with `store`/`name` unless `init=False`."""

    def make(name: str = "T9", store: str = "S1", *, init: bool = True) -> Node:
        n = Node(tmp_path / f"{store}-{name}")
        if init:
            n.ok("init", "--store", store, "--name", name, "--no-encrypt")
        return n

    return make


@pytest.fixture
def cli(_no_meshpos_env: None) -> Callable[[list[str]], CliResult]:
    return run_cli
