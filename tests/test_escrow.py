"""The escrow wait as steps: a sale short of rights asks the peers once, waits without blocking,
rings once the rights arrive, and gives up after its wait."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from mesh_helpers import Mesh

from meshpos.domain.escrow import EscrowShortfall
from meshpos.domain.pricing import Tender
from meshpos.ledger.fold import CARD_FLOAT
from meshpos.service import escrow
from meshpos.service.escrow import EscrowSale
from meshpos.service.terminal import SaleResult, Terminal


@dataclass
class Seconds:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


def points_store() -> tuple[Mesh, str]:
    """Three counters; 300 points of one customer whose rights are all at T1."""
    mesh = Mesh(3)
    cid = mesh.customers[0]
    mesh.net.run_for(500)
    mesh.earn(1, cid, 300)
    assert mesh.settle() >= 0
    return mesh, cid


def redeeming(t: Terminal, cid: str, points: int) -> SaleResult:
    return t.sell([("SKU1", 1)], customer=cid, tenders=[Tender("points", points), Tender("cash")])


def relay_asks(mesh: Mesh, i: int) -> list[tuple[str, int]]:
    """What the daemon does: send the asks a selling process left to the peers."""
    asks = escrow.take_unsent(mesh.nodes[i].terminal)
    for customer, points in asks:
        mesh.ask_rights(i, customer, points)
    mesh.net.run_for(50)
    return asks


def test_a_short_sale_asks_once_then_rings_when_the_rights_arrive() -> None:
    mesh, cid = points_store()
    t = mesh.nodes[2].terminal
    clock = Seconds()
    sale = EscrowSale(t, lambda: redeeming(t, cid, 200), wait_ms=2000, clock=clock)
    assert sale.step() is None and sale.waiting
    assert sale.step() is None  # still short: no second ask
    assert relay_asks(mesh, 2) == [(cid, 200)]
    clock.now += 1.0
    result = sale.step()
    assert result is not None and result.payload["points_redeemed"] == 200
    assert not sale.waiting and t.sale(result.sale_id)["points_redeemed"] == 200


def test_a_short_sale_gives_up_after_its_wait_with_the_shortfall() -> None:
    mesh, cid = points_store()
    mesh.partition([1], [0, 2])
    t = mesh.nodes[2].terminal
    clock = Seconds()
    sale = EscrowSale(t, lambda: redeeming(t, cid, 100), wait_ms=1500, clock=clock)
    assert sale.step() is None
    relay_asks(mesh, 2)  # T1, the holder, is unreachable: nothing comes back
    clock.now += 1.4
    assert sale.step() is None
    clock.now += 0.2
    with pytest.raises(EscrowShortfall, match="held by T1 300"):
        sale.step()
    assert t.ledger.views.sales("T2-000001") == []


def test_without_peers_the_shortfall_is_raised_at_once_and_nothing_is_asked() -> None:
    mesh, cid = points_store()
    t = mesh.nodes[2].terminal
    sale = EscrowSale(t, lambda: redeeming(t, cid, 100), peers_up=False, clock=Seconds())
    with pytest.raises(EscrowShortfall):
        sale.step()
    assert escrow.take_unsent(t) == []


def test_with_hq_alone_in_reach_the_shortfall_is_asked_so_the_daemon_claims_it_from_hq() -> None:
    """A counter with no LAN peer up but HQ in reach (a one-counter store online) still asks: its
    daemon claims from HQ what no peer holds (meshpos/node/core.py). The card float is never
    claimed from HQ, so a card-float shortfall is not asked."""
    mesh, cid = points_store()
    t = mesh.nodes[2].terminal
    sale = EscrowSale(
        t, lambda: redeeming(t, cid, 100), peers_up=False, hq_up=True, clock=Seconds()
    )
    assert sale.step() is None and sale.waiting
    assert escrow.take_unsent(t) == [(cid, 100)]
    float_short = EscrowShortfall(CARD_FLOAT, 5_000, 0, {})
    assert not escrow.worth_asking(float_short, peers_up=False, hq_up=True)
    assert escrow.worth_asking(float_short, peers_up=True, hq_up=False)


@pytest.mark.parametrize(
    ("status", "seen"),
    [
        ({}, (False, False)),  # no daemon running
        ({"peers_up": 2, "wan": None}, (True, False)),  # no HQ configured
        ({"peers_up": 0, "wan": {"wan_ok": True}}, (False, True)),
        ({"peers_up": 1, "wan": {"wan_ok": False}}, (True, False)),
    ],
)
def test_reach_reads_lan_peers_and_hq_from_the_daemons_status(
    status: dict[str, object], seen: tuple[bool, bool]
) -> None:
    assert escrow.reach(status) == seen


def test_sell_with_escrow_is_the_blocking_loop_over_the_steps() -> None:
    mesh, cid = points_store()
    t = mesh.nodes[2].terminal
    with pytest.raises(EscrowShortfall):
        escrow.sell_with_escrow(
            t,
            items=[("SKU1", 1)],
            customer=cid,
            tenders=[Tender("points", 100), Tender("cash")],
            wait_ms=20,
        )
    assert escrow.take_unsent(t) == [(cid, 100)]
    result = escrow.sell_with_escrow(t, items=[("SKU1", 1)], wait_ms=20)
    assert result.payload["total"] > 0
