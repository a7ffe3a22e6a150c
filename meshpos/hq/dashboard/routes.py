"""The dashboard's URL table: pages, form actions and the role each needs, signing in and out,
the stylesheet. `routes(service)` is what meshpos.hq.app mounts next to the relay API."""

from __future__ import annotations

import threading
import time
from collections import deque
from functools import partial

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from meshpos.hq.accounts import MAX_AGE_MS, Accounts, SignInRefused, csrf_matches
from meshpos.hq.dashboard import actions, pages
from meshpos.hq.dashboard.site import (
    COOKIE,
    HEADERS,
    HERE,
    Action,
    Site,
    View,
    client_address,
    read_form,
    safe_next,
    same_origin,
)
from meshpos.hq.service import HQService

ADDRESS_FAILURES = 20
ADDRESS_WINDOW_S = 600.0

PAGES: list[tuple[str, str, View, str]] = [
    ("/stores", "stores.html", pages.stores, "viewer"),
    ("/sales", "sales.html", pages.sales, "viewer"),
    ("/stock", "stock.html", pages.stock, "viewer"),
    ("/loyalty", "loyalty.html", pages.loyalty, "viewer"),
    ("/catalogue", "catalogue.html", pages.catalogue, "viewer"),
    ("/payments", "payments.html", pages.payments, "viewer"),
    ("/conflicts", "conflicts.html", pages.conflicts, "viewer"),
    ("/people", "people.html", pages.people, "admin"),
    ("/account", "account.html", pages.account, "viewer"),
]
ACTIONS: list[tuple[str, Action, str, str]] = [
    # path, action, role, the page whose form it is
    ("/catalogue/price", actions.set_price, "operator", "/catalogue"),
    ("/catalogue/product", actions.upsert_product, "operator", "/catalogue"),
    ("/catalogue/gst", actions.set_gst_bands, "operator", "/catalogue"),
    ("/loyalty/rule", actions.set_loyalty_rule, "operator", "/loyalty"),
    ("/payments/block", actions.block_card, "operator", "/payments"),
    ("/payments/unblock", actions.unblock_card, "operator", "/payments"),
    ("/payments/settle", actions.settle_payments, "operator", "/payments"),
    ("/payments/float", actions.set_card_float, "admin", "/payments"),
    ("/people/add", actions.add_person, "admin", "/people"),
    ("/people/change", actions.change_person, "admin", "/people"),
    ("/account/password", actions.change_own_password, "viewer", "/account"),
]


class AddressThrottle:
    """Failed sign-ins per client address: past a limit in a window, that address waits, so one
    machine cannot try passwords across every account."""

    def __init__(self, limit: int = ADDRESS_FAILURES, window_s: float = ADDRESS_WINDOW_S) -> None:
        self.limit, self.window_s = limit, window_s
        self._failed: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def wait_s(self, address: str) -> float:
        now = time.monotonic()
        with self._lock:
            times = self._failed.get(address)
            while times and now - times[0] > self.window_s:
                times.popleft()
            if not times or len(times) < self.limit:
                return 0.0
            return self.window_s - (now - times[0])

    def failed(self, address: str) -> None:
        with self._lock:
            if len(self._failed) > 10_000:
                self._failed.clear()
            self._failed.setdefault(address, deque()).append(time.monotonic())


def _signin_page(
    site: Site, request: Request, nxt: str, user: str = "", error: str = "", status: int = 200
) -> Response:
    html = site.render(
        "signin.html",
        **site.base(None, "/signin", request),
        next=nxt,
        refused=error,
        user=user[:32],
    )
    return site.respond(html, status)


async def signin_form(site: Site, request: Request) -> Response:
    nxt = safe_next(request.query_params.get("next"))
    if await site.session_of(request) is not None:
        return RedirectResponse(nxt, 303)
    return _signin_page(site, request, nxt)


async def signin(site: Site, throttle: AddressThrottle, request: Request) -> Response:
    if not same_origin(request):
        return PlainTextResponse("cross-site request refused", status_code=403)
    form = await read_form(request)
    address = client_address(request)
    nxt = safe_next(form.get("next"))
    user = form.get("user", "").strip()
    wait = throttle.wait_s(address)
    if wait:
        msg = f"too many failed sign-ins from this address: wait {int(wait // 60) + 1} min"
        return _signin_page(site, request, nxt, user, msg, 429)
    try:
        done = await run_in_threadpool(
            site.accounts.sign_in, user, form.get("password", ""), address
        )
    except SignInRefused as exc:
        throttle.failed(address)
        return _signin_page(site, request, nxt, user, str(exc), 401)
    response = RedirectResponse(nxt, status_code=303, headers=HEADERS)
    response.set_cookie(
        COOKIE, done.token, max_age=MAX_AGE_MS // 1000, httponly=True, samesite="strict",
        secure=request.url.scheme == "https", path="/",
    )  # fmt: skip
    return response


async def signout(site: Site, request: Request) -> Response:
    if not same_origin(request):
        return PlainTextResponse("cross-site request refused", status_code=403)
    form = await read_form(request)
    session = await site.session_of(request)
    if session is not None and csrf_matches(session, form.get("csrf")):
        await run_in_threadpool(site.accounts.sign_out, request.cookies.get(COOKIE))
    response = RedirectResponse("/signin", status_code=303, headers=HEADERS)
    response.delete_cookie(COOKIE, path="/")
    return response


async def home(request: Request) -> Response:
    return RedirectResponse("/stores", status_code=303)


def routes(service: HQService, accounts: Accounts | None = None) -> list[BaseRoute]:
    site = Site(service, accounts or Accounts(service.storage.people, service.now_ms))
    views = {path: (template, view) for path, template, view, _ in PAGES}
    out: list[BaseRoute] = [
        Route("/", home),
        Route("/signin", partial(signin_form, site)),
        Route("/signin", partial(signin, site, AddressThrottle()), methods=["POST"]),
        Route("/signout", partial(signout, site), methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="hq-static"),
    ]
    out += [Route(p, site.page(p, t, v, role)) for p, t, v, role in PAGES]
    out += [
        Route(p, site.action(p, fn, role, page, *views[page]), methods=["POST"])
        for p, fn, role, page in ACTIONS
    ]
    return out
