"""Parked carts: sales a cashier put on hold at this counter, to recall later.

A customer steps away to fetch a size, the next one is served, the first comes back. The cart is
kept in the node database (node-local, never replicated: it is not a business fact until it is
sold), so it survives a sign-out, a restart of the till and a power cut. Its document is what the
till needs to ring it again (meshpos/service/till.py); this table only stores it.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from meshpos.ledger.records import WriteTx


@dataclass(frozen=True)
class ParkedCart:
    id: int
    label: str
    user: str
    held_ms: int
    items: int
    total: int  # paise, as priced when held
    doc: dict[str, Any]


class ParkedCarts:
    """The `parked_carts` table over the ledger's connection, as `Ledger.parked`."""

    def __init__(self, conn: sqlite3.Connection, write: WriteTx) -> None:
        self.conn = conn
        self._write = write

    def add(
        self, label: str, user: str, held_ms: int, items: int, total: int, doc: dict[str, Any]
    ) -> int:
        with self._write():
            cur = self.conn.execute(
                "INSERT INTO parked_carts (label, user, held_ms, items, total, doc) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (label, user, held_ms, items, total, json.dumps(doc, sort_keys=True)),
            )
            return int(cur.lastrowid or 0)

    def all(self) -> list[ParkedCart]:
        """Oldest first: the customer who has waited longest is served first."""
        rows = self.conn.execute(
            "SELECT id, label, user, held_ms, items, total, doc FROM parked_carts ORDER BY id"
        ).fetchall()
        return [_cart(r) for r in rows]

    def get(self, cart_id: int) -> ParkedCart | None:
        row = self.conn.execute(
            "SELECT id, label, user, held_ms, items, total, doc FROM parked_carts WHERE id = ?",
            (cart_id,),
        ).fetchone()
        return _cart(row) if row else None

    def take(self, cart_id: int) -> ParkedCart | None:
        """Remove a cart and return it (None if another till recalled it first)."""
        with self._write():
            found = self.get(cart_id)
            if found is not None:
                self.conn.execute("DELETE FROM parked_carts WHERE id = ?", (cart_id,))
        return found


def _cart(row: Any) -> ParkedCart:
    return ParkedCart(
        id=int(row[0]),
        label=str(row[1]),
        user=str(row[2]),
        held_ms=int(row[3]),
        items=int(row[4]),
        total=int(row[5]),
        doc=json.loads(row[6]),
    )
