"""X, Z, sales and GST reports over the local views (`Ledger.reports`), so they work with no network.

An X report shows this terminal's takings since its last Z report and changes nothing. A Z report
shows the same and closes the period by recording a `report.z` op, so Z numbers are gapless and
replicate like everything else. Every day and hour is the store's (`Terminal.store_time`): a sale
at 00:30 IST is on that IST day, in `--by day`, `--by hour`, `--from/--to` and the Z report.
"""

from __future__ import annotations

from typing import Any

from meshpos.core.errors import InputError
from meshpos.domain.gst import STATES
from meshpos.ledger.reports import GST_BY, SALES_BY
from meshpos.service.terminal import Terminal


def shift_totals(t: Terminal) -> dict[str, Any]:
    """This terminal's takings since its last Z report, the number the next Z gets, and the
    store day(s) and times its sales span."""
    number, after_seq = 0, 0
    seq = t.ledger.reports.last_z_seq(t.node_id)
    if seq is not None:
        op = t.ledger.get(t.node_id, seq)
        assert op is not None
        number, after_seq = int(op.payload["number"]), seq
    zone = t.store_time()
    totals = t.ledger.reports.shift(t.node_id, after_seq, zone)
    first, last = totals.pop("first_ms"), totals.pop("last_ms")
    days = [d["day"] for d in totals["days"]] or [zone.day(t.now_ms())]
    cards = t.ledger.giftcards.sold(t.node_id, after_seq)
    paid: dict[str, int] = {}
    for card in cards:
        for tender in card.get("tenders") or []:
            paid[tender["method"]] = paid.get(tender["method"], 0) + int(tender["amount"])
    return {
        "terminal": t.cfg.name,
        "z_number": number + 1,
        "day": days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}",
        "first_sale": zone.iso(first) if first is not None else None,
        "last_sale": zone.iso(last) if last is not None else None,
        **totals,
        # Gift cards sold are money taken but not sales (no GST until the card is spent): the
        # drawer holds their cash too.
        "giftcards_sold": len(cards),
        "giftcards_amount": sum(int(c.get("amount") or 0) for c in cards),
        "giftcard_tenders": [{"method": m, "amount": a} for m, a in sorted(paid.items())],
    }


def close_day(t: Terminal, user: str | None = None) -> dict[str, Any]:
    with t.transaction():
        totals = shift_totals(t)
        op = t.append(
            "report.z",
            {
                "number": totals["z_number"],
                "day": totals["day"],
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
    """Store-wide sales grouped `by`, between two store days (YYYY-MM-DD, both included)."""
    if by not in SALES_BY:
        raise InputError(f"--by must be one of {', '.join(SALES_BY)}")
    zone = t.store_time()
    start, end = zone.day_range(date_from, date_to)
    return t.ledger.reports.sales_by(by, start, end, zone)


def gst_report(
    t: Terminal, by: str, date_from: str | None = None, date_to: str | None = None
) -> list[dict[str, Any]]:
    """Taxable value and CGST, SGST, IGST of the store's invoices and credit notes between two
    store days, grouped `by` rate, HSN, place of supply or buyer GSTIN (B2B only)."""
    if by not in GST_BY:
        raise InputError(f"--by must be one of {', '.join(GST_BY)}")
    start, end = t.store_time().day_range(date_from, date_to)
    rows = t.ledger.reports.gst_by(by, start, end)
    if by == "place":
        for row in rows:
            row["state"] = STATES.get(row["place"], "")
    return rows
