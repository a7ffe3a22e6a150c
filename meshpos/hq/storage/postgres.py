"""HQ on PostgreSQL: for chains, many HQ processes (on many machines) over one database.

Same schema and SQL as SQLite (`?` placeholders become `%s`). What differs is concurrency: several
writers run at once, so each chain `(store, origin)` is taken under a transaction-scoped advisory
lock before its head is read (`pg_advisory_xact_lock`, keys in sorted order), counter rows are
upserted in key order, payment jobs are claimed with `FOR UPDATE SKIP LOCKED`, and a transaction
that still loses a deadlock or serialisation race is retried.

Bulk writes cost one statement each, whatever their size: new rows (ops, sales, the rulebook's
logs) go in by binary `COPY`, and upserts bind one binary array per column (`%b`, `INSERT ...
SELECT * FROM unnest(...) ON CONFLICT ...`), so neither the client nor the server formats or
parses a value per row as text (text arrays cost the client ~8x and the server ~3x as much).
Both need each table's column types, read once per process from the catalogue. Upserts and
locks are sent in pipeline mode as they are made, and not waited for until a statement reads
(`PostgresTx`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import TupleRow

from meshpos.core.errors import ConfigError
from meshpos.hq.storage.database import Database, Pool, Record, Row, SQLValue, Tx

T = TypeVar("T")
log = logging.getLogger("meshpos.hq.pg")
_MARK = re.compile(r"\?")
RETRIES = 5


def lock_id(key: str) -> int:
    """A signed 64-bit advisory lock id for a name."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


Columns = list[tuple[str, str]]
"""A table's columns in order: (name, type name as `pg_type` spells it: text, int8, bytea)."""


class ColumnTypes:
    """Each table's column types, read from the catalogue on first use (the schema is made
    before any transaction of HQ's runs, and does not change while HQ runs)."""

    def __init__(self) -> None:
        self._tables: dict[str, Columns] = {}

    def of(self, cur: psycopg.Cursor[TupleRow], table: str) -> Columns:
        found = self._tables.get(table)
        if found is None:
            cur.execute(
                "SELECT a.attname, t.typname FROM pg_attribute a "
                "JOIN pg_type t ON t.oid = a.atttypid WHERE a.attrelid = %s::regclass "
                "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                (table,),
            )
            found = [(str(n), str(t)) for n, t in cur.fetchall()]
            if not found:
                raise AssertionError(f"table {table} has no columns")
            self._tables[table] = found
        return found

    def known(self, table: str) -> bool:
        return table in self._tables


