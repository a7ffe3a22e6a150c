"""Plain records the ledger hands to and takes from its callers (pure, no SQLite)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from meshpos.core.ops import Op

WriteTx = Callable[[], AbstractContextManager[Any]]
"""`Ledger.write`: a write transaction that joins an enclosing one, so a side table written
inside a sale's transaction commits or rolls back with the sale."""


@dataclass(frozen=True)
class IngestResult:
    applied: int
    duplicates: int
    pending: int
    max_hlc: int
    applied_ops: tuple[Op, ...] = ()


@dataclass(frozen=True)
class LogWindow:
    """One origin's ops from `first_seq` to `last_seq` as stored (body, signature), and the hash
    of the op before them, so a reader can check the chain from there on."""

    first_seq: int
    last_seq: int
    anchor: bytes
    raw: tuple[tuple[bytes, bytes], ...]
