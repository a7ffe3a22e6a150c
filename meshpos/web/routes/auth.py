"""Signing in and out: a PIN pad per cashier, or, in a store with no staff yet, one button."""

from __future__ import annotations

from functools import partial

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from meshpos.core.errors import MeshposError
from meshpos.web.common import Site, cross_site, read_form, same_origin, session_token
from meshpos.web.session import WebSession
from meshpos.web.signin import COOKIE


async def root(request: Request) -> Response:
    return RedirectResponse("/till", status_code=303)


def _signin_html(site: Site, s: WebSession | None, error: str, chosen: str) -> str:
    sessions = site.parts.sessions
    users = sessions.users() if sessions.has_staff() else []
    ctx = site.base_ctx(s, "signin")
    return site.render("signin.html", **ctx, users=users, error=error, chosen=chosen)


async def signin_page(site: Site, request: Request) -> Response:
    def work() -> str:
        s = site.parts.sessions.get(session_token(request))
        query = request.query_params
        return _signin_html(site, s, query.get("error", ""), query.get("user", ""))

    return HTMLResponse(await site.backend.worker.call(work))


async def signin(site: Site, request: Request) -> Response:
    if not same_origin(request):
        return cross_site()
    data = await read_form(request)

    def work() -> WebSession | str:
        sessions = site.parts.sessions
        try:
            if sessions.has_staff():
                return sessions.sign_in(data.get("user", ""), data.get("pin", ""))
            return sessions.open_staffless()
        except MeshposError as exc:
            return str(exc)

    result = await site.backend.worker.call(work)
    if isinstance(result, str):
        chosen = data.get("user", "")
        html = await site.backend.worker.call(_signin_html, site, None, result, chosen)
        return HTMLResponse(html, status_code=401)
    response = RedirectResponse("/till", status_code=303)
    response.set_cookie(COOKIE, result.token, httponly=True, samesite="strict", path="/")
    return response


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
        Route("/signout", partial(signout, site), methods=["POST"]),
    ]
