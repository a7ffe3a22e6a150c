"""Audit exports: a date range of the signed op log, checked with only the store's public key;
tampering (an altered op, a removed op, a wrong store key) and receipt gaps are reported."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from mesh_procs import make_store

from meshpos.core.ops import op_hash
from meshpos.domain.storetime import StoreTime, parse_day
from meshpos.service.audit import check_audit, export_audit
from meshpos.service.terminal import Terminal

DAYS = ("2030-01-01", "2030-01-02", "2030-01-03")


class Clock:
    def __init__(self) -> None:
        self.ms = StoreTime().day_start(parse_day(DAYS[0])) + 9 * 3600_000

    def __call__(self) -> int:
        self.ms += 1000
        return self.ms

    def day(self, i: int) -> None:
        self.ms = StoreTime().day_start(parse_day(DAYS[i])) + 9 * 3600_000


@pytest.fixture
def store(tmp_path: Path) -> tuple[list[Path], bytes, Clock]:
    """T1 (store key, catalogue) and T2: T1 sells 2, 3 and 1 sales on three days, T2 sells 2 on
    the second day, and T1 holds everything."""
    dirs = make_store(tmp_path, ["T1", "T2"], store="AUD1")
    clock = Clock()
    t1 = Terminal.open(dirs[0], now_ms=clock)
    t2 = Terminal.open(dirs[1], now_ms=clock)
    try:
        t2.import_bundle(t1.export_bundle()[0])
        for day, (n1, n2) in enumerate([(2, 0), (3, 2), (1, 0)]):
            clock.day(day)
            for _ in range(n1):
                t1.sell([("TSH-NAV-M", 1)])
            for _ in range(n2):
                t2.sell([("JNS-BLA-L", 1)])
        t1.import_bundle(t2.export_bundle(t1.ledger.vv())[0])
        pub = t1.cfg.store_public_key
        assert pub is not None
    finally:
        t1.close()
        t2.close()
    return dirs, pub, clock


def export(directory: Path, first: str, last: str) -> dict[str, Any]:
    t = Terminal.open(directory)
    try:
        return export_audit(t, first, last, now_ms=0)
    finally:
        t.close()


def data(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def by_name(report: Any) -> dict[str, Any]:
    return {o.name: o for o in report.origins}


def test_a_day_round_trips_with_its_anchor_and_receipt_ranges(
    store: tuple[list[Path], bytes, Clock],
) -> None:
    dirs, pub, _ = store
    doc = export(dirs[0], DAYS[1], DAYS[1])
    report = check_audit(data(doc), pub)
    assert report.ok, report.problems
    origins = by_name(report)
    assert set(origins) == {"T1", "T2"}
    t1, t2 = origins["T1"], origins["T2"]
    assert (t1.ops, t1.receipts) == (3, (3, 5))
    assert (t2.ops, t2.receipts) == (2, (1, 2))
    assert t1.first_seq > 1 and t1.first_time.startswith(DAYS[1])
    # The anchor is the hash of T1's op just before the range: the previous day's last op.
    t = Terminal.open(dirs[0])
    try:
        before = t.ledger.get(t1.origin, t1.first_seq - 1)
        assert before is not None
    finally:
        t.close()
    entry = next(o for o in doc["content"]["origins"] if o["origin"] == t1.origin)
    assert entry["anchor"] == op_hash(before.body, before.sig).hex()
    # Consecutive exports link: day 1's last hash is day 2's anchor.
    day1 = by_name(check_audit(data(export(dirs[0], DAYS[0], DAYS[0])), pub))
    assert day1["T1"].last_hash == entry["anchor"]


def _mutate_body(doc: dict[str, Any], origin_index: int, op_index: int) -> None:
    op = doc["content"]["origins"][origin_index]["ops"][op_index]
    body = bytearray(base64.b64decode(op["body"]))
    body[-40] ^= 0x01  # inside the prev hash / payload: still decodes
    op["body"] = base64.b64encode(bytes(body)).decode()


def test_an_altered_op_is_found(store: tuple[list[Path], bytes, Clock]) -> None:
    dirs, pub, _ = store
    doc = export(dirs[0], DAYS[0], DAYS[2])
    _mutate_body(doc, 0, 1)
    report = check_audit(data(doc), pub)
    assert not report.ok
    text = " | ".join(report.problems)
    assert "signature does not verify" in text
    assert "the export's signature does not verify" in text


def test_a_removed_op_is_found(store: tuple[list[Path], bytes, Clock]) -> None:
    dirs, pub, _ = store
    doc = export(dirs[0], DAYS[0], DAYS[2])
    ops = max((o["ops"] for o in doc["content"]["origins"]), key=len)
    removed = ops.pop(len(ops) // 2)
    report = check_audit(data(doc), pub)
    text = " | ".join(report.problems)
    assert f"seq {removed['seq']} is missing" in text
    assert "chain broken" in text


def test_an_edited_readable_field_is_found(store: tuple[list[Path], bytes, Clock]) -> None:
    dirs, pub, _ = store
    doc = export(dirs[0], DAYS[1], DAYS[1])
    doc["content"]["origins"][0]["ops"][0]["user"] = "manager"
    text = " | ".join(check_audit(data(doc), pub).problems)
    assert "readable fields disagree" in text


def test_a_wrong_store_key_fails_every_certificate(store: tuple[list[Path], bytes, Clock]) -> None:
    dirs, _, _ = store
    report = check_audit(data(export(dirs[0], DAYS[1], DAYS[1])), bytes(32))
    assert not report.ok
    text = " | ".join(report.problems)
    assert "not signed by this store's key" in text
    assert "no valid certificate for this origin" in text


def test_a_receipt_gap_is_reported(
    store: tuple[list[Path], bytes, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    dirs, pub, clock = store
    clock.day(2)
    clock.ms += 3600_000
    t = Terminal.open(dirs[0], now_ms=clock)
    try:
        monkeypatch.setattr(t.ledger.views, "next_number", lambda origin: 9)
        t.sell([("TSH-NAV-M", 1)])
    finally:
        t.close()
    text = " | ".join(check_audit(data(export(dirs[0], DAYS[2], DAYS[2])), pub).problems)
    assert "receipt numbers jump from 6" in text and "to 9" in text


def test_the_cli_round_trip_and_exit_codes(
    store: tuple[list[Path], bytes, Clock], tmp_path: Path
) -> None:
    dirs, pub, _ = store
    out = tmp_path / "audit.json"
    cli: Callable[..., Any] = run_cli
    r = cli(
        [
            "--dir",
            str(dirs[0]),
            "audit",
            "export",
            "--from",
            DAYS[0],
            "--to",
            DAYS[2],
            "--out",
            str(out),
        ]
    )
    assert r.code == 0 and "exported" in r.out
    key_file = tmp_path / "store.pub"
    key_file.write_text(pub.hex() + "\n")
    r = cli(["audit", "check", str(out), "--store-key-file", str(key_file), "--json"])
    assert r.code == 0 and json.loads(r.out)["ok"]
    doc = json.loads(out.read_text())
    max((o["ops"] for o in doc["content"]["origins"]), key=len).pop(1)
    out.write_text(json.dumps(doc))
    r = cli(["audit", "check", str(out), "--store-key", pub.hex()])
    assert r.code == 1 and "problem:" in r.err and "audit check found" in r.err
    r = cli(["audit", "check", str(out)])
    assert r.code == 1 and "--store-key" in r.err
    r = cli(
        [
            "--dir",
            str(dirs[0]),
            "audit",
            "export",
            "--from",
            "2030-02-30",
            "--to",
            DAYS[2],
            "--out",
            str(out),
        ]
    )
    assert r.code == 1 and "YYYY-MM-DD" in r.err
