"""Where backups go and how many are kept: the `[backup]` settings, the names of backup files,
rotation, and off-site targets.

Off-site copies go through a `BackupTarget`; `DirectoryTarget` writes to a directory such as a
mounted USB stick. HQ's backup endpoint is a second implementation of the same interface.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from meshpos.core.errors import ConfigError, LocalError
from meshpos.service.backup.format import CHUNK, SUFFIX, private_file
from meshpos.service.config import CONFIG_FILE, NodeConfig, fsync_dir


@dataclass(frozen=True)
class BackupSettings:
    """The `[backup]` table of meshpos.toml."""

    every_minutes: int = 60
    keep: int = 24
    dir: Path = Path("backups")
    offsite_dir: Path | None = None
    offsite_keep: int = 24

    @classmethod
    def from_config(cls, cfg: NodeConfig) -> BackupSettings:
        raw = cfg.section("backup")
        where = f"{cfg.dir / CONFIG_FILE}: [backup]"
        known = {"every_minutes", "keep", "dir", "offsite_dir", "offsite_keep"}
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(f"{where} has unknown key(s) {', '.join(sorted(unknown))}")
        for name in ("every_minutes", "keep", "offsite_keep"):
            value = raw.get(name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ConfigError(f"{where} {name} must be a whole number")
        every = int(raw.get("every_minutes", 60))
        keep = int(raw.get("keep", 24))
        if every < 0 or keep < 1:
            raise ConfigError(f"{where} every_minutes must be >= 0 (0: off) and keep >= 1")
        directory = Path(str(raw.get("dir", "backups"))).expanduser()
        offsite = raw.get("offsite_dir")
        return cls(
            every_minutes=every,
            keep=keep,
            dir=directory if directory.is_absolute() else cfg.dir / directory,
            offsite_dir=Path(str(offsite)).expanduser() if offsite else None,
            offsite_keep=int(raw.get("offsite_keep", keep)),
        )


class BackupTarget(Protocol):
    """Somewhere off the terminal that keeps copies: a directory now, HQ's endpoint later."""

    def describe(self) -> str: ...

    def put(self, path: Path) -> str:
        """Store a copy of the sealed file; returns where it went."""
        ...

    def prune(self, prefix: str, keep: int) -> list[str]:
        """Delete all but the newest `keep` copies whose names start with `prefix`."""
        ...


@dataclass(frozen=True)
class DirectoryTarget:
    """A directory, typically a mounted USB stick or network share. It must already exist, so an
    unmounted stick is an error rather than a copy quietly left on the terminal's own disk."""

    path: Path

    def describe(self) -> str:
        return str(self.path)

    def put(self, path: Path) -> str:
        if not self.path.is_dir():
            raise LocalError(
                f"off-site directory {self.path} does not exist (is the USB stick mounted?)"
            )
        dest = self.path / path.name
        tmp = dest.with_name(dest.name + ".part")
        try:
            with open(path, "rb") as src, private_file(tmp) as dst:
                shutil.copyfileobj(src, dst, CHUNK)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, dest)
            fsync_dir(self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise LocalError(f"cannot copy the backup to {self.path}: {exc.strerror}") from None
        return str(dest)

    def prune(self, prefix: str, keep: int) -> list[str]:
        return [str(p) for p in rotate(self.path, prefix, keep)]


def backup_prefix(cfg: NodeConfig) -> str:
    return f"{cfg.store}-{cfg.name}-"


def backup_name(cfg: NodeConfig, now_ms: int) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now_ms // 1000))
    return f"{backup_prefix(cfg)}{stamp}{now_ms % 1000:03d}Z{SUFFIX}"


def list_backups(directory: Path, prefix: str = "") -> list[Path]:
    """Sealed backups in a directory, oldest first (names sort by time)."""
    if not directory.is_dir():
        return []
    return sorted(
        p for p in directory.iterdir() if p.name.startswith(prefix) and p.name.endswith(SUFFIX)
    )


def rotate(directory: Path, prefix: str, keep: int) -> list[Path]:
    old = list_backups(directory, prefix)[:-keep] if keep > 0 else []
    for path in old:
        path.unlink(missing_ok=True)
    return old
