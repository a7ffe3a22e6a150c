"""Live updates for the web till: one watcher thread per server, fanned out to every open page.

The watcher holds its own read-only connection (meshpos.ledger.live_feed.LiveFeed) and polls
`PRAGMA data_version` every `interval` seconds (~100 ms): the number changes whenever any other
connection commits, which covers a sale rung on this page, one rung by `meshpos sell`, and ops a
peer's sync brought in through the daemon. It also recomputes the state banner (status.json + a
few counters) and publishes only when it changed. Pages receive these as Server-Sent Events
("db", "status") and re-fetch the parts of the screen they show; no state is pushed, so a page
that missed an event is never wrong for longer than the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from meshpos.core.clock import wall_ms
from meshpos.ledger.live_feed import LiveFeed
from meshpos.service import counter_state
from meshpos.service.config import NodeConfig, load_config
from meshpos.service.training import is_practice

log = logging.getLogger("meshpos.web")


@dataclass(frozen=True)
class Event:
    kind: str  # "db", "status", "hello"; None-kind is never sent
    version: int


@dataclass
class _Subscriber:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Event | None] = field(default_factory=lambda: asyncio.Queue(maxsize=64))


class Live:
    """Watches one node directory; `subscribe()` from the event loop, `start()`/`close()` once."""

    def __init__(
        self, cfg: NodeConfig, key: bytes | None, node_id: str, interval: float = 0.1
    ) -> None:
        self.cfg = cfg
        # A till in training mode shows the real node's network state (its daemon, its HQ).
        self.practice = is_practice(cfg)
        self.real = load_config(cfg.dir.parent) if self.practice else cfg
        self.key = key
        self.node_id = node_id
        self.interval = interval
        self.status_every = 0.25
        self.db_version = 0
        self.status_version = 0
        self.banner: dict[str, Any] = {}
        self._subs: list[_Subscriber] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meshpos-web-live", daemon=True)
        self.closed = False

    # -- subscribers (called on the event loop) ------------------------------------------------

    def subscribe(self) -> asyncio.Queue[Event | None]:
        sub = _Subscriber(asyncio.get_running_loop())
        with self._lock:
            self._subs.append(sub)
        return sub.queue

    def unsubscribe(self, queue: asyncio.Queue[Event | None]) -> None:
        with self._lock:
            self._subs = [s for s in self._subs if s.queue is not queue]

    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def _publish(self, event: Event | None) -> None:
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            with contextlib.suppress(RuntimeError):  # its loop is closed: the page is gone
                sub.loop.call_soon_threadsafe(_offer, sub.queue, event)

    # -- the watcher thread ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def close(self) -> None:
        """Stop watching and end every open event stream (so a server can stop promptly)."""
        self.closed = True
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._publish(None)

    def _run(self) -> None:
        feed = LiveFeed(str(self.cfg.db_path), self.key)
        try:
            seen = feed.data_version()
            self.banner = self._safe_banner(feed)
            self._ready.set()
            next_status = time.monotonic() + self.status_every
            while not self._stop.wait(self.interval):
                changed = False
                try:
                    version = feed.data_version()
                    if version != seen:
                        seen = version
                        changed = True
                        self.db_version += 1
                        self._publish(Event("db", self.db_version))
                    if changed or time.monotonic() >= next_status:
                        next_status = time.monotonic() + self.status_every
                        fresh = self._safe_banner(feed)
                        if fresh != self.banner:
                            self.banner = fresh
                            self.status_version += 1
                            self._publish(Event("status", self.status_version))
                except Exception as exc:  # busy or locked past the timeout: try next time
                    log.warning("live updates: %s", exc)
        finally:
            self._ready.set()
            feed.close()

    def _safe_banner(self, feed: LiveFeed) -> dict[str, Any]:
        """The counter's state; when it cannot be read, a state that says so (never none)."""
        try:
            state = counter_state.read(
                feed, self.real, self.node_id, wall_ms(), training=self.practice
            )
            return state.as_dict()
        except Exception as exc:  # the database is busy or damaged: say so on every page
            log.warning("counter state: %s", exc)
            unknown = counter_state.CounterState(
                counter_state.OFFLINE,
                "State unknown",
                alerts=(counter_state.Alert("unknown", f"The till cannot read its state: {exc}"),),
                errors=(str(exc),),
            )
            return unknown.as_dict()


def _offer(queue: asyncio.Queue[Event | None], event: Event | None) -> None:
    """Queue an event for one page; a page too slow to read 64 events just misses some (each
    event only says "look again", so the next one brings it up to date)."""
    with contextlib.suppress(asyncio.QueueFull):
        queue.put_nowait(event)
