"""The paper sales screen: enter what was written on slips while every counter was down (slip
number, the time on it, the items and how it was paid), and the paper entries recorded so far."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from meshpos.domain.money import rupees
from meshpos.domain.pricing import parse_item
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


def add(p: TillParts, s: WebSession, d: Form) -> None:
    items = [parse_item(i) for i in re.split(r"[\s,]+", d.get("items", "")) if i]
    tenders = cards.final_tenders(
        d.get("method", "cash"),
        approval=d.get("approval", ""),
        last4=d.get("last4", ""),
        upi_ref=d.get("upi_ref", ""),
    )
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
