"""HQ's `/metrics` (when hq.toml's `[metrics] port` or `meshpos hq serve --metrics-port` is set),
served on its own port, away from the relays' and the dashboard's.

Chain figures are read from the database at scrape time, so every HQ process gives the same
answer: per store, ops held (its rate is the ingest rate), how long since a terminal last reached
HQ and since the last sync (the lag), the ops terminals said wait to come up, open conflicts,
card payments pending and declined. Request counts and latencies are per process; with
`--workers N` the workers write them to files in a directory the serving process adds up
(`prometheus_client`'s multiprocess mode).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from meshpos.core.clock import wall_ms
from meshpos.hq.overview import store_statuses
from meshpos.hq.storage import HQStorage
from meshpos.service.metrics import age_s

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MULTIPROC_DIR = "metrics.d"


class ChainCollector:
    """Per-store series read from HQ's database."""

    def __init__(self, storage: HQStorage, now_ms: Callable[[], int] = wall_ms) -> None:
        self.storage = storage
        self.now_ms = now_ms

    def collect(self) -> Iterator[Metric]:
        now = self.now_ms()
        rows = store_statuses(self.storage, now)
        yield GaugeMetricFamily("meshpos_hq_stores", "Stores enrolled at HQ", value=len(rows))
        yield GaugeMetricFamily(
            "meshpos_hq_stores_online", "Stores a terminal of which reached HQ lately",
            value=sum(r.online for r in rows),
        )  # fmt: skip
        labels = ["store"]
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "ops": CounterMetricFamily(
                "meshpos_hq_store_ops",
                "Ops HQ holds of the store (rate: ingest rate)",
                labels=labels,
            ),
            "sales": CounterMetricFamily(
                "meshpos_hq_store_sales", "Sales HQ holds of the store", labels=labels
            ),
            "online": GaugeMetricFamily(
                "meshpos_hq_store_online",
                "1 while a terminal of the store reaches HQ",
                labels=labels,
            ),
            "contact": GaugeMetricFamily(
                "meshpos_hq_store_last_contact_age_seconds",
                "Seconds since a terminal of the store last reached HQ",
                labels=labels,
            ),
            "sync": GaugeMetricFamily(
                "meshpos_hq_store_last_sync_age_seconds",
                "Seconds since the store's relay last pushed or pulled",
                labels=labels,
            ),
            "waiting": GaugeMetricFamily(
                "meshpos_hq_store_ops_waiting",
                "Ops the store's terminals said HQ lacked at their last probe",
                labels=labels,
            ),
            "conflicts": GaugeMetricFamily(
                "meshpos_hq_store_open_conflicts",
                "Items of the store that need a look",
                labels=labels,
            ),
        }
        payments = GaugeMetricFamily(
            "meshpos_hq_card_payments", "Offline card payments by state", labels=["store", "status"]
        )
        for r in rows:
            key = [r.store]
            families["ops"].add_metric(key, r.ops)
            families["sales"].add_metric(key, r.sales)
            families["online"].add_metric(key, int(r.online))
            families["contact"].add_metric(key, age_s(r.last_contact_ms, now))
            families["sync"].add_metric(key, age_s(r.last_sync_ms, now))
            if r.ops_waiting is not None:
                families["waiting"].add_metric(key, r.ops_waiting)
            families["conflicts"].add_metric(key, r.open_conflicts)
            payments.add_metric([r.store, "pending"], r.card_pending)
            payments.add_metric([r.store, "declined"], r.card_declined)
        yield from families.values()
        yield payments


def prepare_multiprocess(hq_dir: Path) -> Path:
    """An empty directory for the workers' metric files, named in the environment they inherit
    (set before they start: prometheus_client reads it when a worker imports it)."""
    path = hq_dir / MULTIPROC_DIR
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700)
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def hq_registry(storage: HQStorage, *, multiprocess: Path | None = None) -> CollectorRegistry:
    """The registry HQ's metrics server serves: the chain series, plus the workers' request
    series when they run in other processes."""
    registry = CollectorRegistry()
    registry.register(ChainCollector(storage))
    if multiprocess is not None:
        MultiProcessCollector(registry, str(multiprocess))  # type: ignore[no-untyped-call]
    return registry
