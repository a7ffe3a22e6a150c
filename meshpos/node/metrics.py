"""The terminal daemon's `/metrics` (when `[metrics] port` is set): what a chain's engineers watch
on every counter of every store.

Read at scrape time, on the scrape's thread: the ledger through a connection of its own (ops by
kind and origin, ops held and held back past gaps, open conflicts, the print queue) and the
daemon's latest status snapshot (peers: up, how many ops each lacks or has that this node lacks,
when it was last heard; HQ: reachable, relaying, ops waiting to go up, last sync). The commit
latency histogram is fed by the ledger on every write transaction of this process (the
daemon's ingests, and the web till's sales when the daemon serves it).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from meshpos.core.clock import wall_ms
from meshpos.ledger import commit_watch, tallies
from meshpos.ledger.print_queue import OPEN_STATES
from meshpos.service.metrics import LATENCY_BUCKETS, age_s
from meshpos.service.terminal import Terminal

Status = Mapping[str, Any]


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class NodeMetrics:
    """The daemon's registry: a collector over its ledger and status, and the commit histogram."""

    def __init__(
        self,
        directory: Path,
        node_id: str,
        status: Callable[[], Status | None],
        *,
        now_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.directory = directory
        self.node_id = node_id
        self.status = status
        self.now_ms = now_ms
        self.registry = CollectorRegistry()
        self.commits = Histogram(
            "meshpos_ledger_commit_seconds",
            "Durable write transactions of this process's ledger, BEGIN to COMMIT (fsync included)",
            ["stored"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(self)
        self._lock = threading.Lock()
        self._terminal: Terminal | None = None
        self._kinds: Counter[tuple[str, bool]] = Counter()
        self._rowid = 0
        self._unwatch = commit_watch.watch(self._committed)

    def _committed(self, seconds: float, stored_ops: bool) -> None:
        self.commits.labels("ops" if stored_ops else "local").observe(seconds)

    def close(self) -> None:
        self._unwatch()
        with self._lock:
            if self._terminal is not None:
                self._terminal.close()
                self._terminal = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            yield from self._ledger()
        yield from self._mesh(self.status() or {})

    def _ledger(self) -> Iterator[Metric]:
        if self._terminal is None:
            self._terminal = Terminal.open(self.directory)
        ledger = self._terminal.ledger
        more, self._rowid = tallies.op_kinds_since(ledger, self.node_id, self._rowid)
        self._kinds.update(more)
        ops = CounterMetricFamily(
            "meshpos_ops",
            "Ops in this replica's log by kind; origin=local for ops this node made",
            labels=["kind", "origin"],
        )
        for (kind, own), n in sorted(self._kinds.items()):
            ops.add_metric([kind, "local" if own else "peer"], n)
        yield ops
        yield _gauge("meshpos_ops_held", "Ops this replica holds", ledger.op_count())
        yield _gauge(
            "meshpos_ops_pending", "Ops held back past a gap, waiting for the ops before them",
            ledger.pending_count(),
        )  # fmt: skip
        conflicts = GaugeMetricFamily(
            "meshpos_conflicts_open", "Open conflicts for a manager, by kind", labels=["kind"]
        )
        for kind, n in sorted(tallies.open_conflicts(ledger).items()):
            conflicts.add_metric([kind], n)
        yield conflicts
        counts = ledger.print_queue.counts()
        jobs = GaugeMetricFamily("meshpos_print_jobs", "Print jobs by state", labels=["state"])
        for state, n in sorted(counts.items()):
            jobs.add_metric([state], n)
        yield jobs
        depth = sum(counts.get(str(s), 0) for s in OPEN_STATES)
        yield _gauge("meshpos_print_queue_depth", "Print jobs not printed yet", depth)

    def _mesh(self, status: Status) -> Iterator[Metric]:
        now = self.now_ms()
        peers = list(status.get("peers") or [])
        labels = ["peer", "name"]
        up = GaugeMetricFamily("meshpos_sync_peer_up", "1 while a sync session runs", labels=labels)
        behind = GaugeMetricFamily(
            "meshpos_sync_peer_behind_ops", "Ops this node holds that the peer lacks", labels=labels
        )
        ahead = GaugeMetricFamily(
            "meshpos_sync_peer_ahead_ops", "Ops the peer holds that this node lacks", labels=labels
        )
        heard = GaugeMetricFamily(
            "meshpos_sync_peer_last_heard_age_seconds",
            "Seconds since the peer was last heard",
            labels=labels,
        )
        for p in peers:
            key = [str(p.get("node_id", "")), str(p.get("name") or "")]
            up.add_metric(key, 1 if p.get("up") else 0)
            behind.add_metric(key, int(p.get("behind") or 0))
            ahead.add_metric(key, int(p.get("ahead") or 0))
            heard.add_metric(key, age_s(int(p.get("last_seen_ms") or 0), now))
        yield from (up, behind, ahead, heard)
        yield _gauge(
            "meshpos_peers_up", "Peers with a sync session", sum(bool(p.get("up")) for p in peers)
        )
        wan = status.get("wan")
        if not isinstance(wan, Mapping):
            return  # no [hq] url: nothing to say about HQ
        yield _gauge(
            "meshpos_hq_reachable", "1 while HQ answers this node", bool(wan.get("wan_ok"))
        )
        yield _gauge(
            "meshpos_hq_relay", "1 while this node relays to HQ", bool(wan.get("relaying"))
        )
        yield _gauge(
            "meshpos_hq_ops_waiting", "Ops this node holds that HQ lacked at the last probe",
            int(wan.get("ops_waiting") or 0),
        )  # fmt: skip
        yield _gauge(
            "meshpos_hq_last_sync_age_seconds", "Seconds since HQ last held every op this node held",
            age_s(int(wan.get("last_sync_ms") or 0), now),
        )  # fmt: skip
        for name, field, doc in (
            ("meshpos_hq_ops_up", "ops_up", "Ops this node pushed to HQ since the daemon started"),
            ("meshpos_hq_ops_down", "ops_down", "Ops this node pulled from HQ since it started"),
        ):
            yield CounterMetricFamily(name, doc, value=int(wan.get(field) or 0))
