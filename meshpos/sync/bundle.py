"""Signed bundles: the file-based sync path (a USB stick when even the LAN is down).

A bundle is `[content, sender public key, signature]`, where `content` is the msgpack map
`{magic, format, store, sender, nodes, vv, ops}` and `ops` are the ops' own wire forms. The envelope
signature catches truncation and tampering of the file as a whole; each op still carries, and is
checked by, its origin's signature and hash chain when ingested.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from meshpos.core.errors import EncodingError, SignatureError, WrongStore
from meshpos.core.ops import Op, Signer, decode_body, decode_op, node_id_of, pack, unpack, wire_of
from meshpos.domain.enrolment import NodeRecord

MAGIC = "meshpos-bundle"
FORMAT = 1


@dataclass(frozen=True)
class Bundle:
    store: str
    sender: str
    nodes: tuple[NodeRecord, ...]
    vv: dict[str, int]
    ops: tuple[Op, ...]


def encode_bundle(
    signer: Signer,
    store: str,
    nodes: Iterable[NodeRecord],
    vv: Mapping[str, int],
    raw_ops: Iterable[tuple[bytes, bytes]],
    sealed: Mapping[tuple[str, int], Mapping[int, bytes]] | None = None,
) -> bytes:
    """`sealed`: the data held beside ops (sealed card data awaiting HQ), by op id; it travels
    with its op, as on the mesh."""
    content = pack(
        {
            "magic": MAGIC,
            "format": FORMAT,
            "store": store,
            "sender": signer.node_id,
            "nodes": [list(n.as_row()) for n in nodes],
            "vv": dict(sorted(vv.items())),
            "ops": [_entry(body, sig, sealed or {}) for body, sig in raw_ops],
        }
    )
    return pack([content, signer.public_key, signer.sign(content)])


def decode_bundle(data: bytes, expect_store: str) -> Bundle:
    """Parse and authenticate a bundle; raises a RemoteError naming what is wrong."""
    outer = unpack(data, "bundle", max_bin=len(data))
    if (
        not isinstance(outer, list)
        or len(outer) != 3
        or not all(isinstance(x, bytes) for x in outer)
    ):
        raise EncodingError("this file is not a meshpos bundle (or it is truncated)")
    content, public_key, sig = outer
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(sig, content)
    except (InvalidSignature, ValueError):
        raise SignatureError("bundle signature does not verify: the file was altered") from None
    body = unpack(content, "bundle content")
    if not isinstance(body, dict) or body.get("magic") != MAGIC:
        raise EncodingError("this file is not a meshpos bundle")
    if body.get("format") != FORMAT:
        raise EncodingError(f"bundle format {body.get('format')!r} is not supported")
    store = body.get("store")
    if store != expect_store:
        raise WrongStore(f"bundle is from store {store!r}; this node belongs to {expect_store!r}")
    sender = body.get("sender")
    if sender != node_id_of(public_key):
        raise SignatureError("bundle sender does not match the key that signed it")
    try:
        nodes = tuple(NodeRecord(*row) for row in body["nodes"])
        vv = {str(k): int(v) for k, v in body["vv"].items()}
        ops = tuple(decode_op(pack(list(entry))) for entry in body["ops"])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise EncodingError("bundle content is malformed") from None
    for node in nodes:
        if not isinstance(node.public_key, bytes) or node_id_of(node.public_key) != node.node_id:
            raise SignatureError(
                f"bundle lists node {node.node_id!r} with a key that is not its own"
            )
    return Bundle(store=store, sender=sender, nodes=nodes, vv=vv, ops=ops)


def _entry(body: bytes, sig: bytes, sealed: Mapping[tuple[str, int], Mapping[int, bytes]]) -> Any:
    if not sealed:
        return [body, sig]
    return unpack(wire_of(body, sig, sealed.get(decode_body(body, sig).id)), "op")
