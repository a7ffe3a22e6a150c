"""The SQL of X, Z, sales and GST reports: totals over the local views, so reports need no network.

What a report means (an X report changes nothing, a Z report closes the period with a `report.z`
op) is meshpos/service/reports.py; this module only sums. Days and hours are the store's
(`StoreTime`): stored times are UTC milliseconds, and the grouping calls back into Python for the
store's calendar (SQLite knows no time zones), registered on the connection per query.
"""

from __future__ import annotations

from typing import Any

from meshpos.domain.storetime import StoreTime
from meshpos.ledger.views import Row, Views

SALES_BY = {
    "sku": ("l.sku", "sale_lines"),
    "category": ("l.category", "sale_lines"),
    "hour": ("store_hour(s.ts_ms)", "sales"),
    "day": ("store_day(s.ts_ms)", "sales"),
    "payment": ("t.method", "tenders"),
    "cashier": ("s.user", "sales"),
    "terminal": ("s.terminal", "sales"),
}
GST_BY = {
    "rate": "x.gst_rate",
    "hsn": "x.hsn, x.gst_rate",
    "place": "x.place, x.gst_rate",
    "buyer": "x.buyer_gstin, x.gst_rate",
}


def _range(start_ms: int | None, end_ms: int | None) -> tuple[list[str], list[int]]:
    where, args = ["1 = 1"], []
    if start_ms is not None:
        where.append("s.ts_ms >= ?")
        args.append(start_ms)
    if end_ms is not None:
        where.append("s.ts_ms < ?")
        args.append(end_ms)
    return where, args


