"""Where a customer's redeemable points are, and the words a refused redemption is put in.

The rule is the escrow's (a counter redeems only the rights it holds: the fold's, and
`Terminal.check_redeem` at the source). This names the customer, each counter holding the rest,
and whether this counter can reach it now (from its daemon's status), so the cashier knows at the
Redeem step whether to wait for a peer, redeem fewer points or take another payment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from meshpos.core.errors import LocalError
from meshpos.domain import giftcards
from meshpos.domain.escrow import EscrowShortfall
from meshpos.domain.money import rupees
from meshpos.ledger.fold import CARD_FLOAT
from meshpos.service.daemon_link import daemon_status
from meshpos.service.terminal import Terminal

REACHABLE = "reachable"
UNREACHABLE = "not reachable now"
NO_DAEMON = "cannot be asked: this counter's sync service is not running"


@dataclass(frozen=True)
class Holder:
    """A counter holding some of a customer's redeemable points."""

    name: str
    points: int
    reach: str


class RedeemRefused(EscrowShortfall):
    """A redemption beyond this counter's rights, explained; still an EscrowShortfall, so a
    till that can ask its peers for the rights does so and tries again. `card`: the rights are
    a gift card's or credit note's balance (paise), not a customer's points."""

    def __init__(
        self, short: EscrowShortfall, name: str, holders: list[Holder], *, card: bool = False
    ) -> None:
        self.customer, self.needed, self.held = short.customer, short.needed, short.held
        self.holders = holders
        here = max(short.held, 0)
        amount: Callable[[int], str] = rupees if card else str
        where = "; ".join(f"{h.name} holds {amount(h.points)} ({h.reach})" for h in holders)
        may = (
            f"spend only {rupees(here)} of it now"
            if card
            else f"redeem only {here} of their points now"
        )
        nowhere = (  # no counter here holds any: only HQ can move it from another store
            "No counter of this store holds any of it: another store's card is spent through HQ"
            if card
            else "No counter of this store holds any of them: points from another store come "
            "through HQ"
        )
        todo = (
            (f"Take at most {rupees(here)} from the card, or another payment" if card
             else f"Redeem at most {here}, or take another payment")
            if here
            else "Take another payment, or redeem at the counter holding "
            + ("it" if card else "them")
            if holders
            else f"{nowhere}. Take another payment"
        )  # fmt: skip
        LocalError.__init__(
            self,
            f"{name}: {amount(short.needed)}{'' if card else ' points'} asked, but this counter "
            f"may {may}. "
            + (f"The rest {'is' if card else 'are'} held elsewhere: {where}. " if where else "")
            + todo,
        )


def holders(t: Terminal, customer_id: str) -> list[Holder]:
    """The other counters holding this customer's rights, and whether they can be asked now."""
    status = daemon_status(t.cfg.dir)
    up = {str(p.get("name")): bool(p.get("up")) for p in status.get("peers") or []}
    out = []
    for name, points in t.rights_elsewhere(customer_id).items():
        if points <= 0:
            continue
        reach = NO_DAEMON if not status else REACHABLE if up.get(name) else UNREACHABLE
        out.append(Holder(name, points, reach))
    return out


def explain(t: Terminal, short: EscrowShortfall) -> EscrowShortfall:
    """The shortfall in the cashier's words (a card-float shortfall already is)."""
    if short.customer == CARD_FLOAT or isinstance(short, RedeemRefused):
        return short
    if giftcards.is_key(short.customer):
        code = giftcards.code_of(short.customer)
        return RedeemRefused(short, f"card {code}", holders(t, short.customer), card=True)
    try:
        name = str(t.customer(short.customer)["name"])
    except LocalError:
        name = "the customer"
    return RedeemRefused(short, f"{name} ({short.customer})", holders(t, short.customer))
