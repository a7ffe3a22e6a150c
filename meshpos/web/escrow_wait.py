"""Waiting for loyalty redemption rights another counter holds, without holding the worker.

When a sale redeems more points than this counter holds rights to (`EscrowShortfall`), the till
asks its peers through the daemon (`meshpos.service.escrow.ask`); a holder answers with a transfer
op that replicates back. The wait for it is awaited in the event loop, polling on the worker
between sleeps, so every other request of the till goes on meanwhile; the caller then tries the
sale once more on the worker, as `meshpos sell` does (`escrow.sell_with_escrow`).
"""

from __future__ import annotations

import asyncio
import time

from meshpos.domain.escrow import EscrowShortfall
from meshpos.service.escrow import RightsWait
from meshpos.service.terminal import Terminal
from meshpos.web.worker import Worker

ESCROW_WAIT_MS = 2000
POLL_S = 0.02


async def wait_for_rights(worker: Worker, t: Terminal, short: EscrowShortfall) -> None:
    """Ask for the rights `short` lacks and await them for up to ESCROW_WAIT_MS; `t` is only
    touched on the worker. Returns at once when nobody can answer now."""
    wait = await worker.call(RightsWait.ask_if_answerable, t, short, ESCROW_WAIT_MS)
    while wait is not None and not await worker.call(wait.arrived):
        if wait.expired(time.monotonic()):
            return
        await asyncio.sleep(POLL_S)
