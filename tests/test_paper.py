"""Paper sales (issue 15 item 5): sales written on paper slips while every counter was down,
entered with `meshpos paper add` or the web till's Paper screen. They keep their own numbering
(the terminal's receipt numbers stay gapless), count in reports at the time on the slip, and are
marked as paper entries in the audit trail."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from conftest import Node
from test_front_doors import Store, WebDoor, recording, store

from meshpos.core.clock import wall_ms
from meshpos.domain.storetime import StoreTime

__all__ = ["store"]  # the front doors' store fixture

ZONE = StoreTime.named("Asia/Kolkata")


def hours_ago(h: float) -> tuple[str, int]:
    """A slip's time `h` hours ago, as written ('YYYY-MM-DD HH:MM') and in ms (to the minute)."""
    ms = (wall_ms() - int(h * 3_600_000)) // 60_000 * 60_000
    return ZONE.local(ms).strftime("%Y-%m-%d %H:%M"), ms


def test_paper_sales_keep_their_own_numbers_and_the_till_s_stay_gapless(
    node: Node, tmp_path: Path
) -> None:
    node.ok("store", "init")  # a store key, to check the audit export with
    first = node.sell("TSH-NAV-M")
    at, ms = hours_ago(3)
    paper = node.json("paper", "add", "TSH-NAV-Mx2", "JNS-BLA-L", "--slip", "17", "--at", at,
                      "--total", "4497")  # fmt: skip
    second = node.json("paper", "add", "TSH-NAV-M", "--slip", "18", "--at", at,
                       "--pay", "upi", "--upi-ref", "412345678901")  # fmt: skip
    after = node.sell("TSH-NAV-M")
    assert (first["number"], after["number"]) == (1, 2)
    assert (paper["sale_id"], second["sale_id"]) == ("S1-T1-P00001", "S1-T1-P00002")
    assert paper["number"] == 0 and paper["ts_ms"] == ms
    assert paper["paper"] == {"id": "S1-T1-P00001", "number": 1, "slip": "17", "written_ms": ms}
    assert second["tenders"][0]["upi_ref"] == "412345678901"
    assert node.qty("TSH-NAV-M") == 28 - 5  # the goods left the shop
    listed = node.json("paper", "list")
    assert [(r["sale_id"], r["slip"]) for r in listed] == [
        ("S1-T1-P00002", "18"), ("S1-T1-P00001", "17")
    ]  # fmt: skip
    # the audit trail marks them, and its receipt numbers run without a gap
    tail = node.json("ops", "tail", "-n", "4")
    assert [r["summary"].split(":")[0] for r in tail[1:3]] == ["PAPER slip 17", "PAPER slip 18"]
    day = ZONE.day(wall_ms())
    start = ZONE.day(ms)
    out = tmp_path / "audit.json"
    node.ok("audit", "export", "--from", start, "--to", day, "--out", str(out))
    doc = json.loads(out.read_text())
    marked = [o for origin in doc["content"]["origins"] for o in origin["ops"] if "paper" in o]
    assert [o["paper"]["slip"] for o in marked] == ["17", "18"]
    key = tomllib.loads((node.path / "meshpos.toml").read_text())["store"]["public_key"]
    checked = node.json("audit", "check", str(out), "--store-key", key)
    assert checked["ok"] and checked["problems"] == []


def test_a_paper_sale_counts_in_reports_at_the_time_on_the_slip(node: Node) -> None:
    at, ms = hours_ago(26)
    node.ok("paper", "add", "JNS-BLA-L", "--slip", "A-3", "--at", at)
    node.sell("TSH-NAV-M")
    by_day = {r["key"]: r["count"] for r in node.json("report", "sales", "--by", "day")}
    assert by_day[ZONE.day(ms)] == 1 and by_day[ZONE.day(wall_ms())] == 1
    by_hour = {r["key"] for r in node.json("report", "sales", "--by", "hour")}
    assert ZONE.hour(ms) in by_hour


def test_bad_slips_are_refused_and_nothing_is_recorded(node: Node) -> None:
    at, _ = hours_ago(1)
    node.ok("paper", "add", "TSH-NAV-M", "--slip", "17", "--at", at)
    before = node.vv()
    said = node.fail("paper", "add", "TSH-NAV-M", "--slip", "17", "--at", at)
    assert "paper slip 17 was already entered, as sale S1-T1-P00001" in said
    later, _ = hours_ago(-1)
    assert "is in the future" in node.fail("paper", "add", "TSH-NAV-M", "--slip", "19",
                                           "--at", later)  # fmt: skip
    assert "more than 31 days ago" in node.fail(
        "paper", "add", "TSH-NAV-M", "--slip", "19", "--at", hours_ago(24 * 40)[0]
    )
    assert "give the time written on the slip" in node.fail(
        "paper", "add", "TSH-NAV-M", "--slip", "19", "--at", "yesterday"
    )
    said = node.fail("paper", "add", "TSH-NAV-M", "--slip", "19", "--at", at, "--total", "999")
    assert "the slip says ₹999.00 but these items come to ₹1,249.00" in said
    assert "type the number written" in node.fail("paper", "add", "TSH-NAV-M", "--slip", "a b",
                                                  "--at", at)  # fmt: skip
    assert node.vv() == before


def test_the_web_paper_screen_enters_a_slip(store: Store) -> None:
    web = WebDoor(store)
    try:
        page = web.c.get("/paper")
        assert page.status_code == 200 and 'id="paper-form"' in page.text
        at, ms = hours_ago(2)
        form = {"slip": "77", "written": at.replace(" ", "T"), "items": "TSH-NAV-Mx2\nCAP",
                "method": "card_machine", "approval": "A1B2C3", "last4": "4242"}  # fmt: skip
        with recording(store.t1.path) as op:
            html = web.c.post("/paper/add", data=form, headers={"x-fragment": "1"}).text
        assert "paper slip 77 entered as S1-T1-P00001" in html
        assert 'data-sale="S1-T1-P00001"' in html
        p = op[0].payload if op[0] is not None else {}
        assert p["paper"]["slip"] == "77" and p["ts_ms"] == ms and op[0].user == "ana"
        assert p["tenders"][0]["card_approval"] == "A1B2C3"
        again = web.c.post("/paper/add", data=form, headers={"x-fragment": "1"}).text
        assert "already entered" in again and 'data-level="error"' in again
    finally:
        web.close()


def test_a_paper_entry_reaches_the_other_counter_which_refuses_the_slip_too(
    pair: tuple[Node, Node],
) -> None:
    t1, t2 = pair
    at, _ = hours_ago(1)
    t1.ok("paper", "add", "TSH-NAV-M", "--slip", "5", "--at", at)
    t1.ok("sync", "export", str(t1.path / "p.bundle"))
    t2.ok("sync", "import", str(t1.path / "p.bundle"))
    assert "already entered, as sale S1-T1-P00001" in t2.fail(
        "paper", "add", "TSH-NAV-M", "--slip", "5", "--at", at
    )
    assert t2.json("paper", "add", "TSH-NAV-M", "--slip", "6", "--at", at)["sale_id"] == (
        "S1-T2-P00001"
    )
    assert t2.sell("TSH-NAV-M")["number"] == 1
