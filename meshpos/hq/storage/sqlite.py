"""HQ on SQLite: the zero-set-up default (one file in the HQ directory).

WAL and `synchronous=FULL`, like the node ledger: an acknowledged batch is on disk. Every write is
`BEGIN IMMEDIATE`, which serialises writers across threads and processes, so per-chain locks are
not needed; several HQ processes on one machine may share the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from meshpos.core.errors import LocalError
from meshpos.hq.storage.database import Database, Pool, Record, Row, SQLValue, upsert_values
from meshpos.ledger.encryption import create_owner_only


class SQLiteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[SQLValue] = ()) -> list[Row]:
        return self.conn.execute(sql, tuple(params)).fetchall()

    def executemany(self, sql: str, rows: Iterable[Sequence[SQLValue]]) -> None:
        self.conn.executemany(sql, rows)

    def select(self, sql: str, params: Sequence[SQLValue] = ()) -> list[Record]:
        cur = self.conn.execute(sql, tuple(params))
        names = [d[0] for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def insert_new(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[SQLValue]]
    ) -> None:
        if not rows:
            return
        named = f" ({', '.join(columns)})" if columns else ""
        marks = ", ".join("?" * len(rows[0]))
        self.conn.executemany(f"INSERT INTO {table}{named} VALUES ({marks})", rows)

    def upsert(self, table: str, rows: Sequence[Sequence[SQLValue]], conflict: str) -> None:
        upsert_values(self, table, rows, conflict)

    def lock(self, keys: Iterable[str]) -> None:
        """BEGIN IMMEDIATE already holds the database's single write lock."""


class SQLiteDatabase(Database):
    backend = "sqlite"
    blob = "BLOB"
    integer = "INTEGER"
    for_update = ""
    skip_locked = ""

    def __init__(self, path: str | Path, *, pool_size: int = 8, durable: bool = True) -> None:
        self.path = str(path)
        if self.path != ":memory:" and not Path(self.path).parent.is_dir():
            raise LocalError(f"cannot create the HQ database {self.path}: no such directory")
        self._sync = "FULL" if durable else "OFF"
        create_owner_only(self.path)  # hq.db, its WAL and SHM: 0600
        size = 1 if self.path == ":memory:" else pool_size
        self.pool: Pool[sqlite3.Connection] = Pool(self._connect, sqlite3.Connection.close, size)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 30000")
        if self.path != ":memory:":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self._sync}")
        return conn

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[SQLiteTx]:
        with self.pool.connection() as conn:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield SQLiteTx(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        self.pool.close()

    def describe(self) -> str:
        return f"sqlite {self.path}"
