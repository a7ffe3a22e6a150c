"""The relay end to end: a real `meshpos hq serve` and real `meshpos node run` daemons on loopback.

- An HQ outage: two stores of three terminals keep selling with HQ stopped, HQ changes a price
  meanwhile; when HQ is back it holds every op exactly once, its chain views (report API) equal
  each store's views, and HQ's price is on every terminal. `meshpos status` / `sync now` show
  the WAN down, the ops waiting and the error while HQ is away, and a clean sync after.
- The relay is SIGKILLed in the middle of uploading a backlog: the next node takes over (the
  failover time is measured from the daemons' logs) and HQ ends with every op once.
- Loyalty across stores: a store asks HQ for a customer's points held in another store; that
  store's relay has the holder grant them to HQ, and HQ moves them.

Stores are enrolled at HQ (HQ holds the store key) and reach each other by static peers, so the
tests need no mDNS. Every wait polls with a deadline; every process is stopped at the end.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mesh_procs import Daemons, backlog, meshpos, node_id, sell, wait_until
from netns import gateway_lab_lock as gateway_lab_lock
from pg import pg_cluster_fixture

from meshpos.core.errors import ConfigError
from meshpos.demo.hq import (
    ELECTED,
    PUSHED,
    HQProcess,
    differences,
    enrol_store,
    hq_view,
    log_lines,
    store_view,
    store_vv,
)
from meshpos.demo.processes import status_of
from meshpos.domain.relay import ASK_QUIET_S, ops_missing, plan_grants, take_batch
from meshpos.hq.service import HQService
from meshpos.ledger import body_codec
from meshpos.node.relay import RelaySettings

DEADLINE = 45.0  # generous for two loaded cores; typical waits take 1-4 s
HOT = "TSH-NAV-M"
FAST = {"probe_ms": 500, "poll_ms": 1000}  # [hq] settings: quicker outage detection in tests


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[Any]:
    yield from pg_cluster_fixture()


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    with Daemons() as ds:
        yield ds


class HQ:
    """The HQ process plus an in-process service over its database, to read what HQ holds."""

    def __init__(self, directory: Path, db: str | None = None) -> None:
        self.proc = HQProcess(directory, db=db)
        self.svc: HQService = self.proc.service()

    def vv(self, store: str) -> dict[str, int]:
        return {str(o): int(s) for o, s in self.svc.storage.vv(store).items()}

    def ops(self, store: str) -> list[tuple[str, int, str]]:
        """Every op row HQ holds for the store: (origin, seq, hash of body and signature)."""
        rows = self.svc.storage.db.run(
            lambda tx: tx.execute(
                "SELECT origin, seq, body, sig FROM ops WHERE store = ?", (store,)
            ),
            write=False,
        )
        return sorted((str(o), int(s), _digest(bytes(b), bytes(g))) for o, s, b, g in rows)

    def close(self) -> None:
        self.proc.stop()
        self.svc.close()


def _digest(body: bytes, sig: bytes) -> str:
    return hashlib.sha256(body + sig).hexdigest()


def node_ops(directory: Path) -> list[tuple[str, int, str]]:
    import sqlite3

    conn = sqlite3.connect(f"file:{directory / 'meshpos.db'}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute("SELECT origin, seq, body, sig FROM ops").fetchall()
        signed = [(o, s, body_codec.restore(b, o, s, conn), g) for o, s, b, g in rows]
    finally:
        conn.close()
    return sorted((str(o), int(s), _digest(b, g)) for o, s, b, g in signed)


def in_sync(hq: HQ, store: str, dirs: list[Path]) -> bool:
    """Every terminal holds the same ops, and so does HQ."""
    first = store_vv(dirs[0])
    return bool(first) and all(store_vv(d) == first for d in dirs[1:]) and hq.vv(store) == first


def priced(hq: HQ, store: str, dirs: list[Path]) -> bool:
    """In sync, and HQ's price change is on every terminal."""
    return in_sync(hq, store, dirs) and all(store_view(d)["prices"][HOT] == 44_900 for d in dirs)


