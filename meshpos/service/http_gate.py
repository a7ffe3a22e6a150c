"""What keeps an HTTP server's memory flat for strangers: HQ and the web till both sit behind it.

Three places, each cheap before any work is done for a request:

- the connection (`GatedH11Protocol`, uvicorn's h11 protocol with two additions): connections per
  client address and overall are bounded (beyond, a bare 503 and the socket is closed), and a
  request's headers must be complete within `header_timeout_s` of the connection opening or of the
  previous response (a client that trickles headers is cut off: "slowloris");
- the request (`GateMiddleware`, ASGI): requests in flight per client address and overall are
  bounded (503 with Retry-After beyond, body unread); a declared body over the cap is refused at
  once (413); the body, as the app reads it, is counted and timed, and crossing the cap or waiting
  longer than `body_timeout_s` for the next piece ends the request (413 or 408);
- any answer given before the body was read whole closes the connection, so the server never
  drains what a stranger keeps sending.

uvicorn reads at most about 64 KiB of a body ahead of the app (it pauses the socket), so a request
whose body the app never reads costs that, not the body's size. The app decides when to read: HQ
checks a relay's signature from the headers first (see meshpos/hq/routes/common.py).

The protocol finds its `Gate` on the app (`app.state.http_gate`), so uvicorn can build it from an
import string in every worker process (`--workers`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import h11
from starlette.requests import Request
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from meshpos.core.errors import RemoteError
from meshpos.service.refusal_log import RefusalLog

log = logging.getLogger("meshpos.http")
PROTOCOL = "meshpos.service.http_gate:GatedH11Protocol"
"""uvicorn's `http=` setting for a gated server."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(RemoteError):
    """A request body over the server's cap (declared or as it arrived)."""


class BodyTimeout(RemoteError):
    """A request body stopped arriving."""


@dataclass(frozen=True)
class GateLimits:
    max_body: int
    requests_per_client: int
    requests: int
    connections_per_client: int
    connections: int
    header_timeout_s: float
    body_timeout_s: float
    retry_after_s: int = 1


class Gate:
    """The counters of one server (one event loop): connections and requests per client address.
    Refusals are logged through a `RefusalLog`, so a flood writes a few lines a minute."""

    def __init__(self, limits: GateLimits, name: str) -> None:
        self.limits = limits
        self.name = name
        self.refusals = RefusalLog(log)
        self._connections: Counter[str] = Counter()
        self._requests: Counter[str] = Counter()
        self.refused = 0

    def open_connection(self, client: str) -> bool:
        lim = self.limits
        return self._admit(self._connections, client, "connection",
                           lim.connections_per_client, lim.connections)  # fmt: skip

    def close_connection(self, client: str) -> None:
        self._release(self._connections, client)

    def enter(self, client: str) -> bool:
        lim = self.limits
        return self._admit(self._requests, client, "request",
                           lim.requests_per_client, lim.requests)  # fmt: skip

    def leave(self, client: str) -> None:
        self._release(self._requests, client)

    def _admit(
        self, held: Counter[str], client: str, what: str, per_client: int, overall: int
    ) -> bool:
        if held[client] >= per_client:
            return self._refuse(client, what, f"over {per_client} at once from one address")
        if held.total() >= overall:
            return self._refuse(client, what, f"{self.name} holds {overall} already")
        held[client] += 1
        return True

    @staticmethod
    def _release(held: Counter[str], client: str) -> None:
        held[client] -= 1
        if held[client] <= 0:
            del held[client]

    def in_flight(self) -> tuple[int, int]:
        """(connections, requests) held now."""
        return self._connections.total(), self._requests.total()

    def _refuse(self, client: str, what: str, why: str) -> bool:
        self.refused += 1
        self.refusals.refused(client, f"{self.name} {what}", why)
        return False


def find_gate(app: object) -> Gate | None:
    """The gate of an app, through the middleware uvicorn wraps it in (each keeps `.app`)."""
    for _ in range(16):
        gate = getattr(getattr(app, "state", None), "http_gate", None)
        if isinstance(gate, Gate):
            return gate
        app = getattr(app, "app", None)
        if app is None:
            break
    return None


# -- the request ------------------------------------------------------------------------------------


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "?"


def declared_length(scope: Scope) -> int | None:
    """The Content-Length; 0 for a request with no body at all (neither it nor chunking)."""
    chunked = False
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
        chunked = chunked or name == b"transfer-encoding"
    return None if chunked else 0


