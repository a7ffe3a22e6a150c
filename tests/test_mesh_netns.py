"""Three "hosts" (network namespaces on one bridge), a `meshpos node run` daemon in each, bound to
its namespace's address: mDNS discovery and replication across them, then one host's cable is
pulled (link down), both sides keep selling, the cable goes back in, and everything converges."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mesh_procs import (
    Daemons,
    converged,
    count_ops,
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
)
from netns import Lab
from netns import netns_lab as netns_lab

pytestmark = [pytest.mark.netns, pytest.mark.slow]

CONVERGE = 30.0
HOT = "TSH-NAV-M"


def peer_up(d: Path, name: str) -> bool | None:
    peers = {p["name"]: p for p in meshpos(d, "peers", "--json").json()}
    return peers[name]["up"] if name in peers else None


def test_mesh_across_namespaces_partition_and_heal(
    netns_lab: Callable[[int], Lab], tmp_path: Path
) -> None:
    lab = netns_lab(3)
    dirs = make_store(tmp_path, ["A", "B", "C"])
    a, b, c = dirs
    with Daemons() as ds:
        for node, d in zip(lab, dirs, strict=True):
            ds.start(d, "--host", node.ip, prefix=node.command([]))
        wait_until(
            lambda: converged(dirs) and count_ops(c) > 0, CONVERGE, "catalogue on all hosts", ds
        )
        for i, daemon in enumerate(ds.all):
            log = daemon.log()
            assert f"listening on {lab[i].ip}:" in log
            for j, other in enumerate(dirs):
                if i != j:
                    assert f"discovered {other.name} ({node_id(other)}) at {lab[j].ip}:" in log

        start_qty = qty(a, HOT)
        sales = [sell(d, HOT) for d in dirs]
        wait_until(lambda: converged(dirs), CONVERGE, "sales on every host", ds)
        assert all(qty(d, HOT) == start_qty - 3 for d in dirs)

        # Pull C's cable. A and B notice it is gone (pings stop) and keep syncing each other.
        lab[2].partition()
        wait_until(lambda: peer_up(a, "C") is False, CONVERGE, "A to see C gone", ds)
        wait_until(lambda: peer_up(c, "A") is False, CONVERGE, "C to see A gone", ds)
        left = [sell(a, HOT), sell(b, HOT, "JNS-BLA-L")]
        right = [sell(c, HOT), sell(c, "KUR-GRE-M")]
        wait_until(lambda: converged([a, b]), CONVERGE, "A and B to converge while split", ds)
        a_id, c_id = node_id(a), node_id(c)
        a_seq = int(left[0]["op"].split(":")[1])
        c_seq = int(right[-1]["op"].split(":")[1])
        assert not has_op(c, a_id, a_seq), "the partition did not cut C off"
        assert not has_op(a, c_id, c_seq) and not has_op(b, c_id, c_seq)
        assert qty(a, HOT) == start_qty - 5 and qty(c, HOT) == start_qty - 4

        lab[2].heal()
        wait_until(lambda: converged(dirs), CONVERGE, "all hosts to converge after the heal", ds)
        every = {s["sale_id"] for s in [*sales, *left, *right]}
        first: dict[str, Any] = views(a)
        for d in dirs:
            assert every <= sale_ids(d)
            assert qty(d, HOT) == start_qty - 6
            assert vv(d) == vv(a) and views(d) == first
            assert meshpos(d, "verify").code == 0
        wait_until(lambda: peer_up(a, "C") and peer_up(c, "A"), CONVERGE, "C up again", ds)
