"""Store keys and node certificates: who belongs to a store's mesh.

A store has an Ed25519 key (`store.key`, kept on one terminal, or at HQ). A node certificate, signed
by it, binds a node id to the node's Ed25519 signing key, its CURVE transport key and its name. Peers
accept a node only if its certificate verifies against the store's public key (pinned in every
node's `meshpos.toml`) and names the keys the node actually uses. Pure: no I/O in the checks.

Enrolment is three steps, so no private key ever leaves its node:
`enroll request` on the new node -> `enroll sign` where the store key is -> `enroll install` back.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from meshpos.core.errors import EncodingError, RemoteError, SignatureError
from meshpos.core.ops import Signer, node_id_of, pack, unpack


@dataclass(frozen=True)
class NodeRecord:
    """What a ledger must know about an origin to accept its ops: its key and its store."""

    node_id: str
    public_key: bytes
    store: str
    name: str
    cert: bytes | None = None

    def as_row(self) -> tuple[str, bytes, str, str, bytes | None]:
        return (self.node_id, self.public_key, self.store, self.name, self.cert)


CERT_FORMAT = 1
ROLES = ("terminal", "hq")


@dataclass(frozen=True)
class Certificate:
    store: str
    node_id: str
    name: str
    public_key: bytes
    curve_key: bytes  # Z85 text of the CURVE public key, 40 bytes
    role: str
    issued_ms: int
    raw: bytes

    def record(self) -> NodeRecord:
        return NodeRecord(self.node_id, self.public_key, self.store, self.name, self.raw)


@dataclass(frozen=True)
class EnrolRequest:
    store: str
    node_id: str
    name: str
    public_key: bytes
    curve_key: bytes
    raw: bytes


def make_request(signer: Signer, store: str, name: str, curve_key: bytes) -> bytes:
    """A node's request to join: its keys, signed by its own key (proof it holds it)."""
    content = pack(
        [CERT_FORMAT, "request", store, signer.node_id, name, signer.public_key, curve_key]
    )
    return pack([content, signer.sign(content)])


def read_request(data: bytes) -> EnrolRequest:
    content, sig = _envelope(data, "enrolment request")
    fields = unpack(content, "enrolment request")
    if not isinstance(fields, list) or len(fields) != 7 or fields[:2] != [CERT_FORMAT, "request"]:
        raise EncodingError("this is not a meshpos enrolment request")
    _, _, store, node_id, name, public_key, curve_key = fields
    if not all(isinstance(x, str) for x in (store, node_id, name)) or not all(
        isinstance(x, bytes) for x in (public_key, curve_key)
    ):
        raise EncodingError("enrolment request fields are malformed")
    _verify(public_key, sig, content, "enrolment request")
    if node_id_of(public_key) != node_id:
        raise SignatureError("enrolment request: node id does not match its key")
    return EnrolRequest(store, node_id, name, public_key, curve_key, data)


def issue(
    store_key: Signer, store: str, request: EnrolRequest, *, role: str = "terminal", now_ms: int
) -> bytes:
    if request.store != store:
        raise RemoteError(f"request is for store {request.store!r}; this store key is {store!r}")
    if role not in ROLES:
        raise RemoteError(f"role must be one of {', '.join(ROLES)}")
    content = pack(
        [
            CERT_FORMAT,
            "cert",
            store,
            request.node_id,
            request.name,
            request.public_key,
            request.curve_key,
            role,
            now_ms,
        ]
    )
    return pack([content, store_key.sign(content)])


def read_certificate(data: bytes, store_public_key: bytes, store: str) -> Certificate:
    """Parse and verify a certificate; raises a RemoteError naming what is wrong."""
    content, sig = _envelope(data, "certificate")
    _verify(store_public_key, sig, content, "certificate (not signed by this store's key)")
    fields = unpack(content, "certificate")
    if not isinstance(fields, list) or len(fields) != 9 or fields[:2] != [CERT_FORMAT, "cert"]:
        raise EncodingError("this is not a meshpos node certificate")
    _, _, cstore, node_id, name, public_key, curve_key, role, issued = fields
    if cstore != store:
        raise RemoteError(f"certificate is for store {cstore!r}, not {store!r}")
    if not isinstance(public_key, bytes) or node_id_of(public_key) != node_id:
        raise SignatureError("certificate: node id does not match its key")
    if not isinstance(curve_key, bytes) or not isinstance(name, str) or not isinstance(issued, int):
        raise EncodingError("certificate fields are malformed")
    return Certificate(cstore, node_id, name, public_key, curve_key, str(role), issued, data)


def admit_record(node: NodeRecord, store_public_key: bytes | None, store: str) -> str | None:
    """The reason a node may not join, or None. Without a pinned store key nothing is admitted."""
    if store_public_key is None:
        return "this node has no store key pinned: run `meshpos store init` or `enroll install`"
    if node.cert is None:
        return "no certificate: the node is not enrolled in this store"
    try:
        cert = read_certificate(node.cert, store_public_key, store)
    except RemoteError as exc:
        return str(exc)
    if cert.node_id != node.node_id or cert.public_key != node.public_key:
        return "certificate belongs to another node"
    return None


def _envelope(data: bytes, what: str) -> tuple[bytes, bytes]:
    outer = unpack(data, what)
    if (
        not isinstance(outer, list)
        or len(outer) != 2
        or not isinstance(outer[0], bytes)
        or not isinstance(outer[1], bytes)
    ):
        raise EncodingError(f"this is not a meshpos {what}")
    return outer[0], outer[1]


def _verify(public_key: bytes, sig: bytes, content: bytes, what: str) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(sig, content)
    except (InvalidSignature, ValueError):
        raise SignatureError(f"{what}: signature does not verify") from None
