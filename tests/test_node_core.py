"""The node core (meshpos/node/core.py), the daemon's logic with no socket, thread or clock: what it
does with escrow asks and grants, copy acks, the relay election, the bootstrap check, print
requests and its timers; and the daemon and the simulator wire it alike: one trace of messages,
ticks and till actions fed to the daemon's core and to the simulator's gives the same actions.

Node 0 of a `Mesh` runs a `NodeCore` here; its peers are the mesh's bare sync nodes, which grant
escrow asks the way mesh_helpers does."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import pytest
from mesh_helpers import EPOCH_MS, Mesh

from meshpos.core.errors import LocalError
from meshpos.core.ops import Signer
from meshpos.domain.escrow import NEED
from meshpos.ledger.store import Ledger
from meshpos.node.core import (
    AskedPeers,
    BootstrapDone,
    ClaimFromHq,
    CopyAcked,
    Elected,
    Granted,
    NodeAction,
    NodeCore,
    ProbeHq,
    RequestRefused,
    WakeRelay,
)
from meshpos.node.daemon import node_core
from meshpos.service import escrow
from meshpos.service.terminal import Terminal
from meshpos.sim.nodes import NodeClock, SimNode, counter_core
from meshpos.sim.replica import CachedReplica
from meshpos.sync.memnet import LinkSpec
from meshpos.sync.protocol import Applied, PeerUp, Request, Send, Session, SyncConfig, encode

Till = Callable[[Terminal], object]


def admit_all(node: object) -> None:
    return None


def core_mesh(n: int = 3, *, seed: int = 1, link: LinkSpec | None = None) -> tuple[Mesh, NodeCore]:
    """A mesh whose node 0 runs the daemon's core (node_core), started now."""
    mesh = Mesh(n, seed=seed, link=link)
    t = mesh.nodes[0].terminal
    core = node_core(t, t.node_record(), epoch=mesh.net.now, admit=admit_all)
    mesh.net.replace(core)
    return mesh, core


def watch(mesh: Mesh, nid: str) -> list[NodeAction]:
    seen: list[NodeAction] = []
    mesh.watch(lambda who, action: seen.append(action) if who == nid else None)
    return seen


def ring(mesh: Mesh, core: NodeCore, till: Till) -> None:
    """A till action at node 0, then the commit noticed as the daemon notices one."""
    till(mesh.nodes[0].terminal)
    mesh.net.local_changed(core.me.node_id)


def earn_here(mesh: Mesh, core: NodeCore, customer: str, points: int) -> None:
    """Points earned at node 0: its redemption rights."""
    payload = {"customer_id": customer, "delta": points, "reason": "promotion"}
    ring(mesh, core, lambda t: t.append("loyalty.adjust", payload))


# -- escrow ------------------------------------------------------------------------------------


def test_a_tills_ask_goes_to_the_peer_holding_the_rights_for_what_it_holds() -> None:
    mesh, core = core_mesh(3)
    c = mesh.customers[0]
    mesh.earn(1, c, 50)
    mesh.earn(2, c, 10)
    assert mesh.settle() >= 0
    seen = watch(mesh, core.me.node_id)
    ring(mesh, core, lambda t: escrow.ask(t, c, 40))
    node1 = mesh.nodes[1].node_id
    assert AskedPeers(c, 40, 1) in seen
    asks = [a for a in seen if isinstance(a, Send)]
    assert [a.peer for a in asks] == [node1]
    mesh.net.run_for(500)
    assert mesh.settle() >= 0
    mine = mesh.nodes[0].terminal
    assert mine.rights(c) == 40  # node 1 granted it; node 2 was not asked for its 10
    assert mesh.nodes[2].terminal.rights(c) == 10
    assert escrow.take_unsent(mine) == []  # the ask was taken once


def test_a_peers_ask_is_granted_from_this_nodes_rights_and_pushed() -> None:
    mesh, core = core_mesh(3)
    c = mesh.customers[1]
    earn_here(mesh, core, c, 30)
    assert mesh.settle() >= 0
    seen = watch(mesh, core.me.node_id)
    assert mesh.ask_rights(1, c, 20) == 2
    mesh.net.run_for(500)
    assert mesh.settle() >= 0
    assert Granted(mesh.nodes[1].node_id, c, 20) in seen
    assert mesh.nodes[1].terminal.rights(c) == 20  # the transfer op reached the asker
    assert mesh.nodes[0].terminal.rights(c) == 10


