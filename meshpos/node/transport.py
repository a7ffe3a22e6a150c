"""ZeroMQ transport of the store mesh: moves opaque bytes between authenticated nodes, nothing more.

The sync protocol is a sans-IO state machine; this module is the socket side of it. It knows
nothing of ops or messages, only node ids, CURVE keys and bytes.

Topology: two connections per pair of nodes, one per direction. Every node binds one ROUTER
(CURVE server) and dials each peer with its own DEALER (CURVE client, routing id = our node id).
A node sends through its DEALER to that peer and receives everything on its ROUTER. Chosen over
one connection per pair because each direction then stands alone: no tie-break on who dials,
no routing replies back through a ROUTER (where a peer that is reconnecting makes sends fail
with EHOSTUNREACH, or drop silently without ROUTER_MANDATORY), and a pair where only one side
has discovered the other already carries traffic in that direction. The price, two TCP
connections and two CURVE handshakes per pair, is nothing for a store's dozen terminals.

Back-pressure: the ROUTER never sends, so ROUTER_MANDATORY has nothing to guard; sends happen on
DEALERs, with IMMEDIATE set (a queue exists only while the link is up and authenticated) and a
bounded SNDHWM, and are non-blocking: `send()` returns False when the message could not be
queued (peer not connected, or peer not reading and every buffer full) and never drops silently.
The protocol layer keeps what was refused and offers it again later.

Authentication: inbound, a ZAP handler (pyzmq's `ThreadAuthenticator`, its own thread and its
own zmq context per transport) accepts only CURVE keys in the allow-table and logs every refusal
with the key and the peer's address. Connections that never get as far as ZAP (a plain ZeroMQ
client with the NULL mechanism, bytes that are not ZMTP, a handshake left unfinished) are seen on
the ROUTER's monitor socket by a thread of their own (`_StrangerWatch`) and logged with the
address and why. Both log through one `RefusalLog`: the first refusal of each kind from each
address in a minute, at most 30 lines a minute, then one line counting the rest, so a flood
cannot fill the disk. The table maps key -> node id and can change at any time;
ZAP runs only at the handshake, so `poll()` checks every message again against the current
table: messages on a connection whose key was revoked are dropped. The sender of a message is
the node bound to the key its connection authenticated with (ZAP's User-Id, here the Z85 key),
never what the peer claims: a message whose routing id differs from that node's id is dropped
and logged, so no node can speak as another. Outbound, the DEALER pins the peer's server key, so
we only talk to the holder of the key we were given.

Liveness: ZMTP heartbeats on each DEALER (interval, timeout, and a TTL that makes the peer's
ROUTER drop our connection when we vanish), so a dead link is noticed within three intervals and
redialled. A peer's new connection takes its routing id over from an old one (ROUTER_HANDOVER):
after a partition heals, the old connection may still be half-open at our end (its TTL not yet
run out, the FIN lost), and without handover the ROUTER would silently drop everything the peer
sends on the new one while the peer's DEALER reports the link up (seen in the namespace tests:
one direction dead for 30 s and more). An enrolled node squatting another's id gets its messages
dropped by the key check below, but can take that id's slot and cut the node off until it
reconnects: a denial of service open only to enrolled nodes. The same timeout drops the
inbound links of a node that stops reading for three intervals (its pipes full, libzmq stops
reading the socket, pings go unanswered): what was in flight is lost and the sender sees DOWN
then UP. So `send()` returning True means queued, not delivered; the protocol's acks decide.
libzmq does not redial after its key was refused, so a refused link is redialled here, every
`refused_retry_ms`: peers that are allowed later (discovery and enrolment arrive in any order)
get in without help.

Limits: frames above `max_message_size` make the ROUTER drop the connection instead of buffering
them; with `hwm` messages queued per peer and direction, memory per peer stays below about
`hwm * max_message_size` plus kernel socket buffers. A peer may still announce a huge multipart
message frame by frame, which libzmq buffers whole; only enrolled nodes get that far.

Threads: not thread-safe. One thread, the node daemon's loop, calls every method. The only
other thread is the authenticator's, which reads the allow-table under a lock.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import ipaddress
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from meshpos.core.errors import ConfigError, InputError, LocalError, NotFound
from meshpos.service.refusal_log import RefusalLog

log = logging.getLogger("meshpos.transport")

ZAP_DOMAIN = "meshpos"
DEFAULT_MAX_MESSAGE_SIZE = 8 * 1024 * 1024
_CURVE_FRAME_OVERHEAD = 33
# libzmq queues the ZAP User-Id as a credential message in each inbound pipe and never frees the
# HWM slot it takes (with RCVHWM 1 nothing is ever received), so the ROUTER gets one extra.
_ZAP_CREDENTIAL_SLOT = 1
_MONITORED = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


def _require_curve() -> None:
    if not zmq.has("curve"):
        raise ConfigError(
            f"libzmq {zmq.zmq_version()} was built without CURVE security; "
            "install a pyzmq wheel whose bundled libzmq has it (zmq.has('curve') must be True)"
        )


def wire_size(payload_len: int) -> int:
    """Bytes one message of `payload_len` takes on a CURVE link (ZMTP 3 MESSAGE command).

    Measured against the kernel's TCP byte counters: 35 bytes of overhead up to 222 bytes of
    payload, 42 above; TCP/IP headers not included.
    """
    body = payload_len + _CURVE_FRAME_OVERHEAD
    return body + (2 if body <= 255 else 9)


def _z85_key(value: bytes | str, what: str) -> bytes:
    raw = value.encode("ascii", "replace") if isinstance(value, str) else bytes(value)
    raw = raw.strip()
    try:
        ok = len(raw) == 40 and len(z85.decode(raw)) == 32
    except (KeyError, ValueError, IndexError):
        ok = False
    if not ok:
        raise ConfigError(f"{what} is not a CURVE key (expected 40 Z85 characters)")
    return raw


def _node_id_bytes(node_id: str) -> bytes:
    if not isinstance(node_id, str) or not node_id:
        raise InputError(f"node id {node_id!r} must be a non-empty string")
    raw = node_id.encode("utf-8")
    if len(raw) > 255 or raw[0] == 0:
        raise InputError(f"node id {node_id!r} must be 1-255 UTF-8 bytes, not starting with NUL")
    return raw


def _property(frame: zmq.Frame, name: str) -> str:
    try:
        return str(frame.get(name))
    except zmq.ZMQError:
        return ""


def _endpoint(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


@dataclass(frozen=True)
class CurveKeys:
    """A node's CURVE key pair, both halves as 40-byte Z85 text."""

    public: bytes
    secret: bytes

    def __post_init__(self) -> None:
        _require_curve()
        public = _z85_key(self.public, "CURVE public key")
        secret = _z85_key(self.secret, "CURVE secret key")
        if zmq.curve_public(secret) != public:
            raise ConfigError("CURVE public key does not belong to the secret key")
        object.__setattr__(self, "public", public)
        object.__setattr__(self, "secret", secret)

    @classmethod
    def generate(cls) -> CurveKeys:
        _require_curve()
        public, secret = zmq.curve_keypair()
        return cls(public, secret)

    @classmethod
    def from_secret(cls, secret: bytes | str) -> CurveKeys:
        _require_curve()
        raw = _z85_key(secret, "CURVE secret key")
        return cls(zmq.curve_public(raw), raw)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CurveKeys:
        """Read a key file written by `save` (the Z85 secret on one line)."""
        try:
            text = Path(path).read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read CURVE key file {path}: {e.strerror}") from e
        try:
            return cls.from_secret(text)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the secret key, readable by the owner only, replacing the file atomically."""
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(self.secret + b"\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise ConfigError(f"cannot write CURVE key file {path}: {e.strerror}") from e


class LinkState(enum.Enum):
    UP = "up"
    DOWN = "down"
    REFUSED = "refused"


@dataclass(frozen=True)
class LinkEvent:
    """A change of our outbound link to a peer: UP after the CURVE handshake (send a hello),
    DOWN when it broke (libzmq redials), REFUSED when the peer rejected our key (redialled later).
    """

    node_id: str
    state: LinkState
    detail: str = ""


@dataclass(frozen=True)
class PeerStats:
    """Payload counters for one peer; `wire_size()` gives what the payloads cost on the wire."""

    messages_sent: int = 0
    bytes_sent: int = 0
    messages_received: int = 0
    bytes_received: int = 0
    sends_refused: int = 0


class _AllowTable:
    """The allow-table shared with the ZAP thread; also its credentials provider."""

    def __init__(self, refusals: RefusalLog) -> None:
        self._lock = threading.Lock()
        self._node_by_key: dict[bytes, str] = {}
        self._key_by_node: dict[str, bytes] = {}
        self.refusals = refusals
        self.zap_address = ""

    def allow(self, node_id: str, key: bytes) -> None:
        with self._lock:
            old_key = self._key_by_node.pop(node_id, None)
            if old_key is not None:
                self._node_by_key.pop(old_key, None)
            old_node = self._node_by_key.pop(key, None)
            if old_node is not None:
                self._key_by_node.pop(old_node, None)
            self._node_by_key[key] = node_id
            self._key_by_node[node_id] = key

    def revoke(self, node_id: str) -> None:
        with self._lock:
            key = self._key_by_node.pop(node_id, None)
            if key is not None:
                self._node_by_key.pop(key, None)

    def node_for(self, key: bytes) -> str | None:
        with self._lock:
            return self._node_by_key.get(key)

    def allowed(self) -> dict[str, bytes]:
        with self._lock:
            return dict(self._key_by_node)

    def callback(self, domain: str, key: bytes) -> bool:
        """Called by pyzmq's authenticator thread with the client's Z85 key."""
        node = self.node_for(key)
        if node is None:
            text = key.decode("ascii", "replace")
            self.refusals.refused(
                self.zap_address, "connection", f"CURVE key {text} is not an enrolled peer",
                kind=f"key {text}",
            )  # fmt: skip
            return False
        log.debug("accepted %s from %s", node, self.zap_address)
        return True


class _Authenticator(ThreadAuthenticator):
    """Notes the client's address before each ZAP check, so a refusal can name it."""

    def __init__(self, context: zmq.Context[Any], table: _AllowTable) -> None:
        super().__init__(context, log=logging.getLogger("meshpos.transport.zap"))
        self._table = table

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        if len(msg) > 3:
            self._table.zap_address = msg[3].decode("utf-8", "replace")
        await super().handle_zap_message(msg)


