"""Encryption at rest: the node database through SQLCipher, its key, and the card-number scan.

With `[storage] encrypt = true` in meshpos.toml the whole database (pages, WAL frames, the scratch
database `verify` attaches) is SQLCipher ciphertext: AES-256 per page with an HMAC, so a stolen
terminal or disk gives away no product, customer or sale. The key is 32 random bytes either in
`db.key` (hex, mode 0600, `[storage] key = "file"`) or derived at start from a passphrase with
scrypt (`key = "passphrase"`, salt in meshpos.toml, passphrase from $MESHPOS_PASSPHRASE or a
prompt). SQLCipher gets the raw key (`PRAGMA key = "x'..'"`), so opening a connection costs no
KDF: the daemon, the CLI and a backup thread can each open their own.

`find_card_numbers` looks for readable payment card numbers (13-19 digit runs passing the Luhn
check, with an issuer prefix) in every file a node keeps, for `meshpos verify`.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import re
import sys
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from meshpos.config import CONFIG_FILE, NodeConfig, write_secret
from meshpos.errors import ConfigError

DB_KEY_FILE = "db.key"
PASSPHRASE_ENV = "MESHPOS_PASSPHRASE"
KEY_BYTES = 32
SQLITE_HEADER = b"SQLite format 3\x00"
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
KEY_MODES = ("file", "passphrase")


_PROMPTED: dict[tuple[str, bytes, int], bytes] = {}


class WrongKey(ConfigError):
    """The database could not be opened with the key given (or is not a database at all)."""


@dataclass(frozen=True)
class StorageSettings:
    """The `[storage]` table of meshpos.toml."""

    encrypt: bool = False
    key: str = "file"
    salt: bytes = b""
    scrypt_n: int = SCRYPT_N

    @classmethod
    def from_config(cls, cfg: NodeConfig) -> StorageSettings:
        raw = cfg.section("storage")
        where = f"{cfg.dir / CONFIG_FILE}: [storage]"
        unknown = set(raw) - {"encrypt", "key", "salt", "scrypt_n"}
        if unknown:
            raise ConfigError(f"{where} has unknown key(s) {', '.join(sorted(unknown))}")
        encrypt = raw.get("encrypt", False)
        if not isinstance(encrypt, bool):
            raise ConfigError(f"{where} encrypt must be true or false")
        mode = raw.get("key", "file")
        if mode not in KEY_MODES:
            raise ConfigError(f"{where} key must be one of {', '.join(KEY_MODES)}")
        try:
            salt = bytes.fromhex(str(raw.get("salt", "")))
        except ValueError:
            raise ConfigError(f"{where} salt must be hex") from None
        n = raw.get("scrypt_n", SCRYPT_N)
        if not isinstance(n, int) or n < 2**10 or n & (n - 1):
            raise ConfigError(f"{where} scrypt_n must be a power of two >= 1024")
        if encrypt and mode == "passphrase" and len(salt) < 16:
            raise ConfigError(f"{where} a passphrase key needs a salt: run `meshpos encrypt` again")
        return cls(encrypt, mode, salt, n)


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


def write_key_file(path: Path, key: bytes) -> None:
    write_secret(path, (key.hex() + "\n").encode())


def ask_passphrase(prompt: str = "meshpos passphrase: ", confirm: bool = False) -> str:
    """$MESHPOS_PASSPHRASE, else a prompt on the terminal; never a silent empty key."""
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value
    if not sys.stdin.isatty():
        raise ConfigError(
            f"this node's database is unlocked by a passphrase: set {PASSPHRASE_ENV} "
            "(no terminal to ask on)"
        )
    value = getpass.getpass(prompt)
    if confirm and getpass.getpass("again: ") != value:
        raise ConfigError("the two passphrases differ")
    return value


def storage_key(cfg: NodeConfig, settings: StorageSettings | None = None) -> bytes | None:
    """The key that opens this node's database, or None when it is not encrypted."""
    s = settings or StorageSettings.from_config(cfg)
    if not s.encrypt:
        return None
    if s.key == "passphrase":
        phrase = os.environ.get(PASSPHRASE_ENV)
        if phrase:
            return derive_key(phrase, s.salt, s.scrypt_n)
        # Asked once per process: the daemon's other threads open their own connections later.
        slot = (str(cfg.dir), s.salt, s.scrypt_n)
        if slot not in _PROMPTED:
            _PROMPTED[slot] = derive_key(ask_passphrase(), s.salt, s.scrypt_n)
        return _PROMPTED[slot]
    path = cfg.dir / DB_KEY_FILE
    if not path.exists():
        raise ConfigError(
            f"the database key {path} is missing ([storage] encrypt = true): restore it from "
            "where you keep a copy"
        )
    return read_key_file(path)


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


