"""The cuts of the bench's namespace lab are real ones: packets vanish (a connection attempt
hangs until its timeout, nothing refuses it), and undoing the cut restores the link."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator

import pytest
from netns import gateway_lab_lock as gateway_lab_lock

from bench import netns

pytestmark = [pytest.mark.netns]

PROBE = (
    "import socket, sys\n"
    "s = socket.socket(); s.settimeout(float(sys.argv[3]))\n"
    "try:\n"
    "    s.connect((sys.argv[1], int(sys.argv[2]))); print('connected')\n"
    "except TimeoutError:\n"
    "    print('timeout')\n"
    "except OSError as exc:\n"
    "    print('error', exc.errno)\n"
)


@pytest.fixture
def lab(gateway_lab_lock: None) -> Iterator[netns.Lab]:
    try:
        created = netns.create(2, gateway=True)
    except netns.NetnsUnavailable as exc:
        pytest.skip(f"network namespace tests skipped: {exc}")
    try:
        yield created
    finally:
        created.close()


@pytest.fixture
def listener(lab: netns.Lab) -> Iterator[int]:
    """A TCP listener on the lab's gateway (the host), accepting and closing."""
    assert lab.gateway is not None
    sock = socket.socket()
    sock.bind((lab.gateway, 0))
    sock.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def probe(node: netns.Node, address: str, port: int, timeout: float = 1.0) -> str:
    argv = [sys.executable, "-c", PROBE, address, str(port), str(timeout)]
    return node.run(argv).stdout.strip()


def test_block_drops_silently_and_unblock_restores(lab: netns.Lab, listener: int) -> None:
    assert lab.gateway == netns.GATEWAY
    a, b = lab[0], lab[1]
    assert probe(a, netns.GATEWAY, listener) == "connected"
    a.block(netns.GATEWAY)
    assert probe(a, netns.GATEWAY, listener) == "timeout"  # dropped, not refused
    assert probe(b, netns.GATEWAY, listener) == "connected"  # only a's WAN is cut
    a.unblock()
    assert probe(a, netns.GATEWAY, listener) == "connected"


def test_partition_cuts_the_lan_and_heal_restores(lab: netns.Lab, listener: int) -> None:
    a = lab[0]
    a.partition()
    assert probe(a, netns.GATEWAY, listener) == "timeout"
    a.heal()
    assert probe(a, netns.GATEWAY, listener, timeout=5.0) == "connected"


def test_a_second_gateway_lab_is_refused_while_one_runs(lab: netns.Lab) -> None:
    with pytest.raises(netns.NetnsUnavailable, match="taken"):
        netns.create(1, gateway=True)
