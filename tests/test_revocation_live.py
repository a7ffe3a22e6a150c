"""A stolen terminal over real daemons (issue 13 item 6): three `meshpos node run` daemons; the
manager revokes C with `meshpos store revoke` on A (the store key's terminal). A and B drop C at
once and refuse it from then on, C shows that it was revoked and refuses to sell, and what the
thief forges at C reaches nobody, while A and B keep syncing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mesh_procs import (
    Daemons,
    backlog,
    converged,
    count_ops,
    has_op,
    make_store,
    meshpos,
    node_id,
    sale_ids,
    sell,
    wait_until,
)
from netns import loopback_multicast

pytestmark = pytest.mark.slow

DEADLINE = 30.0
HOT = "TSH-NAV-M"


@pytest.fixture(scope="module", autouse=True)
def _mdns_on_loopback() -> Iterator[None]:
    with loopback_multicast():
        yield


def peers_up(d: Path) -> set[str]:
    return {p["name"] for p in meshpos(d, "peers", "--json").json() if p["up"]}


def test_a_stolen_terminal_is_revoked_dropped_and_stops_selling(tmp_path: Path) -> None:
    a, b, c = make_store(tmp_path, ["A", "B", "C"], mesh={"copy_wait_ms": 5000})
    c_id = node_id(c)
    with Daemons() as ds:
        for d in (a, b, c):
            ds.start(d)
        wait_until(lambda: converged([a, b, c]) and count_ops(c) > 0, DEADLINE, "a synced mesh", ds)
        wait_until(lambda: peers_up(a) == {"B", "C"}, DEADLINE, "A's sessions with B and C", ds)
        before = sell(c, HOT)  # an honest sale, before the theft
        wait_until(lambda: before["sale_id"] in sale_ids(a), DEADLINE, "C's sale at A", ds)

        out = meshpos(a, "store", "revoke", "C", "--reason", "stolen from the counter", "--json")
        point = out.json()["after_seq"]
        assert point >= 1

        # A drops C at once; B hears from A and drops it too; C hears why.
        wait_until(lambda: "C" not in peers_up(a), DEADLINE, "A to drop C", ds)
        wait_until(lambda: "C" not in peers_up(b), DEADLINE, "B to drop C", ds)
        status = wait_until(
            lambda: (s := meshpos(c, "status", "--json").json())["revoked"] != "no" and s,
            DEADLINE,
            "C to know it was revoked",
            ds,
        )
        assert "stolen from the counter" in status["revoked"]
        assert c_id in ds.all[1].status()["revoked_peers"]
        wait_until(lambda: ds.all[2].status().get("revoked"), DEADLINE, "C's banner hook", ds)
        refused = meshpos(c, "sell", HOT, check=False)
        assert refused.code != 0 and "revoked by the store" in refused.err

        # The thief signs ops at C with its key, bypassing the till: nobody takes them.
        _, last = backlog(c, 3)
        after = sell(b, HOT)
        wait_until(lambda: after["sale_id"] in sale_ids(a), DEADLINE, "B's next sale at A", ds)
        for d in (a, b):
            assert not has_op(d, c_id, last)
        # Restarted, C still gets no session anywhere: its key fails the CURVE handshake.
        ds.all[2].stop()
        ds.start(c)
        wait_until(lambda: ds.all[2].log(since_start=True).count("refused our key") >= 2,
                   DEADLINE, "A and B to refuse C's key", ds)  # fmt: skip
        assert "C" not in peers_up(a) and "C" not in peers_up(b)
        assert meshpos(a, "verify").code == 0
