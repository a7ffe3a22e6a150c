"""Peer discovery over mDNS: advertise this terminal and watch for the other terminals of its store.

A thin adapter over python-zeroconf. Each node registers `<node_id>._meshpos._tcp.local.` with
TXT records `store`, `node`, `name`, `fp` (key fingerprint), `proto` and `port`, and browses the
same type. Peers of another store and the node itself are ignored; a malformed advert is logged on
the "meshpos.discovery" logger and ignored. Events reach `on_change` on zeroconf's browser thread.

Registering takes ~1.6 s (RFC 6762 probing: three probes 250 ms apart, then announcements); peers
already browsing see the announcement within milliseconds, so `start(wait=False)` lets a daemon
bind its sockets meanwhile. A graceful `close()` sends goodbyes: peers get PeerRemoved at once.

mDNS says who is on the LAN, not who is alive: a terminal killed with SIGKILL sends no goodbye and
stays in peers' caches for up to 75 min (PTR/TXT TTL 4500 s), so liveness is the sync layer's pings.

Making multicast work without touching the real network (measured on Linux 6.18, as root or not):
- Always bind zeroconf to one address (`ip=` or `interfaces=`). The default joins the group on the
  interface of the default route, which on a developer's or CI host is the real LAN.
- Several nodes on one host: `ip="127.0.0.1"`. zeroconf joins 224.0.0.251 on `lo` and sets
  IP_MULTICAST_IF to 127.0.0.1; IP_MULTICAST_LOOP then hands every datagram to each local socket.
  This works even though `lo` lacks the MULTICAST flag; should a kernel refuse it,
  `ip link set lo multicast on` (root) fixes it (tests/netns.py `loopback_multicast` probes first
  and sets and restores the flag only when needed).
- All those instances share UDP port 5353 (SO_REUSEPORT), so a unicast reply to a QU question
  reaches only one of them, maybe the wrong one. Service details are therefore asked with QM
  questions, whose answers are multicast to everyone (it costs nothing on a shop LAN).
- In a network namespace: `ip=<address of the namespace's eth0>`, with eth0 flagged `multicast on`
  and the namespaces joined by a Linux bridge with `mcast_snooping 0` (see tests/netns.py).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import ipaddress
import json
import logging
import re
import signal
import socket
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from types import FrameType

import zeroconf
from zeroconf import (
    DNSQuestionType,
    InterfaceChoice,
    NonUniqueNameException,
    ServiceBrowser,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)

from meshpos.core.errors import ConfigError, LocalError, RemoteError

SERVICE_TYPE = "_meshpos._tcp.local."
RESOLVE_TIMEOUT_MS = 1500
REGISTER_TIMEOUT_S = 10.0

log = logging.getLogger("meshpos.discovery")

_NODE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,47}", re.ASCII)
_STORE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", re.ASCII)
_FP_RE = re.compile(r"[A-Za-z0-9+/=:_-]{1,128}", re.ASCII)
_UINT_RE = re.compile(rb"[0-9]{1,5}")
_NAME_MAX = 64


class MalformedAdvert(RemoteError):
    """A peer's mDNS advert (TXT records, SRV) is missing a field or holds an invalid value."""


@dataclass(frozen=True)
class Advert:
    """What a node tells the LAN about itself; `addresses` come from its A/AAAA records."""

    store_id: str
    node_id: str
    name: str
    key_fingerprint: str
    protocol_version: int
    port: int
    addresses: tuple[str, ...] = ()

    def txt(self) -> dict[bytes, bytes]:
        return {
            b"store": self.store_id.encode(),
            b"node": self.node_id.encode(),
            b"name": self.name.encode(),
            b"fp": self.key_fingerprint.encode(),
            b"proto": str(self.protocol_version).encode(),
            b"port": str(self.port).encode(),
        }


@dataclass(frozen=True)
class PeerAdded:
    advert: Advert


@dataclass(frozen=True)
class PeerRemoved:
    node_id: str


@dataclass(frozen=True)
class PeerUpdated:
    advert: Advert


PeerEvent = PeerAdded | PeerRemoved | PeerUpdated


