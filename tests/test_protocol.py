"""The sans-IO sync protocol, driven with no socket: SyncNodes paired by hand (bytes shuttled
between them, h11 style) or wired to the seeded in-memory network."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import TypeVar

import pytest
from ledger_helpers import rebuilt, signed_with_raw_payload
from mesh_helpers import Mesh, signer

from meshpos.core.ops import Op, decode_op, make_op
from meshpos.domain.enrolment import NodeRecord
from meshpos.domain.escrow import EscrowShortfall
from meshpos.domain.pricing import Tender
from meshpos.ledger.store import Ledger
from meshpos.sync.memnet import LinkSpec
from meshpos.sync.messages import (
    MAX_BATCH_OPS,
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    Error,
    Have,
    Hello,
    Ops,
    Ping,
    decode,
    encode,
)
from meshpos.sync.protocol import (
    Action,
    Applied,
    PeerComplained,
    PeerUp,
    Rejected,
    Send,
    SyncConfig,
    SyncNode,
)

Log = list[tuple[str, Action]]
A = TypeVar("A")


class Wire:
    """Two or more SyncNodes joined by hand: every Send is queued and delivered in order."""

    def __init__(self, *nodes: SyncNode) -> None:
        self.nodes = {n.me.node_id: n for n in nodes}
        self.queue: deque[tuple[str, str, bytes]] = deque()
        self.log: Log = []
        self.now = 0

    def do(self, nid: str, actions: Iterable[Action]) -> None:
        for action in actions:
            self.log.append((nid, action))
            if isinstance(action, Send):
                self.queue.append((nid, action.peer, action.data))

    def connect(self, a: SyncNode, b: SyncNode) -> None:
        self.do(a.me.node_id, a.connect(b.me.node_id, self.now))

    def run(self, limit: int = 10_000) -> None:
        for _ in range(limit):
            if not self.queue:
                return
            src, dst, data = self.queue.popleft()
            self.now += 1
            if dst in self.nodes:
                self.do(dst, self.nodes[dst].receive(src, data, self.now))
        raise AssertionError("the nodes kept talking")

    def deliver(self, src: str, dst: str, data: bytes) -> list[Action]:
        actions = self.nodes[dst].receive(src, data, self.now)
        self.do(dst, actions)
        return actions

    def of(self, kind: type[A], nid: str | None = None) -> list[A]:
        return [a for n, a in self.log if isinstance(a, kind) and nid in (None, n)]


def test_flags_set_before_the_handshake_reach_both_peers_without_an_idle_ping() -> None:
    """Each side says its flags (whether it reaches HQ) once its session is up; a busy link
    never idles long enough for a keepalive Ping, so that first word is the one that counts.
    The answering side's must come after its Hello, or the asker, not ready yet, drops it and
    elects a relay that cannot reach HQ (tests/test_relay_hq.py caught it on real daemons)."""
    mesh = Mesh(2)
    a, b = sync_nodes(mesh, 0, 1)
    wire = Wire(a, b)
    wire.do(a.me.node_id, a.set_flags(wire.now, wan=True))
    wire.do(b.me.node_id, b.set_flags(wire.now, wan=True, pushing=False))
    for asker, answerer in ((a, b), (b, a)):
        wire.connect(asker, answerer)
        wire.run()  # no tick: only what the handshake itself sends
        assert asker.peer_flag("wan") == {answerer.me.node_id: True}
        assert answerer.peer_flag("wan") == {asker.me.node_id: True}
        wire.do(asker.me.node_id, asker.disconnect(answerer.me.node_id))
        wire.do(answerer.me.node_id, answerer.disconnect(asker.me.node_id))


def test_a_peer_learns_changed_flags_from_a_have_when_no_ping_reaches_it() -> None:
    """On a busy link no idle Ping goes out, and a Ping may be lost: the next Have says the
    flags that changed since the last one to that peer, and every periodic Have says them."""
    mesh = Mesh(2)
    cfg = SyncConfig(anti_entropy_ms=2000)  # due before the peer counts as silent
    a, b = (
        SyncNode(mesh.nodes[i].ledger, mesh.node_record(i), epoch=1, config=cfg) for i in (0, 1)
    )
    wire = Wire(a, b)
    wire.connect(a, b)
    wire.run()
    a.set_flags(wire.now, wan=True)  # its Pings are lost: nothing sent reaches b
    assert b.peer_flag("wan") == {a.me.node_id: False}
    wire.now += cfg.anti_entropy_ms
    sent = a.tick(wire.now)
    haves = [
        m for m in (decode(x.data) for x in sent if isinstance(x, Send)) if isinstance(m, Have)
    ]
    assert [h.flags for h in haves] == [(("wan", True),)]
    wire.do(
        a.me.node_id,
        [x for x in sent if not (isinstance(x, Send) and isinstance(decode(x.data), Ping))],
    )
    wire.run()
    assert b.peer_flag("wan") == {a.me.node_id: True}
    mesh.nodes[1].terminal.sell([("SKU1", 1)])  # a acknowledges b's sale with a Have
    start = len(wire.log)
    wire.do(b.me.node_id, b.local_changed(wire.now))
    wire.run()
    acks = [
        m
        for nid, x in wire.log[start:]
        if nid == a.me.node_id and isinstance(x, Send) and isinstance(m := decode(x.data), Have)
    ]
    assert acks and all(h.flags is None for h in acks)  # unchanged since the last: not repeated


def sync_nodes(mesh: Mesh, *idx: int) -> list[SyncNode]:
    """Fresh SyncNodes over some of a mesh's ledgers, not attached to its network."""
    return [SyncNode(mesh.nodes[i].ledger, mesh.node_record(i), epoch=1) for i in idx]


