"""Chain-wide reports as JSON, for the holder of the admin token."""

from __future__ import annotations

from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from meshpos.hq.routes.common import Api, ApiHandler, require_admin
from meshpos.hq.service import HQService

Report = Callable[[HQService, QueryParams], dict[str, object]]


def report(build: Report) -> ApiHandler:
    """An admin-only endpoint answering `build`'s JSON (built in a worker thread)."""

    async def handler(api: Api, request: Request) -> Response:
        require_admin(api, request)
        return JSONResponse(await run_in_threadpool(build, api.service, request.query_params))

    return handler


@report
def full(svc: HQService, q: QueryParams) -> dict[str, object]:
    return svc.report(q.get("store"))


@report
def stores(svc: HQService, q: QueryParams) -> dict[str, object]:
    return {"stores": svc.storage.views.summary()}


@report
def sales(svc: HQService, q: QueryParams) -> dict[str, object]:
    return {"sales": svc.storage.views.sales_by_day(q.get("store"), q.get("since"), q.get("until"))}


@report
def stock(svc: HQService, q: QueryParams) -> dict[str, object]:
    return {"stock": svc.storage.views.stock(q.get("store"), q.get("sku"))}


@report
def loyalty(svc: HQService, q: QueryParams) -> dict[str, object]:
    customer = q.get("customer")
    return {
        "customers": svc.storage.views.loyalty(customer),
        "by_store": svc.storage.views.loyalty_by_store(customer),
    }


@report
def conflicts(svc: HQService, q: QueryParams) -> dict[str, object]:
    status = q.get("status", "open")
    return {"conflicts": svc.storage.views.conflicts(q.get("store"), status or None)}


@report
def payments(svc: HQService, q: QueryParams) -> dict[str, object]:
    return {"payments": svc.storage.views.payments(q.get("store"))}