def set_storage_config(cfg: NodeConfig, values: dict[str, Any]) -> None:
    path = cfg.dir / CONFIG_FILE
    doc = tomllib.loads(path.read_text())
    doc["storage"] = {**doc.get("storage", {}), **values}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(tomli_w.dumps(doc))
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(path)
    cfg.raw = doc


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


def export_database(src: Path, src_key: bytes | None, dst: Path, dst_key: bytes | None) -> None:
    """Copy a database into a new file under another key (None: plain) with sqlcipher_export,
    inside one write transaction on the source so no commit lands half in the copy."""
    db = sqlcipher()
    dst.unlink(missing_ok=True)
    remove_db_files(dst)
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


@dataclass(frozen=True)
class EncryptResult:
    ops: int
    mode: str
    key_file: Path | None
    already: bool = False


def encrypt_node(
    cfg: NodeConfig, mode: str = "file", passphrase: str | None = None
) -> EncryptResult:
    """Turn a plain node database into an encrypted one, in place and verified.

    Steps, each safe to crash after: make the key (db.key, or salt + passphrase); copy the
    database into `meshpos.db.encrypting` under it; verify the copy (chains, signatures, views);
    record `[storage]` in meshpos.toml; swap the copy in and delete the plain file and its WAL.
    Running it again after a crash finishes the job. The daemon and tills must be stopped."""
    from meshpos.ledger.store import Ledger

    if mode not in KEY_MODES:
        raise ConfigError(f"key mode must be one of {', '.join(KEY_MODES)}")
    current = StorageSettings.from_config(cfg)
    db_path = cfg.db_path
    if current.encrypt and db_path.exists() and not is_plain_sqlite(db_path):
        key = storage_key(cfg, current)
        assert key is not None
        ledger = Ledger(db_path, cfg.store, key=key)
        try:
            ops = ledger.op_count()
        finally:
            ledger.close()
        return EncryptResult(ops, current.key, cfg.dir / DB_KEY_FILE, already=True)
    if current.encrypt:
        mode = current.key
    key_file: Path | None = None
    values: dict[str, Any] = {"encrypt": True, "key": mode}
    if mode == "file":
        key_file = cfg.dir / DB_KEY_FILE
        if not key_file.exists():
            write_key_file(key_file, os.urandom(KEY_BYTES))
        key = read_key_file(key_file)
    else:
        salt = current.salt if current.encrypt and current.salt else os.urandom(16)
        phrase = passphrase if passphrase is not None else ask_passphrase(confirm=True)
        key = derive_key(phrase, salt, current.scrypt_n)
        values.update(salt=salt.hex(), scrypt_n=current.scrypt_n)
    if not db_path.exists():
        Ledger(db_path, cfg.store).close()
    refuse_if_open(db_path, "encrypting it")
    staged = db_path.with_name(db_path.name + ".encrypting")
    export_database(db_path, None, staged, key)
    check = Ledger(staged, cfg.store, key=key)
    try:
        problems = check.verify()
        ops = check.op_count()
        check.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        check.close()
    if problems:
        staged.unlink(missing_ok=True)
        raise ConfigError(f"the encrypted copy failed verify ({problems[0]}); nothing was changed")
    set_storage_config(cfg, values)
    remove_db_files(staged)
    os.replace(staged, db_path)
    remove_db_files(db_path)
    _fsync_dir(cfg.dir)
    return EncryptResult(ops, mode, key_file)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- card numbers on disk -------------------------------------------------------------------------

# A maximal run of 13-19 digits, or 4-digit groups split by single spaces or dashes.
_CARD = re.compile(
    rb"(?<![0-9])(?:[0-9]{13,19}|[0-9]{4}(?:[ -][0-9]{4}){2,3}(?:[ -][0-9]{1,3})?)(?![0-9])"
)
_CHUNK = 4 << 20
_OVERLAP = 64
_CONTEXT = 32


@dataclass(frozen=True)
class CardHit:
    path: Path
    offset: int
    masked: str

    def __str__(self) -> str:
        return f"readable card number {self.masked} in {self.path} at byte {self.offset}"


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def ean_ok(digits: str) -> bool:
    """The GS1 check digit (EAN-13, GTIN-14): weights 3 and 1 from the right, before the check."""
    total = sum(
        (3 if i % 2 == 0 else 1) * (ord(c) - 48) for i, c in enumerate(reversed(digits[:-1]))
    )
    return (10 - total % 10) % 10 == ord(digits[-1]) - 48


