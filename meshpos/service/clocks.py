"""Clocks that run fast: an op stamped more than `[mesh] max_skew_ms` (5 minutes by default) ahead
of this terminal's clock is not followed (the terminal's HLC ignores it: `Terminal._followed_hlc`;
only a spend of rights such an op granted is stamped after it, as the escrow rule orders them)
and its node is flagged once, by a `clock.ahead` op: a `clock_ahead:<node>` conflict every replica
shows, with the till's banner and `meshpos status`, until a manager records that the clock was
set right. Without this one fast clock would drag every node's HLC ahead, so every counter's
last-writer-wins edits would lose to it and its receipts' times spread through the store."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from meshpos.core.ops import Op
from meshpos.ledger.fold import CLOCK_AHEAD
from meshpos.service.terminal import Terminal

KIND = "clock.ahead"


def flag_clocks(t: Terminal, ops: Iterable[Op]) -> list[Op]:
    """Flag each node with an op among `ops` whose own wall clock (`ts_ms`, which sales,
    returns and transfers carry) read too far ahead of this clock, unless it is flagged and
    not resolved yet; the flag ops signed. The wall time an op states, not its HLC: a counter
    whose HLC had to follow a fast one (a spend of points it granted) is not itself fast."""
    now = t.now_ms()
    bound = now + t.max_skew_ms
    fast: dict[str, tuple[int, Op]] = {}
    for op in ops:
        stamped = op.payload.get("ts_ms")
        if op.origin == t.node_id or type(stamped) is not int or stamped <= bound:
            continue
        held = fast.get(op.origin)
        if held is None or stamped > held[0]:
            fast[op.origin] = (stamped, op)
    if not fast or t.bootstrapping() or t.revoked() is not None:
        return []
    out = []
    for origin, (stamped, op) in sorted(fast.items()):
        found = t.ledger.views.conflict(f"{CLOCK_AHEAD}:{origin}")
        if found is not None and found["status"] == "open":
            continue
        lead = stamped - now
        body = {"node": origin, "op": f"{op.origin}:{op.seq}", "lead_ms": lead}
        out.append(t.append(KIND, body))
    return out


def clocks_ahead(t: Terminal) -> list[dict[str, Any]]:
    """The nodes flagged for a fast clock and not resolved: for the status and the banner."""
    names = {n.node_id: n.name for n in t.ledger.nodes()}
    return [
        {"node": c["subject"], "name": names.get(c["subject"], c["subject"]),
         "lead_ms": int(c["detail"].get("lead_ms", 0))}
        for c in t.conflicts()
        if c["kind"] == CLOCK_AHEAD
    ]  # fmt: skip
