"""Plain records the ledger hands to and takes from its callers (pure, no SQLite)."""

from __future__ import annotations

from dataclasses import dataclass

from meshpos.ops import Op


@dataclass(frozen=True)
class NodeRecord:
    """What a ledger must know about an origin to accept its ops: its key and its store."""

    node_id: str
    public_key: bytes
    store: str
    name: str
    cert: bytes | None = None

    def as_row(self) -> tuple[str, bytes, str, str, bytes | None]:
        return (self.node_id, self.public_key, self.store, self.name, self.cert)


@dataclass(frozen=True)
class IngestResult:
    applied: int
    duplicates: int
    pending: int
    max_hlc: int
    applied_ops: tuple[Op, ...] = ()
