"""Metrics and logs of real processes: a `meshpos hq serve` with `[metrics] port` in hq.toml, and
a store of two `meshpos node run` daemons relaying to it, the first with `[metrics] port = 0`.
Both `/metrics` are scraped and parsed as Prometheus text, and their figures checked against the
databases; the daemon's JSON-lines log carries its node and store ids and the peer's id on lines
about the peer, and `meshpos logs` reads and filters it. HQ with two workers adds up both
workers' request counts on one metrics port."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from mesh_procs import Daemons, meshpos, node_id, sell, wait_until
from prometheus_client.parser import text_string_to_metric_families

from meshpos.demo.hq import HQProcess, enrol_store, store_vv
from meshpos.demo.processes import free_port, status_of
from meshpos.hq import keys
from meshpos.hq.service import HQService
from meshpos.node import membership
from meshpos.service.config import load_config

pytestmark = pytest.mark.slow
DEADLINE = 45.0
FAST = {"probe_ms": 500, "poll_ms": 1000}
GRAFANA = Path(__file__).resolve().parents[1] / "docs" / "grafana-meshpos.json"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample of a /metrics answer: (name, sorted labels) -> value."""
    resp = httpx.get(url, timeout=5)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def exported(url: str) -> set[str]:
    """Every family and sample name a /metrics answer holds (a family may have no sample yet)."""
    text = httpx.get(url, timeout=5).text
    return {
        n
        for f in text_string_to_metric_families(text)
        for n in (f.name, *(s.name for s in f.samples))
    } | set(re.findall(r"^# TYPE (\S+)", text, re.MULTILINE))


def value(samples: Samples, metric: str, **labels: str) -> float:
    return samples[(metric, tuple(sorted(labels.items())))]


def with_metrics_port(hq_dir: Path, port: int) -> None:
    keys.init_hq(hq_dir)
    cfg = keys.CONFIG_FILE
    (hq_dir / cfg).write_text((hq_dir / cfg).read_text() + f"\n[metrics]\nport = {port}\n")


@dataclass
class Chain:
    hq: HQProcess
    svc: HQService
    hq_metrics: str
    store: str
    t1: Path
    t2: Path
    daemons: Daemons


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    base = tmp_path_factory.mktemp("observe")
    port = free_port()
    with_metrics_port(base / "hq", port)
    hq = HQProcess(base / "hq").start()
    store = "OBS1"
    t1, t2 = enrol_store(hq, base, store, ("T1", "T2"), relay=FAST)
    membership.set_config(load_config(t1), "metrics", "port", 0)
    svc = hq.service()
    with Daemons() as daemons:
        try:
            daemons.start(t1)
            daemons.start(t2)
            yield Chain(hq, svc, f"http://127.0.0.1:{port}/metrics", store, t1, t2, daemons)
        finally:
            svc.close()
            hq.stop()


def in_step(c: Chain) -> bool:
    """Both terminals and HQ hold the same ops."""
    hq_vv = {str(o): int(s) for o, s in c.svc.storage.vv(c.store).items()}
    return store_vv(c.t1) == store_vv(c.t2) == hq_vv


