"""The node directory and its one config file, `meshpos.toml`.

A node directory holds: `meshpos.toml` (settings, documented in docs/config.md), `node.key` (the
Ed25519 private key) and `meshpos.db` (the ledger). It is found from `--dir`, else
`$MESHPOS_DIR`, else `./meshpos-node`. Everything in it is for its owner only: files 0600,
directories 0700 (`OWNER_ONLY` is the umask `meshpos` runs with, and files are created with those
modes explicitly too); `loose_modes` names what is not, for `meshpos verify`.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from meshpos.core.errors import ConfigError, InputError
from meshpos.core.ops import Signer
from meshpos.domain.gst import Bands, check_band_key, check_gstin, parse_bands, state_code
from meshpos.domain.storetime import DEFAULT_ZONE, zone

CONFIG_FILE = "meshpos.toml"
KEY_FILE = "node.key"
DB_FILE = "meshpos.db"
DEFAULT_DIR = "meshpos-node"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
OWNER_ONLY = 0o077  # the umask: what a node or HQ writes, no other account may read


def check_name(value: str, what: str) -> str:
    if not _NAME.match(value or ""):
        raise ConfigError(
            f"{what} {value!r} must be 1-32 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return value


@dataclass
class NodeConfig:
    """The parsed `meshpos.toml`; unknown tables are kept for subsystems that read them."""

    dir: Path
    store: str
    name: str
    node_id: str
    user: str = "cashier"
    store_name: str = ""
    store_address: str = ""
    gstin: str = ""
    state: str = ""  # GST state code of the store ([store] state, or its GSTIN's first digits)
    timezone: str = DEFAULT_ZONE
    gst_bands: dict[str, Bands] = field(default_factory=dict)  # [gst.bands]: key -> bands
    earn_per_100: int = 1
    point_value: int = 100
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def db_path(self) -> Path:
        return self.dir / DB_FILE

    @property
    def key_path(self) -> Path:
        return self.dir / KEY_FILE

    @property
    def store_public_key(self) -> bytes | None:
        """The store key pinned by `store init` or `enroll install`; None before enrolment."""
        value = self.section("store").get("public_key")
        if value is None:
            return None
        try:
            raw = bytes.fromhex(str(value))
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ConfigError(f"{self.dir / CONFIG_FILE}: [store] public_key must be 64 hex digits")
        return raw

    def section(self, name: str) -> dict[str, Any]:
        value = self.raw.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{self.dir / CONFIG_FILE}: [{name}] must be a table")
        return value


def resolve_dir(given: str | os.PathLike[str] | None) -> Path:
    return Path(given or os.environ.get("MESHPOS_DIR") or DEFAULT_DIR).expanduser().resolve()


def write_secret(path: Path, data: bytes) -> None:
    """Create a key file readable by its owner only, durably; refuse to overwrite one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_private(path: Path, data: bytes | str, *, durable: bool = True) -> None:
    """Replace `path` with `data` atomically, mode 0600 from the first byte; `durable`: on disk
    before it replaces the old file (not for what is rewritten every second, like a status)."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def private_dir(path: Path) -> Path:
    """Create a directory, and any parents it lacks, for its owner only; existing ones are left
    as they are (`loose_modes` warns about one open to others)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for p in reversed(missing):
        p.mkdir(mode=0o700, exist_ok=True)
    return path


