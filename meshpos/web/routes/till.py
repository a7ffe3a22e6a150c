"""The till: scanning, the customer, tenders, returns and exchanges, completing; its fragments
for live updates, and its state as JSON."""

from __future__ import annotations

from functools import partial

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from meshpos.web.backend import TillParts
from meshpos.web.common import (
    Action,
    Context,
    Form,
    Screen,
    Site,
    dismiss_approval,
    need_signin,
    optional_number,
    session_token,
    whole_number,
)
from meshpos.web.session import WebSession


def till_view(p: TillParts, s: WebSession, request: Request) -> Context:
    return p.till_screen.context(s)


def last_view(p: TillParts, s: WebSession, request: Request) -> Context:
    return {"last": p.till_screen.last(s)}


TILL = Screen("till", "_till.html", till_view)


def scan(p: TillParts, s: WebSession, d: Form) -> None:
    p.cart.scan(s, d.get("code", ""))


def qty(p: TillParts, s: WebSession, d: Form) -> None:
    wanted = optional_number(d, "qty", "quantity")
    delta = whole_number(d.get("delta") or "0", "change")
    line = whole_number(d.get("line"), "line")
    p.cart.set_qty(s, d.get("which", "sale"), line, wanted, delta)


def remove(p: TillParts, s: WebSession, d: Form) -> None:
    p.cart.remove(s, d.get("which", "sale"), whole_number(d.get("line"), "line"))


def discount(p: TillParts, s: WebSession, d: Form) -> None:
    p.cart.discount(s, d.get("spec", ""), optional_number(d, "line", "line"))


def find_customers(p: TillParts, s: WebSession, d: Form) -> None:
    p.cart.find_customers(s, d.get("q", ""))


def attach_customer(p: TillParts, s: WebSession, d: Form) -> None:
    p.cart.attach_customer(s, d.get("customer") or None)


def add_customer(p: TillParts, s: WebSession, d: Form) -> None:
    p.cart.add_customer(s, d.get("name", ""), d.get("phone", ""), d.get("email", ""))


def pay(p: TillParts, s: WebSession, d: Form) -> None:
    p.cart.pay(s, d.get("method", "cash"), d.get("amount", ""))


def clear_payments(p: TillParts, s: WebSession, d: Form) -> None:
    p.cart.clear_payments(s)


def refund(p: TillParts, s: WebSession, d: Form) -> None:
    p.cart.refund(s, d.get("method", "cash"))


def exchange(p: TillParts, s: WebSession, d: Form) -> None:
    if d.get("cancel"):
        p.cart.cancel_exchange(s)
    else:
        p.cart.start_exchange(s)


def complete(p: TillParts, s: WebSession, d: Form) -> None:
    approver, pin = d.get("approver", ""), d.get("approver_pin", "")
    p.checkout.complete(s, approver, pin, d.get("method", "cash"))


def void(p: TillParts, s: WebSession, d: Form) -> None:
    p.cart.void(s)


async def till_json(site: Site, request: Request) -> Response:
    def work() -> Context | None:
        s = site.parts.sessions.get(session_token(request))
        return None if s is None else site.parts.till_screen.as_json(s)

    data = await site.backend.worker.call(work)
    return need_signin(request) if data is None else JSONResponse(data)


def routes(site: Site) -> list[BaseRoute]:
    def post(path: str, fn: Action) -> Route:
        return Route(path, site.action(fn, TILL), methods=["POST"])

    return [
        Route("/till", site.page("till", "till.html", till_view)),
        post("/till/scan", scan),
        post("/till/qty", qty),
        post("/till/remove", remove),
        post("/till/discount", discount),
        post("/till/customers", find_customers),
        post("/till/customer", attach_customer),
        post("/till/customer/new", add_customer),
        post("/till/pay", pay),
        post("/till/pay/clear", clear_payments),
        post("/till/refund", refund),
        post("/till/exchange", exchange),
        Route(
            "/till/complete",
            site.action(complete, TILL, approval="/till/complete", waits_for_rights=True),
            methods=["POST"],
        ),
        post("/till/void", void),
        post("/till/dismiss", dismiss_approval),
        Route("/part/till", site.page("till", "_till.html", till_view)),
        Route("/part/last", site.page("till", "_last.html", last_view)),
        Route("/api/till", partial(till_json, site)),
    ]
