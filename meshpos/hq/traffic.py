"""What HQ notices of every request it answers, on its way through (ASGI middleware): which
terminal of which store reached it and when (the dashboard's online column and the lag metrics),
how many requests of each kind it answered and how long they took (the metrics), and the store
and relaying node of each relay request as ids on its log lines.

Only answered relay requests count as a contact: a 2xx means HQ checked the node's signature.
Contacts are kept in memory and written to the database every few seconds by `ContactBook.flush`
(the app's lifespan runs it), so probes from hundreds of stores cost one small transaction.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from meshpos.core.clock import wall_ms
from meshpos.hq.storage.contacts import UNKNOWN, Contact, Contacts
from meshpos.hq.wire import H_NODE, H_WAITING
from meshpos.service.logs import log_fields
from meshpos.service.metrics import LATENCY_BUCKETS

RELAY_PATH = re.compile(r"^/v1/stores/([^/]+)/(vv|ops|pull|loyalty/claim)$")
ENDPOINTS = {"vv": "vv", "ops": "push", "pull": "pull", "loyalty/claim": "claim"}
RELAYING = {"push", "pull"}


def endpoint_of(path: str) -> str:
    """A bounded label for a path (never the store or anything a client chose)."""
    found = RELAY_PATH.match(path)
    if found:
        return ENDPOINTS[found.group(2)]
    if path.startswith("/v1/report"):
        return "report"
    if path in ("/v1/health", "/v1/hq"):
        return "health"
    if path.startswith("/static/"):
        return "static"
    return "dashboard"


class ContactBook:
    """The latest contact of each (store, node) since the last flush."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._due: dict[tuple[str, str], Contact] = {}

    def seen(self, contact: Contact) -> None:
        key = (contact.store, contact.node)
        with self._lock:
            held = self._due.get(key)
            self._due[key] = held.merged(contact) if held else contact

    def flush(self, contacts: Contacts) -> int:
        """Write what was seen since the last flush; returns how many contacts."""
        with self._lock:
            due, self._due = list(self._due.values()), {}
        try:
            contacts.record(due)
        except BaseException:
            for c in due:  # written next time, merged with anything newer
                self.seen(c)
            raise
        return len(due)


class RequestMetrics:
    """Requests answered and their latency, by endpoint and status class."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "meshpos_hq_requests",
            "HTTP requests HQ answered, by endpoint and status class",
            ["endpoint", "status"],
            registry=registry,
        )
        self.seconds = Histogram(
            "meshpos_hq_request_seconds",
            "Seconds HQ took to answer, by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )


class Traffic:
    """The middleware."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        book: ContactBook,
        metrics: RequestMetrics,
        now_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.app = app
        self.book = book
        self.metrics = metrics
        self.now_ms = now_ms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        endpoint = endpoint_of(path)
        relay = RELAY_PATH.match(path)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        node = headers.get(H_NODE, "")[:64]
        status = 500
        started = time.perf_counter()

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            with log_fields(store=relay.group(1) if relay else None, peer=node or None):
                await self.app(scope, receive, watch)
        finally:
            self.metrics.requests.labels(endpoint, f"{status // 100}xx").inc()
            self.metrics.seconds.labels(endpoint).observe(time.perf_counter() - started)
        if relay and node and 200 <= status < 300:
            now = self.now_ms()
            client = scope.get("client")
            self.book.seen(
                Contact(
                    store=relay.group(1),
                    node=node,
                    seen_ms=now,
                    relay_ms=now if endpoint in RELAYING else 0,
                    waiting=_count(headers.get(H_WAITING)),
                    address=str(client[0]) if client else "",
                )
            )


def _count(value: str | None) -> int:
    if value is None or not value.isdigit() or len(value) > 12:
        return UNKNOWN
    return int(value)
