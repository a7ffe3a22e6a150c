"""A relay's upload: HQ's version vector of the store (what to send), and a batch of ops."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from meshpos.core.errors import EncodingError
from meshpos.hq.routes.common import Api, TooLarge, authenticate, msgpack_map, read_body
from meshpos.hq.wire import parse_node

MAX_NODES = 10_000


async def vv(api: Api, request: Request) -> Response:
    store = request.path_params["store"]
    await run_in_threadpool(authenticate, api, request, store)
    return JSONResponse({"vv": await run_in_threadpool(api.service.storage.log.vv, store)})


async def push(api: Api, request: Request) -> Response:
    store = request.path_params["store"]
    _, digest = await run_in_threadpool(authenticate, api, request, store)
    data = await read_body(api, request, digest)
    msg = msgpack_map(data, "ops batch")
    wires, rows = msg.get("ops"), msg.get("nodes", [])
    if not isinstance(wires, list) or not all(isinstance(w, bytes) for w in wires):
        raise EncodingError("`ops` must be a list of op wire bytes")
    if not isinstance(rows, list) or len(rows) > MAX_NODES:
        raise EncodingError("`nodes` must be a list of node records")
    if len(wires) > api.max_ops:
        raise TooLarge(f"batch of {len(wires)} ops is over HQ's limit of {api.max_ops} per request")
    nodes = [parse_node(r) for r in rows]
    out = await run_in_threadpool(api.service.ingest, store, wires, nodes)
    return JSONResponse(
        {"vv": out.vv, "applied": out.applied, "duplicates": out.duplicates, "skipped": out.skipped}
    )
