"""The terminal daemon: the node core driven by ZeroMQ, mDNS discovery and the wall clock.

Everything the node decides (sync, escrow asks and grants, copy acks, the relay election, the
bootstrap check, print jobs between peers) is in the sans-IO `NodeCore` (meshpos/node/core.py),
which the outage simulator drives too. This module is the thin adapter around it: it turns socket
and discovery events into calls on the core and carries out the actions the core returns (send
bytes, tell the relay worker, log, record acks, write the status file).

One thread runs everything that touches the ledger and the sockets; zeroconf's thread only queues
discovery events. CLI commands ring sales by writing the same SQLite database (WAL, every write a
BEGIN IMMEDIATE transaction); the daemon notices commits from other processes through SQLite's
`PRAGMA data_version` and tells the core at once. We chose this over an RPC to the daemon
because a sale then never depends on the daemon being up: with the daemon down the terminal still
sells, and the daemon pushes the backlog when it starts.

The core reports, per peer, the highest seq of this node's ops that the peer acknowledged as
durable; the daemon records it in `peer_acks`, so a selling process can wait a few tens of ms for
a second copy and `meshpos status` can say how many local ops are held by this node only. It also
writes `status.json` every second (and at once when a peer comes or goes) for `meshpos status`
and `meshpos peers`. Acks go through a second connection with `synchronous=OFF`: they are advice
(a power cut can only make the count lower), so recording one costs no fsync on the path of a sale.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zmq.utils import z85

from meshpos.core.clock import wall_ms
from meshpos.core.errors import ConfigError, MeshposError, NotFound
from meshpos.core.ops import Op
from meshpos.domain.enrolment import NodeRecord, admit_record, read_certificate
from meshpos.domain.revocation import REVOKE_KIND
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
from meshpos.node.discovery import Advert, Discovery, PeerAdded, PeerEvent, PeerRemoved
from meshpos.node.host import TerminalHost
from meshpos.node.membership import Membership, load
from meshpos.node.metrics import NodeMetrics
from meshpos.node.relay import RelaySettings, RelayWorker
from meshpos.node.transport import LinkState, Transport
from meshpos.service.backup.schedule import maybe_backup
from meshpos.service.clocks import clocks_ahead
from meshpos.service.config import write_private
from meshpos.service.daemon_link import STATUS_FILE, SYNC_NOW_FILE
from meshpos.service.logs import log_fields
from meshpos.service.metrics import MetricsServer, MetricsSettings
from meshpos.service.power import PowerWatch
from meshpos.service.printing import DaemonPrinting
from meshpos.service.terminal import Terminal
from meshpos.sync.messages import PROTOCOL_VERSION
from meshpos.sync.protocol import (
    REVOKED,
    Admit,
    Applied,
    PeerComplained,
    PeerDown,
    PeerUp,
    Rejected,
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
    max_skew_ms: int = 300_000  # ops stamped further ahead of our clock are flagged, not followed

    @classmethod
    def from_config(cls, raw: dict[str, Any], where: str) -> MeshSettings:
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(f"{where}: unknown [mesh] key(s) {', '.join(sorted(unknown))}")
        values = dict(raw)
        for key in ("port", "min_copies", "copy_wait_ms", "tick_ms", "wake_ms", "max_skew_ms"):
            if key in values and (not isinstance(values[key], int) or values[key] < 0):
                raise ConfigError(f"{where}: [mesh] {key} must be a whole number >= 0")
        peers = values.get("static_peers", [])
        if not isinstance(peers, list) or not all(
            isinstance(p, dict) and {"node", "host", "port"} <= set(p) for p in peers
        ):
            raise ConfigError(f"{where}: [mesh] static_peers entries need node, host and port")
        values["static_peers"] = tuple(peers)
        return cls(**values)


def _op_range(ops: tuple[Op, ...]) -> dict[str, str]:
    """The `op` log field of a batch: `origin:seq`, or `origin:first-last` for a run."""
    if not ops:
        return {}
    first, last = ops[0], ops[-1]
    if first.origin == last.origin and first.seq != last.seq:
        return {"op": f"{first.origin}:{first.seq}-{last.seq}"}
    return {"op": f"{first.origin}:{first.seq}"}


def node_core(
    t: Terminal,
    me: NodeRecord,
    *,
    epoch: int,
    admit: Admit,
    revoked: Callable[[str], str | None] | None = None,
) -> NodeCore:
    """The daemon's node core: the terminal's own ledger behind the sync protocol, at the
    protocol's default timing; this run of the node starts at `epoch` (wall ms)."""
    sync = SyncNode(t.ledger, me, epoch=epoch, admit=admit, config=SyncConfig(), revoked=revoked)
    return NodeCore(sync, TerminalHost(t), started=epoch)


