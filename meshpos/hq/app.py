"""The HQ HTTP API (ASGI, Starlette). Formats and status codes are documented in docs/hq-api.md.

Relay endpoints (`/v1/stores/{store}/...`) take and give msgpack (ops carry bytes) and are signed by
an enrolled node of that store. Report endpoints give JSON to the holder of the admin token. Every
refusal is a 4xx with `{"error": code, "message": text}` and changes nothing. Handlers run the
(blocking) storage calls in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from meshpos.core.errors import (
    ChainError,
    EncodingError,
    LocalError,
    MeshposError,
    NotFound,
    RemoteError,
    SignatureError,
    WrongStore,
)
from meshpos.core.ops import pack, unpack
from meshpos.domain.enrolment import read_certificate
from meshpos.hq import keys
from meshpos.hq.client import H_CERT, H_NODE, H_SIG, H_TIME, MSGPACK, auth_message, parse_node
from meshpos.hq.service import HQService
from meshpos.hq.storage import Equivocation, NotEnrolled, UnknownStore, parse_vv

log = logging.getLogger("meshpos.hq.api")
MAX_PULL = 5000
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SWEEP_S = 5.0


class Unauthorized(RemoteError):
    """The request is not signed by a node enrolled in the store, or lacks the admin token."""


class TooLarge(RemoteError):
    """The body or batch is over HQ's limit."""


STATUS: list[tuple[type[Exception], int, str]] = [
    (TooLarge, 413, "too_large"),
    (Unauthorized, 401, "unauthorized"),
    (UnknownStore, 404, "unknown_store"),
    (NotFound, 404, "not_found"),
    (NotEnrolled, 403, "not_enrolled"),
    (SignatureError, 403, "bad_signature"),
    (Equivocation, 409, "equivocation"),
    (ChainError, 422, "broken_chain"),
    (WrongStore, 400, "wrong_store"),
    (EncodingError, 400, "malformed"),
    (RemoteError, 422, "refused"),
    (LocalError, 400, "bad_request"),
]


def error_response(exc: MeshposError) -> JSONResponse:
    for typ, status, code in STATUS:
        if isinstance(exc, typ):
            return JSONResponse({"error": code, "message": str(exc)}, status_code=status)
    return JSONResponse({"error": "refused", "message": str(exc)}, status_code=400)


Handler = Callable[[Request], Awaitable[Response]]


