"""The till's Guide link: this store's offline cheat sheet (meshpos/service/cheatsheet.py), served
without sign-in so it helps exactly when nobody can sign in."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from meshpos.core.clock import wall_ms
from meshpos.service import cheatsheet
from meshpos.web.common import Site


def routes(site: Site) -> list[BaseRoute]:
    async def guide(request: Request) -> Response:
        def work() -> str:
            t = site.parts.terminal
            return cheatsheet.render_html(cheatsheet.gather(t, wall_ms()))

        return HTMLResponse(await site.backend.worker.call(work))

    return [Route("/guide", guide)]
