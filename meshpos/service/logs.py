"""Logs of the long-running processes (the terminal daemon, HQ): readable text on stderr for the
person at the console, and JSON lines in a rotating file that `meshpos logs` reads and log
collectors ingest. Settings are the `[log]` table of meshpos.toml or hq.toml (docs/config.md).

Every record carries the ids an engineer correlates by: `node` and `store` of the process, and,
where a record concerns one, the `peer` and the `op` (`origin:seq`). They come from the record's
`extra`, else from `log_fields(...)` around the code handling a peer's message or an HQ request
(a context variable, so threads and tasks keep their own), else from the process.

The file is rotated by size. HQ's workers write one file: each write holds an advisory lock on
`<file>.lock` and a writer that finds the file rotated by another process reopens it, so no
line is lost or written into a rotated file.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import logging.handlers
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from meshpos.core.errors import ConfigError
from meshpos.service.config import CONFIG_FILE, NodeConfig

FIELDS = ("node", "store", "peer", "op")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
NODE_LOG = "logs/meshpos.log"  # in the node directory

_scoped: ContextVar[Mapping[str, str] | None] = ContextVar("meshpos_log_fields", default=None)
_process: dict[str, str] = {}


@contextlib.contextmanager
def log_fields(**fields: str | None) -> Iterator[None]:
    """Ids that every record logged inside the block carries (unless it names its own)."""
    token = _scoped.set({**(_scoped.get() or {}), **{k: v for k, v in fields.items() if v}})
    try:
        yield
    finally:
        _scoped.reset(token)


def set_process_fields(**fields: str) -> None:
    """The ids of this process (node and store), on every record it logs."""
    _process.clear()
    _process.update({k: v for k, v in fields.items() if v})


class FieldsFilter(logging.Filter):
    """Gives each record its ids: its own `extra`, else the block's, else the process's."""

    def filter(self, record: logging.LogRecord) -> bool:
        scoped = _scoped.get() or {}
        for name in FIELDS:
            if not getattr(record, name, None):
                setattr(record, name, scoped.get(name) or _process.get(name) or "")
        return True


def _iso(created: float) -> str:
    stamp = datetime.fromtimestamp(created, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ms), level, logger, msg, the ids present, exc."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, "")
            if value:
                doc[name] = str(value)
        doc["pid"] = record.process
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The classic line, with the peer and op ids appended when a record has them."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = " ".join(
            f"{n}={getattr(record, n)}" for n in ("peer", "op") if getattr(record, n, "")
        )
        if not ids:
            return line
        head, sep, tail = line.partition("\n")
        return f"{head} [{ids}]{sep}{tail}"


class SharedRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A size-rotated file several processes may write (see the module docstring). Files are
    created for their owner only (0600, directory 0700)."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock_path = Path(f"{path}.lock")
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return open(fd, "a", encoding="utf-8")

    def _stale(self) -> bool:
        """Whether another process rotated the file since this one opened it."""
        if self.stream is None:
            return True
        try:
            return os.stat(self.baseFilename).st_ino != os.fstat(self.stream.fileno()).st_ino
        except FileNotFoundError:
            return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fd = os.open(self._lock_path, os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError:
            self.handleError(record)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self._stale():
                if self.stream is not None:
                    self.stream.close()
                self.stream = self._open()
            super().emit(record)  # rotates first when this record would pass max_bytes
        finally:
            os.close(fd)  # closing the descriptor releases the lock


@dataclass(frozen=True)
class LogSettings:
    """The `[log]` table: `file` (relative to the node or HQ directory; "" for none), `format` of
    stderr (text or json; the file is always JSON lines), `level`, and the rotation: `max_bytes`
    per file and `backups` kept."""

    file: str
    format: str = "text"
    level: str = "INFO"
    max_bytes: int = 10 * 1024 * 1024
    backups: int = 5

    @classmethod
    def from_table(cls, raw: Mapping[str, Any], where: str, default_file: str) -> LogSettings:
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"{where}: unknown [log] key(s) {', '.join(sorted(unknown))}")
        file = raw.get("file", default_file)
        if not isinstance(file, str):
            raise ConfigError(f'{where}: [log] file must be a path, or "" for no log file')
        fmt = raw.get("format", "text")
        if fmt not in FORMATS:
            raise ConfigError(f"{where}: [log] format must be one of {', '.join(FORMATS)}")
        level = raw.get("level", "INFO")
        if not isinstance(level, str) or level.upper() not in LEVELS:
            raise ConfigError(f"{where}: [log] level must be one of {', '.join(LEVELS)}")
        sizes: dict[str, int] = {}
        for key, least in (("max_bytes", 4096), ("backups", 0)):
            value = raw.get(key, getattr(cls, key))
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ConfigError(f"{where}: [log] {key} must be a whole number >= {least}")
            sizes[key] = value
        return cls(file, fmt, level.upper(), **sizes)

    def path(self, directory: Path) -> Path | None:
        if not self.file:
            return None
        path = Path(self.file).expanduser()
        return path if path.is_absolute() else directory / path


def node_log_settings(cfg: NodeConfig) -> LogSettings:
    """A node's `[log]` table of meshpos.toml."""
    return LogSettings.from_table(cfg.section("log"), str(cfg.dir / CONFIG_FILE), NODE_LOG)


