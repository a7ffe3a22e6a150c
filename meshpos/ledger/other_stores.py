"""Other stores' stock as HQ last saw it, cached at this node: what the till shows when a
customer asks whether another store has an item, with its age when the store is offline.

Node-local, never replicated: each counter's relay worker pulls it from HQ while HQ answers
(meshpos/service/transfers.py), and a store replaced whole keeps no row of its old stock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from meshpos.ledger.records import WriteTx


class OtherStores:
    """The `other_stores` and `other_stock` tables, as `Ledger.other_stores`."""

    def __init__(self, conn: sqlite3.Connection, write: WriteTx) -> None:
        self.conn = conn
        self._write = write

    def versions(self) -> dict[str, int]:
        """What this node holds of each store (HQ's op count for it when pulled)."""
        return dict(self.conn.execute("SELECT store, version FROM other_stores").fetchall())

    def replace(
        self,
        stores: Iterable[Mapping[str, Any]],
        fetched_ms: int,
        keep: Iterable[str] = (),
    ) -> None:
        """Store HQ's answer: each store given (store, name, version, as_of_ms, stock {sku:
        qty}) replaces what was held of it; stores neither given nor in `keep` (HQ's list of the
        unchanged ones) are gone at HQ and dropped. Stores kept are marked fetched now."""
        given = list(stores)
        names = {str(s["store"]) for s in given} | set(keep)
        with self._write():
            held = [r[0] for r in self.conn.execute("SELECT store FROM other_stores")]
            for store in held:
                if store not in names:
                    self.conn.execute("DELETE FROM other_stores WHERE store = ?", (store,))
                    self.conn.execute("DELETE FROM other_stock WHERE store = ?", (store,))
            self.conn.executemany(
                "UPDATE other_stores SET fetched_ms = ? WHERE store = ?",
                [(fetched_ms, s) for s in keep],
            )
            for s in given:
                store = str(s["store"])
                self.conn.execute("DELETE FROM other_stock WHERE store = ?", (store,))
                self.conn.execute(
                    "INSERT OR REPLACE INTO other_stores VALUES (?, ?, ?, ?, ?)",
                    (store, str(s["name"]), int(s["version"]), int(s["as_of_ms"]), fetched_ms),
                )
                self.conn.executemany(
                    "INSERT INTO other_stock VALUES (?, ?, ?)",
                    [(store, str(sku), int(q)) for sku, q in dict(s["stock"]).items()],
                )

    def stock_of(self, sku: str) -> list[dict[str, Any]]:
        """Every other store's last known stock of `sku` (0 where HQ knows the store but not
        the SKU), with when HQ last heard from that store and when this node pulled it."""
        rows = self.conn.execute(
            "SELECT s.store, s.name, COALESCE(k.qty, 0), s.as_of_ms, s.fetched_ms "
            "FROM other_stores s LEFT JOIN other_stock k ON k.store = s.store AND k.sku = ? "
            "ORDER BY COALESCE(k.qty, 0) DESC, s.store",
            (sku,),
        ).fetchall()
        return [
            {"store": r[0], "name": r[1], "qty": int(r[2]), "as_of_ms": r[3], "fetched_ms": r[4]}
            for r in rows
        ]

    def stores(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT store, name, version, as_of_ms, fetched_ms FROM other_stores ORDER BY store"
        ).fetchall()
        keys = ("store", "name", "version", "as_of_ms", "fetched_ms")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def snapshot(self) -> list[dict[str, Any]]:
        """Every store held, with its stock, in the shape `replace` takes (a practice ledger
        starts from the real one's copy)."""
        out = self.stores()
        for s in out:
            s["stock"] = dict(
                self.conn.execute(
                    "SELECT sku, qty FROM other_stock WHERE store = ?", (s["store"],)
                ).fetchall()
            )
        return out
