"""Which key opens this node's database, and turning a plain database into an encrypted one.

The key settings live in `[storage]` of meshpos.toml: a key file (`db.key`, hex, 0600) or a
passphrase stretched with scrypt (salt in meshpos.toml, passphrase from $MESHPOS_PASSPHRASE or a
prompt). The SQLCipher connection itself is `meshpos.ledger.encryption`.
"""

from __future__ import annotations

import getpass
import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from meshpos.core.errors import ConfigError
from meshpos.ledger.encryption import (
    KEY_BYTES,
    SCRYPT_N,
    derive_key,
    export_database,
    is_plain_sqlite,
    read_key_file,
    refuse_if_open,
    remove_db_files,
)
from meshpos.ledger.store import Ledger
from meshpos.service.config import CONFIG_FILE, NodeConfig, fsync_dir, write_private, write_secret

DB_KEY_FILE = "db.key"
PASSPHRASE_ENV = "MESHPOS_PASSPHRASE"
KEY_MODES = ("file", "passphrase")
_PROMPTED: dict[tuple[str, bytes, int], bytes] = {}


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


def set_storage_config(cfg: NodeConfig, values: dict[str, Any]) -> None:
    path = cfg.dir / CONFIG_FILE
    doc = tomllib.loads(path.read_text())
    doc["storage"] = {**doc.get("storage", {}), **values}
    write_private(path, tomli_w.dumps(doc))
    cfg.raw = doc


def encrypt_new_node(cfg: NodeConfig) -> Path:
    """Make a node created by `init_node` encrypted from its first page: a fresh `db.key` (0600)
    and `[storage] encrypt = true`, before the database exists, so no plaintext ever reaches
    the disk. What `meshpos init` does unless `--no-encrypt`. Returns the key file."""
    if cfg.db_path.exists():
        raise ConfigError(f"{cfg.db_path} exists already: encrypt it with `meshpos encrypt`")
    key_file = cfg.dir / DB_KEY_FILE
    write_key_file(key_file, os.urandom(KEY_BYTES))
    set_storage_config(cfg, {"encrypt": True, "key": "file"})
    return key_file


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
        check.checkpoint()
    finally:
        check.close()
    if problems:
        staged.unlink(missing_ok=True)
        raise ConfigError(f"the encrypted copy failed verify ({problems[0]}); nothing was changed")
    set_storage_config(cfg, values)
    remove_db_files(staged)
    os.replace(staged, db_path)
    remove_db_files(db_path)
    fsync_dir(cfg.dir)
    return EncryptResult(ops, mode, key_file)
