"""Escrow planning: whom to ask for redemption rights, and for how much (pure)."""

from __future__ import annotations

NEED = "escrow.need"  # the sync Request kind of an ask for a customer's redemption rights


def plan_asks(need: int, holdings: dict[str, int]) -> dict[str, int]:
    """Which reachable peers to ask for how many points: the biggest known holders first, each
    for no more than it is known to hold, until the need is covered, so the rights that move are
    about what was asked (every peer asked for everything would each grant all of it). When what
    is known here does not cover the need (our view of others' rights can be stale), the rest is
    asked of every other reachable peer."""
    plan: dict[str, int] = {}
    left = need
    for peer, held in sorted(holdings.items(), key=lambda kv: (-kv[1], kv[0])):
        if left <= 0 or held <= 0:
            break
        plan[peer] = min(held, left)
        left -= plan[peer]
    if left > 0:
        for peer in sorted(holdings):
            if peer not in plan:
                plan[peer] = left
    return plan
