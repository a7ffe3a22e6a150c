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
from types import MappingProxyType
from typing import Any, Final

import msgpack
import msgspec
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
NO_SEALED: Mapping[int, bytes] = MappingProxyType({})


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


class Op:
    """One signed op, immutable (mypy holds its fields `Final`). Its payload is decoded from the
    body on first use: a receiver learns whether it already holds an op (and checks the chain)
    from the header and the hash alone, so duplicates and chain checks never pay for the
    payload; `check_payloads` decodes the payloads of the ops about to be stored, so a malformed
    one is refused before anything is written."""

    __slots__ = (
        "_payload",
        "body",
        "hash",
        "hlc",
        "kind",
        "origin",
        "prev",
        "sealed",
        "seq",
        "sig",
        "store",
        "user",
    )
    # Set once, in __init__ (plain assignments: a frozen dataclass's object.__setattr__ per field
    # is a third of the cost of decoding an op); mypy refuses any later assignment.
    store: Final[str]
    origin: Final[str]
    seq: Final[int]
    hlc: Final[int]
    user: Final[str]
    kind: Final[str]
    _payload: Payload | msgspec.Raw  # the raw bytes until first use, then the decoded map
    prev: Final[bytes]
    body: Final[bytes]
    sig: Final[bytes]
    hash: Final[bytes]
    # Data that travels beside the op, outside its signed body, by index: the sealed card data
    # of a card tender, whose SHA-256 the body carries (meshpos/domain/cards.py), so a replica
    # can delete it once HQ answered and the op still verifies.
    sealed: Final[Mapping[int, bytes]]

    def __init__(
        self,
        store: str,
        origin: str,
        seq: int,
        hlc: int,
        user: str,
        kind: str,
        payload: Payload | msgspec.Raw,
        prev: bytes,
        body: bytes,
        sig: bytes,
        hash: bytes,
        sealed: Mapping[int, bytes] = NO_SEALED,
    ) -> None:
        self.store = store
        self.origin = origin
        self.seq = seq
        self.hlc = hlc
        self.user = user
        self.kind = kind
        self._payload = payload
        self.prev = prev
        self.body = body
        self.sig = sig
        self.hash = hash
        self.sealed = sealed

    @property
    def payload(self) -> Payload:
        held = self._payload
        if type(held) is msgspec.Raw:
            held = self._payload = _decode_payload(held, self)
        return held

    @property
    def id(self) -> tuple[str, int]:
        return (self.origin, self.seq)

    def wire(self) -> bytes:
        """The op as it travels: body bytes and signature (and what travels beside it)."""
        return wire_of(self.body, self.sig, self.sealed)

    def with_sealed(self, sealed: Mapping[int, bytes]) -> Op:
        """The same op with this sealed card data beside it."""
        return self._copy(self.origin, self.seq, sealed)

    def standing_for(self, origin: str, seq: int) -> Op:
        """A copy under another (origin, seq): the rulebook asks "what did `origin` hold just
        before this op" with such a stand-in; its bytes are this op's."""
        return self._copy(origin, seq, self.sealed)

    def _copy(self, origin: str, seq: int, sealed: Mapping[int, bytes]) -> Op:
        return Op(
            self.store, origin, seq, self.hlc, self.user, self.kind, self._payload, self.prev,
            self.body, self.sig, self.hash, sealed,
        )  # fmt: skip

    def _key(self) -> tuple[object, ...]:
        return (self.store, self.origin, self.seq, self.hlc, self.user, self.kind, self.prev,
                self.body, self.sig, self.hash)  # fmt: skip

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Op:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"Op(store={self.store!r}, origin={self.origin!r}, seq={self.seq!r}, "
            f"hlc={self.hlc!r}, user={self.user!r}, kind={self.kind!r}, "
            f"payload={self.payload!r}, prev={self.prev!r})"
        )


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
        store, signer.node_id, seq, hlc, user, kind, clean, prev, body, sig, op_hash(body, sig)
    )


