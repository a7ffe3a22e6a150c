"""A fast clock in the store (issue 13 item 9): its ops are not followed by the other counters'
HLCs, its node is flagged once (a `clock_ahead` conflict every replica shows until a manager
resolves it), and the till's banner names it instead of blaming this counter's clock."""

from __future__ import annotations

from ledger_helpers import catalog_rows, full_sync
from rulebook_helpers import MINUTE, make_nodes

from meshpos.core.clock import wall_of
from meshpos.service import counter_state
from meshpos.service.clocks import clocks_ahead, flag_clocks
from meshpos.service.counter_state import Counts

HOURS_2 = 120 * MINUTE


def test_a_fast_clock_is_flagged_once_and_drags_no_other_clock() -> None:
    nodes = make_nodes()
    t0, t1 = nodes["T0"], nodes["T1"]
    t0.terminal.import_catalog(catalog_rows(3))
    full_sync([t0, t1])
    t1.wall.ms += HOURS_2  # T1's clock runs two hours fast
    fast = t1.terminal.sell([("SKU0", 1)]).op
    full_sync([t0, t1])
    mine = t0.terminal.sell([("SKU1", 1)]).op
    assert wall_of(mine.hlc) < t0.wall.ms + MINUTE < wall_of(fast.hlc)  # not dragged along
    [flag] = flag_clocks(t0.terminal, [fast])
    assert flag.payload["node"] == t1.node_id and flag.payload["lead_ms"] >= HOURS_2 - MINUTE
    assert flag_clocks(t0.terminal, [fast]) == []  # flagged once while the conflict is open
    full_sync([t0, t1])
    for node in (t0, t1):
        [c] = [c for c in node.terminal.conflicts() if c["kind"] == "clock_ahead"]
        assert c["subject"] == t1.node_id and c["status"] == "open"
    assert clocks_ahead(t0.terminal) == [{"node": t1.node_id, "name": "T1",
                                           "lead_ms": flag.payload["lead_ms"]}]  # fmt: skip
    # T1's clock is set right; the manager records it; a fast op later flags it again.
    t1.wall.ms -= HOURS_2
    t0.terminal.resolve(f"clock_ahead:{t1.node_id}", "T1's date and time set right")
    assert clocks_ahead(t0.terminal) == []
    assert flag_clocks(t0.terminal, [fast])  # still more than 5 minutes ahead: flagged anew
    assert t0.ledger.verify() == []


def test_the_skew_allowed_is_the_mesh_setting() -> None:
    nodes = make_nodes()
    t0, t1 = nodes["T0"], nodes["T1"]
    t0.terminal.cfg.raw = {"mesh": {"max_skew_ms": 3 * HOURS_2}}
    t0.terminal.import_catalog(catalog_rows(3))
    full_sync([t0, t1])
    t1.wall.ms += HOURS_2
    fast = t1.terminal.sell([("SKU0", 1)]).op
    full_sync([t0, t1])
    assert flag_clocks(t0.terminal, [fast]) == []
    assert t0.terminal.sell([("SKU1", 1)]).op.hlc > fast.hlc  # within the skew: followed


def test_the_banner_names_the_fast_counter_not_this_one() -> None:
    now = 1_760_000_000_000
    status = {"peers": [], "clock_ahead": [{"node": "n2", "name": "T2", "lead_ms": HOURS_2}]}
    got = counter_state.state(status, Counts(9, 9, newest_ms=now + HOURS_2), node_id="me",
                              hq_url=None, now_ms=now)  # fmt: skip
    assert [a.key for a in got.alerts] == ["clock"]
    assert got.alerts[0].text.startswith("T2's clock is 2 h 0 min ahead of this counter's")
