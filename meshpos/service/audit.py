"""Audit exports: the signed, hash-chained op log of a date range, checkable with only the store's
public key.

An export is one JSON document `{"meshpos_audit": 1, "content": {...}, "signature": hex}`. Its
content holds, per origin (terminal or HQ), every op whose HLC wall time falls in the range (store
days, from the first day's midnight to the end of the last in the store's time zone), as
the op's own body and signature bytes (base64; the readable seq/time/user/kind beside them must
agree with the body), plus the chain anchor: the hash of that origin's op just before the range.
It also holds every node's certificate. The exporting node signs the canonical JSON of the
content, so the file as a whole (including which ops it claims are the last in the range) is
attributable to an enrolled node.

`check_audit` trusts nothing in the file but what the store key vouches for: a node's key comes
from its certificate (verified with `enrol.read_certificate`), each op's signature is checked
against it, each op must name the hash of the op before it (the first one the anchor), seqs must
be contiguous, and sale/return/exchange receipt numbers must run without a gap. Consecutive
exports link: one range's last hash per origin is the next range's anchor.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from meshpos.core.clock import pack as hlc_pack
from meshpos.core.clock import wall_of
from meshpos.core.errors import EncodingError, InputError, MeshposError
from meshpos.core.ops import GENESIS, Op, decode_body, verify_signature
from meshpos.domain.enrolment import read_certificate
from meshpos.domain.paper import paper_of
from meshpos.service.terminal import Terminal

FORMAT = "meshpos-audit"
VERSION = 1
RECEIPT_KINDS = ("sale", "return", "exchange")


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise EncodingError(f"{what} is not base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise EncodingError(f"{what} is not valid base64") from None


# -- export ---------------------------------------------------------------------------------------


def export_audit(t: Terminal, date_from: str, date_to: str, now_ms: int) -> dict[str, Any]:
    """The export document for ops with HLC wall time from `date_from` 00:00 to `date_to` 24:00,
    store time."""
    zone = t.store_time()
    start, end = zone.day_range(date_from, date_to)
    if start is None or end is None:
        raise InputError("an audit export needs both --from and --to")
    lo_hlc, hi_hlc = hlc_pack(start, 0), hlc_pack(end, 0)
    origins = []
    with t.ledger.snapshot():  # one state of the log for the whole export
        for origin in sorted(t.ledger.vv()):
            window = t.ledger.hlc_window(origin, lo_hlc, hi_hlc)
            if window is None:
                continue
            ops = []
            for body, sig in window.raw:
                op = decode_body(body, sig)
                ops.append(
                    {
                        "seq": op.seq,
                        "time": iso(wall_of(op.hlc)),
                        "user": op.user,
                        "kind": op.kind,
                        **({"paper": dict(paper)} if (paper := paper_of(op.payload)) else {}),
                        "body": _b64(body),
                        "sig": _b64(sig),
                    }
                )
            origins.append(
                {
                    "origin": origin,
                    "first_seq": window.first_seq,
                    "last_seq": window.last_seq,
                    "anchor": window.anchor.hex(),
                    "ops": ops,
                }
            )
        nodes = [
            {
                "node_id": n.node_id,
                "name": n.name,
                "public_key": n.public_key.hex(),
                "cert": _b64(n.cert) if n.cert else None,
            }
            for n in t.ledger.nodes()
        ]
    pub = t.cfg.store_public_key
    content = {
        "format": FORMAT,
        "version": VERSION,
        "store": t.cfg.store,
        "store_public_key": pub.hex() if pub else None,
        "from": date_from,
        "to": date_to,
        "timezone": zone.name,
        "range_ms": [start, end],
        "exported_ms": now_ms,
        "exporter": t.node_id,
        "nodes": nodes,
        "origins": origins,
    }
    return {
        "meshpos_audit": VERSION,
        "content": content,
        "signature": t.signer.sign(canonical_json(content)).hex(),
    }


# -- check ----------------------------------------------------------------------------------------


@dataclass
class OriginReport:
    origin: str
    name: str
    first_seq: int = 0
    last_seq: int = 0
    ops: int = 0
    first_time: str = ""
    last_time: str = ""
    receipts: tuple[int, int] | None = None
    receipt_count: int = 0
    last_hash: str = ""
    problems: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "name": self.name,
            "seqs": f"{self.first_seq}..{self.last_seq}",
            "ops": self.ops,
            "from": self.first_time,
            "to": self.last_time,
            "receipts": f"{self.receipts[0]}..{self.receipts[1]}" if self.receipts else "-",
            "last_hash": self.last_hash[:16],
            "ok": not self.problems,
        }


@dataclass
class AuditReport:
    store: str
    date_from: str
    date_to: str
    exporter: str
    origins: list[OriginReport]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_audit(data: bytes, store_public_key: bytes) -> AuditReport:
    """Verify an export with only the store's public key; every problem is listed, none raised
    (except for a file that is not an export at all)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise EncodingError("this file is not a meshpos audit export (not JSON)") from None
    if not isinstance(doc, dict) or doc.get("meshpos_audit") != VERSION:
        raise EncodingError("this file is not a meshpos audit export")
    content = doc.get("content")
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise EncodingError("this file is not a meshpos audit export (no content)")
    store = content.get("store")
    if not isinstance(store, str):
        raise EncodingError("the export names no store")
    problems: list[str] = []
    claimed = content.get("store_public_key")
    if claimed is not None and claimed != store_public_key.hex():
        problems.append(
            f"the export names store key {str(claimed)[:16]}..., not the key given "
            f"({store_public_key.hex()[:16]}...)"
        )
    keys, names = _certified_keys(content.get("nodes"), store, store_public_key, problems)
    exporter = content.get("exporter")
    _check_envelope(doc, content, exporter, keys, problems)
    start, end = _range(content, problems)
    reports = []
    seen: set[str] = set()
    for entry in content.get("origins") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("origin"), str):
            problems.append("an origin entry is malformed")
            continue
        origin = entry["origin"]
        if origin in seen:
            problems.append(f"origin {origin} appears twice")
        seen.add(origin)
        report = _check_origin(entry, store, keys.get(origin), names.get(origin, "?"), start, end)
        reports.append(report)
        problems += [f"{report.name} ({origin}): {p}" for p in report.problems]
    return AuditReport(
        store,
        str(content.get("from")),
        str(content.get("to")),
        f"{names.get(str(exporter), '?')} ({exporter})",
        reports,
        problems,
    )


