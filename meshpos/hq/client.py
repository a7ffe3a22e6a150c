"""The HTTP client a store's relay uses to talk to HQ (push ops, pull HQ's, ask for loyalty rights).

Requests are signed by the relaying node's Ed25519 key (see `meshpos.hq.wire`), so HQ serves a
store's data only to nodes enrolled in that store. Errors are split so a relay can act on them:
`HQUnavailable` (network, timeout, HQ's 5xx: retry with backoff) and `HQRefused` (a 4xx: HQ read the
request and refused it; retrying the same request will not help).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from meshpos.core.clock import wall_ms
from meshpos.core.errors import MeshposError, RemoteError
from meshpos.core.ops import Op, Signer, decode_op, pack, unpack
from meshpos.domain.enrolment import NodeRecord, admit_record
from meshpos.hq.wire import (
    H_CERT,
    H_DIGEST,
    H_NODE,
    H_SIG,
    H_TIME,
    H_WAITING,
    MSGPACK,
    auth_message,
    body_digest,
    node_rows,
    parse_node,
)
from meshpos.ledger.records import IngestResult
from meshpos.service.terminal import Terminal


class HQUnavailable(MeshposError):
    """HQ could not be reached or failed (network down, timeout, 5xx). Retry later."""


class HQRefused(RemoteError):
    """HQ answered with a 4xx: the request itself was refused."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status, self.code = status, code
        super().__init__(f"HQ refused the request ({status} {code}): {message}")


@dataclass(frozen=True)
class PushResult:
    vv: dict[str, int]
    applied: int
    duplicates: int
    skipped: dict[str, int]


@dataclass(frozen=True)
class PullResult:
    ops: list[Op]
    nodes: list[NodeRecord]
    vv: dict[str, int]
    more: bool
    asks: list[dict[str, Any]]  # as HQ sent them: domain.relay.plan_grants checks each


