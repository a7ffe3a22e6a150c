"""The HQ directory: its config, HQ's Ed25519 signing key, its X25519 payment key, the admin token and
the store keys HQ holds for stores it enrolled itself.

Files (every secret 0600, created once and never overwritten):
`hq.toml` (name, database URL, limits), `hq.key` (Ed25519: HQ's identity as a node in every store),
`payment.key` (X25519: opens card data sealed at the tills), `admin.token` (bearer token of the
report API), `stores/<store>.key` (store keys of stores whose key HQ holds).
"""

from __future__ import annotations

import os
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from meshpos.core.errors import ConfigError
from meshpos.core.ops import Signer
from meshpos.service.config import check_name, private_dir, write_private, write_secret
from meshpos.service.logs import LogSettings

CONFIG_FILE = "hq.toml"
SIGNING_KEY = "hq.key"
PAYMENT_KEY = "payment.key"
ADMIN_TOKEN = "admin.token"
STORE_KEYS = "stores"
DEFAULT_DIR = "meshpos-hq"
DEFAULT_DB = "hq.db"
LOG_FILE = "logs/hq.log"

DEFAULTS: dict[str, int] = {
    "max_batch_ops": 5000,
    "max_body_bytes": 16 * 1024 * 1024,
    "auth_window_s": 86_400,
    "payment_stale_s": 60,
    # per process: what strangers can hold (meshpos/service/http_gate.py)
    "max_requests": 64,
    "max_requests_per_client": 8,
    "max_connections": 1024,
    "max_connections_per_client": 32,
    "header_timeout_s": 10,
    "body_timeout_s": 30,
}


@dataclass
class HQConfig:
    dir: Path
    name: str
    node_id: str
    db: str = ""
    limits: dict[str, int] = field(default_factory=lambda: dict(DEFAULTS))
    raw: dict[str, Any] = field(default_factory=dict)  # every table, for the parts that read one

    @property
    def db_url(self) -> str:
        """A `postgresql://` URL, or the SQLite file (default `hq.db` in the HQ directory)."""
        if not self.db:
            return str(self.dir / DEFAULT_DB)
        if self.db.startswith(("postgresql://", "postgres://")):
            return self.db
        path = Path(self.db.removeprefix("sqlite:///").removeprefix("sqlite://"))
        return str(path if path.is_absolute() else self.dir / path)

    def limit(self, name: str) -> int:
        return int(self.limits.get(name, DEFAULTS[name]))

    def log_settings(self) -> LogSettings:
        """The `[log]` table (JSON lines in logs/hq.log by default)."""
        return LogSettings.from_table(self.section("log"), str(self.dir / CONFIG_FILE), LOG_FILE)

    def section(self, name: str) -> dict[str, Any]:
        """A table of hq.toml such as `[log]` or `[metrics]` (empty when absent)."""
        value = self.raw.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{self.dir / CONFIG_FILE}: [{name}] must be a table")
        return value


def resolve_dir(given: str | os.PathLike[str] | None) -> Path:
    return Path(given or os.environ.get("MESHPOS_HQ_DIR") or DEFAULT_DIR).expanduser().resolve()


def _read_secret(path: Path, what: str) -> bytes:
    if not path.exists():
        raise ConfigError(f"{what} {path} is missing: is this an HQ directory (`meshpos hq init`)?")
    if path.stat().st_mode & 0o077:
        raise ConfigError(f"{what} {path} is readable by others: run `chmod 600 {path}`")
    return path.read_bytes()


def init_hq(directory: Path, *, name: str = "hq", db: str = "") -> HQConfig:
    """Create an HQ directory with fresh keys. Refuses to overwrite an existing one."""
    check_name(name, "HQ name")
    if (directory / CONFIG_FILE).exists() or (directory / SIGNING_KEY).exists():
        raise ConfigError(f"{directory} already holds an HQ; choose another --dir")
    private_dir(directory)
    signer = Signer.generate()
    write_secret(directory / SIGNING_KEY, signer.private_bytes())
    payment = X25519PrivateKey.generate()
    write_secret(
        directory / PAYMENT_KEY,
        payment.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        ),
    )
    write_secret(directory / ADMIN_TOKEN, secrets.token_urlsafe(32).encode())
    doc = {"hq": {"name": name, "node_id": signer.node_id, "db": db}, "limits": dict(DEFAULTS)}
    write_private(directory / CONFIG_FILE, tomli_w.dumps(doc))
    return load_hq(directory)


def load_hq(directory: Path) -> HQConfig:
    path = directory / CONFIG_FILE
    if not path.exists():
        raise ConfigError(
            f"no HQ in {directory}: run `meshpos hq init --dir {directory}` first, "
            "or pass --dir / set MESHPOS_HQ_DIR"
        )
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    hq = raw.get("hq")
    if not isinstance(hq, dict) or not isinstance(hq.get("node_id"), str):
        raise ConfigError(f"{path}: the [hq] table or its node_id is missing")
    limits = dict(DEFAULTS)
    for key, value in raw.get("limits", {}).items():
        if key not in DEFAULTS or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{path}: [limits] {key} must be one of {sorted(DEFAULTS)}, > 0")
        limits[key] = value
    return HQConfig(
        dir=directory,
        name=str(hq.get("name", "hq")),
        node_id=hq["node_id"],
        db=str(hq.get("db", "")),
        limits=limits,
        raw=raw,
    )


def load_signer(cfg: HQConfig) -> Signer:
    signer = Signer.from_bytes(_read_secret(cfg.dir / SIGNING_KEY, "the HQ signing key"))
    if signer.node_id != cfg.node_id:
        raise ConfigError(f"{cfg.dir / SIGNING_KEY} does not belong to HQ node {cfg.node_id}")
    return signer


def load_payment_key(cfg: HQConfig) -> X25519PrivateKey:
    raw = _read_secret(cfg.dir / PAYMENT_KEY, "the HQ payment key")
    if len(raw) != 32:
        raise ConfigError(f"{cfg.dir / PAYMENT_KEY} is damaged: expected 32 bytes of X25519 key")
    return X25519PrivateKey.from_private_bytes(raw)


def payment_public_key(cfg: HQConfig) -> bytes:
    return (
        load_payment_key(cfg)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


def admin_token(cfg: HQConfig) -> str:
    return _read_secret(cfg.dir / ADMIN_TOKEN, "the admin token").decode().strip()


def store_key_path(cfg: HQConfig, store: str) -> Path:
    return cfg.dir / STORE_KEYS / f"{check_name(store, 'store id')}.key"


def save_store_key(cfg: HQConfig, store: str, key: Signer) -> None:
    path = store_key_path(cfg, store)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    if path.exists():
        raise ConfigError(f"HQ already holds a key for store {store} ({path})")
    write_secret(path, key.private_bytes())


def load_store_key(cfg: HQConfig, store: str) -> Signer | None:
    path = store_key_path(cfg, store)
    if not path.exists():
        return None
    return Signer.from_bytes(_read_secret(path, f"the key of store {store}"))
