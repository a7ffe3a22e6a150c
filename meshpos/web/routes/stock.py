"""The stock screen: every counter of the store, stock per SKU with each counter's moves, and
stock in or a counted correction (a supervisor's PIN for a correction)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from meshpos.web.backend import TillParts
from meshpos.web.common import Context, Form, Screen, Site, dismiss_approval, whole_number
from meshpos.web.session import WebSession


def move_view(p: TillParts, s: WebSession, request: Request) -> Context:
    """The stock-in and correction form, its notice and its PIN pad."""
    approval = s.approval if s.approval and s.approval.action.startswith("/stock") else None
    return {
        "notice": s.notice if s.notice and s.notice.page == "stock" else None,
        "approval": approval,
        "approvers": p.sessions.approvers() if approval else [],
    }


def stock_view(p: TillParts, s: WebSession, request: Request) -> Context:
    return {
        "st": p.stock_screen.view(request.query_params.get("q", "")),
        **move_view(p, s, request),
    }


MOVE = Screen("stock", "_stock_move.html", move_view)


def move(p: TillParts, s: WebSession, d: Form) -> None:
    p.stock_screen.move(
        s,
        d.get("kind", ""),
        d.get("sku", "").strip(),
        whole_number(d.get("qty"), "quantity"),
        d.get("reason", ""),
        d.get("approver", ""),
        d.get("approver_pin", ""),
    )


def routes(site: Site) -> list[BaseRoute]:
    return [
        Route("/stock", site.page("stock", "stock.html", stock_view)),
        Route("/part/stock", site.page("stock", "_stock.html", stock_view)),
        Route("/stock/move", site.action(move, MOVE, approval="/stock/move"), methods=["POST"]),
        Route("/stock/dismiss", site.action(dismiss_approval, MOVE), methods=["POST"]),
    ]
