"""The sealed backup file (`.mpbak`): header, chunked AES-256-GCM sealing, and reading it back.

    b"MPBACKUP" | u32 header length | header (msgpack map) | chunk*
    chunk = u32 length | AES-256-GCM(up to 1 MiB of the snapshot) with its 16-byte tag
    nonce = 8 random bytes from the header || u32 chunk index
    associated data = sha256(magic + header) || final-chunk flag

so a flipped byte anywhere, a truncated file, reordered chunks or an edited header fail
authentication. The seal key is HKDF-SHA256 of a 32-byte key (which key: keys.py); the header
names it by `key_id` and, for a passphrase, carries the scrypt salt so a passphrase alone restores
anywhere.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from meshpos.core.errors import InputError, RemoteError
from meshpos.core.ops import pack, unpack
from meshpos.ledger.encryption import KEY_BYTES, key_id
from meshpos.service.config import fsync_dir

MAGIC = b"MPBACKUP"
FORMAT = 1
SUFFIX = ".mpbak"
CHUNK = 1 << 20
_LEN = struct.Struct(">I")
_MAX_HEADER = 1 << 20


class CorruptBackup(RemoteError):
    """A backup file failed authentication or verification: it was damaged or altered."""


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
        with open(src, "rb") as fin, private_file(tmp) as fout:
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
        fsync_dir(out.parent)
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
        with private_file(out) as fh:
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


def private_file(path: Path) -> BinaryIO:
    """A new file only its owner can read (backups name the store, terminal and op counts)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")
