"""Backups: a consistent snapshot taken while selling goes on, sealed, verified, rotated and
copied off-site; and restore.

The snapshot is SQLite's online backup API (`Connection.backup`, one step, so it is one read
transaction: in WAL mode the tills keep committing while it copies). For an encrypted node the
snapshot is itself a SQLCipher database under the node's key, so no plaintext page ever reaches
the disk. The snapshot is verified (`PRAGMA quick_check` and `Ledger.verify`: chains, signatures,
views against a fresh fold) and then sealed into a `.mpbak` file:

    b"MPBACKUP" | u32 header length | header (msgpack map) | chunk*
    chunk = u32 length | AES-256-GCM(up to 1 MiB of the snapshot) with its 16-byte tag
    nonce = 8 random bytes from the header || u32 chunk index
    associated data = sha256(magic + header) || final-chunk flag

so a flipped byte anywhere, a truncated file, reordered chunks or an edited header fail
authentication. After sealing, the file is read back and every chunk authenticated against the
digest of the verified snapshot: what is on disk is what was verified.

The seal key is HKDF-SHA256 of the database key (db.key, or the passphrase's scrypt key, whose
salt the header carries so a passphrase alone restores anywhere); a node without encryption at
rest gets a `backup.key` (0600) on its first backup. Keep a copy of that key away from the
terminal: a backup is no use without it.

Off-site copies go through a `BackupTarget`; `DirectoryTarget` writes to a directory such as a
mounted USB stick. HQ's backup endpoint is a second implementation of the same interface.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing
import os
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from meshpos.core.errors import ConfigError, InputError, LocalError, MeshposError, RemoteError
from meshpos.core.ops import pack, unpack
from meshpos.ledger.encryption import (
    KEY_BYTES,
    derive_key,
    export_database,
    key_id,
    read_key_file,
    refuse_if_open,
    remove_db_files,
)
from meshpos.ledger.store import Ledger, open_connection
from meshpos.service.config import CONFIG_FILE, NodeConfig
from meshpos.service.encryption import StorageSettings, ask_passphrase, storage_key, write_key_file

if TYPE_CHECKING:
    from meshpos.service.terminal import Terminal

log = logging.getLogger("meshpos.backup")

MAGIC = b"MPBACKUP"
FORMAT = 1
SUFFIX = ".mpbak"
BACKUP_KEY_FILE = "backup.key"
CHUNK = 1 << 20
_LEN = struct.Struct(">I")
_MAX_HEADER = 1 << 20


class CorruptBackup(RemoteError):
    """A backup file failed authentication or verification: it was damaged or altered."""


# -- settings and targets -------------------------------------------------------------------------


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
            with open(path, "rb") as src, _private(tmp) as dst:
                shutil.copyfileobj(src, dst, CHUNK)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(tmp, dest)
            _fsync_dir(self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise LocalError(f"cannot copy the backup to {self.path}: {exc.strerror}") from None
        return str(dest)

    def prune(self, prefix: str, keep: int) -> list[str]:
        return [str(p) for p in _rotate(self.path, prefix, keep)]


# -- keys -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SealKeys:
    seal: bytes  # AES-256-GCM key of the .mpbak file
    db: bytes | None  # SQLCipher key of the snapshot inside it (None: a plain SQLite file)
    source: str  # "db.key", "passphrase" or "backup.key"
    kdf: dict[str, Any] | None = None  # scrypt salt and cost, for a passphrase

    @property
    def id(self) -> str:
        return key_id(self.seal)


def seal_key_from(key: bytes) -> bytes:
    return HKDF(hashes.SHA256(), KEY_BYTES, salt=None, info=b"meshpos backup v1").derive(key)


def node_seal_keys(cfg: NodeConfig, db_key: bytes | None) -> SealKeys:
    """The keys a node seals its backups with (creates backup.key for a plain node)."""
    if db_key is not None:
        s = StorageSettings.from_config(cfg)
        if s.key == "passphrase":
            kdf = {"salt": s.salt, "n": s.scrypt_n}
            return SealKeys(seal_key_from(db_key), db_key, "passphrase", kdf)
        return SealKeys(seal_key_from(db_key), db_key, "db.key")
    path = cfg.dir / BACKUP_KEY_FILE
    if not path.exists():
        write_key_file(path, os.urandom(KEY_BYTES))
    return SealKeys(seal_key_from(read_key_file(path)), None, "backup.key")


# -- the sealed file ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupHeader:
    store: str
    node_id: str
    name: str
    created_ms: int
    ops: int
    vv: dict[str, int]
    db_encrypted: bool
    key_source: str
    key_id: str
    kdf: dict[str, Any] | None
    nonce: bytes
    chunk: int
    size: int
    raw: bytes = field(repr=False)

    @property
    def aad(self) -> bytes:
        return hashlib.sha256(MAGIC + self.raw).digest()


def _header_bytes(fields: Mapping[str, Any]) -> bytes:
    return pack({"magic": "meshpos-backup", "format": FORMAT, **fields})


def parse_header(raw: bytes) -> BackupHeader:
    h = unpack(raw, "backup header")
    if not isinstance(h, dict) or h.get("magic") != "meshpos-backup":
        raise CorruptBackup("the backup header is damaged (or this is not a meshpos backup)")
    if h.get("format") != FORMAT:
        raise CorruptBackup(
            f"backup format {h.get('format')!r} is not supported (or the header is damaged)"
        )
    try:
        header = BackupHeader(
            store=str(h["store"]),
            node_id=str(h["node_id"]),
            name=str(h["name"]),
            created_ms=int(h["created_ms"]),
            ops=int(h["ops"]),
            vv={str(k): int(v) for k, v in dict(h["vv"]).items()},
            db_encrypted=bool(h["db_encrypted"]),
            key_source=str(h["key_source"]),
            key_id=str(h["key_id"]),
            kdf=dict(h["kdf"]) if h["kdf"] is not None else None,
            nonce=bytes(h["nonce"]),
            chunk=int(h["chunk"]),
            size=int(h["size"]),
            raw=raw,
        )
    except (KeyError, TypeError, ValueError):
        raise CorruptBackup("the backup header is damaged") from None
    if len(header.nonce) != 8 or not 0 < header.chunk <= 16 * CHUNK:
        raise CorruptBackup("the backup header is damaged")
    return header


def _read_exact(fh: BinaryIO, n: int, what: str) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise CorruptBackup(f"the backup is truncated ({what})")
    return data


def read_header(path: Path) -> BackupHeader:
    try:
        with open(path, "rb") as fh:
            return _read_header(fh)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None


def _read_header(fh: BinaryIO) -> BackupHeader:
    if fh.read(len(MAGIC)) != MAGIC:
        raise CorruptBackup("this is not a meshpos backup file")
    (n,) = _LEN.unpack(_read_exact(fh, 4, "header length"))
    if n > _MAX_HEADER:
        raise CorruptBackup("the backup header is damaged")
    return parse_header(_read_exact(fh, n, "header"))


def _nonce(header: BackupHeader, index: int) -> bytes:
    return header.nonce + index.to_bytes(4, "big")


def seal_file(src: Path, out: Path, keys: SealKeys, fields: Mapping[str, Any]) -> str:
    """Write `src` sealed to `out` (via a temp file, fsynced, renamed); returns the plaintext's
    sha256 so the caller can check the file reads back to exactly what it verified."""
    size = src.stat().st_size
    raw = _header_bytes(
        {
            **fields,
            "db_encrypted": keys.db is not None,
            "key_source": keys.source,
            "key_id": keys.id,
            "kdf": keys.kdf,
            "nonce": os.urandom(8),
            "chunk": CHUNK,
            "size": size,
        }
    )
    header = parse_header(raw)
    aead = AESGCM(keys.seal)
    digest = hashlib.sha256()
    tmp = out.with_name(out.name + ".tmp")
    try:
        with open(src, "rb") as fin, _private(tmp) as fout:
            fout.write(MAGIC + _LEN.pack(len(raw)) + raw)
            index, done = 0, 0
            while True:
                block = fin.read(CHUNK)
                done += len(block)
                final = done >= size
                digest.update(block)
                ct = aead.encrypt(_nonce(header, index), block, header.aad + bytes([final]))
                fout.write(_LEN.pack(len(ct)) + ct)
                index += 1
                if final:
                    break
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, out)
        _fsync_dir(out.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def open_sealed(path: Path, seal_key: bytes) -> Iterator[bytes]:
    """The plaintext chunks of a sealed file, each authenticated before it is yielded."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 (a generator holds it)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    with fh:
        header = _read_header(fh)
        aead = AESGCM(seal_key)
        index, done = 0, 0
        while True:
            (n,) = _LEN.unpack(_read_exact(fh, 4, f"chunk {index}"))
            if n > header.chunk + 16:
                raise CorruptBackup(f"chunk {index} of the backup is damaged (bad length)")
            ct = _read_exact(fh, n, f"chunk {index}")
            final = done + n - 16 >= header.size
            try:
                block = aead.decrypt(_nonce(header, index), ct, header.aad + bytes([final]))
            except InvalidTag:
                raise CorruptBackup(
                    f"chunk {index} of the backup fails authentication: the file was damaged "
                    "or altered"
                ) from None
            done += len(block)
            yield block
            index += 1
            if final:
                break
        if fh.read(1):
            raise CorruptBackup("the backup has data after its last chunk")
        if done != header.size:
            raise CorruptBackup("the backup is shorter than its header says")


