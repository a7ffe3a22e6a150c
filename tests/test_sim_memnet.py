"""MemNet's lazy mode (the simulator's) against its eager mode (the tests'): a lazy run skips the
ticks where no timer is due, so it must send the same messages at the same simulated times, and
end in the same state, as an eager run of the same seed; plus the link cuts, peering and
reordering the simulator adds."""

from __future__ import annotations

from typing import Any

import pytest
from mesh_helpers import Mesh

from meshpos.sync.memnet import LinkSpec, MemNet
from meshpos.sync.protocol import Action, Send


def _drive(lazy: bool, seed: int) -> tuple[list[tuple[int, str, str, int]], dict[str, Any]]:
    link = LinkSpec(latency_ms=3, jitter_ms=4, loss=0.08, duplicate=0.05, reorder=0.05)
    mesh = Mesh(4, seed=seed, link=link)
    mesh.net.lazy = lazy
    for nid in mesh.net.nodes:
        mesh.net.touch(nid)
    trace: list[tuple[int, str, str, int]] = []

    def watch(nid: str, action: Action) -> None:
        if isinstance(action, Send):
            trace.append((mesh.net.now, nid, action.peer, len(action.data)))

    mesh.watch(watch)
    mesh.settle()
    c = mesh.customers[0]
    for k in range(12):
        mesh.sell(k % 4, [(f"SKU{k % 8}", 1)])
        mesh.net.run_for(700 + 97 * k)
        if k == 3:
            mesh.partition([0, 1], [2, 3])
        if k == 5:
            mesh.stop(2)
        if k == 7:
            mesh.heal()
            mesh.restart(2)
        if k == 8:
            mesh.net.cut(mesh.nodes[0].node_id, mesh.nodes[3].node_id)
        if k == 9:
            mesh.earn(1, c, 50)
            mesh.ask_rights(3, c, 20)
            mesh.net.touch(mesh.nodes[3].node_id)
        if k == 10:
            mesh.net.restore(mesh.nodes[0].node_id, mesh.nodes[3].node_id)
    mesh.net.run_for(20_000)
    state = {
        "vv": [n.ledger.vv() for n in mesh.nodes],
        "views": [mesh.views(i) for i in range(4)],
        "stats": (mesh.net.stats.messages, mesh.net.stats.dropped, mesh.net.stats.delivered),
        "now": mesh.net.now,
    }
    return trace, state


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lazy_ticks_send_what_eager_ticks_send(seed: int) -> None:
    eager_trace, eager = _drive(False, seed)
    lazy_trace, lazy = _drive(True, seed)
    assert len(eager_trace) > 500
    assert lazy_trace == eager_trace
    assert lazy == eager
    first = eager["vv"][0]
    assert all(vv == first for vv in eager["vv"])


def test_cuts_nest_and_unpeered_nodes_stop_talking() -> None:
    mesh = Mesh(3, seed=5)
    net = mesh.net
    a, b, c = (n.node_id for n in mesh.nodes)
    net.lazy = True
    mesh.settle()
    net.cut(a, b)
    net.cut(a, b)
    net.restore(a, b)
    assert not net.reachable(a, b) and net.reachable(a, c)
    net.restore(a, b)
    assert net.reachable(a, b)
    net.unpeer(a, c)
    assert c not in net.nodes[a].sessions and a not in net.nodes[c].sessions
    before = {k: v for k, v in net.stats.wire_bytes.items() if set(k) == {a, c}}
    net.run_for(10_000)
    assert c not in net.nodes[a].sessions, "a dialled a node it was set apart from"
    assert {k: v for k, v in net.stats.wire_bytes.items() if set(k) == {a, c}} == before
    assert b in net.nodes[a].ready_peers()
    net.peer(a, c)
    net.run_for(2000)
    assert c in net.nodes[a].ready_peers()


def test_reorder_holds_messages_back() -> None:
    net = MemNet(seed=3, link=LinkSpec(latency_ms=5, reorder=0.5, reorder_ms=100))
    mesh = Mesh(2, seed=3)
    net.nodes, net.up = mesh.net.nodes, mesh.net.up
    for _ in range(200):
        net.send(mesh.nodes[0].node_id, mesh.nodes[1].node_id, b"x")
    late = sum(1 for at, *_ in net._queue if at > 5)
    assert net.stats.reordered == late
    assert 60 < late < 140
