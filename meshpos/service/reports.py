"""X, Z and sales reports over the local views (`Ledger.reports`), so they work with no network.

An X report shows this terminal's takings since its last Z report and changes nothing. A Z report
shows the same and closes the period by recording a `report.z` op, so Z numbers are gapless and
replicate like everything else.
"""

from __future__ import annotations

from typing import Any

from meshpos.core.errors import InputError
from meshpos.ledger.reports import SALES_BY
from meshpos.service.terminal import Terminal


def shift_totals(t: Terminal) -> dict[str, Any]:
    """This terminal's takings since its last Z report, and the number the next Z gets."""
    number, after_seq = 0, 0
    seq = t.ledger.reports.last_z_seq(t.node_id)
    if seq is not None:
        op = t.ledger.get(t.node_id, seq)
        assert op is not None
        number, after_seq = int(op.payload["number"]), seq
    return {
        "terminal": t.cfg.name,
        "z_number": number + 1,
        **t.ledger.reports.shift(t.node_id, after_seq),
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
    if by not in SALES_BY:
        raise InputError(f"--by must be one of {', '.join(SALES_BY)}")
    for value, name in ((date_from, "--from"), (date_to, "--to")):
        if value and not t.ledger.reports.is_date(value):
            raise InputError(f"{name} {value!r} is not a date (YYYY-MM-DD)")
    return t.ledger.reports.sales_by(by, date_from, date_to)
