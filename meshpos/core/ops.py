"""The operation: one immutable, signed business action, and its canonical encoding.

Encoding is msgpack (see docs/decisions.md): the signed body is the msgpack array
`[FORMAT, store, origin, seq, hlc, user, kind, payload, prev]` with every map's keys sorted and no
floats, so the same op always has the same bytes on every node and in every language. The body bytes
travel verbatim next to the signature, so nobody ever re-encodes before checking a hash or signature.

Each op names the hash of its origin's previous op (body and signature, see `op_hash`). The chain
makes removal or alteration evident, and lets a receiver check one Ed25519 signature for a
contiguous run of an origin's ops plus one hash per op.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from meshpos.core.batching import collector_paused
from meshpos.core.errors import ChainError, EncodingError, LocalError, SignatureError

FORMAT = 1
GENESIS = bytes(32)
MAX_OP_BYTES = 64 * 1024
SIG_BYTES = 64
MAX_INT = 2**63  # SQLite integers are signed 64-bit

Payload = Mapping[str, Any]


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def op_hash(body: bytes, sig: bytes) -> bytes:
    """The chain link. It covers the signature too: otherwise a run verified by its last signature
    could carry an altered signature on an earlier op, which would be stored, forwarded, and then
    refused by every peer that receives that op at the end of a run."""
    return digest(body + sig)


def node_id_of(public_key: bytes) -> str:
    """A node's id is derived from its signing key, so an id cannot be claimed without the key."""
    return hashlib.sha256(public_key).hexdigest()[:12]


