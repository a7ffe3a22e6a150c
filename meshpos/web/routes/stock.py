"""The stock screen: every counter of the store, and stock per SKU with each counter's moves."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from meshpos.web.backend import TillParts
from meshpos.web.common import Context, Site
from meshpos.web.session import WebSession


def stock_view(p: TillParts, s: WebSession, request: Request) -> Context:
    return {"st": p.stock_screen.view(request.query_params.get("q", ""))}


def routes(site: Site) -> list[BaseRoute]:
    return [
        Route("/stock", site.page("stock", "stock.html", stock_view)),
        Route("/part/stock", site.page("stock", "_stock.html", stock_view)),
    ]
