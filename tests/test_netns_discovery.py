"""Discovery across real "hosts": three namespaces on a bridge, then a partition and a heal."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from netns import Lab, Node, Spawned
from netns import netns_lab as netns_lab

from bench.netns import ip

pytestmark = [pytest.mark.netns, pytest.mark.slow]

SEEN_WITHIN = 5.0
STOP_WITHIN = 15.0  # SIGTERM to exit: a clean close sends goodbyes, slow on loaded cores


def wait_link_up(node: Node, timeout: float = 10.0) -> None:
    """Until both ends of the node's cable report state UP. The kernel brings a link into use
    (its queue included) a moment after `ip link set up` returns; a packet sent before is lost."""
    deadline = time.monotonic() + timeout
    while True:
        ends = (
            ip("-o", "link", "show", node.host_veth).stdout,
            ip("-n", node.ns, "-o", "link", "show", "eth0").stdout,
        )
        if all(" state UP " in end for end in ends):
            return
        assert time.monotonic() < deadline, f"{node.ns}'s link not up after heal: {ends}"
        time.sleep(0.05)


def spawn(node: Node, store: str, node_id: str, port: int) -> Spawned:
    return node.python(
        "-m", "meshpos.node.discovery", "--store", store, "--node", node_id,
        "--port", str(port), "--ip", node.ip, "--name", f"till {node_id}",
    )  # fmt: skip


def advertised(proc: Spawned, node: Node) -> Spawned:
    _, advert = proc.expect_json(event="advertised", what="advertised")
    assert advert["addresses"] == [node.ip]
    return proc


def start(node: Node, store: str, node_id: str, port: int) -> Spawned:
    return advertised(spawn(node, store, node_id, port), node)


def about(node_id: str) -> Callable[[str], bool]:
    def match(line: str) -> bool:
        try:
            return bool(json.loads(line).get("node_id") == node_id)
        except (ValueError, AttributeError):
            return False

    return match


def assert_quiet(proc: Spawned, start: int, node_id: str, within: float = 0.5) -> None:
    """Nothing about `node_id` reaches `proc` (bounded: proving absence needs a wait)."""
    try:
        line = proc.lines[proc.expect(about(node_id), timeout=within, start=start)]
    except AssertionError:
        return
    raise AssertionError(f"a partitioned node heard about {node_id}: {line}")


def test_discovery_across_namespaces_survives_a_partition(netns_lab: Any) -> None:
    lab: Lab = netns_lab(3)
    store = f"s{uuid.uuid4().hex[:8]}"
    ids = ["a", "b", "c"]
    procs = [spawn(node, store, ids[i], 7000 + i) for i, node in enumerate(lab)]
    for proc, node in zip(procs, lab, strict=True):
        advertised(proc, node)
    for i, proc in enumerate(procs):
        for j, node in enumerate(lab):
            if i == j:
                continue
            _, seen = proc.expect_json(
                timeout=SEEN_WITHIN, event="added", node_id=ids[j], what=f"{ids[i]} sees {ids[j]}"
            )
            assert seen["addresses"] == [node.ip]
            assert seen["port"] == 7000 + j and seen["store_id"] == store
    a, b, c = procs

    lab[2].partition()
    mark_a, mark_c = len(a.poll_lines()), len(c.poll_lines())
    assert b.stop(STOP_WITHIN) == 0
    a.expect_json(start=mark_a, event="removed", node_id="b", what="a sees b leave")
    b = start(lab[1], store, "b", 7011)
    _, back = a.expect_json(start=mark_a, event="added", node_id="b", what="a sees b return")
    assert back["port"] == 7011 and back["addresses"] == [lab[1].ip]
    b.expect_json(event="added", node_id="a", what="new b sees a")
    assert_quiet(c, mark_c, "b")
    assert not any(about("c")(line) for line in b.poll_lines()), "new b heard partitioned c"
    assert c.popen.poll() is None

    lab[2].heal()
    wait_link_up(lab[2])
    mark_a, mark_b = len(a.poll_lines()), len(b.poll_lines())
    assert c.stop(STOP_WITHIN) == 0
    a.expect_json(start=mark_a, event="removed", node_id="c", what="a hears c's goodbye after heal")
    c = start(lab[2], store, "c", 7012)
    _, b_seen = c.expect_json(event="added", node_id="b", what="restarted c sees the new b")
    assert b_seen["port"] == 7011
    c.expect_json(event="added", node_id="a", what="restarted c sees a")
    for proc, name in ((a, "a"), (b, "b")):
        _, c_seen = proc.expect_json(
            start=mark_a if proc is a else mark_b, event="added", node_id="c", what=f"{name} sees c"
        )
        assert c_seen["port"] == 7012 and c_seen["addresses"] == [lab[2].ip]
    for proc in (a, b, c):
        proc.terminate()
    for proc, node_id in ((a, "a"), (b, "b"), (c, "c")):
        assert proc.stop(STOP_WITHIN) == 0
        assert json.loads(proc.lines[-1]) == {"event": "closed", "node_id": node_id}
