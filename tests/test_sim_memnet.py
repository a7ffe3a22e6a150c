"""What MemNet adds for the simulator: link cuts that nest, nodes set apart (no session), and
reordering. Its lazy mode ticks a node at the node's own `next_deadline`, whose contract
tests/test_protocol_deadline.py checks."""

from __future__ import annotations

from mesh_helpers import Mesh

from meshpos.sync.memnet import LinkSpec, MemNet


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
