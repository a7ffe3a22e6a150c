"""Ingest checks everything before it writes anything; verify names a damaged view; rebuild
heals it."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from ledger_helpers import (
    STORE,
    all_ops,
    catalog_rows,
    make_replicas,
    new_ledger,
    node_record,
    signed_with_raw_payload,
    signer,
    table_counts,
    views,
)

from meshpos.core.errors import (
    ChainError,
    EncodingError,
    LocalError,
    RemoteError,
    SignatureError,
    WrongStore,
)
from meshpos.core.ops import GENESIS, Op, Signer, decode_body, make_op, op_hash
from meshpos.ledger.fold import CARD_FLOAT
from meshpos.ledger.schema import LOCAL_TABLES, VIEW_TABLES
from meshpos.ledger.store import Ledger

A, B, STRANGER = signer(0), signer(1), signer(9)


def op(
    s: Signer, seq: int, prev: bytes, kind: str, payload: dict[str, Any], store: str = STORE
) -> Op:
    return make_op(
        s, store=store, seq=seq, hlc=1_000 + seq, user="u", kind=kind, payload=payload, prev=prev
    )


def history(s: Signer, n: int, start: int = 1, prev: bytes = GENESIS) -> list[Op]:
    """A product, then stock receipts of it."""
    out = []
    for seq in range(start, start + n):
        if seq == 1:
            o = op(s, 1, prev, "product.upsert", {"sku": f"P-{s.node_id}", "fields": {"name": "x"}})
        else:
            o = op(
                s,
                seq,
                prev,
                "stock.receive",
                {"sku": f"P-{s.node_id}", "delta": seq, "reason": "r"},
            )
        out.append(o)
        prev = o.hash
    return out


@pytest.fixture
def ledger() -> Ledger:
    """A replica that already holds some of A's and B's ops."""
    led = new_ledger([A, B])
    led.ingest(history(A, 3) + history(B, 2))
    return led


def assert_refused(
    ledger: Ledger,
    ops: list[Op],
    error: type[Exception] | tuple[type[Exception], ...],
    match: str | None = None,
) -> None:
    before_counts, before_views, before_vv = table_counts(ledger), views(ledger), ledger.vv()
    with pytest.raises(error, match=match):
        ledger.ingest(ops)
    assert table_counts(ledger) == before_counts
    assert views(ledger) == before_views
    assert ledger.vv() == before_vv
    assert ledger.verify() == []


def resign(s: Signer, template: Op, **fields: Any) -> Op:
    """An op with `template`'s fields, some replaced, signed by `s` but claiming its origin."""
    base = {k: getattr(template, k) for k in ("store", "seq", "hlc", "user", "kind", "prev")}
    base["payload"] = dict(template.payload)
    base.update(fields)
    made = make_op(s, **base)
    body = made.body.replace(s.node_id.encode(), template.origin.encode())
    return decode_body(body, s.sign(body))


# -- refusals -----------------------------------------------------------------------------------


def test_ops_of_another_store_are_refused(ledger: Ledger) -> None:
    tail = all_ops(ledger)
    a3 = next(o for o in tail if o.origin == A.node_id and o.seq == 3)
    foreign = op(A, 4, a3.hash, "note", {}, store="S2")
    good_b = history(B, 1, start=3, prev=ledger.head(B.node_id)[1])
    assert_refused(ledger, [*good_b, foreign], WrongStore, "S2")


def test_ops_from_an_unknown_node_are_refused(ledger: Ledger) -> None:
    good_b = history(B, 1, start=3, prev=ledger.head(B.node_id)[1])
    assert_refused(ledger, [*good_b, *history(STRANGER, 2)], RemoteError, "unknown node")


def test_a_forged_signature_is_refused(ledger: Ledger) -> None:
    real = history(A, 2, start=4, prev=ledger.head(A.node_id)[1])
    forged = resign(B, real[1], payload={"sku": f"P-{A.node_id}", "delta": 1000, "reason": "r"})
    assert forged.origin == A.node_id
    assert_refused(ledger, [real[0], forged], SignatureError)


