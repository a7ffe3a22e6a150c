"""Engine behaviours the shipped scenarios do not pin down: the relay hand-over, HQ bridging a
LAN split, a same-identity comeback that forks its chain (flagged, not hidden), a dead disk that
cannot die twice (a case the fuzzer found), the workload's shapes, and the report's arithmetic."""

from __future__ import annotations

import random
from typing import Any

from meshpos.sim.engine import Simulation
from meshpos.sim.scenario import loads
from meshpos.sim.workload import arrivals, shape_factor

HEAD = """
name = "t"
start = "12:00"
duration = "{duration}"
catalog_rows = 10
[workload]
shape = "flat"
sales_per_hour = {rate}
customers = 5
[[stores]]
name = "F"
counters = 3
"""


def run(faults: str, duration: str = "8m", rate: int = 300, hq: bool = True) -> dict[str, Any]:
    text = HEAD.format(duration=duration, rate=rate) + faults
    if not hq:
        text += "[hq]\nenabled = false\n"
    report: dict[str, Any] = Simulation(loads(text, "t.toml")).run()
    return report


def test_relay_dies_and_another_counter_takes_over_within_the_failover() -> None:
    first = run("")["hq"]["relay_history"][0]["node"]  # meshpos.domain.relay.elect: lowest node id
    r = run(f'[[faults]]\nat = "+2m"\nkind = "crash"\nnode = "{first}"\nduration = "4m"\n')
    assert r["ok"], r["violations"]
    history = [(h["node"], h["what"]) for h in r["hq"]["relay_history"]]
    assert history[:2] == [(first, "relaying"), (first, "stopped relaying")]
    assert history[2][0] != first and history[2][1] == "relaying"
    assert r["hq"]["max_lag_s"] < 10  # the store never stopped reaching HQ for long
    assert r["series"]["hq_missing"][-1] == 0


def test_a_split_lan_with_internet_on_both_sides_heals_through_hq() -> None:
    split = '[[faults]]\nat = "+1m"\nkind = "partition"\ngroups = [["T1"], ["T2", "T3"]]\nduration = "5m"\n'
    with_wan = run(split)
    without_wan = run(split + '[[faults]]\nat = "+50s"\nkind = "wan_down"\nduration = "6m"\n')
    assert with_wan["ok"] and without_wan["ok"]
    assert with_wan["stock"]["max_divergent_skus"] <= 2  # ops cross via HQ in about a second
    assert without_wan["stock"]["max_divergent_skus"] > 5


def test_coming_back_with_the_old_identity_while_a_holder_is_down_forks_the_chain() -> None:
    # T2 holds T1's latest ops and is down when T1's disk dies and T1 comes back as itself (no
    # HQ holds them either): before chain resets, T1's next ops reused seqs T2 holds (a fork).
    faults = """
[[faults]]
at = "+1m"
kind = "partition"
groups = [["T1", "T2"], ["T3"]]
duration = "3m"
[[faults]]
at = "+3m"
kind = "crash"
node = "T2"
duration = "6m"
[[faults]]
at = "+3m30s"
kind = "disk_death"
node = "T1"
replacement = "same"
restore = "empty"
after = "1m"
"""
    r = run(faults, duration="12m", hq=False)
    # Issue 13 item 8: the restored terminal's chain is reset (a new key, certified by the store
    # key, its old chain retired into the new one), so it cannot fork its own chain: T2's copies
    # of its last ops arrive later and count.
    assert r["ok"], r["violations"]
    assert r["invariants"]["no_forked_chains"]
    assert r["invariants"]["converged_after_final_heal"]
    assert r["network"]["rejected"].get("forked chain", 0) == 0
    assert "T1 restored from empty copy" in [h["what"] for h in r["convergence"]["heals"]]
    assert r["ops"]["lost"] == 0
    # The same story with a new identity for the replacement is safe too.
    safe = run(
        faults.replace('replacement = "same"', 'replacement = "new"'), duration="12m", hq=False
    )
    assert safe["ok"], safe["violations"]
    assert safe["ops"]["lost_with_dead_disk"] >= 0 and safe["ops"]["lost"] == 0


def test_a_dead_disk_cannot_die_again() -> None:
    # Found by the fuzzer: a second lose-tail crash while the first replacement was pending
    # restored the live terminal a second time from an empty acknowledgement.
    faults = """
[[faults]]
at = "+0s"
kind = "crash"
node = "F/T1"
duration = "85s"
lose_tail = true
[[faults]]
at = "+78s"
kind = "crash"
node = "F/T1"
duration = "3m"
lose_tail = true
"""
    r = run(faults, duration="4m")
    assert r["ok"], r["violations"]


def test_shapes_peak_and_arrivals_follow_them() -> None:
    assert shape_factor("festive", 19 * 3_600_000) == 1.0
    assert shape_factor("normal", 19 * 3_600_000) == 1.0
    assert shape_factor("normal", 10 * 3_600_000) < 0.5
    assert shape_factor("popup", 12 * 3_600_000 + 5 * 60_000) == 1.0
    assert shape_factor("popup", 12 * 3_600_000 + 40 * 60_000) == 0.25
    rng = random.Random(1)
    flat = arrivals(rng, 600, "flat", 0, 3_600_000)
    assert 500 < len(flat) < 700
    night = arrivals(random.Random(1), 600, "normal", 2 * 3_600_000, 3_600_000)
    evening = arrivals(random.Random(1), 600, "normal", 19 * 3_600_000, 3_600_000)
    assert len(night) * 5 < len(evening)