def test_a_malformed_or_unknown_request_is_refused_not_served() -> None:
    mesh, core = core_mesh(2)
    assert mesh.settle() >= 0
    mesh.net.run_for(2000)
    peer = mesh.nodes[1].node_id
    for kind, body, why in ((NEED, {"customer_id": 7}, "malformed"), ("print.nope", {}, "unknown")):
        actions = core.receive(peer, encode(Request(kind, body)), mesh.net.now)
        (refused,) = [a for a in actions if isinstance(a, RequestRefused)]
        assert refused.peer == peer and refused.kind == kind and why in refused.reason
        assert not any(isinstance(a, Granted) for a in actions)


def test_a_node_still_bootstrapping_refuses_to_grant() -> None:
    mesh, core = core_mesh(2)
    c = mesh.customers[0]
    earn_here(mesh, core, c, 30)
    assert mesh.settle() >= 0
    mesh.nodes[0].terminal.set_bootstrapping(True)
    seen = watch(mesh, core.me.node_id)
    mesh.ask_rights(1, c, 20)
    mesh.net.run_for(500)
    (refused,) = [a for a in seen if isinstance(a, RequestRefused)]
    assert "getting its history back" in refused.reason
    assert mesh.nodes[0].terminal.rights(c) == 30


# -- copy acks ---------------------------------------------------------------------------------


def test_each_peer_acknowledging_our_ops_is_reported_once_per_new_seq() -> None:
    mesh, core = core_mesh(3)
    mesh.net.run_for(2000)
    seen = watch(mesh, core.me.node_id)
    ring(mesh, core, lambda t: t.sell([("SKU1", 1)]))
    seq = mesh.nodes[0].ledger.head(core.me.node_id)[0]
    mesh.net.run_for(8000)  # several anti-entropy Haves repeat the same acks
    acks = [a for a in seen if isinstance(a, CopyAcked)]
    assert sorted((a.peer, a.seq) for a in acks) == sorted(
        (mesh.nodes[i].node_id, seq) for i in (1, 2)
    )
    assert core.peers[mesh.nodes[1].node_id].vv[core.me.node_id] == seq


# -- the bootstrap check -----------------------------------------------------------------------


def test_a_restored_terminal_signs_again_only_after_listening_and_catching_up() -> None:
    mesh = Mesh(3, seed=3)
    for k in range(4):
        mesh.sell(0, [(f"SKU{k}", 1)])
    assert mesh.settle() >= 0
    old = mesh.nodes[0]
    head = old.ledger.head(old.node_id)[0]
    mesh.stop(0)
    fresh = Ledger(":memory:", mesh.store, durable=False)
    t = Terminal(old.terminal.cfg, old.signer, fresh, now_ms=mesh.now_ms)
    t.set_bootstrapping(True)
    mesh.nodes[0] = replace(old, terminal=t)
    start = mesh.net.now
    core = node_core(t, t.node_record(), epoch=start, admit=admit_all)
    seen = watch(mesh, core.me.node_id)
    mesh.net.replace(core)
    listen = core.sync.config.dead_after_ms
    mesh.net.run_for(listen - 500)
    assert core.ready_peers() and fresh.head(old.node_id)[0] == head  # caught up already...
    assert not any(isinstance(a, BootstrapDone) for a in seen)  # ...but still listening
    assert core.next_deadline(mesh.net.now) <= start + listen
    with pytest.raises(LocalError):
        t.sell([("SKU1", 1)])
    mesh.net.run_for(1000)
    assert BootstrapDone(head) in seen
    assert not t.bootstrapping()
    t.sell([("SKU1", 1)])  # the next seq is free: no fork


def test_a_peer_holding_more_of_our_chain_keeps_us_bootstrapping() -> None:
    mesh = Mesh(2, seed=5)
    old = mesh.nodes[0]
    t = Terminal(old.terminal.cfg, old.signer, Ledger(":memory:", mesh.store, durable=False))
    t.set_bootstrapping(True)
    listened = SyncConfig().dead_after_ms
    core = node_core(t, t.node_record(), epoch=0, admit=admit_all)
    peer = mesh.nodes[1].node_id
    session = Session(peer, created=0, ready=True, their_vv={old.node_id: 1})
    session.last_heard = session.last_sent = session.last_have = listened
    core.sync.sessions[peer] = session  # the peer said it holds our op 1; we hold none
    assert not any(isinstance(a, BootstrapDone) for a in core.tick(listened + 1))
    assert core.ready_peers() == [peer] and t.bootstrapping()
    session.their_vv = {}  # it holds none either: nothing of ours is missing
    assert BootstrapDone(0) in core.tick(listened + 2)
    assert not t.bootstrapping()


# -- the relay election ------------------------------------------------------------------------


