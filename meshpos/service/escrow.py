"""Loyalty escrow across processes: a till asks its peers for redemption rights through the daemon.

The rule itself is in the fold (rights per customer and node, moved only by the holder's
`escrow.transfer` op) and in `Terminal.sell` (a redemption beyond this node's rights raises
`EscrowShortfall`). This module is the plumbing: a selling process writes an ask into the node's
database (`Ledger.escrow_asks`), the daemon sends it to every reachable peer as a sync Request, a
peer that holds rights answers with a transfer op, which replicates back; the seller waits
(bounded) and tries again.

Waiting has two forms over one loop: `EscrowSale.step` never blocks (async code, such as the web
till, awaits between steps), and `sell_with_escrow` is the blocking loop the CLI uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict, Unpack

from meshpos.core.errors import RemoteError
from meshpos.domain.escrow import EscrowShortfall
from meshpos.domain.pricing import Tender
from meshpos.ledger.fold import CARD_FLOAT
from meshpos.service.cards import CardInput
from meshpos.service.daemon_link import daemon_status
from meshpos.service.terminal import SaleResult, Terminal

POLL_S = 0.005
"""How often a waiting sale looks whether the rights arrived."""


def ask(t: Terminal, customer_id: str, points: int) -> None:
    """Leave an ask for `points` of `customer_id`'s rights for the daemon to send to peers."""
    t.ledger.escrow_asks.add(customer_id, points, t.now_ms())


def take_unsent(t: Terminal) -> list[tuple[str, int]]:
    """For the daemon: asks not yet sent to peers (marked sent as they are taken)."""
    return t.ledger.escrow_asks.take_unsent()


def handle_need(t: Terminal, peer: str, body: Mapping[str, Any]) -> int:
    """A peer asks for rights: grant what this node holds, up to what was asked, to the peer or
    to the node named in `to` (the relay asks holders to hand rights to HQ for another store)."""
    customer, points, to = body.get("customer_id"), body.get("points"), body.get("to", peer)
    if not isinstance(customer, str) or not isinstance(points, int) or points <= 0:
        raise RemoteError(f"escrow request from {peer} is malformed")
    if points > 10_000_000:
        raise RemoteError(f"escrow request from {peer} asks for an implausible {points} points")
    if not isinstance(to, str) or t.ledger.public_key(to) is None:
        raise RemoteError(f"escrow request from {peer} names a node this store does not know")
    return t.grant_rights(customer, to, points)


@dataclass
class RightsWait:
    """Rights asked of the peers for one shortfall: what was asked, and until when to wait.

    The one place the wait's rules live (ask for what is missing, done once the terminal holds
    what the sale needs, given up at the deadline); `EscrowSale` steps through it for the CLI
    and the simulator, the text till blocks on it (`waited`), and the web till polls it from
    async code so its worker is never held."""

    terminal: Terminal
    short: EscrowShortfall
    deadline: float

    @classmethod
    def ask(
        cls,
        t: Terminal,
        short: EscrowShortfall,
        wait_ms: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> RightsWait:
        ask(t, short.customer, short.needed - max(short.held, 0))
        return cls(t, short, clock() + wait_ms / 1000)

    @classmethod
    def ask_if_answerable(
        cls, t: Terminal, short: EscrowShortfall, wait_ms: int
    ) -> RightsWait | None:
        """`ask` when someone can answer now, from the daemon's status (`worth_asking`: a LAN
        peer up, or HQ in reach); None when nobody can. The tills' form of the ask."""
        if not worth_asking(short, *reach(daemon_status(t.cfg.dir))):
            return None
        return cls.ask(t, short, wait_ms)

    def arrived(self) -> bool:
        return self.terminal.rights(self.short.customer) >= self.short.needed

    def expired(self, now: float) -> bool:
        return now >= self.deadline

    def waited(self) -> bool:
        """Block, polling, until the rights arrived (True) or the wait expired (False)."""
        while not self.arrived():
            if self.expired(time.monotonic()):
                return False
            time.sleep(POLL_S)
        return True


def worth_asking(short: EscrowShortfall, peers_up: bool, hq_up: bool) -> bool:
    """Whether anyone can answer an ask for `short` now: a LAN peer with a session, or HQ, of
    which the daemon claims what no peer holds (meshpos/node/core.py: never the card float, which
    HQ hands out itself). A store with one counter online reaches other stores' cards and points
    through HQ alone."""
    return peers_up or (hq_up and short.customer != CARD_FLOAT)


def reach(status: Mapping[str, Any]) -> tuple[bool, bool]:
    """(LAN peers up, HQ reachable) from the daemon's status ({} when none runs: neither)."""
    wan = status.get("wan")
    return bool(status.get("peers_up")), isinstance(wan, dict) and bool(wan.get("wan_ok"))


@dataclass
class EscrowSale:
    """One sale that may need rights another counter holds, rung by `ring` (`Terminal.sell`, or
    a till session's `complete`).

    `step()` rings it. On a shortfall that someone can answer (`worth_asking`) it asks once and
    returns None; later steps return None until this terminal holds the rights, then ring again. Past
    `wait_ms` after the ask, a step raises the shortfall. No step blocks; `clock` is seconds
    (monotonic) and only measures the wait.
    """

    terminal: Terminal
    ring: Callable[[], SaleResult]
    wait_ms: int = 1500
    peers_up: bool = True
    clock: Callable[[], float] = time.monotonic
    hq_up: bool = False
    _wait: RightsWait | None = field(default=None, init=False)

    @property
    def waiting(self) -> bool:
        """Whether the peers were asked and the rights have not arrived yet."""
        return self._wait is not None

    def step(self) -> SaleResult | None:
        wait = self._wait
        if wait is None:
            try:
                return self.ring()
            except EscrowShortfall as exc:
                if not worth_asking(exc, self.peers_up, self.hq_up):
                    raise
                self._wait = RightsWait.ask(self.terminal, exc, self.wait_ms, self.clock)
                return None
        if wait.arrived():
            self._wait = None
            return self.ring()
        if wait.expired(self.clock()):
            self._wait = None
            raise wait.short
        return None


class SellOptions(TypedDict, total=False):
    """`Terminal.sell`'s keyword arguments, as `sell_with_escrow` passes them on."""

    tenders: Sequence[Tender]
    customer: str | None
    discount: str | None
    line_discounts: Mapping[str, str] | None
    user: str | None
    card: CardInput | None
    buyer_gstin: str | None
    buyer_state: str | None
    allow_oversell: bool


def sell_with_escrow(
    t: Terminal,
    *,
    items: Sequence[tuple[str, int]],
    wait_ms: int = 1500,
    peers_up: bool = True,
    hq_up: bool = False,
    **options: Unpack[SellOptions],
) -> SaleResult:
    """`Terminal.sell`; when a points redemption (or card float) needs rights held elsewhere, ask
    the peers through the daemon and retry until the rights arrive or `wait_ms` passes. Blocks
    the calling thread; see `EscrowSale` for the form that does not."""
    sale = EscrowSale(
        t, lambda: t.sell(items, **options), wait_ms=wait_ms, peers_up=peers_up, hq_up=hq_up
    )
    while (result := sale.step()) is None:
        time.sleep(POLL_S)
    return result
