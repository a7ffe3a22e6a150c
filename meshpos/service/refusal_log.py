"""Logging refusals (of strangers on the mesh port, of HTTP requests over a limit) so that each one
leaves a line naming its address and reason, yet a flood cannot fill the disk.

Within one window (a minute by default) the first refusal of each (address, kind) is logged, up to
`budget` lines in all; the rest are counted, and the next refusal after the window (or `flush()`)
writes one summary line with how many were held back and from how many addresses.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

WINDOW_S = 60.0
BUDGET = 30
_MAX_ADDRESSES = 1024  # addresses remembered for the summary's count; past that, "at least"


class RefusalLog:
    """Rate-limited warnings about refused peers; safe to call from any thread."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        window_s: float = WINDOW_S,
        budget: int = BUDGET,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.window_s = window_s
        self.budget = budget
        self.clock = clock
        self._lock = threading.Lock()
        self._start = clock()
        self._logged: set[tuple[str, str]] = set()
        self._held = 0
        self._held_from: set[str] = set()
        self.total = 0

    def refused(self, address: str, what: str, why: str, *, kind: str = "") -> bool:
        """Note one refusal ("refused WHAT from ADDRESS: WHY"); `kind` tells apart refusals of
        one address that deserve a line each (default `what`). Whether it got its own line."""
        with self._lock:
            self.total += 1
            self._roll(self.clock())
            key = (address, kind or what)
            if key in self._logged or len(self._logged) >= self.budget:
                self._held += 1
                if len(self._held_from) < _MAX_ADDRESSES:
                    self._held_from.add(address)
                return False
            self._logged.add(key)
        self.logger.warning("refused %s from %s: %s", what, address or "an unknown address", why)
        return True

    def flush(self) -> None:
        """Write the summary of a window that has ended (callers with a loop call this now and
        then, so the last burst of a flood is reported even if no refusal follows it)."""
        with self._lock:
            self._roll(self.clock())

    def _roll(self, now: float) -> None:
        if now - self._start < self.window_s:
            return
        if self._held:
            many = len(self._held_from)
            self.logger.warning(
                "%d more refusal(s) from %s%d address(es) in the last %.0f s not logged one by one",
                self._held, "at least " * (many >= _MAX_ADDRESSES), many, now - self._start,
            )  # fmt: skip
        self._start = now
        self._logged.clear()
        self._held = 0
        self._held_from.clear()