def wan(directory: Path) -> dict[str, Any]:
    """The WAN part of the daemon's status.json (what `meshpos status` shows)."""
    return dict(status_of(directory).get("wan") or {})


def applied_and_duplicates(log: str, store: str) -> tuple[int, int]:
    """What HQ's log says it did with the store's pushes: ops applied, duplicates ignored."""
    applied = dups = 0
    for a, d in re.findall(rf"store {re.escape(store)}: (\d+) ops applied, (\d+) duplicates", log):
        applied, dups = applied + int(a), dups + int(d)
    return applied, dups


# -- an HQ outage -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_stores_sell_through_an_hq_outage_and_hq_ends_with_every_op_once(
    tmp_path: Path, daemons: Daemons, backend: str, request: pytest.FixtureRequest
) -> None:
    db = request.getfixturevalue("pg_cluster").create_db() if backend == "postgresql" else None
    hq = HQ(tmp_path / "hq", db)
    a_id, b_id = f"A{backend[:2]}", f"B{backend[:2]}"
    try:
        stores = {
            a_id: enrol_store(hq.proc, tmp_path / "a", a_id, ["A1", "A2", "A3"], relay=FAST),
            b_id: enrol_store(hq.proc, tmp_path / "b", b_id, ["B1", "B2", "B3"], relay=FAST),
        }
        everyone = [d for dirs in stores.values() for d in dirs]
        hq.proc.start()
        for d in everyone:
            daemons.start(d)
        for store, dirs in stores.items():
            wait_until(partial(in_sync, hq, store, dirs), DEADLINE, "catalogue at HQ", daemons)

        hq.proc.stop()  # the WAN is cut: HQ is gone
        wait_until(
            lambda: all(wan(d).get("wan_since_ms") and not wan(d)["wan_ok"] for d in everyone),
            DEADLINE, "every terminal seeing the WAN down", daemons,
        )  # fmt: skip
        sold = []
        for i in range(2):
            for d in everyone:
                sold.append(sell(d, [HOT, "JNS-BLA-L", "KUR-GRE-M"][i % 3])["sale_id"])
        a1 = stores[a_id][0]
        out = meshpos(a1, "hq", "price", HOT, "449", "--dir", str(hq.proc.dir))
        assert "2 op(s) signed by HQ" in out.out, out.out  # one per store

        wait_until(lambda: wan(a1).get("ops_waiting", 0) >= 2, DEADLINE, "ops counted as waiting")
        st = meshpos(a1, "status", "--json").json()
        assert st["wan"].startswith("DOWN since")
        assert st["hq_relay"] == "nobody"
        assert st["ops_waiting_for_hq"] >= 2  # at least A1's own two sales, maybe its peers'
        assert "unreachable" in st["last_hq_error"]
        failed = meshpos(a1, "sync", "now", "--wait", "1", check=False)
        assert failed.code != 0 and "unreachable" in failed.err
        log = (a1 / "daemon.log").read_text()
        assert "WAN to HQ is down" in log
        assert re.search(r"WARNING meshpos\.relay: relay: .*unreachable", log)

        restarted = time.monotonic()
        hq.proc.start()
        for store, dirs in stores.items():
            wait_until(
                partial(priced, hq, store, dirs), DEADLINE, f"{store} and HQ converging", daemons
            )
        caught_up = time.monotonic() - restarted

        for store, dirs in stores.items():
            held = hq.ops(store)
            assert held == node_ops(dirs[0]), "HQ holds exactly the store's ops, byte for byte"
            assert len(held) == len({(o, s) for o, s, _ in held}) == sum(hq.vv(store).values())
            for d in dirs:
                assert differences(store_view(d), hq_view(hq.proc, store)) == [], d.name
        report = meshpos(a1, "hq", "report", "--json", "--dir", str(hq.proc.dir)).json()
        by_store = {r["store"]: r for r in report["stores"]}
        for store, dirs in stores.items():
            assert by_store[store]["ops"] == len(node_ops(dirs[0]))
            assert by_store[store]["sales"] == 6  # two at each of three counters
        applied, dups = applied_and_duplicates(hq.proc.log(), a_id)
        assert applied == len(hq.ops(a_id)) - _hq_own(hq, a_id)

        a3 = stores[a_id][2]  # any node may force a round, relay or not
        done = meshpos(a3, "sync", "now", "--wait", "10")
        assert "HQ sync done" in done.out and "0 waiting" in done.out
        # every counter's round names the one relay: the others' own counts stay at zero
        rounds = [meshpos(d, "sync", "now", "--wait", "10", "--json").json() for d in stores[a_id]]
        assert [r["relay_is_me"] for r in rounds].count(True) == 1
        assert len({r["relay"] for r in rounds}) == 1 and rounds[0]["relay"]
        relay_name = meshpos(a3, "status", "--json").json()["hq_relay"]
        if not rounds[2]["relay_is_me"]:
            assert f"{relay_name} relays this store to HQ" in done.out, done.out
        st = meshpos(a3, "status", "--json").json()
        assert st["wan"].startswith("up since") and st["last_hq_error"] == ""
        assert st["last_hq_sync"] != "never" and st["ops_waiting_for_hq"] == 0
        print(f"[{backend}] HQ back to every op and price everywhere: {caught_up:.1f} s; "
              f"duplicates HQ ignored: {dups}")  # fmt: skip
        assert len(set(sold)) == len(sold) == 12
    finally:
        hq.close()