def test_a_flipped_signature_byte_in_the_middle_of_a_run_is_refused(ledger: Ledger) -> None:
    real = history(A, 3, start=4, prev=ledger.head(A.node_id)[1])
    sig = bytearray(real[1].sig)
    sig[10] ^= 0x40
    bad = decode_body(real[1].body, bytes(sig))
    assert_refused(ledger, [real[0], bad, real[2]], ChainError)


def test_a_broken_chain_is_refused(ledger: Ledger) -> None:
    real = history(A, 3, start=4, prev=ledger.head(A.node_id)[1])
    # The middle op altered and re-signed by a different key; the last op is genuine.
    altered = resign(B, real[1], payload={"sku": f"P-{A.node_id}", "delta": -99, "reason": "r"})
    assert_refused(ledger, [real[0], altered, real[2]], ChainError, "removed or altered")
    # The same with the altered op first: it does not follow the held head.
    wrong_start = resign(B, real[0], prev=b"\x07" * 32)
    assert_refused(ledger, [wrong_start, *real[1:]], (ChainError, SignatureError))


def test_an_op_that_skips_its_predecessor_does_not_chain(ledger: Ledger) -> None:
    real = history(A, 3, start=4, prev=ledger.head(A.node_id)[1])
    orphan = op(A, 5, real[0].prev, "note", {})  # claims to follow seq 3, not seq 4
    ledger.ingest([orphan])  # parked: its signature is A's, the gap is not filled yet
    assert ledger.gaps() == {A.node_id: 5}
    assert_refused(ledger, [real[0]], ChainError)
    assert ledger.gaps() == {A.node_id: 5}


def test_equivocation_is_refused(ledger: Ledger) -> None:
    head = ledger.head(A.node_id)
    # A signs a different op 3 than the one the ledger holds.
    held3 = ledger.get(A.node_id, 3)
    assert held3 is not None
    other3 = op(A, 3, held3.prev, "note", {"text": "the other op 3"})
    assert_refused(ledger, [other3], ChainError, "two different ops")
    # Two different ops with the same (origin, seq) in one batch.
    n4a = op(A, 4, head[1], "note", {"text": "a"})
    n4b = op(A, 4, head[1], "note", {"text": "b"})
    assert_refused(ledger, [n4a, n4b], ChainError, "two different ops")
    assert_refused(ledger, [n4b, n4a], ChainError, "two different ops")
    # Two different ops with the same (origin, seq) past a gap, one waiting, one arriving.
    ahead = history(A, 2, start=5, prev=b"\x01" * 32)
    ledger.ingest([ahead[0]])
    twin = op(A, 5, b"\x02" * 32, "note", {"text": "twin"})
    assert_refused(ledger, [twin], ChainError, "two different ops")
    assert_refused(ledger, [ahead[1], twin], ChainError, "two different ops")


MALFORMED: list[tuple[str, dict[str, Any]]] = [
    ("product.upsert", {"sku": 7, "fields": {}}),
    ("product.upsert", {"sku": "X", "fields": {"price": "12"}}),
    ("product.upsert", {"sku": "X", "fields": {"price": 2**63}}),
    ("product.upsert", {"sku": "X", "fields": {"flavour": "mint"}}),
    ("product.upsert", {"sku": "X", "fields": []}),
    ("customer.upsert", {"customer_id": "C1", "fields": {"name": 5}}),
    ("stock.receive", {"sku": "X", "delta": "3", "reason": "r"}),
    ("stock.receive", {"sku": "X", "delta": True, "reason": "r"}),
    ("stock.receive", {"sku": "X", "delta": 2**63, "reason": "r"}),
    ("stock.receive", {"sku": "X", "delta": 2**64 - 1, "reason": "r"}),
    ("stock.adjust", {"sku": "X", "delta": 1}),
    ("loyalty.adjust", {"customer_id": "C1", "delta": None, "reason": "r"}),
    ("setting.set", {"key": 1, "value": 2}),
    ("setting.set", {"key": "k", "value": b"\x00bytes"}),
    ("setting.set", {"key": "k", "value": {"nested": [b"x"]}}),
    ("conflict.resolve", {"conflict_id": "nonsense", "note": "n"}),
    ("conflict.resolve", {"conflict_id": "oversell:X", "note": 3}),
    ("sale", {"sale_id": "s"}),
    ("sale", {"lines": "many"}),
    ("made.up", {}),
]


