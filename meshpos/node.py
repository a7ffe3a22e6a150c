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
`status.json` every second for `meshpos status` and `meshpos peers`.
"""

from __future__ import annotations

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

from meshpos.enrol import admit_record, read_certificate
from meshpos.errors import ConfigError, MeshposError
from meshpos.ledger.store import NodeRecord
from meshpos.membership import Membership, load
from meshpos.sync.discovery import Advert, Discovery, PeerAdded, PeerEvent, PeerRemoved
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
from meshpos.sync.transport import Transport
from meshpos.terminal import Terminal, wall_ms

log = logging.getLogger("meshpos.node")
STATUS_FILE = "status.json"
ACKS_DDL = """
CREATE TABLE IF NOT EXISTS peer_acks (
    peer  TEXT PRIMARY KEY,
    seq   INTEGER NOT NULL,
    at_ms INTEGER NOT NULL
)
"""


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

    @classmethod
    def from_config(cls, raw: dict[str, Any], where: str) -> MeshSettings:
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(f"{where}: unknown [mesh] key(s) {', '.join(sorted(unknown))}")
        values = dict(raw)
        for key in ("port", "min_copies", "copy_wait_ms", "tick_ms"):
            if key in values and (not isinstance(values[key], int) or values[key] < 0):
                raise ConfigError(f"{where}: [mesh] {key} must be a whole number >= 0")
        peers = values.get("static_peers", [])
        if not isinstance(peers, list) or not all(
            isinstance(p, dict) and {"node", "host", "port"} <= set(p) for p in peers
        ):
            raise ConfigError(f"{where}: [mesh] static_peers entries need node, host and port")
        values["static_peers"] = tuple(peers)
        return cls(**values)


def ensure_acks_table(t: Terminal) -> None:
    t.ledger.conn.execute(ACKS_DDL)


def acked_seq(t: Terminal) -> int:
    """The highest seq of this node's ops some peer confirmed durable (0 if none or no daemon)."""
    try:
        row = t.ledger.conn.execute("SELECT MAX(seq) FROM peer_acks").fetchone()
    except Exception:  # the table exists only once a daemon ran
        return 0
    return int(row[0] or 0)


def wait_for_copies(t: Terminal, seq: int, wait_ms: int) -> int:
    """Wait (bounded) until a peer acknowledges op `seq` of this node; returns copies known."""
    if not daemon_status(t.cfg.dir).get("peers_up"):
        return 1
    deadline = time.monotonic() + wait_ms / 1000
    while True:
        if acked_seq(t) >= seq:
            return 2
        if time.monotonic() >= deadline:
            return 1
        time.sleep(0.001)


def daemon_status(directory: Path) -> dict[str, Any]:
    """The running daemon's last status, or {} if none is running."""
    path = directory / STATUS_FILE
    try:
        status: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    try:
        os.kill(int(status.get("pid", -1)), 0)
    except (OSError, ValueError):
        return {}
    if time.time() - float(status.get("written", 0)) > 10:
        return {}
    return status


@dataclass
class PeerInfo:
    node_id: str
    name: str = ""
    address: str = ""
    last_seen_ms: int = 0
    up: bool = False


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
            t.cfg.name, t.node_id, t.cfg.store, self.mesh.host, self.transport.port,
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
        for peer in self.mesh.static_peers:
            self._dial(str(peer["node"]), str(peer["host"]), int(peer["port"]), None)

    def close(self) -> None:
        if self.discovery is not None:
            self.discovery.close()
        self.transport.close()
        self._write_status(final=True)

    def run(self) -> None:
        self.start()
        try:
            self.loop()
        finally:
            self.close()

    def loop(self) -> None:
        next_tick = 0.0
        next_status = 0.0
        while not self.stop_event.is_set():
            for peer, data in self.transport.poll(timeout_ms=self.mesh.tick_ms // 2 or 1):
                self._do(self.sync.receive(peer, data, wall_ms()))
            self._discovery_events()
            self._local_changes()
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + self.mesh.tick_ms / 1000
                self._do(self.sync.tick(wall_ms()))
                self._record_acks()
            if now >= next_status:
                next_status = now + 1.0
                self._allow_known()
                self._write_status()

    # -- events ---------------------------------------------------------------------------------

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
        self.transport.connect(node_id, host, port, key)
        self._do(self.sync.connect(node_id, wall_ms()))

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
            else:
                a = event.advert
                host = a.addresses[0] if a.addresses else "127.0.0.1"
                self._dial(a.node_id, host, a.port, a.key_fingerprint)

    def _local_changes(self) -> None:
        version = self.terminal.ledger.conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._data_version = version
            self._do(self.sync.local_changed(wall_ms()))

    def _do(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Send):
                self.transport.send(a.peer, a.data)
            elif isinstance(a, PeerUp):
                info = self.peers.setdefault(a.peer, PeerInfo(a.peer))
                info.name, info.up = a.name, True
                log.info("peer %s (%s) is up", a.name, a.peer)
            elif isinstance(a, PeerDown):
                if a.peer in self.peers:
                    self.peers[a.peer].up = False
                log.info("peer %s is down: %s", a.peer, a.reason)
            elif isinstance(a, Rejected):
                addr = self.transport.inbound_address(a.peer) or "unknown address"
                log.warning("refused peer %s at %s: %s", a.peer, addr, a.reason)
            elif isinstance(a, PeerComplained):
                log.warning("peer %s refused our data (%s): %s", a.peer, a.code, a.reason)
            elif isinstance(a, Applied):
                if a.peer in self.peers:
                    self.peers[a.peer].last_seen_ms = wall_ms()
                log.debug("applied %d ops from %s", len(a.ops), a.peer)
            elif isinstance(a, RequestReceived):
                log.info("request %s from %s", a.kind, a.peer)

    def _record_acks(self) -> None:
        me = self.me.node_id
        rows = []
        for peer, session in self.sync.sessions.items():
            if session.ready:
                self.peers.setdefault(peer, PeerInfo(peer)).last_seen_ms = session.last_heard
                seq = session.their_vv.get(me, 0)
                if seq > self._acks.get(peer, 0):
                    self._acks[peer] = seq
                    rows.append((peer, seq, wall_ms()))
        if rows:
            with self.terminal.ledger.write():
                self.terminal.ledger.conn.executemany(
                    "INSERT OR REPLACE INTO peer_acks VALUES (?, ?, ?)", rows
                )
            self._data_version = self.terminal.ledger.conn.execute(
                "PRAGMA data_version"
            ).fetchone()[0]

    def status(self) -> dict[str, Any]:
        ours = self.terminal.ledger.vv()
        peers = []
        for nid, info in sorted(self.peers.items(), key=lambda kv: kv[1].name):
            session = self.sync.sessions.get(nid)
            theirs = session.their_vv if session else {}
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
        }

    def _write_status(self, final: bool = False) -> None:
        path = self.terminal.cfg.dir / STATUS_FILE
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