def unseal_file(path: Path, seal_key: bytes, out: Path) -> str:
    digest = hashlib.sha256()
    try:
        with _private(out) as fh:
            for block in open_sealed(path, seal_key):
                digest.update(block)
                fh.write(block)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def authenticate(path: Path, seal_key: bytes) -> str:
    """Read a sealed file through, authenticating every chunk; returns the plaintext sha256."""
    digest = hashlib.sha256()
    for block in open_sealed(path, seal_key):
        digest.update(block)
    return digest.hexdigest()


# -- taking a backup ------------------------------------------------------------------------------


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


def _rotate(directory: Path, prefix: str, keep: int) -> list[Path]:
    old = list_backups(directory, prefix)[:-keep] if keep > 0 else []
    for path in old:
        path.unlink(missing_ok=True)
    return old


def snapshot(ledger: Ledger, dest: Path) -> None:
    """A consistent copy of the live database through the online backup API, under the same
    key. One step: a single read transaction, so concurrent commits neither block nor tear it."""
    dest.unlink(missing_ok=True)
    remove_db_files(dest)
    target = open_connection(str(dest), ledger.key)
    try:
        ledger.conn.backup(target)
    finally:
        target.close()


def check_database(
    path: Path, store: str, key: bytes | None
) -> tuple[list[str], int, dict[str, int]]:
    """quick_check plus Ledger.verify on a database file; returns (problems, ops, vv)."""
    ledger = Ledger(path, store, key=key, durable=False)
    try:
        rows = ledger.conn.execute("PRAGMA quick_check").fetchall()
        problems = [f"quick_check: {r[0]}" for r in rows if r[0] != "ok"]
        problems += ledger.verify()
        ops, vv = ledger.op_count(), ledger.vv()
    finally:
        ledger.close()
    remove_db_files(path)
    return problems, ops, vv


