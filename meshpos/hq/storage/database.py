"""The seam between HQ's storage parts and its two databases: `Tx` (one open transaction),
`Database` (transactions on a pool of connections, and the SQL dialect) and the few SQL-building
helpers the parts share. SQLite (sqlite.py) and PostgreSQL (postgres.py) implement it; every part
writes its SQL once, with `?` placeholders, for both.
"""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")
C = TypeVar("C")

SQLValue = str | int | bytes | None
"""What HQ binds to a placeholder (a bool binds as 0 or 1)."""

Row = tuple[Any, ...]
"""A result row. Its column types depend on the query (and, for BLOB/BYTEA, the driver), so a
reader converts each column where it uses it."""

Record = dict[str, Any]
"""A result row keyed by column name: what reports serve as JSON."""

UPSERT_CHUNK = 500


class Tx(Protocol):
    """One open transaction. SQL uses `?` placeholders; the backend translates."""

    def execute(self, sql: str, params: Sequence[SQLValue] = ()) -> list[Row]: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[SQLValue]]) -> None: ...

    def select(self, sql: str, params: Sequence[SQLValue] = ()) -> list[Record]:
        """Rows as dicts keyed by result column name."""

    def insert_new(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[SQLValue]]
    ) -> None:
        """Insert rows whose keys are known to be new (checked under lock); the fast path.
        No `columns`: rows give every column of the table, in order."""

    def upsert(self, table: str, rows: Sequence[Sequence[SQLValue]], conflict: str) -> None:
        """`INSERT INTO table VALUES <rows> <conflict>`: rows give every column in order and
        do not repeat a key (a statement may not touch a row twice)."""

    def lock(self, keys: Iterable[str]) -> None:
        """Hold locks on these names until the transaction ends (taken in sorted order)."""


class Database(ABC):
    """What a backend provides: transactions on a pool of connections, and its SQL dialect."""

    backend: str
    blob: str
    integer: str
    for_update: str
    skip_locked: str

    @abstractmethod
    def transaction(self, write: bool = True) -> AbstractContextManager[Tx]: ...

    def run(self, fn: Callable[[Tx], T], write: bool = True) -> T:
        """Run `fn` in one transaction; backends retry it on a deadlock or serialisation error."""
        with self.transaction(write) as tx:
            return fn(tx)

    def query(self, sql: str, params: Sequence[SQLValue] = ()) -> list[Row]:
        """The rows of one read, in a read transaction of its own."""
        return self.run(lambda tx: tx.execute(sql, params), write=False)

    def select(self, sql: str, params: Sequence[SQLValue] = ()) -> list[Record]:
        """`query`, with rows as dicts keyed by column name (what reports serve as JSON)."""
        return self.run(lambda tx: tx.select(sql, params), write=False)

    @abstractmethod
    def close(self) -> None: ...

    def describe(self) -> str:
        return self.backend


class Pool(Generic[C]):
    """A bounded pool of database connections shared by the server's worker threads. Connections
    are made on demand, reused, and dropped when a use of them failed."""

    def __init__(
        self,
        connect: Callable[[], C],
        close: Callable[[C], None],
        size: int,
        broken: Callable[[C, BaseException], bool] = lambda conn, exc: False,
    ) -> None:
        self._connect, self._close, self._broken = connect, close, broken
        self._free: list[C] = []
        self._all: list[C] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)

    @contextmanager
    def connection(self) -> Iterator[C]:
        self._slots.acquire()
        try:
            with self._lock:
                conn = self._free.pop() if self._free else None
            if conn is None:
                conn = self._connect()
                with self._lock:
                    self._all.append(conn)
            try:
                yield conn
            except BaseException as exc:
                if self._broken(conn, exc):
                    self._discard(conn)
                else:
                    with self._lock:
                        self._free.append(conn)
                raise
            with self._lock:
                self._free.append(conn)
        finally:
            self._slots.release()

    def _discard(self, conn: C) -> None:
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)
        with contextlib.suppress(Exception):  # a broken connection may fail to close
            self._close(conn)

    def close(self) -> None:
        with self._lock:
            conns, self._all, self._free = self._all, [], []
        for conn in conns:
            with contextlib.suppress(Exception):  # at shutdown: nothing left to do with it
                self._close(conn)


def lock_key(store: str, name: str) -> str:
    """The lock on one chain (store, origin): every writer of that chain takes it first."""
    return f"{store}\x00{name}"


def upsert(tx: Tx, table: str, rows: Sequence[Sequence[SQLValue]], conflict: str) -> None:
    """`tx.upsert`, skipping the statement when there is nothing to write."""
    if rows:
        tx.upsert(table, rows, conflict)


def upsert_values(tx: Tx, table: str, rows: Sequence[Sequence[SQLValue]], conflict: str) -> None:
    """`INSERT ... VALUES (..), (..) ... ON CONFLICT ...` in chunks: one statement per few hundred
    rows, which runs far faster than one per row (how SQLite upserts, and the plain form
    PostgreSQL's array upsert is tested against)."""
    if not rows:
        return
    width = len(rows[0])
    one = "(" + ", ".join("?" * width) + ")"
    for lo in range(0, len(rows), UPSERT_CHUNK):
        chunk = rows[lo : lo + UPSERT_CHUNK]
        values = ", ".join([one] * len(chunk))
        tx.execute(
            f"INSERT INTO {table} VALUES {values} {conflict}",
            [v for row in chunk for v in row],
        )


def where(*conds: tuple[str, str | None]) -> tuple[str, tuple[str, ...]]:
    """A WHERE clause of the conditions whose value is given (a report's optional filters)."""
    used = [(c, v) for c, v in conds if v is not None]
    if not used:
        return "", ()
    return " WHERE " + " AND ".join(c for c, _ in used), tuple(v for _, v in used)


def chunks(items: Sequence[str], n: int = 500) -> Iterator[Sequence[str]]:
    """Slices of `items` short enough for one `IN (...)` list."""
    for i in range(0, len(items), n):
        yield items[i : i + n]


def optional_bytes(value: bytes | memoryview | None) -> bytes | None:
    """A nullable BLOB/BYTEA column as bytes."""
    return None if value is None else bytes(value)
