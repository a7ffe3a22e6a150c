"""Three real `meshpos node run` daemons on loopback: mDNS discovery, live convergence, a SIGKILL
in the middle of a backlog, a dead disk, and what `meshpos status` / `meshpos peers` report.

Sales are rung with the `meshpos` CLI (in this process, the same code as the console script)
against each node directory while its daemon runs, as a till would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mesh_procs import (
    Daemons,
    backlog,
    converged,
    count_ops,
    db,
    has_op,
    make_store,
    meshpos,
    node_id,
    qty,
    sale_ids,
    sell,
    views,
    vv,
    wait_until,
    wipe,
)
from netns import loopback_multicast

pytestmark = pytest.mark.slow

CONVERGE = 30.0  # generous: two loaded cores; typical runs take 1-3 s
HOT = "TSH-NAV-M"


@pytest.fixture(scope="module", autouse=True)
def _mdns_on_loopback() -> Iterator[None]:
    with loopback_multicast():
        yield


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    with Daemons() as ds:
        yield ds


def start_mesh(ds: Daemons, dirs: list[Path]) -> None:
    for d in dirs:
        ds.start(d)
    wait_until(
        lambda: converged(dirs) and count_ops(dirs[-1]) > 0, CONVERGE, "catalogue everywhere", ds
    )


def assert_same_everywhere(dirs: list[Path]) -> None:
    first = views(dirs[0])
    for d in dirs[1:]:
        assert vv(d) == vv(dirs[0])
        assert views(d) == first, f"views of {d.name} differ from {dirs[0].name}"
    for d in dirs:
        out = meshpos(d, "verify")
        assert out.code == 0, out.err


def peers_of(d: Path) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in meshpos(d, "peers", "--json").json()}


def test_three_daemons_discover_each_other_and_converge_live(
    tmp_path: Path, daemons: Daemons
) -> None:
    # A generous copy wait: on a loaded test machine a peer's ack may take more than 50 ms.
    dirs = make_store(tmp_path, ["A", "B", "C"], mesh={"copy_wait_ms": 5000})
    start_mesh(daemons, dirs)
    names = [d.name for d in dirs]
    for d, daemon in zip(dirs, daemons.all, strict=True):
        log = daemon.log()
        for other in names:
            if other != d.name:
                assert f"discovered {other} (" in log, f"{d.name} did not find {other} over mDNS"
    start_qty = qty(dirs[0], HOT)

    sales = [sell(d, HOT) for d in dirs]
    wait_until(lambda: converged(dirs), CONVERGE, "every sale on every node", daemons)
    for d in dirs:
        assert {s["sale_id"] for s in sales} <= sale_ids(d)
        assert qty(d, HOT) == start_qty - 3
    assert_same_everywhere(dirs)

    # status and peers: both other terminals, up, nothing behind, every local op held twice.
    a = dirs[0]
    ids = {d.name: node_id(d) for d in dirs}
    ports = {
        d.name: daemon.status().get("port") for d, daemon in zip(dirs, daemons.all, strict=True)
    }

    def a_sees_all() -> dict[str, Any] | None:
        st = meshpos(a, "status", "--json").json()
        ok = st["lan_peers_up"] == 2 and st["max_peer_lag_ops"] == 0
        return st if ok and st["held_by_one_copy"] == 0 else None

    st = wait_until(a_sees_all, CONVERGE, "A's status to show two peers in sync", daemons)
    assert st["daemon"] == "running" and st["lan_peers_known"] == 2
    assert st["ops_total"] == sum(vv(a).values()) and st["local_ops"] == vv(a)[ids["A"]]
    peers = peers_of(a)
    assert set(peers) == {"B", "C"}
    for name, p in peers.items():
        assert p["node_id"] == ids[name]
        assert p["address"] == f"127.0.0.1:{ports[name]}"
        assert p["up"] is True and p["behind"] == 0 and p["ahead"] == 0
        assert p["last_seen_ms"] > 0

    # C leaves (its mDNS goodbye is heard); A rings a sale: B holds it, C is one op behind.
    daemons.all[2].stop()
    sale = sell(a, HOT)
    assert sale["copies"] == 2

    def c_down_and_behind() -> dict[str, dict[str, Any]] | None:
        p = peers_of(a)
        return p if not p["C"]["up"] and p["C"]["behind"] == 1 and p["B"]["behind"] == 0 else None

    peers = wait_until(c_down_and_behind, CONVERGE, "A to show C down, one op behind", daemons)
    assert peers["B"]["up"] is True
    st = meshpos(a, "status", "--json").json()
    assert st["lan_peers_up"] == 1 and st["lan_peers_known"] == 2
    assert st["held_by_one_copy"] == 0

    # B leaves too: the next sale is held by A's disk only, and status says so.
    daemons.all[1].stop()
    wait_until(
        lambda: meshpos(a, "status", "--json").json()["lan_peers_up"] == 0,
        CONVERGE,
        "A to show no peer up",
        daemons,
    )
    lonely = sell(a, HOT)
    assert lonely["copies"] == 1
    st = meshpos(a, "status", "--json").json()
    assert st["held_by_one_copy"] == 1


def test_sigkill_in_the_middle_of_a_backlog_loses_nothing(tmp_path: Path, daemons: Daemons) -> None:
    dirs = make_store(tmp_path, ["A", "B", "C"])
    a, b, c = dirs
    start_mesh(daemons, dirs)
    origin, last = backlog(a, 2000)
    # A pushes 2,000 ops; B is killed as soon as it holds part of them (it commits in batches).
    base = count_ops(b, origin)
    wait_until(
        lambda: count_ops(b, origin) > base, CONVERGE, "B to start receiving", daemons, 0.001
    )
    daemons.all[1].kill()
    got = count_ops(b, origin)
    assert got < last, "B had the whole backlog before it was killed: nothing tested"

    sold_while_dead = [sell(a, HOT), sell(c, HOT)]
    wait_until(lambda: converged([a, c]), CONVERGE, "A and C to converge without B", daemons)
    assert count_ops(b, origin) == got  # B really is down

    daemons.all[1].start()
    wait_until(lambda: converged(dirs), CONVERGE, "B to catch up after restart", daemons)
    head = vv(a)[origin]
    assert head == last + 1  # the backlog, then the sale rung at A while B was dead
    for d in dirs:
        assert {s["sale_id"] for s in sold_while_dead} <= sale_ids(d)
        with db(d) as conn:
            seqs = [r[0] for r in conn.execute("SELECT seq FROM ops WHERE origin = ?", (origin,))]
        assert sorted(seqs) == list(range(1, head + 1)), f"{d.name} lost or duplicated ops"
    assert_same_everywhere(dirs)


def test_dead_disk_replacement_bootstraps_and_continues_numbering(
    tmp_path: Path, daemons: Daemons
) -> None:
    dirs = make_store(tmp_path, ["A", "B", "C"], mesh={"copy_wait_ms": 5000})
    a, b, c = dirs
    start_mesh(daemons, dirs)
    first = sell(b, HOT)
    sale = sell(b, HOT, "JNS-BLA-L")
    assert sale["copies"] == 2, "the sale was not acknowledged by a peer"
    b_id = node_id(b)
    seq = int(sale["op"].split(":")[1])
    with db(b) as conn:
        acked = conn.execute("SELECT MAX(seq) FROM peer_acks").fetchone()[0]
    assert acked >= seq
    assert has_op(a, b_id, seq) or has_op(c, b_id, seq)

    # The disk dies: the process with it, then every database file. Keys and config remain.
    daemons.all[1].kill()
    assert wipe(b)
    assert not (b / "meshpos.db").exists()
    # Until its peers gave its history back, the replacement refuses to sign (it would fork).
    refused = meshpos(b, "customer", "add", "--name", "Walk-in", check=False)
    assert refused.code == 1 and "lost its database" in refused.err
    daemons.all[1].start()

    def recovered() -> bool:
        if not converged(dirs):
            return False
        return not meshpos(b, "status", "--json").json()["recovering_history"]

    wait_until(recovered, CONVERGE, "the replacement to bootstrap from its peers", daemons)
    assert {first["sale_id"], sale["sale_id"]} <= sale_ids(b)
    assert vv(b)[b_id] == seq

    nxt = sell(b, HOT)
    assert nxt["number"] == sale["number"] + 1
    assert nxt["op"] == f"{b_id}:{seq + 1}"
    assert nxt["copies"] == 2, "peers refused the replacement's new op (a forked chain?)"
    wait_until(lambda: converged(dirs), CONVERGE, "the new sale everywhere", daemons)
    for d in dirs:
        with db(d) as conn:
            numbers = [
                r[0]
                for r in conn.execute("SELECT DISTINCT number FROM sales WHERE origin = ?", (b_id,))
            ]
        assert sorted(numbers) == [first["number"], sale["number"], nxt["number"]]
    assert_same_everywhere(dirs)
    for daemon in daemons.all:
        log = daemon.log()
        assert "refused peer" not in log and "refused our data" not in log, log