def sale_payload(**changes: Any) -> dict[str, Any]:
    line = {
        "sku": "X",
        "name": "x",
        "category": "c",
        "qty": 1,
        "unit_price": 100,
        "discount": 0,
        "gst_rate": 500,
        "tax": 5,
        "total": 100,
    }
    base: dict[str, Any] = {
        "sale_id": "S1-T0-000001",
        "number": 1,
        "terminal": "T0",
        "customer": None,
        "lines": [line],
        "subtotal": 100,
        "discount": 0,
        "tax": 5,
        "total": 100,
        "tenders": [{"method": "cash", "amount": 100}],
        "points_earned": 0,
        "points_redeemed": 0,
        "ts_ms": 1,
        "ref_sale": None,
    }
    for key, value in changes.items():
        if key.startswith("line_"):
            base["lines"] = [{**line, key[5:]: value}]
        else:
            base[key] = value
    return base


MALFORMED += [
    ("sale", sale_payload(line_qty=0)),
    ("sale", sale_payload(line_qty=-2)),
    ("sale", sale_payload(line_total=1.5)),
    ("sale", sale_payload(lines=[7])),
    ("sale", sale_payload(tenders=[{"method": "cash", "amount": "100"}])),
    ("sale", sale_payload(tenders=[{"method": "points", "amount": 1, "points": "9"}])),
    ("sale", sale_payload(number=2**63)),
    ("sale", sale_payload(customer=12)),
    ("return", sale_payload(ref_sale=None)),
    ("exchange", sale_payload(returned=[{"sku": "X"}], ref_sale="S1-T0-000001")),
]


@pytest.mark.parametrize(
    "kind, payload", MALFORMED, ids=[f"{i}-{k}" for i, (k, _) in enumerate(MALFORMED)]
)
def test_a_malformed_payload_is_refused_and_writes_nothing(
    ledger: Ledger, kind: str, payload: dict[str, Any]
) -> None:
    before = history(A, 1, start=4, prev=ledger.head(A.node_id)[1])
    try:
        bad = op(A, 5, before[0].hash, kind, payload)
    except LocalError:  # a float: make_op refuses it locally, so sign the raw body ourselves
        bad = _raw_op(A, 5, before[0].hash, kind, payload)
    assert_refused(ledger, [*before, bad], EncodingError)
    # A local append of the same payload is refused the same way.
    if not any(isinstance(v, float) for v in _leaves(payload)):
        counts = table_counts(ledger)
        with pytest.raises(EncodingError):
            ledger.append(A, kind=kind, payload=payload, user="u", hlc=10**9)
        assert table_counts(ledger) == counts


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _leaves(v)]
    if isinstance(value, list):
        return [x for v in value for x in _leaves(v)]
    return [value]


def _raw_op(s: Signer, seq: int, prev: bytes, kind: str, payload: dict[str, Any]) -> Op:
    import msgpack

    body = msgpack.packb(
        [1, STORE, s.node_id, seq, 5000, "u", kind, payload, prev], use_bin_type=True
    )
    return decode_body(body, s.sign(body))


