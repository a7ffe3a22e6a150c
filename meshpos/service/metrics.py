"""Prometheus metrics of the long-running processes (`prometheus_client`): the `[metrics]` table
both the daemon (meshpos.toml) and HQ (hq.toml) read, and the small server that answers
`GET /metrics` in the Prometheus text format on its own port.

Off by default; when a port is set it listens on loopback unless `host` says otherwise, because
metrics name stores, terminals and how much they sell. What each process exports is in
meshpos/node/metrics.py and meshpos/hq/metrics.py; docs/observability.md lists every series and
docs/grafana-meshpos.json charts them.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_wsgi_server

from meshpos.core.errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip
"""Seconds: a durable SQLite commit takes ~0.2-2 ms here, an HQ batch tens of ms."""


@dataclass(frozen=True)
class MetricsSettings:
    """The `[metrics]` table: `port` (none: no metrics; 0 picks a free port) and `host`."""

    port: int | None = None
    host: str = DEFAULT_HOST

    @classmethod
    def from_table(cls, raw: Mapping[str, Any], where: str) -> MetricsSettings:
        unknown = set(raw) - {"port", "host"}
        if unknown:
            raise ConfigError(f"{where}: unknown [metrics] key(s) {', '.join(sorted(unknown))}")
        port = raw.get("port")
        if port is not None and (
            not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535
        ):
            raise ConfigError(f"{where}: [metrics] port must be a whole number from 0 to 65535")
        host = raw.get("host", DEFAULT_HOST)
        if not isinstance(host, str) or not host:
            raise ConfigError(f"{where}: [metrics] host must be an address such as 127.0.0.1")
        return cls(port, host)


class MetricsServer:
    """`GET /metrics` of `registry` on a background thread, until `close()`."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        try:
            server, thread = start_wsgi_server(port, host, registry)
        except OSError as exc:
            raise ConfigError(
                f"metrics cannot listen on {host}:{port}: {exc.strerror or exc}; choose another "
                "[metrics] port"
            ) from None
        self.server: WSGIServer = server
        self.thread: threading.Thread = thread
        self.host = host

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def age_s(then_ms: int | None, now_ms: int) -> float:
    """Seconds since a moment, NaN for never (Prometheus shows no value rather than a lie)."""
    return max(0.0, (now_ms - then_ms) / 1000) if then_ms else math.nan
