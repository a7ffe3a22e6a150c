"""Signing in and out: a PIN pad per cashier, or, in a store with no staff yet, one button."""

from __future__ import annotations

from functools import partial

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from meshpos.core.errors import MeshposError
from meshpos.service.staff import LockedOut
from meshpos.web.common import Site, cross_site, read_form, same_origin, session_token
from meshpos.web.session import WebSession
from meshpos.web.signin import COOKIE


async def root(request: Request) -> Response:
    return RedirectResponse("/till", status_code=303)


def _signin_html(
    site: Site,
    s: WebSession | None,
    error: str,
    chosen: str,
    *,
    locked: bool = False,
    done: str = "",
) -> str:
    """The sign-in page; `locked`: the answer was a lockout, so it offers a supervisor's unlock."""
    sessions = site.parts.sessions
    staff = sessions.has_staff()
    listed = staff and sessions.listed()
    return site.render(
        "signin.html",
        **site.base_ctx(s, "signin"),
        users=sessions.users() if listed else [],
        approvers=sessions.approvers() if listed else [],
        listed=listed,
        error=error,
        done=done,
        locked=locked,
        chosen=chosen,
    )


async def signin_page(site: Site, request: Request) -> Response:
    def work() -> str:
        s = site.parts.sessions.get(session_token(request))
        query = request.query_params
        return _signin_html(site, s, query.get("error", ""), query.get("user", ""))

    return HTMLResponse(await site.backend.worker.call(work))


def _device(request: Request) -> str | None:
    return request.client.host if request.client else None


async def signin(site: Site, request: Request) -> Response:
    if not same_origin(request):
        return cross_site()
    data = await read_form(request)
    chosen = data.get("user", "")

    def work() -> WebSession | str:
        sessions = site.parts.sessions
        try:
            if sessions.has_staff():
                return sessions.sign_in(chosen, data.get("pin", ""), _device(request))
            return sessions.open_staffless()
        except LockedOut as exc:
            return _signin_html(site, None, str(exc), chosen, locked=True)
        except MeshposError as exc:
            return _signin_html(site, None, str(exc), chosen)

    result = await site.backend.worker.call(work)
    if isinstance(result, str):
        return HTMLResponse(result, status_code=401)
    response = RedirectResponse("/till", status_code=303)
    response.set_cookie(COOKIE, result.token, httponly=True, samesite="strict", path="/")
    return response


async def unlock(site: Site, request: Request) -> Response:
    """A supervisor unlocks a user (and this device) from the sign-in page."""
    if not same_origin(request):
        return cross_site()
    data = await read_form(request)
    chosen = data.get("user", "")

    def work() -> tuple[int, str]:
        sessions = site.parts.sessions
        try:
            done = sessions.unlock(chosen, data.get("approver", ""), data.get("approver_pin", ""))
        except MeshposError as exc:
            return 401, _signin_html(site, None, str(exc), chosen, locked=True)
        return 200, _signin_html(site, None, "", chosen, done=done)

    status, html = await site.backend.worker.call(work)
    return HTMLResponse(html, status_code=status)


async def signout(site: Site, request: Request) -> Response:
    if not same_origin(request):
        return cross_site()
    await site.backend.worker.call(site.parts.sessions.sign_out, session_token(request))
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def routes(site: Site) -> list[BaseRoute]:
    return [
        Route("/", root),
        Route("/signin", partial(signin_page, site)),
        Route("/signin", partial(signin, site), methods=["POST"]),
        Route("/signin/unlock", partial(unlock, site), methods=["POST"]),
        Route("/signout", partial(signout, site), methods=["POST"]),
    ]
