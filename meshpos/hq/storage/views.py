"""HQ's chain-wide views: what the ops of every store fold into, and the reports read from them.

Views are folded with the store's own fold rules (meshpos.ledger.fold), in the transaction that
stores the ops, and written as plain row upserts (`INSERT ... ON CONFLICT ... DO UPDATE`) that
both databases run unchanged: sales and daily totals per store, stock and loyalty points
(PN-counters), redemption rights, last-writer-wins registers, and the card tenders HQ is to settle.
A sale's day is the store's calendar day (its `store.timezone` setting as HQ holds it when the
sale arrives, else Asia/Kolkata), as the store's own `report sales --by day` counts it.
"""

from __future__ import annotations

import datetime as dt
import json
from bisect import bisect_right, insort
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from meshpos.core.errors import InputError
from meshpos.core.ops import Op
from meshpos.domain.cards import sealed_from_tender
from meshpos.domain.storetime import SETTING as TIMEZONE_SETTING
from meshpos.domain.storetime import StoreTime, parse_day
from meshpos.hq.storage.database import Database, Record, SQLValue, Tx, upsert, where
from meshpos.hq.storage.judging import conflicts, write_rulebook
from meshpos.hq.storage.schema import SALE_COLUMNS
from meshpos.ledger.fold import Changes

DAILY_FIELDS = ("sales", "returns", "exchanges", "net", "tax", "discount")
VIEW_TABLES = ("sales", "sales_daily", "stock", "loyalty", "rights", "registers")
"""The tables folded from a store's ops (besides the rulebook's): what a refold rebuilds."""
CARD_KINDS = frozenset({"sale", "exchange"})
DAY_MS = 86_400_000


def store_time(tx: Tx, store: str) -> StoreTime:
    """The store's time zone as HQ holds it: its `store.timezone` setting, else the default."""
    rows = tx.execute(
        "SELECT value FROM registers WHERE store = ? AND entity = 'setting' AND key = ? "
        "AND field = 'value'",
        (store, TIMEZONE_SETTING),
    )
    for (value,) in rows:
        name = json.loads(value)
        if isinstance(name, str):
            try:
                return StoreTime.named(name)
            except InputError:
                break
    return StoreTime()


class StoreDays:
    """`StoreTime.day` for the many sales of a batch, at the cost of a few zone look-ups per
    day instead of one per sale: the bounds of each day worked out are kept, for days exactly
    24 hours long (one with a clock change is worked out for each instant)."""

    def __init__(self, zone: StoreTime) -> None:
        self.zone = zone
        self._starts: list[int] = []
        self._days: dict[int, str] = {}

    def __call__(self, ms: int) -> str:
        i = bisect_right(self._starts, ms) - 1
        if i >= 0 and ms < self._starts[i] + DAY_MS:
            return self._days[self._starts[i]]
        day = self.zone.day(ms)
        date = parse_day(day)
        start = self.zone.day_start(date)
        if self.zone.day_start(date + dt.timedelta(days=1)) - start == DAY_MS and start <= ms:
            insort(self._starts, start)
            self._days[start] = day
        return day


@dataclass
class ViewRows:
    """Rows a batch of ops adds to the HQ views, gathered before any SQL runs."""

    payments: list[tuple[SQLValue, ...]] = field(default_factory=list)
    allowed: list[Op] = field(default_factory=list)  # the batch's ops that had authority
    authority: bool = False  # whether they may give authority to ops held without it
    days: dict[tuple[str, int], str] = field(default_factory=dict)  # store day by (origin, seq)


def _sales_rows(
    store: str, ch: Changes, zone: StoreTime
) -> tuple[
    list[tuple[SQLValue, ...]], dict[tuple[str, str], list[int]], dict[tuple[str, int], str]
]:
    """The fold's sales rows as HQ's (store-qualified, with the store day), their sums per
    store day, and the day of each sale by (origin, seq)."""
    sales: list[tuple[SQLValue, ...]] = []
    daily: dict[tuple[str, str], list[int]] = {}
    dated: dict[tuple[str, int], str] = {}
    days = StoreDays(zone)
    for r in ch.rows.get("sales", ()):
        (sale_id, origin, seq, kind, _number, terminal, hlc, ts_ms, user, customer,
         subtotal, discount, tax, total, earned, redeemed, ref) = r  # fmt: skip
        day = dated[(origin, seq)] = days(ts_ms)
        sales.append(
            (store, origin, seq, sale_id, kind, day, ts_ms, hlc, terminal, user, customer,
             subtotal, discount, tax, total, earned, redeemed, ref)
        )  # fmt: skip
        counts = daily.setdefault((store, day), [0] * len(DAILY_FIELDS))
        counts[("sale", "return", "exchange").index(kind)] += 1
        counts[3] += total
        counts[4] += tax
        counts[5] += discount
    return sales, daily, dated