def loose_modes(directory: Path) -> list[str]:
    """What in a node's (or HQ's) directory other accounts may read or write, each with the
    command that closes it. Symbolic links are not followed."""
    out = []
    for path in [directory, *sorted(directory.rglob("*"))]:
        try:
            st = path.lstat()
        except OSError:
            continue
        if stat.S_ISLNK(st.st_mode) or not st.st_mode & OWNER_ONLY:
            continue
        want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        mode = stat.S_IMODE(st.st_mode)
        out.append(
            f"{path} is open to other accounts (mode {mode:04o}): run `chmod {want:o} {path}`"
        )
    return out


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def init_node(directory: Path, store: str, name: str, user: str = "cashier") -> NodeConfig:
    """Create a node directory: key pair, config. Refuses to overwrite an existing node."""
    check_name(store, "store id")
    check_name(name, "terminal name")
    check_name(user, "default user")
    if (directory / CONFIG_FILE).exists() or (directory / KEY_FILE).exists():
        raise ConfigError(f"{directory} already holds a meshpos node; choose another --dir")
    private_dir(directory)
    signer = Signer.generate()
    write_secret(directory / KEY_FILE, signer.private_bytes())
    doc: dict[str, Any] = {
        "node": {"store": store, "name": name, "node_id": signer.node_id, "user": user},
        "store": {
            "name": f"meshpos store {store}",
            "address": "",
            "gstin": "",
            "state": "",
            "timezone": DEFAULT_ZONE,
        },
        "loyalty": {"earn_per_100": 1, "point_value": 100},
    }
    write_private(directory / CONFIG_FILE, tomli_w.dumps(doc))
    return load_config(directory)


def load_config(directory: Path) -> NodeConfig:
    path = directory / CONFIG_FILE
    if not path.exists():
        raise ConfigError(
            f"no meshpos node in {directory}: run `meshpos init --dir {directory} ...` first "
            "or pass --dir / set MESHPOS_DIR"
        )
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    node = raw.get("node")
    if not isinstance(node, dict):
        raise ConfigError(f"{path}: the [node] table is missing")
    for key in ("store", "name", "node_id"):
        if not isinstance(node.get(key), str):
            raise ConfigError(f"{path}: [node] {key} is missing or not text")
    store = raw.get("store", {})
    loyalty = raw.get("loyalty", {})
    try:
        tax = _store_tax(store, raw.get("gst", {}))
    except InputError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    cfg = NodeConfig(
        dir=directory,
        store=node["store"],
        name=node["name"],
        node_id=node["node_id"],
        user=str(node.get("user", "cashier")),
        store_name=str(store.get("name", "")),
        store_address=str(store.get("address", "")),
        raw=raw,
        **tax,
    )
    for key in ("earn_per_100", "point_value"):
        value = loyalty.get(key, getattr(cfg, key))
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{path}: [loyalty] {key} must be a whole number >= 0")
        setattr(cfg, key, value)
    return cfg


def _store_tax(store: dict[str, Any], gst: Any) -> dict[str, Any]:
    """[store] gstin, state and timezone, and [gst] bands, checked: a typo in a GSTIN or a zone
    is refused at start rather than printed on every invoice."""
    gstin = str(store.get("gstin") or "")
    if gstin:
        gstin = check_gstin(gstin, "[store] gstin")
    state = str(store.get("state") or "")
    if state:
        state = state_code(state, "[store] state")
        if gstin and gstin[:2] != state:
            raise InputError(
                f"[store] state {state} does not match the state code of [store] gstin {gstin}"
            )
    timezone = str(store.get("timezone") or DEFAULT_ZONE)
    zone(timezone, "[store] timezone")
    if not isinstance(gst, dict) or not isinstance(gst.get("bands", {}), dict):
        raise InputError(
            '[gst] bands must be a table: category or hsn:NN = "5% up to 2500, 18% above"'
        )
    bands = {
        check_band_key(key, "[gst.bands] key"): parse_bands(value, f"[gst.bands] {key}")
        for key, value in gst.get("bands", {}).items()
    }
    return {
        "gstin": gstin,
        "state": state or gstin[:2],
        "timezone": timezone,
        "gst_bands": bands,
    }


def load_signer(cfg: NodeConfig) -> Signer:
    path = cfg.key_path
    if not path.exists():
        raise ConfigError(f"the node key {path} is missing")
    if path.stat().st_mode & 0o077:
        raise ConfigError(f"the node key {path} is readable by others: run `chmod 600 {path}`")
    signer = Signer.from_bytes(path.read_bytes())
    if signer.node_id != cfg.node_id:
        raise ConfigError(f"{path} does not belong to node {cfg.node_id} named in the config")
    return signer