def errors_sent(actions: Iterable[Action], to: str) -> list[Error]:
    out = []
    for a in actions:
        if isinstance(a, Send) and a.peer == to:
            msg = decode(a.data)
            if isinstance(msg, Error):
                out.append(msg)
    return out


def assert_same_views(mesh: Mesh, among: Iterable[int] | None = None) -> None:
    idx = list(among) if among is not None else list(range(len(mesh.nodes)))
    first = mesh.views(idx[0])
    for i in idx[1:]:
        assert mesh.views(i) == first, f"T{i} differs from T{idx[0]}"
    for i in idx:
        assert mesh.nodes[i].ledger.verify() == []


# -- pairing by hand --------------------------------------------------------------------------


def test_two_nodes_exchange_hellos_and_converge() -> None:
    mesh = Mesh(2)
    mesh.nodes[0].terminal.sell([("SKU1", 2)])
    mesh.nodes[1].terminal.sell([("SKU2", 1)])
    a, b = sync_nodes(mesh, 0, 1)
    wire = Wire(a, b)
    wire.connect(a, b)
    wire.run()
    assert [p.peer for p in wire.of(PeerUp, a.me.node_id)] == [b.me.node_id]
    assert [p.peer for p in wire.of(PeerUp, b.me.node_id)] == [a.me.node_id]
    assert not wire.of(Rejected)
    assert a.ready_peers() == [b.me.node_id] and b.ready_peers() == [a.me.node_id]
    assert mesh.converged()
    assert_same_views(mesh)
    assert mesh.nodes[1].ledger.public_key(a.me.node_id) == a.me.public_key
    # Each side applied exactly the sale it lacked, once.
    applied = {n: [op.id for x in wire.of(Applied, n) for op in x.ops] for n in wire.nodes}
    assert applied[a.me.node_id] == [(b.me.node_id, 1)]
    assert len(applied[b.me.node_id]) == 1
    # Both sides know the other holds everything: every op has two copies.
    assert a.copies(mesh.nodes[0].ledger.head(a.me.node_id)[0]) == 2
    assert b.copies(1) == 2


def test_hello_from_a_newer_protocol_version_is_refused_with_no_session() -> None:
    mesh = Mesh(2)
    a, b = sync_nodes(mesh, 0, 1)
    wire = Wire(a, b)
    b.connect(a.me.node_id, 0)  # B's session waits for A's answer; B's own Hello is replaced:
    hello = Hello(PROTOCOL_VERSION + 1, "S1", b.me.as_row(), b.replica.vv(), 1, True)
    actions = wire.deliver(b.me.node_id, a.me.node_id, encode(hello))
    assert [e.code for e in errors_sent(actions, b.me.node_id)] == ["version"]
    assert any(isinstance(x, Rejected) and "version" in x.reason for x in actions)
    assert b.me.node_id not in a.sessions
    assert not a.ready_peers()
    # The peer is told why.
    wire.run()
    complaints = wire.of(PeerComplained, b.me.node_id)
    assert [c.code for c in complaints] == ["version"]


