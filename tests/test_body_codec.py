"""Op bodies stored compressed (meshpos/ledger/body_codec.py), with the shipped dictionary and then
the database's own: every read gives back the signed bytes exactly, rows of a database written
before (plain bodies) keep reading, verifying and syncing, and a damaged or unknown row is an error
that names the op, not a crash or a misread."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_helpers import STORE, all_ops, catalog_rows, make_replicas, new_ledger, signer

from meshpos.core.errors import EncodingError
from meshpos.core.ops import GENESIS, make_op
from meshpos.ledger import body_codec
from meshpos.ledger.body_codec import BodyStore
from meshpos.ledger.store import Ledger

SIGNERS = [signer(0), signer(1)]


def _busy(path: Path | str = ":memory:", sales: int = 1) -> Ledger:
    """A ledger holding a catalogue, a customer and sales of two terminals."""
    a, b = make_replicas(2)
    a.terminal.import_catalog(catalog_rows(3, stock=10))
    cid = a.terminal.add_customer({"name": "Asha", "phone": "9800000001"})
    b.terminal.ingest(all_ops(a.ledger))
    for i in range(sales):
        a.terminal.sell([("SKU0", 1), ("SKU1", 1 + i % 3)], customer=cid, allow_oversell=True)
        b.terminal.sell([(f"SKU{i % 3}", 1)], allow_oversell=True)
    led = new_ledger(SIGNERS, path)
    ops = all_ops(a.ledger) + all_ops(b.ledger)
    for i in range(0, len(ops), 100):  # as a sync would: some batches after others
        led.ingest(ops[i : i + 100])
    return led


def _stored(led: Ledger) -> dict[tuple[str, int], bytes]:
    return {(o, q): bytes(b) for o, q, b in led.conn.execute("SELECT origin, seq, body FROM ops")}


def _signed_bodies(led: Ledger) -> dict[tuple[str, int], bytes]:
    return {(o, q): b for o, q, b, _ in led.raw_since({})}


bodies = st.one_of(
    st.binary(max_size=2000).map(lambda b: b"\x99" + b),  # anything a plain row could hold
    st.dictionaries(
        st.text(max_size=20), st.one_of(st.integers(0, 2**40), st.text(max_size=80))
    ).map(
        lambda payload: (
            make_op(
                SIGNERS[0],
                store=STORE,
                seq=1,
                hlc=1,
                user="cashier",
                kind="sale",
                payload=payload,
                prev=GENESIS,
            ).body
        )
    ),
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    """A database past `TRAIN_AFTER` ops (made small here), so with a dictionary of its own."""
    mp = pytest.MonkeyPatch()
    mp.setattr(body_codec, "TRAIN_AFTER", 300)
    try:
        led = _busy(tmp_path_factory.mktemp("trained") / "meshpos.db", sales=200)
    finally:
        mp.undo()
    return led


@settings(max_examples=300, deadline=None)
@given(bodies)
def test_every_body_reads_back_exactly_as_signed(trained: Ledger, body: bytes) -> None:
    for bodies in (BodyStore(new_ledger([]).conn), trained.bodies):
        kept = bodies.store(body)
        assert bodies.restore(kept) == body
        assert len(kept) <= len(body), "a row is never larger than the body it holds"


def test_a_database_trains_its_own_dictionary_once_and_keeps_reading_older_rows(
    trained: Ledger,
) -> None:
    (ident,) = trained.conn.execute("SELECT id FROM body_dicts").fetchone()
    rows = trained.conn.execute("SELECT kind, body FROM ops ORDER BY rowid").fetchall()
    firsts = [body[0] for _, body in rows]
    cut = firsts.index(body_codec.TRAINED)
    assert set(firsts[:cut]) <= {body_codec.SHIPPED, 0x99}
    assert set(firsts[cut:]) == {body_codec.TRAINED}
    assert all(body[1:5] == ident.to_bytes(4, "big") for _, body in rows[cut:])
    ops = {op.id: op for op in all_ops(trained)}
    late = [op for op in list(ops.values())[-50:] if op.kind == "sale"]
    own = sum(len(trained.bodies.store(op.body)) for op in late)
    shipped = sum(len(BodyStore(new_ledger([]).conn).store(op.body)) for op in late)
    assert own < shipped * 0.8, (own, shipped)
    assert trained.verify(every_signature=True) == []
    # Another process on the file (a fresh connection, nothing cached) reads every row.
    body_codec._dictionaries.clear()
    body_codec._threads.__dict__.clear()
    again = Ledger(trained.path, STORE)
    assert _signed_bodies(again) == {k: op.body for k, op in ops.items()}
    assert again.verify() == []


def test_a_sale_is_stored_in_under_half_its_bytes_and_restored_on_every_read() -> None:
    led = _busy()
    ops = {op.id: op for op in all_ops(led)}
    sales = [op for op in ops.values() if op.kind == "sale"]
    stored = _stored(led)
    for op in sales:
        assert stored[op.id][0] == body_codec.SHIPPED
        assert len(stored[op.id]) < len(op.body) / 2
    assert _signed_bodies(led) == {k: op.body for k, op in ops.items()}
    for op in sales:
        got = led.get(*op.id)
        assert got is not None and got.body == op.body and got.hash == op.hash
    assert {op.id for op in led.tail(100)} == set(ops)
    window = led.hlc_window(sales[0].origin, 0, 2**62)
    assert window is not None and all(
        body == ops[(sales[0].origin, window.first_seq + i)].body
        for i, (body, _) in enumerate(window.raw)
    )
    assert led.verify(every_signature=True) == []


def test_a_body_that_would_not_shrink_is_kept_plain() -> None:
    bodies = BodyStore(new_ledger([]).conn)
    tiny = b"\x99\x01"
    assert bodies.store(tiny) == tiny
    noise = b"\x99" + bytes(range(256)) * 2
    assert bodies.restore(bodies.store(noise)) == noise


def _as_old_main(path: Path) -> dict[tuple[str, int], bytes]:
    """The database at `path` as meshpos wrote it before this codec: every body plain."""
    led = _busy(path)
    signed = _signed_bodies(led)
    with led.write():
        led.conn.executemany(
            "UPDATE ops SET body = ? WHERE origin = ? AND seq = ?",
            [(body, o, q) for (o, q), body in signed.items()],
        )
    led.close()
    return signed


def test_a_database_written_before_the_codec_opens_verifies_and_syncs(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    signed = _as_old_main(path)
    led = Ledger(path, STORE)
    assert _stored(led) == signed, "opening rewrites nothing"
    assert led.verify(every_signature=True) == []
    assert _signed_bodies(led) == signed
    # New ops are stored compressed beside the old plain rows; both read and sync.
    c = make_replicas(2)[1]
    c.terminal.ingest(all_ops(led))
    c.terminal.sell([("SKU0", 1)])
    led.ingest(all_ops(c.ledger))
    stored = _stored(led)
    assert {body[0] for body in stored.values()} == {0x99, body_codec.SHIPPED}
    assert led.verify() == []
    peer = new_ledger(SIGNERS)
    peer.ingest(led.ops_since({}))
    assert _signed_bodies(peer) == _signed_bodies(led)
    assert peer.verify() == []


def _damage(led: Ledger, kind: str, data: bytes) -> tuple[str, int]:
    origin, seq = led.conn.execute(
        "SELECT origin, seq FROM ops WHERE kind = ? ORDER BY seq LIMIT 1", (kind,)
    ).fetchone()
    led.conn.execute("UPDATE ops SET body = ? WHERE origin = ? AND seq = ?", (data, origin, seq))
    return str(origin), int(seq)


def test_a_damaged_compressed_row_is_named_by_verify_and_refused_on_read() -> None:
    led = _busy()
    (stored,) = led.conn.execute("SELECT body FROM ops WHERE kind = 'sale' LIMIT 1").fetchone()
    origin, seq = _damage(led, "sale", bytes(stored[: len(stored) // 2]))
    with pytest.raises(EncodingError, match=f"op {origin}:{seq} is damaged in this database"):
        led.get(origin, seq)
    with pytest.raises(EncodingError, match=f"op {origin}:{seq} is damaged"):
        led.raw_since({})
    problems = led.verify()
    assert any(f"op {origin}:{seq} is damaged" in p for p in problems), problems


def test_a_compressed_row_altered_inside_breaks_the_chain() -> None:
    """Bytes changed in a compressed row that still decompresses: the hash chain catches it."""
    led = _busy()
    origin, seq = led.conn.execute(
        "SELECT origin, seq FROM ops WHERE kind = 'sale' LIMIT 1"
    ).fetchone()
    op = led.get(origin, seq)
    assert op is not None
    altered = led.bodies.store(op.body.replace(b"SKU", b"SKV"))
    assert led.bodies.restore(altered) != op.body
    _damage(led, "sale", altered)
    problems = led.verify()
    assert any(origin in p for p in problems), problems


def test_a_row_of_an_unknown_dictionary_asks_for_an_upgrade() -> None:
    led = _busy()
    (stored,) = led.conn.execute("SELECT body FROM ops WHERE kind = 'sale' LIMIT 1").fetchone()
    origin, seq = _damage(led, "sale", bytes((0x7F,)) + bytes(stored[1:]))
    with pytest.raises(EncodingError, match=r"body dictionary 127.*upgrade meshpos"):
        led.get(origin, seq)
    assert any("upgrade meshpos" in p for p in led.verify())


def test_a_missing_own_dictionary_is_named(trained: Ledger, tmp_path: Path) -> None:
    copy = tmp_path / "copy.db"
    trained.copy_to(copy)
    body_codec._dictionaries.clear()
    body_codec._threads.__dict__.clear()
    led = Ledger(copy, STORE)
    led.conn.execute("DELETE FROM body_dicts")
    origin, seq = led.conn.execute(
        "SELECT origin, seq FROM ops WHERE body >= x'40' AND body < x'41' LIMIT 1"
    ).fetchone()
    with pytest.raises(EncodingError, match=r"body dictionary [0-9a-f]{8} is missing or damaged"):
        led.get(origin, seq)
    assert any("is missing or damaged" in p for p in led.verify())


def test_a_second_process_on_the_file_takes_up_the_dictionary_trained_by_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(body_codec, "TRAIN_AFTER", 300)
    path = tmp_path / "shared.db"
    a, b = make_replicas(2)
    a.terminal.import_catalog(catalog_rows(3, stock=10))
    b.terminal.ingest(all_ops(a.ledger))
    for i in range(200):
        if i < 150:
            a.terminal.sell([("SKU0", 1)], allow_oversell=True)
        b.terminal.sell([("SKU1", 1)], allow_oversell=True)
    ops_a, ops_b = all_ops(a.ledger), [op for op in all_ops(b.ledger) if op.origin == b.node_id]
    first, second = new_ledger(SIGNERS, path), Ledger(path, STORE)
    second.ingest(ops_b[:10])  # stores with the shipped dictionary, and remembers so
    first.ingest(ops_a)
    first.ingest(ops_b[10:150])  # past TRAIN_AFTER: trains
    assert first.conn.execute("SELECT COUNT(*) FROM body_dicts").fetchone()[0] == 1
    second.ingest(ops_b[150:175])  # still the shipped one; then takes up the trained one
    second.ingest(ops_b[175:])
    last = second.conn.execute("SELECT body FROM ops ORDER BY rowid DESC LIMIT 1").fetchone()[0]
    assert last[0] == body_codec.TRAINED
    assert second.conn.execute("SELECT COUNT(*) FROM body_dicts").fetchone()[0] == 1
    assert first.verify() == [] and second.verify() == []


def test_when_there_is_too_little_to_train_on_the_shipped_dictionary_serves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(body_codec, "TRAIN_AFTER", 5)
    monkeypatch.setattr(body_codec, "TRAIN_ON", 5)
    led = _busy()
    assert led.conn.execute("SELECT COUNT(*) FROM body_dicts").fetchone()[0] == 0
    assert {row[0][0] for row in led.conn.execute("SELECT body FROM ops")} <= {
        body_codec.SHIPPED,
        0x99,
    }
    assert led.verify() == []
