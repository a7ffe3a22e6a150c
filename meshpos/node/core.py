"""A terminal node's logic as a sans-IO state machine: events and the time in, actions out.

Everything a node does with what its sync protocol reports lives here, once, and two drivers run
it: the daemon (meshpos/node/daemon.py: ZeroMQ, zeroconf, threads, the HQ relay worker) and the
outage simulator (meshpos/sim/: MemNet and simulated time), so an outage simulation runs the code
a store runs. Like h11, it never touches a socket, a thread, the wall clock or a random number:
the driver calls `connect`, `disconnect`, `receive`, `tick`, `local_changed` and `relay_status`
with the time, and carries out the actions they return (`Send` bytes to a peer, tell the relay
worker, log). It owns:

- the sync protocol (`SyncNode`) and the peers' bookkeeping (who is up, when last heard);
- loyalty escrow: a till's asks go to the peers known to hold the customer's rights, what no LAN
  peer holds to HQ through the relay; a peer's ask is granted from this node's rights;
- copy acks: how far each peer acknowledged this node's ops, which a selling process waits on;
- the HQ relay's election by the `wan` flag peers gossip in their pings (the HTTP rounds stay in
  the relay worker, meshpos/node/relay.py);
- the bootstrap check of a terminal that lost its database;
- print jobs between peers (printer failover), through the printing service's hooks;
- its timers: `next_deadline` says when `tick` next has work.

What it needs of the terminal goes through `Host` (meshpos/node/host.py wraps a Terminal), and
of the ledger through the protocol's `Replica`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from meshpos.core.errors import MeshposError
from meshpos.core.ops import Op
from meshpos.domain.enrolment import NodeRecord
from meshpos.domain.escrow import NEED, plan_asks
from meshpos.domain.relay import elect
from meshpos.ledger.fold import CARD_FLOAT
from meshpos.sync.protocol import (
    Action,
    Applied,
    PeerDown,
    PeerUp,
    RequestReceived,
    Session,
    SyncNode,
)

PRINT_EVERY_MS = 250  # how often print jobs handed to peers are looked at (resent when due)


class Host(Protocol):
    """What the core needs of the terminal it runs on."""

    def take_asks(self) -> list[tuple[str, int]]:
        """Escrow asks (customer, points) the tills wrote and nobody sent yet; taking marks
        them sent."""
        ...

    def rights(self, customer: str, node: str) -> int:
        """The customer's points `node` may redeem, as this node's ledger knows it."""
        ...

    def grant(self, peer: str, body: Mapping[str, object]) -> int:
        """Serve a peer's escrow ask from this node's rights: the points granted (0 when it
        holds none). MeshposError when the ask is malformed or this node may not sign."""
        ...

    def bootstrapping(self) -> bool:
        """Whether the terminal lost its database and must not sign until it has its own
        earlier ops back."""
        ...

    def end_bootstrap(self) -> None: ...

    def waiting_ops(self) -> int:
        """Ops held back until the ops before them in their origin's chain arrive."""
        ...

    def check_clocks(self, ops: Sequence[Op]) -> bool:
        """Flag nodes whose ops among `ops` are stamped too far ahead of this clock (an op
        signed here); whether it signed any."""
        ...


class PeerPrinting(Protocol):
    """The printing service's side of printer failover (meshpos.service.printing.DaemonPrinting):
    it sends its requests through `NodeCore.send_request`."""

    def tick(self, now_ms: int) -> None: ...

    def on_request(self, peer: str, kind: str, body: Mapping[str, object], now_ms: int) -> bool:
        """Handle a peer's print request; False when `kind` is not about printing."""
        ...


# -- actions the driver carries out, besides the protocol's own ------------------------------------


@dataclass(frozen=True)
class Granted:
    """We served a peer's escrow ask (`points` is 0 when this node held none)."""

    peer: str
    customer: str
    points: int


@dataclass(frozen=True)
class RequestRefused:
    """A peer's request we did not serve: malformed, of a kind we do not know, or refused."""

    peer: str
    kind: str
    reason: str


@dataclass(frozen=True)
class AskedPeers:
    """A till's escrow ask went out to `peers` peers."""

    customer: str
    points: int
    peers: int


@dataclass(frozen=True)
class ClaimFromHq:
    """Points no LAN peer holds rights for: the relay worker asks HQ to move them here."""

    customer: str
    points: int


@dataclass(frozen=True)
class WakeRelay:
    """New ops for HQ and this node relays: its worker should start a round."""


@dataclass(frozen=True)
class ProbeHq:
    """A peer just found HQ reachable and we did not: probe now, not at the next probe."""


@dataclass(frozen=True)
class Elected:
    """The relay election, after every relay status; the relay worker acts on each."""

    relay: str | None
    me: bool
    first: bool  # nobody relayed before this: HQ just came back
    others_pushing: bool  # a peer says it is in the middle of a push to HQ
    changed: bool


@dataclass(frozen=True)
class CopyAcked:
    """A peer acknowledged more of this node's ops as durable: up to `seq`, at `at`."""

    peer: str
    seq: int
    at: int


