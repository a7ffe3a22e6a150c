"""What HQ's chain views show needs a person's look, per store: stock below zero (more sold than
the store held, say two counters selling the last unit while split), loyalty points below zero,
stock of a SKU no catalogue names, card payments the acquirer declined, and the rulebook's open
conflicts (ops stored without the authority they need, meshpos/hq/storage/judging.py).

These are the conditions behind the stores' own conflicts (meshpos/ledger/apply.py), read from
HQ's views. A store's acknowledgements (`conflict.resolve`) are not folded at HQ, so an item a
manager already handled still shows until its condition ends; the dashboard says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from meshpos.hq.storage.database import Database, SQLValue

OVERSELL = "oversell"
NEGATIVE_POINTS = "negative_points"
UNKNOWN_PRODUCT = "unknown_product"
PAYMENT_DECLINED = "payment_declined"


@dataclass(frozen=True)
class Anomaly:
    store: str
    kind: str
    subject: str
    detail: dict[str, Any] = field(default_factory=dict)


class Anomalies:
    def __init__(self, db: Database) -> None:
        self.db = db

    def open(self, store: str | None = None, limit: int = 500) -> list[Anomaly]:
        """Every open item (of one store), by store then kind, at most `limit` of each kind."""
        one = " AND s.store = ?" if store else ""
        p: list[SQLValue] = [store] if store else []
        out: list[Anomaly] = []
        for st, sku, qty, name in self.db.query(
            "SELECT s.store, s.sku, s.qty, n.value FROM stock s LEFT JOIN registers n "
            "ON n.store = s.store AND n.entity = 'product' AND n.key = s.sku AND n.field = 'name' "
            f"WHERE s.qty < 0{one} ORDER BY s.store, s.sku LIMIT ?",
            [*p, limit],
        ):
            detail = {"sku": sku, "stock": int(qty), "name": json.loads(name) if name else ""}
            out.append(Anomaly(str(st), OVERSELL, str(sku), detail))
        for st, sku, qty in self.db.query(
            "SELECT s.store, s.sku, s.qty FROM stock s WHERE NOT EXISTS (SELECT 1 FROM registers r "
            "WHERE r.store = s.store AND r.entity = 'product' AND r.key = s.sku)"
            f"{one} ORDER BY s.store, s.sku LIMIT ?",
            [*p, limit],
        ):
            out.append(Anomaly(str(st), UNKNOWN_PRODUCT, str(sku), {"sku": sku, "stock": int(qty)}))
        for st, cid, points in self.db.query(
            f"SELECT s.store, s.customer_id, s.points FROM loyalty s WHERE s.points < 0{one} "
            "ORDER BY s.store, s.customer_id LIMIT ?",
            [*p, limit],
        ):
            detail = {"customer_id": cid, "points": int(points)}
            out.append(Anomaly(str(st), NEGATIVE_POINTS, str(cid), detail))
        for st, sale, amount, brand, last4, code, message in self.db.query(
            "SELECT s.store, s.sale_id, s.amount, s.brand, s.last4, s.code, s.message "
            f"FROM payments s WHERE s.status = 'declined'{one} "
            "ORDER BY s.store, s.created_ms LIMIT ?",
            [*p, limit],
        ):
            detail = {
                "sale_id": sale, "amount": int(amount), "card": f"{brand} ending {last4}",
                "code": code, "reason": message,
            }  # fmt: skip
            out.append(Anomaly(str(st), PAYMENT_DECLINED, str(sale), detail))
        for st, kind, subject, raw in self.db.query(
            f"SELECT s.store, s.kind, s.subject, s.detail FROM conflicts s WHERE s.status = 'open'"
            f"{one} ORDER BY s.store, s.conflict_id LIMIT ?",
            [*p, limit],
        ):
            out.append(Anomaly(str(st), str(kind), str(subject), dict(json.loads(raw))))
        return sorted(out, key=lambda a: (a.store, a.kind, a.subject))

    def counts(self) -> dict[str, int]:
        """Open items per store."""
        counts: dict[str, int] = {}
        for sql in (
            "SELECT store, COUNT(*) FROM stock WHERE qty < 0 GROUP BY store",
            "SELECT s.store, COUNT(*) FROM stock s WHERE NOT EXISTS (SELECT 1 FROM registers r "
            "WHERE r.store = s.store AND r.entity = 'product' AND r.key = s.sku) GROUP BY s.store",
            "SELECT store, COUNT(*) FROM loyalty WHERE points < 0 GROUP BY store",
            "SELECT store, COUNT(*) FROM payments WHERE status = 'declined' GROUP BY store",
            "SELECT store, COUNT(*) FROM conflicts WHERE status = 'open' GROUP BY store",
        ):
            for store, n in self.db.query(sql):
                counts[str(store)] = counts.get(str(store), 0) + int(n)
        return counts
