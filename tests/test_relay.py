"""The HQ relay's election and the WAN flag that peers gossip in their pings."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from mesh_helpers import Mesh

from meshpos.domain.relay import backoff_ms, elect
from meshpos.sync.messages import Ping, decode, encode

ids = st.text(alphabet="0123456789abcdef", min_size=12, max_size=12)


@given(me=ids, my_wan=st.booleans(), peers=st.dictionaries(ids, st.booleans(), max_size=6))
def test_every_node_that_sees_the_same_mesh_elects_the_same_relay(
    me: str, my_wan: bool, peers: dict[str, bool]
) -> None:
    peers.pop(me, None)
    chosen = elect(me, my_wan, peers)
    everyone = {**peers, me: my_wan}
    reachable = sorted(n for n, ok in everyone.items() if ok)
    assert chosen == (reachable[0] if reachable else None)
    for other, ok in everyone.items():
        view = {n: w for n, w in everyone.items() if n != other}
        assert elect(other, ok, view) == chosen


def test_a_relay_that_loses_its_wan_hands_over_to_the_next() -> None:
    assert elect("a", True, {"b": True, "c": True}) == "a"
    assert elect("b", True, {"a": False, "c": True}) == "b"
    assert elect("c", True, {"b": True}) == "b"  # a is gone from c's sessions
    assert elect("c", False, {"b": False}) is None


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_ms(n, 500, 4000) for n in range(1, 6)] == [500, 1000, 2000, 4000, 4000]


@given(st.dictionaries(st.text(max_size=8), st.booleans(), max_size=16))
def test_ping_flags_round_trip(flags: dict[str, bool]) -> None:
    ping = Ping(tuple(sorted(flags.items())))
    assert decode(encode(ping)) == ping


def test_peers_learn_a_nodes_wan_flag_and_its_change() -> None:
    mesh = Mesh(3)
    mesh.net.run_for(500)
    a, b, c = (mesh.sync_node(i) for i in range(3))
    mesh.net._do(a.me.node_id, a.set_flags(mesh.net.now, wan=True))
    mesh.net.run_for(100)
    assert b.peer_flag("wan")[a.me.node_id] is True
    assert c.peer_flag("wan")[a.me.node_id] is True
    assert elect(b.me.node_id, False, b.peer_flag("wan")) == a.me.node_id
    mesh.net._do(a.me.node_id, a.set_flags(mesh.net.now, wan=False))
    mesh.net.run_for(100)
    assert b.peer_flag("wan")[a.me.node_id] is False
    assert elect(b.me.node_id, False, b.peer_flag("wan")) is None


@given(
    need=st.integers(1, 1000),
    holdings=st.dictionaries(ids, st.integers(-50, 500), max_size=6),
)
def test_escrow_asks_the_biggest_holders_for_no_more_than_needed(
    need: int, holdings: dict[str, int]
) -> None:
    from meshpos.domain.escrow import plan_asks

    plan = plan_asks(need, holdings)
    assert set(plan) <= set(holdings)
    known = sum(max(0, h) for h in holdings.values())
    if known >= need:
        assert sum(plan.values()) == need  # exactly the need, nothing more moves
        assert all(0 < plan[p] <= holdings[p] for p in plan)
    else:
        assert set(plan) == set(holdings)  # stale view: everyone is asked for the rest
    assert all(v > 0 for v in plan.values())
