"""HQ ingest's fast paths checked against the plain ones they replace: PostgreSQL's array upserts
and binary COPY write exactly what `INSERT ... VALUES` writes; a batch's store days, worked out
once per day, are `StoreTime.day` of every sale; and on PostgreSQL, a store whose locks are held
does not hold back another store's ingest (several HQ processes share one database); writes sent
without waiting still fail their transaction; the vv ingest works out is the stored one; takings
dated by the views' days are takings dated alone; the retired indexes go."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pg import Cluster, pg_cluster_fixture
from test_hq_storage import NODES, OPS, STORE, STORE_KEY, T0, VIEWS, _hq_views

from bench.hq_bench import certified, resigned
from meshpos.core.ops import Signer
from meshpos.domain.storetime import StoreTime
from meshpos.hq.storage import HQStorage, open_storage, takings
from meshpos.hq.storage.database import SQLValue, lock_key, upsert_values
from meshpos.hq.storage.log import RULEBOOK_LOCK
from meshpos.hq.storage.postgres import PostgresDatabase, PostgresTx
from meshpos.hq.storage.views import StoreDays, _sales_rows
from meshpos.ledger.fold import fold

TABLE = "CREATE TABLE {name} (k TEXT PRIMARY KEY, n BIGINT, s TEXT, b BYTEA)"
CONFLICT = "ON CONFLICT (k) DO UPDATE SET n = {name}.n + excluded.n, s = excluded.s, b = excluded.b"


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[Cluster]:
    yield from pg_cluster_fixture()


@pytest.fixture(scope="module")
def scratch(pg_cluster: Cluster) -> Iterator[PostgresDatabase]:
    db = PostgresDatabase(pg_cluster.create_db(), durable=False)
    yield db
    db.close()


texts = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=12
) | st.sampled_from(["NULL", "", '"', "\\", "{a,b}", "a b", "ñ€😀"])
rows_strategy = st.dictionaries(
    texts,
    st.tuples(
        st.none() | st.integers(-(2**60), 2**60) | st.sampled_from([0, -1, 2**61]),
        st.none() | texts,
        st.none() | st.binary(max_size=40),
    ),
    max_size=30,
)


def _contents(db: PostgresDatabase, table: str) -> list[tuple[Any, ...]]:
    return [
        (k, n, s, None if b is None else bytes(b))
        for k, n, s, b in db.query(f"SELECT k, n, s, b FROM {table} ORDER BY k")
    ]


def _fresh_tables(db: PostgresDatabase, *names: str) -> None:
    def fn(tx: Any) -> None:
        for name in names:
            tx.execute(f"DROP TABLE IF EXISTS {name}")
            tx.execute(TABLE.format(name=name))

    db.run(fn)
    db.types = type(db.types)()  # the scratch tables were made again: read their types again


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(rounds=st.lists(rows_strategy, min_size=1, max_size=3))
def test_array_upserts_write_what_values_upserts_write(
    scratch: PostgresDatabase, rounds: list[dict[str, tuple[Any, Any, Any]]]
) -> None:
    """Rounds of upserts (new keys inserted, repeated keys' counters added to) through the
    array form and through VALUES leave the same rows, with NULLs, quotes and bytes intact."""
    _fresh_tables(scratch, "fast", "plain")
    for rows in rounds:
        batch: list[tuple[SQLValue, ...]] = [(k, *v) for k, v in sorted(rows.items())]
        if not batch:
            continue
        scratch.run(lambda tx, b=batch: tx.upsert("fast", b, CONFLICT.format(name="fast")))
        scratch.run(
            lambda tx, b=batch: upsert_values(tx, "plain", b, CONFLICT.format(name="plain"))
        )
    assert _contents(scratch, "fast") == _contents(scratch, "plain")
    assert len(_contents(scratch, "fast")) == len({k for r in rounds for k in r})


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(rows=rows_strategy)
def test_binary_copy_writes_what_inserts_write(
    scratch: PostgresDatabase, rows: dict[str, tuple[Any, Any, Any]]
) -> None:
    _fresh_tables(scratch, "fast", "plain")
    batch: list[tuple[SQLValue, ...]] = [(k, *v) for k, v in sorted(rows.items())]
    scratch.run(lambda tx: tx.insert_new("fast", (), batch))
    scratch.run(lambda tx: tx.executemany("INSERT INTO plain VALUES (?, ?, ?, ?)", batch))
    assert _contents(scratch, "fast") == _contents(scratch, "plain")
    # Named columns in another order land in their columns.
    _fresh_tables(scratch, "fast")
    swapped = [(b, s, n, k) for k, n, s, b in batch]
    scratch.run(lambda tx: tx.insert_new("fast", ("b", "s", "n", "k"), swapped))
    assert _contents(scratch, "fast") == _contents(scratch, "plain")


ZONES = [
    "Asia/Kolkata",
    "Europe/London",
    "America/New_York",
    "America/Santiago",  # clocks change at midnight: days that start at 01:00 or twice
    "Australia/Lord_Howe",  # a 30-minute clock change
    "Pacific/Apia",  # skipped 30 December 2011 entirely
    "America/Havana",
]
LOW, HIGH = 1_293_840_000_000, 1_800_000_000_000  # 2011 to 2027


@settings(max_examples=200, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    instants=st.lists(
        st.integers(LOW, HIGH)
        | st.integers(1_325_073_600_000, 1_325_332_800_000)  # around Apia's skipped day
        | st.integers(1_710_000_000_000, 1_710_200_000_000),  # a March clock change
        min_size=1,
        max_size=60,
    ),
)
def test_store_days_are_the_day_of_each_instant(zone: str, instants: list[int]) -> None:
    """Whatever the zone and the order of the sales, the cached days are `StoreTime.day`."""
    time = StoreTime.named(zone)
    days = StoreDays(time)
    neighbours = [m + d for m in instants for d in (-1, 0, 1, 3_600_000, 86_399_999)]
    assert [days(m) for m in neighbours] == [time.day(m) for m in neighbours]


def test_store_days_across_a_midnight_clock_change() -> None:
    """Santiago's clocks went from 24:00 to 01:00 on 2023-09-03: that day is 23 hours long, and
    every minute of it and of the days around it gets its own day."""
    time = StoreTime.named("America/Santiago")
    start = time.day_start(dt.date(2023, 9, 1))
    instants = range(start, start + 4 * 86_400_000, 60_000)
    days = StoreDays(time)
    assert [days(m) for m in instants] == [time.day(m) for m in instants]
    assert time.day(start + 2 * 86_400_000 + 23 * 3_600_000) == "2023-09-04"


SIGNERS = [Signer.from_seed(f"hq-prop-node-{i}".encode()) for i in (1, 2)]


def _hq(url: str, store: str) -> HQStorage:
    hq = open_storage(url, durable=False)
    hq.enrolment.add_store(store, store, STORE_KEY.public_key, key_at_hq=False, now_ms=T0)
    return hq


def test_a_store_held_under_lock_does_not_hold_back_another(pg_cluster: Cluster) -> None:
    """While one HQ process holds store A's chain and rulebook locks (mid-ingest), another
    ingests store B at once; an ingest of A waits (here: gives up after the lock timeout)."""
    name = f"t_locks_{uuid.uuid4().hex[:8]}"
    url = pg_cluster.create_db(name)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE \"{name}\" SET lock_timeout = '3s'")
    hq = _hq(url, STORE)
    other = "P2"
    try:
        hq.enrolment.add_store(other, other, STORE_KEY.public_key, key_at_hq=False, now_ms=T0)
        wires = [o.wire() for o in OPS]
        with hq.db.transaction() as held:  # "process" A, mid-ingest of store P1
            held.lock(lock_key(STORE, k) for k in {*(o.origin for o in OPS), RULEBOOK_LOCK})
            held.execute("SELECT 1")  # locks are taken with the statement after them
            second = open_storage(url, durable=False)
            try:
                with pytest.raises(psycopg.errors.LockNotAvailable):
                    second.log.ingest(STORE, wires, NODES, T0)
                other_ops = resigned(OPS, SIGNERS, other)
                nodes = certified(NODES, STORE_KEY, other, T0)
                out = second.log.ingest(other, [o.wire() for o in other_ops], nodes, T0)
                assert out.applied == len(other_ops)
            finally:
                second.close()
        assert hq.log.ingest(STORE, wires, NODES, T0).applied == len(OPS)
    finally:
        hq.close()


def test_a_database_written_by_the_plain_statements_takes_the_fast_ones(
    pg_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HQ databases written before the fast paths (row INSERTs, VALUES upserts) are the same
    tables: ingest half a store's ops the old way and the rest the new way, and HQ holds the
    store's views."""

    def plain_insert(
        tx: PostgresTx, table: str, columns: Sequence[str], rows: Sequence[Sequence[SQLValue]]
    ) -> None:
        named = f" ({', '.join(columns)})" if columns else ""
        marks = ", ".join("?" * len(rows[0]))
        tx.executemany(f"INSERT INTO {table}{named} VALUES ({marks})", rows)

    hq = _hq(pg_cluster.create_db(), STORE)
    try:
        hq.enrolment.add_nodes(STORE, [n.cert for n in NODES if n.cert])
        half = len(OPS) // 2
        with monkeypatch.context() as old:
            old.setattr(PostgresTx, "insert_new", plain_insert)
            old.setattr(PostgresTx, "upsert", upsert_values)
            assert hq.log.ingest(STORE, [o.wire() for o in OPS[:half]], (), T0).applied == half
        rest = hq.log.ingest(STORE, [o.wire() for o in OPS], (), T0)
        assert (rest.applied, rest.duplicates) == (len(OPS) - half, half)
        assert _hq_views(hq) == VIEWS
    finally:
        hq.close()


@settings(max_examples=30, deadline=None)
@given(zone=st.sampled_from(ZONES), cut=st.integers(0, len(OPS)))
def test_takings_dated_by_the_views_days_are_takings_dated_alone(zone: str, cut: int) -> None:
    """Ingest dates each sale once, for the views, and tallies takings by those days: the same
    sums as dating the tenders' sales again (`gather`, what a backfill does)."""
    days = StoreTime.named(zone)
    for part in (OPS[:cut], OPS[cut:]):
        ch = fold(part)
        _, _, dated = _sales_rows(STORE, ch, days)
        assert takings.tally(ch, dated) == takings.gather(ch, days)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_vv_an_ingest_answers_is_the_stored_one(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """Ingest answers the store's vv worked out from the heads it read under the store's lock:
    the one stored afterwards, whether a batch holds every origin, one of them, only ops HQ
    holds, or ops past a gap."""
    pg = request.getfixturevalue("pg_cluster") if backend == "postgresql" else None
    hq = _hq(pg.create_db() if pg is not None else ":memory:", STORE)
    try:
        hq.enrolment.add_nodes(STORE, [n.cert for n in NODES if n.cert])
        first = [o for o in OPS if o.origin == OPS[0].origin]
        for batch in (first[:3], OPS[:10], first[:5], OPS[12:], OPS, []):
            out = hq.log.ingest(STORE, [o.wire() for o in batch], (), T0)
            assert out.vv == hq.log.vv(STORE)
        assert out.vv == VIEWS["vv"]
    finally:
        hq.close()


def test_a_write_refused_in_the_pipeline_undoes_its_transaction(
    scratch: PostgresDatabase,
) -> None:
    """Writes go out without waiting for their answers; one the server refuses still fails its
    transaction (at the next read or the commit), which leaves nothing, and the connection
    serves the next transaction."""
    _fresh_tables(scratch, "fast")
    row: tuple[SQLValue, ...] = ("k", 1, "s", b"b")
    scratch.run(lambda tx: tx.insert_new("fast", (), [row]))

    def twice(tx: Any) -> None:
        tx.upsert("fast", [("other", 5, None, None)], CONFLICT.format(name="fast"))
        tx.insert_new("fast", (), [row])  # the key is there: refused by the server

    with pytest.raises(psycopg.errors.UniqueViolation):
        scratch.run(twice)

    def then_read(tx: Any) -> list[Any]:
        tx.insert_new("fast", (), [row])
        return tx.execute("SELECT 1")

    with pytest.raises(psycopg.errors.UniqueViolation):
        scratch.run(then_read)
    assert _contents(scratch, "fast") == [row]
    scratch.run(lambda tx: tx.upsert("fast", [("k", 2, "t", None)], CONFLICT.format(name="fast")))
    assert _contents(scratch, "fast") == [("k", 3, "t", None)]


def _indexes(hq: HQStorage) -> set[str]:
    if hq.db.backend == "postgresql":
        return {str(n) for (n,) in hq.db.query("SELECT indexname FROM pg_indexes")}
    return {str(n) for (n,) in hq.db.query("SELECT name FROM sqlite_master WHERE type='index'")}


def _old_indexes(tx: Any) -> None:
    """The indexes as the schema before this one made them."""
    tx.execute("DROP INDEX rights_log_unheld")
    tx.execute("CREATE INDEX sales_customer ON sales (customer_id)")
    tx.execute("CREATE INDEX rights_log_op ON rights_log (store, origin, seq)")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_database_with_the_retired_indexes_opens_without_them(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """No HQ reader looks sales up by customer, nor deletes `rights_log` rows by op but those
    without authority, so HQ no longer writes those indexes per sale: a database made before
    (with them, as the old schema made them) loses them when HQ opens it (the narrower
    `rights_log_unheld` made instead), and keeps its ops and views."""
    pg = request.getfixturevalue("pg_cluster") if backend == "postgresql" else None
    url = pg.create_db() if pg is not None else str(tmp_path / "hq.db")
    hq = _hq(url, STORE)
    half = len(OPS) // 2
    try:
        hq.enrolment.add_nodes(STORE, [n.cert for n in NODES if n.cert])
        hq.log.ingest(STORE, [o.wire() for o in OPS[:half]], (), T0)
        hq.db.run(_old_indexes)
        assert {"sales_customer", "rights_log_op"} <= _indexes(hq)
    finally:
        hq.close()
    hq = open_storage(url, durable=False)
    try:
        assert not {"sales_customer", "rights_log_op"} & _indexes(hq)
        assert "rights_log_unheld" in _indexes(hq)
        rest = hq.log.ingest(STORE, [o.wire() for o in OPS], (), T0)
        assert (rest.applied, rest.duplicates) == (len(OPS) - half, half)
        assert _hq_views(hq) == VIEWS
    finally:
        hq.close()
