"""Peer acknowledgements: how far each peer confirmed holding this node's own ops durably.

The daemon records them as sync sessions report peers' version vectors; a selling process reads
the highest to tell a cashier that a sale exists on a second terminal (meshpos/service/
daemon_link.py). Node-local, never replicated.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from meshpos.ledger.records import WriteTx


class PeerAcks:
    """The `peer_acks` table over the ledger's connection, as `Ledger.peer_acks`."""

    def __init__(self, conn: sqlite3.Connection, write: WriteTx) -> None:
        self.conn = conn
        self._write = write

    def record(self, acks: Iterable[tuple[str, int, int]]) -> None:
        """Store (peer, highest seq of ours it holds, when we learnt it in ms) rows."""
        rows = list(acks)
        if rows:
            with self._write():
                self.conn.executemany("INSERT OR REPLACE INTO peer_acks VALUES (?, ?, ?)", rows)

    def highest(self) -> int:
        """The highest seq of this node's ops some peer confirmed (0 if none)."""
        row = self.conn.execute("SELECT MAX(seq) FROM peer_acks").fetchone()
        return int(row[0] or 0)


@contextmanager
def advisory_acks(open_conn: sqlite3.Connection) -> Iterator[PeerAcks]:
    """`PeerAcks` over a connection of its own with `synchronous=OFF`, for the daemon: acks are
    advice (a power cut can only make the count lower), so recording one costs no fsync on the
    path of a sale. The connection is closed on exit."""
    open_conn.execute("PRAGMA busy_timeout = 30000")
    open_conn.execute("PRAGMA synchronous = OFF")

    @contextmanager
    def write() -> Iterator[None]:
        open_conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            open_conn.execute("ROLLBACK")
            raise
        open_conn.execute("COMMIT")

    try:
        yield PeerAcks(open_conn, write)
    finally:
        open_conn.close()
