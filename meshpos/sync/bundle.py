"""Signed bundles: the file-based sync path (a USB stick when even the LAN is down).

A bundle is `[content, sender public key, signature]`, where `content` is the msgpack map
`{magic, format, store, sender, nodes, vv, ...}`. Format 2 (written now) holds the ops as one
deflated msgpack list of `[body, sig]` (`opz`, with its dictionary's number in `z`, see
meshpos/sync/compression.py); format 1 (still read) holds that list plainly (`ops`). The envelope
signature catches truncation and tampering of the file as a whole; each op still carries, and is
checked by, its origin's signature and hash chain when ingested.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from meshpos.core.batching import collector_paused
from meshpos.core.errors import EncodingError, SignatureError, WrongStore
from meshpos.core.ops import (
    Op,
    Signer,
    decode_body,
    decode_parts,
    node_id_of,
    op_parts,
    pack,
    unpack,
)
from meshpos.domain.enrolment import NodeRecord
from meshpos.sync import compression

MAGIC = "meshpos-bundle"
FORMAT = 2
READS = (1, 2)
ZDICT = 1
MAX_INFLATED = 1 << 30
"""A bundle's ops may inflate to 1 GiB (a bundle is not capped at a message's size)."""


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
            "z": ZDICT,
            "opz": compression.compress(
                pack([_entry(body, sig, sealed or {}) for body, sig in raw_ops]), ZDICT
            ),
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
    if body.get("format") not in READS:
        raise EncodingError(
            f"bundle format {body.get('format')!r} is not supported (this meshpos reads formats "
            f"{', '.join(map(str, READS))}): upgrade meshpos to import it"
        )
    store = body.get("store")
    if store != expect_store:
        raise WrongStore(f"bundle is from store {store!r}; this node belongs to {expect_store!r}")
    sender = body.get("sender")
    if sender != node_id_of(public_key):
        raise SignatureError("bundle sender does not match the key that signed it")
    try:
        nodes = tuple(NodeRecord(*row) for row in body["nodes"])
        vv = {str(k): int(v) for k, v in body["vv"].items()}
        with collector_paused():
            ops = tuple(decode_parts(entry) for entry in _raw_ops(body))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise EncodingError("bundle content is malformed") from None
    for node in nodes:
        if not isinstance(node.public_key, bytes) or node_id_of(node.public_key) != node.node_id:
            raise SignatureError(
                f"bundle lists node {node.node_id!r} with a key that is not its own"
            )
    return Bundle(store=store, sender=sender, nodes=nodes, vv=vv, ops=ops)


def _entry(body: bytes, sig: bytes, sealed: Mapping[tuple[str, int], Mapping[int, bytes]]) -> Any:
    return op_parts(body, sig, sealed.get(decode_body(body, sig).id) if sealed else None)


def _raw_ops(body: dict[str, Any]) -> Any:
    if body["format"] == 1:
        return body["ops"]
    zdict, data = body["z"], body["opz"]
    if type(zdict) is not int or not isinstance(data, bytes):
        raise EncodingError("bundle content is malformed")
    return unpack(compression.decompress(data, zdict, MAX_INFLATED), "bundle ops", MAX_INFLATED)
