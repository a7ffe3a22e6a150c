"""Looking things up across stores for people at HQ: stock, the catalogue, customers and card
floats, searched, filtered and paged, so a chain of hundreds of stores stays readable.

Searches are case-insensitive substring matches (`LIKE` with the user's `%` and `_` escaped);
every page is bounded. Register values are JSON text, decoded here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from meshpos.hq.storage.database import Database, Record, SQLValue, chunks
from meshpos.ledger.fold import CARD_FLOAT

CARD_FLOAT_SETTING = "cards.floor_store_total"


def like(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, with its wildcards taken literally."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _json(value: str | None) -> Any:
    return json.loads(value) if value else None


def _distinct(values: Iterable[Any]) -> list[Any]:
    """Each value once, in a stable order (values may be unhashable JSON)."""
    seen = {json.dumps(v, sort_keys=True): v for v in values}
    return [seen[k] for k in sorted(seen)]


@dataclass(frozen=True)
class StockQuery:
    search: str = ""
    store: str | None = None
    category: str | None = None
    at_most: int | None = None  # low stock: at or below this
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True)
class Page:
    rows: list[Record]
    total: int


class Browse:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- stock ----------------------------------------------------------------------------------

    def stock(self, q: StockQuery) -> Page:
        """Stock per store and SKU (products without stock count as 0; stock of SKUs no
        catalogue names shows too), with name and category."""
        conds: list[str] = []
        params: list[SQLValue] = []
        if q.search:
            conds.append(
                "(LOWER(k.sku) LIKE ? ESCAPE '\\' OR LOWER(COALESCE(n.value, '')) LIKE ? "
                "ESCAPE '\\')"
            )
            params += [like(q.search), like(q.search)]
        if q.store:
            conds.append("k.store = ?")
            params.append(q.store)
        if q.category:
            conds.append("c.value = ?")
            params.append(json.dumps(q.category))
        if q.at_most is not None:
            conds.append("COALESCE(s.qty, 0) <= ?")
            params.append(q.at_most)
        cond = (" WHERE " + " AND ".join(conds)) if conds else ""
        base = (
            " FROM (SELECT store, key AS sku FROM registers WHERE entity = 'product' "
            "AND field = 'name' UNION SELECT store, sku FROM stock) k "
            "LEFT JOIN stock s ON s.store = k.store AND s.sku = k.sku "
            "LEFT JOIN registers n ON n.store = k.store AND n.entity = 'product' "
            "AND n.key = k.sku AND n.field = 'name' "
            "LEFT JOIN registers c ON c.store = k.store AND c.entity = 'product' "
            "AND c.key = k.sku AND c.field = 'category'"
        )
        total = int(self.db.query(f"SELECT COUNT(*){base}{cond}", params)[0][0])
        order = "COALESCE(s.qty, 0), k.sku, k.store" if q.at_most is not None else "k.sku, k.store"
        rows = self.db.select(
            "SELECT k.store, k.sku, n.value AS name, c.value AS category, "
            f"COALESCE(s.qty, 0) AS qty{base}{cond} ORDER BY {order} LIMIT ? OFFSET ?",
            [*params, q.limit, q.offset],
        )
        for row in rows:
            row["name"] = _json(row["name"]) or ""
            row["category"] = _json(row["category"]) or ""
        return Page(rows, total)

    def categories(self) -> list[str]:
        rows = self.db.query(
            "SELECT DISTINCT value FROM registers WHERE entity = 'product' AND field = 'category'"
        )
        return sorted({str(_json(v)) for (v,) in rows if _json(v)})

    # -- the catalogue --------------------------------------------------------------------------

    def products(self, search: str = "", limit: int = 50, offset: int = 0) -> Page:
        """One row per SKU across stores: each field's values (a price may differ by store) and
        how many stores carry it."""
        cond, params = "", []
        if search:
            cond = (
                " AND (LOWER(key) LIKE ? ESCAPE '\\' OR (field IN ('name', 'barcode') "
                "AND LOWER(value) LIKE ? ESCAPE '\\'))"
            )
            params = [like(search), like(search)]
        base = f"FROM registers WHERE entity = 'product'{cond}"
        total = int(self.db.query(f"SELECT COUNT(DISTINCT key) {base}", params)[0][0])
        skus = [
            str(k)
            for (k,) in self.db.query(
                f"SELECT DISTINCT key {base} ORDER BY key LIMIT ? OFFSET ?",
                [*params, limit, offset],
            )
        ]
        fields: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in skus}
        for chunk in chunks(skus):
            marks = ",".join("?" * len(chunk))
            for sku, store, name, value in self.db.query(
                "SELECT key, store, field, value FROM registers WHERE entity = 'product' "
                f"AND key IN ({marks})",
                list(chunk),
            ):
                fields[str(sku)].setdefault(str(name), {})[str(store)] = _json(value)
        rows: list[Record] = []
        for sku in skus:
            per_field = fields[sku]
            stores = {s for per in per_field.values() for s in per}
            values = {name: _distinct(per.values()) for name, per in per_field.items()}
            rows.append(
                {"sku": sku, "stores": len(stores), "values": values, "by_store": per_field}
            )
        return Page(rows, total)

    def settings(self, prefix: str) -> list[Record]:
        """Store settings whose key starts with `prefix`: store, key, value, who set it (origin)."""
        rows = self.db.select(
            "SELECT store, key, value, origin, hlc FROM registers WHERE entity = 'setting' "
            "AND field = 'value' AND key LIKE ? ESCAPE '\\' ORDER BY key, store",
            (prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",),
        )
        for row in rows:
            row["value"] = _json(row["value"])
        return rows

    # -- customers ------------------------------------------------------------------------------

    def customers(self, search: str = "", limit: int = 50, offset: int = 0) -> Page:
        """Customers across stores: profile (the latest write of each field in any store) and
        loyalty points per store."""
        params: list[SQLValue] = []
        reg = "SELECT key AS customer_id FROM registers WHERE entity = 'customer'"
        pts = "SELECT customer_id FROM loyalty"
        if search:
            reg += " AND (LOWER(key) LIKE ? ESCAPE '\\' OR LOWER(value) LIKE ? ESCAPE '\\')"
            pts += " WHERE LOWER(customer_id) LIKE ? ESCAPE '\\'"
            params = [like(search), like(search), like(search)]
        ids_sql = f"SELECT DISTINCT customer_id FROM ({reg} UNION {pts}) ids"
        total = int(self.db.query(f"SELECT COUNT(*) FROM ({ids_sql}) c", params)[0][0])
        ids = [
            str(c)
            for (c,) in self.db.query(
                f"{ids_sql} ORDER BY customer_id LIMIT ? OFFSET ?", [*params, limit, offset]
            )
        ]
        out: dict[str, Record] = {
            c: {"customer_id": c, "points": 0, "by_store": {}, "name": "", "phone": ""} for c in ids
        }
        best: dict[tuple[str, str], tuple[int, str]] = {}
        for chunk in chunks(ids):
            marks = ",".join("?" * len(chunk))
            for cid, store, points in self.db.query(
                f"SELECT customer_id, store, points FROM loyalty WHERE customer_id IN ({marks})",
                list(chunk),
            ):
                out[str(cid)]["by_store"][str(store)] = int(points)
                out[str(cid)]["points"] += int(points)
            for cid, name, value, hlc, origin in self.db.query(
                "SELECT key, field, value, hlc, origin FROM registers WHERE entity = 'customer' "
                f"AND key IN ({marks})",
                list(chunk),
            ):
                stamp = (int(hlc), str(origin))
                if stamp > best.get((cid, name), (-1, "")):
                    best[(str(cid), str(name))] = stamp
                    out[str(cid)][str(name)] = _json(value)
        return Page([out[c] for c in ids], total)

    # -- card floats ----------------------------------------------------------------------------

    def card_floats(self, stores: Sequence[str]) -> list[Record]:
        """Per store: the float set for it, minted by HQ so far, held per terminal now, and what
        card payments wait for HQ's answer."""
        out: dict[str, Record] = {
            s: {"store": s, "total": None, "minted": 0, "held": {}, "pending": 0} for s in stores
        }
        for store, value in self.db.query(
            "SELECT store, value FROM registers WHERE entity = 'setting' AND key = ? "
            "AND field = 'value'",
            (CARD_FLOAT_SETTING,),
        ):
            if store in out:
                out[store]["total"] = _json(value)
        for store, value in self.db.query(
            "SELECT store, value FROM registers WHERE entity = 'card_float' AND field = 'amount'"
        ):
            if store in out:
                out[store]["minted"] += int(_json(value) or 0)
        for store, node, name, points in self.db.query(
            "SELECT r.store, r.node, n.name, r.points FROM rights r LEFT JOIN nodes n "
            "ON n.store = r.store AND n.node_id = r.node WHERE r.customer_id = ? ORDER BY r.node",
            (CARD_FLOAT,),
        ):
            if store in out:
                out[store]["held"][str(name or node)] = int(points)
        for store, amount in self.db.query(
            "SELECT store, CAST(SUM(amount) AS BIGINT) FROM payments "
            "WHERE status IN ('pending', 'working') GROUP BY store"
        ):
            if store in out:
                out[store]["pending"] = int(amount)
        return [out[s] for s in stores]

    def payments(self, status: str | None, store: str | None, limit: int = 200) -> list[Record]:
        """Card payments, newest first, of one status ('pending' includes those being settled)."""
        conds, params = [], []
        if status == "pending":
            conds.append("status IN ('pending', 'working')")
        elif status:
            conds.append("status = ?")
            params.append(status)
        if store:
            conds.append("store = ?")
            params.append(store)
        cond = (" WHERE " + " AND ".join(conds)) if conds else ""
        return self.db.select(
            "SELECT store, sale_id, amount, last4, brand, status, code, message, auth_code, "
            f"attempts, created_ms FROM payments{cond} ORDER BY created_ms DESC, store, sale_id "
            "LIMIT ?",
            [*params, limit],
        )

    def terminals(self) -> dict[str, int]:
        """Terminals HQ holds a certificate of, per store."""
        rows = self.db.query(
            "SELECT store, COUNT(*) FROM nodes WHERE role = 'terminal' GROUP BY store"
        )
        return {str(s): int(n) for s, n in rows}
