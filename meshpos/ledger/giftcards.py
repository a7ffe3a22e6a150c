"""Reads of gift cards and credit notes at a node: the `giftcard` registers (how each was issued)
and their balances, the sums of the escrow rights of their keys (see `giftcard.issue` and the
gift card tenders in fold.py)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from meshpos.domain.giftcards import escrow_key
from meshpos.domain.transfers import registers_of


class GiftCardViews:
    """As `Ledger.giftcards`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def issued(self, code: str) -> dict[str, Any] | None:
        """How the card was issued, None when no op of this store issued it."""
        found = registers_of(
            self.conn.execute(
                "SELECT key, field, value FROM registers WHERE entity = 'giftcard' AND key = ?",
                (code,),
            ).fetchall()
        )
        return found.get(code)

    def balance(self, code: str) -> int:
        """Paise left on the card: its rights over every node of the store (HQ's included)."""
        row = self.conn.execute(
            "SELECT COALESCE(SUM(points), 0) FROM rights WHERE customer_id = ?",
            (escrow_key(code),),
        ).fetchone()
        return int(row[0])

    def history(self, code: str) -> list[dict[str, Any]]:
        """Every move of the card's balance with authority, oldest first: issue, redemptions,
        HQ's moves between stores (hand-overs between counters net to nothing and are left
        out), each with the sale it belongs to when there is one and what it was: `issue`,
        `sale`, `exchange`, `return` (a credit note) or `hq` (moved between stores by HQ)."""
        issue = (self.issued(code) or {}).get("op")
        rows = self.conn.execute(
            "SELECT l.origin, l.seq, MIN(l.hlc), SUM(l.delta), s.sale_id, s.kind, s.ts_ms "
            "FROM rights_log l LEFT JOIN sales s ON s.origin = l.origin AND s.seq = l.seq "
            "WHERE l.customer_id = ? AND l.authority = 1 "
            "GROUP BY l.origin, l.seq HAVING SUM(l.delta) != 0 ORDER BY MIN(l.hlc), l.origin",
            (escrow_key(code),),
        ).fetchall()
        return [
            {
                "op": f"{origin}:{seq}",
                "hlc": hlc,
                "delta": int(delta),
                "sale_id": sale_id,
                "kind": kind or ("issue" if f"{origin}:{seq}" == issue else "hq"),
                "ts_ms": ts_ms if ts_ms is not None else self._issued_ms(code, origin, seq),
            }
            for origin, seq, hlc, delta, sale_id, kind, ts_ms in rows
        ]

    def _issued_ms(self, code: str, origin: str, seq: int) -> int | None:
        fields = self.issued(code) or {}
        return fields.get("issued_ms") if fields.get("op") == f"{origin}:{seq}" else None

    def of_customer(self, customer_id: str) -> list[dict[str, Any]]:
        """Cards and credit notes issued to a customer, newest first, with their balances."""
        keys = [
            str(k)
            for (k,) in self.conn.execute(
                "SELECT key FROM registers WHERE entity = 'giftcard' AND field = 'customer' "
                "AND value = ?",
                (json.dumps(customer_id),),
            )
        ]
        out = []
        for code in keys:
            fields = self.issued(code) or {}
            out.append({"code": code, **fields, "balance": self.balance(code)})
        return sorted(out, key=lambda c: -int(c.get("issued_ms") or 0))

    def sold(self, origin: str, after_seq: int = 0) -> list[dict[str, Any]]:
        """Gift cards `origin` sold after its op `after_seq` (a shift's): code, amount and how
        each was paid (its tenders), oldest first."""
        cards = registers_of(
            self.conn.execute(
                "SELECT r.key, r.field, r.value FROM registers r WHERE r.entity = 'giftcard' "
                "AND r.key IN (SELECT key FROM registers WHERE entity = 'giftcard' "
                "AND field = 'op' AND substr(value, 1, ?) = ?)",
                (len(origin) + 2, f'"{origin}:'),
            ).fetchall()
        )
        out = []
        for code, fields in cards.items():
            seq = int(str(fields.get("op", ":0")).rpartition(":")[2] or 0)
            if seq > after_seq:
                out.append({"code": code, "seq": seq, **fields})
        return sorted(out, key=lambda c: c["seq"])
