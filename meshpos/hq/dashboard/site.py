"""What every dashboard route shares: the templates, the signed-in person, and the two kinds of
handler, a page and a form action, each checking the person's role.

Sessions are rows in HQ's database (meshpos.hq.accounts), named by an HttpOnly, SameSite=Strict
cookie. A form post must come from this site twice over: its Origin matches the Host (a browser
sends it on every post), and it carries the session's CSRF token. Actions run post, then
redirect, with a one-shot notice in a short-lived cookie; a refused action re-renders its page
with the message and the values typed, so nothing typed is lost. Pages send no script at all
and a Content-Security-Policy that forbids any.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from meshpos.core.errors import MeshposError
from meshpos.domain.money import rupees
from meshpos.hq.accounts import ROLES, Accounts, Session, csrf_matches
from meshpos.hq.dashboard.charts import compact_rupees
from meshpos.hq.service import HQService
from meshpos.hq.storage import HQStorage
from meshpos.service.templating import environment

log = logging.getLogger("meshpos.hq.dashboard")
HERE = Path(__file__).resolve().parent
COOKIE = "meshpos_hq"
NOTICE = "meshpos_hq_notice"
MAX_FORM = 64 * 1024
HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}

Context = dict[str, Any]
Form = dict[str, str]
Handler = Callable[[Request], Awaitable[Response]]
View = Callable[["Site", Session, QueryParams], Context]
"""What a page shows; runs in a worker thread (it reads the database)."""
Action = Callable[["Site", Session, Form], str]
"""What a form post does; returns the notice to show, raises MeshposError to refuse."""


@dataclass(frozen=True)
class Tab:
    path: str
    label: str
    role: str = "viewer"


TABS = (
    Tab("/stores", "Stores"),
    Tab("/sales", "Sales"),
    Tab("/stock", "Stock"),
    Tab("/loyalty", "Loyalty"),
    Tab("/catalogue", "Catalogue"),
    Tab("/payments", "Payments"),
    Tab("/conflicts", "Conflicts"),
    Tab("/people", "People", "admin"),
)


def money(paise: int | None) -> str:
    """₹ and the amount with Indian digit grouping, the sign before the ₹ (−₹1,282.12)."""
    return rupees(int(paise or 0))


def percent(basis_points: int) -> str:
    """A rate in basis points as people write it: 500 -> 5%, 250 -> 2.5%."""
    return f"{basis_points / 100:g}%"


def clock(ms: int | None) -> str:
    """A moment on HQ's clock, to the minute; "never" for none."""
    if not ms:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ms / 1000))


