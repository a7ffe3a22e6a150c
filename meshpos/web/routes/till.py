"""The till: scanning and tiles, the customer, discounts and oversells (a supervisor's PIN where
the step needs one), tenders, held carts, returns and exchanges, completing, the receipt printer;
its fragments for live updates, and its state as JSON."""

from __future__ import annotations

from functools import partial

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from meshpos.core.errors import InputError, MeshposError
from meshpos.devices import qr
from meshpos.service.till import exchange_upi_request
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
from meshpos.web.session import Notice, WebSession


def till_view(p: TillParts, s: WebSession, request: Request) -> Context:
    return p.till_screen.context(s)


def last_view(p: TillParts, s: WebSession, request: Request) -> Context:
    return {"last": p.till_screen.last(s)}


def printer_view(p: TillParts, s: WebSession, request: Request) -> Context:
    return {"printer": p.till_screen.printer_trouble(), "has_last": s.last is not None}


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
    line = optional_number(d, "line", "line")
    p.cart.discount(s, d.get("spec", ""), line, d.get("approver", ""), d.get("approver_pin", ""))


def oversell(p: TillParts, s: WebSession, d: Form) -> None:
    sell = d.get("sell") == "1"
    p.cart.oversell(s, sell, d.get("approver", ""), d.get("approver_pin", ""))


def keypad(p: TillParts, s: WebSession, d: Form) -> None:
    """The on-screen keypad: a quantity for the selected line, or the cash the customer gave."""
    value = d.get("value", "").strip()
    if not value:
        raise InputError("type a number on the keypad first")
    if d.get("use") == "qty":
        line = whole_number(d.get("line"), "line")
        p.cart.set_qty(s, "sale", line, whole_number(value, "quantity"), 0)
    else:
        p.cart.pay(s, "cash", value)


def select(p: TillParts, s: WebSession, d: Form) -> None:
    p.cart.select(s, whole_number(d.get("line"), "line"))


def category(p: TillParts, s: WebSession, d: Form) -> None:
    p.cart.category(s, d.get("name", ""))


def hold(p: TillParts, s: WebSession, d: Form) -> None:
    p.cart.hold(s, d.get("label", ""))


def held(p: TillParts, s: WebSession, d: Form) -> None:
    p.cart.show_held(s)


def recall(p: TillParts, s: WebSession, d: Form) -> None:
    p.cart.recall(s, whole_number(d.get("cart"), "held sale"))


def printer(p: TillParts, s: WebSession, d: Form) -> None:
    """Printer trouble's three ways out: Retry, Reprint last, Print on another counter."""
    what = d.get("what", "")
    if what == "retry":
        due = p.printer.retry()
        s.notice = Notice("ok", f"trying the printer again ({due} slip(s) waiting)")
    elif what == "reprint":
        if s.last is None:
            raise InputError("no sale has been rung in this session yet: nothing to reprint")
        job = p.printer.reprint(str(s.last["sale_id"]))
        s.notice = Notice("ok", f"copy of {s.last['sale_id']} sent to the printer (job {job})")
    elif what == "forward":
        name, n = p.printer.forward(d.get("peer", ""))
        s.notice = Notice("ok", f"{n} slip(s) sent to {name}'s printer")
    else:
        raise InputError(f"printer action {what!r}: retry, reprint or forward")


def find_customers(p: TillParts, s: WebSession, d: Form) -> None:
    p.cart.find_customers(s, d.get("q", ""))


def attach_customer(p: TillParts, s: WebSession, d: Form) -> None:
    p.cart.attach_customer(s, d.get("customer") or None)


def set_buyer(p: TillParts, s: WebSession, d: Form) -> None:
    p.cart.set_buyer(s, d.get("gstin", "").strip() or None, d.get("state", "").strip() or None)


def add_customer(p: TillParts, s: WebSession, d: Form) -> None:
    p.cart.add_customer(s, d.get("name", ""), d.get("phone", ""), d.get("email", ""))


def pay(p: TillParts, s: WebSession, d: Form) -> None:
    p.cart.pay(
        s,
        d.get("method", "cash"),
        d.get("amount", ""),
        approval=d.get("approval", ""),
        last4=d.get("last4", ""),
        card_number=d.get("card_number", ""),
        card_expiry=d.get("card_expiry", ""),
        code=d.get("code", ""),
        upi_ref=d.get("upi_ref", ""),
    )


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
    p.checkout.complete(
        s,
        approver,
        pin,
        d.get("method", "cash"),
        d.get("approval", ""),
        d.get("last4", ""),
        upi_ref=d.get("upi_ref", ""),
        code=d.get("code", ""),
    )


def sell_giftcard(p: TillParts, s: WebSession, d: Form) -> None:
    p.checkout.sell_giftcard(s, d.get("amount", ""), d)


def void(p: TillParts, s: WebSession, d: Form) -> None:
    p.cart.void(s)


async def till_json(site: Site, request: Request) -> Response:
    def work() -> Context | None:
        s = site.parts.sessions.get(session_token(request))
        return None if s is None else site.parts.till_screen.as_json(s)

    data = await site.backend.worker.call(work)
    return need_signin(request) if data is None else JSONResponse(data)


async def upi_qr(site: Site, request: Request) -> Response:
    """The UPI request for what this session's sale still owes, as a QR code."""

    def work() -> str | None:
        s = site.parts.sessions.get(session_token(request))
        if s is None:
            return None
        ask = s.till.upi_request() if s.take is None else exchange_upi_request(s.till, s.take)
        return qr.svg(ask.uri)

    try:
        svg = await site.backend.worker.call(work)
    except MeshposError as exc:
        return Response(str(exc), status_code=409, media_type="text/plain")
    if svg is None:
        return need_signin(request)
    return Response(svg, media_type="image/svg+xml", headers={"cache-control": "no-store"})


def routes(site: Site) -> list[BaseRoute]:
    def post(path: str, fn: Action, approval: bool = False, waits: bool = False) -> Route:
        handler = site.action(fn, TILL, approval=path if approval else None, waits_for_rights=waits)
        return Route(path, handler, methods=["POST"])

    return [
        Route("/till", site.page("till", "till.html", till_view)),
        post("/till/scan", scan),
        post("/till/qty", qty),
        post("/till/select", select),
        post("/till/keypad", keypad),
        post("/till/remove", remove),
        post("/till/discount", discount, approval=True),
        post("/till/oversell", oversell, approval=True),
        post("/till/category", category),
        post("/till/hold", hold),
        post("/till/held", held),
        post("/till/recall", recall),
        post("/till/printer", printer),
        post("/till/customers", find_customers),
        post("/till/customer", attach_customer),
        post("/till/customer/new", add_customer),
        post("/till/buyer", set_buyer),
        post("/till/pay", pay, waits=True),
        post("/till/pay/clear", clear_payments),
        post("/till/refund", refund),
        post("/till/exchange", exchange),
        Route(
            "/till/complete",
            site.action(complete, TILL, approval="/till/complete", waits_for_rights=True),
            methods=["POST"],
        ),
        post("/till/void", void),
        post("/till/giftcard", sell_giftcard),
        post("/till/dismiss", dismiss_approval),
        Route("/part/till", site.page("till", "_till.html", till_view)),
        Route("/part/last", site.page("till", "_last.html", last_view)),
        Route("/part/printer", site.page("till", "_printer.html", printer_view)),
        Route("/api/till", partial(till_json, site)),
        Route("/till/upi.svg", partial(upi_qr, site)),
    ]