class Reports:
    """Report queries, as `Ledger.reports`."""

    def __init__(self, views: Views) -> None:
        self.conn = views.conn
        self._views = views

    def _calendar(self, zone: StoreTime) -> None:
        """`store_day(ts_ms)` and `store_hour(ts_ms)` in SQL, in `zone`."""
        self.conn.create_function("store_day", 1, zone.day, deterministic=True)
        self.conn.create_function("store_hour", 1, zone.hour, deterministic=True)

    def last_z_seq(self, origin: str) -> int | None:
        """Seq of `origin`'s newest `report.z` op, if it ever closed a period."""
        row = self.conn.execute(
            "SELECT seq FROM ops WHERE origin = ? AND kind = 'report.z' ORDER BY seq DESC LIMIT 1",
            (origin,),
        ).fetchone()
        return int(row[0]) if row else None

    def shift(self, origin: str, after_seq: int, zone: StoreTime) -> dict[str, Any]:
        """`origin`'s sales, returns and exchanges recorded after its op `after_seq`: counts,
        totals, first and last receipt and sale time, and breakdowns by tender method, GST rate
        (with CGST, SGST and IGST) and store day."""
        self._calendar(zone)
        where = "s.origin = ? AND s.seq > ?"
        args = (origin, after_seq)
        head = self._views.rows(
            "SELECT COUNT(*) FILTER (WHERE kind = 'sale') AS sales, "
            "COUNT(*) FILTER (WHERE kind = 'return') AS returns, "
            "COUNT(*) FILTER (WHERE kind = 'exchange') AS exchanges, "
            "COALESCE(SUM(subtotal), 0) AS gross, COALESCE(SUM(discount), 0) AS discounts, "
            "COALESCE(SUM(tax), 0) AS tax, COALESCE(SUM(total), 0) AS net, "
            "MIN(NULLIF(number, 0)) AS first_receipt, MAX(number) AS last_receipt, "
            "COUNT(*) FILTER (WHERE number = 0) AS paper, "
            "MIN(ts_ms) AS first_ms, MAX(ts_ms) AS last_ms "
            f"FROM sales s WHERE {where}",
            args,
        )[0]
        tenders = self._views.rows(
            "SELECT t.method, SUM(t.amount) AS amount, COUNT(*) AS count FROM tenders t "
            f"JOIN sales s ON s.origin = t.origin AND s.seq = t.seq WHERE {where} "
            "GROUP BY t.method ORDER BY t.method",
            args,
        )
        gst = self._views.rows(
            "SELECT x.gst_rate, SUM(x.taxable + x.cgst + x.sgst + x.igst) AS taxable_incl, "
            "SUM(x.taxable) AS taxable, SUM(x.cgst) AS cgst, SUM(x.sgst) AS sgst, "
            "SUM(x.igst) AS igst, SUM(x.cgst + x.sgst + x.igst) AS tax FROM sale_tax x "
            f"JOIN sales s ON s.origin = x.origin AND s.seq = x.seq WHERE {where} "
            "GROUP BY x.gst_rate ORDER BY x.gst_rate",
            args,
        )
        days = self._views.rows(
            "SELECT store_day(s.ts_ms) AS day, COUNT(*) FILTER (WHERE kind = 'sale') AS sales, "
            f"SUM(s.total) AS net FROM sales s WHERE {where} GROUP BY day ORDER BY day",
            args,
        )
        return {**head, "tenders": tenders, "gst": gst, "days": days}

    def sales_by(
        self, by: str, start_ms: int | None, end_ms: int | None, zone: StoreTime
    ) -> list[Row]:
        """Sales grouped by one of `SALES_BY` (days and hours in `zone`), with `ts_ms` in
        [start_ms, end_ms)."""
        self._calendar(zone)
        key, source = SALES_BY[by]
        where, args = _range(start_ms, end_ms)
        cond = " AND ".join(where)
        if source == "sale_lines":
            sql = (
                f"SELECT {key} AS key, SUM(l.qty) AS qty, SUM(l.total) AS net, SUM(l.tax) AS tax "
                "FROM sale_lines l JOIN sales s ON s.origin = l.origin AND s.seq = l.seq "
                f"WHERE {cond} GROUP BY key ORDER BY net DESC, key"
            )
        elif source == "tenders":
            sql = (
                f"SELECT {key} AS key, COUNT(*) AS count, SUM(t.amount) AS amount "
                "FROM tenders t JOIN sales s ON s.origin = t.origin AND s.seq = t.seq "
                f"WHERE {cond} GROUP BY key ORDER BY amount DESC, key"
            )
        else:
            sql = (
                f"SELECT {key} AS key, COUNT(*) AS count, SUM(s.total) AS net, SUM(s.tax) AS tax "
                f"FROM sales s WHERE {cond} GROUP BY key ORDER BY key"
            )
        return self._views.rows(sql, args)

    def gst_by(self, by: str, start_ms: int | None, end_ms: int | None) -> list[Row]:
        """Taxable value and CGST, SGST and IGST of every sale, return and exchange with `ts_ms`
        in [start_ms, end_ms), grouped by one of `GST_BY` (and rate): what a GST return asks
        for (HSN summary, supplies by place, B2B invoices by buyer)."""
        keys = GST_BY[by]
        where, args = _range(start_ms, end_ms)
        if by == "buyer":
            where.append("x.buyer_gstin != ''")
        cols = ", ".join(f"{k} AS {k.split('.')[1]}" for k in keys.split(", "))
        return self._views.rows(
            f"SELECT {cols}, COUNT(DISTINCT s.origin || ':' || s.seq) AS invoices, "
            "SUM(x.taxable) AS taxable, SUM(x.cgst) AS cgst, SUM(x.sgst) AS sgst, "
            "SUM(x.igst) AS igst, SUM(x.taxable + x.cgst + x.sgst + x.igst) AS total "
            "FROM sale_tax x JOIN sales s ON s.origin = x.origin AND s.seq = x.seq "
            f"WHERE {' AND '.join(where)} GROUP BY {keys} ORDER BY {keys}",
            args,
        )

    def daily_sales(self, zone: StoreTime) -> dict[str, tuple[int, int]]:
        """Per store day: sales rung and net takings (paise), as HQ's chain view counts them."""
        self._calendar(zone)
        return {
            str(day): (int(n), int(net))
            for day, n, net in self.conn.execute(
                "SELECT store_day(ts_ms), SUM(kind = 'sale'), SUM(total) FROM sales GROUP BY 1"
            )
        }
