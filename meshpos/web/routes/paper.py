"""The paper sales screen: enter what was written on slips while every counter was down (slip
number, the time on it, the items and how it was paid), and the paper entries recorded so far."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from meshpos.core.errors import InputError
from meshpos.domain.money import rupees
from meshpos.domain.pricing import Tender, parse_item
from meshpos.domain.upi import check_ref
from meshpos.service import cards, paper
from meshpos.web.backend import TillParts
from meshpos.web.common import Context, Form, Screen, Site
from meshpos.web.session import Notice, WebSession


def paper_view(p: TillParts, s: WebSession, request: Request) -> Context:
    t = p.terminal
    zone = t.store_time()
    return {
        "notice": s.notice if s.notice and s.notice.page == "paper" else None,
        "entries": [{**row, "written": zone.stamp(row["ts_ms"])} for row in paper.recent(t, 50)],
        "today": zone.day(t.now_ms()),
    }


PAPER = Screen("paper", "_paper.html", paper_view)


def _tender(d: Form) -> list[Tender]:
    method = d.get("method", "cash")
    if method == "cash":
        return []
    if method == cards.MACHINE:
        return [cards.machine_tender(None, d.get("approval", ""), d.get("last4", ""))]
    if method == "upi":
        return [Tender("upi", upi_ref=check_ref(d.get("upi_ref", "")))]
    raise InputError(f"paid by {method!r}: cash, the card machine or UPI")


def add(p: TillParts, s: WebSession, d: Form) -> None:
    items = [parse_item(i) for i in re.split(r"[\s,]+", d.get("items", "")) if i]
    tenders = _tender(d)
    result = paper.add(
        p.terminal,
        items,
        slip=d.get("slip", ""),
        written=d.get("written", "").replace("T", " "),
        tenders=tenders,
        customer=d.get("customer", "").strip() or None,
        discount=d.get("discount", "").strip() or None,
        total=d.get("total", "").strip() or None,
        user=s.user,
    )
    pay = result.payload
    s.notice = Notice(
        "ok",
        f"paper slip {pay['paper']['slip']} entered as {result.sale_id}: "
        f"{rupees(pay['total'])}, written {p.terminal.store_time().stamp(pay['ts_ms'])}",
    )


def routes(site: Site) -> list[BaseRoute]:
    return [
        Route("/paper", site.page("paper", "paper.html", paper_view)),
        Route("/paper/add", site.action(add, PAPER), methods=["POST"]),
    ]
