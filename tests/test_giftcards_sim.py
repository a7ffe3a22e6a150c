"""Gift cards in the outage simulator (issue 15 item 1): the two-floor store of
floors-split-loyalty, with gift cards sold at opening and spent on both floors while the switch
between them is down. With the escrow checked at the source no card pays more than its value
(judged from the ground truth of signed ops) and spends were refused or waited for rights; with
the check defeated, as tampered tills would, the report says cards were spent twice and the fold
gave those spends no authority."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meshpos.sim.engine import Simulation
from meshpos.sim.scenario import loads

pytestmark = pytest.mark.slow

SCENARIOS = Path(__file__).resolve().parents[1] / "meshpos" / "sim" / "scenarios"


def floors(escrow_check: bool) -> dict[str, Any]:
    text = (SCENARIOS / "floors-split-loyalty.toml").read_text()
    workload = (
        f"[workload]\nescrow_check = {str(escrow_check).lower()}\ngiftcards = 8\n"
        "giftcard_share = 0.1\nredeem_share = 0.0\n"
    )
    text = text.replace("[workload]", workload).replace("redeem_share = 0.25\n", "")
    report: dict[str, Any] = Simulation(loads(text, "floors-giftcards.toml")).run()
    return report


def test_gift_cards_spent_on_both_sides_of_a_split_are_never_spent_twice() -> None:
    honest = floors(True)
    inv = honest["invariants"]
    assert honest["ok"], honest["violations"]
    assert inv["no_double_spent_giftcards"] and inv["every_op_had_authority"]
    checked = {i["invariant"]: i["checked"] for i in honest["invariant_checks"]}
    assert checked["no_double_spent_giftcards"] >= 8
    # during the split: cards held on the other floor were refused, others came after an ask
    held = honest["escrow"]
    assert held["double_spends_prevented"] > 0 and held["refused_rights_out_of_reach"] > 0
    assert held["redeemed_after_ask"] > 0
    defeated = floors(False)
    inv = defeated["invariants"]
    assert not inv["no_double_spent_giftcards"] and not inv["every_op_had_authority"]
    assert inv["views_equal"] and inv["converged_after_final_heal"]
    spent = [v for v in defeated["violations"] if "gift cards double-spent" in v]
    assert spent and "given" in spent[0] and "spent" in spent[0]
    refused = [v for v in defeated["violations"] if "ops without authority" in v]
    assert refused and "gift card" in refused[0]
