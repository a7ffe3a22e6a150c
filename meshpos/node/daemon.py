"""The terminal daemon: ledger + sans-IO sync + ZeroMQ transport + mDNS discovery, in one loop.

One thread runs everything that touches the ledger and the sockets; zeroconf's thread only queues
discovery events. CLI commands ring sales by writing the same SQLite database (WAL, every write a
BEGIN IMMEDIATE transaction); the daemon notices commits from other processes through SQLite's
`PRAGMA data_version` and pushes the new ops at once. We chose this over an RPC to the daemon
because a sale then never depends on the daemon being up: with the daemon down the terminal still
sells, and the daemon pushes the backlog when it starts.

The daemon records, per peer, the highest seq of this node's ops that the peer acknowledged as
durable (`peer_acks`), so a selling process can wait a few tens of ms for a second copy and
`meshpos status` can say how many local ops are held by this node only. It also writes
`status.json` every second (and at once when a peer comes or goes) for `meshpos status` and
`meshpos peers`. Acks go through a second connection with `synchronous=OFF`: they are advice (a
power cut can only make the count lower), so recording one costs no fsync on the path of a sale.

Latency: commits by other processes are noticed by polling `data_version` every `wake_ms` (the
transport poll's timeout), so a CLI sale reaches its peers within a few ms; a link that comes up
(after a partition or a peer's restart) opens a sync session at once, and a link that is up with
no session (the session died of silence while ZeroMQ kept the TCP link) gets one within a second.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zmq.utils import z85

from meshpos.core.clock import wall_ms
from meshpos.core.errors import ConfigError, MeshposError, NotFound
from meshpos.domain.enrolment import NodeRecord, admit_record, read_certificate
from meshpos.domain.escrow import plan_asks
from meshpos.domain.relay import elect
from meshpos.ledger.fold import CARD_FLOAT
from meshpos.ledger.store import open_connection
from meshpos.node.discovery import Advert, Discovery, PeerAdded, PeerEvent, PeerRemoved
from meshpos.node.membership import Membership, load
from meshpos.node.relay import RelaySettings, RelayWorker
from meshpos.node.transport import LinkState, Transport
from meshpos.service import escrow
from meshpos.service.backup.schedule import maybe_backup
from meshpos.service.daemon_link import STATUS_FILE, SYNC_NOW_FILE, acked_seq, ensure_acks_table
from meshpos.service.printing import DaemonPrinting
from meshpos.service.terminal import Terminal
from meshpos.sync.messages import PROTOCOL_VERSION
from meshpos.sync.protocol import (
    Action,
    Applied,
    PeerComplained,
    PeerDown,
    PeerUp,
    Rejected,
    RequestReceived,
    Send,
    SyncConfig,
    SyncNode,
)
from meshpos.web.server import web_till

log = logging.getLogger("meshpos.node")
REPEAT_WARNING_S = 60.0
STATUS_EVERY_S = 0.2  # at most this often when something changed; every second regardless


@dataclass(frozen=True)
class MeshSettings:
    """The `[mesh]` table of meshpos.toml."""

    host: str = "127.0.0.1"
    port: int = 0
    discovery: bool = True
    mdns_ip: str | None = None
    static_peers: tuple[dict[str, Any], ...] = ()
    min_copies: int = 2
    copy_wait_ms: int = 50
    tick_ms: int = 50
    wake_ms: int = 5

    @classmethod
    def from_config(cls, raw: dict[str, Any], where: str) -> MeshSettings:
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(f"{where}: unknown [mesh] key(s) {', '.join(sorted(unknown))}")
        values = dict(raw)
        for key in ("port", "min_copies", "copy_wait_ms", "tick_ms", "wake_ms"):
            if key in values and (not isinstance(values[key], int) or values[key] < 0):
                raise ConfigError(f"{where}: [mesh] {key} must be a whole number >= 0")
        peers = values.get("static_peers", [])
        if not isinstance(peers, list) or not all(
            isinstance(p, dict) and {"node", "host", "port"} <= set(p) for p in peers
        ):
            raise ConfigError(f"{where}: [mesh] static_peers entries need node, host and port")
        values["static_peers"] = tuple(peers)
        return cls(**values)


@dataclass
class PeerInfo:
    node_id: str
    name: str = ""
    address: str = ""
    last_seen_ms: int = 0
    up: bool = False
    vv: dict[str, int] = field(default_factory=dict)  # last known, kept when the session ends


@dataclass
class Daemon:
    terminal: Terminal
    mesh: MeshSettings
    membership: Membership
    stop_event: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        t = self.terminal
        ensure_acks_table(t)
        if self.membership.cert is None or self.membership.store_public_key is None:
            raise ConfigError(
                f"node {t.cfg.name} is not enrolled: run `meshpos store init` (first terminal) or "
                "`meshpos enroll request/sign/install`"
            )
        self.me = NodeRecord(
            t.node_id, t.signer.public_key, t.cfg.store, t.cfg.name, self.membership.cert.raw
        )
        # Our own row travels with our ops: without the certificate (a fresh or replaced
        # database holds a bare row) peers would refuse every op we send.
        t.ledger.add_node(self.me)
        self.sync = SyncNode(
            t.ledger,
            self.me,
            epoch=wall_ms(),
            admit=self._admit,
            config=SyncConfig(),
        )
        self.transport = Transport(t.node_id, self.membership.curve, self.mesh.host, self.mesh.port)
        self.events: queue.Queue[PeerEvent] = queue.Queue()
        self.discovery: Discovery | None = None
        self.peers: dict[str, PeerInfo] = {}
        self._data_version = 0
        self._last_ack = acked_seq(t)
        self._acks: dict[str, int] = {}
        self._acks_conn = open_connection(t.ledger.path, t.ledger.key)
        self._acks_conn.isolation_level = None
        self._acks_conn.execute("PRAGMA busy_timeout = 30000")
        self._acks_conn.execute("PRAGMA synchronous = OFF")
        self._status_due = False
        self._status_at = 0.0
        self._next_tick = 0.0
        self._shun: dict[str, float] = {}  # refused peers to cut off, and since when
        self._targets: dict[str, tuple[str, int, bytes]] = {}  # where and how we dial a peer
        self._said: dict[tuple[str, ...], float] = {}
        self.printing = DaemonPrinting(t, self._print_request)
        self.relay: RelayWorker | None = None
        relay = RelaySettings.from_config(t.cfg.section("hq"), str(t.cfg.dir / "meshpos.toml"))
        if relay.url:
            directory = t.cfg.dir
            self.relay = RelayWorker(lambda: Terminal.open(directory), relay)
        self._relay_choice: str | None = None
        self._wan_peers: set[str] = set()  # peers whose last ping said they reach HQ

    # -- admission ------------------------------------------------------------------------------

    def _admit(self, node: NodeRecord) -> str | None:
        reason = admit_record(node, self.membership.store_public_key, self.terminal.cfg.store)
        if reason is None and node.cert is not None and node.node_id in self.transport.allowed():
            cert = read_certificate(node.cert, self.membership.store_public_key or b"", node.store)
            if self.transport.allowed()[node.node_id] != cert.curve_key:
                self.transport.allow(node.node_id, cert.curve_key)
                return "its transport key is not the one its certificate names"
        return reason

    def _allow_known(self) -> None:
        """Let every enrolled node we know of through the CURVE handshake."""
        pub = self.membership.store_public_key
        allowed = self.transport.allowed()
        for node in self.terminal.ledger.nodes():
            if node.node_id == self.me.node_id or node.cert is None or pub is None:
                continue
            try:
                cert = read_certificate(node.cert, pub, node.store)
            except MeshposError:
                continue
            if allowed.get(node.node_id) != cert.curve_key:
                self.transport.allow(node.node_id, cert.curve_key)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        t = self.terminal
        self.transport.start()
        self._allow_known()
        log.info(
            "node %s (%s) of store %s listening on %s:%d",
            t.cfg.name,
            t.node_id,
            t.cfg.store,
            self.mesh.host,
            self.transport.port,
        )
        if self.mesh.discovery:
            fp = z85.decode(self.membership.curve.public).hex()
            advert = Advert(
                t.cfg.store, t.node_id, t.cfg.name, fp, PROTOCOL_VERSION, self.transport.port
            )
            self.discovery = Discovery(
                advert, self.events.put, ip=self.mesh.mdns_ip or self.mesh.host
            )
            self.discovery.start(wait=False)
        self._dial_static()
        self.printing.start()
        if self.relay is not None:
            self.relay.start()

    def close(self) -> None:
        if self.relay is not None:
            self.relay.stop()
            self.relay.join(timeout=5)
        self.printing.close()
        if self.discovery is not None:
            self.discovery.close()
        self.transport.close()
        self._acks_conn.close()
        self._write_status(final=True)

    def run(self) -> None:
        self.start()
        try:
            with web_till(self.terminal.cfg):  # the web till hook: served when [web] port is set
                self.loop()
        finally:
            self.close()

    def loop(self) -> None:
        next_status = 0.0
        while not self.stop_event.is_set():
            wait = min(self.mesh.tick_ms // 2, self.mesh.wake_ms) or 1
            received = self.transport.poll(timeout_ms=wait)
            for peer, data in received:
                self._do(self.sync.receive(peer, data, wall_ms()))
                self._tick_if_due()  # applying a burst of big batches takes a while
            if received:
                self._record_acks()
            self._link_events()
            self._discovery_events()
            self._local_changes()
            self.printing.tick(wall_ms())
            self._relay_tick()
            maybe_backup(self.terminal, wall_ms())  # [backup] every_minutes, in a child process
            self._tick_if_due()
            now = time.monotonic()
            if now >= next_status:
                next_status = now + 1.0
                self._allow_known()
                self._dial_static()
                self._check_bootstrap()
                self._cut_off_refused()
                self._resume_sessions()
                self._write_status()
            elif self._status_due and now - self._status_at >= STATUS_EVERY_S:
                self._write_status()

    def _tick_if_due(self) -> None:
        """The protocol's timers (acks to other peers, pings, retransmits), every tick_ms."""
        now = time.monotonic()
        if now >= self._next_tick:
            self._next_tick = now + self.mesh.tick_ms / 1000
            self._do(self.sync.tick(wall_ms()))
            self._record_acks()

    # -- events ---------------------------------------------------------------------------------

    def _dial_static(self) -> None:
        """Dial the static peers of `[mesh] static_peers` we have no link to yet. Called again
        every second: a peer whose certificate arrives later (by the mesh, a bundle or HQ) is
        dialled as soon as it is in the roster."""
        for peer in self.mesh.static_peers:
            node_id = str(peer["node"])
            if node_id in self._targets:
                continue
            if node_id not in self.transport.allowed():
                self._warn(
                    ("static", node_id),
                    "static peer %s at %s:%s is not in this node's roster yet",
                    node_id,
                    peer["host"],
                    peer["port"],
                )
                continue
            self._dial(node_id, str(peer["host"]), int(peer["port"]), None)

    def _dial(self, node_id: str, host: str, port: int, fp: str | None) -> None:
        if node_id == self.me.node_id:
            return
        key = self.transport.allowed().get(node_id)
        if key is None and fp:
            try:
                key = z85.encode(bytes.fromhex(fp))
            except ValueError:
                log.warning("peer %s at %s:%d advertises a malformed key", node_id, host, port)
                return
            self.transport.allow(node_id, key)
        if key is None:
            log.warning("static peer %s at %s:%d is not in this node's roster", node_id, host, port)
            return
        info = self.peers.setdefault(node_id, PeerInfo(node_id))
        info.address = f"{host}:{port}"
        self._targets[node_id] = (host, port, key)
        self.transport.connect(node_id, host, port, key)
        self._do(self.sync.connect(node_id, wall_ms()))

    def _redial(self, node_id: str) -> None:
        """Dial again now: the peer just admitted us over its own link, so it knows our key,
        but our link to it was refused before it discovered us (the transport would wait a
        second to retry, and our Hello answer would be lost meanwhile)."""
        target = self._targets.get(node_id)
        if target is not None and not self.transport.is_up(node_id):
            self.transport.disconnect(node_id)
            self.transport.connect(node_id, *target)

    def _link_events(self) -> None:
        for event in self.transport.link_events():
            if event.state is LinkState.UP:
                self._do(self.sync.connect(event.node_id, wall_ms()))
            elif event.state is LinkState.DOWN:
                self._do(self.sync.disconnect(event.node_id))

    def _warn(self, key: tuple[str, ...], msg: str, *args: object) -> None:
        """WARNING once a minute per key, DEBUG in between: a refused node retries forever."""
        now = time.monotonic()
        fresh = now - self._said.get(key, -REPEAT_WARNING_S) >= REPEAT_WARNING_S
        if fresh:
            if len(self._said) > 1000:
                self._said.clear()
            self._said[key] = now
        log.log(logging.WARNING if fresh else logging.DEBUG, msg, *args)

    def _cut_off_refused(self) -> None:
        """Revoke the CURVE key of a peer refused before it had a session (not admitted, or
        garbage instead of a Hello), a second after the refusal so it gets our reason first. It
        is allowed again when discovery announces it anew (say, re-enrolled and restarted)."""
        now = time.monotonic()
        for peer, since in list(self._shun.items()):
            if now - since >= 1.0:
                del self._shun[peer]
                if peer not in self.sync.sessions:
                    self.transport.revoke(peer)
                    log.info("cut off refused peer %s until it is announced again", peer)

    def _resume_sessions(self) -> None:
        for peer in self.transport.peers():
            if self.transport.is_up(peer) and peer not in self.sync.sessions:
                self._do(self.sync.connect(peer, wall_ms()))

    def _discovery_events(self) -> None:
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            if isinstance(event, PeerAdded):
                a = event.advert
                host = a.addresses[0] if a.addresses else "127.0.0.1"
                log.info("discovered %s (%s) at %s:%d", a.name, a.node_id, host, a.port)
                self.peers.setdefault(a.node_id, PeerInfo(a.node_id)).name = a.name
                self._dial(a.node_id, host, a.port, a.key_fingerprint)
            elif isinstance(event, PeerRemoved):
                log.info("peer %s left the LAN (mDNS goodbye)", event.node_id)
                self._do(self.sync.disconnect(event.node_id))
            else:
                a = event.advert
                host = a.addresses[0] if a.addresses else "127.0.0.1"
                self._dial(a.node_id, host, a.port, a.key_fingerprint)

    def _local_changes(self) -> None:
        version = self.terminal.ledger.conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._data_version = version
            self._do(self.sync.local_changed(wall_ms()))
            self._escrow_asks()
            self._wake_relay()

    def _wake_relay(self) -> None:
        if self.relay is not None and self.relay.is_relay:
            self.relay.poke()

    def _do(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Send):
                # No link yet: the peer dialled us before discovery told us where it listens.
                # Dropped, not queued: the protocol resends once the link is up.
                with contextlib.suppress(NotFound):
                    self.transport.send(a.peer, a.data)
            elif isinstance(a, PeerUp):
                info = self.peers.setdefault(a.peer, PeerInfo(a.peer))
                info.name, info.up = a.name, True
                self._status_due = True
                log.info("peer %s (%s) is up", a.name, a.peer)
                self._redial(a.peer)
            elif isinstance(a, PeerDown):
                if a.peer in self.peers:
                    self.peers[a.peer].up = False
                self._status_due = True
                log.info("peer %s is down: %s", a.peer, a.reason)
            elif isinstance(a, Rejected):
                addr = self.transport.inbound_address(a.peer) or "unknown address"
                self._warn(
                    ("refused", a.peer, a.reason),
                    "refused peer %s at %s: %s",
                    a.peer,
                    addr,
                    a.reason,
                )
                if a.peer not in self.sync.sessions:
                    self._shun.setdefault(a.peer, time.monotonic())
            elif isinstance(a, PeerComplained):
                self._warn(
                    ("complained", a.peer, a.reason),
                    "peer %s refused our data (%s): %s",
                    a.peer,
                    a.code,
                    a.reason,
                )
            elif isinstance(a, Applied):
                if a.peer in self.peers:
                    self.peers[a.peer].last_seen_ms = wall_ms()
                log.debug("applied %d ops from %s", len(a.ops), a.peer)
                self._wake_relay()
            elif isinstance(a, RequestReceived):
                self._on_request(a)

    def _on_request(self, req: RequestReceived) -> None:
        if self._on_print_request(req):
            return
        if req.kind == escrow.NEED:
            try:
                granted = escrow.handle_need(self.terminal, req.peer, req.body)
            except MeshposError as exc:
                log.warning("refused request from %s: %s", req.peer, exc)
                return
            log.info(
                "escrow: granted %d points of %s to %s",
                granted,
                req.body.get("customer_id"),
                req.peer,
            )
            if granted:
                self._do(self.sync.local_changed(wall_ms()))
        else:
            log.warning("unknown request %r from %s", req.kind, req.peer)

    # -- printing (devices/service.py): the local queue's worker and printer failover --------

    def _print_request(self, peer: str, kind: str, body: dict[str, object]) -> bool:
        """Send a print request to a peer; False when its session is not up."""
        actions = self.sync.request(peer, kind, body, wall_ms())
        self._do(actions)
        return bool(actions)

    def _on_print_request(self, req: RequestReceived) -> bool:
        """A peer forwarding its receipts to our printer, or acknowledging ours."""
        return self.printing.on_request(req.peer, req.kind, req.body, wall_ms())

    def _escrow_asks(self) -> None:
        t = self.terminal
        for customer, points in escrow.take_unsent(t):
            holdings = {p: t.rights(customer, p) for p in self.sync.ready_peers()}
            plan = plan_asks(points, holdings)
            for peer, wanted in plan.items():
                body: dict[str, object] = {"customer_id": customer, "points": wanted}
                self._do(self.sync.request(peer, escrow.NEED, body, wall_ms()))
            log.info("escrow: asked %d peers for %d points of %s", len(plan), points, customer)
            self._claim_from_hq(customer, points)

    def _claim_from_hq(self, customer: str, points: int) -> None:
        """What no LAN peer holds rights for, this node asks HQ for when it reaches HQ itself:
        HQ moves rights it holds in other stores here (docs/hq-api.md, loyalty across stores)."""
        if self.relay is None or not self.relay.status.wan_ok or customer == CARD_FLOAT:
            return  # the card float of a store never moves through HQ
        t = self.terminal
        nearby = sum(max(0, t.rights(customer, peer)) for peer in self.sync.ready_peers())
        if points > nearby:
            self.relay.claims.put((customer, points - nearby))
            self.relay.poke()

    def _record_acks(self) -> None:
        me = self.me.node_id
        rows = []
        for peer, session in self.sync.sessions.items():
            if session.ready:
                info = self.peers.setdefault(peer, PeerInfo(peer))
                info.last_seen_ms, info.vv = session.last_heard, session.their_vv
                seq = session.their_vv.get(me, 0)
                if seq > self._acks.get(peer, 0):
                    self._acks[peer] = seq
                    rows.append((peer, seq, wall_ms()))
        if rows:
            self._status_due = True
            with self._acks_conn:
                self._acks_conn.execute("BEGIN IMMEDIATE")
                self._acks_conn.executemany(
                    "INSERT OR REPLACE INTO peer_acks VALUES (?, ?, ?)", rows
                )

    def _check_bootstrap(self) -> None:
        """A terminal that lost its database resumes signing once a peer's Hello showed how many
        of its own ops the mesh holds and it has all of them back."""
        t = self.terminal
        if not t.bootstrapping():
            return
        ready = [s for s in self.sync.sessions.values() if s.ready]
        if not ready:
            return
        target = max(s.their_vv.get(self.me.node_id, 0) for s in ready)
        held = t.ledger.head(self.me.node_id)[0]
        if held >= target:
            t.set_bootstrapping(False)
            log.info("bootstrap complete: %d of this terminal's own ops recovered from peers", held)

    # -- the HQ relay (meshpos/node/relay.py) ---------------------------------------------------------

    def _relay_tick(self) -> None:
        """Tell peers whether we reach HQ, elect the relay, wake it when there is work."""
        sync_now = self.terminal.cfg.dir / SYNC_NOW_FILE
        if self.relay is None:
            sync_now.unlink(missing_ok=True)
            return
        wan = self.relay.status.wan_ok
        self._do(self.sync.set_flags(wall_ms(), wan=wan, pushing=self.relay.pushing))
        flags = self.sync.peer_flag("wan")
        reaching = {p for p, ok in flags.items() if ok}
        if not wan and reaching - self._wan_peers:
            self.relay.probe_soon()  # HQ may be back: every node should know within ms
        self._wan_peers = reaching
        choice = elect(self.me.node_id, wan, flags)
        first = self._relay_choice is None
        if choice != self._relay_choice:
            name = self.peers[choice].name if choice in self.peers else choice
            if choice is None:
                name = "nobody (no node reaches HQ)"
            log.info("HQ relay is now %s", "this node" if choice == self.me.node_id else name)
            self._relay_choice = choice
        others_pushing = any(self.sync.peer_flag("pushing").values())
        self.relay.elected(
            choice, choice == self.me.node_id, first=first, others_pushing=others_pushing
        )
        while True:
            try:
                peer, customer, points, to = self.relay.outbox.get_nowait()
            except queue.Empty:
                break
            body: dict[str, object] = {"customer_id": customer, "points": points, "to": to}
            actions = self.sync.request(peer, escrow.NEED, body, wall_ms())
            self._do(actions)
            if actions:
                log.info("loyalty: asked %s to grant %d points of %s to HQ", peer, points, customer)
        if sync_now.exists():
            sync_now.unlink(missing_ok=True)
            self.relay.poke(force=True)

    def status(self) -> dict[str, Any]:
        ours = self.terminal.ledger.vv()
        peers = []
        for nid, info in sorted(self.peers.items(), key=lambda kv: kv[1].name):
            session = self.sync.sessions.get(nid)
            theirs = session.their_vv if session else info.vv
            behind = sum(max(0, s - theirs.get(o, 0)) for o, s in ours.items())
            ahead = sum(max(0, s - ours.get(o, 0)) for o, s in theirs.items())
            peers.append(
                {
                    "node_id": nid,
                    "name": info.name or (session.name if session else ""),
                    "address": info.address,
                    "up": bool(session and session.ready),
                    "last_seen_ms": session.last_heard if session else info.last_seen_ms,
                    "behind": behind,
                    "ahead": ahead,
                }
            )
        return {
            "pid": os.getpid(),
            "written": time.time(),
            "node_id": self.me.node_id,
            "name": self.terminal.cfg.name,
            "port": self.transport.port,
            "peers_up": sum(1 for p in peers if p["up"]),
            "peers": peers,
            "rejected": self.transport.rejected,
            "wan": self.relay.snapshot() if self.relay is not None else None,
            "traffic": {
                nid: {
                    "messages_sent": st.messages_sent,
                    "bytes_sent": st.bytes_sent,
                    "messages_received": st.messages_received,
                    "bytes_received": st.bytes_received,
                    "sends_refused": st.sends_refused,
                }
                for nid, st in self.transport.stats().items()
            },
        }

    def _write_status(self, final: bool = False) -> None:
        path = self.terminal.cfg.dir / STATUS_FILE
        self._status_due = False
        self._status_at = time.monotonic()
        if final:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status(), indent=1))
        tmp.replace(path)


def run_daemon(directory: Path, overrides: dict[str, Any] | None = None) -> None:
    t = Terminal.open(directory)
    raw = dict(t.cfg.section("mesh"))
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    mesh = MeshSettings.from_config(raw, str(t.cfg.dir / "meshpos.toml"))
    daemon = Daemon(t, mesh, load(t.cfg))

    def stop(signum: int, frame: object) -> None:
        log.info("stopping on signal %d", signum)
        daemon.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    daemon.run()
    t.close()
