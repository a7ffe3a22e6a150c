"""The relay-to-HQ HTTP contract both ends share: how a request is signed, and how node records
travel (docs/hq-api.md). The server (meshpos.hq.routes) and the client (meshpos.hq.client) both
import it, so neither needs the other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from meshpos.core.errors import EncodingError
from meshpos.domain.enrolment import NodeRecord

MSGPACK = "application/x-msgpack"
AUTH_VERSION = "meshpos-hq-v1"
H_NODE, H_TIME, H_SIG, H_CERT, H_DIGEST = (
    "x-meshpos-node",
    "x-meshpos-time",
    "x-meshpos-signature",
    "x-meshpos-cert",
    "x-meshpos-body-sha256",
)
H_WAITING = "x-meshpos-waiting"
"""On a relay's probe: how many ops the node held that HQ lacked at its last look (a count for
HQ's dashboard, outside the signature)."""

NodeRow = list[str | bytes | None]
"""A node record on the wire: [node_id, public_key, store, name, cert]."""


def body_digest(body: bytes) -> str:
    """The body's hash as a relay signs it and sends it in `H_DIGEST`: HQ checks the signature
    from the headers alone, before it reads a byte of the body, then the body against the hash."""
    return hashlib.sha256(body).hexdigest()


def auth_message(method: str, path: str, store: str, ts_ms: int, digest: str) -> bytes:
    """What a relay signs: method, path, store, time and the body's hash (`body_digest`). A copy
    replayed later can only repeat an idempotent push or re-read what its sender could read."""
    return f"{AUTH_VERSION}\n{method.upper()}\n{path}\n{store}\n{ts_ms}\n{digest}".encode()


def node_rows(nodes: Sequence[NodeRecord]) -> list[NodeRow]:
    return [list(n.as_row()) for n in nodes]


def parse_node(value: object) -> NodeRecord:
    if (
        not isinstance(value, list)
        or len(value) != 5
        or not all(isinstance(value[i], str) for i in (0, 2, 3))
        or not isinstance(value[1], bytes)
        or not (value[4] is None or isinstance(value[4], bytes))
    ):
        raise EncodingError("node record must be [node_id, public_key, store, name, cert]")
    return NodeRecord(value[0], value[1], value[2], value[3], value[4])
