"""What every HQ endpoint shares: the service and limits a handler works with, reading a bounded
body, checking a relay's signature or the admin token, and turning a refusal into its 4xx body.

Every refusal is a 4xx with `{"error": code, "message": text}` and changes nothing.
"""

from __future__ import annotations

import base64
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

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
from meshpos.core.ops import unpack
from meshpos.domain.enrolment import read_certificate
from meshpos.hq import keys
from meshpos.hq.service import HQService
from meshpos.hq.storage.enrolment import NotEnrolled, UnknownStore
from meshpos.hq.storage.log import Equivocation
from meshpos.hq.wire import H_CERT, H_NODE, H_SIG, H_TIME, auth_message

log = logging.getLogger("meshpos.hq.api")


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


@dataclass(frozen=True)
class Api:
    """What a handler works with: the service, and HQ's limits read once at start."""

    service: HQService
    max_body: int
    max_ops: int
    window_ms: int
    admin_token: str

    @classmethod
    def of(cls, service: HQService) -> Api:
        cfg = service.cfg
        return cls(
            service,
            max_body=cfg.limit("max_body_bytes"),
            max_ops=cfg.limit("max_batch_ops"),
            window_ms=cfg.limit("auth_window_s") * 1000,
            admin_token=keys.admin_token(cfg),
        )


Handler = Callable[[Request], Awaitable[Response]]
ApiHandler = Callable[[Api, Request], Awaitable[Response]]


def guarded(api: Api, fn: ApiHandler) -> Handler:
    """A Starlette endpoint of `fn`: a refusal becomes its 4xx answer, and is logged."""

    async def endpoint(request: Request) -> Response:
        try:
            return await fn(api, request)
        except MeshposError as exc:
            resp = error_response(exc)
            log.warning(
                "%s %s from %s refused (%d): %s",
                request.method, request.url.path,
                request.client.host if request.client else "?", resp.status_code, exc,
            )  # fmt: skip
            return resp

    return endpoint


async def read_body(api: Api, request: Request) -> bytes:
    """The body, refused as soon as it is over HQ's limit (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > api.max_body:
        raise TooLarge(f"request body of {declared} bytes is over HQ's {api.max_body} byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > api.max_body:
            raise TooLarge(f"request body is over HQ's {api.max_body} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def authenticate(api: Api, request: Request, store: str, data: bytes) -> str:
    """The node id that signed this request, checked against the store's certificates (blocking:
    run it in a worker thread)."""
    node, ts, sig = (request.headers.get(h) for h in (H_NODE, H_TIME, H_SIG))
    if not node or not ts or not sig:
        raise Unauthorized("the request is not signed (X-Meshpos-Node/-Time/-Signature)")
    enrolment = api.service.storage.enrolment
    row = enrolment.store(store)
    if row is None:
        raise UnknownStore(f"store {store!r} is not enrolled at HQ")
    try:
        ts_ms, raw_sig = int(ts), bytes.fromhex(sig)
    except ValueError:
        raise Unauthorized("the request signature headers are malformed") from None
    if abs(api.service.now_ms() - ts_ms) > api.window_ms:
        raise Unauthorized("the request's time is too far from HQ's clock")
    known = enrolment.node_key(store, node)
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


def require_admin(api: Api, request: Request) -> None:
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {api.admin_token}".encode()):
        raise Unauthorized("this endpoint needs `Authorization: Bearer <admin.token>`")


def msgpack_map(data: bytes, what: str) -> dict[str, object]:
    """A msgpack body that must be a map; its fields are checked by the handler."""
    value = unpack(data, what)
    if not isinstance(value, dict):
        raise EncodingError(f"{what} must be a msgpack map")
    return value
