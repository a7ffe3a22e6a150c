"""A store's claim on a customer's loyalty rights that other stores hold (HQ moves them)."""

from __future__ import annotations

import json

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from meshpos.core.errors import EncodingError
from meshpos.hq.routes.common import Api, authenticate, read_body


async def claim(api: Api, request: Request) -> Response:
    store = request.path_params["store"]
    data = await read_body(api, request)
    node = await run_in_threadpool(authenticate, api, request, store, data)
    try:
        msg = json.loads(data)
    except ValueError:
        raise EncodingError("a claim is a JSON object") from None
    if not isinstance(msg, dict):
        raise EncodingError("a claim is a JSON object")
    customer, points = msg.get("customer_id"), msg.get("points")
    target = msg.get("node", node)
    if not isinstance(customer, str) or not isinstance(points, int) or not isinstance(target, str):
        raise EncodingError("a claim needs customer_id (text), points (integer), node (text)")
    out = await run_in_threadpool(api.service.claim_points, store, customer, points, target)
    return JSONResponse(out)
