"""What a running daemon shares with other processes of the same node, through files and tables
(the tables are `Ledger.peer_acks` and `Ledger.escrow_asks`).

Kept apart from `meshpos.node.daemon` so the CLI can read it without importing ZeroMQ or zeroconf.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from meshpos.service.terminal import Terminal

STATUS_FILE = "status.json"
SYNC_NOW_FILE = "sync-now"  # touched by `meshpos sync now`; the daemon runs an HQ round


def acked_seq(t: Terminal) -> int:
    """The highest seq of this node's ops some peer confirmed durable (0 if none or no daemon)."""
    return t.ledger.peer_acks.highest()


def wait_for_copies(t: Terminal, seq: int, wait_ms: int) -> int:
    """Wait (bounded) until a peer acknowledges op `seq` of this node; returns copies known."""
    if not daemon_status(t.cfg.dir).get("peers_up"):
        return 1
    deadline = time.monotonic() + wait_ms / 1000
    while True:
        if acked_seq(t) >= seq:
            return 2
        if time.monotonic() >= deadline:
            return 1
        time.sleep(0.001)


def daemon_status(directory: Path) -> dict[str, Any]:
    """The running daemon's last status, or {} if none is running."""
    path = directory / STATUS_FILE
    try:
        status: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    try:
        os.kill(int(status.get("pid", -1)), 0)
    except (OSError, ValueError):
        return {}
    if time.time() - float(status.get("written", 0)) > 10:
        return {}
    return status
