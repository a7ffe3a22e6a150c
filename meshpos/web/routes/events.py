"""Live updates: the state banner (as a fragment and as JSON) and `/events`, the Server-Sent Events
stream a page listens to and re-fetches its `data-live` parts on (meshpos/web/live.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from functools import partial

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from meshpos.web.common import Site
from meshpos.web.live import Event, Live

HEARTBEAT_S = 15.0


async def banner_part(site: Site, request: Request) -> Response:
    return HTMLResponse(site.render("_banner.html", banner=site.parts.live.banner))


async def banner_json(site: Site, request: Request) -> Response:
    return JSONResponse(site.parts.live.banner)


async def _stream(live: Live, queue: asyncio.Queue[Event | None]) -> AsyncIterator[str]:
    """A "hello" with the current versions, then one event per change, a comment as heartbeat;
    ends when the watcher closes."""
    try:
        hello = {"db": live.db_version, "status": live.status_version}
        yield f"retry: 1000\nevent: hello\ndata: {json.dumps(hello)}\n\n"
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
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


async def events(site: Site, request: Request) -> Response:
    live = site.parts.live
    return StreamingResponse(
        _stream(live, live.subscribe()),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


def routes(site: Site) -> list[BaseRoute]:
    return [
        Route("/part/banner", partial(banner_part, site)),
        Route("/api/banner", partial(banner_json, site)),
        Route("/events", partial(events, site)),
    ]
