"""Node directories, real `meshpos node run` daemons and the CLI in-process, for the mesh
integration tests.

- `make_store()` builds enrolled node directories in-process (store key on the first, the others
  enrolled through the same request/sign/install steps as the CLI), in well under a second.
- `Daemons` (meshpos/demo/processes.py, shared with the demos and the benches) starts
  `meshpos node run` subprocesses (optionally inside a network namespace), each logging to a file
  in its node directory, and stops every one it started when the block ends, whatever happened.
- `wait_until()` is the one way tests wait: poll a predicate until a deadline, then fail naming
  what was awaited and the tail of every daemon log.
- Read helpers open a short-lived SQLite connection per call, so a test never holds a database
  that a daemon writes or that a test deletes.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
from conftest import CliResult, run_cli

from meshpos.core.clock import HLC
from meshpos.core.ops import make_op
from meshpos.demo.processes import MESHPOS as MESHPOS
from meshpos.demo.processes import Daemon as Daemon
from meshpos.demo.processes import Daemons as Daemons
from meshpos.domain.catalog import parse_csv
from meshpos.ledger.schema import VIEW_TABLES
from meshpos.node import membership
from meshpos.service.config import DB_FILE, init_node, load_config
from meshpos.service.terminal import Terminal

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "meshpos" / "data" / "sample_catalog.csv"
T = TypeVar("T")


def unique_store(prefix: str = "S") -> str:
    """A store id no other test (or concurrent run) on this host's loopback mDNS uses."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


# -- building node directories ------------------------------------------------------------------


def make_store(
    base: Path,
    names: Sequence[str],
    *,
    store: str | None = None,
    catalog: bool = True,
    mesh: dict[str, Any] | None = None,
) -> list[Path]:
    """Node directories of one store: `store init` on the first, the others enrolled by it.

    The first imports the sample catalogue when `catalog` is set; the others start empty and get
    it over the mesh. `mesh` becomes the `[mesh]` table of every node's meshpos.toml.
    """
    store = store or unique_store()
    dirs = [base / name for name in names]
    first = _init(dirs[0], store, names[0], mesh)
    try:
        membership.store_init(first)
        if catalog:
            first.import_catalog(parse_csv(SAMPLE.read_text(), SAMPLE.name))
        for directory, name in zip(dirs[1:], names[1:], strict=True):
            enrol(first, _init(directory, store, name, mesh))
    finally:
        first.close()
    return dirs


def enrol(holder: Terminal, directory: Path | Terminal) -> None:
    """`enroll request` on the node, `enroll sign` on `holder`, `enroll install` on the node."""
    t = Terminal.open(directory) if isinstance(directory, Path) else directory
    try:
        membership.install(t, membership.sign(holder, membership.request(t)))
    finally:
        t.close()


def _init(directory: Path, store: str, name: str, mesh: dict[str, Any] | None) -> Terminal:
    cfg = init_node(directory, store, name)
    if mesh:
        for key, value in mesh.items():
            membership.set_config(cfg, "mesh", key, value)
    return Terminal.open(directory)


def set_mesh(directory: Path, **values: Any) -> None:
    t = Terminal.open(directory)
    try:
        for key, value in values.items():
            membership.set_config(t.cfg, "mesh", key, value)
    finally:
        t.close()


# -- the CLI, in-process ------------------------------------------------------------------------


def meshpos(directory: Path, *args: str, check: bool = True) -> CliResult:
    """Run `meshpos --dir DIR ARGS` in this process (the same code the console script runs)."""
    run = run_cli(["--dir", str(directory), *args])
    if check and run.code != 0:
        raise AssertionError(
            f"meshpos {' '.join(args)} in {directory} exited {run.code}: {run.err}"
        )
    return run


def sell(directory: Path, *items: str) -> dict[str, Any]:
    sale: dict[str, Any] = meshpos(directory, "sell", *items, "--json").json()
    return sale


# -- reading a node's database ------------------------------------------------------------------


