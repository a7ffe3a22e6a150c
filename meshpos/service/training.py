"""Training mode: a till switched to practice rings into a separate practice ledger.

The practice ledger is a node directory of its own inside the real one (`training/`): its own key,
its own database, and a store id no real store has (`<store>-TRAINING`), so none of its ops can
ever be taken by a peer or by HQ (they refuse ops of another store), and no real report can count
them. It starts from this store's catalogue and stock and a practice customer with points; its
meshpos.toml has no mesh and no HQ, and says `[training] practice = true`, which puts the
TRAINING watermark on every screen and receipt. While `training.json` is in the real node
directory, the front doors that ring sales (`meshpos till`, `sell`, `return`, `exchange`, the web
till when it opens) use the practice ledger; the daemon keeps syncing the real one meanwhile.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from meshpos.core.errors import ConfigError, LocalError
from meshpos.domain.catalog import CatalogRow
from meshpos.service.config import CONFIG_FILE, NodeConfig, init_node, load_config
from meshpos.service.terminal import Terminal

PRACTICE_DIR = "training"
FLAG_FILE = "training.json"
WATERMARK = "TRAINING"
NOTICE = "TRAINING MODE: practice sales only, nothing is real, synced or reported"
PRACTICE_CUSTOMER = {"name": "Practice Customer", "phone": "9000000000"}
PRACTICE_POINTS = 500
COPIED_TABLES = ("store", "loyalty", "printer", "scanner", "power")


@dataclass(frozen=True)
class TrainingState:
    practice_dir: Path
    started_ms: int
    by: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "practice_dir": str(self.practice_dir),
            "started_ms": self.started_ms,
            "by": self.by,
        }


def is_practice(cfg: NodeConfig) -> bool:
    """Whether this node directory is a practice ledger (watermark everything it shows)."""
    return cfg.section("training").get("practice") is True


def practice_store(store: str) -> str:
    name = f"{store}-TRAINING"
    return name if len(name) <= 32 else f"{store[:23]}-TRAINING"


def active(directory: Path) -> TrainingState | None:
    """The training switch of a real node directory, or None when it sells for real."""
    try:
        data = json.loads((directory / FLAG_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{directory / FLAG_FILE} is damaged ({exc}): run `meshpos training stop`"
        ) from None
    return TrainingState(
        directory / PRACTICE_DIR, int(data.get("started_ms", 0)), str(data.get("by", ""))
    )


def selling_dir(directory: Path) -> Path:
    """Where the front doors that ring sales open their terminal: the practice ledger while
    training is on (and built), else the node directory itself."""
    state = active(directory)
    if state is not None and (state.practice_dir / CONFIG_FILE).exists():
        return state.practice_dir
    return directory


def refuse_practice(cfg: NodeConfig, what: str) -> None:
    """Refuse to carry a practice ledger anywhere (mesh, HQ, bundles)."""
    if is_practice(cfg):
        raise LocalError(f"{cfg.dir} is a practice ledger: it is never {what}")


def start(real: Terminal, user: str, now_ms: int, *, keep: bool = False) -> TrainingState:
    """Switch this till to practice: (re)build the practice ledger from the store's catalogue
    and stock unless `keep` (carry on with the last practice), then set the switch."""
    refuse_practice(real.cfg, "switched to training (it is one)")
    directory = real.cfg.dir
    practice = directory / PRACTICE_DIR
    if not keep or not (practice / CONFIG_FILE).exists():
        _build(real, practice)
    (directory / FLAG_FILE).write_text(json.dumps({"started_ms": now_ms, "by": user}))
    return TrainingState(practice, now_ms, user)


def stop(directory: Path) -> TrainingState | None:
    """Back to real selling; the practice ledger stays for review until the next start."""
    state = active(directory)
    (directory / FLAG_FILE).unlink(missing_ok=True)
    return state


def _build(real: Terminal, practice: Path) -> None:
    if practice.exists():
        shutil.rmtree(practice)
    cfg = init_node(practice, practice_store(real.cfg.store), real.cfg.name, real.cfg.user)
    doc: dict[str, Any] = {"node": cfg.raw["node"]}
    for table in COPIED_TABLES:
        if isinstance(real.cfg.raw.get(table), dict):
            doc[table] = dict(real.cfg.raw[table])
    doc.setdefault("store", {}).pop("public_key", None)
    doc["training"] = {"practice": True, "store": real.cfg.store, "node_id": real.node_id}
    (practice / CONFIG_FILE).write_text(tomli_w.dumps(doc))
    rows = []
    for i, r in enumerate(real.products(limit=1_000_000)):
        fields = {
            k: r[k] for k in ("name", "barcode", "category", "size", "colour", "price", "gst_rate")
        }
        rows.append(
            CatalogRow(line=i + 2, sku=str(r["sku"]), fields=fields, stock=max(0, int(r["stock"])))
        )
    elsewhere = real.ledger.other_stores.snapshot()
    t = Terminal.open(practice)
    try:
        if elsewhere:  # other stores' stock as this till last pulled it
            pulled = max(int(x["fetched_ms"]) for x in elsewhere)
            t.ledger.other_stores.replace(elsewhere, pulled)
        t.import_catalog(rows, user="training")
        cid = t.add_customer(PRACTICE_CUSTOMER, user="training")
        t.append("loyalty.adjust", {"customer_id": cid, "delta": PRACTICE_POINTS,
                                     "reason": "practice points"}, "training")  # fmt: skip
    finally:
        t.close()
    load_config(practice)
