"""What HQ notices of relay requests (meshpos.hq.traffic): a contact per answered request of an
enrolled node, with the ops it says wait, never for a refused one; and how the stores page and
the metrics read contacts (meshpos.hq.overview): online, the relay, what waits."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from meshpos.hq import keys
from meshpos.hq.overview import ONLINE_MS, store_statuses
from meshpos.hq.service import HQService
from meshpos.hq.storage import open_storage
from meshpos.hq.storage.contacts import UNKNOWN, Contact
from meshpos.hq.traffic import ContactBook, RequestMetrics, Traffic, endpoint_of
from meshpos.hq.wire import H_NODE, H_WAITING

NOW = 1_760_000_000_000


def answering(status: int) -> Traffic:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse("x", status_code=status)(scope, receive, send)

    return Traffic(app, book=ContactBook(), metrics=RequestMetrics(CollectorRegistry()),
                   now_ms=lambda: NOW)  # fmt: skip


def call(app: Traffic, path: str, headers: dict[str, str]) -> None:
    async def go() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hq.test") as client:
            await client.get(path, headers=headers)

    asyncio.run(go())


def due(book: ContactBook) -> list[Contact]:
    return list(book._due.values())


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("/v1/stores/S1/vv", "vv"),
        ("/v1/stores/S1/ops", "push"),
        ("/v1/stores/S1/pull", "pull"),
        ("/v1/stores/S1/loyalty/claim", "claim"),
        ("/v1/report/stock", "report"),
        ("/v1/health", "health"),
        ("/static/hq.css", "static"),
        ("/stores", "dashboard"),
        ("/v1/stores/S1/anything-else", "dashboard"),
    ],
)
def test_endpoint_labels_are_bounded(path: str, label: str) -> None:
    assert endpoint_of(path) == label


def test_an_answered_probe_is_a_contact_with_what_the_node_says_waits() -> None:
    app = answering(200)
    call(app, "/v1/stores/S1/vv", {H_NODE: "n1", H_WAITING: "42"})
    call(app, "/v1/stores/S1/ops", {H_NODE: "n2"})
    got = {c.node: c for c in due(app.book)}
    assert got["n1"] == Contact("S1", "n1", NOW, 0, 42, "127.0.0.1")
    assert got["n2"].relay_ms == NOW and got["n2"].waiting == UNKNOWN


@pytest.mark.parametrize("status", [401, 403, 404, 422, 500])
def test_a_refused_request_is_no_contact(status: int) -> None:
    app = answering(status)
    call(app, "/v1/stores/S1/vv", {H_NODE: "n1", H_WAITING: "5"})
    assert due(app.book) == []


@pytest.mark.parametrize("given", ["lots", "-1", "1e9", "9" * 20])
def test_a_malformed_count_is_unknown(given: str) -> None:
    app = answering(200)
    call(app, "/v1/stores/S1/vv", {H_NODE: "n1", H_WAITING: given})
    assert due(app.book)[0].waiting == UNKNOWN


def test_contacts_only_move_forward_and_the_stores_page_reads_them(tmp_path: Path) -> None:
    svc = HQService(keys.init_hq(tmp_path / "hq"), open_storage(str(tmp_path / "hq.db")))
    try:
        svc.enroll_store("S1", "One")
        svc.enroll_store("S2", "Two")
        contacts = svc.storage.contacts
        contacts.record([Contact("S1", "n1", NOW, NOW, 7), Contact("S1", "n2", NOW - 5000, 0, 3)])
        contacts.record([Contact("S1", "n1", NOW - 9000, 0, 99)])  # a late flush: older
        [s1, s2] = store_statuses(svc.storage, NOW + 1000)
        assert (s1.online, s1.ops_waiting, s1.relay, s1.last_sync_ms) == (True, 7, "n1", NOW)
        assert s1.terminals_online == 2 and s1.revoked == 0
        assert (s2.online, s2.ops_waiting, s2.last_contact_ms) == (False, None, 0)
        later = store_statuses(svc.storage, NOW + ONLINE_MS + 1)[0]
        assert not later.online and later.ops_waiting == 7  # as last said, while offline
    finally:
        svc.close()
