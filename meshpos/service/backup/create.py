"""Taking a backup: a consistent snapshot while selling goes on, checked, sealed, read back,
rotated and copied off-site.

The snapshot is the database's files copied under a read transaction (`Ledger.copy_to`): in WAL
mode the tills keep committing while it copies. For an encrypted node the snapshot is the
SQLCipher ciphertext itself, so no plaintext page ever reaches the disk.

What a backup proves before it is sealed is what restoring it needs: that its pages are sound
(`PRAGMA quick_check`) and that its log is the log its terminals signed (`Ledger.verify_log`:
every hash chain, one signature per chain, which through the chain authenticates every op). The
views are a fold of that log: `restore` refolds them and runs the full verify before it replaces
anything, and rebuilds views that do not match. So a backup costs a read of the pages and a
SHA-256 per op, not a refold of every view (the log check of an encrypted million ops took 4 CPU
seconds here, the refold of `verify` 85). After
sealing the file is read back and every chunk authenticated against the digest of the checked
snapshot: what is on disk is what was checked.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing import current_process, get_context
from pathlib import Path

from meshpos.core.errors import LocalError, MeshposError
from meshpos.ledger.encryption import remove_db_files
from meshpos.ledger.store import Ledger, Progress
from meshpos.service.backup.format import authenticate, seal_file
from meshpos.service.backup.keys import node_seal_keys
from meshpos.service.backup.targets import (
    BackupSettings,
    BackupTarget,
    DirectoryTarget,
    backup_name,
    backup_prefix,
    rotate,
)
from meshpos.service.config import NodeConfig, private_dir

BACKUP_CHECK = (
    "pages (quick_check), every hash chain and one signature per chain; "
    "views are refolded and verified at restore"
)
"""What `create_backup` checks, as the backup's output says it."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    ops: int
    bytes: int
    snapshot_s: float
    verify_s: float
    seal_s: float
    offsite: str | None
    removed: tuple[str, ...]
    offsite_error: str | None = None
    checked: str = BACKUP_CHECK


PAGES_APART_BYTES = 64 * 2**20
"""From this size, quick_check runs in a process of its own: sqlcipher3 keeps the GIL while it
steps, so in a thread it would not overlap the log check (12 s instead of 9 s for an encrypted
million ops), and starting a process costs ~0.5 s."""


def check_database(
    path: Path,
    store: str,
    key: bytes | None,
    *,
    full: bool = True,
    progress: Progress | None = None,
) -> tuple[list[str], int, dict[str, int]]:
    """quick_check plus Ledger.verify (`full`, told `progress`) or Ledger.verify_log on a
    database file, then its
    WAL merged into it; returns (problems, ops, vv). The page check runs on a second connection
    beside the other, in a thread or (a large file, not in a daemonic process, which may not
    start one) a process, so it costs no wall time while the other keeps one core busy."""
    apart = path.stat().st_size >= PAGES_APART_BYTES and not current_process().daemon
    pool: Executor = (
        ProcessPoolExecutor(1, mp_context=get_context("spawn"))
        if apart
        else ThreadPoolExecutor(1, thread_name_prefix="quick-check")
    )
    ledger = Ledger(path, store, key=key, durable=False)
    try:
        with pool:
            pages = pool.submit(_quick_check, path, store, key)
            log_or_all = ledger.verify(progress=progress) if full else ledger.verify_log()
            problems = pages.result() + log_or_all
        ops, vv = ledger.op_count(), ledger.vv()
        if not ledger.checkpoint():
            raise LocalError(f"could not merge the WAL of {path.name} into it; nothing was kept")
    finally:
        ledger.close()
    remove_db_files(path)
    return problems, ops, vv


def _quick_check(path: Path, store: str, key: bytes | None) -> list[str]:
    ledger = Ledger(path, store, key=key, durable=False)
    try:
        return ledger.quick_check()
    finally:
        ledger.close()


def create_backup(
    cfg: NodeConfig,
    ledger: Ledger,
    *,
    now_ms: int,
    settings: BackupSettings | None = None,
    target: BackupTarget | None = None,
    keep: int | None = None,
) -> BackupResult:
    """Snapshot, check (`BACKUP_CHECK`), seal, read back, rotate, copy off-site. A snapshot
    that fails its check is not kept and older backups are not rotated away; an off-site
    failure leaves the local backup in place and is reported in the result."""
    s = settings or BackupSettings.from_config(cfg)
    keys = node_seal_keys(cfg, ledger.key)
    private_dir(s.dir)
    for stale in s.dir.glob(".snapshot-*"):
        stale.unlink(missing_ok=True)
    snap = s.dir / f".snapshot-{os.getpid()}-{threading.get_ident()}.db"
    try:
        t0 = time.perf_counter()
        ledger.copy_to(snap)
        t1 = time.perf_counter()
        problems, ops, vv = check_database(snap, cfg.store, keys.db, full=False)
        t2 = time.perf_counter()
        if problems:
            raise LocalError(
                f"the snapshot fails its check, so no backup was kept: {problems[0]} "
                f"({len(problems)} problem(s); run `meshpos verify`)"
            )
        out = s.dir / backup_name(cfg, now_ms)
        fields = {
            "store": cfg.store,
            "node_id": cfg.node_id,
            "name": cfg.name,
            "created_ms": now_ms,
            "ops": ops,
            "vv": vv,
        }
        sealed = seal_file(snap, out, keys, fields)
        if authenticate(out, keys.seal) != sealed:
            out.unlink(missing_ok=True)
            raise LocalError("the sealed backup did not read back as written; no backup was kept")
        t3 = time.perf_counter()
    finally:
        snap.unlink(missing_ok=True)
        remove_db_files(snap)
    removed = [str(p) for p in rotate(s.dir, backup_prefix(cfg), keep or s.keep)]
    if target is None and s.offsite_dir is not None:
        target = DirectoryTarget(s.offsite_dir)
    offsite = error = None
    if target is not None:
        try:
            offsite = target.put(out)
            removed += target.prune(backup_prefix(cfg), keep or s.offsite_keep)
        except MeshposError as exc:
            error = str(exc)
    return BackupResult(
        out, ops, out.stat().st_size, t1 - t0, t2 - t1, t3 - t2, offsite, tuple(removed), error
    )