# Payloads that are not a msgpack map with text keys: a string that is not UTF-8, a number as a
# top-level key, a list as a key. The header decodes; the payload only when the op is used.
UNDECODABLE = [b"\x81\xa1n\xa2\xff\xfe", b"\x81\x01\x02", b"\x81\x91\x01\x02"]


@pytest.mark.parametrize("payload", UNDECODABLE)
def test_a_payload_that_does_not_decode_is_refused_at_ingest_and_writes_nothing(
    ledger: Ledger, payload: bytes
) -> None:
    before = history(A, 1, start=4, prev=ledger.head(A.node_id)[1])
    bad = signed_with_raw_payload(A, STORE, 5, 5000, before[0].hash, payload)
    named = f"op {A.node_id}:5 \\(note\\): payload is not valid msgpack"
    with pytest.raises(EncodingError, match=named):
        bad.payload  # noqa: B018
    assert_refused(ledger, [*before, bad], EncodingError, match=f"{A.node_id}:5")
    # Past a gap it would wait in `pending`: it is refused before it is kept there, too.
    assert_refused(ledger, [bad], EncodingError, match=f"{A.node_id}:5")
    assert ledger.gaps() == {}


def test_a_malformed_op_in_a_batch_of_another_origin_keeps_the_whole_batch_out(
    ledger: Ledger,
) -> None:
    good_b = history(B, 3, start=3, prev=ledger.head(B.node_id)[1])
    bad_a = op(A, 4, ledger.head(A.node_id)[1], "stock.receive", {"sku": "X", "delta": "lots"})
    assert_refused(ledger, [*good_b, bad_a], EncodingError)
    assert ledger.ingest(good_b).applied == 3


# -- duplicates and gaps ------------------------------------------------------------------------


def test_duplicates_are_counted_and_ignored(ledger: Ledger) -> None:
    held = all_ops(ledger)
    before = table_counts(ledger), views(ledger)
    result = ledger.ingest(held + held[:2])
    assert (result.applied, result.duplicates, result.pending) == (0, len(held) + 2, 0)
    assert (table_counts(ledger), views(ledger)) == before
    # A duplicate next to new ops: only the new ones apply.
    more = history(A, 2, start=4, prev=ledger.head(A.node_id)[1])
    result = ledger.ingest([held[0], *more, more[0]])
    assert (result.applied, result.duplicates) == (2, 2)
    assert ledger.vv()[A.node_id] == 5


def test_ops_past_a_gap_wait_and_apply_when_it_fills(ledger: Ledger) -> None:
    more = history(A, 4, start=4, prev=ledger.head(A.node_id)[1])
    result = ledger.ingest([more[3], more[1]])
    assert (result.applied, result.pending) == (0, 2)
    assert ledger.gaps() == {A.node_id: 5}
    assert ledger.vv()[A.node_id] == 3
    stock = views(ledger)["stock"]
    result = ledger.ingest([more[1]])  # the same parked op again changes nothing
    assert (result.applied, result.duplicates, result.pending) == (0, 1, 0)
    result = ledger.ingest([more[0]])
    assert (result.applied, result.pending) == (
        2,
        0,
    )  # 4 fills the gap and releases 5; 7 waits for 6
    assert ledger.gaps() == {A.node_id: 7}
    assert views(ledger)["stock"] != stock
    result = ledger.ingest([more[2]])
    assert result.applied == 2 and ledger.gaps() == {} and ledger.pending_count() == 0
    assert ledger.vv()[A.node_id] == 7
    assert ledger.verify() == []


# -- verify and rebuild -------------------------------------------------------------------------