def test_both_metrics_endpoints_report_what_the_databases_hold(chain: Chain) -> None:
    c = chain
    for _ in range(3):
        sell(c.t1, "TSH-NAV-M")
    wait_until(lambda: in_step(c), DEADLINE, "the catalogue and sales on T2 and at HQ", c.daemons)
    sell(c.t2, "LIN-BLA-L")  # T1's daemon ingests it: a commit that stores ops in its process
    wait_until(lambda: in_step(c), DEADLINE, "the sales at HQ and on both terminals", c.daemons)
    url = wait_until(
        lambda: status_of(c.t1).get("metrics_url"), DEADLINE, "T1's metrics url", c.daemons
    )
    t2_id, store = node_id(c.t2), c.store

    def node_settled() -> Samples | None:
        s = scrape(url)
        ok = (
            value(s, "meshpos_sync_peer_up", peer=t2_id, name="T2") == 1
            and value(s, "meshpos_hq_reachable") == 1
            and value(s, "meshpos_hq_ops_waiting") == 0
            # T2's acknowledgement of the last op reaches T1 a message after the op reaches
            # T2: until then T1 rightly counts T2 one op behind.
            and value(s, "meshpos_sync_peer_behind_ops", peer=t2_id, name="T2") == 0
        )
        return s if ok else None

    node = wait_until(
        node_settled, DEADLINE, "T1's metrics to show T2 up, caught up and HQ reached", c.daemons
    )
    assert value(node, "meshpos_ops_total", kind="sale", origin="local") == 3
    assert value(node, "meshpos_ops_total", kind="sale", origin="peer") == 1
    held = sum(store_vv(c.t1).values())
    assert value(node, "meshpos_ops_held") == held
    assert sum(v for (n, _), v in node.items() if n == "meshpos_ops_total") == held
    assert value(node, "meshpos_sync_peer_behind_ops", peer=t2_id, name="T2") == 0
    assert 0 <= value(node, "meshpos_sync_peer_last_heard_age_seconds", peer=t2_id, name="T2") < 10
    assert value(node, "meshpos_ledger_commit_seconds_count", stored="ops") >= 1
    assert value(node, "meshpos_ledger_commit_seconds_bucket", stored="ops", le="+Inf") >= 1
    assert value(node, "meshpos_print_queue_depth") >= 0
    assert ("meshpos_conflicts_open", ()) not in node  # a family, with no conflict to count

    def hq_settled() -> Samples | None:
        s = scrape(c.hq_metrics)  # terminals report at their next probe, HQ records every 2 s
        waiting = s.get(("meshpos_hq_store_ops_waiting", (("store", store),)))
        return s if value(s, "meshpos_hq_stores_online") == 1 and waiting == 0 else None

    hq = wait_until(
        hq_settled, DEADLINE, "HQ's metrics: the store online, nothing waiting", c.daemons
    )
    assert value(hq, "meshpos_hq_stores") == 1
    assert value(hq, "meshpos_hq_store_ops_total", store=store) == c.svc.storage.log.op_count(store)
    assert value(hq, "meshpos_hq_store_sales_total", store=store) == 4
    assert value(hq, "meshpos_hq_store_online", store=store) == 1
    assert value(hq, "meshpos_hq_store_last_contact_age_seconds", store=store) < 10
    assert value(hq, "meshpos_hq_store_last_sync_age_seconds", store=store) < 30
    assert value(hq, "meshpos_hq_store_ops_waiting", store=store) == 0
    assert value(hq, "meshpos_hq_store_open_conflicts", store=store) == 0
    assert value(hq, "meshpos_hq_requests_total", endpoint="push", status="2xx") >= 1
    assert value(hq, "meshpos_hq_requests_total", endpoint="vv", status="2xx") >= 2
    assert value(hq, "meshpos_hq_request_seconds_count", endpoint="pull") >= 1
    charted = set(re.findall(r"meshpos_[a-z_]+", GRAFANA.read_text()))
    assert charted and charted <= exported(url) | exported(c.hq_metrics)


def test_the_daemon_logs_json_lines_with_its_ids_and_meshpos_logs_reads_them(chain: Chain) -> None:
    c = chain
    log_file = c.t1 / "logs" / "meshpos.log"
    t1_id, t2_id = node_id(c.t1), node_id(c.t2)

    def about_t2() -> list[dict[str, str]] | None:
        if not log_file.exists():
            return None
        docs = [json.loads(line) for line in log_file.read_text().splitlines()]
        found = [d for d in docs if d.get("peer") == t2_id]
        return found or None

    lines = wait_until(about_t2, DEADLINE, "a line about T2 in T1's log file", c.daemons)
    assert all(d["node"] == t1_id and d["store"] == c.store for d in lines)
    assert any("is up" in d["msg"] for d in lines)
    assert log_file.stat().st_mode & 0o077 == 0
    every = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert {d["node"] for d in every} == {t1_id}
    picked = meshpos(c.t1, "logs", "--json", "--peer", t2_id[:6], "-n", "1000").json()
    assert picked and all(d["peer"] == t2_id for d in picked)
    table = meshpos(c.t1, "logs", "-n", "5").out
    assert "message" in table and str(log_file) in table.replace("\n", "")
    hq_log = c.hq.dir / "logs" / "hq.log"
    hq_lines = [json.loads(line) for line in hq_log.read_text().splitlines()]
    assert any(d.get("store") == c.store and d.get("peer") for d in hq_lines)


def test_hq_with_two_workers_adds_up_their_requests_on_one_metrics_port(tmp_path: Path) -> None:
    port = free_port()
    with_metrics_port(tmp_path / "hq", port)
    hq = HQProcess(tmp_path / "hq")
    hq.args = (*hq.args, "--workers", "2")
    hq.start()
    try:
        for _ in range(40):
            assert httpx.get(hq.url + "/v1/health", timeout=5).status_code == 200
        s = scrape(f"http://127.0.0.1:{port}/metrics")
        assert value(s, "meshpos_hq_requests_total", endpoint="health", status="2xx") >= 40
        assert value(s, "meshpos_hq_stores") == 0
        pids = {
            json.loads(line)["pid"]
            for line in (tmp_path / "hq" / "logs" / "hq.log").read_text().splitlines()
        }
        assert len(pids) >= 2  # the workers wrote one log file
    finally:
        hq.stop()
