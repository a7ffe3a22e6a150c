"""The SQL of X, Z and sales reports: totals over the local views, so reports need no network.

What a report means (an X report changes nothing, a Z report closes the period with a `report.z`
op) is meshpos/service/reports.py; this module only sums.
"""

from __future__ import annotations

from typing import Any

from meshpos.ledger.views import Row, Views

SALES_BY = {
    "sku": ("l.sku", "sale_lines"),
    "category": ("l.category", "sale_lines"),
    "hour": ("strftime('%Y-%m-%d %H:00', s.ts_ms / 1000, 'unixepoch')", "sales"),
    "day": ("strftime('%Y-%m-%d', s.ts_ms / 1000, 'unixepoch')", "sales"),
    "payment": ("t.method", "tenders"),
    "cashier": ("s.user", "sales"),
    "terminal": ("s.terminal", "sales"),
}


class Reports:
    """Report queries, as `Ledger.reports`."""

    def __init__(self, views: Views) -> None:
        self.conn = views.conn
        self._views = views

    def last_z_seq(self, origin: str) -> int | None:
        """Seq of `origin`'s newest `report.z` op, if it ever closed a period."""
        row = self.conn.execute(
            "SELECT seq FROM ops WHERE origin = ? AND kind = 'report.z' ORDER BY seq DESC LIMIT 1",
            (origin,),
        ).fetchone()
        return int(row[0]) if row else None

    def shift(self, origin: str, after_seq: int) -> dict[str, Any]:
        """`origin`'s sales, returns and exchanges recorded after its op `after_seq`: counts,
        totals, first and last receipt, and breakdowns by tender method and GST rate."""
        where = "s.origin = ? AND s.seq > ?"
        args = (origin, after_seq)
        head = self._views.rows(
            "SELECT COUNT(*) FILTER (WHERE kind = 'sale') AS sales, "
            "COUNT(*) FILTER (WHERE kind = 'return') AS returns, "
            "COUNT(*) FILTER (WHERE kind = 'exchange') AS exchanges, "
            "COALESCE(SUM(subtotal), 0) AS gross, COALESCE(SUM(discount), 0) AS discounts, "
            "COALESCE(SUM(tax), 0) AS tax, COALESCE(SUM(total), 0) AS net, "
            "MIN(number) AS first_receipt, MAX(number) AS last_receipt "
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
            "SELECT l.gst_rate, SUM(l.total) AS taxable_incl, SUM(l.tax) AS tax FROM sale_lines l "
            f"JOIN sales s ON s.origin = l.origin AND s.seq = l.seq WHERE {where} "
            "GROUP BY l.gst_rate ORDER BY l.gst_rate",
            args,
        )
        return {**head, "tenders": tenders, "gst": gst}

    def sales_by(self, by: str, date_from: str | None, date_to: str | None) -> list[Row]:
        """Sales grouped by one of `SALES_BY`, between two YYYY-MM-DD dates (UTC, inclusive)."""
        key, source = SALES_BY[by]
        where, args = ["1 = 1"], []
        if date_from:
            where.append("s.ts_ms >= CAST(strftime('%s', ?) AS INTEGER) * 1000")
            args.append(date_from)
        if date_to:
            where.append("s.ts_ms < (CAST(strftime('%s', ?) AS INTEGER) + 86400) * 1000")
            args.append(date_to)
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

    def is_date(self, value: str) -> bool:
        """Whether SQLite reads `value` as a date, as `sales_by` will."""
        return self.conn.execute("SELECT strftime('%s', ?)", (value,)).fetchone()[0] is not None