async def answer(send: Send, status: int, code: str, message: str, **headers: str) -> None:
    """An `{"error", "message"}` answer (HQ's error body), closing the connection."""
    body = json.dumps({"error": code, "message": message}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"connection", b"close")]  # fmt: skip
    raw += [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class GateMiddleware:
    """The ASGI side of a `Gate` (see the module docstring)."""

    def __init__(self, app: ASGIApp, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        gate, lim = self.gate, self.gate.limits
        client = _client(scope)
        if not gate.enter(client):
            await answer(send, 503, "busy", f"{gate.name} is busy: try again shortly",
                         retry_after=str(lim.retry_after_s))  # fmt: skip
            return
        try:
            declared = declared_length(scope)
            if declared is not None and declared > lim.max_body:
                gate.refusals.refused(client, f"{gate.name} body", f"{declared} bytes declared")
                why = f"request body of {declared} bytes is over the {lim.max_body} byte limit"
                await answer(send, 413, "too_large", why)
                return
            await self._run(scope, receive, send, client, declared == 0)
        finally:
            gate.leave(client)

    async def _run(
        self, scope: Scope, receive: Receive, send: Send, client: str, bodyless: bool
    ) -> None:
        lim = self.gate.limits
        state = {"read": 0, "done": bodyless, "started": False}

        async def gated_receive() -> Message:
            if state["done"]:
                return await receive()  # after the body: a disconnect, however long it takes
            try:
                message = await asyncio.wait_for(receive(), lim.body_timeout_s)
            except TimeoutError:
                raise BodyTimeout(
                    f"no part of the request body arrived for {lim.body_timeout_s:g} s"
                ) from None
            if message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                if state["read"] > lim.max_body:
                    raise BodyTooLarge(f"request body is over the {lim.max_body} byte limit")
                state["done"] = not message.get("more_body", False)
            else:
                state["done"] = True
            return message

        async def gated_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                if not state["done"]:  # answered before the body was read: do not drain it
                    message = {**message, "headers": [*message.get("headers", []),
                                                      (b"connection", b"close")]}  # fmt: skip
            await send(message)

        try:
            await self.app(scope, gated_receive, gated_send)
        except (BodyTooLarge, BodyTimeout) as exc:
            self.gate.refusals.refused(client, f"{self.gate.name} body", str(exc))
            if not state["started"]:
                status, code = (
                    (413, "too_large") if isinstance(exc, BodyTooLarge) else (408, "timeout")
                )
                await answer(send, status, code, str(exc))


async def read_capped(request: Request, cap: int) -> bytes:
    """A request's body, refused (BodyTooLarge) as soon as it is over `cap`, declared or sent.
    Kept on the request, so a handler that runs twice reads it once."""
    kept = getattr(request.state, "capped_body", None)
    if isinstance(kept, bytes):
        return kept
    declared = declared_length(request.scope)
    if declared is not None and declared > cap:
        raise BodyTooLarge(f"request body of {declared} bytes is over the {cap} byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise BodyTooLarge(f"request body is over the {cap} byte limit")
        chunks.append(chunk)
    request.state.capped_body = body = b"".join(chunks)
    return body


# -- the connection ---------------------------------------------------------------------------------

_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 0\r\n"
    b"connection: close\r\n\r\n"
)


class GatedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with the gate's connection limits and header deadline."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.gate = find_gate(self.app)
        self._counted: str | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._partial = False  # bytes of the next request arrived since the deadline was set

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        if self.gate is None:
            return
        client = self.client[0] if self.client else "?"
        if not self.gate.open_connection(client):
            self.transport.write(_BUSY)
            self.transport.close()
            return
        self._counted = client
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted is not None and self.gate is not None:
            self.gate.close_connection(self._counted)
            self._counted = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._partial = True
        super().data_received(data)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._counted is not None and not self.transport.is_closing():
            self._arm()

    def _arm(self) -> None:
        assert self.gate is not None
        self._disarm()
        self._partial = False
        self._deadline = self.loop.call_later(self.gate.limits.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        """Still no complete request headers: drop the connection (uvicorn alone never would).
        A connection that sent nothing at all (a browser's spare one) goes quietly."""
        self._deadline = None
        if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
            return
        assert self.gate is not None
        if self._partial:
            limit = self.gate.limits.header_timeout_s
            self.gate.refusals.refused(
                self._counted or "?", f"{self.gate.name} headers", f"not complete in {limit:g} s"
            )
        self.transport.close()