def gather(store: str, ops: Sequence[Op], ch: Changes, now_ms: int) -> ViewRows:
    """Collect the card tenders HQ is to settle from a batch, before any SQL runs."""
    rows = ViewRows()
    for op in ops:
        if op.kind not in CARD_KINDS:
            continue
        for i, t in enumerate(op.payload.get("tenders") or ()):
            if not isinstance(t, dict) or t.get("method") != "card":
                continue
            sealed = sealed_from_tender(t, op.sealed.get(i))
            if sealed is None:
                continue
            rows.payments.append(
                (store, op.origin, op.seq, i, str(op.payload.get("sale_id")), int(t["amount"]),
                 str(t.get("card_last4") or ""), str(t.get("card_brand") or ""), sealed, now_ms)
            )  # fmt: skip
    return rows


def write_views(tx: Tx, store: str, ch: Changes, rows: ViewRows) -> None:
    """Add a batch's fold to the views. Counter rows are upserted in key order, so two
    transactions never wait on each other in a cycle. Registers go first: a batch that sets the
    store's time zone dates its own sales by it. Each sale's store day is left in `rows.days`
    (takings are dated by it)."""
    _write_registers(tx, store, ch)
    sales, daily, rows.days = _sales_rows(store, ch, store_time(tx, store))
    if sales:
        tx.insert_new("sales", SALE_COLUMNS, sales)
    if daily:
        sets = ", ".join(f"{f} = sales_daily.{f} + excluded.{f}" for f in DAILY_FIELDS)
        upsert(
            tx,
            "sales_daily",
            [(s, d, *v) for (s, d), v in sorted(daily.items())],
            f"ON CONFLICT (store, day) DO UPDATE SET {sets}",
        )
    for table, key, col, counter in (
        ("stock", "sku", "qty", ch.stock),
        ("loyalty", "customer_id", "points", ch.points),
    ):
        upsert(
            tx,
            table,
            sorted((store, k, v) for k, v in counter.items() if v),
            f"ON CONFLICT (store, {key}) DO UPDATE SET {col} = {table}.{col} + excluded.{col}",
        )
    upsert(
        tx,
        "rights",
        sorted((store, c, n, v) for (c, n), v in ch.rights.items() if v),
        "ON CONFLICT (store, customer_id, node) DO UPDATE SET "
        "points = rights.points + excluded.points",
    )
    upsert(
        tx,
        "payments",
        [(*p[:9], "pending", 0, 0, p[9], "", "", "", 0) for p in rows.payments],
        "ON CONFLICT (store, origin, seq, tender) DO NOTHING",
    )
    write_rulebook(tx, store, ch)


def _write_registers(tx: Tx, store: str, ch: Changes) -> None:
    latest: dict[tuple[str, str, str], tuple[str, str, str, str, int, str]] = {}
    for r in ch.registers:  # one row per register: a statement may not touch a row twice
        held = latest.get(r[:3])
        if held is None or (r[4], r[5]) > (held[4], held[5]):
            latest[r[:3]] = r
    upsert(
        tx,
        "registers",
        sorted((store, *r) for r in latest.values()),
        "ON CONFLICT (store, entity, key, field) DO UPDATE SET "
        "value = excluded.value, hlc = excluded.hlc, origin = excluded.origin "
        "WHERE (excluded.hlc, excluded.origin) > (registers.hlc, registers.origin)",
    )


def minted_float(tx: Tx, store: str) -> int:
    """The card float HQ has minted in a store so far (the sum of its `card.float` amounts)."""
    rows = tx.execute(
        "SELECT value FROM registers WHERE store = ? AND entity = 'card_float' "
        "AND field = 'amount'",
        (store,),
    )
    return sum(int(json.loads(v)) for (v,) in rows)


def rights_held(tx: Tx, store: str, customer: str) -> dict[str, int]:
    """Escrow rights per node of a store for one customer (or pseudo-customer)."""
    rows = tx.execute(
        "SELECT node, points FROM rights WHERE store = ? AND customer_id = ?", (store, customer)
    )
    return {str(n): int(p) for n, p in rows}


