"""Public endpoints: is HQ up, and who it is (the keys stores pin and seal cards to)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from meshpos.hq.routes.common import Api


async def health(api: Api, request: Request) -> Response:
    storage = api.service.storage
    return JSONResponse({"ok": True, "hq": api.service.node_id, "backend": storage.db.backend})


async def hq_info(api: Api, request: Request) -> Response:
    return JSONResponse(api.service.info())
