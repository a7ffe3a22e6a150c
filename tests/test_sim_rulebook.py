"""The simulator's checks are shown to fire (issue 12, item 7).

- With the escrow defeated at the source (`escrow_check = false`: counters ring redemptions
  without checking the rights they hold, as tampered tills would), the two-floor split of
  floors-split-loyalty makes customers' points spent twice: the report says so from the ground
  truth of signed ops, and also lists the spends the fold gave no authority (the second line).
  With the check on, the same run has neither.
- A replica whose views are corrupted after the run makes the report say the views differ.
- HQ in the simulator is a `Ledger`: it judges ops with the same rule function as real HQ (the
  rulebook tests compare a Ledger and HQ's storage on the same ops).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meshpos.sim.engine import Simulation
from meshpos.sim.nodes import HQ
from meshpos.sim.report import build_report
from meshpos.sim.scenario import loads

pytestmark = pytest.mark.slow

SCENARIOS = Path(__file__).resolve().parents[1] / "meshpos" / "sim" / "scenarios"


def floors(escrow_check: bool) -> dict[str, Any]:
    text = (SCENARIOS / "floors-split-loyalty.toml").read_text()
    text = text.replace("[workload]", f"[workload]\nescrow_check = {str(escrow_check).lower()}")
    report: dict[str, Any] = Simulation(loads(text, "floors.toml")).run()
    return report


def test_with_the_escrow_defeated_the_double_spend_and_the_fold_s_refusals_are_reported() -> None:
    honest = floors(True)
    assert honest["ok"] and honest["invariants"]["no_double_spent_points"]
    assert honest["invariants"]["every_op_had_authority"]
    defeated = floors(False)
    assert not defeated["ok"]
    inv = defeated["invariants"]
    assert not inv["no_double_spent_points"] and not inv["every_op_had_authority"]
    assert inv["views_equal"] and inv["converged_after_final_heal"]
    spent = [v for v in defeated["violations"] if "points double-spent" in v]
    refused = [v for v in defeated["violations"] if "ops without authority" in v]
    assert spent and "redeemed" in spent[0] and "credited" in spent[0]
    assert refused and "(escrow)" in refused[0] and "but its counter held only" in refused[0]


HEAD = """
name = "t"
start = "12:00"
duration = "5m"
catalog_rows = 10
[workload]
shape = "flat"
sales_per_hour = 300
customers = 5
[[stores]]
name = "F"
counters = 3
"""


def test_a_replica_with_a_corrupted_view_is_reported() -> None:
    sim = Simulation(loads(HEAD, "t.toml"))
    clean = sim.run()
    assert clean["ok"] and clean["invariants"]["views_equal"]
    store = sim.stores[0]
    counter = store.roster.counters()[1]
    counter.ledger.conn.execute("UPDATE stock SET qty = qty + 1 WHERE rowid = 1")
    report = build_report(sim)
    assert not report["ok"] and not report["invariants"]["views_equal"]
    assert any("same ops but different views" in v for v in report["violations"])
    # HQ's copy is checked the same way against the counters'.
    store.nodes[HQ].ledger.conn.execute("UPDATE stock SET qty = qty - 1 WHERE rowid = 1")
    counter.ledger.conn.execute("UPDATE stock SET qty = qty - 1 WHERE rowid = 1")
    report = build_report(sim)
    assert not report["invariants"]["hq_equals_union_of_stores"]