def create_backup(
    cfg: NodeConfig,
    ledger: Ledger,
    *,
    now_ms: int,
    settings: BackupSettings | None = None,
    target: BackupTarget | None = None,
    keep: int | None = None,
) -> BackupResult:
    """Snapshot, verify, seal, read back, rotate, copy off-site. A snapshot that fails verify
    is not kept and older backups are not rotated away; an off-site failure leaves the local
    backup in place and is reported in the result."""
    s = settings or BackupSettings.from_config(cfg)
    keys = node_seal_keys(cfg, ledger.key)
    s.dir.mkdir(parents=True, exist_ok=True)
    for stale in s.dir.glob(".snapshot-*"):
        stale.unlink(missing_ok=True)
    snap = s.dir / f".snapshot-{os.getpid()}-{threading.get_ident()}.db"
    try:
        t0 = time.perf_counter()
        snapshot(ledger, snap)
        t1 = time.perf_counter()
        problems, ops, vv = check_database(snap, cfg.store, keys.db)
        t2 = time.perf_counter()
        if problems:
            raise LocalError(
                f"the snapshot fails verify, so no backup was kept: {problems[0]} "
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
    removed = [str(p) for p in _rotate(s.dir, backup_prefix(cfg), keep or s.keep)]
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


# -- the daemon's schedule ------------------------------------------------------------------------


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
            "backup %s: %d ops, %.1f MB, verified%s",
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
    from meshpos.service.config import load_config

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


# -- verifying and restoring ----------------------------------------------------------------------


def resolve_keys(
    cfg: NodeConfig | None,
    header: BackupHeader,
    key_file: Path | None = None,
    own_key: bytes | None = None,
) -> SealKeys:
    """Find the key a backup was sealed with: a key file given, the passphrase (with the salt in
    the header), or this node's own keys. Names the key needed when none fits."""
    tried: list[SealKeys] = []
    plain = header.key_source == "backup.key"
    if key_file is not None:
        k = read_key_file(key_file)
        tried.append(SealKeys(seal_key_from(k), None if plain else k, header.key_source))
    elif header.key_source == "passphrase" and header.kdf is not None:
        own = _own_keys(cfg, header, own_key)
        if own is not None:
            tried.append(own)
        else:
            phrase = ask_passphrase(f"passphrase of terminal {header.name}'s backup: ")
            salt, n = bytes(header.kdf["salt"]), int(header.kdf["n"])
            k = derive_key(phrase, salt, n)
            tried.append(SealKeys(seal_key_from(k), k, "passphrase"))
    else:
        own = _own_keys(cfg, header, own_key)
        if own is not None:
            tried.append(own)
    for keys in tried:
        if keys.id == header.key_id:
            return keys
    what = {
        "db.key": f"the db.key of terminal {header.name}",
        "backup.key": f"the backup.key of terminal {header.name}",
        "passphrase": f"the passphrase of terminal {header.name} (MESHPOS_PASSPHRASE)",
    }.get(header.key_source, header.key_source)
    hint = "" if header.key_source == "passphrase" else " with --key-file"
    raise ConfigError(
        f"this backup was sealed with key {header.key_id}, which is not the key given or this "
        f"node's: give {what}{hint} (or its header is damaged: try another copy)"
    )


def _own_keys(
    cfg: NodeConfig | None, header: BackupHeader, own_key: bytes | None = None
) -> SealKeys | None:
    if cfg is None:
        return None
    if header.key_source == "backup.key":
        path = cfg.dir / BACKUP_KEY_FILE
        return (
            SealKeys(seal_key_from(read_key_file(path)), None, "backup.key")
            if path.exists()
            else None
        )
    settings = StorageSettings.from_config(cfg)
    if not settings.encrypt or settings.key != (
        "passphrase" if header.key_source == "passphrase" else "file"
    ):
        return None
    kdf = header.kdf
    if (
        header.key_source == "passphrase"
        and kdf is not None
        and bytes(kdf["salt"]) != settings.salt
    ):
        return None
    k = own_key if own_key is not None else storage_key(cfg, settings)
    return None if k is None else SealKeys(seal_key_from(k), k, header.key_source)


@dataclass(frozen=True)
class BackupCheck:
    header: BackupHeader
    problems: tuple[str, ...]
    ops: int


def verify_backup(
    path: Path,
    *,
    cfg: NodeConfig | None = None,
    key_file: Path | None = None,
    workdir: Path | None = None,
) -> BackupCheck:
    """Authenticate every chunk, then open the snapshot and run quick_check and Ledger.verify.
    Raises CorruptBackup when the file itself is damaged; returns the problems verify found."""
    header = read_header(path)
    keys = resolve_keys(cfg, header, key_file)
    work = workdir or (cfg.dir if cfg is not None else Path(tempfile.gettempdir()))
    tmp = work / f".verify-backup-{os.getpid()}-{threading.get_ident()}.db"
    try:
        unseal_file(path, keys.seal, tmp)
        problems, ops, _ = check_database(tmp, header.store, keys.db)
    finally:
        tmp.unlink(missing_ok=True)
        remove_db_files(tmp)
    return BackupCheck(header, tuple(problems), ops)


@dataclass(frozen=True)
class RestoreResult:
    header: BackupHeader
    ops: int
    own_seq: int
    same_identity: bool
    moved_to: Path | None


def restore_backup(
    cfg: NodeConfig,
    path: Path,
    *,
    key_file: Path | None = None,
    force: bool = False,
    now_ms: int | None = None,
) -> RestoreResult:
    """Replace this node's database with a verified backup. Nothing changes unless the backup
    authenticates, belongs to this store and passes verify. The database it replaces is moved
    aside (`replaced/`), never deleted. Restoring a backup of this same terminal over a
    database that holds more of its own ops is refused without `force`."""
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
        problems, ops, vv = check_database(staged, cfg.store, node_key)
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
            moved.mkdir(parents=True, exist_ok=True)
            for f in [cfg.db_path, *(Path(str(cfg.db_path) + s) for s in ("-wal", "-shm"))]:
                if f.exists():
                    os.replace(f, moved / f.name)
        os.replace(staged, cfg.db_path)
        _fsync_dir(cfg.dir)
        _hold_signing(cfg, node_key)
    finally:
        staged.unlink(missing_ok=True)
        remove_db_files(staged)
    return RestoreResult(header, ops, own, same, moved)


def _hold_signing(cfg: NodeConfig, key: bytes | None) -> None:
    """A restored terminal may have signed ops after the backup that only its peers hold now:
    it must not sign again until the daemon got those back (see Terminal.set_bootstrapping)."""
    ledger = Ledger(cfg.db_path, cfg.store, key=key)
    try:
        with ledger.write():
            ledger.conn.execute("INSERT OR REPLACE INTO meta VALUES ('bootstrap', '1')")
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


def _private(path: Path) -> BinaryIO:
    """A new file only its owner can read (backups name the store, terminal and op counts)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