class PostgresTx:
    """One transaction on one connection. Writes and locks, which answer nothing the caller
    reads, go out at once in pipeline mode and are not waited for: the server stores them while
    the caller works on (judging and folding the batch, on the other core). The next statement
    that reads ends the pipeline and waits for everything before it, and so does the commit."""

    def __init__(self, cur: psycopg.Cursor[TupleRow], types: ColumnTypes) -> None:
        self.cur = cur
        self.types = types
        self._pipeline: contextlib.ExitStack | None = None  # open while writes are unanswered
        self._writes: psycopg.Cursor[TupleRow] | None = None

    @staticmethod
    def _sql(sql: str) -> str:
        return _MARK.sub("%s", sql)

    def _send(self, sql: str, params: Sequence[Any]) -> None:
        """Send a write in the open pipeline (opened here), without waiting for its answer."""
        if self._writes is None:
            conn = self.cur.connection
            self._pipeline = contextlib.ExitStack()
            self._writes = conn.cursor()
            self._pipeline.callback(self._writes.close)  # after the pipeline has its answers
            self._pipeline.enter_context(conn.pipeline())
        self._writes.execute(sql, params)

    def _run(self, sql: str, params: Sequence[Any]) -> None:
        """Run `sql` on `self.cur` after the writes sent before it (in their pipeline)."""
        self.cur.execute(sql, params)
        self.flush()

    def flush(self) -> None:
        """End the pipeline: wait for every statement sent (raising the first one's error)."""
        pipeline, self._pipeline, self._writes = self._pipeline, None, None
        if pipeline is not None:
            pipeline.close()

    def abort(self) -> None:
        """Leave the pipeline after an error (the transaction is rolled back: answers unread)."""
        pipeline, self._pipeline, self._writes = self._pipeline, None, None
        if pipeline is not None:
            with contextlib.suppress(psycopg.Error):
                pipeline.close()

    def execute(self, sql: str, params: Sequence[SQLValue] = ()) -> list[Row]:
        self._run(self._sql(sql), tuple(params))
        return self.cur.fetchall() if self.cur.description else []

    def executemany(self, sql: str, rows: Iterable[Sequence[SQLValue]]) -> None:
        batch = [tuple(r) for r in rows]
        if batch:
            self.flush()
            self.cur.executemany(self._sql(sql), batch)

    def select(self, sql: str, params: Sequence[SQLValue] = ()) -> list[Record]:
        self._run(self._sql(sql), tuple(params))
        names = [d.name for d in self.cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in self.cur.fetchall()]

    def _columns(self, table: str) -> Columns:
        if self._pipeline is not None and not self.types.known(table):
            self.flush()  # the catalogue read, once per table and process
        return self.types.of(self.cur, table)

    def insert_new(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[SQLValue]]
    ) -> None:
        if not rows:
            return
        types = dict(self._columns(table))
        names = list(columns) if columns else list(types)
        self.flush()  # no other statement may run in a pipeline with a COPY
        with self.cur.copy(f"COPY {table} ({', '.join(names)}) FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types([types[n] for n in names])
            for row in rows:
                cp.write_row(row)

    def upsert(self, table: str, rows: Sequence[Sequence[SQLValue]], conflict: str) -> None:
        arrays = ", ".join(f"%b::{t}[]" for _, t in self._columns(table))  # binary: no text
        self._send(
            f"INSERT INTO {table} SELECT * FROM unnest({arrays}) {conflict}",
            [list(column) for column in zip(*rows, strict=True)],
        )

    def lock(self, keys: Iterable[str]) -> None:
        """Sent like a write: the server takes the locks, in this order, before it runs the next
        statement, which is the first that could read what they guard."""
        for key in sorted(set(keys)):
            self._send("SELECT pg_advisory_xact_lock(%s)", (lock_id(key),))


def _broken(conn: psycopg.Connection[TupleRow], exc: BaseException) -> bool:
    return conn.broken or conn.closed or isinstance(exc, psycopg.OperationalError)


class PostgresDatabase(Database):
    backend = "postgresql"
    blob = "BYTEA"
    integer = "BIGINT"
    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str, *, pool_size: int = 8, durable: bool = True) -> None:
        self.url = url
        self.durable = durable
        self.types = ColumnTypes()
        self.pool: Pool[psycopg.Connection[TupleRow]] = Pool(
            self._connect, psycopg.Connection.close, pool_size, _broken
        )
        with self.pool.connection():
            pass  # fail now, with a clear message, if the database cannot be reached

    def _connect(self) -> psycopg.Connection[TupleRow]:
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no answer"
            raise ConfigError(f"cannot connect to the HQ database: {first}") from None
        if not self.durable:
            conn.execute("SET synchronous_commit = off")
        return conn

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Tx]:
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            tx = PostgresTx(cur, self.types)
            try:
                yield tx
            except BaseException:
                tx.abort()
                raise
            tx.flush()

    def run(self, fn: Callable[[Tx], T], write: bool = True) -> T:
        for attempt in range(RETRIES):
            try:
                with self.transaction(write) as tx:
                    return fn(tx)
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure) as exc:
                if attempt == RETRIES - 1:
                    raise
                log.warning("retrying a transaction after %s", type(exc).__name__)
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.pool.close()

    def describe(self) -> str:
        return "postgresql " + re.sub(r"://[^@/]*@", "://***@", self.url)
