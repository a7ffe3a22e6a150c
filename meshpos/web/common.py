"""What every route module of the web till shares: the `Site` (the backend and the templates),
reading a request (session cookie, same-origin check, form), and the two kinds of handler: a page
or fragment rendered for a signed-in session, and a form action.

Sessions are server-side: the cookie holds a random token (HttpOnly, SameSite=Strict) naming a
session in memory; a restarted server asks everyone to sign in again. Cross-site posts are refused
(SameSite cookie plus an Origin check), so a web page elsewhere cannot drive the till through the
cashier's browser.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jinja2
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from meshpos.core.errors import MeshposError
from meshpos.domain.escrow import EscrowShortfall
from meshpos.domain.storetime import ago
from meshpos.service.http_gate import BodyTooLarge, read_capped
from meshpos.service.templating import environment
from meshpos.service.training import is_practice
from meshpos.web.backend import Backend, TillParts
from meshpos.web.escrow_wait import wait_for_rights
from meshpos.web.session import WebSession, run_action
from meshpos.web.signin import COOKIE
from meshpos.web.views import clock, day, method_label, money, stamp

HERE = Path(__file__).resolve().parent
DISCOUNTS = ("5%", "10%", "20%")
MAX_FORM = 64 * 1024

Form = dict[str, str]
Context = dict[str, Any]
Handler = Callable[[Request], Awaitable[Response]]
View = Callable[[TillParts, WebSession, Request], Context]
"""What a template shows of a session; runs on the worker."""
Action = Callable[[TillParts, WebSession, Form], None]
"""What a form post does to a session; runs on the worker, refusals become its notice."""


@dataclass(frozen=True)
class Screen:
    """A page whose form actions answer with its fragment (a fetch) or a redirect to it."""

    page: str  # its path, and the page a notice belongs to
    fragment: str
    view: View


def templates() -> jinja2.Environment:
    env = environment(HERE / "templates")
    env.filters["money"] = money
    env.filters["clock"] = clock
    env.filters["method_label"] = method_label
    env.filters["stamp"] = stamp
    env.filters["day"] = day
    env.globals["DISCOUNTS"] = DISCOUNTS
    env.globals["ago"] = ago
    return env


def session_token(request: Request) -> str | None:
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


def cross_site() -> Response:
    return PlainTextResponse("cross-site request refused", status_code=403)


async def read_form(request: Request) -> Form:
    """An urlencoded form (what HTML forms and till.js send); the last value of a repeated
    field wins. Parsed here, so form posts need no multipart library. Read before any session
    check, and refused the moment it is over `MAX_FORM`: a stranger's post costs 64 KiB at most."""
    try:
        body = await read_capped(request, MAX_FORM)
    except BodyTooLarge as exc:
        raise HTTPException(413, f"form too large: {exc}") from None
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def whole_number(value: str | None, what: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise MeshposError(f"{what} {value!r} must be a whole number") from None


def optional_number(form: Form, key: str, what: str) -> int | None:
    """A whole number a form may leave blank."""
    return whole_number(form[key], what) if form.get(key, "").strip() else None


def dismiss_approval(p: TillParts, s: WebSession, d: Form) -> None:
    """Cancel a supervisor's PIN pad (any screen's)."""
    s.approval = None


class Site:
    """The web till's backend and templates, as the route modules use them."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.env = templates()

    @property
    def parts(self) -> TillParts:
        return self.backend.parts

    def render(self, name: str, **ctx: object) -> str:
        return self.env.get_template(name).render(**ctx)

    def base_ctx(self, s: WebSession | None, page: str) -> Context:
        """What base.html needs on every page."""
        p = self.parts
        cfg = p.terminal.cfg
        return {
            "page": page,
            "banner": p.live.banner,
            "terminal": cfg.name,
            "store": cfg.store_name or cfg.store,
            "s": s,
            "user_name": (s.name if s else ""),
            "role": (s.role or "" if s else ""),
            "staff": p.sessions.has_staff(),
            "default_user": cfg.user,
            "training": is_practice(cfg),
        }

    def page(self, page: str, template: str, view: View) -> Handler:
        """A page, or a fragment of one, for a signed-in session."""

        async def handler(request: Request) -> Response:
            def work() -> str | None:
                s = self.parts.sessions.get(session_token(request))
                if s is None:
                    return None
                ctx = view(self.parts, s, request)
                return self.render(template, **self.base_ctx(s, page), **ctx)

            html = await self.backend.worker.call(work)
            return need_signin(request) if html is None else HTMLResponse(html)

        return handler

    def action(
        self,
        fn: Action,
        screen: Screen,
        *,
        approval: str | None = None,
        waits_for_rights: bool = False,
    ) -> Handler:
        """A form post that runs `fn` on the session. `approval`: the path a supervisor's PIN
        pad posts to when `fn` needs one. `waits_for_rights`: a redemption short of escrow
        rights asks the peers, awaits them (meshpos/web/escrow_wait.py), then runs once more."""

        async def handler(request: Request) -> Response:
            if not waits_for_rights:
                return await self._act(request, fn, screen, approval)
            try:
                return await self._act(request, fn, screen, approval, EscrowShortfall)
            except EscrowShortfall as short:
                await wait_for_rights(self.backend.worker, self.parts.terminal, short)
            return await self._act(request, fn, screen, approval)

        return handler

    async def _act(
        self,
        request: Request,
        fn: Action,
        screen: Screen,
        approval: str | None,
        *let_through: type[Exception],
    ) -> Response:
        """Answers with the screen's fragment to swap in (fetch) or a redirect back to the page
        (a plain form post)."""
        if not same_origin(request):
            return cross_site()
        data = await read_form(request)
        fragment = wants_fragment(request)

        def work() -> str | None:
            s = self.parts.sessions.get(session_token(request))
            if s is None:
                return None
            s.notice = None
            if approval is None:
                s.approval = None
            keep = {k: v for k, v in data.items() if k not in ("approver", "approver_pin")}
            approve_as = (approval, keep) if approval else None
            run_action(s, lambda: fn(self.parts, s, data), approve_as, let_through=let_through)
            if s.notice is not None:
                s.notice.page = screen.page
            if not fragment:
                return ""
            ctx = screen.view(self.parts, s, request)
            return self.render(screen.fragment, **self.base_ctx(s, screen.page), **ctx)

        html = await self.backend.worker.call(work)
        if html is None:
            return need_signin(request)
        if not fragment:
            return RedirectResponse(f"/{screen.page}", status_code=303)
        return HTMLResponse(html)
