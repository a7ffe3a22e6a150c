"""The web till's HTTP side (Starlette): the app factory that registers each screen's routes.

Pages are rendered on the server (Jinja2 templates in meshpos/web/templates). Forms work as plain
HTML posts (post, then redirect); with JavaScript on (static/till.js) they are sent with fetch and
the server answers with the fragment to swap in, so the scan field keeps its focus and a keyboard
wedge scanner never types into a page that is reloading. `/events` streams Server-Sent Events
from meshpos/web/live.py; a page re-fetches its `data-live` parts when one arrives.

The routes live in meshpos/web/routes/ (one module per screen), the helpers they share in
meshpos/web/common.py. Only the expected Host names are served (besides the same-origin check on
every post), so a web page elsewhere cannot drive the till through the cashier's browser.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from meshpos.service.http_gate import Gate, GateLimits, GateMiddleware
from meshpos.web.backend import Backend
from meshpos.web.common import HERE, MAX_FORM, Site
from meshpos.web.routes import auth, events, guide, manager, paper, stock, till

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
LIMITS = GateLimits(
    max_body=MAX_FORM,
    requests_per_client=24,  # a till's pages, its fetches and an event stream per open tab
    requests=96,
    connections_per_client=48,
    connections=256,
    header_timeout_s=10,
    body_timeout_s=10,
)
"""What the web till lets one browser, and everyone together, hold (meshpos/service/http_gate.py)."""


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
    site = Site(backend)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await backend.worker.call(backend.open)
        except Exception as exc:
            app.state.startup_error = exc  # WebServer.start() reports it
            await backend.worker.call(backend.close)
            raise
        try:
            yield
        finally:
            await backend.worker.call(backend.close)
            backend.shutdown()

    routes = [
        *auth.routes(site),
        *till.routes(site),
        *stock.routes(site),
        *paper.routes(site),
        *manager.routes(site),
        *events.routes(site),
        *guide.routes(site),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    hosts = list(allowed_hosts) if allowed_hosts is not None else _hosts(host)
    gate = Gate(LIMITS, "web till")
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(GateMiddleware, gate=gate),
            Middleware(TrustedHostMiddleware, allowed_hosts=hosts),
        ],
    )
    app.state.backend = backend
    app.state.http_gate = gate
    return app


def _hosts(host: str) -> list[str]:
    """Host names the till answers to: loopback, plus the address it was bound to. A server bound
    to every address (0.0.0.0) answers any name: then the LAN is trusted with the till."""
    if host in ("0.0.0.0", "::", ""):
        return ["*"]
    return [*LOCAL_HOSTS, host]