def _certified_keys(
    nodes: Any, store: str, store_public_key: bytes, problems: list[str]
) -> tuple[dict[str, bytes], dict[str, str]]:
    keys: dict[str, bytes] = {}
    names: dict[str, str] = {}
    if not isinstance(nodes, list):
        problems.append("the export lists no node certificates")
        return keys, names
    for node in nodes:
        if not isinstance(node, dict):
            problems.append("a node entry is malformed")
            continue
        nid, name = str(node.get("node_id")), str(node.get("name", "?"))
        names[nid] = name
        if node.get("cert") is None:
            problems.append(f"node {name} ({nid}) has no certificate in the export")
            continue
        try:
            cert = read_certificate(_unb64(node["cert"], "certificate"), store_public_key, store)
        except MeshposError as exc:
            problems.append(f"node {name} ({nid}): {exc}")
            continue
        if cert.node_id != nid:
            problems.append(f"node {name} ({nid}) carries the certificate of {cert.node_id}")
            continue
        keys[nid] = cert.public_key
        names[nid] = cert.name
    return keys, names


def _check_envelope(
    doc: Mapping[str, Any],
    content: Mapping[str, Any],
    exporter: Any,
    keys: Mapping[str, bytes],
    problems: list[str],
) -> None:
    key = keys.get(str(exporter))
    if key is None:
        problems.append(f"the exporting node {exporter} has no valid certificate")
        return
    try:
        sig = bytes.fromhex(str(doc.get("signature")))
        Ed25519PublicKey.from_public_bytes(key).verify(sig, canonical_json(content))
    except (ValueError, InvalidSignature):
        problems.append("the export's signature does not verify: the file was altered")


