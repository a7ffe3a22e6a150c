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
    node, digest = await run_in_threadpool(authenticate, api, request, store)
    data = await read_body(api, request, digest)
    try:
        msg = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        raise EncodingError("a claim is a JSON object") from None
    if type(msg) is not dict:
        raise EncodingError("a claim is a JSON object")
    customer, points = msg.get("customer_id"), msg.get("points")
    target = msg.get("node", node)
    # `type(...) is`: JSON's true is a Python bool, which isinstance() would take for an int.
    if type(customer) is not str or type(points) is not int or type(target) is not str:
        raise EncodingError("a claim needs customer_id (text), points (integer), node (text)")
    out = await run_in_threadpool(api.service.claim_points, store, customer, points, target)
    return JSONResponse(out)