def ago(ms: int | None, now_ms: int) -> str:
    if not ms:
        return "never"
    seconds = max(0, (now_ms - ms) // 1000)
    if seconds < 90:
        return f"{seconds} s ago"
    if seconds < 5400:
        return f"{seconds // 60} min ago"
    if seconds < 172_800:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"


def link(path: str, **params: object) -> str:
    """A URL of this site with the query parameters that have a value."""
    query = urlencode({k: v for k, v in params.items() if v not in (None, "", False)})
    return f"{path}?{query}" if query else path


def templates() -> jinja2.Environment:
    env = environment(HERE / "templates")
    env.filters["money"] = money
    env.filters["compact"] = compact_rupees
    env.filters["clock"] = clock
    env.filters["percent"] = percent
    env.globals["ago"] = ago
    env.globals["link"] = link
    env.globals["TABS"] = TABS
    env.globals["ROLES"] = ROLES
    return env


def same_origin(request: Request) -> bool:
    """A post from a page of this site (no Origin at all: not a browser, which the CSRF token
    covers)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return origin != "null" and urlsplit(origin).netloc == request.headers.get("host", "")


def safe_next(value: str | None, default: str = "/stores") -> str:
    """A path of this site to go back to (never another site's: no scheme, no //host)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value[:500]
    return default


async def read_form(request: Request) -> Form:
    """An urlencoded form, refused past MAX_FORM while it is read."""
    size, chunks = 0, []
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM:
            raise MeshposError(f"the form is larger than {MAX_FORM // 1024} KiB")
        chunks.append(chunk)
    return dict(parse_qsl(b"".join(chunks).decode("utf-8", "replace"), keep_blank_values=True))


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


class Site:
    """The dashboard of one HQ: its service, people and templates."""

    def __init__(self, service: HQService, accounts: Accounts) -> None:
        self.service = service
        self.accounts = accounts
        self.env = templates()

    @property
    def storage(self) -> HQStorage:
        return self.service.storage

    def now_ms(self) -> int:
        return self.service.now_ms()

    def render(self, name: str, **ctx: object) -> str:
        return self.env.get_template(name).render(**ctx)

    def respond(self, html: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(html, status_code=status, headers=HEADERS)

    def base(self, session: Session | None, path: str, request: Request) -> Context:
        notice = unquote(request.cookies.get(NOTICE, ""))
        return {
            "hq": self.service.cfg.name,
            "path": path,
            "me": session.person if session else None,
            "csrf": session.csrf if session else "",
            "now": self.now_ms(),
            "notice": notice[:300],
            "error": "",
            "filter_error": False,
            "form": {},
            "failed": "",
            "back": path + (f"?{request.url.query}" if request.url.query else ""),
        }

    async def session_of(self, request: Request) -> Session | None:
        return await run_in_threadpool(self.accounts.session, request.cookies.get(COOKIE))

    def to_signin(self, request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/signin?next={quote(target)}", status_code=303, headers=HEADERS)

    def forbidden(self, session: Session, role: str, path: str, request: Request) -> Response:
        html = self.render(
            "denied.html",
            **self.base(session, path, request),
            needed=role,
        )
        return self.respond(html, 403)

    # -- handlers -------------------------------------------------------------------------------

    def page(self, path: str, template: str, view: View, role: str = "viewer") -> Handler:
        async def handler(request: Request) -> Response:
            session = await self.session_of(request)
            if session is None:
                return self.to_signin(request)
            if not session.person.can(role):
                return self.forbidden(session, role, path, request)
            try:
                ctx = await run_in_threadpool(view, self, session, request.query_params)
            except MeshposError as exc:  # a bad filter: the page says so, showing nothing
                ctx = {"error": str(exc), "filter_error": True}
            html = self.render(template, **{**self.base(session, path, request), **ctx})
            response = self.respond(html, 400 if ctx.get("filter_error") else 200)
            if request.cookies.get(NOTICE):
                response.delete_cookie(NOTICE, path="/")
            return response

        return handler

    def action(
        self, path: str, fn: Action, role: str, page: str, template: str, view: View
    ) -> Handler:
        """A form post to `path` doing `fn`, for `role` and above, from a form on `page` (where
        it goes back to); a refusal re-renders `template` with `view`'s context for that page."""

        async def handler(request: Request) -> Response:
            if not same_origin(request):
                return PlainTextResponse("cross-site request refused", status_code=403)
            try:
                form = await read_form(request)
            except MeshposError as exc:
                return PlainTextResponse(str(exc), status_code=413)
            session = await self.session_of(request)
            if session is None:
                return self.to_signin(request)
            if not csrf_matches(session, form.get("csrf")):
                return PlainTextResponse(
                    "this form is out of date (signed in again since?): reload the page and retry",
                    status_code=403,
                )
            back = safe_next(form.get("back"), page)
            if not session.person.can(role):
                log.warning("HQ user %s (%s) refused %s: needs %s",
                            session.person.user_id, session.person.role, path, role)  # fmt: skip
                return self.forbidden(session, role, back.split("?")[0], request)
            try:
                notice = await run_in_threadpool(fn, self, session, form)
            except MeshposError as exc:
                return await self._refused(
                    request, session, back, (template, view), (path, form), exc
                )
            response = RedirectResponse(back, status_code=303, headers=HEADERS)
            response.set_cookie(NOTICE, quote(notice)[:1000], max_age=60, httponly=True,
                                samesite="strict", path="/")  # fmt: skip
            return response

        return handler

    async def _refused(
        self,
        request: Request,
        session: Session,
        back: str,
        page: tuple[str, View],
        posted: tuple[str, Form],
        exc: MeshposError,
    ) -> Response:
        """The page the form came from, with the refusal and what was typed into that form
        (never a password or a card number)."""
        template, view = page
        action, form = posted
        page_path, _, query = back.partition("?")
        try:
            ctx = await run_in_threadpool(view, self, session, QueryParams(query))
        except MeshposError:
            ctx = await run_in_threadpool(view, self, session, QueryParams(""))
        shown = {k: v for k, v in form.items() if "password" not in k and k not in ("card",)}
        base = self.base(session, page_path, request)
        extra = {"error": str(exc), "form": shown, "failed": action, "back": back}
        html = self.render(template, **{**base, **ctx, **extra})
        return self.respond(html, 400)
