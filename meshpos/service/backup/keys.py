"""Which keys seal and open a node's backups.

A node with encryption at rest seals with (HKDF of) its database key, from db.key or its
passphrase, and the snapshot inside stays a SQLCipher database under that key. A node without
gets a `backup.key` (0600) on its first backup. Keep a copy of that key away from the terminal:
a backup is no use without it.
"""

from __future__ import annotations

import os
from pathlib import Path

from meshpos.core.errors import ConfigError
from meshpos.ledger.encryption import KEY_BYTES, derive_key, read_key_file
from meshpos.service.backup.format import BackupHeader, SealKeys, seal_key_from
from meshpos.service.config import NodeConfig
from meshpos.service.encryption import StorageSettings, ask_passphrase, storage_key, write_key_file

BACKUP_KEY_FILE = "backup.key"


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