def test_node_of_another_store_is_refused_both_ways() -> None:
    mesh = Mesh(2)
    outsider = signer(9, "other-store")
    ledger = Ledger(":memory:", "S2", durable=False)
    rec = NodeRecord(outsider.node_id, outsider.public_key, "S2", "X")
    ledger.add_node(rec)
    x = SyncNode(ledger, rec, epoch=1)
    (a,) = sync_nodes(mesh, 0)
    wire = Wire(a, x)
    wire.connect(x, a)
    wire.connect(a, x)
    wire.run()
    assert not a.ready_peers() and not x.ready_peers()
    reasons = [r.reason for r in wire.of(Rejected, a.me.node_id)]
    assert reasons and all("store" in r for r in reasons)
    assert ledger.vv() == {}
    assert a.replica.public_key(outsider.node_id) is None
    # A hello that names our store but carries another store's node record is refused too.
    (a2,) = sync_nodes(mesh, 0)
    lying = Hello(PROTOCOL_VERSION, "S1", rec.as_row(), {}, 1, True)
    actions = a2.receive(outsider.node_id, encode(lying), 0)
    assert [e.code for e in errors_sent(actions, outsider.node_id)] == ["refused"]
    assert not a2.sessions


def test_hello_claiming_another_node_id_than_the_link_is_refused() -> None:
    mesh = Mesh(3)
    a, b = sync_nodes(mesh, 0, 1)
    impostor = mesh.nodes[2].node_id
    hello = Hello(PROTOCOL_VERSION, "S1", b.me.as_row(), b.replica.vv(), 1, True)
    actions = a.receive(impostor, encode(hello), 0)
    assert [e.code for e in errors_sent(actions, impostor)] == ["refused"]
    rejected = [x for x in actions if isinstance(x, Rejected)]
    assert rejected and "authenticated" in rejected[0].reason
    assert not a.sessions
    assert a.replica.public_key(b.me.node_id) is None


def test_garbage_from_an_unknown_address_opens_no_session() -> None:
    mesh = Mesh(1)
    (a,) = sync_nodes(mesh, 0)
    actions = a.receive("intruder", b"\xc1\xff garbage", 0)
    assert [e.code for e in errors_sent(actions, "intruder")] == ["malformed"]
    assert any(isinstance(x, Rejected) for x in actions)
    assert not a.sessions
    # An Error from nowhere is not answered (no error ping-pong).
    assert a.receive("intruder", encode(Error("malformed", "x")), 1) == []


# -- refusals on a running mesh ---------------------------------------------------------------


def test_admit_refuses_a_node_and_the_others_keep_syncing() -> None:
    outsider = signer(7, "unenrolled")

    def admit(node: NodeRecord) -> str | None:
        return "no certificate for this store" if node.node_id == outsider.node_id else None

    mesh = Mesh(3, admit=lambda i: admit)
    x = mesh.add_node(outsider, "X")
    note = x.terminal.append("note", {"text": "let me in"})
    mesh.net.local_changed(x.node_id)
    mesh.net.run_for(3000)
    sale = mesh.sell(1, [("SKU3", 1)])
    mesh.net.run_for(500)
    members = [0, 1, 2]
    assert mesh.converged(members)
    assert all(lg.get(sale.op.origin, sale.op.seq) is not None for lg in mesh.ledgers(members))
    for lg in mesh.ledgers(members):
        assert lg.public_key(x.node_id) is None
        assert lg.get(note.origin, note.seq) is None
    refusals = [r for r in mesh.net.stats.rejected if r[1] == x.node_id]
    assert {r[0] for r in refusals} == {mesh.nodes[i].node_id for i in members}
    assert all("no certificate" in r[2] for r in refusals)
    # The outsider got nothing of the store's data.
    assert x.ledger.vv() == {x.node_id: 1}
    for i in members:
        assert x.node_id not in mesh.sync_node(i).ready_peers()
    assert_same_views(mesh, members)


def test_a_node_one_peer_refuses_does_not_block_ops_forwarded_with_it() -> None:
    """T0 refuses X; T1 admits it and forwards its ops to T0 along with its own. T0 refuses X's
    part and still takes the rest, and keeps taking T1's and T2's later sales."""
    outsider = signer(8, "half-enrolled")

    def strict(node: NodeRecord) -> str | None:
        return "revoked" if node.node_id == outsider.node_id else None

    mesh = Mesh(3, admit=lambda i: strict if i == 0 else None)
    x = mesh.add_node(outsider, "X")
    mesh.partition([0, 2], [1, x.index])
    for k in range(5):
        x.terminal.append("note", {"k": k})
        mesh.sell(1, [("SKU1", 1)])
    mesh.net.run_for(1000)
    mesh.heal()
    mesh.net.run_for(3000)
    later = [mesh.sell(1, [("SKU2", 1)]), mesh.sell(2, [("SKU3", 1)])]
    mesh.net.run_for(3000)
    t0 = mesh.nodes[0].ledger
    t0_id, t1_id = mesh.nodes[0].node_id, mesh.nodes[1].node_id
    assert x.node_id in mesh.nodes[1].ledger.vv()
    assert any(r[:2] == (t0_id, t1_id) and "revoked" in r[2] for r in mesh.net.stats.rejected)
    assert t0.public_key(x.node_id) is None
    assert x.node_id not in t0.vv()
    for sale in later:
        assert t0.get(sale.op.origin, sale.op.seq) is not None
    assert t0.vv() == {k: v for k, v in mesh.nodes[1].ledger.vv().items() if k != x.node_id}
    assert mesh.sync_node(0).ready_peers() == sorted(mesh.nodes[i].node_id for i in (1, 2))


