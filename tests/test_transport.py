"""The ZeroMQ transport over real TCP on loopback, with CURVE and ZAP."""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from meshpos.core.errors import ConfigError, InputError, LocalError, NotFound
from meshpos.node.transport import CurveKeys, LinkState, PeerStats, Transport, wire_size

DEADLINE = 5.0
LOGGER = "meshpos.transport"


@pytest.fixture(scope="module")
def keys() -> dict[str, CurveKeys]:
    return {name: CurveKeys.generate() for name in ("a", "b", "c", "m")}


@pytest.fixture
def make(keys: dict[str, CurveKeys]) -> Iterator[Callable[..., Transport]]:
    made: list[Transport] = []

    def _make(name: str, **kwargs: Any) -> Transport:
        t = Transport(name, keys[name], refused_retry_ms=100, **kwargs)
        t.start()
        made.append(t)
        return t

    yield _make
    for t in made:
        t.close()


@pytest.fixture
def zctx() -> Iterator[zmq.Context[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


Inbox = list[tuple[str, str, bytes]]


def pump(ts: list[Transport], until: Callable[[Inbox], bool], deadline: float = DEADLINE) -> Inbox:
    """Poll every transport until `until(received)` holds; return (receiver, sender, data)."""
    got: Inbox = []
    end = time.monotonic() + deadline
    while not until(got):
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {deadline}s; received {got!r}")
        for t in ts:
            got.extend((t.node_id, sender, data) for sender, data in t.poll(5))
    return got


def arrived(got: Inbox) -> bool:
    return bool(got)


def pair(
    make: Callable[..., Transport], keys: dict[str, CurveKeys], **kw: Any
) -> tuple[Transport, Transport]:
    a, b = make("a", **kw), make("b", **kw)
    a.allow("b", keys["b"].public)
    b.allow("a", keys["a"].public)
    a.connect("b", "127.0.0.1", b.port, keys["b"].public)
    b.connect("a", "127.0.0.1", a.port, keys["a"].public)
    pump([a, b], lambda _: a.is_up("b") and b.is_up("a"))
    return a, b


def raw_dealer(
    ctx: zmq.Context[Any], own: CurveKeys, server: CurveKeys, port: int, identity: bytes
) -> zmq.Socket[bytes]:
    """A hand-made client, for peers that do what a Transport never would."""
    s: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
    s.linger = 0
    s.routing_id = identity
    s.curve_publickey = own.public
    s.curve_secretkey = own.secret
    s.curve_serverkey = server.public
    s.connect(f"tcp://127.0.0.1:{port}")
    return s


def test_two_nodes_exchange_both_ways_as_authenticated_ids(
    make: Callable[..., Transport], keys: dict[str, CurveKeys]
) -> None:
    a, b = pair(make, keys)
    assert [e.state for e in a.link_events()] == [LinkState.UP]
    assert a.send("b", b"hello b")
    assert a.send("b", b"second")
    assert b.send("a", b"hello a")
    got = pump([a, b], lambda got: len(got) == 3)
    assert [m for m in got if m[0] == "b"] == [("b", "a", b"hello b"), ("b", "a", b"second")]
    assert [m for m in got if m[0] == "a"] == [("a", "b", b"hello a")]
    assert a.stats()["b"] == PeerStats(
        messages_sent=2, bytes_sent=13, messages_received=1, bytes_received=7
    )
    assert b.bytes_received == 13 and b.messages_received == 2
    assert b.inbound_address("a") == "127.0.0.1"


def test_unknown_key_is_refused_at_handshake_and_logged(
    make: Callable[..., Transport],
    keys: dict[str, CurveKeys],
    zctx: zmq.Context[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    a = make("a")
    a.allow("b", keys["b"].public)
    c = make("c")
    c.connect("a", "127.0.0.1", a.port, keys["a"].public)
    c_key = keys["c"].public.decode()

    def refusals() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name.startswith(LOGGER) and r.levelno == logging.WARNING and "refused" in r.msg
        ]

    events = pump([a, c], lambda _: any(e.state is LinkState.REFUSED for e in c.link_events()))
    assert events == []
    assert any(c_key in m and "127.0.0.1" in m for m in refusals())
    assert not c.is_up("a")
    assert not c.send("a", b"let me in")

    sneak = raw_dealer(zctx, keys["c"], keys["a"], a.port, identity=b"b")
    sneak.send(b"queued before the handshake")
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        assert a.poll(10) == []
    sneak.close(linger=0)

    a.allow("c", keys["c"].public)
    pump([a, c], lambda _: c.is_up("a"))
    assert c.send("a", b"enrolled now")
    assert pump([a, c], arrived) == [("a", "c", b"enrolled now")]


def test_revoked_node_is_cut_off(
    make: Callable[..., Transport], keys: dict[str, CurveKeys], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    a, b = pair(make, keys)
    assert b.send("a", b"before")
    pump([a], arrived)
    a.revoke("b")
    assert "b" not in a.allowed()
    with pytest.raises(NotFound):
        a.send("b", b"to revoked")
    assert b.send("a", b"after")
    got = pump([a], lambda _: a.rejected == 1)
    assert got == []
    assert any("no longer" in r.getMessage() for r in caplog.records)

    b.disconnect("a")
    b.link_events()
    b.connect("a", "127.0.0.1", a.port, keys["a"].public)
    pump([a, b], lambda _: any(e.state is LinkState.REFUSED for e in b.link_events()))
    assert not b.send("a", b"reconnected")


def test_peer_claiming_another_nodes_id_is_not_accepted_as_it(
    make: Callable[..., Transport],
    keys: dict[str, CurveKeys],
    zctx: zmq.Context[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    a = make("a")
    a.allow("b", keys["b"].public)
    a.allow("m", keys["m"].public)
    forger = raw_dealer(zctx, keys["m"], keys["a"], a.port, identity=b"b")
    forger.send(b"forged sale")
    got = pump([a], lambda _: a.rejected == 1)
    assert got == []
    warning = next(r.getMessage() for r in caplog.records if "claims another id" in r.getMessage())
    assert "'m'" in warning and keys["m"].public.decode() in warning
    forger.close(linger=0)

    honest_m = raw_dealer(zctx, keys["m"], keys["a"], a.port, identity=b"m")
    honest_m.send(b"from m")
    assert pump([a], arrived) == [("a", "m", b"from m")]
    honest_m.close(linger=0)


def test_back_pressure_refuses_instead_of_dropping(
    make: Callable[..., Transport], keys: dict[str, CurveKeys]
) -> None:
    a, b = pair(make, keys, hwm=1)
    chunk = b"x" * 65536
    queued = 0
    refused_since: float | None = None
    while True:
        if a.send("b", queued.to_bytes(4, "big") + chunk):
            queued += 1
            refused_since = None
            assert queued < 5000, "send never reported back-pressure"
            continue
        now = time.monotonic()
        refused_since = refused_since or now
        if now - refused_since > 0.3:
            break
        a.poll(5)
    assert queued > 10, "kernel buffers should have taken some before the queue filled"
    assert a.stats()["b"].sends_refused > 0
    got = pump([b], lambda got: len(got) >= queued)
    assert [int.from_bytes(d[:4], "big") for _, _, d in got] == list(range(queued))
    assert a.send("b", b"room again")
    assert pump([b], arrived) == [("b", "a", b"room again")]


def test_oversized_frame_drops_the_connection_not_memory(
    make: Callable[..., Transport], keys: dict[str, CurveKeys], zctx: zmq.Context[Any]
) -> None:
    limit = 4096
    a = make("a", max_message_size=limit)
    b = make("b")
    a.allow("b", keys["b"].public)
    a.allow("m", keys["m"].public)
    b.connect("a", "127.0.0.1", a.port, keys["a"].public)
    pump([a, b], lambda _: b.is_up("a"))
    assert b.send("a", b"y" * limit)
    assert pump([a], arrived) == [("a", "b", b"y" * limit)]
    a.connect("b", "127.0.0.1", b.port, keys["b"].public)
    with pytest.raises(InputError, match="exceeds"):
        a.send("b", b"z" * (limit + 1))

    rogue = raw_dealer(zctx, keys["m"], keys["a"], a.port, identity=b"m")
    monitor = rogue.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
    rogue.send(b"z" * (limit + 1))
    seen: list[int] = []

    def rogue_dropped() -> bool:
        while monitor.poll(0):
            seen.append(recv_monitor_message(monitor)["event"])
        return zmq.EVENT_DISCONNECTED in seen

    assert pump([a], lambda _: rogue_dropped()) == []
    rogue.send(b"m ok")
    assert pump([a], arrived) == [("a", "m", b"m ok")]
    assert a.rejected == 0
    rogue.disable_monitor()
    monitor.close(linger=0)
    rogue.close(linger=0)


def test_close_leaves_no_threads_and_frees_the_port(
    keys: dict[str, CurveKeys],
) -> None:
    before = set(threading.enumerate())
    a = Transport("a", keys["a"])
    b = Transport("b", keys["b"])
    with a, b:
        a.allow("b", keys["b"].public)
        a.connect("b", "127.0.0.1", b.port, keys["b"].public)
        b.connect("a", "127.0.0.1", a.port, keys["a"].public)
        b.allow("a", keys["a"].public)
        pump([a, b], lambda _: a.is_up("b") and b.is_up("a"))
        assert len(set(threading.enumerate()) - before) == 4  # each: ZAP, and the stranger watch
        ports = (a.port, b.port)
    assert set(threading.enumerate()) - before == set()
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
    a.close()
    with pytest.raises(LocalError):
        a.poll(0)


def test_curve_keys_roundtrip_and_reject_bad_files(tmp_path: Path) -> None:
    k = CurveKeys.generate()
    path = tmp_path / "node.curve"
    k.save(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert CurveKeys.load(path) == k
    assert CurveKeys.from_secret(k.secret.decode()) == k
    path.write_text("not a key\n")
    with pytest.raises(ConfigError, match=r"node\.curve"):
        CurveKeys.load(path)
    with pytest.raises(ConfigError, match="cannot read"):
        CurveKeys.load(tmp_path / "missing")
    with pytest.raises(ConfigError, match="does not belong"):
        CurveKeys(CurveKeys.generate().public, k.secret)


def test_bad_arguments_are_refused_clearly(
    keys: dict[str, CurveKeys], monkeypatch: pytest.MonkeyPatch
) -> None:
    for bad in ("", "\x00x", "n" * 256):
        with pytest.raises(InputError):
            Transport(bad, keys["a"])
    t = Transport("a", keys["a"])
    with pytest.raises(LocalError, match="not started"):
        _ = t.port
    with t:
        with pytest.raises(ConfigError, match="CURVE public key"):
            t.allow("b", b"short")
        with pytest.raises(NotFound):
            t.send("nobody", b"x")
        busy = Transport("b", keys["b"], port=t.port)
        with pytest.raises(ConfigError, match="cannot listen"):
            busy.start()
    monkeypatch.setattr(zmq, "has", lambda _: False)
    with pytest.raises(ConfigError, match="CURVE"):
        Transport("a", keys["a"])


class CountingProxy:
    """A TCP relay stepped from the test's own loop, counting bytes client -> server."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.pairs: dict[socket.socket, socket.socket] = {}
        self.upstream_bytes = 0

    def step(self) -> None:
        readable, _, _ = select.select([self.listener, *self.pairs], [], [], 0.002)
        for sock in readable:
            if sock is self.listener:
                client, _ = self.listener.accept()
                server = socket.create_connection(("127.0.0.1", self.upstream_port))
                self.pairs[client], self.pairs[server] = server, client
                continue
            data = sock.recv(1 << 16)
            peer = self.pairs[sock]
            if not data:
                self.close_pair(sock)
                continue
            if sock.getpeername()[1] != self.upstream_port:
                self.upstream_bytes += len(data)
            peer.sendall(data)

    def close_pair(self, sock: socket.socket) -> None:
        peer = self.pairs.pop(sock)
        self.pairs.pop(peer, None)
        sock.close()
        peer.close()

    def close(self) -> None:
        for sock in list(self.pairs):
            if sock in self.pairs:
                self.close_pair(sock)
        self.listener.close()


def test_wire_size_matches_bytes_on_the_wire(
    make: Callable[..., Transport], keys: dict[str, CurveKeys]
) -> None:
    a = make("a", heartbeat_ms=60_000)
    b = make("b", heartbeat_ms=60_000)
    b.allow("a", keys["a"].public)
    proxy = CountingProxy(b.port)
    try:
        a.connect("b", "127.0.0.1", proxy.port, keys["b"].public)

        def stepping(cond: Callable[[Inbox], bool]) -> Callable[[Inbox], bool]:
            def until(got: Inbox) -> bool:
                proxy.step()
                return cond(got)

            return until

        pump([a, b], stepping(lambda _: a.is_up("b")))
        handshake = proxy.upstream_bytes
        sizes = [0, 1, 222, 223, 1000, 70_000]
        for n in sizes:
            assert a.send("b", b"p" * n)
        got = pump([a, b], stepping(lambda got: len(got) == len(sizes)))
        assert [len(d) for _, _, d in got] == sizes
        assert proxy.upstream_bytes - handshake == sum(wire_size(n) for n in sizes)
        assert wire_size(222) - 222 == 35 and wire_size(223) - 223 == 42
    finally:
        proxy.close()


def test_link_events_follow_a_peer_restart(
    make: Callable[..., Transport], keys: dict[str, CurveKeys]
) -> None:
    a, b = pair(make, keys)
    a.link_events()
    port = b.port
    b.close()
    pump([a], lambda _: not a.is_up("b"))
    assert [(e.node_id, e.state) for e in a.link_events()] == [("b", LinkState.DOWN)]
    pump([a], lambda _: not a.send("b", b"while down"))
    b2 = make("b", port=port)
    b2.allow("a", keys["a"].public)
    pump([a, b2], lambda _: a.is_up("b"))
    assert [(e.node_id, e.state) for e in a.link_events()] == [("b", LinkState.UP)]
    assert a.send("b", b"after restart")
    assert pump([b2], arrived) == [("b", "a", b"after restart")]
