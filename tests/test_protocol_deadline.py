"""`SyncNode.next_deadline`: a driver may skip every tick before it (MemNet's lazy mode, the
simulator), so a tick earlier than the deadline must do nothing at all; and an idle node's
deadline is its next timer, not "now", or lazy driving would save nothing."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st
from mesh_helpers import Mesh

from meshpos.sync.memnet import LinkSpec
from meshpos.sync.protocol import Have, Ping, SyncNode, decode

STEPS = st.lists(
    st.tuples(
        st.sampled_from(["sell", "run", "partition", "heal", "stop", "restart", "check"]),
        st.integers(0, 3),
        st.integers(1, 3000),
    ),
    min_size=3,
    max_size=14,
)


def _early_tick_does_nothing(node: SyncNode, now: int, offset: int) -> bool:
    """Tick just before the deadline, and somewhere between now and it; True when there was
    room to try at all."""
    due = node.next_deadline(now)
    if due <= now:
        return False
    before = copy.deepcopy(node.sessions)
    for at in (due - 1, now + offset % (due - now)):
        assert node.tick(at) == [], f"a tick at {at} acted before the deadline {due}"
        assert node.sessions == before, f"a tick at {at} changed state before the deadline {due}"
    return True


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 1000),
    loss=st.sampled_from([0.0, 0.1, 0.3]),
    reorder=st.sampled_from([0.0, 0.2]),
    steps=STEPS,
)
def test_no_tick_before_the_deadline_does_anything(
    seed: int, loss: float, reorder: float, steps: list[tuple[str, int, int]]
) -> None:
    link = LinkSpec(latency_ms=3, jitter_ms=5, loss=loss, duplicate=0.05, reorder=reorder)
    mesh = Mesh(4, seed=seed, link=link)
    stopped: set[int] = set()
    for what, i, n in steps:
        if what == "sell" and i not in stopped:
            mesh.sell(i, [(f"SKU{n % 8}", 1)])
        elif what == "run":
            for _ in range(n // 97):
                mesh.net.run_for(97)
                for k in set(range(4)) - stopped:
                    _early_tick_does_nothing(mesh.sync_node(k), mesh.net.now, n + k)
        elif what == "partition":
            mesh.partition([0, i % 3 + 1], [k for k in range(1, 4) if k != i % 3 + 1])
        elif what == "heal":
            mesh.heal()
        elif what == "stop" and i not in stopped:
            mesh.stop(i)
            stopped.add(i)
        elif what == "restart" and i in stopped:
            mesh.restart(i)
            stopped.discard(i)
        for k in range(4):
            if k not in stopped:
                _early_tick_does_nothing(mesh.sync_node(k), mesh.net.now, n * 7919 + k)


def test_an_idle_node_sleeps_until_its_next_ping() -> None:
    mesh = Mesh(3, seed=4)
    mesh.net.run_for(5000)
    node = mesh.sync_node(0)
    now = mesh.net.now
    assert len(node.ready_peers()) == 2
    due = node.next_deadline(now)
    assert now < due <= now + node.config.ping_ms
    assert _early_tick_does_nothing(node, now, 12345)
    sent = [decode(a.data) for a in node.tick(due) if hasattr(a, "data")]
    assert sent, "nothing happened at the deadline: it is later than it needs to be"
    assert any(isinstance(m, Ping | Have) for m in sent), sent  # keep-alive or anti-entropy


def test_work_waiting_is_due_now() -> None:
    mesh = Mesh(2, seed=2)
    mesh.net.run_for(2000)
    assert mesh.sync_node(0).ready_peers()
    mesh.nodes[0].terminal.sell([("SKU1", 1)])  # rung without telling the network yet
    node = mesh.sync_node(0)
    assert node.next_deadline(mesh.net.now) <= mesh.net.now


def test_a_lossy_pair_heals_by_retransmits_that_the_deadline_foresees() -> None:
    # Two nodes alone: a lost batch comes back only by retransmit (no third node forwards it),
    # so the retransmit timer is the deadline that matters here.
    mesh = Mesh(2, seed=9, link=LinkSpec(latency_ms=2, jitter_ms=3, loss=0.3))
    for k in range(60):
        mesh.sell(k % 2, [(f"SKU{k % 8}", 1)])
        for _ in range(9):
            mesh.net.run_for(37)
            for i in range(2):
                _early_tick_does_nothing(mesh.sync_node(i), mesh.net.now, 31 * k + i)
    assert mesh.settle() >= 0
