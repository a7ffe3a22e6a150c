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
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
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
from meshpos.hq.wire import H_CERT, H_DIGEST, H_NODE, H_SIG, H_TIME, auth_message, body_digest
from meshpos.service.http_gate import BodyTimeout, BodyTooLarge, read_capped

log = logging.getLogger("meshpos.hq.api")
_STAND_IN = Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key().public_bytes_raw()


class Unauthorized(RemoteError):
    """The request is not signed by a node enrolled in the store, or lacks the admin token.
    `reason` is what HQ logs beside the answer, when the answer must not say it."""

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class TooLarge(RemoteError):
    """The batch is over HQ's limit."""


STATUS: list[tuple[type[Exception], int, str]] = [
    (TooLarge, 413, "too_large"),
    (BodyTooLarge, 413, "too_large"),
    (BodyTimeout, 408, "timeout"),
    (Unauthorized, 401, "unauthorized"),
    (UnknownStore, 404, "unknown_store"),
    (NotFound, 404, "not_found"),
    (NotEnrolled, 403, "not_enrolled"),
    (SignatureError, 400, "bad_signature"),
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
            why = f"{exc} ({exc.reason})" if isinstance(exc, Unauthorized) and exc.reason else exc
            log.warning(
                "%s %s from %s refused (%d): %s",
                request.method, request.url.path,
                request.client.host if request.client else "?", resp.status_code, why,
            )  # fmt: skip
            return resp

    return endpoint


async def read_body(api: Api, request: Request, digest: str) -> bytes:
    """The body of a request `authenticate` passed, refused as soon as it is over HQ's limit and
    refused whole unless it is the body that was signed (`digest`)."""
    data = await read_capped(request, api.max_body)
    if body_digest(data) != digest:
        raise Unauthorized(
            "the request body is not the one that was signed", reason="body digest mismatch"
        )
    return data


_HEX64 = frozenset("0123456789abcdef")


def _signed_headers(api: Api, request: Request) -> tuple[str, int, bytes, str]:
    """(node, time, signature, body digest) from the headers, checked for form and time: what
    does not depend on the store, so it is answered alike for every store."""
    node, ts, sig, digest = (request.headers.get(h) for h in (H_NODE, H_TIME, H_SIG, H_DIGEST))
    if not node or not ts or not sig:
        raise Unauthorized("the request is not signed (X-Meshpos-Node/-Time/-Signature)")
    if digest is None:
        if (
            request.headers.get("content-length", "0") != "0"
            or "transfer-encoding" in request.headers
        ):
            raise Unauthorized(
                f"the request has a body but no {H_DIGEST} header: the relaying terminal runs "
                "an older meshpos; update it"
            )
        digest = body_digest(b"")
    try:
        ts_ms, raw_sig = int(ts), bytes.fromhex(sig)
    except ValueError:
        raise Unauthorized("the request signature headers are malformed") from None
    if len(digest) != 64 or not set(digest) <= _HEX64:
        raise Unauthorized(f"the {H_DIGEST} header is not a SHA-256 in lower-case hex")
    if abs(api.service.now_ms() - ts_ms) > api.window_ms:
        raise Unauthorized("the request's time is too far from HQ's clock")
    return node, ts_ms, raw_sig, digest


def _node_key(api: Api, request: Request, store: str, node: str) -> tuple[bytes | None, str]:
    """The key `node` signs with in `store` (HQ's record, or the certificate sent along), or
    None and why not (for HQ's log only)."""
    enrolment = api.service.storage.enrolment
    row = enrolment.store(store)
    if row is None:
        return None, "unknown store"
    if node in api.service.storage.log.revocations(store):
        return None, "node revoked"  # meshpos/domain/revocation.py
    known = enrolment.node_key(store, node)
    if known is not None:
        return known[0], ""
    cert_header = request.headers.get(H_CERT)
    if not cert_header:
        return None, "node not enrolled in the store"
    try:
        cert = read_certificate(base64.b64decode(cert_header), row.public_key, store)
    except (ValueError, RemoteError) as exc:
        return None, f"certificate not valid: {exc}"
    if cert.node_id != node:
        return None, "certificate of another node"
    return cert.public_key, ""


def authenticate(api: Api, request: Request, store: str) -> tuple[str, str]:
    """(node id, body digest) of a request signed by a node enrolled in `store`, from the headers
    alone (blocking: run it in a worker thread); the body is then read with `read_body`.

    A stranger learns nothing about which stores exist: an unknown store, an unknown node, a bad
    certificate and a wrong signature all get the same answer (the reason goes to HQ's log), and
    the same work is done (a signature is checked against a stand-in key when there is no key)."""
    node, ts_ms, raw_sig, digest = _signed_headers(api, request)
    key, why = _node_key(api, request, store, node)
    message = auth_message(request.method, request.url.path, store, ts_ms, digest)
    try:
        Ed25519PublicKey.from_public_bytes(key or _STAND_IN).verify(raw_sig, message)
    except (InvalidSignature, ValueError):
        why = why or "signature does not verify"
    if key is None or why:
        raise Unauthorized(
            "the request is not signed by a node HQ knows in this store",
            reason=f"store {store}, node {node}: {why}",
        )
    return node, digest


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
