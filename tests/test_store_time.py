"""Store time: a sale at 00:30 IST belongs to that IST day in every report, the Z report, audit
exports, receipts and at HQ; `[store] timezone` and the `store.timezone` setting choose the zone;
stored times stay UTC."""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from pathlib import Path

import pytest
import tomli_w
from conftest import Node
from hq_helpers import CATALOG

from meshpos.core.errors import InputError
from meshpos.core.ops import Signer
from meshpos.domain.enrolment import EnrolRequest, NodeRecord, issue
from meshpos.domain.storetime import StoreTime, parse_day
from meshpos.hq.storage import open_storage
from meshpos.ledger.store import Ledger
from meshpos.service.config import NodeConfig
from meshpos.service.printing import receipt_doc
from meshpos.service.terminal import Terminal

# 2025-10-03 00:30 IST is 2025-10-02 19:00 UTC: the IST day is the 3rd, the UTC day the 2nd.
AT = int(dt.datetime(2025, 10, 2, 19, 0, tzinfo=dt.UTC).timestamp() * 1000)


def test_store_time_writes_instants_in_the_stores_zone() -> None:
    ist = StoreTime()
    assert ist.name == "Asia/Kolkata"
    assert (ist.day(AT), ist.hour(AT), ist.clock(AT), ist.stamp(AT)) == (
        "2025-10-03",
        "2025-10-03 00:00",
        "00:30",
        "03-10-2025 00:30",
    )
    assert ist.iso(AT) == "2025-10-03 00:30 IST" and ist.clock(AT, seconds=True) == "00:30:00"
    start, end = ist.day_range("2025-10-03", "2025-10-03")
    assert start is not None and end is not None and start <= AT < end
    assert end - start == 86_400_000 and ist.day(start) == "2025-10-03" == ist.day(end - 1)
    # a zone with daylight saving: the day a clock change skips an hour has 23 of them
    ny = StoreTime.named("America/New_York")
    a, b = ny.day_range("2025-03-09", "2025-03-09")
    assert a is not None and b is not None and b - a == 23 * 3_600_000


def test_bad_zones_and_days_are_named() -> None:
    with pytest.raises(InputError, match="'Asia/Bangalore' is not an IANA time zone"):
        StoreTime.named("Asia/Bangalore")
    with pytest.raises(InputError, match="--from '2025-02-30' is not a date"):
        StoreTime().day_range("2025-02-30", None)
    with pytest.raises(InputError, match="--to 2025-10-01 is before --from 2025-10-03"):
        StoreTime().day_range("2025-10-03", "2025-10-01")
    assert parse_day("2025-10-03") == dt.date(2025, 10, 3)


def sell_at(node: Node, ms: int, *items: str) -> None:
    t = Terminal.open(node.path, now_ms=lambda: ms)
    try:
        t.sell([(i, 1) for i in items])
    finally:
        t.close()


def set_zone(node: Node, zone: str) -> None:
    path = node.path / "meshpos.toml"
    doc = tomllib.loads(path.read_text())
    doc["store"]["timezone"] = zone
    path.write_text(tomli_w.dumps(doc))


def test_a_sale_at_half_past_midnight_ist_is_on_that_ist_day(node: Node) -> None:
    sell_at(node, AT, "TEE-M")
    sell_at(node, AT - 3_600_000, "CAP")  # 23:30 IST on the 2nd
    days = node.json("report", "sales", "--by", "day")
    assert [(d["key"], d["count"]) for d in days] == [("2025-10-02", 1), ("2025-10-03", 1)]
    hours = node.json("report", "sales", "--by", "hour")
    assert [h["key"] for h in hours] == ["2025-10-02 23:00", "2025-10-03 00:00"]
    third = node.json(
        "report", "sales", "--by", "sku", "--from", "2025-10-03", "--to", "2025-10-03"
    )
    assert [r["key"] for r in third] == ["TEE-M"]
    second = node.json("report", "sales", "--by", "sku", "--to", "2025-10-02")
    assert [r["key"] for r in second] == ["CAP"]
    z = node.json("report", "z")
    assert z["day"] == "2025-10-02 to 2025-10-03"
    assert [(d["day"], d["sales"]) for d in z["days"]] == [("2025-10-02", 1), ("2025-10-03", 1)]
    assert z["first_sale"] == "2025-10-02 23:30 IST" and z["last_sale"] == "2025-10-03 00:30 IST"
    sell_at(node, AT + 3_600_000, "CAP")
    z2 = node.json("report", "z")
    assert z2["day"] == "2025-10-03" and z2["sales"] == 1


