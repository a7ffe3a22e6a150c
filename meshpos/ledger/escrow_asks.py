"""Escrow asks: rights a selling process needs from peers, left for the daemon to send.

A till short of loyalty or card-float rights cannot talk to peers itself; it writes an ask into
the node-local `escrow_asks` table, and the node's daemon takes the unsent ones and sends each to
the peers that hold rights (meshpos/service/escrow.py).
"""

from __future__ import annotations

import sqlite3

from meshpos.ledger.records import WriteTx


class EscrowAsks:
    """The `escrow_asks` table over the ledger's connection, as `Ledger.escrow_asks`."""

    def __init__(self, conn: sqlite3.Connection, write: WriteTx) -> None:
        self.conn = conn
        self._write = write

    def add(self, customer_id: str, points: int, at_ms: int) -> None:
        with self._write():
            self.conn.execute(
                "INSERT INTO escrow_asks (customer_id, points, at_ms) VALUES (?, ?, ?)",
                (customer_id, points, at_ms),
            )

    def take_unsent(self) -> list[tuple[str, int]]:
        """(customer, points) of asks not yet sent, oldest first, marked sent as they are taken."""
        with self._write():
            rows = self.conn.execute(
                "SELECT id, customer_id, points FROM escrow_asks WHERE sent = 0 ORDER BY id"
            ).fetchall()
            self.conn.executemany(
                "UPDATE escrow_asks SET sent = 1 WHERE id = ?", [(r[0],) for r in rows]
            )
        return [(str(r[1]), int(r[2])) for r in rows]
