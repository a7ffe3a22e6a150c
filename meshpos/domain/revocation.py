"""Revoking a node: a stolen or lost terminal is locked out of its store's mesh for good; or
retiring it (a dead terminal replaced by a new one), which is a revocation naming a successor.

A revocation is an op of kind `node.revoke` naming the node and the revocation point: the last seq
of the node's chain the revoker held when it signed (`after_seq`). The node's ops up to the point
keep their effect; those after it take none (the rulebook's `revoked` rule) and are each listed as
a conflict for the manager. A retirement (`meshpos store retire NODE --to NODE`: a dead terminal,
replaced) names a successor and bars no op: what the dead terminal signed before it died is real,
wherever a copy turns up. The loyalty rights and card float it held (all its own moves, and every
credit another node gives it, before or after) belong to the successor, in the views and for the
rulebook's escrow rule (`ledger/judging.py: BatchPast.rights_before`). Its ops that arrive late
can lower what the successor inherited (a spend the successor repeated is then a conflict), so a
replica folds its views again when one arrives.

A revocation has authority when HQ signs it (`meshpos hq revoke`), or when it carries the store
key's signature over the statement (`meshpos store revoke`/`retire`, where `store.key` is),
whichever terminal's op carries it. The store key is the one that signed the carrying
node's certificate: a replica checks the statement against that, with no key pinned in the ledger.

Revocations are the one input of the fold that takes authority away from ops already folded.
Replicas keep the views convergent by folding them again whenever a revocation arrives (see
`Ledger._commit_ops` and HQ's `OpLog.commit`): the points are read from the whole log before any
op is judged, so the views are a function of the op set, whatever order it arrived in. When two
revocations name one node, the earlier point wins. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from meshpos.core.errors import EncodingError, InputError, RemoteError
from meshpos.core.ops import Op, Signer, pack
from meshpos.domain.enrolment import NodeRecord, read_certificate

REVOKE_KIND = "node.revoke"
MAX_REASON = 500


@dataclass(frozen=True)
class Revoked:
    """A node's revocation as the fold applies it: ops after `after_seq` take no effect."""

    node: str
    after_seq: int
    reason: str
    by: str  # "origin:seq" of the revocation op
    to: str | None = None  # retired into this node: it inherits the escrowed balances
    hlc: int = 0  # the revocation op's stamp
    retired_only: bool = False  # only retirements name it: its ops all keep their effect

    def bars(self, seq: int) -> bool:
        """Whether the node's op `seq` takes no effect by it."""
        return not self.retired_only and seq > self.after_seq


def find_node(
    nodes: Sequence[NodeRecord],
    ref: str,
    mine: str,
    why: str = "is the node signing the revocation: revoke it from another",
) -> NodeRecord:
    """The node a person names (its name or node id) for revoking; not `mine` (the revoker, or
    the node being retired: `why` says which)."""
    found = [n for n in nodes if ref in (n.node_id, n.name)]
    if not found:
        known = ", ".join(sorted(n.name for n in nodes)) or "none"
        raise InputError(f"no node {ref!r} is enrolled in this store (nodes: {known})")
    if len(found) > 1:
        raise InputError(f"{ref!r} names several nodes: give its node id")
    if found[0].node_id == mine:
        raise InputError(f"{ref!r} {why}")
    return found[0]


def statement(store: str, node: str, after_seq: int, reason: str, to: str | None = None) -> bytes:
    """The bytes the store key signs: which node of which store, from where, why, and the node
    that takes over its balances (a retirement)."""
    return pack([1, "revoke", store, node, after_seq, reason, *([to] if to else [])])


def check_reason(reason: str) -> str:
    text = " ".join(reason.split())
    if not text:
        raise EncodingError("a revocation needs a reason (say what happened: stolen, lost ...)")
    if len(text) > MAX_REASON:
        raise EncodingError(f"the reason is longer than {MAX_REASON} characters")
    return text