def test_the_relay_is_elected_by_the_wan_flag_peers_gossip() -> None:
    mesh, core = core_mesh(3)
    mesh.net.run_for(2000)
    me = core.me.node_id
    peers = {i: mesh.nodes[i].node_id for i in (1, 2)}
    lowest = min([me, *peers.values()])
    first = core.relay_status(mesh.net.now, wan=False, pushing=False)
    assert Elected(None, False, True, False, False) in first  # nobody reaches HQ
    for i in (1, 2):  # both peers reach HQ now; we do not
        sync = mesh.sync_node(i)
        mesh.net._do(peers[i], sync.set_flags(mesh.net.now, wan=True))
    mesh.net.run_for(100)
    actions = core.relay_status(mesh.net.now, wan=False, pushing=False)
    assert ProbeHq() in actions  # a peer found HQ: look now
    chosen = min(peers.values())
    assert Elected(chosen, False, True, False, True) in actions
    actions = core.relay_status(mesh.net.now, wan=True, pushing=False)
    (elected,) = [a for a in actions if isinstance(a, Elected)]
    assert elected.relay == lowest and elected.me == (lowest == me)
    assert not elected.first and elected.changed == (lowest == me)
    assert ProbeHq() not in actions
    sends = [a for a in actions if isinstance(a, Send)]
    assert {a.peer for a in sends} == set(peers.values())  # our wan flag, to every peer


def test_the_relay_is_woken_by_new_ops_and_claims_what_no_peer_holds() -> None:
    mesh, core = core_mesh(2)
    mesh.net.run_for(2000)
    c = mesh.customers[0]
    mesh.earn(1, c, 15)
    assert mesh.settle() >= 0
    # Nobody relays yet: a new op wakes nobody.
    seen = watch(mesh, core.me.node_id)
    ring(mesh, core, lambda t: t.sell([("SKU1", 1)]))
    assert WakeRelay() not in seen
    core.relay_status(mesh.net.now, wan=True, pushing=False)
    assert core.relay == core.me.node_id  # the peer never said it reaches HQ
    ring(mesh, core, lambda t: t.sell([("SKU2", 1)]))
    assert WakeRelay() in seen
    ring(mesh, core, lambda t: escrow.ask(t, c, 40))
    assert ClaimFromHq(c, 25) in seen  # 15 of the 40 are held by a peer on the LAN


# -- print jobs between peers ------------------------------------------------------------------


@dataclass
class FakePrinting:
    """A printing service that hands one job to a peer on its first tick."""

    core: NodeCore | None = None
    peer: str = ""
    sent: list[bool] = field(default_factory=list)
    taken: list[tuple[str, str]] = field(default_factory=list)

    def tick(self, now_ms: int) -> None:
        if self.core is not None and not self.sent:
            self.sent.append(self.core.send_request(self.peer, "print.job", {"jobs": []}))

    def on_request(self, peer: str, kind: str, body: Mapping[str, object], now_ms: int) -> bool:
        if not kind.startswith("print."):
            return False
        self.taken.append((peer, kind))
        return True


def test_print_requests_go_out_with_the_tick_and_come_in_to_printing() -> None:
    mesh, core = core_mesh(2)
    mesh.net.run_for(2000)
    peer = mesh.nodes[1].node_id
    printing = FakePrinting(core, peer)
    core.printing = printing
    now = mesh.net.now
    assert core.next_deadline(now) <= now + 250
    actions = core.tick(now + 300)
    assert printing.sent == [True]
    assert any(isinstance(a, Send) and a.peer == peer for a in actions)
    actions = core.receive(peer, encode(Request("print.ack", {"acks": []})), now + 301)
    assert printing.taken == [(peer, "print.ack")]
    assert not any(isinstance(a, RequestRefused) for a in actions)


# -- the daemon's wiring and the simulator's run the same core alike ---------------------------


@dataclass(frozen=True)
class Call:
    at: int
    what: str
    args: tuple[object, ...]
    result: object


class Recorder:
    """An endpoint on the network that passes every call to a core and writes it down."""

    def __init__(self, core: NodeCore, now: Callable[[], int]) -> None:
        self.core = core
        self.now = now
        self.calls: list[Call] = []

    @property
    def me(self) -> object:
        return self.core.me

    @property
    def sessions(self) -> Mapping[str, Session]:
        return self.core.sessions

    def _log(self, what: str, args: tuple[object, ...], result: object) -> object:
        self.calls.append(Call(self.now(), what, args, result))
        return result

    def connect(self, peer: str, now: int) -> object:
        return self._log("connect", (peer, now), self.core.connect(peer, now))

    def disconnect(self, peer: str) -> object:
        return self._log("disconnect", (peer,), self.core.disconnect(peer))

    def receive(self, peer: str, data: bytes, now: int) -> object:
        return self._log("receive", (peer, data, now), self.core.receive(peer, data, now))

    def tick(self, now: int) -> object:
        return self._log("tick", (now,), self.core.tick(now))

    def local_changed(self, now: int) -> object:
        return self._log("local_changed", (now,), self.core.local_changed(now))

    def next_deadline(self, now: int) -> int:
        due = self.core.next_deadline(now)
        self._log("next_deadline", (now,), due)
        return due

    def till(self, t: Terminal, action: Till) -> None:
        self.calls.append(Call(self.now(), "till", (action,), None))
        action(t)


