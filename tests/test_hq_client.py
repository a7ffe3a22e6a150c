"""The relay's HQ client against a scripted HQ (httpx's MockTransport): what it sends is signed as
the server checks it, answers become typed values, and an answer of the wrong shape or status
becomes the error a relay acts on (`HQUnavailable`: retry; `HQRefused`: do not) rather than a
TypeError deep in the relay. The real server is exercised in test_hq_contract.py."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from meshpos.core.ops import Signer, pack, unpack
from meshpos.hq.client import HQClient, HQRefused, HQUnavailable
from meshpos.hq.wire import H_DIGEST, H_NODE, H_SIG, H_TIME, auth_message, body_digest

NOW = 1_760_000_000_000
SIGNER = Signer.from_seed(b"hq-client-test-node")


def _client(answer: Callable[[httpx.Request], httpx.Response]) -> HQClient:
    return HQClient(
        "http://hq.test", SIGNER, "S1", now_ms=lambda: NOW, transport=httpx.MockTransport(answer)
    )


def _json(body: object, status: int = 200) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status, json=body)


def test_a_push_is_signed_as_hq_checks_it_and_its_answer_is_typed() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"vv": {"a": 3}, "applied": 2, "duplicates": 1, "skipped": {"b": 4}}
        )

    with _client(answer) as c:
        result = c.push([b"w1", b"w2"])
    assert (result.vv, result.applied, result.duplicates, result.skipped) == (
        {"a": 3}, 2, 1, {"b": 4},
    )  # fmt: skip
    [request] = seen
    assert request.url.path == "/v1/stores/S1/ops"
    assert unpack(request.content, "batch") == {"ops": [b"w1", b"w2"], "nodes": []}
    assert request.headers[H_NODE] == SIGNER.node_id and request.headers[H_TIME] == str(NOW)
    assert request.headers[H_DIGEST] == body_digest(request.content)
    message = auth_message("POST", "/v1/stores/S1/ops", "S1", NOW, body_digest(request.content))
    Ed25519PublicKey.from_public_bytes(SIGNER.public_key).verify(
        bytes.fromhex(request.headers[H_SIG]), message
    )


def test_a_pull_answer_becomes_ops_nodes_vv_and_asks() -> None:
    ask = {"customer_id": "c1", "points": 5, "holders": {"n1": 5}}
    body = pack({"ops": [], "nodes": [], "vv": {"hq": 7}, "more": True, "asks": [ask]})
    with _client(lambda request: httpx.Response(200, content=body)) as c:
        got = c.pull({"hq": 2}, limit=10)
    assert (got.ops, got.nodes, got.vv, got.more, got.asks) == ([], [], {"hq": 7}, True, [ask])


@pytest.mark.parametrize(
    ("call", "answer"),
    [
        (lambda c: c.vv(), _json({"vv": ["not", "a", "map"]})),
        (lambda c: c.vv(), _json({"vv": {"a": "3"}})),
        (lambda c: c.vv(), _json({"vv": {"a": True}})),
        (lambda c: c.push([b"w"]), _json({"vv": {}, "applied": "2"})),
        (lambda c: c.vv(), _json(["a", "list"])),
        (lambda c: c.claim_points("c1", 5), _json({"moved": None})),
        (lambda c: c.claim_points("c1", 5), _json({"moved": 0, "refused": 7})),
        (lambda c: c.info(), _json({"node_id": 42})),
        (lambda c: c.info(), _json({}, status=404)),
        (lambda c: c.pull({}), lambda r: httpx.Response(200, content=pack({"ops": {}}))),
        (lambda c: c.pull({}), lambda r: httpx.Response(200, content=pack({"ops": [], "asks": 3}))),
        (
            lambda c: c.pull({}),
            lambda r: httpx.Response(200, content=pack({"ops": [], "asks": [1]})),
        ),
        (lambda c: c.vv(), _json({"error": "db_down", "message": "no database"}, status=503)),
    ],
    ids=[
        "vv-not-a-map", "vv-seq-text", "vv-seq-bool", "applied-text", "json-list",
        "moved-null", "refused-number", "info-not-text", "info-404", "pull-ops-map",
        "pull-asks-number",
        "pull-ask-not-map", "5xx",
    ],
)  # fmt: skip
def test_an_answer_of_the_wrong_shape_or_a_5xx_is_hq_unavailable(
    call: Callable[[HQClient], object], answer: Callable[[httpx.Request], httpx.Response]
) -> None:
    with _client(answer) as c, pytest.raises(HQUnavailable):
        call(c)


def test_a_4xx_is_refused_with_hqs_code_and_message() -> None:
    refusal = {"error": "unknown_store", "message": "store 'S1' is not enrolled at HQ"}
    with _client(_json(refusal, status=404)) as c, pytest.raises(HQRefused) as info:
        c.vv()
    assert (info.value.status, info.value.code) == (404, "unknown_store")
    assert "not enrolled" in str(info.value)


def test_hq_out_of_reach_is_unavailable() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with _client(down) as c, pytest.raises(HQUnavailable, match="unreachable"):
        c.vv()


def test_a_claim_names_the_relaying_node_unless_told_otherwise() -> None:
    bodies: list[object] = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"moved": 3, "asked": 2})

    with _client(answer) as c:
        assert c.claim_points("c1", 5) == {"moved": 3, "asked": 2}  # no "refused": it moved
        c.claim_points("c1", 1, node="other")
    assert bodies == [
        {"customer_id": "c1", "points": 5, "node": SIGNER.node_id},
        {"customer_id": "c1", "points": 1, "node": "other"},
    ]


def test_a_refused_claim_carries_hq_s_reason() -> None:
    said = {"moved": 0, "asked": 0, "refused": "gift card GC1 expired on 2027-01-01: it cannot"}
    with _client(lambda request: httpx.Response(200, json=said)) as c:
        assert c.claim_points("giftcard:GC1", 500) == said
