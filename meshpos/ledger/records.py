"""Plain records the ledger hands to and takes from its callers (pure, no SQLite)."""

from __future__ import annotations

from dataclasses import dataclass

from meshpos.core.ops import Op


@dataclass(frozen=True)
class IngestResult:
    applied: int
    duplicates: int
    pending: int
    max_hlc: int
    applied_ops: tuple[Op, ...] = ()