class HQClient:
    """One store's connection to HQ, as node `signer` (whose certificate HQ may not know yet:
    pass `cert` and it travels with each request)."""

    def __init__(
        self,
        url: str,
        signer: Signer,
        store: str,
        *,
        cert: bytes | None = None,
        timeout: float = 10.0,
        now_ms: Callable[[], int] = wall_ms,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.signer, self.store, self.cert = signer, store, cert
        self.now_ms = now_ms
        self.http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> HQClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests -------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        content_type: str = MSGPACK,
        extra: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        ts = self.now_ms()
        digest = body_digest(body)
        headers = {
            **(extra or {}),
            H_NODE: self.signer.node_id,
            H_TIME: str(ts),
            H_DIGEST: digest,
            H_SIG: self.signer.sign(auth_message(method, path, self.store, ts, digest)).hex(),
        }
        if self.cert is not None:
            headers[H_CERT] = base64.b64encode(self.cert).decode()
        if body:
            headers["content-type"] = content_type
        try:
            resp = self.http.request(method, path, content=body, headers=headers)
        except httpx.TimeoutException:
            raise HQUnavailable(f"HQ at {self.url} did not answer in time") from None
        except httpx.TransportError as exc:
            raise HQUnavailable(
                f"HQ at {self.url} is unreachable: {exc or type(exc).__name__}"
            ) from None
        if resp.status_code >= 500:
            raise HQUnavailable(f"HQ at {self.url} failed ({resp.status_code}): {_message(resp)}")
        if resp.status_code >= 400:
            code, message = _error(resp)
            raise HQRefused(resp.status_code, code, message)
        return resp

    def _json(self, resp: httpx.Response) -> dict[str, object]:
        try:
            data = resp.json()
        except ValueError:
            raise HQUnavailable(
                f"HQ at {self.url} answered with something that is not JSON"
            ) from None
        if not isinstance(data, dict):
            raise HQUnavailable(f"HQ at {self.url} answered with an unexpected JSON shape")
        return data

    @property
    def _base(self) -> str:
        return f"/v1/stores/{self.store}"

    def info(self) -> dict[str, str]:
        """HQ's public identity: name, node id, signing and payment public keys (no auth
        needed)."""
        try:
            resp = self.http.get("/v1/hq")
        except httpx.TransportError as exc:
            raise HQUnavailable(
                f"HQ at {self.url} is unreachable: {exc or type(exc).__name__}"
            ) from None
        if resp.status_code != 200:
            raise HQUnavailable(f"HQ at {self.url} answered {resp.status_code}")
        data = self._json(resp)
        if not all(isinstance(v, str) for v in data.values()):
            raise HQUnavailable(f"HQ at {self.url} answered with an unexpected identity")
        return {k: str(v) for k, v in data.items()}

    def push(self, wires: Sequence[bytes], nodes: Sequence[NodeRecord] = ()) -> PushResult:
        """Upload ops (their wire bytes, one origin's in seq order) with the node records HQ may
        not know. Returns HQ's version vector for the store: send only what it lacks next."""
        body = pack({"ops": list(wires), "nodes": node_rows(nodes)})
        data = self._json(self._request("POST", f"{self._base}/ops", body))
        return PushResult(
            vv=_counts(data.get("vv", {}), "version vector"),
            applied=_count(data.get("applied", 0), "count of ops applied"),
            duplicates=_count(data.get("duplicates", 0), "count of duplicates"),
            skipped=_counts(data.get("skipped", {}), "count of ops skipped"),
        )

    def vv(self, waiting: int | None = None) -> dict[str, int]:
        """HQ's version vector of the store. `waiting`: the ops this node held that HQ lacked at
        its last look, which HQ's dashboard shows (informative: it is not signed)."""
        extra = {H_WAITING: str(waiting)} if waiting is not None else None
        data = self._json(self._request("GET", f"{self._base}/vv", extra=extra))
        return _counts(data.get("vv", {}), "version vector")

    def pull(self, vv: Mapping[str, int], limit: int = 2000) -> PullResult:
        """Ops of this store HQ holds that a replica with version vector `vv` lacks (HQ's own
        prices, products, settings, payment results, blocklist; and other nodes' ops it relayed)."""
        body = pack({"vv": dict(vv), "limit": limit})
        resp = self._request("POST", f"{self._base}/pull", body)
        data = unpack(resp.content, "HQ pull answer")
        if not isinstance(data, dict):
            raise HQUnavailable("HQ's pull answer is malformed")
        ops, nodes, asks = data.get("ops"), data.get("nodes", []), data.get("asks", [])
        if not isinstance(ops, list) or not isinstance(nodes, list) or not isinstance(asks, list):
            raise HQUnavailable("HQ's pull answer is malformed")
        if not all(isinstance(a, dict) for a in asks):
            raise HQUnavailable("HQ's loyalty asks are malformed")
        return PullResult(
            ops=[decode_op(w) for w in ops],
            nodes=[parse_node(n) for n in nodes],
            vv=_counts(data.get("vv", {}), "version vector"),
            more=bool(data.get("more")),
            asks=asks,
        )

    def claim_points(
        self, customer_id: str, points: int, node: str | None = None
    ) -> dict[str, int | str]:
        """Ask HQ to move `points` of this customer's rights from other stores to `node` of this
        store (default: the relaying node). Returns {"moved": n, "asked": m}: m points are still
        owed and arrive as ops once the stores holding them hand them to HQ; and "refused" with
        HQ's reason when nothing may move (an expired gift card)."""
        body = json.dumps(
            {"customer_id": customer_id, "points": points, "node": node or self.signer.node_id}
        ).encode()
        data = self._json(
            self._request("POST", f"{self._base}/loyalty/claim", body, "application/json")
        )
        out: dict[str, int | str] = {
            "moved": _count(data.get("moved", 0), "count of points moved"),
            "asked": _count(data.get("asked", 0), "count of points asked"),
        }
        refused = data.get("refused")
        if refused is not None:
            if not isinstance(refused, str):
                raise HQUnavailable("HQ's reason for refusing a claim is not text")
            out["refused"] = refused[:500]
        return out

    def chain_stock(self, held: Mapping[str, int]) -> tuple[list[dict[str, Any]], list[str]]:
        """Other stores' stock: those whose version differs from `held` whole, the names of the
        unchanged ones (see meshpos/hq/storage/transfers.py)."""
        resp = self._request("POST", f"{self._base}/chain-stock", pack({"held": dict(held)}))
        data = unpack(resp.content, "HQ chain stock answer")
        stores = data.get("stores") if isinstance(data, dict) else None
        same = data.get("same") if isinstance(data, dict) else None
        if not isinstance(stores, list) or not isinstance(same, list):
            raise HQUnavailable("HQ's chain stock answer is malformed")
        for s in stores:
            ok = isinstance(s, dict) and isinstance(s.get("store"), str)
            ok = ok and isinstance(s.get("name"), str) and isinstance(s.get("stock"), dict)
            if not ok:
                raise HQUnavailable("HQ's chain stock answer is malformed")
            _count(s.get("version"), "store version")
            _count(s.get("as_of_ms"), "store time")
            _counts(s["stock"], "stock")
        if not all(isinstance(x, str) for x in same):
            raise HQUnavailable("HQ's chain stock answer is malformed")
        return stores, [str(x) for x in same]


def ingest_pull(terminal: Terminal, result: PullResult) -> IngestResult:
    """Store side: admit the node records HQ sent (certificates must verify against the store
    key pinned here, HQ's included) and merge the ops into the terminal's ledger."""
    pinned = terminal.cfg.store_public_key
    for node in result.nodes:
        if terminal.ledger.public_key(node.node_id) == node.public_key and node.cert is None:
            continue
        reason = admit_record(node, pinned, terminal.cfg.store)
        if reason is not None:
            raise RemoteError(f"HQ sent node {node.name} ({node.node_id}): {reason}")
    return terminal.ingest(result.ops, result.nodes)


def _count(value: object, what: str) -> int:
    """A whole number in HQ's answer."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise HQUnavailable(f"HQ's {what} is not a whole number")
    return value


def _counts(value: object, what: str) -> dict[str, int]:
    """A map of text to whole numbers in HQ's answer (a version vector, counts per origin)."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise HQUnavailable(f"HQ's {what} is malformed")
    return {k: _count(v, what) for k, v in value.items()}


def _error(resp: httpx.Response) -> tuple[str, str]:
    try:
        data = resp.json()
        return str(data.get("error", "refused")), str(data.get("message", ""))
    except (ValueError, AttributeError):
        return "refused", resp.text[:200]


def _message(resp: httpx.Response) -> str:
    return _error(resp)[1] or resp.reason_phrase
