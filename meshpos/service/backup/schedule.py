"""The daemon's backup schedule: every `[backup] every_minutes`, a backup in a child process.

The child has its own interpreter and database connection, at a lower priority, so a verify of a
million ops does not hold the daemon's GIL; the database key reaches it over a pipe, never
through the environment.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshpos.core.errors import ConfigError, MeshposError
from meshpos.ledger.store import Ledger
from meshpos.service.backup.create import create_backup
from meshpos.service.backup.format import read_header
from meshpos.service.backup.targets import BackupSettings, backup_prefix, list_backups
from meshpos.service.config import NodeConfig, load_config
from meshpos.service.terminal import Terminal

log = logging.getLogger("meshpos.backup")


@dataclass
class _Schedule:
    settings: BackupSettings | None
    due_ms: int
    proc: Any = None  # the running backup process (multiprocessing.Process)
    pipe: Any = None
    on_done: Callable[[dict[str, Any] | None, str | None], None] | None = None
    retry_ms: int = 0
    last: dict[str, Any] | None = None
    error: str | None = None


_SCHEDULES: dict[Path, _Schedule] = {}
RETRY_MS = 5 * 60_000
FIRST_AFTER_MS = 10 * 60_000


def maybe_backup(
    terminal: Terminal,
    now_ms: int,
    on_done: Callable[[dict[str, Any] | None, str | None], None] | None = None,
) -> bool:
    """Called by the daemon on every loop iteration: when `[backup] every_minutes` have passed
    since the newest backup, starts one in a separate, lower-priority process (its own database
    connection, its own interpreter: a verify of a million ops does not hold the daemon's GIL).
    The database key goes to it over a pipe, never through the environment. Cheap when nothing
    is due. Returns True when it started one."""
    cfg = terminal.cfg
    sched = _SCHEDULES.get(cfg.dir)
    if sched is None:
        try:
            settings: BackupSettings | None = BackupSettings.from_config(cfg)
        except ConfigError as exc:
            log.error("scheduled backups are off: %s", exc)
            settings = None
        sched = _SCHEDULES[cfg.dir] = _Schedule(settings, _first_due(cfg, settings, now_ms))
    if sched.proc is not None:
        _reap(sched)
    if sched.settings is None or not sched.settings.every_minutes or now_ms < sched.due_ms:
        return False
    if sched.proc is not None:
        return False
    every_ms = sched.settings.every_minutes * 60_000
    sched.due_ms = now_ms + every_ms
    sched.retry_ms = now_ms + min(every_ms, RETRY_MS)
    sched.on_done = on_done
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_backup_process,
        args=(str(cfg.dir), terminal.ledger.key, now_ms, child),
        name="meshpos-backup",
        daemon=True,
    )
    proc.start()
    child.close()
    sched.proc, sched.pipe = proc, parent
    return True


def _reap(sched: _Schedule) -> None:
    result: dict[str, Any] | None = None
    error: str | None = None
    try:
        if not sched.pipe.poll():
            if sched.proc.is_alive():
                return
            error = f"the backup process exited with code {sched.proc.exitcode}"
        else:
            status, value = sched.pipe.recv()
            result, error = (value, None) if status == "ok" else (None, str(value))
    except (EOFError, OSError):
        error = f"the backup process exited with code {sched.proc.exitcode}"
    sched.proc.join(5)
    sched.pipe.close()
    sched.proc = sched.pipe = None
    sched.last, sched.error = result, error
    if result is not None:
        log.info(
            "backup %s: %d ops, %.1f MB, pages and log checked%s",
            Path(result["path"]).name,
            result["ops"],
            result["bytes"] / 1e6,
            f", copied to {result['offsite']}" if result["offsite"] else "",
        )
        if result["offsite_error"]:
            log.warning("backup off-site copy failed: %s", result["offsite_error"])
    else:
        sched.due_ms = min(sched.due_ms, sched.retry_ms)
        log.error("scheduled backup failed (next try in %d min): %s", RETRY_MS // 60_000, error)
    if sched.on_done is not None:
        sched.on_done(result, error)


def _backup_process(directory: str, key: bytes | None, now_ms: int, pipe: Any) -> None:
    with contextlib.suppress(OSError):
        os.nice(10)
    try:
        cfg = load_config(Path(directory))
        ledger = Ledger(cfg.db_path, cfg.store, key=key)
        try:
            r = create_backup(cfg, ledger, now_ms=now_ms)
        finally:
            ledger.close()
        pipe.send(
            (
                "ok",
                {
                    "path": str(r.path),
                    "ops": r.ops,
                    "bytes": r.bytes,
                    "offsite": r.offsite,
                    "offsite_error": r.offsite_error,
                },
            )
        )
    except Exception as exc:
        message = str(exc) if isinstance(exc, MeshposError) else f"{type(exc).__name__}: {exc}"
        pipe.send(("error", message))
    finally:
        pipe.close()


def _first_due(cfg: NodeConfig, settings: BackupSettings | None, now_ms: int) -> int:
    """The newest backup's time plus the period; with none yet, a few minutes after start (not
    at once: a daemon's first minutes are its catch-up sync)."""
    if settings is None:
        return now_ms
    every_ms = settings.every_minutes * 60_000
    newest = list_backups(settings.dir, backup_prefix(cfg))
    if not newest:
        return now_ms + min(every_ms, FIRST_AFTER_MS)
    try:
        created = read_header(newest[-1]).created_ms
    except MeshposError:
        return now_ms
    return created + every_ms


def backup_schedule(terminal: Terminal) -> dict[str, Any]:
    """The daemon's backup state, for status output."""
    sched = _SCHEDULES.get(terminal.cfg.dir)
    if sched is None:
        return {}
    return {
        "due_ms": sched.due_ms,
        "running": sched.proc is not None,
        "last": sched.last["path"] if sched.last else None,
        "error": sched.error,
    }
