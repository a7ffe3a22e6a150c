"""Batches of ops without the cyclic garbage collector's pauses.

Decoding or folding a batch makes thousands of short-lived lists, dicts and tuples, none of
which form a reference cycle; each few hundred of them start a collection, which in a process
holding many objects (a daemon, verify of a big ledger) scans them all, and can halve the speed.
Reference counting frees everything a batch makes; the collector is only paused while it runs.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic collector for a batch; it runs again after if it ran before (nested and
    concurrent uses leave it running as soon as the outermost that found it running ends)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
