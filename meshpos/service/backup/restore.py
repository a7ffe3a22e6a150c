"""Verifying a backup file, and restoring a node's database from one.

Both run the full verify on the database inside (quick_check, every hash chain and signature,
every view against a fresh fold), more than a backup checks when it is taken (see
meshpos/service/backup/create.py). Nothing changes unless the backup authenticates, belongs to
this store and passes verify; a backup whose log is sound but whose views are not its fold gets
its views rebuilt from the log, then verified again. The database it replaces is moved aside
(`replaced/`), never deleted.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from meshpos.core.errors import InputError, LocalError
from meshpos.ledger.encryption import export_database, refuse_if_open, remove_db_files
from meshpos.ledger.store import Ledger, Progress
from meshpos.service.backup.create import check_database
from meshpos.service.backup.format import BackupHeader, CorruptBackup, read_header, unseal_file
from meshpos.service.backup.keys import resolve_keys
from meshpos.service.config import NodeConfig, fsync_dir, private_dir
from meshpos.service.encryption import storage_key


@dataclass(frozen=True)
class BackupCheck:
    header: BackupHeader
    problems: tuple[str, ...]
    ops: int
    log_sound: bool = True
    """Whether the pages and the log pass (the problems are then in the views, which restore
    rebuilds from the log)."""


def verify_backup(
    path: Path,
    *,
    cfg: NodeConfig | None = None,
    key_file: Path | None = None,
    workdir: Path | None = None,
    progress: Progress | None = None,
) -> BackupCheck:
    """Authenticate every chunk, then open the snapshot and run quick_check and Ledger.verify.
    Raises CorruptBackup when the file itself is damaged; returns the problems verify found."""
    header = read_header(path)
    keys = resolve_keys(cfg, header, key_file)
    work = workdir or (cfg.dir if cfg is not None else Path(tempfile.gettempdir()))
    tmp = work / f".verify-backup-{os.getpid()}-{threading.get_ident()}.db"
    try:
        unseal_file(path, keys.seal, tmp)
        problems, ops, _ = check_database(tmp, header.store, keys.db, progress=progress)
        sound = not problems or not check_database(tmp, header.store, keys.db, full=False)[0]
    finally:
        tmp.unlink(missing_ok=True)
        remove_db_files(tmp)
    return BackupCheck(header, tuple(problems), ops, sound)


@dataclass(frozen=True)
class RestoreResult:
    header: BackupHeader
    ops: int
    own_seq: int
    same_identity: bool
    moved_to: Path | None
    views_rebuilt: bool = False


def restore_backup(
    cfg: NodeConfig,
    path: Path,
    *,
    key_file: Path | None = None,
    force: bool = False,
    now_ms: int | None = None,
    progress: Progress | None = None,
) -> RestoreResult:
    """Replace this node's database with a verified backup. Nothing changes unless the backup
    authenticates, belongs to this store and passes verify. The database it replaces is moved
    aside (`replaced/`), never deleted. Restoring a backup of this same terminal over a
    database that holds more of its own ops is refused without `force`. `progress` is told the
    ops refolded so far by each check (and by the rebuild, when the views need one)."""
    header = read_header(path)
    if header.store != cfg.store:
        raise InputError(
            f"{path.name} is a backup of store {header.store!r}; this node belongs to {cfg.store!r}"
        )
    node_key = storage_key(cfg)
    keys = resolve_keys(cfg, header, key_file, own_key=node_key)
    refuse_if_open(cfg.db_path, "restoring over it")
    staged = cfg.dir / f".restore-{os.getpid()}.db"
    moved: Path | None = None
    try:
        unseal_file(path, keys.seal, staged)
        if keys.db != node_key:
            rekeyed = staged.with_name(staged.name + ".rekey")
            export_database(staged, keys.db, rekeyed, node_key)
            staged.unlink()
            os.replace(rekeyed, staged)
        problems, ops, vv = check_database(staged, cfg.store, node_key, progress=progress)
        rebuilt = bool(problems) and _rebuild_views(staged, cfg.store, node_key, progress)
        if rebuilt:
            problems, ops, vv = check_database(staged, cfg.store, node_key, progress=progress)
        if problems:
            raise CorruptBackup(
                f"{path.name} fails verify ({problems[0]}; {len(problems)} problem(s)): "
                "nothing was changed; use an older backup"
            )
        same = header.node_id == cfg.node_id
        own = vv.get(cfg.node_id, 0)
        if same and not force:
            live = _live_own_seq(cfg, node_key)
            if live is not None and live > own:
                raise LocalError(
                    f"this database holds {live - own} op(s) of this terminal newer than the "
                    f"backup (seq {own + 1}..{live}); restoring would drop them here. If the "
                    "database is damaged, run again with --force"
                )
        if cfg.db_path.exists():
            stamp = time.strftime(
                "%Y%m%dT%H%M%SZ",
                time.gmtime((now_ms if now_ms is not None else time.time_ns() // 10**6) // 1000),
            )
            moved = cfg.dir / "replaced" / stamp
            private_dir(moved)
            for f in [cfg.db_path, *(Path(str(cfg.db_path) + s) for s in ("-wal", "-shm"))]:
                if f.exists():
                    os.replace(f, moved / f.name)
        os.replace(staged, cfg.db_path)
        fsync_dir(cfg.dir)
        _hold_signing(cfg, node_key)
    finally:
        staged.unlink(missing_ok=True)
        remove_db_files(staged)
    return RestoreResult(header, ops, own, same, moved, rebuilt)


def _rebuild_views(
    path: Path, store: str, key: bytes | None, progress: Progress | None = None
) -> bool:
    """Refold the views of a staged database whose log and pages pass their check; whether it
    did (a damaged log or page is refused, never rebuilt around)."""
    if check_database(path, store, key, full=False)[0]:
        return False
    ledger = Ledger(path, store, key=key, durable=False)
    try:
        ledger.rebuild(progress=progress)
        ledger.checkpoint()
    finally:
        ledger.close()
    return True


def _hold_signing(cfg: NodeConfig, key: bytes | None) -> None:
    """A restored terminal may have signed ops after the backup that only its peers hold now:
    it must not sign again until the daemon got those back (see Terminal.set_bootstrapping)."""
    ledger = Ledger(cfg.db_path, cfg.store, key=key)
    try:
        ledger.set_bootstrapping(True)
    finally:
        ledger.close()


def _live_own_seq(cfg: NodeConfig, key: bytes | None) -> int | None:
    if not cfg.db_path.exists():
        return None
    try:
        ledger = Ledger(cfg.db_path, cfg.store, key=key)
    except Exception:  # a damaged database is the usual reason to restore
        return None
    try:
        return ledger.head(cfg.node_id)[0]
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            ledger.close()