_WATCHED = (
    zmq.EVENT_ACCEPTED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


_CLOSING = frozenset(
    {"04", "05", "06", "08", "09", "0B"}
)  # FIN_WAIT1/2, TIME_WAIT, CLOSE_WAIT, ...


def _hex_ip(text: str) -> str:
    """An address as /proc/net/tcp{,6} writes it: 32-bit words of host (little-endian) order."""
    raw = b"".join(bytes.fromhex(text[i : i + 8])[::-1] for i in range(0, len(text), 8))
    ip = ipaddress.ip_address(raw)
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return str(mapped or ip)


def _closing_peers(port: int) -> set[tuple[str, int]]:
    """The other ends of this host's TCP connections to local `port` that are being closed, as
    the kernel lists them (/proc/net/tcp and tcp6; empty where there is none). A connection
    libzmq dropped within microseconds has no descriptor left to ask, but its closing socket is
    still listed for a while (TIME_WAIT lasts a minute): the fallback for its address. A client
    on this same host shows up by its own end, whose remote port is ours."""
    out: set[tuple[str, int]] = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as fh:
                next(fh, None)
                for line in fh:
                    fields = line.split()
                    if len(fields) < 4 or fields[3] not in _CLOSING:
                        continue
                    (lip, lport), (rip, rport) = (f.split(":") for f in fields[1:3])
                    if int(lport, 16) == port:
                        out.add((_hex_ip(rip), int(rport, 16)))
                    elif int(rport, 16) == port:
                        out.add((_hex_ip(lip), int(lport, 16)))
        except (OSError, ValueError):
            continue
    return out


def _peer_of(fd: int) -> tuple[str, int] | None:
    """The (address, port) at the other end of libzmq's socket `fd` (read from a duplicate, so
    libzmq's own descriptor is untouched), or None once libzmq has closed it."""
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            host, port = sock.getpeername()[:2]
    except (OSError, ValueError):
        return None
    ip = ipaddress.ip_address(host)
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return str(mapped or ip), int(port)


def _why(event: int, value: int) -> str:
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            return "it does not speak CURVE (a plain ZeroMQ client, NULL mechanism)"
        return f"it broke the ZeroMQ handshake (ZMTP protocol error {value:#x})"
    name = errno.errorcode.get(value, str(value))
    return f"its bytes are not a ZeroMQ handshake, or it never finished one ({name})"


class _StrangerWatch:
    """Connections to the ROUTER that never completed a handshake, read from its monitor socket
    on a thread of its own: a plain ZeroMQ client (NULL mechanism), bytes that are not ZMTP, a
    connection closed or left idle mid-handshake. Refusals at ZAP (unknown keys) are logged there.

    libzmq's monitor events name the listening endpoint, not the peer, so the peer's address is
    read from the file descriptor that ACCEPTED carries, as soon as the event arrives. A stranger
    that is gone by then (libzmq drops garbage within microseconds) is placed a few ms later by
    the kernel's list of closing connections on our port (`_closing_peers`): when exactly one
    address started closing since the last look, it is that one; otherwise (a flood) the line
    says "an unknown address". A failed handshake's event comes right before the DISCONNECTED of
    its connection (libzmq emits both in one call on its I/O thread), which is how a reason is
    matched to a descriptor. HANDSHAKE_SUCCEEDED names no descriptor: it marks every connection
    open at that moment as possibly a peer, so a peer's later disconnect is never mistaken for a
    refusal (a stranger that was mid-handshake just then goes unlogged)."""

    PLACE_AFTER_S = 0.02  # time for libzmq to close what it refused, before the kernel is asked

    def __init__(self, router: zmq.Socket[bytes], port: int, refusals: RefusalLog) -> None:
        self._monitor = router.get_monitor_socket(_WATCHED)
        self._port = port
        self._refusals = refusals
        self._open: dict[int, tuple[tuple[str, int] | None, bool]] = {}  # fd -> (peer, maybe ours)
        self._failure: str | None = None
        self._closing = _closing_peers(port)  # closing connections already accounted for
        self._unplaced: list[tuple[float, str]] = []  # (when, why) of refusals with no address yet
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meshpos-strangers", daemon=True)
        self.accepted = 0  # connections whose address was looked up (tests wait on it)
        self.refused = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """After the ROUTER's monitor is disabled (on the ROUTER's own thread)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        else:
            self._monitor.close(linger=0)

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._monitor, zmq.POLLIN)
        quiet = 0
        try:
            while not self._stop.is_set():
                ready = poller.poll(10 if self._unplaced else 50)
                while ready:
                    try:
                        event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._event(int(event["event"]), int(event["value"]))
                if self._unplaced:
                    if time.monotonic() - self._unplaced[0][0] >= self.PLACE_AFTER_S:
                        self._place()
                elif not ready:
                    self._refusals.flush()
                    quiet += 1
                    if quiet % 40 == 0:  # every 2 s of quiet: what is closing now is no news
                        self._closing = _closing_peers(self._port)
        except zmq.ZMQError:
            pass  # the context is ending
        finally:
            self._monitor.close(linger=0)

    def _event(self, kind: int, value: int) -> None:
        if kind == zmq.EVENT_ACCEPTED:
            self._open[value] = (_peer_of(value), False)
            self.accepted += 1
        elif kind in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
            self._failure = _why(kind, value)
        elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._open = {fd: (address, True) for fd, (address, _) in self._open.items()}
        elif kind == zmq.EVENT_DISCONNECTED:
            peer, maybe_ours = self._open.pop(value, (None, True))
            why, self._failure = self._failure, None
            if why is None and not maybe_ours:
                why = "the connection ended before a handshake (not ZeroMQ, or it hung up)"
            if peer is not None:
                self._closing.add(peer)  # its closing socket is no news to `_place`
            if why is None:
                return
            self.refused += 1
            if peer is not None:
                self._log(peer[0], why)
            else:
                self._unplaced.append((time.monotonic(), why))

    def _place(self) -> None:
        """Log the refusals that had no address, with the one address that started closing since
        the last look, if there is exactly one."""
        closing = _closing_peers(self._port)
        fresh = {ip for ip, _ in closing - self._closing}
        self._closing |= closing
        address = next(iter(fresh)) if len(fresh) == 1 else ""
        for _, why in self._unplaced:
            self._log(address, why)
        self._unplaced = []

    def _log(self, address: str, why: str) -> None:
        self._refusals.refused(address, "connection", why, kind=why.split(" (")[0])


@dataclass
class _Counters:
    messages_sent: int = 0
    bytes_sent: int = 0
    messages_received: int = 0
    bytes_received: int = 0
    sends_refused: int = 0

    def snapshot(self) -> PeerStats:
        return PeerStats(**vars(self))


@dataclass
class _Link:
    node_id: str
    endpoint: str
    server_key: bytes
    socket: zmq.Socket[bytes]
    monitor: zmq.Socket[bytes]
    state: LinkState = LinkState.DOWN
    redial_at: float | None = None
    warned: bool = False


class Transport:
    """One node's end of the mesh: a CURVE ROUTER to receive, a CURVE DEALER per peer to send.

    Not thread-safe: call every method from the same thread.
    """

    def __init__(
        self,
        node_id: str,
        keys: CurveKeys,
        bind_host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        hwm: int = 64,
        heartbeat_ms: int = 1000,
        refused_retry_ms: int = 1000,
    ) -> None:
        _require_curve()
        self.node_id = node_id
        self._id = _node_id_bytes(node_id)
        self.keys = keys
        self.bind_host = bind_host
        if not 0 <= port <= 65535:
            raise InputError(f"port {port} is not between 0 and 65535")
        for name, value in (
            ("max_message_size", max_message_size),
            ("hwm", hwm),
            ("heartbeat_ms", heartbeat_ms),
            ("refused_retry_ms", refused_retry_ms),
        ):
            if value < 1:
                raise InputError(f"{name} must be at least 1, got {value}")
        self._requested_port = port
        self.max_message_size = max_message_size
        self._hwm = hwm
        self._heartbeat_ms = heartbeat_ms
        self._refused_retry_s = refused_retry_ms / 1000
        self.refusals = RefusalLog(log)
        self._table = _AllowTable(self.refusals)
        self._watch: _StrangerWatch | None = None
        self._links: dict[str, _Link] = {}
        self._by_monitor: dict[zmq.Socket[bytes], _Link] = {}
        self._counters: dict[str, _Counters] = {}
        self._inbound_address: dict[str, str] = {}
        self._events: list[LinkEvent] = []
        self._quiet: set[tuple[bytes, bytes]] = set()
        self.rejected = 0
        self._ctx: zmq.Context[Any] | None = None
        self._auth: _Authenticator | None = None
        self._router: zmq.Socket[bytes] | None = None
        self._poller = zmq.Poller()
        self._port: int | None = None
        self._closed = False

    def __enter__(self) -> Self:
        if self._router is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start the authenticator, then bind the ROUTER: without a ZAP handler libzmq would
        accept any CURVE client."""
        if self._closed:
            raise LocalError("transport is closed; create a new one")
        if self._router is not None:
            return
        ctx: zmq.Context[Any] = zmq.Context()
        self._ctx = ctx
        try:
            self._auth = _Authenticator(ctx, self._table)
            self._auth.start()
            self._auth.configure_curve_callback(ZAP_DOMAIN, self._table)
            router = ctx.socket(zmq.ROUTER)
            self._router = router
            router.linger = 0
            router.curve_server = True
            router.curve_secretkey = self.keys.secret
            router.zap_domain = ZAP_DOMAIN.encode()
            router.router_handover = True  # see "Liveness" above
            router.maxmsgsize = self.max_message_size + _CURVE_FRAME_OVERHEAD
            router.rcvhwm = self._hwm + _ZAP_CREDENTIAL_SLOT
            router.handshake_ivl = 5000
            if ":" in self.bind_host:
                router.ipv6 = True
            endpoint = _endpoint(self.bind_host, self._requested_port)
            try:
                router.bind(endpoint)
            except zmq.ZMQError as e:
                raise ConfigError(f"cannot listen on {endpoint}: {e.strerror}") from e
            bound = router.last_endpoint.decode()
            self._port = int(bound.rsplit(":", 1)[1])
            self._poller.register(router, zmq.POLLIN)
            self._watch = _StrangerWatch(router, self._port, self.refusals)
            self._watch.start()
        except BaseException:
            self._teardown()
            raise
        log.info("%s listening on %s", self.node_id, bound)

    @property
    def port(self) -> int:
        if self._port is None:
            raise LocalError("transport not started; call start() first")
        return self._port

    @property
    def endpoint(self) -> str:
        return _endpoint(self.bind_host, self.port)

    def allow(self, node_id: str, curve_public: bytes | str) -> None:
        """Accept connections from `node_id`, authenticated by `curve_public` (replaces any
        previous key of that node, and unbinds the key from any other node)."""
        _node_id_bytes(node_id)
        key = _z85_key(curve_public, f"CURVE public key of {node_id!r}")
        self._table.allow(node_id, key)
        self._quiet = {q for q in self._quiet if q[0] != key}

    def revoke(self, node_id: str) -> None:
        """Refuse `node_id` from now on: its new handshakes fail, messages still in flight on an
        open connection are dropped, and our link to it is closed."""
        self._table.revoke(node_id)
        self.disconnect(node_id)

    def refuse(self, node_id: str) -> None:
        """Take `node_id` off the allow-list (its new handshakes fail) but keep our link to it
        open a while: what we queued for it (why it is refused) still leaves."""
        self._table.revoke(node_id)

    def allowed(self) -> dict[str, bytes]:
        return self._table.allowed()

    def connect(self, node_id: str, host: str, port: int, curve_public: bytes | str) -> None:
        """Open (or move) our link to a peer's ROUTER; `curve_public` is its server key.

        Idempotent for the same address and key. Watch `link_events()` for UP before sending.
        """
        ctx = self._require_started()
        _node_id_bytes(node_id)
        key = _z85_key(curve_public, f"CURVE public key of {node_id!r}")
        if not 0 < port <= 65535:
            raise InputError(f"port {port} of peer {node_id!r} is not between 1 and 65535")
        endpoint = _endpoint(host, port)
        link = self._links.get(node_id)
        if link is not None:
            if link.endpoint == endpoint and link.server_key == key:
                return
            self.disconnect(node_id)
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.routing_id = self._id
        sock.curve_publickey = self.keys.public
        sock.curve_secretkey = self.keys.secret
        sock.curve_serverkey = key
        sock.immediate = 1
        sock.sndhwm = self._hwm
        sock.rcvhwm = 1
        sock.maxmsgsize = 1024
        sock.heartbeat_ivl = self._heartbeat_ms
        sock.heartbeat_timeout = 3 * self._heartbeat_ms
        sock.heartbeat_ttl = 3 * self._heartbeat_ms
        sock.reconnect_ivl = 100
        sock.reconnect_ivl_max = 2000
        sock.handshake_ivl = 5000
        if ":" in host:
            sock.ipv6 = True
        monitor = sock.get_monitor_socket(_MONITORED)
        link = _Link(node_id, endpoint, key, sock, monitor)
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as e:
            self._close_link(link)
            raise InputError(f"cannot connect to peer {node_id!r} at {endpoint}: {e}") from e
        self._links[node_id] = link
        self._by_monitor[monitor] = link
        self._poller.register(monitor, zmq.POLLIN)
        self._counters.setdefault(node_id, _Counters())

    def disconnect(self, node_id: str) -> None:
        """Close our link to `node_id`, dropping what is still queued on it; no-op if none."""
        link = self._links.pop(node_id, None)
        if link is not None:
            self._close_link(link)

    def is_up(self, node_id: str) -> bool:
        link = self._links.get(node_id)
        return link is not None and link.state is LinkState.UP

    def peers(self) -> list[str]:
        """Node ids we hold a link to, up or not."""
        return list(self._links)

    def inbound_address(self, node_id: str) -> str | None:
        """IP address the last accepted message from `node_id` came from."""
        return self._inbound_address.get(node_id)

    def send(self, node_id: str, data: bytes) -> bool:
        """Queue `data` for `node_id`; False if it could not be queued (link down or full).

        True means queued, not delivered: a message queued just as the link breaks is lost.
        """
        link = self._links.get(node_id)
        if link is None:
            raise NotFound(f"no link to peer {node_id!r}; call connect() first")
        if len(data) > self.max_message_size:
            raise InputError(
                f"message of {len(data)} bytes to {node_id!r} exceeds the "
                f"{self.max_message_size}-byte limit peers accept"
            )
        counters = self._counters[node_id]
        try:
            link.socket.send(data, zmq.NOBLOCK)
        except zmq.Again:
            counters.sends_refused += 1
            return False
        counters.messages_sent += 1
        counters.bytes_sent += len(data)
        return True

    def poll(self, timeout_ms: int = 0, max_messages: int = 1024) -> list[tuple[str, bytes]]:
        """Wait up to `timeout_ms` for traffic; return (sender node id, message) pairs.

        The sender is the node the connection's CURVE key is allowed as. Link changes seen on
        the way are kept for `link_events()`.
        """
        router = self._require_router()
        now = time.monotonic()
        wait = max(timeout_ms, 0)
        redials = [lk.redial_at for lk in self._links.values() if lk.redial_at is not None]
        if redials:
            wait = min(wait, max(0, int((min(redials) - now) * 1000) + 1))
        ready = dict(self._poller.poll(wait))
        for sock in ready:
            link = self._by_monitor.get(sock)
            if link is not None:
                self._drain_monitor(link)
        self._redial_due(time.monotonic())
        out: list[tuple[str, bytes]] = []
        if router not in ready:
            return out
        for _ in range(max_messages):
            try:
                frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            message = self._accept(frames)
            if message is not None:
                out.append(message)
        return out

    def link_events(self) -> list[LinkEvent]:
        """Link changes seen by `poll()` since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    def stats(self) -> dict[str, PeerStats]:
        return {node: c.snapshot() for node, c in self._counters.items()}

    @property
    def bytes_sent(self) -> int:
        return sum(c.bytes_sent for c in self._counters.values())

    @property
    def bytes_received(self) -> int:
        return sum(c.bytes_received for c in self._counters.values())

    @property
    def messages_sent(self) -> int:
        return sum(c.messages_sent for c in self._counters.values())

    @property
    def messages_received(self) -> int:
        return sum(c.messages_received for c in self._counters.values())

    def close(self) -> None:
        """Close every socket (linger 0), stop the authenticator thread, end the context."""
        if self._closed:
            return
        self._closed = True
        self._teardown()

    def _teardown(self) -> None:
        try:
            for node in list(self._links):
                self.disconnect(node)
            if self._router is not None:
                router, self._router = self._router, None
                if self._watch is not None:
                    router.disable_monitor()
                    self._watch.stop()
                    self._watch = None
                router.close(linger=0)
                with contextlib.suppress(KeyError):
                    self._poller.unregister(router)
        finally:
            try:
                if self._auth is not None:
                    self._auth.stop()
                    self._auth = None
            finally:
                if self._ctx is not None:
                    ctx, self._ctx = self._ctx, None
                    ctx.destroy(linger=0)

    def _require_started(self) -> zmq.Context[Any]:
        if self._closed:
            raise LocalError("transport is closed")
        if self._ctx is None or self._router is None:
            raise LocalError("transport not started; call start() first")
        return self._ctx

    def _require_router(self) -> zmq.Socket[bytes]:
        self._require_started()
        assert self._router is not None
        return self._router

    def _close_link(self, link: _Link) -> None:
        if self._by_monitor.pop(link.monitor, None) is not None:
            self._poller.unregister(link.monitor)
        link.socket.disable_monitor()
        link.monitor.close(linger=0)
        link.socket.close(linger=0)

    def _drain_monitor(self, link: _Link) -> None:
        while True:
            try:
                event = recv_monitor_message(link.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            kind = event["event"]
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                link.warned, link.redial_at = False, None
                log.info("link to %s at %s up", link.node_id, link.endpoint)
                self._set_state(link, LinkState.UP)
            elif kind == zmq.EVENT_DISCONNECTED:
                if link.state is LinkState.UP:
                    log.info("link to %s at %s down", link.node_id, link.endpoint)
                    self._set_state(link, LinkState.DOWN, "disconnected")
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                link.redial_at = time.monotonic() + self._refused_retry_s
                detail = f"{link.node_id} at {link.endpoint} refused our key (ZAP {event['value']})"
                self._warn_once(link, detail)
                self._set_state(link, LinkState.REFUSED, detail)
            else:
                self._warn_once(
                    link,
                    f"handshake with {link.node_id} at {link.endpoint} failed "
                    f"(errno {event['value']}): check its CURVE public key",
                )

    def _set_state(self, link: _Link, state: LinkState, detail: str = "") -> None:
        if link.state is not state:
            link.state = state
            self._events.append(LinkEvent(link.node_id, state, detail))

    def _warn_once(self, link: _Link, message: str) -> None:
        log.log(logging.DEBUG if link.warned else logging.WARNING, "%s", message)
        link.warned = True

    def _redial_due(self, now: float) -> None:
        for link in self._links.values():
            if link.redial_at is not None and link.redial_at <= now:
                link.redial_at = None
                with contextlib.suppress(zmq.ZMQError):
                    link.socket.disconnect(link.endpoint)
                link.socket.connect(link.endpoint)

    def _accept(self, frames: list[zmq.Frame]) -> tuple[str, bytes] | None:
        claimed = frames[0].bytes
        key = _property(frames[-1], "User-Id").encode("ascii", "replace")
        node = self._table.node_for(key)
        if node is None:
            self._reject(key, claimed, "its CURVE key is not (or no longer) allowed")
            return None
        if claimed != node.encode("utf-8"):
            self._reject(key, claimed, f"it authenticated as {node!r} but claims another id")
            return None
        if len(frames) != 2:
            self._reject(key, claimed, f"multipart message of {len(frames) - 1} frames")
            return None
        data = frames[1].bytes
        counters = self._counters.setdefault(node, _Counters())
        counters.messages_received += 1
        counters.bytes_received += len(data)
        self._inbound_address[node] = _property(frames[1], "Peer-Address")
        return node, data

    def _reject(self, key: bytes, claimed: bytes, reason: str) -> None:
        self.rejected += 1
        quiet = (key, claimed)
        level = logging.DEBUG if quiet in self._quiet else logging.WARNING
        self._quiet.add(quiet)
        log.log(
            level,
            "dropped message claiming to be from %r (key %s): %s",
            claimed.decode("utf-8", "replace"),
            key.decode("ascii", "replace"),
            reason,
        )