def payload(
    store: str,
    node: str,
    after_seq: int,
    reason: str,
    store_key: Signer | None = None,
    *,
    to: str | None = None,
) -> dict[str, Any]:
    """A revocation's payload; with `store_key`, signed by it (a terminal's op), else bare (an
    op HQ signs, whose authority is HQ's certificate). `to`: a retirement, whose successor
    inherits the node's loyalty rights and card float."""
    text = check_reason(reason)
    if to == node:
        raise InputError("a node cannot be retired into itself: name the node that replaces it")
    out: dict[str, Any] = {"node": node, "after_seq": after_seq, "reason": text}
    if to:
        out["to"] = to
    if store_key is not None:
        out["store_key"] = store_key.public_key.hex()
        out["signature"] = store_key.sign(statement(store, node, after_seq, text, to)).hex()
    return out


def read(op: Op) -> Revoked:
    """The revocation an op states; EncodingError when its payload has not the shape."""
    p = op.payload
    node, after, reason = p.get("node"), p.get("after_seq"), p.get("reason")
    if not isinstance(node, str) or not node or type(after) is not int or after < 0:
        raise EncodingError(f"op {op.origin}:{op.seq}: revocation is malformed")
    to = p.get("to")
    if not isinstance(reason, str) or (to is not None and (not isinstance(to, str) or to == node)):
        raise EncodingError(f"op {op.origin}:{op.seq}: revocation reason or successor is malformed")
    for key in ("store_key", "signature"):
        if key in p and not _hex(p[key]):
            raise EncodingError(f"op {op.origin}:{op.seq}: revocation {key} is malformed")
    return Revoked(node, after, reason, f"{op.origin}:{op.seq}", to or None, op.hlc)


def refusal(op: Op, role: str | None, cert: bytes | None) -> str | None:
    """Why `op` (a well-formed revocation) has no authority, or None: signed by HQ, or carrying
    the signature of the store key that certified its origin."""
    if role == "hq":
        return None
    p = op.payload
    key, sig = p.get("store_key"), p.get("signature")
    if not (_hex(key) and _hex(sig)):
        return f"op {op.origin}:{op.seq} revokes a node without the store key's signature"
    if cert is None:
        return f"op {op.origin}:{op.seq}: its node holds no certificate to check the store key by"
    try:
        rev = read(op)
        pub = bytes.fromhex(str(key))
        Ed25519PublicKey.from_public_bytes(pub).verify(
            bytes.fromhex(str(sig)),
            statement(op.store, rev.node, rev.after_seq, rev.reason, rev.to),
        )
        read_certificate(cert, pub, op.store)
    except (InvalidSignature, ValueError, RemoteError):  # EncodingError is a RemoteError
        return f"op {op.origin}:{op.seq} revokes a node but is not signed by the store key"
    return None


def points(
    ops: Iterable[Op],
    role_of: Callable[[str], str | None],
    cert_of: Callable[[str], bytes | None],
) -> dict[str, Revoked]:
    """The revocation in force for each node, from every revocation op held: those with
    authority count, and for a node named twice the earlier point wins (then the op id); the
    successor is the earliest retirement's."""
    out: dict[str, Revoked] = {}
    heirs: dict[str, Revoked] = {}
    revs: dict[str, list[Revoked]] = {}
    for op in ops:
        try:
            rev = read(op)
        except EncodingError:
            continue
        if refusal(op, role_of(op.origin), cert_of(op.origin)) is not None:
            continue
        revs.setdefault(rev.node, []).append(rev)
        for found, ok in ((out, True), (heirs, rev.to is not None)):
            held = found.get(rev.node)
            if ok and (held is None or (rev.after_seq, rev.by) < (held.after_seq, held.by)):
                found[rev.node] = rev
    for node, heir in heirs.items():  # a retirement names the successor whichever point wins
        plain = [r for r in revs[node] if r.to is None]
        first = min(plain, key=lambda r: (r.after_seq, r.by)) if plain else heir
        out[node] = replace(first, to=heir.to, hlc=heir.hlc, retired_only=not plain)
    return out


def successor(revoked: Mapping[str, Revoked], node: str) -> str:
    """Who holds `node`'s escrowed balances: the node it was retired into (and so on down a
    chain of retirements), else itself."""
    seen = {node}
    while (rev := revoked.get(node)) is not None and rev.to and rev.to not in seen:
        node = rev.to
        seen.add(node)
    return node


def _hex(value: Any) -> bool:
    if not isinstance(value, str) or not value or len(value) % 2:
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True
