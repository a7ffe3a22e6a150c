"""Linux network namespaces joined by a bridge: "hosts" for the namespace tests and the mesh bench,
so multicast really crosses hosts and a cut is a real one.

A lab of N nodes is one bridge in the host namespace (`mcast_snooping 0`, no address, so the host
itself takes no part) and, per node, a namespace with `lo` and `eth0` up, `eth0` being the peer of a
veth whose host end is a bridge port. Node i gets 10.77.0.(i+1)/24, a subnet that exists only
inside the lab, so nothing is ever sent anywhere else. Names carry the creating process's pid and
a counter, so parallel runs never collide, and a later run deletes what a killed run left behind.

`partition()` takes the host end of a node's veth down (a pulled cable: the namespace keeps its
address and its processes keep running but hear nothing, and TCP has nothing to buffer into);
`heal()` brings it back.

Use the `lab()` context manager (or the tests' `netns_lab` fixture, tests/netns.py): it deletes
namespaces, veths and the bridge and stops every process spawned through the lab, whatever
happened, Ctrl-C included. Without root or when the kernel refuses namespaces, creating a lab
raises NetnsUnavailable with the reason.

`loopback_multicast()` makes sure several processes can multicast to each other on 127.0.0.1
(see meshpos/node/discovery.py): it probes, sets `lo` multicast only if the probe fails, and
restores the flag afterwards.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUBNET = "10.77.0"
GATEWAY = f"{SUBNET}.254"  # the host's address on the bridge, in a lab made with `gateway=True`
BLOCK_TABLE = "meshpos_block"
PREFIX_LEN = 24
REPO = Path(__file__).resolve().parents[1]
_counter = itertools.count()
_NS_RE = re.compile(r"meshpos-(\d+)-\d+-\d+")
_LINK_RE = re.compile(r"m([0-9a-f]+)x[0-9a-f]+b")


class NetnsUnavailable(Exception):
    """This machine cannot create network namespaces, bridges or veths (the reason says why)."""


def unavailable_reason() -> str | None:
    """Why namespace tests cannot run here, or None when they can (creation may still fail)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (run the tests as root)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    return None


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale() -> None:
    """Delete namespaces and bridges left by lab runs whose process is gone (e.g. SIGKILLed)."""
    me = os.getpid()
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = _NS_RE.fullmatch(name)
        if m and int(m.group(1)) != me and not _pid_alive(int(m.group(1))):
            ip("netns", "del", name, check=False)
    for line in ip("-o", "link", "show", "type", "bridge", check=False).stdout.splitlines():
        parts = line.split(":")
        name = parts[1].strip().split("@")[0] if len(parts) > 1 else ""
        m = _LINK_RE.fullmatch(name)
        if m and int(m.group(1), 16) != me and not _pid_alive(int(m.group(1), 16)):
            ip("link", "del", name, check=False)


