"""The one thread that owns the web till's Terminal.

A Ledger is not thread-safe, so every request runs its work here, one at a time, the way one
cashier's taps are serialised anyway. Nothing that waits (for peers, for a printer) may sleep on
this thread: every other page of the till waits behind it. Waits happen in the event loop between
calls (see meshpos/web/escrow_wait.py).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class Worker:
    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="meshpos-web")

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn` on the worker thread and await its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
