"""X, Z and sales reports: plain SQL over the local views, so they work with no network at all.

An X report shows this terminal's takings since its last Z report and changes nothing. A Z report
shows the same and closes the period by recording a `report.z` op, so Z numbers are gapless and
replicate like everything else.
"""

from __future__ import annotations

from typing import Any

from meshpos.core.errors import InputError
from meshpos.service.terminal import Terminal

BY = {
    "sku": ("l.sku", "sale_lines"),
    "category": ("l.category", "sale_lines"),
    "hour": ("strftime('%Y-%m-%d %H:00', s.ts_ms / 1000, 'unixepoch')", "sales"),
    "day": ("strftime('%Y-%m-%d', s.ts_ms / 1000, 'unixepoch')", "sales"),
    "payment": ("t.method", "tenders"),
    "cashier": ("s.user", "sales"),
    "terminal": ("s.terminal", "sales"),
}


def _last_z(t: Terminal) -> tuple[int, int]:
    row = t.ledger.conn.execute(
        "SELECT seq FROM ops WHERE origin = ? AND kind = 'report.z' ORDER BY seq DESC LIMIT 1",
        (t.node_id,),
    ).fetchone()
    if row is None:
        return 0, 0
    op = t.ledger.get(t.node_id, row[0])
    assert op is not None
    return int(op.payload["number"]), int(op.seq)


def shift_totals(t: Terminal) -> dict[str, Any]:
    number, after_seq = _last_z(t)
    where = "s.origin = ? AND s.seq > ?"
    args = (t.node_id, after_seq)
    head = t.query(
        "SELECT COUNT(*) FILTER (WHERE kind = 'sale') AS sales, "
        "COUNT(*) FILTER (WHERE kind = 'return') AS returns, "
        "COUNT(*) FILTER (WHERE kind = 'exchange') AS exchanges, "
        "COALESCE(SUM(subtotal), 0) AS gross, COALESCE(SUM(discount), 0) AS discounts, "
        "COALESCE(SUM(tax), 0) AS tax, COALESCE(SUM(total), 0) AS net, "
        "MIN(number) AS first_receipt, MAX(number) AS last_receipt "
        f"FROM sales s WHERE {where}",
        args,
    )[0]
    tenders = t.query(
        "SELECT t.method, SUM(t.amount) AS amount, COUNT(*) AS count FROM tenders t "
        f"JOIN sales s ON s.origin = t.origin AND s.seq = t.seq WHERE {where} "
        "GROUP BY t.method ORDER BY t.method",
        args,
    )
    gst = t.query(
        "SELECT l.gst_rate, SUM(l.total) AS taxable_incl, SUM(l.tax) AS tax FROM sale_lines l "
        f"JOIN sales s ON s.origin = l.origin AND s.seq = l.seq WHERE {where} "
        "GROUP BY l.gst_rate ORDER BY l.gst_rate",
        args,
    )
    return {
        "terminal": t.cfg.name,
        "z_number": number + 1,
        **head,
        "tenders": tenders,
        "gst": gst,
    }


def close_day(t: Terminal, user: str | None = None) -> dict[str, Any]:
    with t.transaction():
        totals = shift_totals(t)
        op = t.append(
            "report.z",
            {
                "number": totals["z_number"],
                "sales": totals["sales"],
                "net": totals["net"],
                "tax": totals["tax"],
                "first_receipt": totals["first_receipt"],
                "last_receipt": totals["last_receipt"],
            },
            user,
        )
    totals["op"] = f"{op.origin}:{op.seq}"
    return totals


def sales_report(
    t: Terminal, by: str, date_from: str | None = None, date_to: str | None = None
) -> list[dict[str, Any]]:
    if by not in BY:
        raise InputError(f"--by must be one of {', '.join(BY)}")
    key, source = BY[by]
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
    for value, name in ((date_from, "--from"), (date_to, "--to")):
        if (
            value
            and t.ledger.conn.execute("SELECT strftime('%s', ?)", (value,)).fetchone()[0] is None
        ):
            raise InputError(f"{name} {value!r} is not a date (YYYY-MM-DD)")
    return t.query(sql, args)
