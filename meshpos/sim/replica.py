"""A read cache in front of a node's Ledger, for the protocol's hot path in the simulator.

`SyncNode` asks its replica for the version vector on every tick and every pump; in a simulated
day that is millions of identical `SELECT origin, seq FROM vv`. The cache answers from memory until
the connection has written anything (`total_changes` moves with every insert, update or delete),
and `raw_since` answers "nothing" without SQL when the peer already holds everything. Answers are
exactly what the Ledger would give; writes go straight through.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from meshpos.core.ops import Op
from meshpos.domain.enrolment import NodeRecord
from meshpos.ledger.records import IngestResult
from meshpos.ledger.store import Ledger


class CachedReplica:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.store = ledger.store
        self._mark = -1
        self._vv: dict[str, int] = {}

    def current(self) -> dict[str, int]:
        """The version vector, shared (do not modify it)."""
        mark = self.ledger.changes
        if mark != self._mark:
            self._vv = self.ledger.vv()
            self._mark = mark
        return self._vv

    def vv(self) -> dict[str, int]:
        # Shared, not copied: SyncNode only reads it or sends it (a new dict replaces the cached
        # one when the ledger changes, so a reference kept elsewhere never changes under it).
        return self.current()

    def raw_since(
        self, theirs: Mapping[str, int], limit: int | None = None
    ) -> list[tuple[str, int, bytes, bytes]]:
        get = theirs.get
        for origin, seq in self.current().items():
            if seq > get(origin, 0):
                return self.ledger.raw_since(theirs, limit)
        return []

    def ingest(self, ops: Iterable[Op], nodes: Iterable[NodeRecord] = ()) -> IngestResult:
        return self.ledger.ingest(ops, nodes)

    def nodes(self) -> list[NodeRecord]:
        return self.ledger.nodes()

    def sealed_blobs(self) -> dict[tuple[str, int], dict[int, bytes]]:
        return self.ledger.sealed_blobs()

    def public_key(self, node_id: str) -> bytes | None:
        return self.ledger.public_key(node_id)