def _show(raw: bytes) -> str:
    """Untrusted bytes for a log line: short, so a hostile advert cannot flood the log."""
    return repr(raw[:40]) + ("..." if len(raw) > 40 else "")


def _field(properties: Mapping[bytes, bytes | None], key: str) -> bytes:
    if key.encode() not in properties:
        raise MalformedAdvert(f"peer advert lacks the {key!r} TXT record")
    raw = properties[key.encode()]
    if raw is None:
        raise MalformedAdvert(f"peer advert's {key!r} TXT record has no value")
    return raw


def _text(properties: Mapping[bytes, bytes | None], key: str, pattern: re.Pattern[str]) -> str:
    raw = _field(properties, key)
    try:
        value = raw.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedAdvert(f"peer advert's {key!r} is not ASCII: {_show(raw)}") from None
    if not pattern.fullmatch(value):
        raise MalformedAdvert(f"peer advert's {key!r} is not a valid {key}: {_show(raw)}")
    return value


def _uint(properties: Mapping[bytes, bytes | None], key: str, low: int, high: int) -> int:
    raw = _field(properties, key)
    if not _UINT_RE.fullmatch(raw) or not low <= int(raw) <= high:
        raise MalformedAdvert(f"peer advert's {key!r} must be a number {low}-{high}: {_show(raw)}")
    return int(raw)


def parse_txt(properties: Mapping[bytes, bytes | None]) -> Advert:
    """Decode a peer's TXT records; raise MalformedAdvert (a RemoteError) for anything invalid."""
    name_raw = properties.get(b"name") or b""
    try:
        name = name_raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedAdvert(f"peer advert's 'name' is not UTF-8: {_show(name_raw)}") from None
    if len(name) > _NAME_MAX or not name.isprintable():
        raise MalformedAdvert(
            f"peer advert's 'name' must be printable and at most {_NAME_MAX} characters: "
            f"{_show(name_raw)}"
        )
    return Advert(
        store_id=_text(properties, "store", _STORE_RE),
        node_id=_text(properties, "node", _NODE_RE),
        name=name,
        key_fingerprint=_text(properties, "fp", _FP_RE),
        protocol_version=_uint(properties, "proto", 0, 65535),
        port=_uint(properties, "port", 1, 65535),
    )


def instance_name(node_id: str) -> str:
    return f"{node_id}.{SERVICE_TYPE}"


def _local_ipv4_addresses() -> list[str]:
    """Every non-loopback IPv4 address of this host (zeroconf re-exports its helper for this)."""
    return list(zeroconf.get_all_addresses())  # type: ignore[attr-defined]