def test_garbage_from_a_peer_is_refused_and_other_sessions_carry_on() -> None:
    mesh = Mesh(3)
    mesh.net.run_for(500)
    a, b, c = (mesh.nodes[i].node_id for i in range(3))
    seen: Log = []
    mesh.watch(lambda nid, act: seen.append((nid, act)))
    mesh.net.send(c, a, b"\x93\x01\x02")  # a msgpack list, not a message
    mesh.net.send(c, a, b"\xc1")  # not msgpack at all
    mesh.net.run_for(5)
    refused = [act for nid, act in seen if nid == a and isinstance(act, Rejected)]
    assert len(refused) == 2 and all(r.peer == c for r in refused)
    complaints = [act for nid, act in seen if nid == c and isinstance(act, PeerComplained)]
    assert [x.code for x in complaints] == ["malformed", "malformed"]
    assert mesh.sync_node(0).ready_peers() == sorted([b, c])
    s1 = mesh.sell(1, [("SKU1", 1)])
    s2 = mesh.sell(2, [("SKU2", 1)])
    mesh.net.run_for(50)
    for sale in (s1, s2):
        assert mesh.nodes[0].ledger.get(sale.op.origin, sale.op.seq) is not None
    assert_same_views(mesh)


def _forgeries(mesh: Mesh) -> dict[str, Callable[[list[Op]], list[Op]]]:
    """Ways to corrupt a run of T1's new ops [k+1, k+2] before T0 sees them."""
    s1 = mesh.nodes[1].signer
    other = signer(5, "thief")

    def bad_signature(ops: list[Op]) -> list[Op]:
        last = ops[-1]
        return [*ops[:-1], rebuilt(last, sig=bytes(64 - 1) + b"\x01")]

    def signed_by_another_key(ops: list[Op]) -> list[Op]:
        last = ops[-1]
        return [*ops[:-1], rebuilt(last, sig=other.sign(last.body))]

    def altered_middle(ops: list[Op]) -> list[Op]:
        first = ops[0]
        twin = make_op(
            s1,
            store="S1",
            seq=first.seq,
            hlc=first.hlc,
            user="mallory",
            kind="note",
            payload={"text": "replaced"},
            prev=first.prev,
        )
        return [twin, *ops[1:]]

    def broken_link(ops: list[Op]) -> list[Op]:
        first = ops[0]
        stray = make_op(
            s1,
            store="S1",
            seq=first.seq,
            hlc=first.hlc,
            user="u",
            kind="note",
            payload={},
            prev=bytes(range(32)),
        )
        return [stray]

    def other_store(ops: list[Op]) -> list[Op]:
        first = ops[0]
        alien = make_op(
            s1,
            store="S2",
            seq=first.seq,
            hlc=first.hlc,
            user="u",
            kind="note",
            payload={},
            prev=first.prev,
        )
        return [alien]

    def undecodable_payload(ops: list[Op]) -> list[Op]:
        first = ops[0]
        return [
            signed_with_raw_payload(s1, "S1", first.seq, first.hlc, first.prev, b"\x81\x01\x02")
        ]

    return {
        "undecodable_payload": undecodable_payload,
        "bad_signature": bad_signature,
        "signed_by_another_key": signed_by_another_key,
        "altered_middle": altered_middle,
        "broken_link": broken_link,
        "other_store": other_store,
    }