class ChainViews:
    """The reports: sales, stock, loyalty, registers and card payments across every store."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def sales_by_day(
        self, store: str | None = None, since: str | None = None, until: str | None = None
    ) -> list[Record]:
        cond, params = where(("store = ?", store), ("day >= ?", since), ("day <= ?", until))
        return self.db.select(
            "SELECT store, day, sales, returns, exchanges, net, tax, discount FROM sales_daily"
            f"{cond} ORDER BY store, day",
            params,
        )

    def chain_by_day(self, since: str | None = None, until: str | None = None) -> list[Record]:
        cond, params = where(("day >= ?", since), ("day <= ?", until))
        return self.db.select(
            "SELECT day, COUNT(*) AS stores, CAST(SUM(sales) AS BIGINT) AS sales, "
            "CAST(SUM(returns) AS BIGINT) AS returns, "
            "CAST(SUM(exchanges) AS BIGINT) AS exchanges, CAST(SUM(net) AS BIGINT) AS net, "
            "CAST(SUM(tax) AS BIGINT) AS tax FROM sales_daily"
            f"{cond} GROUP BY day ORDER BY day",
            params,
        )

    def stock(self, store: str | None = None, sku: str | None = None) -> list[Record]:
        cond, params = where(("s.store = ?", store), ("s.sku = ?", sku))
        rows = self.db.select(
            "SELECT s.store, s.sku, r.value AS name, s.qty FROM stock s LEFT JOIN registers r "
            "ON r.store = s.store AND r.entity = 'product' AND r.key = s.sku AND r.field = 'name'"
            f"{cond} ORDER BY s.store, s.sku",
            params,
        )
        for row in rows:
            row["name"] = json.loads(row["name"]) if row["name"] else ""
        return rows

    def loyalty(self, customer: str | None = None) -> list[Record]:
        """Points per customer across every store: the sum of each store's PN-counter."""
        cond, params = where(("customer_id = ?", customer))
        return self.db.select(
            "SELECT customer_id, CAST(SUM(points) AS BIGINT) AS points, COUNT(*) AS stores FROM loyalty"
            f"{cond} GROUP BY customer_id ORDER BY customer_id",
            params,
        )

    def loyalty_by_store(self, customer: str | None = None) -> list[Record]:
        cond, params = where(("customer_id = ?", customer))
        return self.db.select(
            f"SELECT store, customer_id, points FROM loyalty{cond} ORDER BY customer_id, store",
            params,
        )

    def registers(self, store: str, entity: str) -> dict[str, dict[str, Any]]:
        """The current value of every field of every `entity` (product, customer...) of a store."""
        out: dict[str, dict[str, Any]] = {}
        for row in self.db.select(
            "SELECT key, field, value FROM registers WHERE store = ? AND entity = ? "
            "ORDER BY key, field",
            (store, entity),
        ):
            out.setdefault(row["key"], {})[row["field"]] = json.loads(row["value"])
        return out

    def known_skus(self, store: str) -> set[str]:
        return {
            str(sku)
            for (sku,) in self.db.query(
                "SELECT DISTINCT key FROM registers WHERE store = ? AND entity = 'product'",
                (store,),
            )
        }

    def payments(self, store: str | None = None) -> list[Record]:
        """Card payments and how each was settled, oldest first."""
        cond, params = where(("store = ?", store))
        return self.db.select(
            "SELECT store, sale_id, origin, seq, tender, amount, last4, brand, status, code, "
            f"message, auth_code, attempts FROM payments{cond} "
            "ORDER BY store, created_ms, origin, seq, tender",
            params,
        )

    def conflicts(self, store: str | None = None, status: str | None = "open") -> list[Record]:
        """Conflicts of a store (or every store): the ops it holds without authority."""
        return self.db.run(lambda tx: conflicts(tx, store, status), write=False)

    def summary(self) -> list[Record]:
        """One row per store: ops held, origins, last upload, sales and takings."""
        return self.db.select(
            "SELECT st.store, st.name, "
            "(SELECT CAST(COALESCE(SUM(h.seq), 0) AS BIGINT) FROM heads h "
            "WHERE h.store = st.store) AS ops, "
            "(SELECT COUNT(*) FROM heads h WHERE h.store = st.store) AS origins, "
            "(SELECT MAX(h.updated_ms) FROM heads h WHERE h.store = st.store) AS last_sync_ms, "
            "(SELECT CAST(COALESCE(SUM(d.sales), 0) AS BIGINT) FROM sales_daily d "
            "WHERE d.store = st.store) "
            "AS sales, "
            "(SELECT CAST(COALESCE(SUM(d.net), 0) AS BIGINT) FROM sales_daily d "
            "WHERE d.store = st.store) AS net, "
            "(SELECT COUNT(*) FROM payments p WHERE p.store = st.store AND p.status = 'pending') "
            "AS card_pending, "
            "(SELECT COUNT(*) FROM payments p WHERE p.store = st.store AND p.status = 'declined') "
            "AS card_declined, "
            "(SELECT COUNT(*) FROM conflicts c WHERE c.store = st.store AND c.status = 'open') "
            "AS conflicts "
            "FROM stores st ORDER BY st.store"
        )