def create_app(service: HQService, *, sweep_s: float = SWEEP_S) -> Starlette:
    cfg = service.cfg
    max_body = cfg.limit("max_body_bytes")
    max_ops = cfg.limit("max_batch_ops")
    window_ms = cfg.limit("auth_window_s") * 1000
    token = keys.admin_token(cfg)

    def guarded(fn: Handler) -> Handler:
        async def wrapper(request: Request) -> Response:
            try:
                return await fn(request)
            except MeshposError as exc:
                resp = error_response(exc)
                log.warning(
                    "%s %s from %s refused (%d): %s",
                    request.method, request.url.path,
                    request.client.host if request.client else "?", resp.status_code, exc,
                )  # fmt: skip
                return resp

        return wrapper

    async def body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body:
            raise TooLarge(f"request body of {declared} bytes is over HQ's {max_body} byte limit")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                raise TooLarge(f"request body is over HQ's {max_body} byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    def authenticate(request: Request, store: str, data: bytes) -> str:
        """The node id that signed this request, checked against the store's certificates."""
        node, ts, sig = (request.headers.get(h) for h in (H_NODE, H_TIME, H_SIG))
        if not node or not ts or not sig:
            raise Unauthorized("the request is not signed (X-Meshpos-Node/-Time/-Signature)")
        row = service.storage.store(store)
        if row is None:
            raise UnknownStore(f"store {store!r} is not enrolled at HQ")
        try:
            ts_ms, raw_sig = int(ts), bytes.fromhex(sig)
        except ValueError:
            raise Unauthorized("the request signature headers are malformed") from None
        if abs(service.now_ms() - ts_ms) > window_ms:
            raise Unauthorized("the request's time is too far from HQ's clock")
        known = service.storage.node_key(store, node)
        cert_header = request.headers.get(H_CERT)
        if known is None and cert_header:
            try:
                cert = read_certificate(base64.b64decode(cert_header), row.public_key, store)
            except (ValueError, RemoteError) as exc:
                raise Unauthorized(f"the request's certificate is not valid: {exc}") from None
            if cert.node_id != node:
                raise Unauthorized("the request's certificate belongs to another node")
            known = (cert.public_key, cert.role)
        if known is None:
            raise Unauthorized(f"node {node} is not enrolled in store {store} at HQ")
        message = auth_message(request.method, request.url.path, store, ts_ms, data)
        try:
            Ed25519PublicKey.from_public_bytes(known[0]).verify(raw_sig, message)
        except (InvalidSignature, ValueError):
            raise Unauthorized("the request signature does not verify") from None
        return node

    def admin(request: Request) -> None:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise Unauthorized("this endpoint needs `Authorization: Bearer <admin.token>`")

    def msgpack_map(data: bytes, what: str) -> dict[str, Any]:
        value = unpack(data, what)
        if not isinstance(value, dict):
            raise EncodingError(f"{what} must be a msgpack map")
        return value

    # -- public ---------------------------------------------------------------------------------

    async def health(request: Request) -> Response:
        return JSONResponse(
            {"ok": True, "hq": service.node_id, "backend": service.storage.db.backend}
        )

    async def hq_info(request: Request) -> Response:
        return JSONResponse(service.info())

    # -- relay ----------------------------------------------------------------------------------

    async def push(request: Request) -> Response:
        store = request.path_params["store"]
        data = await body(request)
        await run_in_threadpool(authenticate, request, store, data)
        msg = msgpack_map(data, "ops batch")
        wires, rows = msg.get("ops"), msg.get("nodes", [])
        if not isinstance(wires, list) or not all(isinstance(w, bytes) for w in wires):
            raise EncodingError("`ops` must be a list of op wire bytes")
        if not isinstance(rows, list) or len(rows) > 10_000:
            raise EncodingError("`nodes` must be a list of node records")
        if len(wires) > max_ops:
            raise TooLarge(f"batch of {len(wires)} ops is over HQ's limit of {max_ops} per request")
        nodes = [parse_node(r) for r in rows]
        out = await run_in_threadpool(service.ingest, store, wires, nodes)
        return JSONResponse(
            {
                "vv": out.vv,
                "applied": out.applied,
                "duplicates": out.duplicates,
                "skipped": out.skipped,
            }
        )

    async def vv(request: Request) -> Response:
        store = request.path_params["store"]
        await run_in_threadpool(authenticate, request, store, b"")
        return JSONResponse({"vv": await run_in_threadpool(service.storage.vv, store)})

    async def pull(request: Request) -> Response:
        store = request.path_params["store"]
        data = await body(request)
        await run_in_threadpool(authenticate, request, store, data)
        msg = msgpack_map(data, "pull request")
        theirs = parse_vv(msg.get("vv", {}))
        limit = msg.get("limit", 2000)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 < limit <= MAX_PULL:
            raise EncodingError(f"`limit` must be 1..{MAX_PULL}")
        answer = await run_in_threadpool(service.pull, store, theirs, limit)
        return Response(pack(answer), media_type=MSGPACK)

    async def claim(request: Request) -> Response:
        store = request.path_params["store"]
        data = await body(request)
        node = await run_in_threadpool(authenticate, request, store, data)
        try:
            msg = json.loads(data)
        except ValueError:
            raise EncodingError("a claim is a JSON object") from None
        if not isinstance(msg, dict):
            raise EncodingError("a claim is a JSON object")
        customer, points = msg.get("customer_id"), msg.get("points")
        target = msg.get("node", node)
        if (
            not isinstance(customer, str)
            or not isinstance(points, int)
            or not isinstance(target, str)
        ):
            raise EncodingError("a claim needs customer_id (text), points (integer), node (text)")
        out = await run_in_threadpool(service.claim_points, store, customer, points, target)
        return JSONResponse(out)

    # -- reports (admin token) ------------------------------------------------------------------

    def report_route(fn: Callable[[Request], Any]) -> Handler:
        async def handler(request: Request) -> Response:
            admin(request)
            return JSONResponse(await run_in_threadpool(fn, request))

        return handler

    def q(request: Request, name: str) -> str | None:
        return request.query_params.get(name)

    def full_report(r: Request) -> Any:
        return service.report()

    def stores_report(r: Request) -> Any:
        return {"stores": service.storage.summary()}

    def sales_report(r: Request) -> Any:
        return {"sales": service.storage.sales_by_day(q(r, "store"), q(r, "since"), q(r, "until"))}

    def stock_report(r: Request) -> Any:
        return {"stock": service.storage.stock(q(r, "store"), q(r, "sku"))}

    def loyalty_report(r: Request) -> Any:
        customer = q(r, "customer")
        return {
            "customers": service.storage.loyalty(customer),
            "by_store": service.storage.loyalty_by_store(customer),
        }

    def payments_report(r: Request) -> Any:
        return {"payments": service.storage.payments(q(r, "store"))}

    routes = [
        Route("/v1/health", guarded(health)),
        Route("/v1/hq", guarded(hq_info)),
        Route("/v1/stores/{store}/ops", guarded(push), methods=["POST"]),
        Route("/v1/stores/{store}/vv", guarded(vv)),
        Route("/v1/stores/{store}/pull", guarded(pull), methods=["POST"]),
        Route("/v1/stores/{store}/loyalty/claim", guarded(claim), methods=["POST"]),
        Route("/v1/report", guarded(report_route(full_report))),
        Route("/v1/report/stores", guarded(report_route(stores_report))),
        Route("/v1/report/sales", guarded(report_route(sales_report))),
        Route("/v1/report/stock", guarded(report_route(stock_report))),
        Route("/v1/report/loyalty", guarded(report_route(loyalty_report))),
        Route("/v1/report/payments", guarded(report_route(payments_report))),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        """A sweep for card payments left behind (a process that died mid-settlement)."""

        async def sweep() -> None:
            while True:
                await asyncio.sleep(sweep_s)
                try:
                    await run_in_threadpool(service.process_payments)
                except Exception:  # keep sweeping; the error is logged with its traceback
                    log.exception("payment sweep failed")

        task = asyncio.create_task(sweep()) if sweep_s > 0 else None
        log.info("HQ %s serving on %s", service.node_id, service.storage.db.describe())
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            service.close()

    return Starlette(routes=routes, lifespan=lifespan)


def create_app_from_env() -> Starlette:
    """For `uvicorn --factory` with several workers: the HQ dir and database from the
    environment (`meshpos hq serve --workers N` sets them)."""
    logging.basicConfig(
        level=os.environ.get("MESHPOS_HQ_LOG", "INFO"),
        stream=sys.stderr,
        format=LOG_FORMAT,
        force=True,
    )
    service = HQService.open(os.environ.get("MESHPOS_HQ_DIR"), os.environ.get("MESHPOS_HQ_DB"))
    return create_app(service)