@pytest.mark.parametrize(
    "forgery",
    [
        "undecodable_payload",
        "bad_signature",
        "signed_by_another_key",
        "altered_middle",
        "broken_link",
        "other_store",
    ],
)
def test_forged_or_broken_ops_are_rejected_whole_and_others_keep_syncing(forgery: str) -> None:
    mesh = Mesh(3)
    mesh.net.run_for(500)
    t0, t1 = mesh.nodes[0], mesh.nodes[1]
    # T1 rings two sales but the network has not carried them yet.
    genuine = [t1.terminal.sell([("SKU1", 1)]).op, t1.terminal.sell([("SKU2", 1)]).op]
    forged = _forgeries(mesh)[forgery](genuine)
    before = (t0.ledger.vv(), mesh.views(0))
    data = encode(Ops(tuple(op.wire() for op in forged)))
    actions = mesh.sync_node(0).receive(t1.node_id, data, mesh.net.now)
    for a in actions:
        if isinstance(a, Send):
            mesh.net.send(t0.node_id, a.peer, a.data)
    assert any(isinstance(a, Rejected) and a.peer == t1.node_id for a in actions)
    assert [e.code for e in errors_sent(actions, t1.node_id)] == ["rejected"]
    assert not any(isinstance(a, Applied) for a in actions)
    assert (t0.ledger.vv(), mesh.views(0)) == before
    assert t0.ledger.pending_count() == 0
    assert mesh.sync_node(0).sessions[t1.node_id].ready
    later = mesh.sell(2, [("SKU3", 1)])
    mesh.net.local_changed(t1.node_id)
    assert mesh.settle() >= 0
    for op in [*genuine, later.op]:
        held = t0.ledger.get(op.origin, op.seq)
        assert held is not None and held.hash == op.hash
    assert_same_views(mesh)


# -- topology, backlog, restarts ------------------------------------------------------------------


def test_line_topology_forwards_sales_through_the_middle() -> None:
    """A=T1 and C=T2 cannot reach each other; B=T0 sits between them. T1's node record, which
    T2 never gets in a Hello, travels with the forwarded ops."""
    mesh = Mesh(3, links={(1, 2): LinkSpec(loss=1.0)})
    a, c = mesh.nodes[1].node_id, mesh.nodes[2].node_id
    mesh.net.run_for(1000)
    assert mesh.nodes[2].ledger.public_key(a) is None
    from_a = [mesh.sell(1, [("SKU1", 1)]) for _ in range(3)]
    from_c = mesh.sell(2, [("SKU4", 2)])
    assert mesh.settle(limit_ms=5000) >= 0
    for sale in [*from_a, from_c]:
        for lg in mesh.ledgers():
            assert lg.get(sale.op.origin, sale.op.seq) is not None
    assert mesh.nodes[2].ledger.public_key(a) is not None
    assert c not in mesh.net.nodes[a].ready_peers()
    assert_same_views(mesh)
    # Forwarding waits for the direct path only briefly: a later sale crosses in well under 1 s.
    late = mesh.sell(1, [("SKU2", 1)])
    mesh.net.run_for(mesh.sync_node(0).config.forward_delay_ms + 150)
    assert mesh.nodes[2].ledger.get(late.op.origin, late.op.seq) is not None


@pytest.mark.parametrize("c_knows_a", [False, True], ids=["record-lost", "batch-lost"])
def test_forwarded_batch_lost_while_the_forwarder_keeps_selling(c_knows_a: bool) -> None:
    """A=T1 and C=T2 cannot reach each other. The first batch B=T0 forwards from A to C is lost
    (when C has never seen A, it is also the batch that carries A's node record). B keeps ringing
    its own sales, so C keeps acknowledging progress on B's origin. A's sale must still reach C
    within a retransmission timeout or so, and the retransmission must carry A's record again."""
    mesh = Mesh(3, links={(1, 2): LinkSpec(loss=1.0)})
    a, b, c = (mesh.nodes[i].node_id for i in (1, 0, 2))
    if c_knows_a:
        mesh.nodes[2].ledger.add_node(mesh.node_record(1))
    mesh.net.run_for(1000)
    send = mesh.net.send
    dropped: list[bytes] = []

    def lossy(src: str, dst: str, data: bytes) -> None:
        if (src, dst) == (b, c) and not dropped:
            msg = decode(data)
            if isinstance(msg, Ops) and any(decode_op(w).origin == a for w in msg.ops):
                dropped.append(data)
                return
        send(src, dst, data)

    mesh.net.send = lossy  # type: ignore[method-assign]
    sale = mesh.sell(1, [("SKU1", 1)])
    rung = mesh.net.now
    cfg = mesh.sync_node(0).config
    arrived = None
    while mesh.net.now - rung < 10_000:
        mesh.sell(0, [("SKU2", 1)])
        mesh.net.run_for(300)
        if arrived is None and mesh.nodes[2].ledger.get(a, sale.op.seq) is not None:
            arrived = mesh.net.now - rung
    assert dropped
    assert arrived is not None, mesh.net.stats.rejected[-1:]
    assert arrived <= cfg.forward_delay_ms + cfg.retransmit_ms + 1000
    assert mesh.settle(limit_ms=5000) >= 0
    assert_same_views(mesh)