def _range(content: Mapping[str, Any], problems: list[str]) -> tuple[int, int]:
    rng = content.get("range_ms")
    if (
        isinstance(rng, list)
        and len(rng) == 2
        and all(isinstance(x, int) for x in rng)
        and rng[0] < rng[1]
    ):
        return rng[0], rng[1]
    problems.append("the export's range is malformed")
    return 0, 2**62


def _check_origin(
    entry: Mapping[str, Any], store: str, key: bytes | None, name: str, start: int, end: int
) -> OriginReport:
    origin = entry["origin"]
    r = OriginReport(origin, name)
    p = r.problems
    if key is None:
        p.append("no valid certificate for this origin: its signatures cannot be checked")
    try:
        anchor = bytes.fromhex(str(entry.get("anchor")))
    except ValueError:
        anchor = b""
    if len(anchor) != 32:
        p.append("the chain anchor is malformed")
    items = entry.get("ops")
    if not isinstance(items, list) or not items:
        p.append("no ops listed")
        return r
    first = entry.get("first_seq")
    prev = anchor
    expected_seq = first if isinstance(first, int) else None
    receipts: list[tuple[int, int]] = []
    ops: list[Op] = []
    for i, item in enumerate(items):
        where = f"op #{i + 1}"
        try:
            if not isinstance(item, dict):
                raise EncodingError(f"{where} is malformed")
            op = decode_body(
                _unb64(item.get("body"), f"{where} body"),
                _unb64(item.get("sig"), f"{where} signature"),
            )
        except MeshposError as exc:
            p.append(str(exc))
            prev = b""
            expected_seq = None
            continue
        where = f"op {op.seq}"
        if op.origin != origin or op.store != store:
            p.append(f"{where} belongs to {op.store}/{op.origin}, not to this origin")
        if expected_seq is not None and op.seq != expected_seq:
            p.append(f"seq {expected_seq} is missing (next listed is {op.seq}): ops were removed")
        expected_seq = op.seq + 1
        if op.seq == 1 and op.prev != GENESIS:
            p.append(f"{where} does not start a chain")
        if prev and op.prev != prev:
            p.append(f"{where} does not follow the op before it (chain broken: altered or removed)")
        prev = op.hash
        if key is not None:
            try:
                verify_signature(key, op)
            except MeshposError:
                p.append(f"{where}: signature does not verify (the op was altered)")
        if (item.get("seq"), item.get("user"), item.get("kind")) != (op.seq, op.user, op.kind):
            p.append(f"{where}: the readable fields disagree with the signed body")
        wall = wall_of(op.hlc)
        if not start <= wall < end:
            p.append(f"{where} at {iso(wall)} is outside the exported range")
        number = op.payload.get("number")
        if item.get("paper") != paper_of(op.payload):
            p.append(f"{where}: the readable paper entry disagrees with the signed body")
        if op.kind in RECEIPT_KINDS and isinstance(number, int) and paper_of(op.payload) is None:
            receipts.append((op.seq, number))  # paper entries have their own numbering
        ops.append(op)
    if not ops:
        return r
    r.first_seq, r.last_seq, r.ops = ops[0].seq, ops[-1].seq, len(ops)
    r.first_time, r.last_time = iso(wall_of(ops[0].hlc)), iso(wall_of(ops[-1].hlc))
    r.last_hash = ops[-1].hash.hex()
    if (entry.get("first_seq"), entry.get("last_seq")) != (r.first_seq, r.last_seq):
        p.append("the listed seq range disagrees with the ops")
    if receipts:
        r.receipts = (receipts[0][1], receipts[-1][1])
        r.receipt_count = len(receipts)
        for (seq_a, a), (seq_b, b) in itertools.pairwise(receipts):
            if b != a + 1:
                p.append(f"receipt numbers jump from {a} (op {seq_a}) to {b} (op {seq_b})")
    return r