@pytest.fixture
def busy(tmp_path: Any) -> Ledger:
    """A file-backed replica with sales, a return and an oversell conflict."""
    a, b = make_replicas(2)
    a.terminal.import_catalog(catalog_rows(3, stock=1))
    cid = a.terminal.add_customer({"name": "Asha", "phone": "9800000001"})
    b.terminal.ingest(all_ops(a.ledger))
    sale = a.terminal.sell([("SKU0", 1), ("SKU1", 1)], customer=cid)
    b.terminal.sell([("SKU0", 1)])
    a.terminal.return_items(sale.sale_id, [("SKU1", 1)])
    led = new_ledger([a.signer, b.signer], tmp_path / "meshpos.db")
    led.ingest(all_ops(a.ledger) + all_ops(b.ledger))
    assert led.query("SELECT conflict_id FROM conflicts") == [{"conflict_id": "oversell:SKU0"}]
    assert led.verify() == []
    return led


CORRUPTIONS = [
    ("stock", "UPDATE stock SET qty = qty + 1 WHERE sku = 'SKU2'"),
    ("products", "UPDATE products SET price = 1 WHERE sku = 'SKU1'"),
    ("registers", "DELETE FROM registers WHERE field = 'name' AND key = 'SKU0'"),
    ("customers", "UPDATE customers SET name = 'Mallory'"),
    ("sales", "DELETE FROM sales WHERE kind = 'return'"),
    ("sales", "UPDATE sales SET customer_id = 'C9' WHERE customer_id IS NULL"),
    ("sale_lines", "UPDATE sale_lines SET place = '27'"),
    ("sale_lines", "UPDATE sale_lines SET cgst = cgst + 1"),
    ("sale_lines", "UPDATE sale_lines SET total = 0 WHERE line = 0"),
    ("tenders", "UPDATE tenders SET method = 'card'"),
    ("returned", "DELETE FROM returned"),
    ("stock_moves", "UPDATE stock_moves SET delta = delta * 2"),
    ("loyalty", "UPDATE loyalty SET points = points + 100"),
    ("conflicts", "DELETE FROM conflicts"),
    ("conflicts", "UPDATE conflicts SET status = 'resolved'"),
    ("settings", "INSERT INTO settings VALUES ('loyalty.earn_per_100', '99')"),
    ("resolutions", "INSERT INTO resolutions VALUES ('x', 1, 'oversell:SKU0', 1, 'u', 0, 'n')"),
]


@pytest.mark.parametrize(
    "table, sql", CORRUPTIONS, ids=[f"{t}-{i}" for i, (t, _) in enumerate(CORRUPTIONS)]
)
def test_verify_names_a_corrupted_view_and_rebuild_restores_it(
    busy: Ledger, table: str, sql: str
) -> None:
    good = views(busy)
    busy.conn.execute(sql)
    assert views(busy) != good
    problems = busy.verify()
    assert problems
    assert all(p.split(":")[0] in VIEW_TABLES for p in problems)
    assert table in {p.split(":")[0] for p in problems}
    busy.rebuild()
    assert views(busy) == good
    assert busy.verify() == []


def test_verify_names_a_tampered_op_in_the_log(busy: Ledger) -> None:
    origin, seq, body = busy.conn.execute(
        "SELECT origin, seq, body FROM ops WHERE kind = 'sale' LIMIT 1"
    ).fetchone()
    signed = busy.bodies.restore(body)
    assert b"SKU" in signed
    busy.conn.execute(
        "UPDATE ops SET body = ? WHERE origin = ? AND seq = ?",
        (busy.bodies.store(signed.replace(b"SKU", b"SKV")), origin, seq),
    )
    problems = busy.verify()
    assert any(origin in p for p in problems)


def test_verify_finds_a_replaced_signature_with_or_without_full(busy: Ledger) -> None:
    """The chain covers each signature, so even the one-signature-per-chain check sees it."""
    origin, seq = busy.conn.execute("SELECT origin, seq FROM ops WHERE seq = 1 LIMIT 1").fetchone()
    assert busy.verify(every_signature=True) == []
    busy.conn.execute(
        "UPDATE ops SET sig = ? WHERE origin = ? AND seq = ?", (bytes(64), origin, seq)
    )
    assert any(origin in p for p in busy.verify())
    assert any(origin in p for p in busy.verify(every_signature=True))