def test_large_backlog_goes_in_bounded_batches_and_selling_carries_on() -> None:
    cfg = SyncConfig()
    mesh = Mesh(2, config=cfg, link=LinkSpec(latency_ms=2, jitter_ms=2))
    mesh.net.run_for(500)
    t0, t1 = mesh.nodes[0].node_id, mesh.nodes[1].node_id
    batches: list[int] = []
    worst = {"inflight": 0, "bytes": 0}

    def watch(nid: str, action: Action) -> None:
        if not isinstance(action, Send):
            return
        msg = decode(action.data)
        if isinstance(msg, Ops) and msg.ops:
            batches.append(len(msg.ops))
            assert len(msg.ops) <= min(cfg.batch_ops, MAX_BATCH_OPS)
            payload = sum(len(w) for w in msg.ops)
            assert payload <= cfg.batch_bytes
            assert len(action.data) <= MAX_MESSAGE_BYTES
            worst["bytes"] = max(worst["bytes"], len(action.data))
        session = mesh.net.nodes[nid].sessions.get(action.peer)
        if session is not None:
            assert session.inflight() <= cfg.window_ops
            worst["inflight"] = max(worst["inflight"], session.inflight())

    mesh.watch(watch)
    backlog = mesh.backlog(1, 20_000)
    mesh.net.local_changed(t1)
    mesh.net.run_for(3)
    # A sale at T0 in the middle of the catch-up reaches T1 at once: the backlog does not block it.
    sale = mesh.sell(0, [("SKU1", 1)])
    mesh.net.run_for(10)
    assert mesh.nodes[1].ledger.get(t0, sale.op.seq) is not None
    assert mesh.nodes[0].ledger.vv().get(t1, 0) < len(backlog)
    took = mesh.settle(limit_ms=60_000)
    assert took >= 0
    assert mesh.nodes[0].ledger.vv()[t1] == backlog[-1].seq
    assert sum(batches) >= len(backlog)
    assert len(batches) >= len(backlog) // cfg.batch_ops
    assert worst["inflight"] == cfg.window_ops  # the window was used, and never exceeded
    assert mesh.views(0) == mesh.views(1)
    assert mesh.nodes[0].ledger.verify() == []


@pytest.mark.parametrize("down_ms", [300, 6000], ids=["quick-restart", "after-peers-gave-up"])
def test_restarted_node_resyncs(down_ms: int) -> None:
    mesh = Mesh(3, seed=4, link=LinkSpec(latency_ms=2, jitter_ms=3))
    for k in range(5):
        mesh.sell(k % 3, [("SKU1", 1)])
    assert mesh.settle() >= 0
    mesh.stop(2)
    missed = [mesh.sell(k % 2, [("SKU2", 1)]) for k in range(6)]
    mesh.net.run_for(down_ms)
    mesh.nodes[2].terminal.sell([("SKU3", 1)])  # rung while its daemon was down
    fresh = mesh.restart(2)
    assert not fresh.ready_peers()
    assert mesh.settle(limit_ms=10_000) >= 0
    assert fresh.ready_peers() == sorted(mesh.nodes[i].node_id for i in (0, 1))
    for sale in missed:
        assert mesh.nodes[2].ledger.get(sale.op.origin, sale.op.seq) is not None
    assert_same_views(mesh)


def test_wiped_node_bootstraps_its_own_sales_back_from_peers() -> None:
    """The disk died. A sale a peer acknowledged (two copies) is not lost: the replacement
    terminal, same identity on an empty ledger, gets it back and carries on its own seq."""
    mesh = Mesh(3, seed=2, link=LinkSpec(latency_ms=2, jitter_ms=2))
    mesh.net.run_for(500)
    me = mesh.nodes[2].node_id
    mesh.sell(2, [("SKU1", 1)])
    sale = mesh.nodes[2].terminal.sell([("SKU2", 1)])
    node = mesh.sync_node(2)
    assert node.copies(sale.op.seq) == 1
    mesh.net.local_changed(me)
    deadline = mesh.net.now + 100
    while node.copies(sale.op.seq) < 2 and mesh.net.now < deadline:
        mesh.net.run_for(1)
    assert node.copies(sale.op.seq) >= 2
    assert node.acked_by_peer() >= sale.op.seq
    mesh.net.run_for(1000)
    wanted = mesh.views(0)
    mesh.wipe(2)
    assert mesh.nodes[2].ledger.vv() == {}
    assert mesh.settle(limit_ms=10_000) >= 0
    back = mesh.nodes[2].ledger.get(me, sale.op.seq)
    assert back is not None and back.hash == sale.op.hash
    assert mesh.views(2) == wanted
    # The new terminal continues its own chain, with no fork.
    after = mesh.sell(2, [("SKU3", 1)])
    assert after.op.seq == sale.op.seq + 1
    assert mesh.settle(limit_ms=5000) >= 0
    assert_same_views(mesh)


