"""Stock across stores: a till's pull of other stores' stock (signed by a node of the asking
store), and the chain's transfers for the holder of the admin token."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from meshpos.core.errors import InputError
from meshpos.core.ops import pack
from meshpos.hq.routes.common import Api, authenticate, msgpack_map, read_body, require_admin
from meshpos.hq.storage.log import parse_vv
from meshpos.hq.wire import MSGPACK

STATUSES = ("in transit", "received", "received short")


async def chain_stock(api: Api, request: Request) -> Response:
    """msgpack `{held: {store: version}}` -> `{stores: [changed stores, whole], same: [names]}`."""
    store = request.path_params["store"]
    _, digest = await run_in_threadpool(authenticate, api, request, store)
    data = await read_body(api, request, digest)
    held = parse_vv(msgpack_map(data, "chain stock request").get("held", {}))
    answer = await run_in_threadpool(api.service.chain_stock, store, held)
    return Response(pack(answer), media_type=MSGPACK)


async def report(api: Api, request: Request) -> Response:
    require_admin(api, request)
    status = request.query_params.get("status")
    if status is not None and status not in STATUSES:
        raise InputError(f"status must be one of: {', '.join(STATUSES)}")
    rows = await run_in_threadpool(
        api.service.storage.transfers.listing, request.query_params.get("store"), status
    )
    return JSONResponse({"transfers": rows})
