"""Reads of the folded views that the service layer needs: catalogue, stock, customers, settings,
sales, escrow rights and conflicts.

Plain indexed SQL over the tables fold.py and apply.py keep, so every lookup at the till is local
and works with no network. Rows come back as dicts keyed by column name.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from meshpos.ledger.fold import CARD_FLOAT
from meshpos.ledger.schema import VIEW_TABLES

Row = dict[str, Any]


class Views:
    """Read-only queries over the views, as `Ledger.views`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cur = self.conn.execute(sql, params)
        names = [d[0] for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def _value(self, sql: str, params: Sequence[Any], default: int = 0) -> int:
        row = self.conn.execute(sql, params).fetchone()
        return int(row[0]) if row and row[0] is not None else default

    # -- catalogue and stock --------------------------------------------------------------------

    def product(self, code: str) -> Row | None:
        """The active product whose SKU or barcode is `code` (the SKU wins)."""
        rows = self.rows(
            "SELECT * FROM products WHERE (sku = ? OR barcode = ?) AND active = 1 "
            "ORDER BY sku = ? DESC LIMIT 1",
            (code, code, code),
        )
        return rows[0] if rows else None

    def products(self, search: str | None = None, limit: int = 1000) -> list[Row]:
        """Products with their stock, optionally matching `search` (SKU, name, category, or
        an exact barcode)."""
        sql = (
            "SELECT p.*, COALESCE(s.qty, 0) AS stock FROM products p "
            "LEFT JOIN stock s ON s.sku = p.sku "
        )
        params: list[Any] = []
        if search:
            sql += "WHERE p.sku LIKE ? OR p.name LIKE ? OR p.barcode = ? OR p.category LIKE ? "
            like = f"%{search}%"
            params += [like, like, search, like]
        return self.rows(sql + "ORDER BY p.sku LIMIT ?", [*params, limit])

    def skus(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT sku FROM products")}

    def stock(self, sku: str | None = None) -> list[Row]:
        """Stock per product (every product, or one SKU)."""
        sql = (
            "SELECT p.sku, p.name, p.size, p.colour, COALESCE(s.qty, 0) AS qty "
            "FROM products p LEFT JOIN stock s ON s.sku = p.sku "
        )
        if sku is not None:
            return self.rows(sql + "WHERE p.sku = ?", (sku,))
        return self.rows(sql + "ORDER BY p.sku")

    def stock_by_counter(self, skus: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
        """Per SKU (every SKU, or those of `skus`), what each counter's ops moved its stock, by
        node id: the columns that add up to `stock` (the `stock_by_origin` view, which the fold
        keeps beside it: a row per SKU and counter, however many moves made it)."""
        sql, args = "SELECT sku, origin, qty FROM stock_by_origin", list(skus or ())
        if skus is not None:
            sql += f" WHERE sku IN ({','.join('?' * len(args))})"
        out: dict[str, dict[str, int]] = {}
        for code, origin, qty in self.conn.execute(sql, args):
            out.setdefault(str(code), {})[str(origin)] = int(qty)
        return out

    def stock_levels(self) -> dict[str, int]:
        """Units on hand per SKU with any stock move (no catalogue join)."""
        return {str(sku): int(qty) for sku, qty in self.conn.execute("SELECT sku, qty FROM stock")}

    def prices(self) -> dict[str, int]:
        return {
            str(sku): int(price)
            for sku, price in self.conn.execute("SELECT sku, price FROM products")
        }

    def stock_qty(self, sku: str) -> int:
        return self._value("SELECT qty FROM stock WHERE sku = ?", (sku,))

    # -- customers and loyalty ------------------------------------------------------------------

    def customer(self, code: str) -> Row | None:
        """The customer with id `code`, or with phone number `code`, and their points."""
        rows = self.rows(
            "SELECT c.*, COALESCE(l.points, 0) AS points FROM customers c "
            "LEFT JOIN loyalty l ON l.customer_id = c.customer_id "
            "WHERE c.customer_id = ? OR (c.phone = ? AND c.phone != '')",
            (code, code),
        )
        return rows[0] if rows else None

    def phone_taken(self, phone: str, by_other_than: str | None = None) -> bool:
        """Whether a customer (other than `by_other_than`) has this phone number."""
        row = self.conn.execute(
            "SELECT 1 FROM customers WHERE phone = ? AND customer_id IS NOT ?",
            (phone, by_other_than),
        ).fetchone()
        return row is not None

    def points(self, customer_id: str) -> int:
        return self._value("SELECT points FROM loyalty WHERE customer_id = ?", (customer_id,))

    # -- settings and registers -----------------------------------------------------------------

    def settings(self, prefix: str) -> dict[str, Any]:
        """Current settings whose key starts with `prefix`, decoded."""
        return {
            key: json.loads(value)
            for key, value in self.conn.execute(
                "SELECT key, value FROM settings WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
            )
        }

    def setting(self, key: str) -> Any:
        """A setting's current value; None when it was never set."""
        row = self.conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def has_setting(self, key: str) -> bool:
        return (
            self.conn.execute("SELECT 1 FROM settings WHERE key = ?", (key,)).fetchone() is not None
        )

    def setting_writer(self, key: str) -> tuple[Any, str] | None:
        """A setting's current value and the node whose op wrote it."""
        row = self.conn.execute(
            "SELECT value, origin FROM registers WHERE entity = 'setting' AND key = ? "
            "AND field = 'value'",
            (key,),
        ).fetchone()
        return (json.loads(row[0]), str(row[1])) if row else None

    # -- sales and returns ----------------------------------------------------------------------

    def next_number(self, origin: str) -> int:
        """The receipt number `origin`'s next sale, return or exchange gets. A counter numbers
        its records in the order it writes them (each takes the number this gives, in the same
        transaction), so its newest numbered record holds its highest number: found from the end
        of its run of sales by primary key, with no index of numbers to keep."""
        return (
            self._value(
                "SELECT number FROM sales WHERE origin = ? AND number != 0 "
                "ORDER BY seq DESC LIMIT 1",
                (origin,),
            )
            + 1
        )

    def next_paper_number(self, origin: str) -> int:
        """The number `origin`'s next paper entry gets (paper entries take receipt number 0)."""
        return (
            self._value("SELECT COUNT(*) FROM sales WHERE origin = ? AND number = 0", (origin,)) + 1
        )

    def paper_slip(self, slip: str) -> str | None:
        """The sale a paper slip was entered as, None when it was not."""
        row = self.conn.execute(
            "SELECT value FROM registers WHERE entity = 'paper' AND key = ? AND field = 'sale_id'",
            (slip,),
        ).fetchone()
        return str(json.loads(row[0])) if row else None

    def paper_sales(self, limit: int = 20) -> list[Row]:
        """Paper entries, newest written first, with the slip they came from."""
        rows = self.rows(
            "SELECT s.sale_id, s.ts_ms, s.total, s.user, s.origin, s.seq, s.hlc, r.key AS slip "
            "FROM sales s JOIN registers r ON r.entity = 'paper' AND r.field = 'sale_id' "
            "AND r.value = json_quote(s.sale_id) WHERE s.number = 0 "
            "ORDER BY s.ts_ms DESC, s.sale_id DESC LIMIT ?",
            (limit,),
        )
        return rows

    def sales(self, sale_id: str, *, returns: bool = False) -> list[Row]:
        """Sales and exchanges (and returns, with `returns`) whose id is `sale_id` or ends with
        `-sale_id` (a receipt number typed at the till)."""
        kinds = "" if returns else "AND kind != 'return' "
        return self.rows(
            "SELECT * FROM sales WHERE (sale_id = ? OR sale_id LIKE ? ESCAPE '\\') "
            f"{kinds}ORDER BY origin, seq",
            (sale_id, "%-" + re.sub(r"([\\%_])", r"\\\1", sale_id)),
        )

    def returned(self, sale_id: str) -> dict[str, int]:
        """Per SKU, how many units of sale `sale_id` came back so far."""
        return {
            str(sku): int(qty)
            for sku, qty in self.conn.execute(
                "SELECT sku, SUM(qty) FROM returned WHERE ref_sale = ? GROUP BY sku", (sale_id,)
            )
        }

    def refunded(self, sale_id: str) -> int:
        """Paise refunded so far by returns of sale `sale_id`."""
        return self._value(
            "SELECT -SUM(total) FROM sales WHERE ref_sale = ? AND kind = 'return'", (sale_id,)
        )

    # -- escrow rights --------------------------------------------------------------------------

    def rights(self, customer_id: str, node: str) -> int:
        """Points of `customer_id` (or card float) that `node` may redeem (or take)."""
        return self._value(
            "SELECT points FROM rights WHERE customer_id = ? AND node = ?", (customer_id, node)
        )

    def spendable(self, customer_id: str, node: str) -> int:
        """What `node` may still spend of `customer_id`'s rights (or card float): its rights,
        less its own spends held without authority, which the rulebook counts against it
        (meshpos/domain/authority.py). The service checks this, so it refuses what the fold
        would."""
        return self._value(
            "SELECT COALESCE((SELECT points FROM rights WHERE customer_id = ? AND node = ?), 0) "
            "+ COALESCE((SELECT SUM(delta) FROM rights_log WHERE customer_id = ? AND node = ? "
            "AND origin = ? AND authority = 0), 0)",
            (customer_id, node, customer_id, node, node),
        )

    def rights_by_node(self, customer_id: str) -> dict[str, int]:
        """Every node's rights for `customer_id`, by node name (its id if it has no record)."""
        return {
            str(name): int(points)
            for name, points in self.conn.execute(
                "SELECT COALESCE(n.name, r.node), r.points FROM rights r "
                "LEFT JOIN nodes n ON n.node_id = r.node WHERE r.customer_id = ? ORDER BY r.node",
                (customer_id,),
            )
        }

    def rights_elsewhere(self, customer_id: str, here: str) -> dict[str, int]:
        """Positive rights for `customer_id` held by nodes other than `here`, by node name."""
        return {
            str(name): int(points)
            for name, points in self.conn.execute(
                "SELECT COALESCE(n.name, r.node), r.points FROM rights r "
                "LEFT JOIN nodes n ON n.node_id = r.node "
                "WHERE r.customer_id = ? AND r.node != ? AND r.points > 0 ORDER BY r.node",
                (customer_id, here),
            )
        }

    def card_float_opened(self) -> bool:
        """Whether HQ ever minted card float for this store, as far as this replica knows."""
        return (
            self.conn.execute(
                "SELECT 1 FROM rights WHERE customer_id = ? AND points != 0 LIMIT 1", (CARD_FLOAT,)
            ).fetchone()
            is not None
            or self.conn.execute(
                "SELECT 1 FROM registers WHERE entity = 'card_float' LIMIT 1"
            ).fetchone()
            is not None
        )

    def card_float_minted(self) -> int:
        """Paise of card float HQ minted for this store."""
        return sum(
            int(json.loads(v))
            for (v,) in self.conn.execute(
                "SELECT value FROM registers WHERE entity = 'card_float' AND field = 'amount'"
            )
        )

    # -- conflicts ------------------------------------------------------------------------------

    def loyalty_balances(self) -> dict[str, int]:
        """Points per customer whose balance is not zero."""
        return {
            str(c): int(p)
            for c, p in self.conn.execute(
                "SELECT customer_id, points FROM loyalty WHERE points != 0"
            )
        }

    def points_ledger(self) -> list[tuple[str, int, int, int, int, int]]:
        """Per customer: balance, points earned and redeemed by sales and exchanges, redeemed
        points given back by returns, and the net of every record: what a check for points
        redeemed twice needs (the simulator's invariant)."""
        return [
            (str(c), int(a), int(b), int(d), int(e), int(f))
            for c, a, b, d, e, f in self.conn.execute(
                "SELECT l.customer_id, l.points, "
                "COALESCE(SUM(CASE WHEN s.kind != 'return' THEN s.points_earned END), 0), "
                "COALESCE(SUM(CASE WHEN s.kind != 'return' THEN s.points_redeemed END), 0), "
                "COALESCE(SUM(CASE WHEN s.kind = 'return' THEN -s.points_redeemed END), 0), "
                "COALESCE(SUM(s.points_earned - s.points_redeemed), 0) "
                "FROM loyalty l LEFT JOIN sales s ON s.customer_id = l.customer_id "
                "GROUP BY l.customer_id ORDER BY l.customer_id"
            )
        ]

    def sold_by_origin(self, sku: str) -> dict[str, int]:
        """Units of `sku` sold (net of returns) per origin: which counters sold an item."""
        return {
            str(origin): int(qty)
            for origin, qty in self.conn.execute(
                "SELECT origin, SUM(qty) FROM sale_lines WHERE sku = ? GROUP BY origin "
                "HAVING SUM(qty) != 0 ORDER BY origin",
                (sku,),
            )
        }

    def rights_held_by(self, nodes: Sequence[str]) -> int:
        """Positive redemption rights (every customer, card float included) held by `nodes`."""
        if not nodes:
            return 0
        marks = ",".join("?" * len(nodes))
        return self._value(
            f"SELECT COALESCE(SUM(points), 0) FROM rights WHERE points > 0 AND node IN ({marks})",
            tuple(nodes),
        )

    def table_rows(self, table: str) -> list[tuple[Any, ...]]:
        """Every row of one view table, for digests that compare replicas."""
        if table not in VIEW_TABLES:
            raise ValueError(f"{table!r} is not a view table")
        return list(self.conn.execute(f"SELECT * FROM {table}"))

    def conflicts(self, status: str | None = "open") -> list[Row]:
        """Conflicts (with `status`, or all), their detail and ops decoded; an op without
        authority is shown with the name of the node that signed it."""
        sql, params = "SELECT * FROM conflicts", tuple[str, ...]()
        if status:
            sql, params = sql + " WHERE status = ?", (status,)
        return [self._decoded(r) for r in self.rows(sql + " ORDER BY conflict_id", params)]

    def credits_hlc(self, customers: Iterable[str], node: str) -> int:
        """The HLC of the latest credit other nodes gave `node` of these customers' rights."""
        keys = sorted(customers)
        marks = ",".join("?" * len(keys))
        return self._value(
            f"SELECT COALESCE(MAX(hlc), 0) FROM rights_log WHERE customer_id IN ({marks}) "
            "AND node = ? AND origin != ? AND delta > 0 AND authority = 1",
            (*keys, node, node),
        )

    def register_hlc(self, entity: str, key: str) -> int:
        """The HLC of the latest write to a register (0 if none)."""
        return self._value(
            "SELECT COALESCE(MAX(hlc), 0) FROM registers WHERE entity = ? AND key = ?",
            (entity, key),
        )

    def conflict(self, conflict_id: str) -> Row | None:
        rows = self.rows("SELECT * FROM conflicts WHERE conflict_id = ?", (conflict_id,))
        return self._decoded(rows[0]) if rows else None

    def unauthorised(self) -> list[Row]:
        """Ops held without authority: who signed what, and the rule it broke."""
        return self.rows("SELECT * FROM unauthorised ORDER BY origin, seq")

    def _decoded(self, row: Row) -> Row:
        out = {**row, "detail": json.loads(row["detail"]), "ops": json.loads(row["ops"])}
        signer = out["detail"].get("signed_by")
        if signer is not None:
            found = self.conn.execute("SELECT name FROM nodes WHERE node_id = ?", (signer,))
            name = found.fetchone()
            out["detail"]["node"] = name[0] if name else ""
        return out