@dataclass
class Daemon:
    terminal: Terminal
    mesh: MeshSettings
    membership: Membership
    stop_event: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        t = self.terminal
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
        self.transport = Transport(t.node_id, self.membership.curve, self.mesh.host, self.mesh.port)
        self._revoked: dict[str, str] = {}  # node -> why, as this node's ledger says
        self._revocation_due = False
        self._cut: dict[str, float] = {}  # revoked peers told why, and when: links closed later
        self._note_revocations()
        self._cut = dict.fromkeys(self._revoked, 0.0)
        self.core = node_core(
            t, self.me, epoch=wall_ms(), admit=self._admit, revoked=self._revoked.get
        )
        self.printing = DaemonPrinting(t, self.core.send_request)
        self.core.printing = self.printing
        self.power = PowerWatch(t, wall_ms)  # battery and UPS, for the banner
        self.events: queue.Queue[PeerEvent] = queue.Queue()
        self.discovery: Discovery | None = None
        self._data_version = 0
        self._acks_due: dict[str, tuple[int, int]] = {}  # peer -> (seq, at), not yet written
        self._closing = contextlib.ExitStack()
        self._acks = self._closing.enter_context(t.ledger.advisory_acks())
        self._status_due = False
        self._status_at = 0.0
        self._next_tick = 0.0
        self._shun: dict[str, float] = {}  # refused peers to cut off, and since when
        self._targets: dict[str, tuple[str, int, bytes]] = {}  # where and how we dial a peer
        self._said: dict[tuple[str, ...], float] = {}
        self.relay: RelayWorker | None = None
        self.last_status: dict[str, object] | None = None  # what the metrics read
        self.metrics: MetricsServer | None = None
        self._node_metrics: NodeMetrics | None = None
        relay = RelaySettings.from_config(t.cfg.section("hq"), str(t.cfg.dir / "meshpos.toml"))
        if relay.url:
            directory = t.cfg.dir
            self.relay = RelayWorker(lambda: Terminal.open(directory), relay)

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
        """Let every enrolled node we know of through the CURVE handshake, revoked ones aside."""
        pub = self.membership.store_public_key
        allowed = self.transport.allowed()
        for node in self.terminal.ledger.nodes():
            if node.node_id == self.me.node_id or node.cert is None or pub is None:
                continue
            if node.node_id in self._revoked:
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
        self._start_metrics()

    def _start_metrics(self) -> None:
        """Serve /metrics when `[metrics] port` is set; one that cannot start is logged, never a
        reason to stop syncing."""
        t = self.terminal
        try:
            settings = MetricsSettings.from_table(
                t.cfg.section("metrics"), str(t.cfg.dir / "meshpos.toml")
            )
            if settings.port is None:
                return
            self._node_metrics = NodeMetrics(t.cfg.dir, t.node_id, lambda: self.last_status)
            self.metrics = MetricsServer(self._node_metrics.registry, settings.host, settings.port)
        except MeshposError as exc:
            log.error("metrics not served: %s", exc)
            return
        log.info("metrics on %s", self.metrics.url)

    def close(self) -> None:
        if self.relay is not None:
            self.relay.stop()
            self.relay.join(timeout=5)
        self.printing.close()
        if self.discovery is not None:
            self.discovery.close()
        self.transport.close()
        if self.metrics is not None:
            self.metrics.close()
        if self._node_metrics is not None:
            self._node_metrics.close()
        self._closing.close()
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
                if peer in self._revoked:
                    continue  # in flight when its key left the allow-list
                with log_fields(peer=peer):
                    self._do(self.core.receive(peer, data, wall_ms()))
                self._tick_if_due()  # applying a burst of big batches takes a while
            self._write_acks()
            if self._revocation_due:
                self._revocation_due = False
                self._enforce_revocations()
            self._link_events()
            self._discovery_events()
            self._local_changes()
            self._relay_tick()
            maybe_backup(self.terminal, wall_ms())  # [backup] every_minutes, in a child process
            self._tick_if_due()
            now = time.monotonic()
            if now >= next_status:
                next_status = now + 1.0
                self._allow_known()
                self._dial_static()
                self._cut_off_refused()
                self._close_revoked_links()
                self._resume_sessions()
                self._write_status()
            elif self._status_due and now - self._status_at >= STATUS_EVERY_S:
                self._write_status()

    def _tick_if_due(self) -> None:
        """The core's timers (the protocol's acks, pings and retransmits, print jobs handed to
        peers, the bootstrap check), every tick_ms."""
        now = time.monotonic()
        if now >= self._next_tick:
            self._next_tick = now + self.mesh.tick_ms / 1000
            self._do(self.core.tick(wall_ms()))
            self._write_acks()

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
        if node_id == self.me.node_id or node_id in self._revoked:
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
        self.core.peer(node_id).address = f"{host}:{port}"
        self._targets[node_id] = (host, port, key)
        self.transport.connect(node_id, host, port, key)
        self._do(self.core.connect(node_id, wall_ms()))

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
                self._do(self.core.connect(event.node_id, wall_ms()))
            elif event.state is LinkState.DOWN:
                self._do(self.core.disconnect(event.node_id))

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
                if peer not in self.core.sessions:
                    self.transport.revoke(peer)
                    log.info("cut off refused peer %s until it is announced again", peer)

    def _resume_sessions(self) -> None:
        for peer in self.transport.peers():
            if self.transport.is_up(peer) and peer not in self.core.sessions:
                self._do(self.core.connect(peer, wall_ms()))

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
                self.core.peer(a.node_id).name = a.name
                self._dial(a.node_id, host, a.port, a.key_fingerprint)
            elif isinstance(event, PeerRemoved):
                log.info("peer %s left the LAN (mDNS goodbye)", event.node_id)
                self._do(self.core.disconnect(event.node_id))
            else:
                a = event.advert
                host = a.addresses[0] if a.addresses else "127.0.0.1"
                self._dial(a.node_id, host, a.port, a.key_fingerprint)

    def _local_changes(self) -> None:
        version = self.terminal.ledger.data_version()
        if version != self._data_version:
            self._data_version = version
            self._do(self.core.local_changed(wall_ms()))
            self._enforce_revocations()

    # -- revocation (meshpos/domain/revocation.py) ------------------------------------------------

    def _note_revocations(self) -> bool:
        """Read the revocations in force from the ledger; whether any is new."""
        now = {n: r.reason for n, r in self.terminal.ledger.revocations().items()}
        fresh = set(now) - set(self._revoked)
        self._revoked.clear()
        self._revoked.update(now)
        return bool(fresh)

    def _enforce_revocations(self) -> None:
        """A revocation just arrived (from a peer, HQ's relay or `meshpos store revoke`): the
        revoked node's CURVE key leaves the allow-list, so no new handshake succeeds; its
        session ends now, with the reason sent to it; our link to it closes a second later,
        once the reason is on its way."""
        if self._note_revocations():
            now = wall_ms()
            for node_id, reason in self._revoked.items():
                if node_id not in self._cut and node_id != self.me.node_id:
                    log.warning("node %s was revoked (%s): dropping it", node_id, reason)
                    self._cut[node_id] = time.monotonic()
                    self.transport.refuse(node_id)
                    self._do(self.core.cut_off(node_id, reason, now))

    def _close_revoked_links(self) -> None:
        mono = time.monotonic()
        for node_id, since in self._cut.items():
            if since and mono - since >= 1.0:
                self._cut[node_id] = 0.0
                self.transport.disconnect(node_id)
                self._targets.pop(node_id, None)

    def _do(self, actions: list[NodeAction]) -> None:
        for a in actions:
            with log_fields(peer=getattr(a, "peer", None)):
                self._do_one(a)

    def _do_one(self, a: NodeAction) -> None:
        if isinstance(a, Send):
            # No link yet: the peer dialled us before discovery told us where it listens.
            # Dropped, not queued: the protocol resends once the link is up.
            with contextlib.suppress(NotFound):
                self.transport.send(a.peer, a.data)
        elif isinstance(a, PeerUp):
            self._status_due = True
            log.info("peer %s (%s) is up", a.name, a.peer)
            self._redial(a.peer)
        elif isinstance(a, PeerDown):
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
            if a.peer not in self.core.sessions:
                self._shun.setdefault(a.peer, time.monotonic())
        elif isinstance(a, PeerComplained) and a.code == REVOKED:
            log.error("peer %s says this terminal was revoked: %s", a.peer, a.reason)
            if self.terminal.ledger.revoked_notice() is None:
                self.terminal.ledger.note_revoked(a.reason, a.peer)
                self._status_due = True
        elif isinstance(a, PeerComplained):
            self._warn(
                ("complained", a.peer, a.reason),
                "peer %s refused our data (%s): %s",
                a.peer,
                a.code,
                a.reason,
            )
        elif isinstance(a, Applied):
            log.debug("applied %d ops from %s", len(a.ops), a.peer, extra=_op_range(a.ops))
            if any(op.kind == REVOKE_KIND for op in a.ops):
                self._revocation_due = True
        elif isinstance(a, CopyAcked):
            self._acks_due[a.peer] = (a.seq, a.at)
        else:
            self._do_node_action(a)

    def _do_node_action(self, a: NodeAction) -> None:
        """What the core asks of the terminal's other parts: the relay worker, the log."""
        relay = self.relay
        if isinstance(a, Granted):
            log.info("escrow: granted %d points of %s to %s", a.points, a.customer, a.peer)
        elif isinstance(a, RequestRefused):
            log.warning("refused request from %s: %s", a.peer, a.reason)
        elif isinstance(a, AskedPeers):
            log.info("escrow: asked %d peers for %d points of %s", a.peers, a.points, a.customer)
        elif isinstance(a, BootstrapDone):
            log.info(
                "bootstrap complete: %d of this terminal's own ops recovered from peers", a.held
            )
        elif relay is None:
            return
        elif isinstance(a, ClaimFromHq):
            relay.claims.put((a.customer, a.points))
            relay.poke()
        elif isinstance(a, WakeRelay):
            relay.poke()
        elif isinstance(a, ProbeHq):
            relay.probe_soon()
        elif isinstance(a, Elected):
            if a.changed:
                name = self.core.peers[a.relay].name if a.relay in self.core.peers else a.relay
                if a.relay is None:
                    name = "nobody (no node reaches HQ)"
                log.info("HQ relay is now %s", "this node" if a.me else name)
            relay.elected(a.relay, a.me, first=a.first, others_pushing=a.others_pushing)

    def _write_acks(self) -> None:
        """Record how far peers hold this node's ops, for selling processes waiting on a copy."""
        rows = [(peer, seq, at) for peer, (seq, at) in self._acks_due.items()]
        self._acks_due.clear()
        if rows:
            self._status_due = True
            self._acks.record(rows)

    # -- the HQ relay (meshpos/node/relay.py) ---------------------------------------------------------

    def _relay_tick(self) -> None:
        """Tell the core whether we reach HQ (it tells the peers and elects the relay), pass
        HQ's asks for other stores to the peers, run a round when `meshpos sync now` asks."""
        sync_now = self.terminal.cfg.dir / SYNC_NOW_FILE
        if self.relay is None:
            sync_now.unlink(missing_ok=True)
            return
        wan, pushing = self.relay.status.wan_ok, self.relay.pushing
        self._do(self.core.relay_status(wall_ms(), wan=wan, pushing=pushing))
        while True:
            try:
                peer, customer, points, to = self.relay.outbox.get_nowait()
            except queue.Empty:
                break
            actions = self.core.ask_for_hq(peer, customer, points, to, wall_ms())
            self._do(actions)
            if actions:
                log.info("loyalty: asked %s to grant %d points of %s to HQ", peer, points, customer)
        if sync_now.exists():
            sync_now.unlink(missing_ok=True)
            self.relay.poke(force=True)

    def status(self) -> dict[str, object]:
        ours = self.terminal.ledger.vv()
        peers: list[dict[str, object]] = []
        for nid, info in sorted(self.core.peers.items(), key=lambda kv: kv[1].name):
            session = self.core.sessions.get(nid)
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
            "metrics_url": self.metrics.url if self.metrics is not None else None,
            "revoked": revoked.reason if (revoked := self.terminal.revoked()) else None,
            "revoked_peers": sorted(self._revoked),
            "clock_ahead": clocks_ahead(self.terminal),
            "wan": self.relay.snapshot() if self.relay is not None else None,
            "power": self.power.snapshot(),
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
        self.last_status = self.status()
        write_private(path, json.dumps(self.last_status, indent=1), durable=False)


def run_daemon(directory: Path, overrides: Mapping[str, object] | None = None) -> None:
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
