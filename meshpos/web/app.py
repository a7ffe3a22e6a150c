"""The web till's HTTP side (Starlette): pages, form actions, fragments and the live event stream.

Pages are rendered on the server (Jinja2 templates in meshpos/web/templates). Forms work as plain
HTML posts (post, then redirect); with JavaScript on (static/till.js) they are sent with fetch and
the server answers with the fragment to swap in, so the scan field keeps its focus and a keyboard
wedge scanner never types into a page that is reloading. `/events` streams Server-Sent Events
from meshpos/web/live.py; a page re-fetches its `data-live` parts when one arrives.

Sessions are server-side: the cookie holds a random token (HttpOnly, SameSite=Strict) naming a
session in memory; a restarted server asks everyone to sign in again. Cross-site posts are refused
(SameSite cookie plus an Origin check) and only the expected Host names are served, so a web page
elsewhere cannot drive the till through the cashier's browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from meshpos.core.errors import MeshposError
from meshpos.web.backend import COOKIE, Backend, Notice, WebSession
from meshpos.web.live import Event
from meshpos.web.views import ago, clock, money

HERE = Path(__file__).resolve().parent
HEARTBEAT_S = 15.0
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
DISCOUNTS = ("5%", "10%", "20%")
MAX_FORM = 64 * 1024

Handler = Callable[[Request], Awaitable[Response]]


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = money
    env.filters["clock"] = clock
    env.globals["ago"] = ago
    env.globals["DISCOUNTS"] = DISCOUNTS
    return env


def _int(value: str | None, what: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise MeshposError(f"{what} {value!r} must be a whole number") from None


def create_app(
    directory: str | Path,
    *,
    host: str = "127.0.0.1",
    allowed_hosts: Sequence[str] | None = None,
    print_worker: bool = True,
    live_interval: float = 0.1,
) -> Starlette:
    """The web till of the node in `directory`. `print_worker`: drain the print queue here (off
    when the daemon, which has its own worker, serves the page)."""
    backend = Backend(Path(directory), print_worker=print_worker, live_interval=live_interval)
    env = _env()

    # -- helpers ---------------------------------------------------------------------------------

    def render(name: str, **ctx: Any) -> str:
        return env.get_template(name).render(**ctx)

    def base_ctx(s: WebSession | None, page: str) -> dict[str, Any]:
        t = backend.t
        return {
            "page": page,
            "banner": backend.live.banner,
            "terminal": t.cfg.name,
            "store": t.cfg.store_name or t.cfg.store,
            "s": s,
            "user_name": (s.name if s else ""),
            "role": (s.role or "" if s else ""),
            "staff": backend.has_staff(),
            "default_user": t.cfg.user,
        }

    def token(request: Request) -> str | None:
        return request.cookies.get(COOKIE)

    def wants_fragment(request: Request) -> bool:
        return request.headers.get("x-fragment") == "1"

    def need_signin(request: Request) -> Response:
        if wants_fragment(request) or request.url.path.startswith(("/part/", "/api/")):
            return PlainTextResponse("sign in first", status_code=401, headers={"x-signin": "1"})
        return RedirectResponse("/signin", status_code=303)

    def same_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        if not origin or origin == "null":
            return origin is None
        return urlsplit(origin).netloc == request.headers.get("host", "")

    async def form(request: Request) -> dict[str, str]:
        """An urlencoded form (what HTML forms and till.js send); the last value of a repeated
        field wins. Parsed here, so form posts need no multipart library."""
        body = await request.body()
        if len(body) > MAX_FORM:
            raise HTTPException(413, f"form too large ({len(body)} bytes)")
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))

    def page_handler(
        name: str, template: str, build: Callable[[WebSession, Request], dict[str, Any]]
    ) -> Handler:
        async def handler(request: Request) -> Response:
            def work() -> str | None:
                s = backend.session(token(request))
                if s is None:
                    return None
                return render(template, **base_ctx(s, name), **build(s, request))

            html = await backend.call(work)
            return need_signin(request) if html is None else HTMLResponse(html)

        return handler

    def action(
        fn: Callable[[WebSession, dict[str, str]], None],
        *,
        back: str = "/till",
        fragment: str = "_till.html",
        approval: str | None = None,
    ) -> Handler:
        """A POST that runs `fn` on the session; answers with the fragment to swap in (fetch)
        or a redirect back to the page (a plain form post)."""

        async def handler(request: Request) -> Response:
            if not same_origin(request):
                return PlainTextResponse("cross-site request refused", status_code=403)
            data = await form(request)

            def work() -> str | None:
                s = backend.session(token(request))
                if s is None:
                    return None
                s.notice = None
                if approval is None:
                    s.approval = None
                keep = {k: v for k, v in data.items() if k not in ("approver", "approver_pin")}
                backend.act(s, lambda: fn(s, data), (approval, keep) if approval else None)
                if s.notice is not None:
                    s.notice.page = back.strip("/")
                if not wants_fragment(request):
                    return ""
                return render(fragment, **base_ctx(s, back.strip("/")), **fragment_ctx(fragment, s))

            html = await backend.call(work)
            if html is None:
                return need_signin(request)
            if not wants_fragment(request):
                return RedirectResponse(back, status_code=303)
            return HTMLResponse(html)

        return handler

    def manager_ctx(s: WebSession, request: Request | None = None) -> dict[str, Any]:
        approval = s.approval if s.approval and s.approval.action.startswith("/manager") else None
        return {
            "m": backend.manager_view(),
            "notice": s.notice if s.notice and s.notice.page == "manager" else None,
            "approval": approval,
            "approvers": backend.approvers() if approval else [],
        }

    def fragment_ctx(fragment: str, s: WebSession) -> dict[str, Any]:
        if fragment == "_till.html":
            return {"v": backend.till_view(s), "last": backend.last_view(s)}
        if fragment == "_manager.html":
            return manager_ctx(s)
        return {}

    # -- sign-in ---------------------------------------------------------------------------------

    async def signin_page(request: Request) -> Response:
        def work() -> str:
            s = backend.session(token(request))
            users = backend.users() if backend.has_staff() else []
            return render(
                "signin.html",
                **base_ctx(s, "signin"),
                users=users,
                error=request.query_params.get("error", ""),
                chosen=request.query_params.get("user", ""),
            )

        return HTMLResponse(await backend.call(work))

    async def signin(request: Request) -> Response:
        if not same_origin(request):
            return PlainTextResponse("cross-site request refused", status_code=403)
        data = await form(request)

        def work() -> WebSession | str:
            try:
                if backend.has_staff():
                    return backend.sign_in(data.get("user", ""), data.get("pin", ""))
                return backend.open_session()
            except MeshposError as exc:
                return str(exc)

        result = await backend.call(work)
        if isinstance(result, str):
            html = await backend.call(
                lambda: render(
                    "signin.html",
                    **base_ctx(None, "signin"),
                    users=backend.users(),
                    error=result,
                    chosen=data.get("user", ""),
                )
            )
            return HTMLResponse(html, status_code=401)
        response = RedirectResponse("/till", status_code=303)
        response.set_cookie(COOKIE, result.token, httponly=True, samesite="strict", path="/")
        return response

    async def signout(request: Request) -> Response:
        if not same_origin(request):
            return PlainTextResponse("cross-site request refused", status_code=403)
        await backend.call(backend.sign_out, token(request))
        response = RedirectResponse("/signin", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    async def root(request: Request) -> Response:
        return RedirectResponse("/till", status_code=303)

    # -- the till --------------------------------------------------------------------------------

    def till_ctx(s: WebSession, request: Request) -> dict[str, Any]:
        return {"v": backend.till_view(s), "last": backend.last_view(s)}

    def do_scan(s: WebSession, d: dict[str, str]) -> None:
        backend.scan(s, d.get("code", ""))

    def do_qty(s: WebSession, d: dict[str, str]) -> None:
        qty = _int(d["qty"], "quantity") if d.get("qty", "").strip() else None
        delta = _int(d.get("delta") or "0", "change")
        backend.set_qty(s, d.get("which", "sale"), _int(d.get("line"), "line"), qty, delta)

    def do_remove(s: WebSession, d: dict[str, str]) -> None:
        backend.remove(s, d.get("which", "sale"), _int(d.get("line"), "line"))

    def do_discount(s: WebSession, d: dict[str, str]) -> None:
        line = _int(d["line"], "line") if d.get("line", "").strip() else None
        backend.discount(s, d.get("spec", ""), line)

    def do_find(s: WebSession, d: dict[str, str]) -> None:
        backend.find_customers(s, d.get("q", ""))

    def do_attach(s: WebSession, d: dict[str, str]) -> None:
        backend.attach_customer(s, d.get("customer") or None)

    def do_add_customer(s: WebSession, d: dict[str, str]) -> None:
        backend.add_customer(s, d.get("name", ""), d.get("phone", ""), d.get("email", ""))

    def do_pay(s: WebSession, d: dict[str, str]) -> None:
        backend.pay(s, d.get("method", "cash"), d.get("amount", ""))

    def do_clear(s: WebSession, d: dict[str, str]) -> None:
        backend.clear_payments(s)

    def do_refund(s: WebSession, d: dict[str, str]) -> None:
        backend.refund(s, d.get("method", "cash"))

    def do_exchange(s: WebSession, d: dict[str, str]) -> None:
        if d.get("cancel"):
            backend.cancel_exchange(s)
        else:
            backend.start_exchange(s)

    def do_complete(s: WebSession, d: dict[str, str]) -> None:
        backend.complete(
            s, d.get("approver", ""), d.get("approver_pin", ""), d.get("method", "cash")
        )

    def do_void(s: WebSession, d: dict[str, str]) -> None:
        backend.void(s)

    def do_dismiss(s: WebSession, d: dict[str, str]) -> None:
        s.approval = None

    async def till_part(request: Request) -> Response:
        def work() -> str | None:
            s = backend.session(token(request))
            if s is None:
                return None
            return render("_till.html", **base_ctx(s, "till"), **till_ctx(s, request))

        html = await backend.call(work)
        return need_signin(request) if html is None else HTMLResponse(html)

    async def last_part(request: Request) -> Response:
        def work() -> str | None:
            s = backend.session(token(request))
            if s is None:
                return None
            return render("_last.html", last=backend.last_view(s))

        html = await backend.call(work)
        return need_signin(request) if html is None else HTMLResponse(html)

    # -- stock and manager -------------------------------------------------------------------------

    def stock_ctx(s: WebSession, request: Request) -> dict[str, Any]:
        return {"st": backend.stock_view(request.query_params.get("q", ""))}

    async def stock_part(request: Request) -> Response:
        def work() -> str | None:
            if backend.session(token(request)) is None:
                return None
            return render("_stock.html", st=backend.stock_view(request.query_params.get("q", "")))

        html = await backend.call(work)
        return need_signin(request) if html is None else HTMLResponse(html)

    async def manager_part(request: Request) -> Response:
        def work() -> str | None:
            s = backend.session(token(request))
            if s is None:
                return None
            return render("_manager.html", **base_ctx(s, "manager"), **manager_ctx(s, request))

        html = await backend.call(work)
        return need_signin(request) if html is None else HTMLResponse(html)

    def do_resolve(s: WebSession, d: dict[str, str]) -> None:
        backend.resolve(
            s,
            d.get("conflict_id", ""),
            d.get("note", ""),
            d.get("adjust", ""),
            d.get("approver", ""),
            d.get("approver_pin", ""),
        )

    def do_report(s: WebSession, d: dict[str, str]) -> None:
        backend.report(s, d.get("which", "x"))

    # -- banner, JSON and events ---------------------------------------------------------------

    async def banner_part(request: Request) -> Response:
        return HTMLResponse(render("_banner.html", banner=backend.live.banner))

    async def banner_json(request: Request) -> Response:
        return JSONResponse(backend.live.banner)

    async def till_json(request: Request) -> Response:
        def work() -> dict[str, Any] | None:
            s = backend.session(token(request))
            return None if s is None else backend.till_json(s)

        data = await backend.call(work)
        return need_signin(request) if data is None else JSONResponse(data)

    async def events(request: Request) -> Response:
        live = backend.live
        queue = live.subscribe()

        async def stream() -> AsyncIterator[str]:
            try:
                hello = {"db": live.db_version, "status": live.status_version}
                yield f"retry: 1000\nevent: hello\ndata: {json.dumps(hello)}\n\n"
                while True:
                    try:
                        event: Event | None = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                    except TimeoutError:
                        if live.closed:
                            return
                        yield ": keep-alive\n\n"
                        continue
                    if event is None:
                        return
                    yield f"event: {event.kind}\ndata: {event.version}\n\n"
            finally:
                live.unsubscribe(queue)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    # -- the app ---------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await backend.call(backend.open)
        except Exception as exc:
            app.state.startup_error = exc  # WebServer.start() reports it
            await backend.call(backend.close)
            raise
        try:
            yield
        finally:
            await backend.call(backend.close)
            backend.shutdown()

    def post(path: str, handler: Handler) -> Route:
        return Route(path, handler, methods=["POST"])

    routes = [
        Route("/", root),
        Route("/signin", signin_page),
        post("/signin", signin),
        post("/signout", signout),
        Route("/till", page_handler("till", "till.html", till_ctx)),
        post("/till/scan", action(do_scan)),
        post("/till/qty", action(do_qty)),
        post("/till/remove", action(do_remove)),
        post("/till/discount", action(do_discount)),
        post("/till/customers", action(do_find)),
        post("/till/customer", action(do_attach)),
        post("/till/customer/new", action(do_add_customer)),
        post("/till/pay", action(do_pay)),
        post("/till/pay/clear", action(do_clear)),
        post("/till/refund", action(do_refund)),
        post("/till/exchange", action(do_exchange)),
        post("/till/complete", action(do_complete, approval="/till/complete")),
        post("/till/void", action(do_void)),
        post("/till/dismiss", action(do_dismiss)),
        Route("/stock", page_handler("stock", "stock.html", stock_ctx)),
        Route("/manager", page_handler("manager", "manager.html", manager_ctx)),
        post(
            "/manager/resolve",
            action(
                do_resolve,
                back="/manager",
                fragment="_manager.html",
                approval="/manager/resolve",
            ),
        ),
        post("/manager/report", action(do_report, back="/manager", fragment="_manager.html")),
        post("/manager/dismiss", action(do_dismiss, back="/manager", fragment="_manager.html")),
        Route("/part/till", till_part),
        Route("/part/last", last_part),
        Route("/part/stock", stock_part),
        Route("/part/manager", manager_part),
        Route("/part/banner", banner_part),
        Route("/api/banner", banner_json),
        Route("/api/till", till_json),
        Route("/events", events),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    hosts = list(allowed_hosts) if allowed_hosts is not None else _hosts(host)
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts)],
    )
    app.state.backend = backend
    return app


def _hosts(host: str) -> list[str]:
    """Host names the till answers to: loopback, plus the address it was bound to. A server bound
    to every address (0.0.0.0) answers any name: then the LAN is trusted with the till."""
    if host in ("0.0.0.0", "::", ""):
        return ["*"]
    return [*LOCAL_HOSTS, host]


__all__ = ["Notice", "create_app"]
