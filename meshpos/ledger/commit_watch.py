"""Who is told how long each write transaction of a node's ledger took: the daemon's commit
latency metric (meshpos/node/metrics.py). Nobody by default, and then a commit pays one check of
an empty list."""

from __future__ import annotations

from collections.abc import Callable

CommitWatcher = Callable[[float, bool], None]
"""Called after a commit with its seconds (from BEGIN to COMMIT done, so the fsync counts) and
whether it stored ops (a sale, an ingest) rather than only local state (print jobs, staff)."""

watchers: list[CommitWatcher] = []


def watch(fn: CommitWatcher) -> Callable[[], None]:
    """Start telling `fn`; returns what stops it."""
    watchers.append(fn)
    return lambda: watchers.remove(fn) if fn in watchers else None


def committed(seconds: float, stored_ops: bool) -> None:
    for fn in list(watchers):
        fn(seconds, stored_ops)