def test_idle_mesh_stays_under_a_kilobyte_per_peer_per_second() -> None:
    mesh = Mesh(3)
    mesh.sell(0, [("SKU1", 1)])
    assert mesh.settle() >= 0
    mesh.net.run_for(10_000)
    sent: list[bytes] = []
    mesh.watch(lambda nid, a: sent.append(a.data) if isinstance(a, Send) else None)
    before = mesh.net.stats.bytes
    seconds = 60
    mesh.net.run_for(seconds * 1000)
    links = 3 * 2
    per_peer = (mesh.net.stats.bytes - before) / links / seconds
    assert 0 < per_peer < 1024
    kinds = {type(decode(d)).__name__ for d in sent}
    assert kinds <= {"Ping", "Have"}
    assert all(len(s.ready_peers()) == 2 for s in mesh.net.nodes.values())
    print(f"idle: {per_peer:.0f} B per peer per s")


def test_a_silent_peer_is_declared_down_and_comes_back() -> None:
    mesh = Mesh(2)
    mesh.net.run_for(500)
    a, b = mesh.nodes[0].node_id, mesh.nodes[1].node_id
    seen: Log = []
    mesh.watch(lambda nid, act: seen.append((nid, act)))
    mesh.partition([0], [1])
    mesh.net.run_for(mesh.sync_node(0).config.dead_after_ms + 500)
    assert not mesh.sync_node(0).ready_peers()
    assert any(nid == a and type(x).__name__ == "PeerDown" for nid, x in seen)
    sale = mesh.sell(1, [("SKU1", 1)])
    mesh.heal()
    assert mesh.settle(limit_ms=5000) >= 0
    assert mesh.nodes[0].ledger.get(b, sale.op.seq) is not None
    assert mesh.sync_node(0).ready_peers() == [b]


def test_ping_keeps_a_session_alive_with_no_ops() -> None:
    mesh = Mesh(2)
    (a, b) = sync_nodes(mesh, 0, 1)
    wire = Wire(a, b)
    wire.connect(a, b)
    wire.run()
    for t in range(0, 20_000, 100):
        wire.now = t
        wire.do(a.me.node_id, a.tick(t))
        wire.do(b.me.node_id, b.tick(t))
        wire.run()
    assert a.ready_peers() == [b.me.node_id]
    pings = [x for n, x in wire.log if isinstance(x, Send) and isinstance(decode(x.data), Ping)]
    assert pings


@pytest.mark.parametrize("stale", ["hello", "have", "ops"])
def test_messages_from_before_a_wipe_do_not_hide_what_the_new_node_lacks(stale: str) -> None:
    """Messages the wiped terminal sent before its disk died can arrive after its new Hello
    (a restart opens new connections; nothing orders them after the old ones). They describe a
    ledger that is gone: peers must not take them as what the new node holds."""
    mesh = Mesh(2)
    me = mesh.nodes[1].node_id
    peer = mesh.nodes[0].node_id
    sales = [mesh.sell(1, [("SKU1", 1)]) for _ in range(3)]
    mesh.sell(0, [("SKU2", 1)])
    assert mesh.settle() >= 0
    old = mesh.sync_node(1)
    if stale == "hello":
        frames = [a.data for a in old.connect(peer, mesh.net.now) if isinstance(a, Send)]
    elif stale == "have":
        session = old.sessions[peer]
        session.last_have = -old.config.anti_entropy_ms  # its periodic Have is due
        frames = [a.data for a in old.tick(mesh.net.now) if isinstance(a, Send)]
    else:
        session = old.sessions[peer]
        session.sent_vv = {}  # make the old node resend everything it holds
        frames = [a.data for a in old.local_changed(mesh.net.now) if isinstance(a, Send)]
    assert frames and any(type(decode(f)).__name__ == stale.capitalize() for f in frames)
    mesh.wipe(1)
    mesh.net.run_for(20)  # the new Hello has been answered
    for frame in frames:
        mesh.net.send(me, peer, frame)
    assert mesh.settle(limit_ms=10_000) >= 0
    for sale in sales:
        assert mesh.nodes[1].ledger.get(me, sale.op.seq) is not None
    assert_same_views(mesh)


