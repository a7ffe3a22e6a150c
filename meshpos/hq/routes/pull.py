"""A relay's download: the ops of its store HQ holds that the relay's version vector lacks."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from meshpos.core.errors import EncodingError
from meshpos.core.ops import pack
from meshpos.hq.routes.common import Api, authenticate, msgpack_map, read_body
from meshpos.hq.storage.log import parse_vv
from meshpos.hq.wire import MSGPACK

MAX_PULL = 5000


async def pull(api: Api, request: Request) -> Response:
    store = request.path_params["store"]
    _, digest = await run_in_threadpool(authenticate, api, request, store)
    data = await read_body(api, request, digest)
    msg = msgpack_map(data, "pull request")
    theirs = parse_vv(msg.get("vv", {}))
    limit = msg.get("limit", 2000)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 0 < limit <= MAX_PULL:
        raise EncodingError(f"`limit` must be 1..{MAX_PULL}")
    answer = await run_in_threadpool(api.service.pull, store, theirs, limit)
    return Response(pack(answer), media_type=MSGPACK)
