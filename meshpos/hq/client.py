"""The HTTP client a store's relay uses to talk to HQ (push ops, pull HQ's, ask for loyalty rights).

Requests are signed by the relaying node's Ed25519 key (see `auth_message`), so HQ serves a store's
data only to nodes enrolled in that store. Errors are split so a relay can act on them:
`HQUnavailable` (network, timeout, HQ's 5xx: retry with backoff) and `HQRefused` (a 4xx: HQ read the
request and refused it; retrying the same request will not help).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from meshpos.core.clock import wall_ms
from meshpos.core.errors import EncodingError, MeshposError, RemoteError
from meshpos.core.ops import Op, Signer, decode_op, pack, unpack
from meshpos.domain.enrolment import NodeRecord, admit_record
from meshpos.ledger.records import IngestResult

MSGPACK = "application/x-msgpack"
AUTH_VERSION = "meshpos-hq-v1"
H_NODE, H_TIME, H_SIG, H_CERT = (
    "x-meshpos-node",
    "x-meshpos-time",
    "x-meshpos-signature",
    "x-meshpos-cert",
)


class HQUnavailable(MeshposError):
    """HQ could not be reached or failed (network down, timeout, 5xx). Retry later."""


class HQRefused(RemoteError):
    """HQ answered with a 4xx: the request itself was refused."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status, self.code = status, code
        super().__init__(f"HQ refused the request ({status} {code}): {message}")


def auth_message(method: str, path: str, store: str, ts_ms: int, body: bytes) -> bytes:
    """What a relay signs: method, path, store, time and the body's hash. A copy replayed later
    can only repeat an idempotent push or re-read what its sender was allowed to read."""
    digest = hashlib.sha256(body).hexdigest()
    return f"{AUTH_VERSION}\n{method.upper()}\n{path}\n{store}\n{ts_ms}\n{digest}".encode()


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
    asks: list[dict[str, Any]]


def node_rows(nodes: Sequence[NodeRecord]) -> list[list[Any]]:
    return [list(n.as_row()) for n in nodes]


def parse_node(value: Any) -> NodeRecord:
    if (
        not isinstance(value, list)
        or len(value) != 5
        or not all(isinstance(value[i], str) for i in (0, 2, 3))
        or not isinstance(value[1], bytes)
        or not (value[4] is None or isinstance(value[4], bytes))
    ):
        raise EncodingError("node record must be [node_id, public_key, store, name, cert]")
    return NodeRecord(value[0], value[1], value[2], value[3], value[4])


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
        self, method: str, path: str, body: bytes = b"", content_type: str = MSGPACK
    ) -> httpx.Response:
        ts = self.now_ms()
        headers = {
            H_NODE: self.signer.node_id,
            H_TIME: str(ts),
            H_SIG: self.signer.sign(auth_message(method, path, self.store, ts, body)).hex(),
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

    def _json(self, resp: httpx.Response) -> dict[str, Any]:
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

    def info(self) -> dict[str, Any]:
        """HQ's public identity: node id, signing and payment public keys (no auth needed)."""
        try:
            resp = self.http.get("/v1/hq")
        except httpx.TransportError as exc:
            raise HQUnavailable(
                f"HQ at {self.url} is unreachable: {exc or type(exc).__name__}"
            ) from None
        if resp.status_code != 200:
            raise HQUnavailable(f"HQ at {self.url} answered {resp.status_code}")
        return self._json(resp)

    def push(self, wires: Sequence[bytes], nodes: Sequence[NodeRecord] = ()) -> PushResult:
        """Upload ops (their wire bytes, one origin's in seq order) with the node records HQ may
        not know. Returns HQ's version vector for the store: send only what it lacks next."""
        body = pack({"ops": list(wires), "nodes": node_rows(nodes)})
        data = self._json(self._request("POST", f"{self._base}/ops", body))
        return PushResult(
            vv={str(k): int(v) for k, v in data.get("vv", {}).items()},
            applied=int(data.get("applied", 0)),
            duplicates=int(data.get("duplicates", 0)),
            skipped={str(k): int(v) for k, v in data.get("skipped", {}).items()},
        )

    def vv(self) -> dict[str, int]:
        data = self._json(self._request("GET", f"{self._base}/vv"))
        return {str(k): int(v) for k, v in data.get("vv", {}).items()}

    def pull(self, vv: Mapping[str, int], limit: int = 2000) -> PullResult:
        """Ops of this store HQ holds that a replica with version vector `vv` lacks (HQ's own
        prices, products, settings, payment results, blocklist; and other nodes' ops it relayed)."""
        body = pack({"vv": dict(vv), "limit": limit})
        resp = self._request("POST", f"{self._base}/pull", body)
        data = unpack(resp.content, "HQ pull answer")
        if not isinstance(data, dict) or not isinstance(data.get("ops"), list):
            raise HQUnavailable("HQ's pull answer is malformed")
        return PullResult(
            ops=[decode_op(w) for w in data["ops"]],
            nodes=[parse_node(n) for n in data.get("nodes", [])],
            vv={str(k): int(v) for k, v in data.get("vv", {}).items()},
            more=bool(data.get("more")),
            asks=list(data.get("asks", [])),
        )

    def claim_points(
        self, customer_id: str, points: int, node: str | None = None
    ) -> dict[str, int]:
        """Ask HQ to move `points` of this customer's rights from other stores to `node` of this
        store (default: the relaying node). Returns {"moved": n, "asked": m}: m points are still
        owed and arrive as ops once the stores holding them hand them to HQ."""
        body = json.dumps(
            {"customer_id": customer_id, "points": points, "node": node or self.signer.node_id}
        ).encode()
        data = self._json(
            self._request("POST", f"{self._base}/loyalty/claim", body, "application/json")
        )
        return {"moved": int(data.get("moved", 0)), "asked": int(data.get("asked", 0))}


def ingest_pull(terminal: Any, result: PullResult) -> IngestResult:
    """Store side: admit the node records HQ sent (certificates must verify against the store
    key pinned here, HQ's included) and merge the ops into the terminal's ledger."""
    pinned = terminal.cfg.store_public_key
    for node in result.nodes:
        if terminal.ledger.public_key(node.node_id) == node.public_key and node.cert is None:
            continue
        reason = admit_record(node, pinned, terminal.cfg.store)
        if reason is not None:
            raise RemoteError(f"HQ sent node {node.name} ({node.node_id}): {reason}")
    ingested: IngestResult = terminal.ingest(result.ops, result.nodes)
    return ingested


def _error(resp: httpx.Response) -> tuple[str, str]:
    try:
        data = resp.json()
        return str(data.get("error", "refused")), str(data.get("message", ""))
    except (ValueError, AttributeError):
        return "refused", resp.text[:200]


def _message(resp: httpx.Response) -> str:
    return _error(resp)[1] or resp.reason_phrase
