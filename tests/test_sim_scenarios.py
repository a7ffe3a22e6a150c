"""Every shipped scenario, shortened to fit CI, runs through the real terminals, ledgers and sync
protocol and keeps its invariants; plus what each scenario is there to show (the HQ falling behind
during an outage and catching up, escrow refusing redemptions across a split, sales dying with a
disk only when no peer held them, a skewed clock's receipts), and byte-identical reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from meshpos.sim.engine import Simulation
from meshpos.sim.report import to_html, to_json
from meshpos.sim.scenario import load, shipped

pytestmark = pytest.mark.slow

SHORTEN = {
    "festive-wan-outage": 0.08,  # 12 h -> ~58 min, the outage ~14 min
    "floors-split-loyalty": 0.5,  # 2 h -> 1 h, a 10 min split
    "disk-dies-midday": 0.15,
    "flaky-wifi": 0.2,
    "clock-ahead": 0.2,
    "chain-regional-outage": 0.04,  # 50 stores x 12 min
}


@cache
def report(name: str) -> dict[str, Any]:
    sc = load(shipped()[name]).scaled(SHORTEN[name])
    return Simulation(sc).run()


def test_every_shipped_scenario_is_covered() -> None:
    assert set(shipped()) == set(SHORTEN)


@pytest.mark.parametrize("name", sorted(SHORTEN))
def test_shipped_scenario_keeps_its_invariants(name: str) -> None:
    r = report(name)
    assert r["violations"] == []
    assert r["ok"] and all(r["invariants"].values()), r["invariants"]
    assert r["ops"]["lost"] == 0
    assert r["workload"]["sales"] > 0
    assert r["convergence"]["heals_not_converged"] == 0
    assert r["series"]["t_s"][0] == 0 and len(r["series"]["t_s"]) > 5


def test_festive_outage_hq_falls_behind_and_catches_up() -> None:
    r = report("festive-wan-outage")
    outage_s = 3 * 3600 * SHORTEN["festive-wan-outage"]
    assert r["hq"]["max_lag_s"] > 0.8 * outage_s
    assert r["hq"]["max_ops_waiting"] > 100
    (caught,) = r["hq"]["catch_up_after_wan_s"]
    assert 0 < caught < 60
    assert r["stock"]["max_divergent_skus"] <= 2  # the LAN stays whole: counters agree
    assert r["series"]["hq_missing"][-1] == 0


def test_floor_split_refuses_redemptions_whose_points_are_upstairs() -> None:
    r = report("floors-split-loyalty")
    e = r["escrow"]
    assert e["asks"] > 0 and e["grants"] > 0 and e["redeemed_after_ask"] > 0
    assert e["double_spends_prevented"] > 0
    assert e["refused_rights_out_of_reach"] > 0
    assert r["invariants"]["no_double_spent_points"]
    (heal,) = [h for h in r["convergence"]["heals"] if h["what"] == "LAN healed"]
    assert heal["converged_after_s"] is not None and heal["converged_after_s"] < 10
    assert r["stock"]["max_divergent_skus"] > 0


def test_dead_disk_loses_only_what_no_peer_held() -> None:
    r = report("disk-dies-midday")
    assert r["ops"]["lost"] == 0
    assert r["ops"]["lost_with_dead_disk"] > 0  # T3's sales while its cable was out
    whats = [h["what"] for h in r["convergence"]["heals"]]
    assert "T2b replaces T2" in whats and "T3 restored from acked copy" in whats
    assert r["escrow"]["stranded_points_on_dead_terminals"] == 0  # T2 retired into T2b
    assert r["invariants"]["no_forked_chains"]


def test_flaky_wifi_converges_through_loss() -> None:
    r = report("flaky-wifi")
    n = r["network"]
    assert n["dropped"] > 0 and n["duplicated"] > 0 and n["reordered"] > 0
    copy = r["ops"]["second_copy_ms"]
    assert copy["p99"] > 10 * max(copy["p50"], 1)


def test_fast_clock_stamps_receipts_wrong_but_orders_ops() -> None:
    r = report("clock-ahead")
    t2 = r["clocks"]["nodes"]["BTQ/T2"]
    assert t2["skew_s"] == 7200 and t2["receipts_off_by_5min"] > 0
    assert t2["max_hlc_lead_s"] >= 7190
    assert r["clocks"]["nodes"]["BTQ/T1"]["receipts_off_by_5min"] == 0
    # Issue 13 item 9: T2 is flagged once, and its clock drags nobody's HLC: T3 never ran ahead,
    # T1 only for the sale that spent points T2 had granted it (stamped after the grant).
    assert r["conflicts"]["open"].get("clock_ahead") == 1
    assert "clock_ahead:" in r["conflicts"]["examples"][0]
    t1, t3 = r["clocks"]["nodes"]["BTQ/T1"], r["clocks"]["nodes"]["BTQ/T3"]
    assert t3["max_hlc_lead_s"] < 300 and t3["ops_hlc_ahead_5min"] == 0
    assert t1["ops_hlc_ahead_5min"] <= 2 < t1["ops_signed"] // 10


def test_chain_regional_outage_hits_only_the_north() -> None:
    r = report("chain-regional-outage")
    assert r["scenario"]["stores"] == 50
    catch_up = r["hq"]["catch_up_after_wan_s"]
    assert len(catch_up) == 10 and all(0 < s < 60 for s in catch_up)
    north = {p["store"] for p in r["per_store"] if p["region"] == "north"}
    lagging = {p["store"] for p in r["per_store"] if p["hq_lag_max_s"] > 60}
    assert lagging == north


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    sc = load(shipped()["floors-split-loyalty"]).scaled(0.15)
    a, b = Simulation(sc).run(), Simulation(sc).run()
    assert to_json(a) == to_json(b)
    assert to_html(a) == to_html(b)
    other = Simulation(sc, seed=sc.seed + 1).run()
    assert to_json(other) != to_json(a)


def test_html_report_is_one_file_with_plots() -> None:
    page = to_html(report("floors-split-loyalty"))
    assert page.count('src="data:image/png;base64,') >= 4
    assert "all invariants hold" in page and "floors-split-loyalty" in page


def test_reports_are_identical_across_processes_and_hash_seeds(tmp_path: Path) -> None:
    """Set and dict orders differ between processes (PYTHONHASHSEED): none may leak."""
    outputs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed
        args = ["disk-dies-midday", "--shorten", "0.06", "--json", "--quiet", "--out", str(out)]
        proc = subprocess.run(
            [sys.executable, "-c", "from meshpos.cli.app import main; main()", "sim", "run", *args],
            capture_output=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            timeout=300,
            check=True,
        )
        outputs.append((proc.stdout, (out / "report.html").read_bytes()))
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0][0])["ok"]