class Spawned:
    """A process in a namespace whose stdout lines are collected by a thread, for polling."""

    def __init__(self, argv: Sequence[str], popen: subprocess.Popen[str]) -> None:
        self.argv = list(argv)
        self.popen = popen
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._eof = False
        self._threads = [
            threading.Thread(target=self._pump, args=(popen.stdout, self._queue.put), daemon=True),
            threading.Thread(
                target=self._pump, args=(popen.stderr, self._stderr.append), daemon=True
            ),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _pump(stream: Any, sink: Callable[[Any], None]) -> None:
        for line in stream:
            sink(line.rstrip("\n"))
        sink(None)

    @property
    def stderr(self) -> str:
        return "\n".join(s for s in self._stderr if s is not None)

    def _drain(self, timeout: float) -> bool:
        """Move one line (waiting up to `timeout`) and any queued lines into `lines`."""
        try:
            item = self._queue.get(timeout=max(timeout, 0))
        except queue.Empty:
            return False
        while True:
            if item is None:
                self._eof = True
            else:
                self.lines.append(item)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return True

    def poll_lines(self) -> list[str]:
        self._drain(0)
        return self.lines

    def expect(
        self, predicate: Callable[[str], bool], timeout: float = 5.0, start: int = 0, what: str = ""
    ) -> int:
        """Index of the first line from `start` on that satisfies `predicate`, waiting."""
        deadline = time.monotonic() + timeout
        checked = start
        while True:
            for i in range(checked, len(self.lines)):
                if predicate(self.lines[i]):
                    return i
            checked = max(checked, len(self.lines))
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self._eof and self._queue.empty()):
                raise AssertionError(
                    f"{what or 'expected line'} not seen from {self.argv} within {timeout} s;"
                    f" exit={self.popen.poll()} stdout={self.lines[start:]!r}"
                    f" stderr={self.stderr[-2000:]!r}"
                )
            self._drain(min(remaining, 0.1))

    def expect_json(
        self, timeout: float = 5.0, start: int = 0, what: str = "", **fields: Any
    ) -> tuple[int, dict[str, Any]]:
        """First JSON line from `start` on whose items include `fields`."""

        def matches(line: str) -> bool:
            try:
                obj = json.loads(line)
            except ValueError:
                return False
            return isinstance(obj, dict) and all(obj.get(k) == v for k, v in fields.items())

        index = self.expect(matches, timeout, start, what or f"JSON line with {fields}")
        return index, json.loads(self.lines[index])

    def terminate(self) -> None:
        """Send SIGTERM without waiting (to stop several processes at once, then `stop()` each)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        for t in self._threads:
            t.join(timeout)
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()
        self._drain(0)
        return self.popen.returncode

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.stop()


@dataclass
class Node:
    """One namespace of a lab: the "host" of one terminal."""

    index: int
    ns: str
    ip: str
    host_veth: str
    lab: Lab = field(repr=False)

    def command(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def run(self, argv: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run to completion inside the namespace; raise with its stderr if it fails."""
        result = subprocess.run(
            self.command(argv), capture_output=True, text=True, timeout=timeout, cwd=REPO
        )
        if result.returncode != 0:
            raise RuntimeError(f"{list(argv)} in {self.ns} failed: {result.stderr.strip()}")
        return result

    def spawn(self, argv: Sequence[str], env: dict[str, str] | None = None) -> Spawned:
        """Start a process in the namespace; the lab stops it at cleanup if the test did not."""
        popen = subprocess.Popen(
            self.command(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        spawned = Spawned(argv, popen)
        self.lab.spawned.append(spawned)
        return spawned

    def python(self, *args: str, env: dict[str, str] | None = None) -> Spawned:
        return self.spawn([sys.executable, *args], env=env)

    def partition(self) -> None:
        """Unplug this node from the bridge: it keeps running but reaches no one."""
        ip("link", "set", self.host_veth, "down")

    def heal(self) -> None:
        ip("link", "set", self.host_veth, "up")

    def block(self, address: str) -> None:
        """Drop every packet between this node and `address`, silently (nftables in the
        namespace): a dead WAN while the LAN stays, with no refusal to notice it by."""
        if shutil.which("nft") is None:
            raise NetnsUnavailable("the `nft` command (nftables) is not installed")
        table = ["inet", BLOCK_TABLE]
        self.run(["nft", "add", "table", *table])
        for chain, hook, field_ in (("out", "output", "daddr"), ("in", "input", "saddr")):
            self.run(
                [
                    "nft",
                    "add",
                    "chain",
                    *table,
                    chain,
                    f"{{ type filter hook {hook} priority 0 ; }}",
                ]
            )
            self.run(["nft", "add", "rule", *table, chain, "ip", field_, address, "drop"])

    def unblock(self) -> None:
        self.run(["nft", "delete", "table", "inet", BLOCK_TABLE])


@dataclass
class Lab:
    bridge: str
    gateway: str | None = None  # the host's address on the bridge, if it has one
    nodes: list[Node] = field(default_factory=list)
    spawned: list[Spawned] = field(default_factory=list)

    def __getitem__(self, index: int) -> Node:
        return self.nodes[index]

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def close(self) -> None:
        """Stop spawned processes, delete namespaces (and their veths) and the bridge."""
        for spawned in self.spawned:
            with contextlib.suppress(Exception):
                spawned.terminate()
        for spawned in self.spawned:
            with contextlib.suppress(Exception):
                spawned.stop(timeout=3)
        for node in self.nodes:
            ip("netns", "del", node.ns, check=False)
            ip("link", "del", node.host_veth, check=False)
        ip("link", "del", self.bridge, check=False)


def create(n: int, gateway: bool = False) -> Lab:
    """N namespaces on one bridge; the caller must `close()` the lab (see `lab()`). With
    `gateway`, the host joins the bridge at GATEWAY (for a service the nodes reach as a WAN)."""
    if not 1 <= n <= 200:
        raise ValueError("a lab has 1 to 200 nodes")
    reason = unavailable_reason()
    if reason:
        raise NetnsUnavailable(reason)
    reap_stale()
    pid, seq = os.getpid(), next(_counter)
    lab = Lab(bridge=f"m{pid:x}x{seq:x}b")
    try:
        try:
            ip("link", "add", lab.bridge, "type", "bridge", "mcast_snooping", "0")
        except RuntimeError as exc:
            raise NetnsUnavailable(f"the kernel refused a bridge: {exc}") from None
        ip("link", "set", lab.bridge, "up")
        if gateway:
            if ip("-o", "addr", "show", "to", GATEWAY).stdout.strip():
                raise NetnsUnavailable(f"{GATEWAY} is taken (another lab with a gateway runs)")
            ip("addr", "add", f"{GATEWAY}/{PREFIX_LEN}", "dev", lab.bridge)
            lab.gateway = GATEWAY
        for i in range(n):
            node = Node(
                i, f"meshpos-{pid}-{seq}-{i}", f"{SUBNET}.{i + 1}", f"m{pid:x}x{seq:x}v{i}", lab
            )
            try:
                ip("netns", "add", node.ns)
            except RuntimeError as exc:
                raise NetnsUnavailable(f"the kernel refused a network namespace: {exc}") from None
            lab.nodes.append(node)
            try:
                ip(
                    "link",
                    "add",
                    node.host_veth,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    node.ns,
                )
            except RuntimeError as exc:
                raise NetnsUnavailable(f"the kernel refused a veth pair: {exc}") from None
            ip("link", "set", node.host_veth, "master", lab.bridge, "up")
            ip("-n", node.ns, "addr", "add", f"{node.ip}/{PREFIX_LEN}", "dev", "eth0")
            ip("-n", node.ns, "link", "set", "eth0", "multicast", "on", "up")
            ip("-n", node.ns, "link", "set", "lo", "up")
    except BaseException:
        lab.close()
        raise
    return lab


@contextlib.contextmanager
def lab(n: int, gateway: bool = False) -> Iterator[Lab]:
    """N namespaces on one bridge, removed on exit whatever happened."""
    created = create(n, gateway)
    try:
        yield created
    finally:
        created.close()


def _multicast_probe(timeout: float = 1.0) -> bool:
    """Send one multicast datagram out of 127.0.0.1 and see whether a local socket hears it."""
    group = "224.0.0.251"
    token = os.urandom(8)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("", 0))
        port = rx.getsockname()[1]
        rx.setsockopt(
            socket.IPPROTO_IP,
            socket.IP_ADD_MEMBERSHIP,
            socket.inet_aton(group) + socket.inet_aton("127.0.0.1"),
        )
        rx.settimeout(timeout)
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        tx.sendto(token, (group, port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data, _ = rx.recvfrom(64)
            if data == token:
                return True
        return False
    except OSError:
        return False
    finally:
        rx.close()
        tx.close()


def _lo_has_multicast() -> bool:
    return "MULTICAST" in ip("link", "show", "lo").stdout.split(">")[0]


@contextlib.contextmanager
def loopback_multicast() -> Iterator[None]:
    """Ensure multicast works on 127.0.0.1 for the block; restore `lo` if it had to be changed."""
    if _multicast_probe():
        yield
        return
    if os.geteuid() != 0 or _lo_has_multicast():
        raise RuntimeError("multicast on 127.0.0.1 does not work here; mDNS tests cannot run")
    ip("link", "set", "lo", "multicast", "on")
    try:
        if not _multicast_probe():
            raise RuntimeError("multicast on 127.0.0.1 fails even with `lo` flagged multicast")
        yield
    finally:
        ip("link", "set", "lo", "multicast", "off")
