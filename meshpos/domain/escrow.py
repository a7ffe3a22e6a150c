"""Escrow: the shortfall a counter meets when rights it needs are held elsewhere, and whom to ask
for them, for how much (pure)."""

from __future__ import annotations

from collections.abc import Mapping

from meshpos.core.errors import LocalError

NEED = "escrow.need"  # the sync Request kind of an ask for a customer's redemption rights


class EscrowShortfall(LocalError):
    """A redemption needs more points than this terminal holds rights to (loyalty escrow)."""

    def __init__(self, customer: str, needed: int, held: int, elsewhere: Mapping[str, int]) -> None:
        self.customer, self.needed, self.held = customer, needed, held
        where = ", ".join(f"{name} {pts}" for name, pts in elsewhere.items()) or "no other counter"
        super().__init__(
            f"only {max(held, 0)} of customer {customer}'s points can be redeemed at this counter "
            f"now ({needed} asked); the rest are held by {where}. Ask again when those counters "
            "are reachable, or redeem fewer points"
        )


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
