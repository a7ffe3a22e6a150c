"""What the simulator's report tells a person: each invariant with its result and how many things
it was checked on, oversells broken down by item with the counters involved, clock times in the
store's zone (HH:MM), no empty plots, and no "none" bullet under "all invariants hold"."""

from __future__ import annotations

from functools import cache
from typing import Any

from meshpos.domain.storetime import StoreTime
from meshpos.sim.engine import Simulation
from meshpos.sim.nodes import DAY_MS
from meshpos.sim.report import INVARIANTS, _hhmm, summary_rows, to_html, to_json
from meshpos.sim.scenario import loads

# Two counters, little stock and a split at 10:10: both sides sell the last units of some items.
SCENARIO = """
name = "little-stock-split"
seed = 3
start = "10:00"
duration = "30m"
sample_every = "30s"
catalog_rows = 12
stock_factor = 0.3

[hq]
enabled = false

[workload]
sales_per_hour = 120
loyalty_share = 0.0
redeem_share = 0.0
return_share = 0.0
receipts_per_hour = 0

[[stores]]
name = "S"
counters = 2
groups = { a = ["T1"], b = ["T2"] }

[[faults]]
at = "10:10"
kind = "partition"
groups = ["a", "b"]
duration = "10m"
"""


@cache
def report() -> dict[str, Any]:
    return Simulation(loads(SCENARIO, "test")).run()


def test_each_invariant_is_listed_with_its_result_and_how_often_it_was_checked() -> None:
    r = report()
    checks = r["invariant_checks"]
    assert [c["invariant"] for c in checks] == [key for key, _, _ in INVARIANTS]
    by = {c["invariant"]: c for c in checks}
    assert all(c["holds"] for c in checks) and r["ok"]
    assert by["converged_after_final_heal"]["checked"] == 2  # two counters, no HQ
    assert by["hq_equals_union_of_stores"] == {**by["hq_equals_union_of_stores"], "checked": 0}
    assert by["no_lost_acknowledged_ops"]["checked"] == r["ops"]["signed"] > 0
    assert (
        by["no_forked_chains"]["checked"] > 0 and by["no_forked_chains"]["unit"] == "ops received"
    )
    rows = [row for row in summary_rows(r) if row[0] == "invariants"]
    assert len(rows) == len(INVARIANTS)
    assert ("invariants", "every replica converged after the final heal",
            "holds: 2 replicas checked") in rows  # fmt: skip


def test_oversells_are_broken_down_by_item_with_the_counters_involved() -> None:
    r = report()
    by_sku = r["conflicts"]["oversells_by_sku"]
    assert len(by_sku) == r["conflicts"]["oversells"] > 0
    for o in by_sku:
        assert o["stock"] < 0 and o["counters"] and set(o["counters"]) <= {"T1", "T2"}
        assert set(o["counters"]) <= set(o["sold_by"]) and sum(o["sold_by"].values()) > 0
    assert any(len(o["counters"]) == 2 for o in by_sku)  # both sides of the split sold them
    first = by_sku[0]
    row = next(x for x in summary_rows(r) if x[1] == f"oversold {first['sku']}")
    assert row[2] == f"stock {first['stock']}, taken below 0 by {', '.join(first['counters'])}"
    page = to_html(r)
    assert "<h2>Oversells by item</h2>" in page and f"<td>{first['sku']}</td>" in page


def test_the_page_says_what_held_without_an_empty_bullet_and_draws_no_empty_plot() -> None:
    page = to_html(report())
    assert "all invariants hold" in page and "<li>none</li>" not in page and "<ul>" not in page
    assert "<td>no chain forked (one seq signed twice)</td><td>holds</td>" in page
    assert "from 10:00 IST" in page
    # no HQ in this store: its lag is not plotted, and the page says so
    assert "<h3>HQ lag</h3>" not in page and "Not plotted, nothing happened: HQ lag" in page
    assert "<h3>Divergence of stock views between counters</h3>" in page


def test_times_are_the_stores_clock() -> None:
    assert StoreTime().day_start(StoreTime().local(DAY_MS).date()) == DAY_MS  # IST midnight
    assert (_hhmm(13.25), _hhmm(9.999), _hhmm(24.5)) == ("13:15", "10:00", "00:30")
    assert report()["scenario"]["zone"] == "IST"


def test_same_seed_same_bytes() -> None:
    again = Simulation(loads(SCENARIO, "test")).run()
    assert to_json(again) == to_json(report()) and to_html(again) == to_html(report())
