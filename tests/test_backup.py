"""Backups: consistent snapshots during a stream of sales, sealing and its verification, rotation,
off-site copies, the daemon's schedule, and restore followed by catch-up from a peer."""

from __future__ import annotations

import os
import shutil
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import Node
from ledger_helpers import node_record, signer

from meshpos.core.errors import ConfigError, LocalError
from meshpos.ledger.schema import VIEW_TABLES
from meshpos.ledger.store import Ledger
from meshpos.service.backup.create import BACKUP_CHECK, check_database, create_backup
from meshpos.service.backup.format import CorruptBackup, read_header, seal_file
from meshpos.service.backup.keys import BACKUP_KEY_FILE, node_seal_keys
from meshpos.service.backup.restore import restore_backup, verify_backup
from meshpos.service.backup.schedule import _SCHEDULES, maybe_backup
from meshpos.service.backup.targets import BackupSettings, DirectoryTarget, list_backups
from meshpos.service.config import load_config
from meshpos.service.encryption import DB_KEY_FILE, encrypt_node
from meshpos.service.terminal import Terminal

NOW = 1_780_000_000_000


def views(t: Terminal) -> dict[str, list[tuple[object, ...]]]:
    return {
        table: sorted(t.ledger.conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
        for table in VIEW_TABLES
    }


def backup_once(node: Node, now_ms: int = NOW, **kw: object) -> Path:
    t = Terminal.open(node.path)
    try:
        return create_backup(t.cfg, t.ledger, now_ms=now_ms, **kw).path  # type: ignore[arg-type]
    finally:
        t.close()


def flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


def test_backup_during_a_stream_of_sales_restores_to_a_verified_database(
    node: Node, make_node: object, tmp_path: Path
) -> None:
    encrypt_node(load_config(node.path))
    stop = threading.Event()
    sold: list[str] = []
    errors: list[BaseException] = []

    def till() -> None:
        t = Terminal.open(node.path)
        try:
            while not stop.is_set():
                sold.append(t.sell([("TSH-NAV-M", 1)], allow_oversell=True).sale_id)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            t.close()

    worker = threading.Thread(target=till)
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while len(sold) < 5 and time.monotonic() < deadline:
            time.sleep(0.005)
        t = Terminal.open(node.path)
        try:
            results = []
            before = len(sold)
            # Back up until sales have demonstrably committed while backups were being taken.
            while len(results) < 3 or (len(sold) - before < 3 and time.monotonic() < deadline):
                results.append(create_backup(t.cfg, t.ledger, now_ms=NOW + len(results)))
        finally:
            t.close()
        during = len(sold)
        assert during - before >= 3, "no sale committed while the backups ran"
        deadline = time.monotonic() + 20  # its own wait: backups under load may use the first
        while len(sold) < during + 5 and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        stop.set()
        worker.join(30)
    assert not errors, errors
    assert len(sold) >= during + 5, "sales did not go on while the backups ran"
    newest = results[-1]
    assert newest.ops >= 512 + 5
    raw = newest.path.read_bytes()
    assert b"Crew T-shirt" not in raw and b"TSH-NAV-M" not in raw

    # A replacement terminal (new identity, its own key) restores with the old terminal's key.
    fresh = make_node("T5")  # type: ignore[operator]
    encrypt_node(load_config(fresh.path))
    cfg = load_config(fresh.path)
    with pytest.raises(ConfigError, match=r"give the db\.key of terminal T1 with --key-file"):
        restore_backup(cfg, newest.path)
    r = restore_backup(cfg, newest.path, key_file=node.path / DB_KEY_FILE)
    assert r.ops == newest.ops and not r.same_identity
    t = Terminal.open(fresh.path)
    try:
        assert t.ledger.verify(every_signature=True) == []
        assert t.ledger.op_count() == newest.ops
        restored_sales = t.query("SELECT COUNT(*) AS n FROM sales")[0]["n"]
        assert 5 <= restored_sales <= len(sold)
    finally:
        t.close()


def test_a_flipped_byte_is_detected_and_restore_changes_nothing(node: Node) -> None:
    node.sell("TSH-NAV-M")
    path = backup_once(node)
    assert node.ok("backup", "verify", str(path)).out
    before = node.snapshot()
    for at in (40, path.stat().st_size // 2, path.stat().st_size - 3):
        bad = path.with_name(f"bad-{at}.mpbak")
        bad.write_bytes(path.read_bytes())
        flip(bad, at)
        with pytest.raises((CorruptBackup, ConfigError)):
            verify_backup(bad, cfg=load_config(node.path))
        err = node.fail("backup", "verify", str(bad))
        assert "fails authentication" in err or "damaged" in err, err
        err = node.fail("restore", str(bad), "--force")
        assert "fails authentication" in err or "damaged" in err, err
    truncated = path.with_name("short.mpbak")
    truncated.write_bytes(path.read_bytes()[:-100])
    assert "truncated" in node.fail("backup", "verify", str(truncated))
    assert node.snapshot() == before


def seal_as_is(t: Terminal, out: Path) -> Path:
    """This database sealed as a backup as it stands (what a backup taken before the damage was
    noticed, or by an older meshpos, would hold)."""
    t.ledger.checkpoint()
    fields = {"store": "S1", "node_id": t.cfg.node_id, "name": "T1", "created_ms": NOW}
    seal_file(t.cfg.db_path, out, node_seal_keys(t.cfg, None), {**fields, "ops": 0, "vv": {}})
    return out


LOG_DAMAGE = {
    "a tampered op": (
        "UPDATE ops SET body = CAST(REPLACE(CAST(body AS TEXT), 'TSH-NAV-M', 'TSH-NAV-L') AS BLOB) "
        "WHERE kind = 'sale'",
        "does not follow the op before it",
    ),
    "a broken chain": (
        "DELETE FROM ops WHERE seq = (SELECT MIN(seq) FROM ops WHERE kind = 'sale')",
        "lacks op",
    ),
}


@pytest.mark.parametrize("damage", sorted(LOG_DAMAGE))
def test_a_backup_of_a_damaged_log_is_refused_when_taken_and_when_restored(
    node: Node, damage: str
) -> None:
    node.sell("TSH-NAV-M")
    node.sell("TSH-NAV-M")
    good = backup_once(node, NOW)
    cfg = load_config(node.path)
    sql, says = LOG_DAMAGE[damage]
    t = Terminal.open(node.path)
    try:
        assert t.ledger.conn.execute(sql).rowcount >= 1
        with pytest.raises(LocalError, match="snapshot fails its check, so no backup was kept"):
            create_backup(cfg, t.ledger, now_ms=NOW + 1)
        assert says in node.fail("backup")
        assert list_backups(cfg.dir / "backups") == [good]
        bad = seal_as_is(t, cfg.dir / "damaged.mpbak")
    finally:
        t.close()
    check = verify_backup(bad, cfg=cfg)
    assert check.problems and not check.log_sound
    r = node.run("backup", "verify", str(bad))
    assert r.code == 1 and "fails verify" in r.err and "log is sound" not in r.err
    before = node.snapshot()
    assert "fails verify" in node.fail("restore", str(bad), "--force")
    assert node.snapshot() == before


def test_a_backup_checks_the_log_and_restore_rebuilds_views_that_are_not_its_fold(
    node: Node,
) -> None:
    """Views are a fold of the log: a backup of a database whose views were damaged is kept
    (it says what it checked), and restoring it refolds them from the log and verifies."""
    node.sell("TSH-NAV-M")
    cfg = load_config(node.path)
    t = Terminal.open(node.path)
    try:
        want = views(t)
        t.ledger.conn.execute("UPDATE stock SET qty = 999 WHERE sku = 'TSH-NAV-M'")
        r = create_backup(cfg, t.ledger, now_ms=NOW)
        assert (
            r.checked == BACKUP_CHECK and "views are refolded and verified at restore" in r.checked
        )
    finally:
        t.close()
    assert node.json("backup")["checked"] == BACKUP_CHECK
    seen: list[int] = []
    check = verify_backup(r.path, cfg=cfg, progress=seen.append)
    assert check.log_sound and any(p.startswith("stock:") for p in check.problems)
    assert seen and seen[-1] == check.ops == read_header(r.path).ops  # the bar's length
    err = node.run("backup", "verify", str(r.path)).err
    assert "fails verify" in err and "`meshpos restore` rebuilds the views" in err
    seen.clear()
    result = restore_backup(cfg, r.path, force=True, progress=seen.append)
    assert result.views_rebuilt and seen.count(result.ops) == 3  # verify, rebuild, verify again
    restored = node.json("restore", str(r.path), "--force")
    assert restored["views"] == "rebuilt from the log"
    t = Terminal.open(node.path)
    try:
        assert views(t) == want and t.ledger.verify() == []
    finally:
        t.close()


def test_rotation_keeps_n_here_and_off_site(node: Node, tmp_path: Path) -> None:
    usb = tmp_path / "usb"
    usb.mkdir()
    (usb / "S1-T2-20200101T000000000Z.mpbak").write_bytes(b"another terminal's")
    made = [
        backup_once(node, NOW + i * 1000, target=DirectoryTarget(usb), keep=3) for i in range(5)
    ]
    local = list_backups(node.path / "backups")
    assert local == made[-3:]
    assert [p.name for p in list_backups(usb, "S1-T1-")] == [p.name for p in made[-3:]]
    assert (usb / "S1-T2-20200101T000000000Z.mpbak").exists()
    assert (node.path / BACKUP_KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert {p.stat().st_mode & 0o777 for p in [*local, *list_backups(usb, "S1-T1-")]} == {0o600}
    assert read_header(local[-1]).key_source == "backup.key"
    # The CLI: --to an unmounted stick keeps the local backup and says what failed.
    r = node.run("backup", "--to", str(tmp_path / "not-mounted"), "--keep", "3")
    assert r.code == 1 and "kept locally" in r.err and "is the USB stick mounted" in r.err
    assert len(list_backups(node.path / "backups")) == 3


def test_restore_of_an_old_backup_then_catch_up_from_a_peer(pair: tuple[Node, Node]) -> None:
    t1, t2 = pair
    encrypt_node(load_config(t1.path))
    t1.sell("TSH-NAV-M")
    old = backup_once(t1)
    t1.sell("TSH-NAV-Mx2")
    t1.sell("JNS-BLA-L")
    bundle = t1.path.parent / "t1-to-t2.bundle"
    t1.ok("sync", "export", str(bundle))
    t2.ok("sync", "import", str(bundle))
    # T1's disk dies; its keys and config survive (kept apart), the database does not.
    for f in t1.path.glob("meshpos.db*"):
        f.unlink()
    out = t1.ok("restore", str(old)).out
    assert "BEFORE selling" in out
    assert t1.ok("verify").out.startswith("ok:")
    assert t1.vv() != t2.vv()
    since = t1.path.parent / "t1.vv"
    since.write_text(t1.ok("sync", "vv", "--json").out)
    catch_up = t1.path.parent / "t2-to-t1.bundle"
    t2.ok("sync", "export", str(catch_up), "--since", str(since))
    t1.ok("sync", "import", str(catch_up))
    assert t1.vv() == t2.vv()
    a, b = Terminal.open(t1.path), Terminal.open(t2.path)
    try:
        assert views(a) == views(b)
    finally:
        a.close()
        b.close()
    assert t1.ok("verify").out.startswith("ok:")


def test_restore_refuses_to_drop_newer_own_ops_without_force(node: Node) -> None:
    node.sell("TSH-NAV-M")
    old = backup_once(node)
    node.sell("TSH-NAV-M")
    err = node.fail("restore", str(old))
    assert "newer than the backup" in err and "--force" in err
    info = node.json("restore", str(old), "--force")
    assert Path(info["previous_database"]).joinpath("meshpos.db").exists()


def test_restore_refuses_another_stores_backup(node: Node, make_node: object) -> None:
    other = make_node("T1", store="S2")  # type: ignore[operator]
    path = backup_once(other)
    assert "backup of store 'S2'" in node.fail("restore", str(path))


def test_the_daemon_schedule_backs_up_in_a_child_process_when_due(node: Node) -> None:
    cfg_text = (node.path / "meshpos.toml").read_text()
    (node.path / "meshpos.toml").write_text(cfg_text + "\n[backup]\nevery_minutes = 1\nkeep = 2\n")
    encrypt_node(load_config(node.path))
    t = Terminal.open(node.path)
    got: list[tuple[object, object]] = []
    try:
        _SCHEDULES.pop(t.cfg.dir, None)
        assert not maybe_backup(t, NOW)  # the first one waits a period after start
        assert maybe_backup(t, NOW + 61_000, on_done=lambda r, e: got.append((r, e)))
        assert not maybe_backup(t, NOW + 62_000)  # running, and not due again yet
        deadline = time.monotonic() + 60
        while not got and time.monotonic() < deadline:
            maybe_backup(t, NOW + 63_000)
            time.sleep(0.02)
        assert got, "the scheduled backup did not finish"
        result, error = got[0]
        assert error is None and isinstance(result, dict)
        assert [str(p) for p in list_backups(t.cfg.dir / "backups")] == [result["path"]]
        assert read_header(Path(result["path"])).key_source == "db.key"
        assert not maybe_backup(t, NOW + 100_000)
        assert maybe_backup(t, NOW + 122_000)  # due again a period after the last one started
        deadline = time.monotonic() + 60
        while _SCHEDULES[t.cfg.dir].proc is not None and time.monotonic() < deadline:
            maybe_backup(t, NOW + 123_000)
            time.sleep(0.02)
    finally:
        _SCHEDULES.pop(t.cfg.dir, None)
        t.close()


def test_backup_settings_are_checked(node: Node) -> None:
    path = node.path / "meshpos.toml"
    path.write_text(path.read_text() + "\n[backup]\nevery_minutes = -1\n")
    with pytest.raises(ConfigError, match="every_minutes"):
        BackupSettings.from_config(load_config(node.path))
    assert "every_minutes" in node.fail("backup")
    os.utime(path)


def test_a_passphrase_backup_restores_anywhere_with_the_passphrase(
    node: Node, make_node: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHPOS_PASSPHRASE", "open sesame, said the store manager")
    node.ok("encrypt", "--passphrase")
    node.sell("TSH-NAV-M")
    path = Path(node.json("backup")["file"])
    header = read_header(path)
    assert header.key_source == "passphrase" and header.kdf is not None
    monkeypatch.delenv("MESHPOS_PASSPHRASE")
    fresh = make_node("T6")  # type: ignore[operator]  (a plain node: the copy is re-keyed)
    assert "MESHPOS_PASSPHRASE" in fresh.fail("restore", str(path))
    monkeypatch.setenv("MESHPOS_PASSPHRASE", "a wrong guess")
    assert "sealed with key" in fresh.fail("restore", str(path))
    monkeypatch.setenv("MESHPOS_PASSPHRASE", "open sesame, said the store manager")
    assert fresh.json("restore", str(path))["ops"] == header.ops
    assert fresh.db.read_bytes().startswith(b"SQLite format 3")
    assert fresh.ok("verify").out.startswith("ok:")


@pytest.mark.parametrize("key", [None, bytes(range(32))], ids=["plain", "encrypted"])
def test_snapshots_copied_while_another_connection_commits_and_checkpoints_are_whole(
    tmp_path: Path, key: bytes | None
) -> None:
    """`Ledger.copy_to` copies the files under a read transaction: whatever commits and
    checkpoints run meanwhile, each copy opens as one commit's database, sound in full."""
    s = signer(0)
    path = tmp_path / "live.db"
    live = Ledger(path, "S1", key=key, durable=False)
    live.add_node(node_record(s, "T0"))
    stop, errors = threading.Event(), []

    def writer() -> None:
        w = Ledger(path, "S1", key=key, durable=False)
        try:
            n = live_seq = w.head(s.node_id)[0]
            while not stop.is_set() or n < live_seq + 60:
                n += 1
                w.append(s, kind="note", payload={"n": n, "pad": "x" * 2000}, user="u", hlc=n)
                if n % 5 == 0:
                    w.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            w.close()

    thread = threading.Thread(target=writer)
    thread.start()
    seen: list[int] = []
    try:
        while len(seen) < 6 or len(set(seen)) < 3:
            snap = tmp_path / f"snap-{len(seen)}.db"
            live.copy_to(snap)
            problems, ops, vv = check_database(snap, "S1", key)
            assert problems == [] and vv == ({s.node_id: ops} if ops else {})
            assert not Path(f"{snap}-wal").exists()
            seen.append(ops)
    finally:
        stop.set()
        thread.join(60)
        live.close()
    assert not errors, errors
    assert seen == sorted(seen)


def test_a_snapshot_copy_interleaved_with_commits_and_a_checkpoint_is_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race `copy_to` must survive, made certain: nine tenths into copying the database
    file, another connection commits, checkpoints and commits again. The read transaction
    keeps that checkpoint from writing past the snapshot and the WAL from restarting, so the
    WAL copied after holds every page it may have written: the copy is one commit's database,
    with every op of the snapshot."""
    s = signer(0)
    path = tmp_path / "live.db"
    live = Ledger(path, "S1", durable=False)
    live.add_node(node_record(s, "T0"))
    other = Ledger(path, "S1", durable=False)

    def commit(count: int) -> None:
        for _ in range(count):
            n = other.head(s.node_id)[0] + 1
            other.append(s, kind="note", payload={"n": n, "pad": "x" * 3000}, user="u", hlc=n)

    commit(40)
    other.checkpoint()
    commit(40)  # in the WAL only
    copy = shutil.copyfile

    def interleaved(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if str(src).endswith("-wal"):
            copy(src, dst)
            return
        data = Path(src).read_bytes()
        cut = len(data) * 9 // 10  # past the empty tables' pages, into the log's
        with open(dst, "wb") as out:
            out.write(data[:cut])
            commit(40)
            # One transaction that touches every page of the log (a stand-in for any big one).
            other.conn.execute("UPDATE ops SET user = 'later'")
            other.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            commit(3)  # restarts the WAL if that checkpoint went to its end
            out.write(Path(src).read_bytes()[cut:])

    monkeypatch.setattr("meshpos.ledger.store.shutil.copyfile", interleaved)
    snap = tmp_path / "snap.db"
    try:
        live.copy_to(snap)
    finally:
        other.close()
        live.close()
    torn = Ledger(snap, "S1", durable=False)
    try:
        users = torn.query("SELECT DISTINCT user FROM ops WHERE seq <= 80")
    finally:
        torn.close()
    assert len(users) == 1, f"pages of two commits in one copy: {users}"
    problems, ops, _ = check_database(snap, "S1", None)
    assert problems == [] and ops >= 80


def test_the_page_check_of_a_large_snapshot_runs_in_a_process_of_its_own(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[int] = []

    class Counted(ProcessPoolExecutor):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            started.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr("meshpos.service.backup.create.PAGES_APART_BYTES", 0)
    monkeypatch.setattr("meshpos.service.backup.create.ProcessPoolExecutor", Counted)
    node.sell("TSH-NAV-M")
    assert read_header(backup_once(node)).ops >= 1 and started == [1]
    t = Terminal.open(node.path)
    try:
        t.ledger.conn.execute("DELETE FROM ops WHERE seq = 2")
        with pytest.raises(LocalError, match="lacks op"):
            create_backup(t.cfg, t.ledger, now_ms=NOW + 1)
    finally:
        t.close()
    assert started == [1, 1]