def _hq_own(hq: HQ, store: str) -> int:
    """Ops HQ signed itself in the store (they are not pushed, so not in the applied count)."""
    return hq.vv(store).get(hq.svc.node_id, 0)


# -- the relay dies mid-upload ------------------------------------------------------------------


@pytest.mark.slow
def test_relay_killed_mid_upload_hands_over_and_hq_gets_every_op_once(
    tmp_path: Path, daemons: Daemons
) -> None:
    hq = HQ(tmp_path / "hq")
    store = "K1"
    try:
        # Small batches make "mid-upload" a window the test can hit, as a slow WAN would.
        dirs = enrol_store(hq.proc, tmp_path, store, ["K1", "K2", "K3"],
                           relay={**FAST, "batch_ops": 100})  # fmt: skip
        hq.proc.start()
        procs = {d: daemons.start(d) for d in dirs}
        wait_until(lambda: in_sync(hq, store, dirs), DEADLINE, "catalogue at HQ", daemons)
        ids = {node_id(d): d for d in dirs}
        relay, seller = ids[min(ids)], ids[max(ids)]  # every node reaches HQ: the lowest relays
        wait_until(
            lambda: all(wan(d).get("relay") == min(ids) for d in dirs),
            DEADLINE, "every node agreeing on the relay", daemons,
        )  # fmt: skip
        base = hq.vv(store).get(max(ids), 0)
        n = 20_000
        backlog(seller, n)  # rung away from the relay, so every op outlives the kill
        deadline = time.monotonic() + DEADLINE
        while True:
            at_hq = hq.vv(store).get(max(ids), 0) - base
            if n // 10 <= at_hq < n // 2:
                break
            assert at_hq < n // 2, f"the upload finished ({at_hq} ops) before the kill"
            assert time.monotonic() < deadline, "the relay never started uploading the backlog"
            time.sleep(0.005)
        killed_at = time.time()
        procs[relay].kill()
        assert log_lines([relay], PUSHED)[-1][0] >= killed_at - 1.0, "it was pushing"
        survivors = [d for d in dirs if d != relay]
        wait_until(
            lambda: in_sync(hq, store, survivors), DEADLINE, "HQ holding the backlog", daemons
        )
        drained = time.time() - killed_at
        elected, successor = log_lines(survivors, ELECTED, killed_at)[0]
        first_push, pusher = log_lines(survivors, PUSHED, killed_at)[0]
        assert pusher == successor == ids[min(node_id(d) for d in survivors)]
        held = hq.ops(store)
        assert held == node_ops(survivors[0])
        assert len(held) == sum(hq.vv(store).values())
        applied, dups = applied_and_duplicates(hq.proc.log(), store)
        assert applied == len(held) - _hq_own(hq, store)
        assert dups <= 100, f"{dups} duplicate ops re-sent: more than the one batch in flight"
        print(
            f"relay killed with {at_hq} of {n} backlog ops at HQ; successor elected after "
            f"{elected - killed_at:.2f} s, its first batch accepted after {first_push - killed_at:.2f} "
            f"s; backlog drained {drained:.1f} s after the kill; duplicates HQ ignored: {dups}"
        )
        assert elected - killed_at < 5.0
    finally:
        hq.close()


