"""The node side of enrolment: key files, the pinned store key, certificates and the roster.

Files in the node directory: `store.key` (only where the store key lives, 0600), `curve.key` (the
CURVE transport secret, 0600), `node.cert` (this node's certificate). The store's public key is
pinned in `meshpos.toml` as `[store] public_key` (hex).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from typing import Any

import tomli_w

from meshpos.core.errors import ConfigError, EncodingError, InputError, RemoteError
from meshpos.core.ops import Op, Signer, pack, unpack
from meshpos.domain import revocation
from meshpos.domain.enrolment import (
    Certificate,
    NodeRecord,
    issue,
    make_request,
    read_certificate,
    read_request,
)
from meshpos.node.transport import CurveKeys
from meshpos.service.config import (
    CONFIG_FILE,
    KEY_FILE,
    NodeConfig,
    check_name,
    private_dir,
    write_private,
    write_secret,
)
from meshpos.service.terminal import Terminal

STORE_KEY = "store.key"
CURVE_KEY = "curve.key"
NODE_CERT = "node.cert"


@dataclass(frozen=True)
class Membership:
    store_public_key: bytes | None
    cert: Certificate | None
    curve: CurveKeys


def set_config(cfg: NodeConfig, section: str, key: str, value: Any) -> None:
    path = cfg.dir / CONFIG_FILE
    doc = tomllib.loads(path.read_text())
    doc.setdefault(section, {})[key] = value
    write_private(path, tomli_w.dumps(doc))
    cfg.raw = doc


def curve_keys(cfg: NodeConfig) -> CurveKeys:
    path = cfg.dir / CURVE_KEY
    if not path.exists():
        CurveKeys.generate().save(path)
    return CurveKeys.load(path)


def load(cfg: NodeConfig) -> Membership:
    pub = cfg.store_public_key
    cert = None
    path = cfg.dir / NODE_CERT
    if pub is not None and path.exists():
        cert = read_certificate(path.read_bytes(), pub, cfg.store)
    return Membership(pub, cert, curve_keys(cfg))


def load_store_key(cfg: NodeConfig) -> Signer:
    path = cfg.dir / STORE_KEY
    if not path.exists():
        raise ConfigError(
            f"{cfg.dir} does not hold the store key: run `meshpos enroll sign` on the terminal "
            "where `meshpos store init` was run"
        )
    return Signer.from_bytes(path.read_bytes())


def store_init(t: Terminal) -> Certificate:
    """Create the store key on this terminal and enrol the terminal itself."""
    cfg = t.cfg
    if (cfg.dir / STORE_KEY).exists() or cfg.store_public_key is not None:
        raise ConfigError(f"{cfg.dir} already has a store key pinned; a store has exactly one")
    store_key = Signer.generate()
    write_secret(cfg.dir / STORE_KEY, store_key.private_bytes())
    set_config(cfg, "store", "public_key", store_key.public_key.hex())
    request = read_request(make_request(t.signer, cfg.store, cfg.name, curve_keys(cfg).public))
    cert_bytes = issue(store_key, cfg.store, request, now_ms=t.now_ms())
    return _install_cert(t, cert_bytes, store_key.public_key)


def request(t: Terminal) -> bytes:
    return make_request(t.signer, t.cfg.store, t.cfg.name, curve_keys(t.cfg).public)


def sign(t: Terminal, request_bytes: bytes, role: str = "terminal") -> bytes:
    """On the store-key holder: certify a request and put the new node in this node's roster at
    once (its daemon lets it in within a second, with no HQ to pass the certificate along); the
    pack carries the roster of known nodes."""
    store_key = load_store_key(t.cfg)
    req = read_request(request_bytes)
    if any(n.node_id != req.node_id and n.name == req.name for n in t.ledger.nodes()):
        raise RemoteError(f"a node named {req.name!r} is already enrolled in this store")
    cert = issue(store_key, t.cfg.store, req, role=role, now_ms=t.now_ms())
    t.ledger.add_node(read_certificate(cert, store_key.public_key, t.cfg.store).record())
    roster = [n.cert for n in t.ledger.nodes() if n.cert]
    return pack(["meshpos-enrolment", t.cfg.store, store_key.public_key, cert, roster])


def install(t: Terminal, enrolment: bytes) -> Certificate:
    outer = unpack(enrolment, "enrolment")
    if not isinstance(outer, list) or len(outer) != 5 or outer[0] != "meshpos-enrolment":
        raise EncodingError("this file is not a meshpos enrolment (from `meshpos enroll sign`)")
    _, store, pub, cert_bytes, roster = outer
    if store != t.cfg.store:
        raise RemoteError(f"enrolment is for store {store!r}; this node belongs to {t.cfg.store!r}")
    pinned = t.cfg.store_public_key
    if pinned is not None and pinned != pub:
        raise RemoteError("enrolment is signed by a different store key than the one pinned here")
    cert = read_certificate(cert_bytes, pub, t.cfg.store)
    if cert.node_id != t.node_id:
        raise RemoteError("this enrolment is for another node")
    for raw in roster:
        peer = read_certificate(raw, pub, t.cfg.store)
        t.ledger.add_node(peer.record())
    if pinned is None:
        set_config(t.cfg, "store", "public_key", pub.hex())
    installed = _install_cert(t, cert_bytes, pub)
    if not t.bootstrapping():
        # Its first op: node records travel with their origin's ops, so peers enrolled before
        # it learn its certificate from whichever peer it reaches first, without HQ or mDNS.
        t.append("note", {"note": f"{cert.name} enrolled in store {cert.store} ({cert.role})"})
    return installed


def _install_cert(t: Terminal, cert_bytes: bytes, pub: bytes) -> Certificate:
    cert = read_certificate(cert_bytes, pub, t.cfg.store)
    write_private(t.cfg.dir / NODE_CERT, cert_bytes)
    t.ledger.add_node(
        NodeRecord(t.node_id, t.signer.public_key, t.cfg.store, t.cfg.name, cert_bytes)
    )
    return cert


def revoke(t: Terminal, ref: str, reason: str, *, to: str | None = None) -> tuple[Op, NodeRecord]:
    """On the store-key holder: revoke node `ref` (name or id) from the last of its ops held
    here; its later ops take no effect anywhere, and every peer drops it once it hears. With
    `to` (a node's name or id) it is a retirement: that node takes over its loyalty rights and
    card float."""
    store_key = load_store_key(t.cfg)
    nodes = t.ledger.nodes()
    node = revocation.find_node(nodes, ref, t.node_id)
    held = t.ledger.revocations()
    heir = None
    if to is not None:
        heir = revocation.find_node(nodes, to, node.node_id, "is the node being retired")
        if heir.node_id in held:
            raise InputError(f"{heir.name} is revoked itself: name a node in service")
    if node.node_id in held and (heir is None or held[node.node_id].to):
        raise InputError(f"{node.name} is already revoked ({held[node.node_id].reason})")
    point = t.ledger.head(node.node_id)[0]
    body = revocation.payload(
        t.cfg.store, node.node_id, point, reason, store_key, to=heir.node_id if heir else None
    )
    return t.append(revocation.REVOKE_KIND, body), node


def reset_chain(t: Terminal, name: str) -> tuple[str, bytes]:
    """A chain reset, on a terminal restored from an old backup (or brought back as itself while
    a peer that holds its later ops is off): it signs with a new key from now on, under a new
    name (its receipts start a new series), so it can never sign a second op with a seq of its
    old chain (a fork). The old keys move to `replaced/`. Returns the old node id and the
    enrolment request of the new key; the store key certifies it (`enroll sign`) and retires
    the old chain into it (`store retire OLD --to NEW`), so its balances follow."""
    check_name(name, "terminal name")
    if name in {n.name for n in t.ledger.nodes()}:
        raise InputError(
            f"a node named {name!r} is already known in this store: a new chain numbers its "
            "receipts afresh, so give it a new name (e.g. T1.2)"
        )
    cfg = t.cfg
    old = t.node_id
    keep = private_dir(cfg.dir / "replaced" / f"chain-{old}")
    for file in (KEY_FILE, NODE_CERT, CURVE_KEY):
        if (cfg.dir / file).exists():
            (cfg.dir / file).replace(keep / file)
    signer = Signer.generate()
    write_secret(cfg.dir / KEY_FILE, signer.private_bytes())
    set_config(cfg, "node", "node_id", signer.node_id)
    set_config(cfg, "node", "name", name)
    fresh = Terminal.open(cfg.dir)
    try:
        fresh.set_bootstrapping(False)  # a new chain starts at seq 1: nothing to wait for
        return old, request(fresh)
    finally:
        fresh.close()
