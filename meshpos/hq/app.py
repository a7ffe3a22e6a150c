"""The HQ HTTP API (ASGI, Starlette). Formats and status codes are documented in docs/hq-api.md.

Relay endpoints (`/v1/stores/{store}/...`) take and give msgpack (ops carry bytes) and are signed by
an enrolled node of that store. Report endpoints give JSON to the holder of the admin token. Every
refusal is a 4xx with `{"error": code, "message": text}` and changes nothing. Handlers run the
(blocking) storage calls in a worker thread. The handlers live in meshpos.hq.routes; every URL
is registered here, in one table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.routing import Mount, Route

from meshpos.hq.dashboard.routes import routes as dashboard_routes
from meshpos.hq.keys import HQConfig
from meshpos.hq.routes import health, ingest, loyalty, pull, reports, transfers
from meshpos.hq.routes.common import Api, ApiHandler, guarded
from meshpos.hq.service import HQService
from meshpos.hq.traffic import ContactBook, RequestMetrics, Traffic
from meshpos.service.config import OWNER_ONLY
from meshpos.service.http_gate import PROTOCOL, Gate, GateLimits, GateMiddleware
from meshpos.service.logs import setup_logging

log = logging.getLogger("meshpos.hq.api")
SWEEP_S = 5.0
CONTACTS_S = 2.0


def create_app(
    service: HQService,
    *,
    sweep_s: float = SWEEP_S,
    contacts_s: float = CONTACTS_S,
    registry: CollectorRegistry | None = None,
) -> Starlette:
    """The HQ app: the relay API, the dashboard for people (meshpos.hq.dashboard, mounted
    beside it) and, in front, the traffic watch that records relays' contacts and counts
    requests into `registry` (the metrics server's, when HQ serves metrics)."""
    api = Api.of(service)
    book = ContactBook()

    def route(path: str, handler: ApiHandler, methods: list[str] | None = None) -> Route:
        return Route(path, guarded(api, handler), methods=methods)

    routes = [
        route("/v1/health", health.health),
        route("/v1/hq", health.hq_info),
        route("/v1/stores/{store}/ops", ingest.push, ["POST"]),
        route("/v1/stores/{store}/vv", ingest.vv),
        route("/v1/stores/{store}/pull", pull.pull, ["POST"]),
        route("/v1/stores/{store}/loyalty/claim", loyalty.claim, ["POST"]),
        route("/v1/report", reports.full),
        route("/v1/report/stores", reports.stores),
        route("/v1/report/sales", reports.sales),
        route("/v1/report/stock", reports.stock),
        route("/v1/report/loyalty", reports.loyalty),
        route("/v1/report/payments", reports.payments),
        route("/v1/stores/{store}/chain-stock", transfers.chain_stock, ["POST"]),
        route("/v1/report/transfers", transfers.report),
        route("/v1/report/conflicts", reports.conflicts),
        Mount("", routes=dashboard_routes(service)),
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

        async def flush_contacts() -> None:
            while True:
                await asyncio.sleep(contacts_s)
                try:
                    await run_in_threadpool(book.flush, service.storage.contacts)
                except Exception:  # kept for the next flush; the error is logged
                    log.exception("recording store contacts failed")

        tasks = [asyncio.create_task(sweep())] if sweep_s > 0 else []
        tasks.append(asyncio.create_task(flush_contacts()))
        await run_in_threadpool(service.send_transfer_expects)  # any owed before a crash
        log.info("HQ %s serving on %s", service.node_id, service.storage.db.describe())
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with contextlib.suppress(Exception):  # the last contacts; shutting down regardless
                book.flush(service.storage.contacts)
            service.close()

    metrics = RequestMetrics(registry or CollectorRegistry())
    watch = Middleware(Traffic, book=book, metrics=metrics, now_ms=service.now_ms)
    gate = Gate(gate_limits(service.cfg), "HQ")
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(GateMiddleware, gate=gate), watch],
    )
    app.state.http_gate = gate
    return app


def setup_hq_logging(cfg: HQConfig, level: str | None = None) -> str:
    """HQ's logging from hq.toml's `[log]` (stderr, and JSON lines in logs/hq.log by default);
    `level` overrides its level. Returns the level in force."""
    settings = cfg.log_settings()
    setup_logging(settings, cfg.dir, level=level, node=cfg.node_id)
    return level or settings.level


def gate_limits(cfg: HQConfig) -> GateLimits:
    """What one HQ process lets clients hold (`[limits]` in hq.toml)."""
    return GateLimits(
        max_body=cfg.limit("max_body_bytes"),
        requests_per_client=cfg.limit("max_requests_per_client"),
        requests=cfg.limit("max_requests"),
        connections_per_client=cfg.limit("max_connections_per_client"),
        connections=cfg.limit("max_connections"),
        header_timeout_s=cfg.limit("header_timeout_s"),
        body_timeout_s=cfg.limit("body_timeout_s"),
    )


SERVER_OPTIONS: dict[str, object] = {
    "http": PROTOCOL,  # the gate's connection limits and header deadline
    "timeout_keep_alive": 5,
    "h11_max_incomplete_event_size": 16 * 1024,  # request line and headers
}
"""uvicorn settings `meshpos hq serve` runs with (meshpos/cli/hq.py)."""


def create_app_from_env() -> Starlette:
    """For `uvicorn --factory` with several workers: the HQ dir and database from the
    environment (`meshpos hq serve --workers N` sets them)."""
    os.umask(OWNER_ONLY)
    service = HQService.open(os.environ.get("MESHPOS_HQ_DIR"), os.environ.get("MESHPOS_HQ_DB"))
    setup_hq_logging(service.cfg, os.environ.get("MESHPOS_HQ_LOG"))
    return create_app(service)
