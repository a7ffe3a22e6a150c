"""Encryption at rest: the node database through SQLCipher.

With `[storage] encrypt = true` in meshpos.toml the whole database (pages, WAL frames, the scratch
database `verify` attaches) is SQLCipher ciphertext: AES-256 per page with an HMAC, so a stolen
terminal or disk gives away no product, customer or sale. The key is 32 random bytes either in
`db.key` (hex, mode 0600, `[storage] key = "file"`) or derived at start from a passphrase with
scrypt (`key = "passphrase"`, salt in meshpos.toml, passphrase from $MESHPOS_PASSPHRASE or a
prompt). SQLCipher gets the raw key (`PRAGMA key = "x'..'"`), so opening a connection costs no
KDF: the daemon, the CLI and a backup thread can each open their own. Which key a node uses is
`meshpos.service.encryption`; the scan for readable card numbers is `meshpos.service.card_scan`.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import suppress
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from meshpos.core.errors import ConfigError

KEY_BYTES = 32
SQLITE_HEADER = b"SQLite format 3\x00"
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1


class WrongKey(ConfigError):
    """The database could not be opened with the key given (or is not a database at all)."""


# -- keys -----------------------------------------------------------------------------------------


def key_id(key: bytes) -> str:
    """A short fingerprint that names a key without revealing it."""
    return hashlib.sha256(b"meshpos key id" + key).hexdigest()[:16]


def derive_key(passphrase: str, salt: bytes, n: int = SCRYPT_N) -> bytes:
    if not passphrase:
        raise ConfigError("the passphrase is empty")
    kdf = Scrypt(salt=salt, length=KEY_BYTES, n=n, r=SCRYPT_R, p=SCRYPT_P)
    return kdf.derive(passphrase.encode())


def read_key_file(path: Path) -> bytes:
    """A 0600 file holding a 32-byte key as 64 hex digits (raw 32 bytes are accepted too)."""
    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the key file {path}: {exc.strerror}") from None
    if st.st_mode & 0o077:
        raise ConfigError(f"the key file {path} is readable by others: run `chmod 600 {path}`")
    if len(data) == KEY_BYTES:
        return data
    try:
        key = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise ConfigError(f"the key file {path} is damaged: expected 64 hex digits")
    return key


def is_plain_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return False


# -- connections ----------------------------------------------------------------------------------


def sqlcipher() -> Any:
    try:
        from sqlcipher3 import dbapi2
    except ImportError:
        raise ConfigError(
            "encryption at rest needs the sqlcipher3 package: pip install sqlcipher3"
        ) from None
    return dbapi2


def connect_encrypted(path: str, key: bytes) -> Any:
    """A SQLCipher connection keyed before its first read; a wrong key is a one-line WrongKey."""
    if len(key) != KEY_BYTES:
        raise ConfigError(f"a database key is {KEY_BYTES} bytes, got {len(key)}")
    db = sqlcipher()
    conn = db.connect(path, isolation_level=None, check_same_thread=False)
    # SQLCipher logs a failed HMAC check to stderr; we report it as one line instead.
    conn.execute("PRAGMA cipher_log_level = NONE")
    conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
    try:
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
    except db.DatabaseError as exc:
        conn.close()
        name = Path(path).name
        if is_plain_sqlite(Path(path)):
            raise WrongKey(
                f"{name} is not encrypted but a key was given: run `meshpos encrypt` to finish "
                "encrypting it"
            ) from None
        raise WrongKey(
            f"cannot open {name}: wrong key or passphrase, or not a meshpos database "
            f"(SQLCipher: {exc})"
        ) from None
    return conn


def holders(path: Path) -> list[int]:
    """Other processes that have the database (or its WAL) open, from /proc (Linux); [] where
    that cannot be known. A till or daemon holding it would keep writing to a replaced file."""
    names = {str(path.resolve()) + suffix for suffix in ("", "-wal", "-shm")}
    found: list[int] = []
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in names:
                    found.append(pid)
                    break
            except OSError:
                continue
    return found


def refuse_if_open(path: Path, what: str) -> None:
    pids = holders(path)
    if pids:
        raise ConfigError(
            f"{path.name} is open in process(es) {', '.join(map(str, pids))} (a till or the "
            f"daemon): close them before {what}"
        )


def remove_db_files(db_path: Path) -> None:
    for suffix in ("-wal", "-shm", "-journal"):
        Path(str(db_path) + suffix).unlink(missing_ok=True)


def create_owner_only(path: str) -> None:
    """Create an empty database file with mode 0600 unless it exists. SQLite gives the WAL and
    shared-memory files it makes later the mode of the database file, so the three are the
    owner's alone whatever the process's umask (an existing file keeps its mode: `meshpos
    verify` warns about a loose one)."""
    if path == ":memory:" or path.startswith("file:"):
        return
    with suppress(OSError):  # it exists, or cannot be made: then SQLite says why, as before
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def export_database(src: Path, src_key: bytes | None, dst: Path, dst_key: bytes | None) -> None:
    """Copy a database into a new file under another key (None: plain) with sqlcipher_export,
    inside one write transaction on the source so no commit lands half in the copy."""
    db = sqlcipher()
    dst.unlink(missing_ok=True)
    remove_db_files(dst)
    create_owner_only(str(dst))
    conn = connect_encrypted(str(src), src_key) if src_key else db.connect(str(src))
    try:
        conn.isolation_level = None
        conn.execute("PRAGMA busy_timeout = 30000")
        attach_key = f"x'{dst_key.hex()}'" if dst_key else ""
        conn.execute(f'ATTACH DATABASE ? AS dest KEY "{attach_key}"', (str(dst),))
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("SELECT sqlcipher_export('dest')")
        finally:
            conn.execute("COMMIT")
        conn.execute("DETACH DATABASE dest")
    except db.DatabaseError as exc:
        dst.unlink(missing_ok=True)
        raise ConfigError(f"could not copy {src.name} to {dst.name}: {exc}") from None
    finally:
        conn.close()
    with open(dst, "rb") as fh:
        os.fsync(fh.fileno())
