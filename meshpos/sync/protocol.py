"""The sync protocol as a sans-IO state machine: bytes and the time in, actions out.

One `SyncNode` per terminal keeps a `Session` per peer. It never touches a socket, a clock or a
thread: the transport (ZeroMQ in the daemon, a simulated network in `meshpos/sim/` and the tests) feeds it
`receive(peer, data, now)` and `tick(now)`, and carries out the `Send` actions it returns. It reads
and merges ops through the small `Replica` interface, which the SQLite `Ledger` implements.

How it converges:
- on connect each side sends Hello with its version vector; each then pushes exactly the ops the
  other lacks, per origin in seq order, in bounded batches;
- every applied batch is acknowledged with Have (the receiver's version vector, durable on its
  disk), which frees the sender's window (flow control) and counts as a copy of the sender's ops;
- new local ops, and ops applied from any peer, are pushed to every other session at once, so ops
  are forwarded through peers that can see each other;
- each Have also names the nodes its sender has a session with (sent to every peer the moment a
  session comes up or goes down): a peer fed by an origin directly is not sent that origin's ops
  by anyone else, unless its acknowledgements of that origin stop moving (a healed partition's
  backlog then comes once, from its origin, not once from every node that holds it);
- anti-entropy: Have is resent periodically; for an origin whose ops in flight see no progress for
  a while, the sender goes back to what the peer acknowledged and resends (lost, reordered or
  refused batches heal);
- ping keeps an idle link alive and a silent peer is declared down;
- Have and Ops carry the sender's epoch: one from another incarnation than the session's (late
  from before a restart, or overtaking its Hello) says nothing of the peer's ledger now, which a
  wipe may have emptied, so it is not counted and a fresh Hello is asked for.
Every message is untrusted: malformed messages, wrong versions, wrong stores, refused nodes and
ops that fail their signature or chain are answered with Error and logged; nothing is half-applied,
and every other session carries on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from meshpos.core.errors import MeshposError, RemoteError
from meshpos.core.ops import Op, decode_ops, wire_of
from meshpos.domain.enrolment import NodeRecord
from meshpos.ledger.records import IngestResult
from meshpos.sync import compression
from meshpos.sync.messages import (
    MAX_BATCH_OPS,
    PROTOCOL_VERSION,
    Error,
    Have,
    Hello,
    MalformedMessage,
    Message,
    Ops,
    Ping,
    Request,
    decode,
    encode,
)


class Replica(Protocol):
    """What the protocol needs of a ledger."""

    store: str

    def vv(self) -> dict[str, int]: ...

    def raw_since(
        self, theirs: Mapping[str, int], limit: int | None = None
    ) -> list[tuple[str, int, bytes, bytes]]: ...

    def ingest(self, ops: Iterable[Op], nodes: Iterable[NodeRecord] = ()) -> IngestResult: ...

    def nodes(self) -> list[NodeRecord]: ...

    def sealed_blobs(self) -> Mapping[tuple[str, int], Mapping[int, bytes]]:
        """Data held beside ops (sealed card data awaiting HQ), by op id."""
        ...

    def public_key(self, node_id: str) -> bytes | None: ...


# -- actions the driver carries out ---------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    peer: str
    data: bytes


@dataclass(frozen=True)
class PeerUp:
    peer: str
    name: str


@dataclass(frozen=True)
class PeerDown:
    peer: str
    reason: str


@dataclass(frozen=True)
class Rejected:
    """We refused something a peer sent; logged with the reason."""

    peer: str
    reason: str


@dataclass(frozen=True)
class PeerComplained:
    """A peer refused something we sent."""

    peer: str
    code: str
    reason: str


@dataclass(frozen=True)
class Applied:
    peer: str
    ops: tuple[Op, ...]


@dataclass(frozen=True)
class RequestReceived:
    peer: str
    kind: str
    body: dict[str, object]


Action = Send | PeerUp | PeerDown | Rejected | PeerComplained | Applied | RequestReceived
Admit = Callable[[NodeRecord], str | None]
REVOKED = "revoked"  # the Error code a revoked node is refused with
NEVER = 1 << 62  # a deadline that never comes


@dataclass(frozen=True)
class SyncConfig:
    batch_ops: int = 1000
    batch_bytes: int = 1024 * 1024
    window_ops: int = 4000
    ping_ms: int = 1000
    anti_entropy_ms: int = 5000
    retransmit_ms: int = 1500
    hello_retry_ms: int = 1000
    dead_after_ms: int = 4000
    forward_delay_ms: int = 200


@dataclass
class Session:
    peer: str
    created: int
    ready: bool = False
    name: str = ""
    peer_epoch: int | None = None
    their_vv: dict[str, int] = field(default_factory=dict)
    sent_vv: dict[str, int] = field(default_factory=dict)
    known_nodes: set[str] = field(default_factory=set)
    lag_since: dict[str, int] = field(default_factory=dict)
    fed_elsewhere: dict[str, int] = field(default_factory=dict)  # origin -> when the peer last
    # acknowledged ops of it beyond what we sent: someone else (the origin itself) feeds it
    have_due: bool = False
    peer_direct: frozenset[str] = frozenset()  # nodes the peer says it has a session with
    told_direct: tuple[str, ...] | None = None  # what our last Have to the peer said of ours
    told_flags: tuple[tuple[str, bool], ...] | None = None  # and of our flags
    direct_progress: dict[str, int] = field(default_factory=dict)  # origin -> when the peer,
    # fed by that origin directly, last showed progress on it (or first said it was)
    peer_flags: dict[str, bool] = field(default_factory=dict)
    last_heard: int = 0
    last_sent: int = 0
    last_hello: int = -(10**12)
    last_have: int = 0
    progress: dict[str, int] = field(default_factory=dict)  # per origin: last ack, or first send
    bytes_sent: int = 0
    bytes_received: int = 0
    zdict: int = 0  # the compression dictionary both sides hold (0: send ops uncompressed)

    def inflight(self) -> int:
        return sum(max(0, s - self.their_vv.get(o, 0)) for o, s in self.sent_vv.items())


def _max_merge(into: dict[str, int], other: Mapping[str, int]) -> list[str]:
    grew = []
    for origin, seq in other.items():
        if seq > into.get(origin, 0):
            into[origin] = seq
            grew.append(origin)
    return grew


class SyncNode:
    def __init__(
        self,
        replica: Replica,
        me: NodeRecord,
        *,
        epoch: int,
        admit: Admit | None = None,
        config: SyncConfig | None = None,
        revoked: Callable[[str], str | None] | None = None,
    ) -> None:
        self.replica = replica
        self.me = me
        self.epoch = epoch
        self.admit = admit or (lambda node: None)
        # Why a node was revoked (meshpos/domain/revocation.py), None if it was not: its Hello
        # is refused with code "revoked", which the revoked node shows.
        self.revoked = revoked or (lambda node_id: None)
        self.config = config or SyncConfig()
        self.sessions: dict[str, Session] = {}
        self.flags: dict[str, bool] = {}

    # -- driver entry points --------------------------------------------------------------------

    def connect(self, peer: str, now: int) -> list[Action]:
        """Open (or reopen) a session; the peer answers our Hello with its own."""
        if peer == self.me.node_id:
            return []
        session = self.sessions.get(peer)
        if session is None:
            session = self.sessions[peer] = Session(peer, created=now, last_heard=now)
        out: list[Action] = []
        self._hello(session, now, out)
        return out

    def disconnect(self, peer: str) -> list[Action]:
        session = self.sessions.pop(peer, None)
        if not (session and session.ready):
            return []
        self._direct_changed()
        return [PeerDown(peer, "disconnected")]

    def receive(self, peer: str, data: bytes, now: int) -> list[Action]:
        out: list[Action] = []
        try:
            msg = decode(data)
        except MalformedMessage as exc:
            self._refuse(peer, "malformed", str(exc), now, out)
            return out
        session = self.sessions.get(peer)
        if session is None:
            if not isinstance(msg, Hello):
                if not isinstance(msg, Error):
                    self.sessions[peer] = session = Session(peer, created=now, last_heard=now)
                    self._hello(session, now, out)
                return out
            session = self.sessions[peer] = Session(peer, created=now, last_heard=now)
        session.last_heard = now
        session.bytes_received += len(data)
        if isinstance(msg, Hello):
            self._on_hello(session, msg, now, out)
        elif isinstance(msg, Error):
            out.append(PeerComplained(peer, msg.code, msg.reason))
        elif not session.ready:
            self._hello(session, now, out)
        elif isinstance(msg, Ops):
            self._on_ops(session, msg, now, out)
        elif isinstance(msg, Have):
            self._on_have(session, msg, now, out)
        elif isinstance(msg, Request):
            out.append(RequestReceived(peer, msg.kind, dict(msg.body)))
        elif isinstance(msg, Ping):
            session.peer_flags = dict(msg.flags)
        return out

    def next_deadline(self, now: int) -> int:
        """The earliest time at which `tick` could do anything: a driver may skip every tick
        before it. `now` (or earlier) when work may be waiting: a Have due, ops a peer lacks or
        that are held back from it. Never later than the truth, sometimes earlier (a tick then
        finds nothing to do); the timers are the ones `tick` and `_retransmit` check."""
        cfg = self.config
        ours = self.replica.vv()
        due = NEVER
        for s in self.sessions.values():
            if not s.ready:
                due = min(due, s.last_hello + cfg.hello_retry_ms)
                continue
            if s.have_due or s.lag_since:
                return now
            sent_vv = s.sent_vv
            for origin, seq in ours.items():
                if seq > sent_vv.get(origin, 0):
                    return now
            due = min(
                due,
                s.last_heard + cfg.dead_after_ms + 1,
                s.last_have + cfg.anti_entropy_ms,
                s.last_sent + cfg.ping_ms,
            )
            their = s.their_vv
            for origin, sent in sent_vv.items():
                if sent > their.get(origin, 0):
                    progress = s.progress.get(origin)
                    if progress is not None:
                        due = min(due, progress + cfg.retransmit_ms + 1)
        return due

    def tick(self, now: int) -> list[Action]:
        out: list[Action] = []
        cfg = self.config
        for session in list(self.sessions.values()):
            if not session.ready:
                if now - session.last_hello >= cfg.hello_retry_ms:
                    self._hello(session, now, out)
                continue
            if now - session.last_heard > cfg.dead_after_ms:
                self.sessions.pop(session.peer, None)
                out.append(PeerDown(session.peer, f"silent for {now - session.last_heard} ms"))
                self._direct_changed()
                continue
            self._retransmit(session, now)
            self._pump(session, now, out)
            if session.have_due or now - session.last_have >= cfg.anti_entropy_ms:
                session.have_due = False
                self._have(session, now, out)
            elif now - session.last_sent >= cfg.ping_ms:
                self._send(session, Ping(self._flags()), now, out)
        return out

    def set_flags(self, now: int, **flags: bool) -> list[Action]:
        """Change this node's flags (e.g. `wan=True`); every ready peer hears of it at once."""
        changed = any(self.flags.get(k) != v for k, v in flags.items())
        self.flags.update(flags)
        out: list[Action] = []
        if changed:
            for session in self.sessions.values():
                if session.ready:
                    self._send(session, Ping(self._flags()), now, out)
        return out

    def _flags(self) -> tuple[tuple[str, bool], ...]:
        return tuple(sorted(self.flags.items()))

    def peer_flag(self, name: str) -> dict[str, bool]:
        """Each ready peer's value of a flag (peers that never said count as False)."""
        return {p: s.peer_flags.get(name, False) for p, s in self.sessions.items() if s.ready}

    def local_changed(self, now: int) -> list[Action]:
        """New ops are in the replica (rung here, or merged from a bundle): push them now."""
        out: list[Action] = []
        for session in self.sessions.values():
            self._pump(session, now, out)
        return out

    def request(self, peer: str, kind: str, body: dict[str, object], now: int) -> list[Action]:
        out: list[Action] = []
        session = self.sessions.get(peer)
        if session and session.ready:
            self._send(session, Request(kind, dict(body)), now, out)
        return out

    # -- what the daemon and status screens ask -------------------------------------------------

    def ready_peers(self) -> list[str]:
        return sorted(p for p, s in self.sessions.items() if s.ready)

    def copies(self, seq: int, origin: str | None = None) -> int:
        """How many nodes (this one included) are known to hold `origin`'s op `seq` durably."""
        origin = origin or self.me.node_id
        return 1 + sum(
            1 for s in self.sessions.values() if s.ready and s.their_vv.get(origin, 0) >= seq
        )

    def acked_by_peer(self, origin: str | None = None) -> int:
        """The highest seq of `origin` some peer acknowledged (0 when none did)."""
        origin = origin or self.me.node_id
        return max(
            (s.their_vv.get(origin, 0) for s in self.sessions.values() if s.ready), default=0
        )

    # -- message handlers -----------------------------------------------------------------------

    def _hello(self, session: Session, now: int, out: list[Action], ask: bool = False) -> None:
        msg = Hello(
            PROTOCOL_VERSION,
            self.replica.store,
            self.me.as_row(),
            self.replica.vv(),
            self.epoch,
            reply=ask or not session.ready,
            zdicts=compression.known(),
        )
        session.last_hello = now
        self._send(session, msg, now, out)

    def _on_hello(self, session: Session, msg: Hello, now: int, out: list[Action]) -> None:
        node = NodeRecord(*msg.node)
        reason = None
        code = ""
        if msg.proto != PROTOCOL_VERSION:
            reason = f"protocol version {msg.proto} is not supported (this node speaks {PROTOCOL_VERSION})"
        elif msg.store != self.replica.store:
            reason = f"node belongs to store {msg.store!r}, not {self.replica.store!r}"
        elif node.node_id != session.peer:
            reason = (
                f"hello claims node {node.node_id} but the link is authenticated as {session.peer}"
            )
        elif node.store != self.replica.store:
            reason = f"node record names store {node.store!r}"
        elif (reason := self.revoked(node.node_id)) is None:
            reason = self.admit(node)
        else:
            code = REVOKED
        if reason is not None:
            if code != REVOKED:
                code = "version" if msg.proto != PROTOCOL_VERSION else "refused"
            self.sessions.pop(session.peer, None)
            self._refuse(session.peer, code, reason, now, out)
            return
        fresh = session.peer_epoch != msg.epoch
        was_ready = session.ready
        session.peer_epoch = msg.epoch
        session.name = node.name
        session.zdict = compression.best(msg.zdicts)
        vv = msg.vv
        if fresh:
            session.their_vv = dict(vv)
            session.sent_vv = dict(vv)
            session.known_nodes = set()
            session.progress = {}
            session.peer_direct, session.told_direct = frozenset(), None
        else:
            _max_merge(session.their_vv, vv)
            _max_merge(session.sent_vv, session.their_vv)
        if not was_ready:
            if self.replica.public_key(node.node_id) is None:
                try:
                    self.replica.ingest([], [node])
                except MeshposError as exc:
                    self.sessions.pop(session.peer, None)
                    self._refuse(session.peer, "refused", str(exc), now, out)
                    return
            session.ready = True
            out.append(PeerUp(session.peer, node.name))
            # Tell the others at once, before this peer's own ops arrive and keep us busy:
            # they can leave its ops to it instead of forwarding them too.
            for other in self.sessions.values():
                if other is not session and other.ready:
                    self._have(other, now, out)
        if msg.reply:
            self._hello(session, now, out)
        if not was_ready and self.flags:
            # After our Hello: a peer that asked for it is not ready before it arrives, and
            # drops what comes first. A busy link sends no idle Ping to say the flags again.
            self._send(session, Ping(self._flags()), now, out)
        self._pump(session, now, out)

    def _on_ops(self, session: Session, msg: Ops, now: int, out: list[Action]) -> None:
        try:
            ops = decode_ops(msg.ops)
            nodes = [NodeRecord(*n) for n in msg.nodes]
        except RemoteError as exc:
            self._refuse(session.peer, "malformed", str(exc), now, out)
            return
        for node in nodes:
            reason = self.admit(node) if node.store == self.replica.store else "wrong store"
            if reason is not None:
                self._refuse(session.peer, "refused", f"node {node.node_id}: {reason}", now, out)
                return
        by_origin: dict[str, list[Op]] = {}
        current = msg.epoch == session.peer_epoch
        if not current:
            self._other_incarnation(session, now, out)
        for op in ops:
            # A peer sends an origin's ops from what its log holds, so it holds what it sends;
            # unless the batch comes from an earlier incarnation, whose ledger may be gone.
            by_origin.setdefault(op.origin, []).append(op)
            if current and op.seq > session.their_vv.get(op.origin, 0):
                session.their_vv[op.origin] = op.seq
        applied: list[Op] = []

        # Origins are ingested one by one, so a bad one does not block the rest; those carrying
        # staff changes go first, since other ops in the batch may be approved by them.
        def staff_first(origin: str) -> tuple[bool, str]:
            return (not any(op.kind == "user.upsert" for op in by_origin[origin]), origin)

        for origin in sorted(by_origin, key=staff_first):
            group_nodes = [n for n in nodes if n.node_id == origin]
            try:
                result = self.replica.ingest(by_origin[origin], group_nodes)
            except MeshposError as exc:
                self._refuse(session.peer, "rejected", str(exc), now, out)
                continue
            applied.extend(result.applied_ops)
        _max_merge(session.sent_vv, session.their_vv)
        self._have(session, now, out)
        if applied:
            out.append(Applied(session.peer, tuple(applied)))
            for other in self.sessions.values():
                if other is not session and other.ready:
                    other.have_due = True
                    self._pump(other, now, out)

    def _on_have(self, session: Session, msg: Have, now: int, out: list[Action]) -> None:
        if msg.epoch != session.peer_epoch:
            self._other_incarnation(session, now, out)
            return
        if msg.flags is not None:
            session.peer_flags = dict(msg.flags)
        if msg.direct is not None:
            direct = frozenset(msg.direct)
            for origin in direct - session.peer_direct:
                session.direct_progress[origin] = now
            session.peer_direct = direct
        sent = dict(session.sent_vv)
        for origin in _max_merge(session.their_vv, msg.vv):
            session.progress[origin] = now
            session.direct_progress[origin] = now
            if session.their_vv[origin] > sent.get(origin, 0):
                session.fed_elsewhere[origin] = now
        _max_merge(session.sent_vv, session.their_vv)
        self._pump(session, now, out)

    def _have(self, session: Session, now: int, out: list[Action]) -> None:
        """Our version vector, and the nodes we have a session with and our flags when they
        changed since the last Have to this peer (or anti-entropy is due: a lost Have heals).
        The flags ride here too because a busy link sends no idle Ping that would repeat them:
        a peer that missed them would elect a relay from stale ones."""
        direct = tuple(sorted(p for p, s in self.sessions.items() if s.ready))
        flags = self._flags()
        periodic = now - session.last_have >= self.config.anti_entropy_ms
        told = direct if direct != session.told_direct or periodic else None
        said = flags if flags and (flags != session.told_flags or periodic) else None
        session.told_direct, session.told_flags = direct, flags
        self._send(session, Have(self.replica.vv(), self.epoch, told, said), now, out)
        session.last_have = now
        session.have_due = False

    def _direct_changed(self) -> None:
        """A session went down: the others hear on the next tick, and forward its ops again."""
        for other in self.sessions.values():
            if other.ready:
                other.have_due = True

    def _fed_directly(self, session: Session, origin: str, now: int) -> bool:
        """Whether the peer gets `origin`'s ops from `origin` itself: it says it has a session
        with it, and its acknowledgements of that origin moved lately. An origin that cannot
        give what the peer lacks (a node restored from an old backup) stops the progress, and
        then we forward after all."""
        if origin not in session.peer_direct:
            return False
        moved = session.direct_progress.get(origin, now)
        return now - moved <= 2 * self.config.retransmit_ms

    def _other_incarnation(self, session: Session, now: int, out: list[Action]) -> None:
        """A Have or Ops from another epoch than our session's: a restart of the peer reordered
        with its messages (its Hello, or ones its previous run sent, arrived late). That message
        does not describe the peer's ledger now, which a wipe may have emptied: ask for a Hello,
        whose epoch and version vector reset the session."""
        if now - session.last_hello >= self.config.hello_retry_ms:
            self._hello(session, now, out, ask=True)

    # -- sending --------------------------------------------------------------------------------

    def _retransmit(self, session: Session, now: int) -> None:
        """Go back to what the peer acknowledged for each origin whose ops in flight saw no
        progress for `retransmit_ms` (a batch was lost, or refused for lack of a node record, which
        therefore goes again too). Per origin, so acks for busy origins do not hide a stuck one."""
        for origin, sent in session.sent_vv.items():
            acked = session.their_vv.get(origin, 0)
            if sent > acked and now - session.progress.get(origin, now) > self.config.retransmit_ms:
                session.sent_vv[origin] = acked
                session.known_nodes.discard(origin)
                session.progress[origin] = now

    def _pump(self, session: Session, now: int, out: list[Action]) -> None:
        """Send what the peer lacks, in bounded batches, while the window has room.

        Our own ops go at once. Ops of other origins are forwarded only after `forward_delay_ms`
        without the peer acknowledging them: in a full mesh the peer gets them from their origin
        directly, and the delay (plus the Have every node sends after applying) avoids sending
        each op twice; when the origin is out of the peer's reach, the delay is all it costs.
        While the peer's acks show it getting an origin's ops from elsewhere (a catch-up from the
        origin itself), or it says it has a session with the origin, the delay keeps restarting,
        so a healed backlog is not sent twice.
        """
        if not session.ready:
            return
        ours = self.replica.vv()
        sent = session.sent_vv
        if not session.lag_since and all(seq <= sent.get(o, 0) for o, seq in ours.items()):
            return  # nothing new for this peer: the common case of every tick and every ack
        cfg = self.config
        room = cfg.window_ops - session.inflight()
        if room <= 0:
            return
        eligible = dict(sent)
        for origin, seq in ours.items():
            if seq <= sent.get(origin, 0):
                session.lag_since.pop(origin, None)
            elif origin != self.me.node_id:
                if (
                    now - session.fed_elsewhere.get(origin, -cfg.forward_delay_ms)
                    < cfg.forward_delay_ms
                ) or self._fed_directly(session, origin, now):
                    session.lag_since[origin] = now  # still being fed: keep holding off
                since = session.lag_since.setdefault(origin, now)
                if now - since < cfg.forward_delay_ms:
                    eligible[origin] = seq
        while room > 0:
            raw = self.replica.raw_since(eligible, min(cfg.batch_ops, room, MAX_BATCH_OPS))
            if not raw:
                return
            batch: list[bytes] = []
            size = 0
            beside = self.replica.sealed_blobs()
            for origin, seq, body, sig in raw:
                wire = wire_of(body, sig, beside.get((origin, seq)))
                if batch and size + len(wire) > cfg.batch_bytes:
                    break
                batch.append(wire)
                size += len(wire)
                if session.sent_vv.get(origin, 0) <= session.their_vv.get(origin, 0):
                    session.progress[origin] = now
                session.sent_vv[origin] = eligible[origin] = seq
            origins = {origin for origin, *_ in raw[: len(batch)]}
            missing = origins - session.known_nodes
            nodes: tuple[tuple[str, bytes, str, str, bytes | None], ...] = ()
            if missing:
                nodes = tuple(n.as_row() for n in self.replica.nodes() if n.node_id in missing)
                session.known_nodes |= missing
            self._send(session, Ops(tuple(batch), nodes, self.epoch), now, out)
            room -= len(batch)

    def cut_off(self, peer: str, reason: str, now: int) -> list[Action]:
        """End a revoked peer's session at once, telling it why (an Error with code
        "revoked"); its next Hello is refused the same way."""
        session = self.sessions.pop(peer, None)
        out: list[Action] = [Send(peer, encode(Error(REVOKED, reason)))]
        if session is not None and session.ready:
            out.append(PeerDown(peer, f"revoked: {reason}"))
        return out

    def _send(self, session: Session, msg: Message, now: int, out: list[Action]) -> None:
        zdict = compression.for_batch(session.zdict, len(msg.ops)) if isinstance(msg, Ops) else 0
        data = encode(msg, zdict)
        session.last_sent = now
        session.bytes_sent += len(data)
        out.append(Send(session.peer, data))

    def _refuse(self, peer: str, code: str, reason: str, now: int, out: list[Action]) -> None:
        out.append(Rejected(peer, reason))
        out.append(Send(peer, encode(Error(code, reason))))


def sends(actions: Sequence[Action]) -> list[Send]:
    return [a for a in actions if isinstance(a, Send)]
