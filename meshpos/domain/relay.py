"""The relay's pure rules: who relays, how long to back off, what one push carries, what to grant.

Election: among the terminals that can reach HQ (each says so in its sync pings), the one with the
lowest node id relays. Every node computes the same answer from what it sees, so exactly one relays
at a time once the mesh agrees. The worker that acts on these is `meshpos.node.relay`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ASK_QUIET_S = 15.0  # after serving HQ's ask for a customer, let the grant reach HQ before again


def elect(me: str, my_wan: bool, peers_wan: Mapping[str, bool]) -> str | None:
    """The node that relays, as seen from `me`; None when nobody can reach HQ."""
    candidates = sorted([p for p, ok in peers_wan.items() if ok] + ([me] if my_wan else []))
    return candidates[0] if candidates else None


def backoff_ms(attempt: int, base_ms: int = 500, cap_ms: int = 30_000) -> int:
    """Delay before retry number `attempt` (1, 2, ...): doubling from `base_ms`, capped."""
    return int(min(cap_ms, base_ms * 2 ** max(0, attempt - 1)))


def ops_missing(ours: Mapping[str, int], theirs: Mapping[str, int]) -> int:
    """How many ops of `ours` the holder of version vector `theirs` lacks."""
    return sum(max(0, s - theirs.get(o, 0)) for o, s in ours.items())


def take_batch(sizes: list[int], max_ops: int, max_bytes: int) -> int:
    """How many of the leading ops (of these wire sizes) go in one push: at least one, at most
    `max_ops`, and no more than `max_bytes` unless the first op alone is bigger."""
    total = 0
    for n, size in enumerate(sizes[:max_ops]):
        total += size
        if total > max_bytes and n > 0:
            return n
    return min(len(sizes), max_ops)


def plan_grants(
    asks: list[dict[str, Any]], me: str, recent: Mapping[str, float], now: float
) -> tuple[list[tuple[str, int]], list[tuple[str, str, int]]]:
    """What this store does with HQ's open asks: (customer, points) this node grants to HQ itself,
    and (peer, customer, points) to ask of the peers that hold the rest. Customers served less
    than ASK_QUIET_S ago are left alone: their grant is on its way to HQ."""
    mine: list[tuple[str, int]] = []
    theirs: list[tuple[str, str, int]] = []
    for ask in asks:
        customer, wanted, holders = ask.get("customer_id"), ask.get("points"), ask.get("holders")
        if not isinstance(customer, str) or not isinstance(wanted, int) or wanted <= 0:
            continue
        if not isinstance(holders, dict) or now - recent.get(customer, -1e18) < ASK_QUIET_S:
            continue
        for node in sorted(holders, key=lambda n: (n != me, n)):
            held = holders[node]
            if wanted <= 0 or not isinstance(held, int) or held <= 0:
                continue
            take = min(held, wanted)
            wanted -= take
            if node == me:
                mine.append((customer, take))
            else:
                theirs.append((str(node), customer, take))
    return mine, theirs
