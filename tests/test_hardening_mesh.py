"""Issue 13, point 3: the mesh logs every refused connection with its address and reason, and a
flood of them writes a few lines a minute, not one each.

A transport in this process is knocked on by a plain ZeroMQ client (NULL mechanism), by raw TCP
garbage, by bytes cut off mid-greeting and by an unknown CURVE key, each from its own loopback
address (all of 127/8 is loopback on Linux); then the same against a real `meshpos node run`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from mesh_procs import Daemons, make_store, wait_until

from meshpos.node.transport import CurveKeys, Transport
from meshpos.service.refusal_log import RefusalLog

# What libzmq lets us see of a NULL client depends on which end notices first: the mechanism
# mismatch, a broken pipe, or a hang-up before the handshake.
NOT_CURVE = ("does not speak CURVE", "not a ZeroMQ handshake", "ended before a handshake")


@pytest.fixture
def transport() -> Iterator[Transport]:
    t = Transport("aaaaaaaaaaaa", CurveKeys.generate())
    t.start()
    yield t
    t.close()


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "meshpos.transport"]


def _refusal_from(caplog: pytest.LogCaptureFixture, address: str) -> str:
    def found() -> str | None:
        return next((x for x in _lines(caplog) if f"from {address}:" in x), None)

    return wait_until(found, 10, f"a refusal from {address}")


def null_client(ctx: zmq.Context[Any], port: int, source: str) -> zmq.Socket[bytes]:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(f"tcp://{source}:0;127.0.0.1:{port}")  # bound to its own source address
    offer(sock, b"hello?")
    return sock


def offer(sock: zmq.Socket[bytes], data: bytes) -> None:
    """Send if the socket takes it now. The refusal under test happens in the handshake that
    `connect` starts; once the server has dropped the connection a DEALER has no peer, and a
    blocking send would wait for one forever."""
    with contextlib.suppress(zmq.Again):
        sock.send(data, zmq.NOBLOCK)


def garbage(port: int, source: str, data: bytes) -> None:
    """Bytes that are not ZMTP. libzmq drops such a connection within microseconds; kept under
    ZMTP's 10-byte signature, they are all read before it does, so it closes with a FIN (more
    would be reset) and the kernel's list of closing sockets still names the address when the
    descriptor is gone (see meshpos/node/transport.py, `_StrangerWatch`)."""
    with socket.create_connection(("127.0.0.1", port), 5, (source, 0)) as s:
        s.sendall(data)
        with contextlib.suppress(OSError):
            s.recv(100)  # what libzmq answers before it hangs up, if anything


def test_each_kind_of_stranger_is_logged_with_address_and_reason(
    transport: Transport, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshpos.transport")
    port = transport.port
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        garbage(port, "127.0.0.32", b"GET /\r\n")
        line = _refusal_from(caplog, "127.0.0.32")
        assert "handshake" in line, line

        garbage(
            port, "127.0.0.33", b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f\x03"
        )  # then hangs up
        assert "handshake" in _refusal_from(caplog, "127.0.0.33")

        null = null_client(ctx, port, "127.0.0.31")
        line = _refusal_from(caplog, "127.0.0.31")
        assert line.startswith("refused connection from 127.0.0.31: ")
        assert any(why in line for why in NOT_CURVE), line
        null.close()

        public, secret = zmq.curve_keypair()
        stranger = ctx.socket(zmq.DEALER)
        stranger.linger = 0
        stranger.curve_publickey, stranger.curve_secretkey = public, secret
        stranger.curve_serverkey = transport.keys.public
        stranger.connect(f"tcp://127.0.0.34:0;127.0.0.1:{port}")
        offer(stranger, b"x")
        line = _refusal_from(caplog, "127.0.0.34")
        assert line == (
            f"refused connection from 127.0.0.34: CURVE key {public.decode()} is not an "
            "enrolled peer"
        )
    finally:
        ctx.destroy(linger=0)


def test_a_flood_of_strangers_writes_a_few_lines_and_a_count(
    transport: Transport, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshpos.transport")
    port = transport.port
    for i in range(400):
        garbage(port, f"127.0.{10 + i % 200 // 100}.{1 + i % 100}", b"\x01\x02garbage" * 8)
    watch = transport._watch
    assert watch is not None
    wait_until(lambda: transport.refusals.total >= 400, 20, "400 refusals counted")
    assert watch.refused >= 400
    lines = [x for x in _lines(caplog) if x.startswith("refused connection")]
    assert len(lines) <= 30, len(lines)  # the budget of one minute


def test_refusals_are_summarised_when_a_window_ends() -> None:
    now = [0.0]
    records: list[str] = []

    class Sink(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("test.refusals")
    logger.addHandler(Sink())
    logger.propagate = False
    refusals = RefusalLog(logger, budget=3, window_s=60, clock=lambda: now[0])
    for i in range(100):
        refusals.refused(f"10.0.0.{i % 7}", "connection", "garbage")
    refusals.refused("10.0.0.1", "connection", "another kind", kind="other")  # over budget too
    assert len(records) == 3  # the budget, each (address, kind) once
    now[0] = 61.0
    refusals.flush()
    assert records[-1] == (
        "98 more refusal(s) from 7 address(es) in the last 61 s not logged one by one"
    )
    refusals.refused("10.0.0.1", "connection", "garbage")  # a new window: logged again
    assert records[-1] == "refused connection from 10.0.0.1: garbage"


def test_a_daemon_logs_strangers_on_its_mesh_port(tmp_path: Path) -> None:
    (a,) = make_store(tmp_path / "store", ["A"], catalog=False,
                      mesh={"discovery": False, "host": "127.0.0.1"})  # fmt: skip
    with Daemons() as ds:
        da = ds.start(a)
        port = int(wait_until(lambda: da.status().get("port"), 30, "the daemon's port", ds))
        ctx: zmq.Context[Any] = zmq.Context()
        try:

            def logged(address: str) -> str | None:
                return next((x for x in da.log().splitlines() if f"from {address}:" in x), None)

            garbage(port, "127.0.0.42", b"SSH-2.0")
            junk_line = wait_until(lambda: logged("127.0.0.42"), 30, "the garbage", ds)
            assert "WARNING meshpos.transport: refused connection from 127.0.0.42" in junk_line
            null = null_client(ctx, port, "127.0.0.41")
            null_line = wait_until(lambda: logged("127.0.0.41"), 30, "the NULL client", ds)
            assert any(why in null_line for why in NOT_CURVE), null_line
            null.close()
        finally:
            ctx.destroy(linger=0)
        assert da.running()