def _check_local_address(address: str) -> None:
    """Refuse an address this host does not have before zeroconf half-opens its sockets."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    except ValueError:
        raise ConfigError(f"{address!r} is not an IP address; give one of this host's") from None
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError as exc:
            raise ConfigError(
                f"cannot use {address} for mDNS discovery: {exc.strerror}"
                " (is it an address of this host?)"
            ) from None


class Discovery:
    """Advertise `advert` over mDNS and report peers of the same store to `on_change`.

    `ip` (IPv4) binds zeroconf to that address and is what peers are told to connect to (unless
    `advert.addresses` says otherwise); `interfaces` overrides the addresses zeroconf binds to.
    With neither, zeroconf listens on every interface and all IPv4 addresses are advertised.
    """

    def __init__(
        self,
        advert: Advert,
        on_change: Callable[[PeerEvent], None],
        interfaces: Sequence[str] | None = None,
        ip: str | None = None,
    ) -> None:
        try:
            parse_txt(advert.txt())
        except MalformedAdvert as exc:
            raise ConfigError(f"cannot advertise this node: {exc}") from None
        self._advert = advert
        self._on_change = on_change
        self._ip = ip
        if interfaces is not None:
            self._interfaces: list[str] | None = list(interfaces)
        else:
            self._interfaces = [ip] if ip else None
        self._lock = threading.Lock()
        self._peers: dict[str, Advert] = {}
        self._rejected: dict[str, bytes] = {}
        self._zc: Zeroconf | None = None
        self._browser: ServiceBrowser | None = None
        self._info: ServiceInfo | None = None
        self._registration: concurrent.futures.Future[None] | None = None
        self._closed = False

    @property
    def advert(self) -> Advert:
        return self._advert

    def addresses(self) -> tuple[str, ...]:
        """The addresses this node advertises to its peers."""
        return tuple(self._addresses())

    def peers(self) -> dict[str, Advert]:
        """The peers currently known, by node id (a snapshot)."""
        with self._lock:
            return {a.node_id: a for a in self._peers.values()}

    def start(self, wait: bool = True) -> None:
        """Start browsing, then register; with `wait`, return once the name is probed and ours.

        Registration probes the LAN for ~1.5 s; `wait=False` lets a caller start several nodes
        (or bind its sockets) meanwhile and call `wait_advertised()` later.
        """
        if self._zc is not None or self._closed:
            raise LocalError("discovery was already started; create a new Discovery")
        addresses = self._addresses()
        for address in self._interfaces or []:
            _check_local_address(address)
        try:
            zc = Zeroconf(interfaces=self._interfaces or InterfaceChoice.All)
        except (OSError, ValueError) as exc:
            where = ", ".join(self._interfaces or ["all interfaces"])
            why = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise ConfigError(f"cannot use {where} for mDNS discovery: {why}") from None
        self._zc = zc
        self._info = self._service_info(self._advert, addresses)
        self._browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[self._on_service])
        assert zc.loop is not None
        self._registration = asyncio.run_coroutine_threadsafe(
            self._register(zc, self._info), zc.loop
        )
        if wait:
            try:
                self.wait_advertised()
            except ConfigError:
                self.close()
                raise

    def wait_advertised(self, timeout: float = REGISTER_TIMEOUT_S) -> None:
        """Block until registration finished; raise ConfigError if another node owns our name."""
        if self._registration is None:
            raise LocalError("discovery is not started")
        try:
            self._registration.result(timeout)
        except NonUniqueNameException:
            raise ConfigError(
                f"another terminal on this network already advertises node {self._advert.node_id}:"
                " two terminals share one identity"
            ) from None
        except concurrent.futures.TimeoutError:
            raise ConfigError(
                f"mDNS registration of node {self._advert.node_id} did not finish in {timeout:g} s"
            ) from None

    def update(self, advert: Advert) -> None:
        """Re-announce changed details (port, name, protocol); peers see PeerUpdated."""
        if advert.node_id != self._advert.node_id or advert.store_id != self._advert.store_id:
            raise LocalError("an advert update cannot change the node or store id")
        try:
            parse_txt(advert.txt())
        except MalformedAdvert as exc:
            raise ConfigError(f"cannot advertise this node: {exc}") from None
        self.wait_advertised()
        assert self._zc is not None
        info = self._service_info(advert, self._addresses(advert))
        self._zc.update_service(info)
        self._advert, self._info = advert, info

    def close(self) -> None:
        """Send goodbyes, stop browsing and join zeroconf's threads; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        zc, browser, registration = self._zc, self._browser, self._registration
        if browser is not None:
            browser.cancel()
        if zc is None:
            return
        registered = False
        if registration is not None:
            if not registration.done():
                registration.cancel()
            registered = (
                registration.done()
                and not registration.cancelled()
                and registration.exception() is None
            )
        if registered and self._info is not None:
            zc.unregister_service(self._info)
        zc.close()

    def __enter__(self) -> Discovery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _addresses(self, advert: Advert | None = None) -> list[str]:
        advert = advert or self._advert
        if advert.addresses:
            return list(advert.addresses)
        if self._ip:
            return [self._ip]
        if self._interfaces:
            return self._interfaces
        return _local_ipv4_addresses()

    @staticmethod
    def _service_info(advert: Advert, addresses: list[str]) -> ServiceInfo:
        return ServiceInfo(
            SERVICE_TYPE,
            instance_name(advert.node_id),
            port=advert.port,
            properties=advert.txt(),
            server=f"meshpos-{advert.node_id}.local.",
            parsed_addresses=addresses,
        )

    @staticmethod
    async def _register(zc: Zeroconf, info: ServiceInfo) -> None:
        await zc.async_register_service(info)

    def _on_service(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        if self._closed:
            return
        try:
            if state_change is ServiceStateChange.Removed:
                self._rejected.pop(name, None)
                self._forget(name)
            else:
                self._resolve(zeroconf, name)
        except Exception:
            log.exception("discovery: handling %s of %s failed", state_change.name, name)

    def _resolve(self, zc: Zeroconf, name: str) -> None:
        info = ServiceInfo(SERVICE_TYPE, name)
        if not info.request(zc, RESOLVE_TIMEOUT_MS, question_type=DNSQuestionType.QM):
            log.info(
                "discovery: %s did not answer with its details; waiting for it to announce", name
            )
            return
        addresses = tuple(info.parsed_addresses())
        try:
            advert = replace(parse_txt(info.properties), addresses=addresses)
            self._check_consistent(name, info, advert)
        except MalformedAdvert as exc:
            if self._rejected.get(name) != info.text:
                self._rejected[name] = info.text
                log.warning("discovery: ignoring %s at %s: %s", name, ",".join(addresses), exc)
            self._forget(name)
            return
        self._rejected.pop(name, None)
        if advert.node_id == self._advert.node_id:
            return
        if advert.store_id != self._advert.store_id:
            log.debug("discovery: ignoring %s of store %s", name, advert.store_id)
            self._forget(name)
            return
        with self._lock:
            old = self._peers.get(name)
            self._peers[name] = advert
        if old is None:
            self._emit(PeerAdded(advert))
        elif old != advert:
            self._emit(PeerUpdated(advert))

    @staticmethod
    def _check_consistent(name: str, info: ServiceInfo, advert: Advert) -> None:
        if name.lower() != instance_name(advert.node_id).lower():
            raise MalformedAdvert(f"advert named {name!r} claims to be node {advert.node_id}")
        if info.port != advert.port:
            raise MalformedAdvert(
                f"advert of node {advert.node_id} says port {advert.port}"
                f" but its SRV record says {info.port}"
            )
        if not advert.addresses:
            raise MalformedAdvert(f"advert of node {advert.node_id} carries no address")

    def _forget(self, name: str) -> None:
        with self._lock:
            old = self._peers.pop(name, None)
        if old is not None:
            self._emit(PeerRemoved(old.node_id))

    def _emit(self, event: PeerEvent) -> None:
        if self._closed:
            return
        try:
            self._on_change(event)
        except Exception:
            log.exception("discovery: the on_change callback failed on %s", event)


def event_json(event: PeerEvent) -> str:
    """One JSON line per event, for the command-line entry point and the namespace tests."""
    if isinstance(event, PeerRemoved):
        return json.dumps({"event": "removed", "node_id": event.node_id})
    kind = "added" if isinstance(event, PeerAdded) else "updated"
    return json.dumps({"event": kind, **asdict(event.advert)})


def main(argv: Sequence[str] | None = None) -> int:
    """Advertise one node and print a JSON line per peer event until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m meshpos.node.discovery",
        description="Advertise a meshpos node over mDNS and print peer events as JSON lines.",
    )
    parser.add_argument("--store", required=True, help="store id")
    parser.add_argument("--node", required=True, help="node id")
    parser.add_argument("--port", required=True, type=int, help="sync port to advertise")
    parser.add_argument("--name", default="", help="human name of the terminal")
    parser.add_argument("--fp", default="0", help="key fingerprint")
    parser.add_argument("--proto", default=1, type=int, help="protocol version")
    parser.add_argument("--ip", help="bind to and advertise this address (e.g. 127.0.0.1)")
    parser.add_argument("--verbose", action="store_true", help="log at DEBUG level")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    out_lock = threading.Lock()

    def say(line: str) -> None:
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    advert = Advert(args.store, args.node, args.name, args.fp, args.proto, args.port)
    try:
        discovery = Discovery(advert, lambda event: say(event_json(event)), ip=args.ip)
        discovery.start()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        shown = replace(advert, addresses=discovery.addresses())
        say(json.dumps({"event": "advertised", **asdict(shown)}))
        stop.wait()
    finally:
        discovery.close()
    say(json.dumps({"event": "closed", "node_id": advert.node_id}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