def test_the_store_of_a_database_is_fixed(tmp_path: Any) -> None:
    path = tmp_path / "x.db"
    Ledger(path, "S1").close()
    with pytest.raises(WrongStore, match="S1"):
        Ledger(path, "S2")


def test_a_node_of_another_store_or_with_a_foreign_key_is_refused() -> None:
    led = new_ledger([A])
    with pytest.raises(WrongStore):
        led.add_node(node_record(B, "T1", store="S2"))
    with pytest.raises(RemoteError):
        led.add_node(replace(node_record(B, "T1"), public_key=A.public_key))


def test_an_op_hash_covers_body_and_signature() -> None:
    o = history(A, 1)[0]
    assert o.hash == op_hash(o.body, o.sig)


def test_verify_reads_one_snapshot_while_another_process_writes(
    busy: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`meshpos verify` runs next to a selling daemon: ops committed meanwhile are not half-seen."""
    import meshpos.ledger.store as store

    writer = Ledger(busy.path, STORE)
    a_id = busy.conn.execute("SELECT origin FROM vv ORDER BY origin LIMIT 1").fetchone()[0]
    s = next(x for x in (signer(0), signer(1)) if x.node_id == a_id)
    real_apply = store.apply_changes
    calls = []

    def apply_and_sell(*args: Any, **kw: Any) -> None:
        real_apply(*args, **kw)
        if not calls:
            calls.append(1)
            payload = {"sku": "SKU2", "delta": 5, "reason": "r"}
            writer.append(s, kind="stock.receive", payload=payload, user="u", hlc=2**50)

    monkeypatch.setattr(store, "apply_changes", apply_and_sell)
    assert busy.verify() == []
    monkeypatch.undo()
    assert busy.vv()[a_id] == writer.vv()[a_id]
    assert busy.verify() == []
    writer.close()


# -- authority and schema --------------------------------------------------------------------------


def test_a_bare_ledger_stores_a_terminal_s_card_float_mint_without_effect() -> None:
    """A bare Ledger, with no Terminal around it, judges ops by the rulebook: a card-float mint a
    terminal signed is stored (its chain goes on) but mints nothing, and opens a conflict."""
    mint = op(A, 1, GENESIS, "card.float", {"to": A.node_id, "amount": 500, "total": 500})
    after = op(A, 2, mint.hash, "stock.receive", {"sku": "S", "delta": 3, "reason": "r"})
    led = new_ledger([A])
    assert led.ingest([mint, after]).applied == 2
    assert led.vv() == {A.node_id: 2}
    assert led.views.rights(CARD_FLOAT, A.node_id) == 0
    assert led.views.stock_qty("S") == 3
    [found] = [c for c in led.views.conflicts() if c["kind"] == "unauthorised"]
    assert found["conflict_id"] == f"unauthorised:{A.node_id}:1"
    assert found["detail"]["rule"] == "hq-only" and "not HQ" in found["detail"]["reason"]
    assert led.verify() == []


def test_an_older_database_gets_the_tables_it_lacks_when_it_opens(tmp_path: Path) -> None:
    path = tmp_path / "meshpos.db"
    led = new_ledger([A], path)
    led.ingest(history(A, 3))
    led.close()
    raw = sqlite3.connect(path)
    for table in LOCAL_TABLES:
        raw.execute(f"DROP TABLE {table}")
    raw.commit()
    raw.close()
    led = Ledger(path, STORE)
    names = {r[0] for r in led.conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
    assert set(LOCAL_TABLES) <= names
    assert led.verify() == [] and led.op_count() == 3
    led.escrow_asks.add("C1", 50, 7)
    led.peer_acks.record([("peer", 2, 9)])
    assert led.escrow_asks.take_unsent() == [("C1", 50)] and led.escrow_asks.take_unsent() == []
    assert led.peer_acks.highest() == 2
    led.close()