# -- loyalty across stores through the relays ---------------------------------------------------


@pytest.mark.slow
def test_a_store_redeems_points_earned_in_another_through_hq(
    tmp_path: Path, daemons: Daemons
) -> None:
    from meshpos.service import escrow
    from meshpos.service.terminal import Terminal

    hq = HQ(tmp_path / "hq")
    try:
        a = enrol_store(hq.proc, tmp_path / "a", "LA", ["LA1", "LA2"], relay=FAST)
        b = enrol_store(hq.proc, tmp_path / "b", "LB", ["LB1", "LB2"], relay=FAST)
        hq.proc.start()
        for d in a + b:
            daemons.start(d)
        for store, dirs in (("LA", a), ("LB", b)):
            wait_until(partial(in_sync, hq, store, dirs), DEADLINE, "catalogue", daemons)
        # The customer earns at the counter of A that is NOT the relay: the relay must have the
        # holder grant to HQ over the mesh (an escrow request naming HQ as the receiver).
        earner = max(a, key=node_id)
        cid = meshpos(earner, "customer", "add", "--name", "Ravi", "--json").json()["customer_id"]
        sell(earner, HOT, "--customer", cid)
        sell(earner, HOT, "--customer", cid)  # 2 x 12 points
        wait_until(lambda: in_sync(hq, "LA", a), DEADLINE, "the points reaching HQ", daemons)

        asker = b[0]
        t = Terminal.open(asker)
        try:
            escrow.ask(t, cid, 24)  # what a till at B writes when a redemption needs rights
        finally:
            t.close()

        def rights_at_b() -> int:
            t = Terminal.open(asker)
            try:
                return t.rights(cid)
            finally:
                t.close()

        wait_until(lambda: rights_at_b() == 24, DEADLINE, "HQ moving A's points to B", daemons)
        sale = sell(asker, "JNS-BLA-L", "--customer", cid, "--pay", "points:24", "--pay", "cash")
        assert sale["points_redeemed"] == 24
        wait_until(lambda: in_sync(hq, "LA", a) and in_sync(hq, "LB", b), DEADLINE, "sync", daemons)
        chain = {r["customer_id"]: r for r in hq.proc.report("loyalty")["customers"]}
        assert chain[cid]["points"] == sale["points_earned"]  # moved, spent, never copied
        for store, dirs in (("LA", a), ("LB", b)):
            assert differences(store_view(dirs[0]), hq_view(hq.proc, store)) == []
        relay = next(d for d in a if d != earner)
        assert (
            f"asked {node_id(earner)} to grant 24 points of {cid} to HQ"
            in (relay / "daemon.log").read_text()
        )
        assert "escrow: granted 24 points" in (earner / "daemon.log").read_text()
    finally:
        hq.close()


# -- the relay's pure rules ---------------------------------------------------------------------


