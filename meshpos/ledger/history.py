"""A customer's history as this node's views hold it: recent sales, returns and exchanges with
their lines, and the sizes bought per category, net of returns (all local and offline)."""

from __future__ import annotations

import sqlite3
from typing import Any


class CustomerHistory:
    """As `Ledger.history`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def visits(self, customer_id: str, limit: int = 10) -> list[dict[str, Any]]:
        """The customer's latest sales, returns and exchanges, newest first, each with its lines
        (SKU, name, size, signed quantity: negative for what came back)."""
        cur = self.conn.execute(
            "SELECT sale_id, kind, ts_ms, total, terminal, origin, seq, ref_sale, number "
            "FROM sales WHERE customer_id = ? ORDER BY ts_ms DESC, sale_id DESC LIMIT ?",
            (customer_id, limit),
        )
        visits = []
        for sale_id, kind, ts, total, terminal, origin, seq, ref, number in cur.fetchall():
            lines = [
                {"sku": sku, "name": name, "size": size or "", "qty": qty}
                for sku, name, size, qty in self.conn.execute(
                    "SELECT l.sku, l.name, p.size, l.qty FROM sale_lines l "
                    "LEFT JOIN products p ON p.sku = l.sku WHERE l.origin = ? AND l.seq = ? "
                    "ORDER BY l.line",
                    (origin, seq),
                )
            ]
            visits.append(
                {
                    "sale_id": sale_id,
                    "kind": kind,
                    "ts_ms": ts,
                    "total": total,
                    "terminal": terminal,
                    "ref_sale": ref,
                    "paper": number == 0,
                    "lines": lines,
                }
            )
        return visits

    def sizes(self, customer_id: str) -> list[dict[str, Any]]:
        """Sizes the customer kept, per category: pieces bought less pieces returned, most
        bought first (what a cashier asks: "you take an M in shirts?")."""
        return [
            {"category": category or "", "size": size, "qty": int(qty)}
            for category, size, qty in self.conn.execute(
                "SELECT l.category, p.size, SUM(l.qty) AS n FROM sale_lines l "
                "JOIN sales s ON s.origin = l.origin AND s.seq = l.seq "
                "JOIN products p ON p.sku = l.sku "
                "WHERE s.customer_id = ? AND p.size != '' "
                "GROUP BY l.category, p.size HAVING n > 0 ORDER BY n DESC, l.category, p.size",
                (customer_id,),
            )
        ]

    def totals(self, customer_id: str) -> dict[str, int]:
        """Visits, what they spent net of refunds, and the first and last visit's time."""
        row = self.conn.execute(
            "SELECT COUNT(*) FILTER (WHERE kind != 'return'), COUNT(*) FILTER (WHERE kind = "
            "'return'), COALESCE(SUM(total), 0), MIN(ts_ms), MAX(ts_ms) FROM sales "
            "WHERE customer_id = ?",
            (customer_id,),
        ).fetchone()
        return {
            "purchases": int(row[0]),
            "returns": int(row[1]),
            "spent": int(row[2]),
            "first_ms": row[3],
            "last_ms": row[4],
        }