# The common body takes a fast path: msgspec decodes it as a typed 9-tuple, checking each header
# field's type in C, and leaves the payload as its raw bytes until the op is used (`Op.payload`).
# Any body the fast path does not take goes through msgpack whole (`_decode_whole`), as every body
# did before, and the payload is always decoded by msgpack: so this node accepts and refuses
# exactly the signed ops that earlier versions did (msgspec alone would take map keys msgpack
# refuses, and refuse a format field `true` that msgpack's checks took), and replicas of two
# versions never disagree on an op. tests/test_ops.py holds the two paths to that.
_BODY = msgspec.msgpack.Decoder(tuple[int, str, str, int, int, str, str, msgspec.Raw, bytes])
_MAP_START = frozenset([*range(0x80, 0x90), 0xDE, 0xDF])  # fixmap, map 16, map 32


def decode_body(body: bytes, sig: bytes) -> Op:
    """Parse an op's body bytes, checking every field of its header; its payload is decoded (and
    checked) on first use. Signatures are checked separately."""
    if type(body) is not bytes or type(sig) is not bytes:
        raise EncodingError("an op must be [body bytes, signature bytes]")
    if len(body) > MAX_OP_BYTES:
        raise EncodingError(f"op body is {len(body)} bytes; the limit is {MAX_OP_BYTES}")
    if len(sig) != SIG_BYTES:
        raise EncodingError(f"op signature is {len(sig)} bytes; expected {SIG_BYTES}")
    try:
        fmt, store, origin, seq, hlc, user, kind, payload, prev = _BODY.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _decode_whole(body, sig)
    if not (
        fmt == FORMAT
        and store
        and len(origin) == 12
        and 1 <= seq < MAX_INT
        and 0 <= hlc < MAX_INT
        and kind
        and memoryview(payload)[0] in _MAP_START
        and len(prev) == 32
    ):
        return _decode_whole(body, sig)
    return Op(store, origin, seq, hlc, user, kind, payload, prev, body, sig, op_hash(body, sig))


def _decode_whole(body: bytes, sig: bytes) -> Op:
    """Decode a body with msgpack, payload and all, and check every field (naming the one that
    is wrong): for what the fast path did not take, which is nearly always malformed."""
    fields = unpack(body, "op body")
    if not isinstance(fields, list) or len(fields) != 9:
        raise EncodingError("op body must be a list of 9 fields")
    fmt, store, origin, seq, hlc, user, kind, payload, prev = fields
    if fmt != FORMAT:
        raise EncodingError(f"op format {fmt!r} is not supported (this node speaks {FORMAT})")
    checks = (
        (isinstance(store, str) and store, "store"),
        (isinstance(origin, str) and len(origin) == 12, "origin"),
        (type(seq) is int and 1 <= seq < MAX_INT, "seq"),
        (type(hlc) is int and 0 <= hlc < MAX_INT, "hlc"),
        (isinstance(user, str), "user"),
        (isinstance(kind, str) and kind, "kind"),
        (isinstance(payload, dict), "payload"),
        (isinstance(prev, bytes) and len(prev) == 32, "prev"),
    )
    for ok, name in checks:
        if not ok:
            raise EncodingError(f"op field {name!r} is malformed")
    return Op(store, origin, seq, hlc, user, kind, payload, prev, body, sig, op_hash(body, sig))


def _decode_payload(raw: msgspec.Raw, op: Op) -> Payload:
    try:
        payload = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad bytes
        raise EncodingError(
            f"op {op.origin}:{op.seq} ({op.kind}): payload is not valid msgpack "
            f"({exc.__class__.__name__})"
        ) from None
    return payload  # type: ignore[no-any-return]  # a map: the header's check saw its marker


def check_payloads(ops: Iterable[Op]) -> None:
    """Decode the payload of each op (refusing a malformed one): before ops are stored."""
    for op in ops:
        op.payload  # noqa: B018 (decoding is the check)


MAX_SEALED_PARTS = 16


_WIRE = msgspec.msgpack.Decoder(tuple[bytes, bytes])


def decode_op(wire: bytes) -> Op:
    try:
        body, sig = _WIRE.decode(wire)
    except (msgspec.DecodeError, msgspec.ValidationError):  # sealed data beside it, or bad bytes
        return decode_parts(unpack(wire, "op"))
    return decode_body(body, sig)


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
    return op.with_sealed(sealed)


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