def setup_logging(
    settings: LogSettings, directory: Path, *, level: str | None = None, **fields: str
) -> Path | None:
    """Send this process's logging to stderr and the rotating JSON-lines file; returns the
    file. `level` overrides the settings' (a command-line --log-level)."""
    set_process_fields(**fields)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    ids = FieldsFilter()
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    console.addFilter(ids)
    root.addHandler(console)
    path = settings.path(directory)
    if path is not None:
        try:
            handler = SharedRotatingFileHandler(path, settings.max_bytes, settings.backups)
        except OSError as exc:
            raise ConfigError(f"cannot write the log file {path}: {exc.strerror or exc}") from None
        handler.setFormatter(JsonFormatter())
        handler.addFilter(ids)
        root.addHandler(handler)
    root.setLevel(level or settings.level)
    logging.captureWarnings(True)
    return path


# -- reading --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One record of a log file; lines that are not meshpos JSON come through as `msg`."""

    ts: str
    level: str
    logger: str
    msg: str
    fields: dict[str, str]
    exc: str
    raw: str

    @classmethod
    def parse(cls, line: str) -> Entry:
        line = line.rstrip("\n")
        try:
            doc = json.loads(line)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            return cls("", "", "", line, {}, "", line)
        fields = {n: str(doc[n]) for n in FIELDS if doc.get(n)}
        return cls(
            str(doc.get("ts", "")), str(doc.get("level", "")), str(doc.get("logger", "")),
            str(doc.get("msg", "")), fields, str(doc.get("exc", "")), line,
        )  # fmt: skip

    def local_time(self) -> str:
        """The record's time on this machine's clock, to the millisecond."""
        try:
            stamp = datetime.strptime(self.ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        except ValueError:
            return self.ts
        local = stamp.astimezone()
        return local.strftime("%Y-%m-%d %H:%M:%S.") + f"{local.microsecond // 1000:03d}"


def rotated(path: Path) -> list[Path]:
    """The file and its rotated copies, oldest first."""
    backups = sorted(
        (p for p in path.parent.glob(path.name + ".*") if p.suffix[1:].isdigit()),
        key=lambda p: -int(p.suffix[1:]),
    )
    return [*backups, path] if path.exists() else backups


Mark = tuple[int, int]
"""A place in a log file: (inode, byte offset)."""


def mark(path: Path) -> Mark | None:
    """Where the file ends now: read up to here, then follow from here, and no line is shown
    twice or missed."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size)


def _lines(data: bytes) -> list[str]:
    return [ln for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]


def last_entries(path: Path, count: int, upto: Mark | None = None) -> list[Entry]:
    """The last `count` records (of the current file, only up to `upto`), reaching into rotated
    files when the current one has fewer."""
    parts: list[tuple[Path, int]] = []
    for part in rotated(path):
        with contextlib.suppress(FileNotFoundError):  # rotated away meanwhile
            parts.append((part, part.stat().st_ino))
    inodes = [ino for _, ino in parts]
    if upto is not None and upto[0] in inodes:  # what was written after the mark is not ours
        parts = parts[: inodes.index(upto[0]) + 1]
    lines: list[str] = []
    for part, ino in reversed(parts):
        try:
            with part.open("rb") as fh:
                data = fh.read(upto[1]) if upto is not None and ino == upto[0] else fh.read()
        except FileNotFoundError:
            continue
        lines = _lines(data) + lines
        if len(lines) >= count:
            break
    return [Entry.parse(ln) for ln in lines[-count:]] if count else []


def follow(
    path: Path,
    *,
    since: Mark | None = None,
    poll_s: float = 0.2,
    stop: Callable[[], bool] | None = None,
) -> Iterator[Entry]:
    """Records written after `since` (default: from now on), across rotations, until `stop()`
    is true. A line is yielded once its newline is written."""
    fh: IO[bytes] | None = None
    inode: int | None = None
    partial = b""

    def complete(data: bytes) -> list[Entry]:
        nonlocal partial
        *whole, partial = (partial + data).split(b"\n")
        return [Entry.parse(ln) for ln in _lines(b"\n".join(whole))]

    if since is not None:  # the file marked, wherever rotation has moved it by now
        for part in rotated(path):
            if part.exists() and os.stat(part).st_ino == since[0]:
                fh = part.open("rb")
                fh.seek(since[1])
                inode = since[0]
                break
    try:
        while stop is None or not stop():
            try:
                now: int | None = os.stat(path).st_ino
            except FileNotFoundError:
                now = None
            if now is not None and now != inode:
                first = fh is None and since is None
                if fh is not None:  # rotated: finish the old file, then read the new one whole
                    yield from complete(fh.read())
                    fh.close()
                    partial = b""
                fh = path.open("rb")
                if first:
                    fh.seek(0, os.SEEK_END)
                inode = now
            if fh is not None:
                if fh.tell() > os.fstat(fh.fileno()).st_size:  # truncated in place
                    fh.seek(0)
                    partial = b""
                entries = complete(fh.read())
                if entries:
                    yield from entries
                    continue
            time.sleep(poll_s)
    finally:
        if fh is not None:
            fh.close()