@dataclass(frozen=True)
class BootstrapDone:
    """The terminal has its own earlier ops back (`held` of them) and may sign again."""

    held: int


NodeAction = (
    Action
    | Granted
    | RequestRefused
    | AskedPeers
    | ClaimFromHq
    | WakeRelay
    | ProbeHq
    | Elected
    | CopyAcked
    | BootstrapDone
)


@dataclass
class PeerInfo:
    node_id: str
    name: str = ""
    address: str = ""
    last_seen_ms: int = 0
    up: bool = False
    vv: dict[str, int] = field(default_factory=dict)  # last known, kept when the session ends


class NodeCore:
    """One terminal's node: its sync protocol and every reaction to what the protocol reports.

    `started` is when this run of the node began (the bootstrap check listens to its peers for a
    while from then). Each entry point returns the actions to carry out, in order; the driver
    calls them one at a time (the core is not thread-safe)."""

    def __init__(
        self,
        sync: SyncNode,
        host: Host,
        *,
        started: int,
        printing: PeerPrinting | None = None,
    ) -> None:
        self.sync = sync
        self.host = host
        self.started = started
        self.printing = printing
        self.peers: dict[str, PeerInfo] = {}
        self.relay: str | None = None  # the elected HQ relay, once a relay status came in
        self._wan = False
        self._wan_peers: set[str] = set()
        self._acks: dict[str, int] = {}
        self._bootstrapping = host.bootstrapping()
        self._printed_at = started
        self._now = started
        self._out: list[NodeAction] = []

    @property
    def me(self) -> NodeRecord:
        return self.sync.me

    @property
    def sessions(self) -> Mapping[str, Session]:
        return self.sync.sessions

    # -- entry points ----------------------------------------------------------------------------

    def connect(self, peer: str, now: int) -> list[NodeAction]:
        """A link to `peer` is up (dialled, or it dialled us): open a sync session."""
        out = self._start(now)
        self._react(self.sync.connect(peer, now))
        return out

    def disconnect(self, peer: str) -> list[NodeAction]:
        out = self._start(self._now)
        self._react(self.sync.disconnect(peer))
        return out

    def cut_off(self, peer: str, reason: str, now: int) -> list[NodeAction]:
        """`peer` was revoked: end its session now and tell it why."""
        out = self._start(now)
        self._react(self.sync.cut_off(peer, reason, now))
        return out

    def receive(self, peer: str, data: bytes, now: int) -> list[NodeAction]:
        out = self._start(now)
        self._react(self.sync.receive(peer, data, now))
        applied = [op for a in out if isinstance(a, Applied) for op in a.ops]
        if applied and not self._bootstrapping and self.host.check_clocks(applied):
            self._react(self.sync.local_changed(now))
        self._note_peer(peer, now)
        self._check_bootstrap(now)
        return out

    def tick(self, now: int) -> list[NodeAction]:
        """The timers: the protocol's, print jobs for peers, the bootstrap check."""
        out = self._start(now)
        self._react(self.sync.tick(now))
        if self.printing is not None and now >= self._printed_at + PRINT_EVERY_MS:
            self._printed_at = now
            self.printing.tick(now)
        self._check_bootstrap(now)
        return out

    def local_changed(self, now: int) -> list[NodeAction]:
        """Something committed to the node's database outside the core (a sale, a till's escrow
        ask, a bundle merged): push new ops, send new asks, wake the relay."""
        out = self._start(now)
        self._react(self.sync.local_changed(now))
        self._bootstrapping = self.host.bootstrapping()
        self._send_asks(now)
        self._wake_relay()
        return out

    def relay_status(self, now: int, *, wan: bool, pushing: bool) -> list[NodeAction]:
        """What the relay worker knows: whether HQ answers this node, whether it is pushing.
        Peers hear both in our pings; the election follows (`Elected`, every call)."""
        out = self._start(now)
        self._wan = wan
        self._react(self.sync.set_flags(now, wan=wan, pushing=pushing))
        flags = self.sync.peer_flag("wan")
        reaching = {p for p, ok in flags.items() if ok}
        if not wan and reaching - self._wan_peers:
            out.append(ProbeHq())  # HQ may be back: every node should know within ms
        self._wan_peers = reaching
        me = self.me.node_id
        choice = elect(me, wan, flags)
        previous, self.relay = self.relay, choice
        pushing_elsewhere = self.others_pushing()
        out.append(
            Elected(choice, choice == me, previous is None, pushing_elsewhere, choice != previous)
        )
        return out

    def ask_for_hq(
        self, peer: str, customer: str, points: int, to: str, now: int
    ) -> list[NodeAction]:
        """The relay serves HQ's ask for another store: `peer` should grant its rights to `to`
        (HQ). No action when the peer's session is not up."""
        out = self._start(now)
        body: dict[str, object] = {"customer_id": customer, "points": points, "to": to}
        self._react(self.sync.request(peer, NEED, body, now))
        return out

    def send_request(self, peer: str, kind: str, body: dict[str, object]) -> bool:
        """For the printing service, during a `tick` or `receive`: a request to a peer, sent
        with that call's actions; False when the peer's session is not up."""
        actions = self.sync.request(peer, kind, body, self._now)
        self._react(actions)
        return bool(actions)

    def next_deadline(self, now: int) -> int:
        """The earliest time `tick` could do anything (`now` or earlier: work is waiting)."""
        due = self.sync.next_deadline(now)
        listened = self.started + self.sync.config.dead_after_ms
        if self._bootstrapping and now < listened:
            due = min(due, listened)
        if self.printing is not None:
            due = min(due, self._printed_at + PRINT_EVERY_MS)
        return due

    # -- what drivers and status screens ask -----------------------------------------------------

    def ready_peers(self) -> list[str]:
        return self.sync.ready_peers()

    def others_pushing(self) -> bool:
        return any(self.sync.peer_flag("pushing").values())

    def peer(self, node_id: str) -> PeerInfo:
        """The bookkeeping of a peer, created on first mention (discovered, dialled, heard)."""
        info = self.peers.get(node_id)
        if info is None:
            info = self.peers[node_id] = PeerInfo(node_id)
        return info

    # -- reactions -------------------------------------------------------------------------------

    def _start(self, now: int) -> list[NodeAction]:
        self._now = now
        self._out = []
        return self._out

    def _react(self, actions: list[Action]) -> None:
        out = self._out
        for a in actions:
            if isinstance(a, RequestReceived):
                self._on_request(a)
                continue
            out.append(a)
            if isinstance(a, PeerUp):
                info = self.peer(a.peer)
                info.name, info.up = a.name, True
            elif isinstance(a, PeerDown):
                if a.peer in self.peers:
                    self.peers[a.peer].up = False
            elif isinstance(a, Applied):
                if a.peer in self.peers:
                    self.peers[a.peer].last_seen_ms = self._now
                self._wake_relay()

    def _on_request(self, req: RequestReceived) -> None:
        if self.printing is not None and self.printing.on_request(
            req.peer, req.kind, req.body, self._now
        ):
            return
        if req.kind != NEED:
            self._out.append(RequestRefused(req.peer, req.kind, f"unknown request {req.kind!r}"))
            return
        try:
            granted = self.host.grant(req.peer, req.body)
        except MeshposError as exc:
            self._out.append(RequestRefused(req.peer, req.kind, str(exc)))
            return
        self._out.append(Granted(req.peer, str(req.body.get("customer_id")), granted))
        if granted:
            self._react(self.sync.local_changed(self._now))

    def _send_asks(self, now: int) -> None:
        """The tills' new escrow asks: the peers known to hold the customer's rights are asked
        for what they hold (domain/escrow.plan_asks); what no LAN peer holds, this node claims
        from HQ when it reaches HQ itself (HQ moves rights it holds in other stores here)."""
        for customer, points in self.host.take_asks():
            holdings = {p: self.host.rights(customer, p) for p in self.sync.ready_peers()}
            plan = plan_asks(points, holdings)
            for peer, wanted in plan.items():
                body: dict[str, object] = {"customer_id": customer, "points": wanted}
                self._react(self.sync.request(peer, NEED, body, now))
            self._out.append(AskedPeers(customer, points, len(plan)))
            nearby = sum(max(0, held) for held in holdings.values())
            if self._wan and customer != CARD_FLOAT and points > nearby:
                self._out.append(ClaimFromHq(customer, points - nearby))  # never the card float

    def _wake_relay(self) -> None:
        if self.relay is not None and self.relay == self.me.node_id:
            self._out.append(WakeRelay())

    def _note_peer(self, peer: str, now: int) -> None:
        """After a message from `peer` (only its session changed): when we last heard it, what
        it holds, and whether it acknowledged more of this node's ops."""
        session = self.sync.sessions.get(peer)
        if session is None or not session.ready:
            return
        info = self.peer(peer)
        info.last_seen_ms, info.vv = session.last_heard, session.their_vv
        seq = session.their_vv.get(self.me.node_id, 0)
        if seq > self._acks.get(peer, 0):
            self._acks[peer] = seq
            self._out.append(CopyAcked(peer, seq, now))

    def _check_bootstrap(self, now: int) -> None:
        """A terminal that lost its database signs again once it has listened to its peers for
        a while (`dead_after_ms`, so every reachable peer had time to say hello), none of them
        holds more of its own chain than it does, and no op waits past a gap; else its next op
        would reuse a seq a peer holds (a fork every replica refuses)."""
        if not self._bootstrapping or now - self.started < self.sync.config.dead_after_ms:
            return
        ready = [s for s in self.sync.sessions.values() if s.ready]
        if not ready or self.host.waiting_ops():
            return
        me = self.me.node_id
        target = max(s.their_vv.get(me, 0) for s in ready)
        held = self.sync.replica.vv().get(me, 0)
        if held >= target:
            self.host.end_bootstrap()
            self._bootstrapping = False
            self._out.append(BootstrapDone(held))
