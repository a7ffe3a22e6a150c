"""Pairing without HQ or multicast: `enroll sign` puts the new node in the signer's roster at once,
the new node's first op carries its certificate to peers enrolled before it, and three real
daemons with static peers (no mDNS, no HQ) pair with each other, directly, two by two."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hq_helpers import free_port
from mesh_procs import (
    Daemons,
    converged,
    meshpos,
    node_id,
    qty,
    sale_ids,
    sell,
    set_mesh,
    unique_store,
    wait_until,
)

from meshpos.node import membership
from meshpos.service.terminal import Terminal

pytestmark = pytest.mark.slow

CONVERGE = 45.0  # generous: two loaded cores
HOT = "TSH-NAV-M"


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    with Daemons() as ds:
        yield ds


def roster(directory: Path) -> set[str]:
    t = Terminal.open(directory)
    try:
        return {n.name for n in t.ledger.nodes() if n.cert}
    finally:
        t.close()


def enrol_by_cli(holder: Path, new: Path, tmp: Path, role: str = "terminal") -> str:
    """`enroll request` on the new node, `enroll sign` where the store key is, `enroll install`
    back on the new node, as a person would run them; returns what `sign` printed."""
    req, enr = tmp / f"{new.name}.req", tmp / f"{new.name}.enr"
    meshpos(new, "enroll", "request", "--out", str(req))
    hint = meshpos(holder, "enroll", "sign", str(req), "--out", str(enr), "--role", role).out
    if role == "terminal":
        meshpos(new, "enroll", "install", str(enr))
    return hint


def test_sign_adds_the_node_to_the_signers_roster_and_hints_right_for_every_role(
    tmp_path: Path,
) -> None:
    store = unique_store()
    a, b, hq = tmp_path / "A", tmp_path / "B", tmp_path / "HQ"
    meshpos(a, "init", "--store", store, "--name", "A")
    meshpos(a, "store", "init")
    meshpos(b, "init", "--store", store, "--name", "B")
    hint = enrol_by_cli(a, b, tmp_path)
    assert f"on the new terminal run `meshpos enroll install {tmp_path / 'B.enr'}`" in hint
    assert roster(a) == {"A", "B"}  # at once: no HQ, no mesh needed
    meshpos(hq, "init", "--store", store, "--name", "HQ")  # a node standing in for HQ's request
    hint = enrol_by_cli(a, hq, tmp_path, role="hq")
    assert f"at HQ run `meshpos hq install-cert {tmp_path / 'HQ.enr'} --dir HQ_DIR`" in hint
    assert "enroll install" not in hint
    assert roster(a) == {"A", "B", "HQ"}
    t = Terminal.open(a)
    try:
        assert t.ledger.hq_origins() == {node_id(hq)}  # its ops will be taken as HQ's
    finally:
        t.close()
    # B's first op announces it: whoever B reaches passes its certificate on with it.
    tail = meshpos(b, "ops", "tail", "--json").json()
    assert [(o["kind"], o["summary"]) for o in tail][-1][0] == "note"
    assert roster(b) == {"A", "B"}


def _store_with_static_peers(tmp: Path) -> list[Path]:
    store = unique_store()
    dirs = [tmp / name for name in ("T1", "T2", "T3")]
    for d in dirs:
        meshpos(d, "init", "--store", store, "--name", d.name, "--no-encrypt")
    ports = {d: free_port() for d in dirs}
    for d in dirs:
        peers: list[dict[str, Any]] = [
            {"node": node_id(o), "host": "127.0.0.1", "port": ports[o]} for o in dirs if o != d
        ]
        set_mesh(d, host="127.0.0.1", port=ports[d], discovery=False, static_peers=peers)
        set_mesh(d, copy_wait_ms=5000)
    meshpos(dirs[0], "store", "init")
    meshpos(dirs[0], "catalog", "import", "--sample")
    for d in dirs[1:]:  # T2 is enrolled before T3 exists in any roster but T1's
        enrol_by_cli(dirs[0], d, tmp)
    return dirs


def _up(directory: Path) -> set[str]:
    return {p["name"] for p in meshpos(directory, "peers", "--json").json() if p["up"]}


def test_three_counters_with_static_peers_pair_without_hq_or_mdns(
    tmp_path: Path, daemons: Daemons
) -> None:
    dirs = _store_with_static_peers(tmp_path)
    t1, t2, t3 = dirs
    assert "T3" not in roster(t2)  # T2 was enrolled first: only the mesh can tell it of T3
    for d in dirs:
        daemons.start(d, "--no-discovery")
    wait_until(lambda: converged(dirs), CONVERGE, "the catalogue on every counter", daemons)
    everyone = {d.name for d in dirs}
    for d in dirs:
        wait_until(
            lambda d=d: _up(d) == everyone - {d.name},  # type: ignore[misc]
            CONVERGE,
            f"{d.name} linked to both other counters",
            daemons,
        )
    assert roster(t2) == everyone
    logs = daemons.logs()
    assert "discovered" not in logs  # nobody used mDNS
    start = qty(t3, HOT)
    sales = [sell(d, HOT) for d in dirs]
    wait_until(lambda: converged(dirs), CONVERGE, "every sale on every counter", daemons)
    assert all({s["sale_id"] for s in sales} <= sale_ids(d) for d in dirs)
    # T1 (the store key's counter) goes away: T2 and T3 keep replicating over their own link.
    daemons[t1].stop()
    late = sell(t2, HOT)
    wait_until(
        lambda: late["sale_id"] in sale_ids(t3), CONVERGE, "T2's sale at T3 without T1", daemons
    )
    assert qty(t3, HOT) == start - 4
    for d in (t2, t3):
        assert meshpos(d, "verify").code == 0


def test_enrolment_stays_refused_for_a_name_already_taken(tmp_path: Path) -> None:
    store = unique_store()
    a, b, c = tmp_path / "A", tmp_path / "B", tmp_path / "C"
    meshpos(a, "init", "--store", store, "--name", "A")
    meshpos(a, "store", "init")
    meshpos(b, "init", "--store", store, "--name", "B")
    enrol_by_cli(a, b, tmp_path)
    meshpos(c, "init", "--store", store, "--name", "B")
    req = tmp_path / "c.req"
    meshpos(c, "enroll", "request", "--out", str(req))
    run = meshpos(a, "enroll", "sign", str(req), "--out", str(tmp_path / "c.enr"), check=False)
    assert run.code == 1 and "a node named 'B' is already enrolled" in run.err
    assert roster(a) == {"A", "B"} and not (tmp_path / "c.enr").exists()
    assert membership.NODE_CERT not in {p.name for p in c.iterdir()}