def twin(ledger: Ledger, cfg_terminal: Terminal, signer: Signer, clock: list[int]) -> Terminal:
    """A copy of a terminal's database under the same key, on a clock the replay sets."""
    copy = Ledger(":memory:", ledger.store, durable=False)
    ledger.conn.backup(copy.conn)
    return Terminal(cfg_terminal.cfg, signer, copy, now_ms=lambda: EPOCH_MS + clock[0])


def replay(calls: Sequence[Call], core: NodeCore, t: Terminal, clock: list[int]) -> list[object]:
    out: list[object] = []
    for call in calls:
        clock[0] = call.at
        if call.what == "till":
            (action,) = call.args
            assert callable(action)
            action(t)
            out.append(None)
        else:
            out.append(getattr(core, call.what)(*call.args))
    return out


def test_the_daemons_core_and_the_simulators_answer_one_trace_alike() -> None:
    link = LinkSpec(latency_ms=3, jitter_ms=4, loss=0.05, duplicate=0.02, reorder=0.05)
    mesh = Mesh(3, seed=11, link=link)
    mesh.net.lazy = True  # the simulator's mode: the network asks for deadlines
    for n in mesh.nodes:
        mesh.net.touch(n.node_id)
    subject = mesh.nodes[0]
    c, d = mesh.customers[0], mesh.customers[1]
    mesh.earn(1, c, 60)
    mesh.earn(2, d, 40)
    mesh.net.run_for(50)
    start = mesh.net.now
    clock = [start]
    daemon_side = twin(subject.ledger, subject.terminal, subject.signer, clock)
    other_side = twin(subject.ledger, subject.terminal, subject.signer, clock)
    # The simulator's wiring, over the mesh's own terminal for node 0, started now.
    node = SimNode(
        "T0",
        "T0",
        "counter",
        subject.signer,
        subject.terminal,
        CachedReplica(subject.ledger),
        NodeClock(EPOCH_MS),
        epoch=start,
    )
    recorder = Recorder(counter_core(node, SyncConfig(), start), lambda: mesh.net.now)
    mesh.net.replace(recorder)
    nid = subject.node_id

    def at_till(action: Till) -> None:
        recorder.till(subject.terminal, action)
        mesh.net.local_changed(nid)

    for k in range(24):
        at_till(lambda t, k=k: t.sell([(f"SKU{k % 8}", 1)]))
        mesh.net.run_for(300 + 37 * k)
        if k == 4:
            at_till(lambda t: escrow.ask(t, c, 45))  # node 1 holds them
        if k == 6:
            at_till(
                lambda t: t.append(
                    "loyalty.adjust", {"customer_id": d, "delta": 90, "reason": "promotion"}
                )
            )
        if k == 9:
            mesh.ask_rights(2, d, 30)  # node 2 asks us: a grant
        if k == 12:
            mesh.partition([0], [1, 2])
        if k == 16:
            mesh.heal()
        if k == 19:
            mesh.stop(2)
    mesh.net.run_for(6000)
    calls = recorder.calls
    expected = [call.result for call in calls]
    actions = [a for result in expected if isinstance(result, list) for a in result]
    kinds = {type(a) for a in actions}
    assert {Send, PeerUp, Applied, AskedPeers, Granted, CopyAcked} <= kinds, kinds
    assert any(isinstance(a, Granted) and a.points == 30 for a in actions)
    assert any(
        c.what == "next_deadline" and isinstance(c.result, int) and c.result > c.at for c in calls
    )

    daemon_core = node_core(daemon_side, daemon_side.node_record(), epoch=start, admit=admit_all)
    assert replay(calls, daemon_core, daemon_side, clock) == expected
    assert daemon_side.ledger.vv() == subject.ledger.vv()

    # The comparison has teeth: the same core at another protocol timing answers otherwise.
    other = node_core(other_side, other_side.node_record(), epoch=start, admit=admit_all)
    other.sync.config = replace(other.sync.config, ping_ms=800)
    assert replay(calls, other, other_side, clock) != expected
