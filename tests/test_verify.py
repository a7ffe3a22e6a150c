"""The log check without a refold (`Ledger.verify_log`, what a backup proves before sealing) against
the full verify, and the every-signature check in worker processes against the one in process."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_helpers import all_ops, catalog_rows, make_replicas, new_ledger, rebuilt, signer

from meshpos.core.ops import make_op, op_hash
from meshpos.ledger.schema import VIEW_TABLES
from meshpos.ledger.store import Ledger


@pytest.fixture(scope="module")
def sound(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sound two-origin ledger file on disk (copied before each tampering)."""
    a, b = make_replicas(2)
    a.terminal.import_catalog(catalog_rows(4, stock=3))
    b.terminal.ingest(all_ops(a.ledger))
    for i in range(6):
        a.terminal.sell([(f"SKU{i % 4}", 1)])
        b.terminal.sell([(f"SKU{(i + 1) % 4}", 1)], allow_oversell=True)
    path = tmp_path_factory.mktemp("verify") / "sound.db"
    led = new_ledger([a.signer, b.signer], path)
    led.ingest(all_ops(a.ledger) + all_ops(b.ledger))
    assert led.verify() == [] and led.verify_log() == []
    led.checkpoint()
    led.close()
    return path


def opened(src: Path, dst: Path) -> Ledger:
    shutil.copyfile(src, dst)
    return Ledger(dst, "S1", durable=False)


def flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at % len(out)] ^= 0x01
    return bytes(out)


def tamper(led: Ledger, how: str, pick: int, at: int) -> None:
    """Change the stored log as a thief or a bad disk would, without any node's key."""
    rows = led.conn.execute(
        "SELECT origin, seq, body, sig FROM ops ORDER BY origin, seq"
    ).fetchall()
    origin, seq, body, sig = rows[pick % len(rows)]
    where = (origin, seq)
    if how == "body":
        led.conn.execute(
            "UPDATE ops SET body = ? WHERE origin = ? AND seq = ?", (flip(body, at), *where)
        )
    elif how == "sig":
        led.conn.execute(
            "UPDATE ops SET sig = ? WHERE origin = ? AND seq = ?", (flip(sig, at), *where)
        )
    elif how == "delete":
        led.conn.execute("DELETE FROM ops WHERE origin = ? AND seq = ?", where)
    elif how == "swap":
        o2, s2, b2, g2 = rows[(pick + 1 + at % (len(rows) - 1)) % len(rows)]
        led.conn.execute(
            "UPDATE ops SET body = ?, sig = ? WHERE origin = ? AND seq = ?", (b2, g2, *where)
        )
        led.conn.execute(
            "UPDATE ops SET body = ?, sig = ? WHERE origin = ? AND seq = ?", (body, sig, o2, s2)
        )
    elif how == "vv":
        led.conn.execute("UPDATE vv SET seq = seq + ? WHERE origin = ?", (1 + at % 3, origin))
    elif how == "head":
        led.conn.execute("UPDATE vv SET head = ? WHERE origin = ?", (flip(bytes(32), at), origin))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    how=st.sampled_from(["none", "body", "sig", "delete", "swap", "vv", "head"]),
    pick=st.integers(0, 10_000),
    at=st.integers(0, 10_000),
)
def test_the_log_check_finds_what_the_full_verify_finds_in_the_log(
    sound: Path, tmp_path: Path, how: str, pick: int, at: int
) -> None:
    led = opened(sound, tmp_path / f"t-{how}-{pick}-{at}.db")
    try:
        tamper(led, how, pick, at)
        fast, slow = led.verify_log(), led.verify()
        full = led.verify(every_signature=True, workers=0)
    finally:
        led.close()
    assert bool(fast) == bool(slow) == bool(full) == (how != "none"), (fast, slow)


def test_a_consistently_truncated_log_passes_the_log_check_and_fails_the_views(
    sound: Path, tmp_path: Path
) -> None:
    """The one thing the log check leaves to restore: views that are not the fold of the log."""
    led = opened(sound, tmp_path / "short.db")
    try:
        origin, seq = led.conn.execute(
            "SELECT origin, MAX(seq) FROM ops GROUP BY origin"
        ).fetchone()
        before = led.get(origin, seq - 1)
        assert before is not None
        led.conn.execute("DELETE FROM ops WHERE origin = ? AND seq = ?", (origin, seq))
        led.conn.execute(
            "UPDATE vv SET seq = ?, head = ? WHERE origin = ?", (seq - 1, before.hash, origin)
        )
        assert led.verify_log() == []
        slow = led.verify()
        assert slow and all(p.split(":")[0] in VIEW_TABLES for p in slow), slow
    finally:
        led.close()


@pytest.fixture
def badly_signed(tmp_path: Path) -> Iterator[tuple[Ledger, str]]:
    """A chain whose third op carries a signature its origin got wrong: the chain and the last
    signature hold, so only the every-signature check can see it."""
    s = signer(0)
    led = new_ledger([s], tmp_path / "bad-sig.db")
    prev, ops = bytes(32), []
    for seq in range(1, 6):
        op = make_op(
            s,
            store="S1",
            seq=seq,
            hlc=1000 + seq,
            user="u",
            kind="note",
            payload={"n": seq},
            prev=prev,
        )
        if seq == 3:
            sig = bytes(64)
            op = rebuilt(op, sig=sig, hash=op_hash(op.body, sig))
        ops.append(op)
        prev = op.hash
    led.ingest(ops)
    try:
        yield led, f"{s.node_id}:3"
    finally:
        led.close()


def test_every_signature_is_checked_alike_in_process_and_in_workers(
    badly_signed: tuple[Ledger, str],
) -> None:
    led, bad = badly_signed
    assert led.verify() == [] and led.verify_log() == []
    for run in (
        lambda: led.verify(every_signature=True, workers=0),
        lambda: led.verify(every_signature=True, workers=2),
        lambda: led.verify_log(every_signature=True, workers=0),
        lambda: led.verify_log(every_signature=True, workers=2),
    ):
        problems = run()
        assert len(problems) == 1 and f"op {bad} has a signature" in problems[0], problems


def test_workers_split_a_long_chain_and_find_a_bad_signature_in_any_chunk(
    badly_signed: tuple[Ledger, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("meshpos.ledger.store.SIGNATURE_CHUNK", 2)
    led, bad = badly_signed
    assert [p.split(" has")[0] for p in led.verify(every_signature=True, workers=2)] == [
        f"op {bad}"
    ]


def test_verify_and_rebuild_report_their_progress_op_by_batch(sound: Path, tmp_path: Path) -> None:
    """What a progress bar is moved by: the ops refolded so far, after each batch, up to all."""
    led = opened(sound, tmp_path / "progress.db")
    try:
        total = led.op_count()
        for walk in (led.verify, led.rebuild):
            seen: list[int] = []
            walk(batch=4, progress=seen.append)  # type: ignore[operator]
            assert seen == sorted(set(seen)) and seen[-1] == total and len(seen) > total // 4
        assert led.verify() == []
    finally:
        led.close()
