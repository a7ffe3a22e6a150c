"""Entering paper sales: what was written on slips while every counter was down, for every front
door (meshpos/domain/paper.py has the rules). The sale is recorded through `Terminal.sell`, so
stock, GST, loyalty and tenders are a sale's; what differs is its numbering and its time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from meshpos.core.errors import InputError
from meshpos.domain.money import parse_rupees, rupees
from meshpos.domain.paper import check_slip, written_at
from meshpos.domain.pricing import Tender
from meshpos.service.terminal import SaleResult, Terminal


def add(
    t: Terminal,
    items: Sequence[tuple[str, int]],
    *,
    slip: str,
    written: str,
    tenders: Sequence[Tender] = (),
    customer: str | None = None,
    discount: str | None = None,
    total: str | None = None,
    user: str | None = None,
) -> SaleResult:
    """Record the sale written on paper slip `slip` at `written` (store time). With `total`
    (what the slip says was paid) a sale that prices differently is refused, naming both: the
    cashier checks the slip rather than the books drifting. The goods are gone, so stock beyond
    what this counter sees is taken (and flagged as an oversell, as always)."""
    slip = check_slip(slip)
    if not items:
        raise InputError("a paper sale needs the items written on the slip")
    found = t.ledger.views.paper_slip(slip)
    if found is not None:
        raise InputError(f"paper slip {slip} was already entered, as sale {found}")
    with t.transaction():
        n = t.ledger.views.next_paper_number(t.node_id)
        paper = {
            "id": f"{t.cfg.store}-{t.cfg.name}-P{n:05d}",
            "number": n,
            "slip": slip,
            "written_ms": written_at(written, t.store_time(), t.now_ms()),
        }
        result = t.sell(
            items,
            tenders=tenders,
            customer=customer,
            discount=discount,
            user=user,
            allow_oversell=True,
            paper=paper,
        )
        if total is not None:
            expected = parse_rupees(total, "slip total")
            if expected != result.payload["total"]:
                raise InputError(
                    f"the slip says {rupees(expected)} but these items come to "
                    f"{rupees(result.payload['total'])} at today's prices: check the slip's "
                    "items and discount (nothing was recorded)"
                )
    return result


def recent(t: Terminal, limit: int = 20) -> list[dict[str, Any]]:
    """Paper entries of the store, newest written first."""
    return t.ledger.views.paper_sales(limit)