def test_escrow_rights_move_over_the_mesh_and_a_split_cannot_double_spend() -> None:
    """Loyalty escrow on top of the protocol: rights start where points were earned, move by a
    Request answered with a transfer op, and a counter cut off from the holder cannot redeem."""
    mesh = Mesh(3)
    cid = mesh.customers[0]
    mesh.net.run_for(500)
    mesh.earn(1, cid, 300)
    assert mesh.settle() >= 0

    def redeem(i: int, points: int) -> None:
        mesh.sell(
            i, [("SKU1", 1)], customer=cid, tenders=[Tender("points", points), Tender("cash")]
        )

    with pytest.raises(EscrowShortfall, match="held by T1 300"):
        redeem(2, 200)
    assert mesh.ask_rights(2, cid, 200) == 2
    mesh.net.run_for(50)
    assert mesh.nodes[2].terminal.rights(cid) == 200
    redeem(2, 200)
    # Split: T1 keeps the last 100 rights; T2, cut off from it, cannot spend them too.
    mesh.partition([1], [0, 2])
    redeem(1, 100)
    with pytest.raises(EscrowShortfall):
        redeem(2, 100)
    own = mesh.nodes[2].terminal.rights(cid)  # what its own cash sales earned it
    assert own < 100
    mesh.ask_rights(2, cid, 100)
    mesh.net.run_for(1000)
    assert mesh.nodes[2].terminal.rights(cid) == own
    mesh.heal()
    assert mesh.settle() >= 0
    for node in mesh.nodes:
        t = node.terminal
        assert not t.conflicts()
        assert t.points(cid) == sum(t.rights(cid, n.node_id) for n in mesh.nodes) >= 0
        redeemed = t.query("SELECT SUM(points_redeemed) AS r FROM sales")[0]["r"]
        assert redeemed == 300
    assert_same_views(mesh)


def test_a_healed_backlog_is_left_to_its_origin_once_the_peer_reaches_it() -> None:
    """T2 was cut off while T1 rang a backlog that T0 also holds. On the heal T2 happens to
    reach T0 first, and T0 rightly starts forwarding T1's ops. The moment T2's session with T1
    comes up, T2 says so in a Have (T1 feeds it directly), and T0 stops: at most what T0 sent
    before that word reached it is sent twice, not the whole backlog."""
    cfg = SyncConfig(batch_ops=5, window_ops=10)
    slow = {(0, 2): LinkSpec(latency_ms=20), (1, 2): LinkSpec(latency_ms=60)}
    mesh = Mesh(3, config=cfg, links=slow)
    ids = [n.node_id for n in mesh.nodes]
    mesh.net.run_for(1000)
    mesh.net.partition([ids[0], ids[1]], [ids[2]])
    mesh.net.run_for(cfg.dead_after_ms + 1000)
    backlog = [mesh.sell(1, [("SKU1", 1)]) for _ in range(200)]
    mesh.net.run_for(1000)
    assert all(mesh.nodes[0].ledger.get(s.op.origin, s.op.seq) for s in backlog)
    forwarded: list[int] = []

    def watch(nid: str, action: Action) -> None:
        if nid == ids[0] and isinstance(action, Send) and action.peer == ids[2]:
            msg = decode(action.data)
            if isinstance(msg, Ops):
                forwarded.extend(1 for w in msg.ops if decode_op(w).origin == ids[1])

    mesh.watch(watch)
    mesh.net.heal()
    assert mesh.settle(limit_ms=30_000) >= 0
    assert all(mesh.nodes[2].ledger.get(s.op.origin, s.op.seq) for s in backlog)
    # Sent before T2's word could reach T0: a few windows (one a round trip), not all 200.
    assert len(forwarded) <= 4 * cfg.window_ops, f"T0 forwarded {len(forwarded)} of 200"
    assert_same_views(mesh)


def test_ops_are_forwarded_after_all_when_their_origin_cannot_give_them() -> None:
    """T2 says it has a session with T1, but T1 no longer holds its own later ops (restored
    from an old backup, say): T2's acknowledgements of T1 stop moving, and T0 forwards them."""
    mesh = Mesh(3)
    ids = [n.node_id for n in mesh.nodes]
    mesh.net.run_for(1000)
    mesh.net.partition([ids[0], ids[1]], [ids[2]])
    mesh.net.run_for(mesh.sync_node(0).config.dead_after_ms + 1000)
    backlog = [mesh.sell(1, [("SKU1", 1)]) for _ in range(5)]
    mesh.net.run_for(1000)
    # T1 keeps its session with T2 but never sends T2 its own ops.
    send = mesh.net.send

    def mute(src: str, dst: str, data: bytes) -> None:
        if (src, dst) == (ids[1], ids[2]) and isinstance(decode(data), Ops):
            return
        send(src, dst, data)

    mesh.net.send = mute  # type: ignore[method-assign]
    mesh.net.heal()
    cfg = mesh.sync_node(0).config
    mesh.net.run_for(3 * cfg.retransmit_ms + 2000)
    assert ids[1] in mesh.sync_node(2).ready_peers()
    assert all(mesh.nodes[2].ledger.get(s.op.origin, s.op.seq) for s in backlog)