def test_the_configured_zone_moves_the_day(node: Node) -> None:
    sell_at(node, AT, "TEE-M")
    set_zone(node, "UTC")
    assert [d["key"] for d in node.json("report", "sales", "--by", "day")] == ["2025-10-02"]
    set_zone(node, "Asia/Calcutta")
    assert [d["key"] for d in node.json("report", "sales", "--by", "day")] == ["2025-10-03"]
    set_zone(node, "IST")
    assert "[store] timezone 'IST' is not an IANA time zone" in node.fail("report", "x")


def test_an_hq_setting_overrides_the_configured_zone(node: Node) -> None:
    sell_at(node, AT, "TEE-M")
    t = Terminal.open(node.path)
    try:
        assert t.store_time().name == "Asia/Kolkata"
        t.append("setting.set", {"key": "store.timezone", "value": "Asia/Dubai"})
        assert t.store_time().name == "Asia/Dubai"
        t.append("setting.set", {"key": "store.timezone", "value": "Nowhere/Land"})
        assert t.store_time().name == "Asia/Kolkata"  # an unknown zone: the config's stands
        t.append("setting.set", {"key": "store.timezone", "value": "UTC"})
    finally:
        t.close()
    assert [d["key"] for d in node.json("report", "sales", "--by", "day")] == ["2025-10-02"]


def test_audit_exports_cover_store_days(node: Node, tmp_path: Path) -> None:
    # 00:30 IST on 3 October 2030: after the catalogue's ops, whose clock the log's HLC follows
    later = int(dt.datetime(2030, 10, 2, 19, 0, tzinfo=dt.UTC).timestamp() * 1000)
    sell_at(node, later, "TEE-M")
    out = tmp_path / "a.json"
    node.ok("audit", "export", "--from", "2030-10-03", "--to", "2030-10-03", "--out", str(out))
    content = json.loads(out.read_text())["content"]
    assert content["timezone"] == "Asia/Kolkata"
    ops = [o for origin in content["origins"] for o in origin["ops"]]
    assert [o["kind"] for o in ops] == ["sale"]
    assert ops[0]["time"] == "2030-10-02T19:00:00.000Z"  # the log's own times stay UTC
    node.ok("audit", "export", "--from", "2030-10-02", "--to", "2030-10-02", "--out", str(out))
    assert json.loads(out.read_text())["content"]["origins"] == []


def test_receipts_are_stamped_in_the_zone_in_force(node: Node) -> None:
    t = Terminal.open(node.path, now_ms=lambda: AT)
    try:
        result = t.sell([("TEE-M", 1)])
        assert receipt_doc(t, result.op, result.payload)["timezone"] == "Asia/Kolkata"
        t.append("setting.set", {"key": "store.timezone", "value": "Asia/Dubai"})
        assert receipt_doc(t, result.op, result.payload)["timezone"] == "Asia/Dubai"
    finally:
        t.close()


def test_hq_counts_each_sale_on_the_stores_day() -> None:
    store, store_key = "TZ1", Signer.from_seed(b"tz-store")
    signer = Signer.from_seed(b"tz-node")
    req = EnrolRequest(store, signer.node_id, "T1", signer.public_key, b"0" * 40, b"")
    cert = issue(store_key, store, req, now_ms=AT)
    record = NodeRecord(signer.node_id, signer.public_key, store, "T1", cert)
    cfg = NodeConfig(dir=Path("/nonexistent"), store=store, name="T1", node_id=signer.node_id)
    clock = [AT]
    t = Terminal(cfg, signer, Ledger(":memory:", store, durable=False), lambda: clock[0])
    hq = open_storage(":memory:")
    try:
        hq.enrolment.add_store(store, "tz", store_key.public_key, key_at_hq=False, now_ms=AT)
        hq.enrolment.add_nodes(store, [cert])
        t.import_catalog(list(CATALOG))
        t.sell([("TEE", 1)])
        hq.log.ingest(store, [o.wire() for o in t.ledger.ops_since({})], [record], AT)
        days = [(r["day"], r["sales"]) for r in hq.views.sales_by_day(store)]
        assert days == [("2025-10-03", 1)]  # IST, as the store's own report
        assert t.ledger.reports.daily_sales(t.store_time()) == {"2025-10-03": (1, 100_000)}
        # The store moves to UTC: sales arriving with or after the setting are dated by it.
        clock[0] = AT + 86_400_000
        t.append("setting.set", {"key": "store.timezone", "value": "UTC"})
        t.sell([("TEE", 1)])  # 2025-10-03 19:00 UTC
        hq.log.ingest(store, [o.wire() for o in t.ledger.ops_since(hq.log.vv(store))], [], AT)
        days = [(r["day"], r["sales"]) for r in hq.views.sales_by_day(store)]
        assert days == [("2025-10-03", 2)]
    finally:
        t.close()
        hq.close()
