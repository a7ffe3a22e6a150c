"""A bundle holds every op the other side lacks, however many: it is not capped at a message size."""

from __future__ import annotations

from pathlib import Path

from meshpos.core.ops import MAX_OP_BYTES, Signer
from meshpos.ledger.store import Ledger
from meshpos.service.config import NodeConfig
from meshpos.service.terminal import Terminal


def terminal(seed: bytes, name: str) -> Terminal:
    s = Signer.from_seed(seed)
    cfg = NodeConfig(dir=Path("/nonexistent"), store="S1", name=name, node_id=s.node_id)
    return Terminal(cfg, s, Ledger(":memory:", "S1", durable=False))


def test_a_bundle_larger_than_the_message_limit_imports_whole() -> None:
    a, b = terminal(b"a", "T1"), terminal(b"b", "T2")
    filler = "x" * (MAX_OP_BYTES - 1024)
    for i in range(80):  # ~5 MB: more than the 4 MiB a single sync message may carry
        a.append("note", {"text": filler, "n": i})
    data, count = a.export_bundle()
    held = sum(len(op.body) for op in a.ledger.ops_since({}))
    assert count == 80 and held > 4 * 1024 * 1024  # deflated, the file itself is small
    result = b.import_bundle(data)
    assert result.applied == 80
    assert b.ledger.vv() == a.ledger.vv()
    assert b.ledger.verify() == []