@given(
    sizes=st.lists(st.integers(1, 5000), min_size=1, max_size=60),
    max_ops=st.integers(1, 50),
    max_bytes=st.integers(1, 20_000),
)
def test_a_batch_is_never_empty_and_stays_within_its_bounds(
    sizes: list[int], max_ops: int, max_bytes: int
) -> None:
    n = take_batch(sizes, max_ops, max_bytes)
    assert 1 <= n <= min(len(sizes), max_ops)
    assert n == 1 or sum(sizes[:n]) <= max_bytes  # only a lone oversized op goes over
    if n < min(len(sizes), max_ops):
        assert sum(sizes[: n + 1]) > max_bytes  # and it takes as much as fits


def test_ops_missing_counts_what_the_other_side_lacks() -> None:
    assert ops_missing({"a": 5, "b": 2}, {"a": 3}) == 4
    assert ops_missing({"a": 5}, {"a": 9, "c": 1}) == 0


def test_hq_asks_are_served_by_this_node_first_then_by_the_holders_it_asks() -> None:
    asks = [
        {"customer_id": "C1", "points": 50, "holders": {"me": 20, "p2": 40, "p1": 10}},
        {"customer_id": "C2", "points": 5, "holders": {"p1": 9}},
        {"customer_id": "C3", "points": 7, "holders": {"me": 3}},
        {"customer_id": 4, "points": "x"},  # malformed: ignored, not fatal
    ]
    mine, theirs = plan_grants(asks, "me", {"C3": 100.0}, now=100.0 + ASK_QUIET_S / 2)
    assert mine == [("C1", 20)]
    assert theirs == [("p1", "C1", 10), ("p2", "C1", 20), ("p1", "C2", 5)]
    later = plan_grants(asks, "me", {"C3": 100.0}, now=100.0 + ASK_QUIET_S)
    assert ("C3", 3) in later[0]  # served again once its grant had time to reach HQ


def test_hq_settings_are_checked() -> None:
    s = RelaySettings.from_config({"url": "http://hq:8470", "batch_ops": 50}, "meshpos.toml")
    assert (s.url, s.batch_ops, s.batch_bytes) == ("http://hq:8470", 50, 256 * 1024)
    for bad in ({"batch_ops": 0}, {"url": 5}, {"probe_ms": "1s"}, {"timeout_s": -1}, {"x": 1}):
        with pytest.raises(ConfigError, match=r"\[hq\]"):
            RelaySettings.from_config(bad, "meshpos.toml")


# -- the bench, in its quick mode ---------------------------------------------------------------


@pytest.mark.slow
def test_relay_bench_quick_mode_reports_sane_figures(
    tmp_path: Path, gateway_lab_lock: None
) -> None:
    import argparse

    from bench import relay_bench

    r = relay_bench.relay_section(argparse.Namespace(quick=True, seed=3, out=tmp_path), {})
    assert r["sales"] == 720 and r["drain"]["ops"] == 720  # an hour of four counters
    assert 0 < r["drain"]["drain_s"] < DEADLINE
    assert r["drain"]["op_bytes"] > 100 * 720
    f = r["failover"]
    assert f["killed_mid_upload"]  # the quick run's failover is a real one too
    assert f["ops_applied"] == f["backlog_ops"] == 720  # every op once, none lost
    # At most the batch in flight when the relay died is sent twice; a batch is capped at
    # batch_bytes, a large share of the quick run's small backlog.
    resent_at_most = RelaySettings().batch_bytes / f["op_bytes"]
    assert 1.0 <= f["dedup_ratio"] < 1.05 + resent_at_most and f["op_dedup_ratio"] >= 1.0
    cuts = [r["frozen_relay"]]
    if r["where"] != "on 127.0.0.1":
        cuts += [r["relay_cable_pulled"], r["relay_wan_cut"]]
    for lost in cuts:
        assert 0 < lost["sale_at_hq_s"] < DEADLINE
    assert [t["unit"] for t in r["targets"]] == ["s", "x"]
