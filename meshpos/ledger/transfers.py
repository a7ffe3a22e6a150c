"""Reads of the stock-transfer registers at a node: transfers this store sent, those HQ said are on
their way here, and what was counted in (see the `transfer.*` rules in fold.py)."""

from __future__ import annotations

import sqlite3
from typing import Any

from meshpos.domain.transfers import registers_of

ENTITIES = ("transfer_out", "transfer_expect", "transfer_in")


class TransferViews:
    """As `Ledger.transfers`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def _entity(
        self, entity: str, lo: str = "", hi: str = "\U0010ffff"
    ) -> dict[str, dict[str, Any]]:
        return registers_of(
            self.conn.execute(
                "SELECT key, field, value FROM registers WHERE entity = ? AND key >= ? AND key < ?",
                (entity, lo, hi),
            ).fetchall()
        )

    def sent(self, tid: str | None = None) -> dict[str, dict[str, Any]]:
        return self._entity("transfer_out", *((tid, tid + "\x00") if tid else ()))

    def expected(self, tid: str | None = None) -> dict[str, dict[str, Any]]:
        return self._entity("transfer_expect", *((tid, tid + "\x00") if tid else ()))

    def receipts(self, tid: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Receipts per transfer id (more than one when two counters counted the same parcel)."""
        rows = self._entity("transfer_in", *((tid + "#", tid + "$") if tid else ()))
        out: dict[str, list[dict[str, Any]]] = {}
        for key, fields in sorted(rows.items()):
            out.setdefault(key.partition("#")[0], []).append(fields)
        return out