def issuer_ok(d: str) -> bool:
    """An issuer prefix and length of a real card brand (Visa, Mastercard, Amex, Diners, JCB,
    Discover, UnionPay, Maestro, RuPay). In-store barcodes (GS1 prefixes 20-29), India's EAN
    prefix 890 and millisecond timestamps fall outside them."""
    n, p2, p3, p4 = len(d), int(d[:2]), int(d[:3]), int(d[:4])
    if d[0] == "4":
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16
    if p2 in (34, 37):
        return n == 15
    if p2 in (36, 38, 39) or 300 <= p3 <= 305:
        return 14 <= n <= 19
    if 3528 <= p4 <= 3589 or p3 in (353, 356):
        return 16 <= n <= 19
    if d[0] == "6" or p2 == 50 or 56 <= p2 <= 58 or p2 in (81, 82):
        return 13 <= n <= 19
    return False


def looks_like_card(digits: str) -> bool:
    """13-19 digits, Luhn-valid, with a card brand's prefix and length; a 13-digit run that is
    also a valid EAN-13 is taken for a barcode."""
    if not 13 <= len(digits) <= 19 or not luhn_ok(digits) or not issuer_ok(digits):
        return False
    return not (len(digits) == 13 and ean_ok(digits))


def _mask(digits: str) -> str:
    return digits[:4] + "*" * (len(digits) - 8) + digits[-4:]


# Digits -> "1", space and dash -> "2", anything else -> "0": bytes.translate and bytes.find run
# at memory speed, so only the rare stretches that could hold a card number meet the regex.
_CLASSES = bytes(0x31 if 48 <= b <= 57 else 0x32 if b in (0x20, 0x2D) else 0x30 for b in range(256))
_NEEDLES = (b"1" * 13, b"11112111121111")


def _stretches(mapped: bytes) -> list[tuple[int, int]]:
    """Maximal stretches of digits and separators that contain 13 digits in a row or three
    separated groups of four."""
    spans: set[tuple[int, int]] = set()
    for needle in _NEEDLES:
        i = mapped.find(needle)
        while i != -1:
            start, end = i, i + len(needle)
            while start > 0 and mapped[start - 1] != 0x30:
                start -= 1
            while end < len(mapped) and mapped[end] != 0x30:
                end += 1
            spans.add((start, end))
            i = mapped.find(needle, end)
    return sorted(spans)


def scan_bytes(data: bytes) -> Iterator[tuple[int, str]]:
    seen: set[int] = set()
    for start, end in _stretches(data.translate(_CLASSES)):
        for m in _CARD.finditer(data, max(0, start - 1), min(len(data), end + 1)):
            digits = re.sub(rb"[ -]", b"", m.group()).decode()
            if m.start() not in seen and looks_like_card(digits):
                seen.add(m.start())
                yield m.start(), digits


def scan_file(path: Path, chunk_size: int = _CHUNK) -> list[CardHit]:
    """Scan in chunks; each round keeps the last bytes so a number split across two reads is
    found once, with the byte before it in view (a run of 20+ digits is not a card number)."""
    hits: list[CardHit] = []
    try:
        with open(path, "rb") as fh:
            data, base, ctx = b"", 0, 0
            while True:
                chunk = fh.read(chunk_size)
                data += chunk
                final = not chunk
                limit = len(data) if final else max(ctx, len(data) - _OVERLAP)
                for off, digits in scan_bytes(data):
                    if off < ctx:
                        continue
                    if off >= limit:
                        break
                    hits.append(CardHit(path, base + off, _mask(digits)))
                if final:
                    return hits
                cut = max(0, limit - _CONTEXT)
                base, data, ctx = base + cut, data[cut:], limit - cut
    except OSError:
        return hits


def find_card_numbers(paths: Iterable[Path]) -> list[CardHit]:
    """Every readable card number in the given files and, recursively, directories."""
    hits: list[CardHit] = []
    for root in paths:
        if root.is_file():
            hits += scan_file(root)
        elif root.is_dir():
            for path in sorted(root.rglob("*")):
                if path.is_file() and not path.is_symlink():
                    hits += scan_file(path)
    return hits


def card_number_problems(cfg: NodeConfig) -> list[str]:
    """For `meshpos verify`: card numbers readable anywhere the node keeps files (database, WAL,
    backups, receipts, logs) and in the off-site backup directory if one is configured."""
    roots = [cfg.dir]
    offsite = cfg.section("backup").get("offsite_dir")
    if isinstance(offsite, str) and offsite:
        roots.append(Path(offsite).expanduser())
    return [str(hit) for hit in find_card_numbers(roots)]