def canonical(value: Any, where: str = "payload") -> Any:
    """Return `value` with maps sorted by key; refuse types that have no single canonical form."""
    if isinstance(value, bool) or value is None or isinstance(value, str | bytes):
        return value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise LocalError(f"{where}: integer {value} is out of range")
        return value
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise LocalError(f"{where}: map keys must be text, got {key!r}")
        return {key: canonical(value[key], f"{where}.{key}") for key in sorted(value)}
    if isinstance(value, list | tuple):
        return [canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise LocalError(
        f"{where}: {type(value).__name__} is not allowed in an op (money is integer paise)"
    )


def pack(value: Any) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def unpack(data: bytes, what: str = "data", max_bin: int = MAX_OP_BYTES * 64) -> Any:
    """Decode msgpack; no binary field may exceed `max_bin` (ops and messages are small; a bundle
    file passes its own size, since its one content field holds every op)."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=max_bin)
    except Exception as exc:  # msgpack raises several unrelated types for bad bytes
        raise EncodingError(f"{what} is not valid msgpack ({exc.__class__.__name__})") from None


@dataclass(frozen=True, eq=True, slots=True)
class Op:
    store: str
    origin: str
    seq: int
    hlc: int
    user: str
    kind: str
    payload: Payload = field(compare=False, hash=False)
    prev: bytes
    body: bytes = field(repr=False)
    sig: bytes = field(repr=False)
    hash: bytes = field(repr=False)
    # Data that travels beside the op, outside its signed body, by index: the sealed card data
    # of a card tender, whose SHA-256 the body carries (meshpos/domain/cards.py), so a replica
    # can delete it once HQ answered and the op still verifies.
    sealed: Mapping[int, bytes] = field(default_factory=dict, compare=False, repr=False)

    @property
    def id(self) -> tuple[str, int]:
        return (self.origin, self.seq)

    def wire(self) -> bytes:
        """The op as it travels: body bytes and signature (and what travels beside it)."""
        return wire_of(self.body, self.sig, self.sealed)


def wire_of(body: bytes, sig: bytes, sealed: Mapping[int, bytes] | None = None) -> bytes:
    """An op's wire form from its stored parts."""
    return pack(op_parts(body, sig, sealed))


def op_parts(body: bytes, sig: bytes, sealed: Mapping[int, bytes] | None = None) -> list[Any]:
    """What an op's wire form packs: [body, signature] and, when sealed card data travels beside
    it, [[tender, blob], ...]; a bundle holds these lists inside its own packed content."""
    if not sealed:
        return [body, sig]
    return [body, sig, [[i, blob] for i, blob in sorted(sealed.items())]]


class Signer:
    """An Ed25519 key pair; the private half never leaves the node directory."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.node_id = node_id_of(self.public_key)

    @classmethod
    def generate(cls) -> Signer:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Signer:
        """Deterministic keys for the simulator and tests."""
        return cls(Ed25519PrivateKey.from_private_bytes(digest(seed)))

    @classmethod
    def from_bytes(cls, raw: bytes) -> Signer:
        if len(raw) != 32:
            raise LocalError("the node key file is damaged: expected 32 bytes of Ed25519 key")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def private_bytes(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


def make_op(
    signer: Signer,
    *,
    store: str,
    seq: int,
    hlc: int,
    user: str,
    kind: str,
    payload: Payload,
    prev: bytes,
) -> Op:
    """Create and sign a new op of this node."""
    clean = canonical(dict(payload))
    body = pack([FORMAT, store, signer.node_id, seq, hlc, user, kind, clean, prev])
    if len(body) > MAX_OP_BYTES:
        raise LocalError(f"{kind} op is {len(body)} bytes; the limit is {MAX_OP_BYTES}")
    sig = signer.sign(body)
    return Op(
        store=store,
        origin=signer.node_id,
        seq=seq,
        hlc=hlc,
        user=user,
        kind=kind,
        payload=clean,
        prev=prev,
        body=body,
        sig=sig,
        hash=op_hash(body, sig),
    )


def decode_body(body: bytes, sig: bytes) -> Op:
    """Parse an op's body bytes, checking every field's type; signatures are checked separately."""
    if not isinstance(body, bytes) or not isinstance(sig, bytes):
        raise EncodingError("an op must be [body bytes, signature bytes]")
    if len(body) > MAX_OP_BYTES:
        raise EncodingError(f"op body is {len(body)} bytes; the limit is {MAX_OP_BYTES}")
    if len(sig) != SIG_BYTES:
        raise EncodingError(f"op signature is {len(sig)} bytes; expected {SIG_BYTES}")
    fields = unpack(body, "op body")
    if not isinstance(fields, list) or len(fields) != 9:
        raise EncodingError("op body must be a list of 9 fields")
    fmt, store, origin, seq, hlc, user, kind, payload, prev = fields
    if fmt != FORMAT:
        raise EncodingError(f"op format {fmt!r} is not supported (this node speaks {FORMAT})")
    # One expression for the common case (type(x) is int also refuses bools); the named checks
    # run only to say which field is wrong.
    if not (
        type(store) is str
        and store
        and type(origin) is str
        and len(origin) == 12
        and type(seq) is int
        and 1 <= seq < MAX_INT
        and type(hlc) is int
        and 0 <= hlc < MAX_INT
        and type(user) is str
        and type(kind) is str
        and kind
        and type(payload) is dict
        and type(prev) is bytes
        and len(prev) == 32
    ):
        checks = (
            (isinstance(store, str) and store, "store"),
            (isinstance(origin, str) and len(origin) == 12, "origin"),
            (isinstance(seq, int) and not isinstance(seq, bool) and 1 <= seq < MAX_INT, "seq"),
            (isinstance(hlc, int) and not isinstance(hlc, bool) and 0 <= hlc < MAX_INT, "hlc"),
            (isinstance(user, str), "user"),
            (isinstance(kind, str) and kind, "kind"),
            (isinstance(payload, dict), "payload"),
            (isinstance(prev, bytes) and len(prev) == 32, "prev"),
        )
        for ok, name in checks:
            if not ok:
                raise EncodingError(f"op field {name!r} is malformed")
    return Op(
        store=store,
        origin=origin,
        seq=seq,
        hlc=hlc,
        user=user,
        kind=kind,
        payload=payload,
        prev=prev,
        body=body,
        sig=sig,
        hash=op_hash(body, sig),
    )


MAX_SEALED_PARTS = 16


def decode_op(wire: bytes) -> Op:
    return decode_parts(unpack(wire, "op"))


def decode_parts(parts: Any) -> Op:
    """An op from its unpacked wire form (`op_parts`), checked as `decode_op` checks it."""
    if not isinstance(parts, list) or len(parts) not in (2, 3):
        raise EncodingError("an op must be [body bytes, signature bytes]")
    op = decode_body(parts[0], parts[1])
    if len(parts) == 2:
        return op
    beside = parts[2]
    if not isinstance(beside, list) or len(beside) > MAX_SEALED_PARTS:
        raise EncodingError("the data beside an op is malformed")
    sealed: dict[int, bytes] = {}
    for item in beside:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or type(item[0]) is not int
            or not isinstance(item[1], bytes)
        ):
            raise EncodingError("the data beside an op is malformed")
        sealed[item[0]] = item[1]
    return replace(op, sealed=sealed)


def decode_bodies(raw: Iterable[tuple[bytes, bytes]]) -> list[Op]:
    """`decode_body` of each (body, signature), as a batch (meshpos/core/batching.py)."""
    with collector_paused():
        return [decode_body(body, sig) for body, sig in raw]


def decode_ops(wires: Iterable[bytes]) -> list[Op]:
    """`decode_op` of each wire form, as a batch."""
    with collector_paused():
        return [decode_op(wire) for wire in wires]


def verify_signature(public_key: bytes, op: Op) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(op.sig, op.body)
    except (InvalidSignature, ValueError):
        raise SignatureError(
            f"op {op.origin}:{op.seq} has a signature that does not verify against its origin's key"
        ) from None


def verify_run(ops: Sequence[Op], public_key: bytes, prev_hash: bytes | None) -> None:
    """Check a contiguous run of one origin's ops: seqs consecutive, each op chained to the one
    before (and the first to `prev_hash` when the op before it is already known), and the last op's
    signature. The signature over the last body covers, through the chain, every body before it."""
    if not ops:
        return
    expected = prev_hash
    for i, op in enumerate(ops):
        if i and op.seq != ops[i - 1].seq + 1:
            raise ChainError(f"ops of {op.origin} are not contiguous at seq {op.seq}")
        if op.seq == 1 and op.prev != GENESIS:
            raise ChainError(f"op {op.origin}:1 does not start a chain")
        if expected is not None and op.prev != expected:
            raise ChainError(
                f"op {op.origin}:{op.seq} does not follow the op before it "
                "(an op was removed or altered)"
            )
        expected = op.hash
    verify_signature(public_key, ops[-1])
