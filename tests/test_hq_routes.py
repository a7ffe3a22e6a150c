"""HQ's URL table against its documentation: every endpoint docs/hq-api.md lists is registered by
the app factory with the documented method, and no other; and every handler answers a refusal
with the documented error body (checked in-process; the real server is test_hq_contract.py)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from meshpos.hq import keys
from meshpos.hq.app import create_app
from meshpos.hq.service import HQService
from meshpos.hq.storage import open_storage

DOC = Path(__file__).resolve().parents[1] / "docs" / "hq-api.md"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Starlette]:
    service = HQService(keys.init_hq(tmp_path / "hq"), open_storage(":memory:"))
    yield create_app(service, sweep_s=0)
    service.close()


def documented() -> set[tuple[str, str]]:
    """(method, path) of each row of the endpoint table, with `{s}` as the app names it."""
    rows = re.findall(r"^\| `(GET|POST) (/v1/[^`?]*)", DOC.read_text(), re.MULTILINE)
    return {(m, p.replace("{s}", "{store}")) for m, p in rows}


def served(app: Starlette) -> set[tuple[str, str]]:
    return {
        (m, r.path)
        for r in app.routes
        if isinstance(r, Route)
        for m in r.methods or ()
        if m != "HEAD"
    }


def test_every_documented_endpoint_is_served_and_no_other(app: Starlette) -> None:
    assert len(documented()) == 15
    assert served(app) == documented()


def test_refusals_have_the_documented_body_on_every_guarded_endpoint(app: Starlette) -> None:
    async def ask_each() -> list[tuple[str, httpx.Response]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hq.test") as client:
            return [
                (path, await client.request(method, path.replace("{store}", "S1")))
                for method, path in sorted(documented())
            ]

    for path, resp in asyncio.run(ask_each()):
        if path in ("/v1/health", "/v1/hq"):
            assert resp.status_code == 200, path
            continue
        assert resp.status_code == 401, path
        assert resp.json()["error"] == "unauthorized" and resp.json()["message"], path