@contextlib.contextmanager
def db(directory: Path) -> Iterator[sqlite3.Connection]:
    # mode=rw: never create the file (a test must not stand in for a node's missing database)
    conn = sqlite3.connect(f"file:{directory / DB_FILE}?mode=rw", uri=True, timeout=30)
    try:
        yield conn
    finally:
        conn.close()


def vv(directory: Path) -> dict[str, int]:
    with db(directory) as conn:
        return dict(conn.execute("SELECT origin, seq FROM vv").fetchall())


def pending(directory: Path) -> int:
    with db(directory) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM pending").fetchone()[0])


def count_ops(directory: Path, origin: str | None = None) -> int:
    with db(directory) as conn:
        if origin is None:
            return int(conn.execute("SELECT COUNT(*) FROM ops").fetchone()[0])
        row = conn.execute("SELECT COUNT(*) FROM ops WHERE origin = ?", (origin,)).fetchone()
        return int(row[0])


def has_op(directory: Path, origin: str, seq: int) -> bool:
    with db(directory) as conn:
        row = conn.execute("SELECT 1 FROM ops WHERE origin = ? AND seq = ?", (origin, seq))
        return row.fetchone() is not None


def stock(directory: Path) -> dict[str, int]:
    with db(directory) as conn:
        return dict(conn.execute("SELECT sku, qty FROM stock").fetchall())


def qty(directory: Path, sku: str) -> int:
    return stock(directory).get(sku, 0)


def sale_ids(directory: Path) -> set[str]:
    with db(directory) as conn:
        return {r[0] for r in conn.execute("SELECT DISTINCT sale_id FROM sales")}


def views(directory: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every materialised view, canonically ordered, to compare replicas table by table."""
    with db(directory) as conn:
        return {
            table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
            for table in VIEW_TABLES
        }


def node_id(directory: Path) -> str:
    return str(load_config(directory).node_id)


def store_of(directory: Path) -> str:
    return str(load_config(directory).store)


def converged(dirs: Sequence[Path]) -> bool:
    """Same version vector everywhere and no op waiting past a gap (False while a node's
    database is still being created)."""
    try:
        first = vv(dirs[0])
        return all(vv(d) == first for d in dirs[1:]) and not any(pending(d) for d in dirs)
    except sqlite3.OperationalError:
        return False


def backlog(directory: Path, n: int, sku: str = "TSH-NAV-M") -> tuple[str, int]:
    """`n` signed stock receipts appended at the node in one transaction (what it rang while
    away, at bulk speed); returns (origin, last seq). A running daemon pushes them at once."""
    t = Terminal.open(directory)
    try:
        seq, prev = t.ledger.head(t.node_id)
        clock = HLC(t.ledger.max_hlc())
        ops = []
        for k in range(n):
            op = make_op(
                t.signer,
                store=t.cfg.store,
                seq=seq + 1 + k,
                hlc=clock.now(t.now_ms()),
                user="cashier",
                kind="stock.receive",
                payload={"sku": sku, "delta": 1, "reason": f"count {k}"},
                prev=prev,
            )
            prev = op.hash
            ops.append(op)
        t.ledger.ingest(ops)
        return t.node_id, seq + n
    finally:
        t.close()


def wipe(directory: Path) -> list[str]:
    """The disk died: delete the database and its WAL/SHM files; the keys and config stay."""
    gone = []
    for path in directory.glob(DB_FILE + "*"):
        path.unlink()
        gone.append(path.name)
    return gone


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    daemons: Daemons | None = None,
    interval: float = 0.02,
) -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            logs = f"\ndaemon logs:\n{daemons.logs()}" if daemons else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{logs}")
        time.sleep(interval)


def wait_serving(
    url: str, daemons: Daemons, what: str = "the daemon to serve the web till"
) -> None:
    """Wait until the daemon behind `url` serves the web till (its banner says a daemon runs)."""

    def serving() -> bool:
        try:
            return bool(httpx.get(url + "/api/banner", timeout=1).json().get("daemon"))
        except (httpx.HTTPError, ValueError):
            return False

    wait_until(serving, 30, what, daemons)
