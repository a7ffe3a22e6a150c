"""Scenario files: what to simulate, in TOML, checked on load with messages that name the key.

A scenario is a simulated period of one or more stores: their counters, the LAN and WAN they sit
on, the clocks of their terminals, a workload, and faults at set times (plus random ones). Every
key is documented in meshpos/sim/scenarios/README.md; `load()` refuses unknown keys, so a typo is an error,
not a silently ignored setting. `dump()` writes a scenario back out (the fuzzer writes the case it
shrank this way), and `load(dump(s)) == s`.

Durations are strings with a unit ("1500ms", "90s", "20m", "3h", "1h30m") or whole seconds.
Times of day are "HH:MM" (on the simulated day; the run starts at `start`) or an offset "+2h".
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import tomli_w

from meshpos.core.errors import InputError

MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")

FAULT_KINDS = (
    "wan_down",
    "wan_up",
    "hq_cut",
    "hq_restore",
    "partition",
    "heal",
    "isolate",
    "link",
    "link_reset",
    "crash",
    "restart",
    "disk_death",
    "clock",
)
SHAPES = ("flat", "normal", "festive", "popup")
RELAYS = ("elected", "all")


class ScenarioError(InputError):
    """A scenario file is missing a key, has an unknown one, or a value out of range."""


# -- small value parsers --------------------------------------------------------------------------


def parse_duration(value: Any, where: str) -> int:
    """'90s' -> 90000 ms; whole numbers are seconds."""
    if isinstance(value, bool):
        raise ScenarioError(f"{where}: {value!r} is not a duration (use e.g. '90s', '20m', '3h')")
    if isinstance(value, int):
        if value < 0:
            raise ScenarioError(f"{where}: a duration cannot be negative ({value})")
        return value * 1000
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        parts = _DURATION.findall(text)
        if parts and "".join(n + u for n, u in parts) == text:
            return sum(int(n) * MS[u] for n, u in parts)
    raise ScenarioError(f"{where}: {value!r} is not a duration (use e.g. '1500ms', '90s', '3h')")


def format_duration(ms: int) -> str:
    """The shortest exact spelling: 10800000 -> '3h', 5400000 -> '1h30m', 1500 -> '1500ms'."""
    if ms == 0:
        return "0s"
    out = ""
    for unit in ("h", "m", "s"):
        size = MS[unit]
        if ms >= size and (ms % size == 0 or unit == "h"):
            out += f"{ms // size}{unit}"
            ms %= size
    if ms:
        out += f"{ms}ms"
    return out


def parse_at(value: Any, start_ms: int, where: str) -> int:
    """'13:00' on the simulated day, or '+2h' after the start: ms after the start."""
    if isinstance(value, str):
        text = value.strip()
        m = _CLOCK.match(text)
        if m:
            hh, mm = int(m.group(1)), int(m.group(2))
            if hh > 47 or mm > 59:
                raise ScenarioError(f"{where}: {value!r} is not a time of day")
            at = (hh * 60 + mm) * 60_000 - start_ms
            if at < 0:
                raise ScenarioError(f"{where}: {value!r} is before the start of the run")
            return at
        if text.startswith("+"):
            return parse_duration(text[1:], where)
    raise ScenarioError(f"{where}: {value!r} must be a time like '13:00' or an offset like '+2h'")


def format_clock(ms: int) -> str:
    minutes = ms // 60_000
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _table(raw: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ScenarioError(f"{where}: [{key}] must be a table")
    return value


def _check_keys(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ScenarioError(
            f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})"
        )


def _num(
    raw: Mapping[str, Any], key: str, default: float, where: str, lo: float, hi: float
) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(f"{where}: {key} must be a number, got {value!r}")
    if not lo <= value <= hi:
        raise ScenarioError(f"{where}: {key} = {value} is out of range [{lo}, {hi}]")
    return float(value)


def _int(raw: Mapping[str, Any], key: str, default: int, where: str, lo: int, hi: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScenarioError(f"{where}: {key} must be a whole number, got {value!r}")
    if not lo <= value <= hi:
        raise ScenarioError(f"{where}: {key} = {value} is out of range [{lo}, {hi}]")
    return value


def _flag(raw: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ScenarioError(f"{where}: {key} must be true or false, got {value!r}")
    return value


def _str(
    raw: Mapping[str, Any], key: str, default: str, where: str, choices: tuple[str, ...] = ()
) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        raise ScenarioError(f"{where}: {key} must be a string, got {value!r}")
    if choices and value not in choices:
        raise ScenarioError(f"{where}: {key} = {value!r}; choose from {', '.join(choices)}")
    return value


# -- the model ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkConf:
    """One link's quality: latency and jitter in ms, shares (0-1) of lost, duplicated and
    reordered messages, bandwidth in kbit/s (0 = unlimited)."""

    latency_ms: int = 2
    jitter_ms: int = 1
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_ms: int = 0
    bandwidth_kbps: int = 0

    @classmethod
    def parse(cls, raw: Mapping[str, Any], where: str, base: LinkConf | None = None) -> LinkConf:
        base = base or cls()
        _check_keys(raw, {f.name for f in fields(cls)}, where)
        return cls(
            latency_ms=_int(raw, "latency_ms", base.latency_ms, where, 0, 600_000),
            jitter_ms=_int(raw, "jitter_ms", base.jitter_ms, where, 0, 600_000),
            loss=_num(raw, "loss", base.loss, where, 0.0, 1.0),
            duplicate=_num(raw, "duplicate", base.duplicate, where, 0.0, 1.0),
            reorder=_num(raw, "reorder", base.reorder, where, 0.0, 1.0),
            reorder_ms=_int(raw, "reorder_ms", base.reorder_ms, where, 0, 600_000),
            bandwidth_kbps=_int(raw, "bandwidth_kbps", base.bandwidth_kbps, where, 0, 10**9),
        )

    def dump(self, base: LinkConf | None = None) -> dict[str, Any]:
        base = base or LinkConf()
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) != getattr(base, f.name)
        }


WAN_DEFAULT = LinkConf(latency_ms=60, jitter_ms=20, loss=0.005, bandwidth_kbps=2000)


@dataclass(frozen=True)
class WorkloadConf:
    """What customers do at each counter of a store. Rates are at the shape's peak."""

    shape: str = "normal"
    sales_per_hour: float = 60.0  # per counter, at the peak of the shape
    customers: int = 50
    loyalty_share: float = 0.35  # sales with a loyalty customer (they earn points)
    redeem_share: float = 0.05  # sales paid partly with points
    return_share: float = 0.03
    receipts_per_hour: float = 1.0  # stock deliveries per store
    markdowns_per_hour: float = 0.0  # price changes made at a counter (a manager's markdown)
    opening_points: tuple[int, int] = (100, 1500)
    basket: tuple[int, int] = (1, 4)
    escrow_wait_ms: int = 1500
    giftcards: int = 0  # gift cards sold at opening, at the counters in turn
    giftcard_share: float = 0.0  # sales paid (partly) with one of them
    # False: counters skip the escrow check at the source, as a tampered till would (the fold
    # still judges every op: the report shows both the double spend and the ops it refused).
    escrow_check: bool = True

    @classmethod
    def parse(
        cls, raw: Mapping[str, Any], where: str, base: WorkloadConf | None = None
    ) -> WorkloadConf:
        base = base or cls()
        _check_keys(raw, {f.name.removesuffix("_ms") for f in fields(cls)}, where)

        def pair(key: str, default: tuple[int, int], lo: int, hi: int) -> tuple[int, int]:
            value = raw.get(key, list(default))
            ok = isinstance(value, list) and len(value) == 2
            if not ok or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise ScenarioError(f"{where}: {key} must be [low, high] whole numbers")
            a, b = value
            if not lo <= a <= b <= hi:
                raise ScenarioError(
                    f"{where}: {key} = {value} must satisfy {lo} <= low <= high <= {hi}"
                )
            return (a, b)

        return cls(
            shape=_str(raw, "shape", base.shape, where, SHAPES),
            sales_per_hour=_num(raw, "sales_per_hour", base.sales_per_hour, where, 0, 100_000),
            customers=_int(raw, "customers", base.customers, where, 0, 100_000),
            loyalty_share=_num(raw, "loyalty_share", base.loyalty_share, where, 0, 1),
            redeem_share=_num(raw, "redeem_share", base.redeem_share, where, 0, 1),
            return_share=_num(raw, "return_share", base.return_share, where, 0, 1),
            receipts_per_hour=_num(
                raw, "receipts_per_hour", base.receipts_per_hour, where, 0, 10_000
            ),
            markdowns_per_hour=_num(
                raw, "markdowns_per_hour", base.markdowns_per_hour, where, 0, 10_000
            ),
            opening_points=pair("opening_points", base.opening_points, 0, 10**7),
            basket=pair("basket", base.basket, 1, 50),
            escrow_wait_ms=(
                parse_duration(raw["escrow_wait"], f"{where}: escrow_wait")
                if "escrow_wait" in raw
                else base.escrow_wait_ms
            ),
            escrow_check=_flag(raw, "escrow_check", base.escrow_check, where),
            giftcards=_int(raw, "giftcards", base.giftcards, where, 0, 100_000),
            giftcard_share=_num(raw, "giftcard_share", base.giftcard_share, where, 0, 1),
        )

    def dump(self, base: WorkloadConf | None = None) -> dict[str, Any]:
        base = base or WorkloadConf()
        out: dict[str, Any] = {}
        for f in fields(self):
            value, default = getattr(self, f.name), getattr(base, f.name)
            if value == default:
                continue
            if f.name == "escrow_wait_ms":
                out["escrow_wait"] = format_duration(value)
            elif isinstance(value, tuple):
                out[f.name] = list(value)
            else:
                out[f.name] = value
        return out


@dataclass(frozen=True)
class StoreConf:
    name: str
    counters: int = 3
    region: str = ""
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()  # named groups of counters (floors)
    workload: WorkloadConf = field(default_factory=WorkloadConf)

    def counter_names(self) -> list[str]:
        return [f"T{i + 1}" for i in range(self.counters)]

    def group(self, name: str) -> tuple[str, ...] | None:
        return next((members for g, members in self.groups if g == name), None)


@dataclass(frozen=True)
class NodeConf:
    """Per-terminal settings: its clock's skew and drift, and its own link quality (Wi-Fi)."""

    store: str
    name: str
    skew_ms: int = 0
    drift_ppm: int = 0
    link: LinkConf | None = None


@dataclass(frozen=True)
class FaultConf:
    """One scheduled fault. `duration_ms` > 0 schedules the matching repair after it."""

    at_ms: int
    kind: str
    stores: tuple[str, ...] = ()  # empty = every store (for store-wide kinds)
    region: str = ""
    node: str = ""  # "STORE/T2", or "T2" when there is one store
    groups: tuple[tuple[str, ...], ...] = ()
    duration_ms: int = 0
    link: LinkConf | None = None
    replacement: str = "new"  # disk_death: "new" terminal, or the "same" identity restored
    restore: str = "empty"  # disk_death with the same identity: "empty" or "acked" (peers' copy)
    after_ms: int = 0  # disk_death: how long until the replacement runs
    lose_tail: bool = False  # crash: the disk loses what no peer acknowledged
    bootstrap_first: bool = True  # disk_death: the replacement sells only once caught up
    skew_ms: int | None = None
    drift_ppm: int | None = None


@dataclass(frozen=True)
class RandomFaults:
    """Faults at random times (Poisson per store, from the scenario's seed)."""

    crash_per_hour: float = 0.0
    partition_per_hour: float = 0.0
    wan_flap_per_hour: float = 0.0
    disk_death_per_hour: float = 0.0
    mean_outage_ms: int = 300_000


@dataclass(frozen=True)
class HqConf:
    enabled: bool = True
    relay: str = "elected"
    failover_ms: int = 3000
    price_changes: int = 4  # chain-wide HQ price changes over the run


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str = ""
    seed: int = 1
    start_ms: int = 10 * 3_600_000  # time of day the run starts
    duration_ms: int = 3_600_000
    sample_ms: int = 0  # 0 = about 240 samples over the run, at least every 30 s
    final_heal_ms: int = 900_000
    catalog_rows: int = 0  # 0 = the whole sample catalogue
    stock_factor: float = 1.0
    tick_ms: int = 100
    sync: tuple[tuple[str, int], ...] = ()  # SyncConfig overrides; empty = the daemon's settings
    lan: LinkConf = field(default_factory=LinkConf)
    wan: LinkConf = WAN_DEFAULT
    hq: HqConf = field(default_factory=HqConf)
    workload: WorkloadConf = field(default_factory=WorkloadConf)
    stores: tuple[StoreConf, ...] = ()
    nodes: tuple[NodeConf, ...] = ()
    faults: tuple[FaultConf, ...] = ()
    random: RandomFaults = field(default_factory=RandomFaults)

    @property
    def sample_every_ms(self) -> int:
        if self.sample_ms:
            return self.sample_ms
        return max(30_000, -(-self.duration_ms // 240 // 1000) * 1000)

    def store(self, name: str) -> StoreConf:
        return next(s for s in self.stores if s.name == name)

    def scaled(self, factor: float) -> Scenario:
        """The same day compressed: every time and duration times `factor` (rates unchanged, so
        fewer customers); `--shorten` uses it to fit CI."""
        if not 0 < factor <= 1:
            raise ScenarioError(f"shorten factor {factor} must be in (0, 1]")

        def s(ms: int) -> int:
            return int(ms * factor)

        faults = tuple(
            replace(f, at_ms=s(f.at_ms), duration_ms=s(f.duration_ms), after_ms=s(f.after_ms))
            for f in self.faults
        )
        rnd = replace(self.random, mean_outage_ms=max(1000, s(self.random.mean_outage_ms)))
        return replace(
            self,
            duration_ms=max(60_000, s(self.duration_ms)),
            sample_ms=s(self.sample_ms),
            final_heal_ms=max(120_000, s(self.final_heal_ms)),
            faults=faults,
            random=rnd,
        )


# -- loading ----------------------------------------------------------------------------------


TOP_KEYS = {
    "name",
    "description",
    "seed",
    "start",
    "duration",
    "sample_every",
    "final_heal",
    "catalog_rows",
    "stock_factor",
    "tick_ms",
    "sync",
    "lan",
    "wan",
    "hq",
    "workload",
    "stores",
    "nodes",
    "faults",
    "random",
}
SYNC_KEYS = {
    "batch_ops",
    "batch_bytes",
    "window_ops",
    "ping_ms",
    "anti_entropy_ms",
    "retransmit_ms",
    "hello_retry_ms",
    "dead_after_ms",
    "forward_delay_ms",
}


def load(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {p}: {exc.strerror}") from None
    return loads(text, p.name)


def loads(text: str, source: str = "scenario") -> Scenario:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: not valid TOML: {exc}") from None
    return parse(raw, source)


def parse(raw: Mapping[str, Any], source: str = "scenario") -> Scenario:
    _check_keys(raw, TOP_KEYS, source)
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ScenarioError(f"{source}: `name` is required (a short label for the report)")
    start = raw.get("start", "10:00")
    m = _CLOCK.match(start) if isinstance(start, str) else None
    if not m:
        raise ScenarioError(f"{source}: start = {start!r} must be a time of day like '10:00'")
    start_ms = (int(m.group(1)) * 60 + int(m.group(2))) * 60_000
    duration = parse_duration(raw.get("duration", "1h"), f"{source}: duration")
    if duration < 60_000:
        raise ScenarioError(f"{source}: duration must be at least 1m")
    sync = _table(raw, "sync", source)
    _check_keys(sync, SYNC_KEYS, f"{source}: [sync]")
    for key, value in sync.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ScenarioError(f"{source}: [sync] {key} must be a positive whole number")
    lan = LinkConf.parse(_table(raw, "lan", source), f"{source}: [lan]")
    wan = LinkConf.parse(_table(raw, "wan", source), f"{source}: [wan]", WAN_DEFAULT)
    hq_raw = _table(raw, "hq", source)
    where = f"{source}: [hq]"
    _check_keys(hq_raw, {"enabled", "relay", "failover", "price_changes"}, where)
    enabled = hq_raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ScenarioError(f"{where}: enabled must be true or false")
    hq = HqConf(
        enabled=enabled,
        relay=_str(hq_raw, "relay", "elected", where, RELAYS),
        failover_ms=parse_duration(hq_raw.get("failover", "3s"), f"{where} failover"),
        price_changes=_int(hq_raw, "price_changes", 4, where, 0, 10_000),
    )
    workload = WorkloadConf.parse(_table(raw, "workload", source), f"{source}: [workload]")
    stores = _stores(raw.get("stores"), workload, source)
    names = {s.name for s in stores}
    single = stores[0].name if len(stores) == 1 else None
    nodes = _nodes(raw.get("nodes", []), stores, single, source)
    scenario = Scenario(
        name=name,
        description=_str(raw, "description", "", source),
        seed=_int(raw, "seed", 1, source, 0, 2**63),
        start_ms=start_ms,
        duration_ms=duration,
        sample_ms=(
            parse_duration(raw["sample_every"], f"{source}: sample_every")
            if "sample_every" in raw
            else 0
        ),
        final_heal_ms=parse_duration(raw.get("final_heal", "15m"), f"{source}: final_heal"),
        catalog_rows=_int(raw, "catalog_rows", 0, source, 0, 100_000),
        stock_factor=_num(raw, "stock_factor", 1.0, source, 0.0, 1000.0),
        tick_ms=_int(raw, "tick_ms", 100, source, 1, 10_000),
        sync=tuple(sorted((k, int(v)) for k, v in sync.items())),
        lan=lan,
        wan=wan,
        hq=hq,
        workload=workload,
        stores=stores,
        nodes=nodes,
        random=_random(_table(raw, "random", source), source),
    )
    faults = _faults(raw.get("faults", []), scenario, names, single, source)
    return replace(scenario, faults=faults)


def _stores(raw: Any, workload: WorkloadConf, source: str) -> tuple[StoreConf, ...]:
    if raw is None:
        raw = [{"name": "S1"}]
    if not isinstance(raw, list) or not raw:
        raise ScenarioError(f"{source}: [[stores]] must list at least one store")
    out: list[StoreConf] = []
    for i, entry in enumerate(raw, start=1):
        where = f"{source}: [[stores]] #{i}"
        if not isinstance(entry, dict):
            raise ScenarioError(f"{where}: must be a table")
        _check_keys(
            entry, {"name", "count", "counters", "region", "regions", "groups", "workload"}, where
        )
        base = _str(entry, "name", f"S{i}", where)
        count = _int(entry, "count", 1, where, 1, 10_000)
        counters = _int(entry, "counters", 3, where, 1, 64)
        regions = entry.get("regions", [entry.get("region", "")])
        if (
            not isinstance(regions, list)
            or not regions
            or not all(isinstance(r, str) for r in regions)
        ):
            raise ScenarioError(f"{where}: regions must be a list of names")
        wl = WorkloadConf.parse(_table(entry, "workload", where), f"{where} [workload]", workload)
        names = [f"T{k + 1}" for k in range(counters)]
        groups_raw = _table(entry, "groups", where)
        groups: list[tuple[str, tuple[str, ...]]] = []
        for gname in sorted(groups_raw):
            members = groups_raw[gname]
            if not isinstance(members, list) or not all(m in names for m in members):
                raise ScenarioError(f"{where}: group {gname!r} must list counters among {names}")
            groups.append((gname, tuple(members)))
        width = len(str(count))
        for k in range(count):
            name = base if count == 1 else f"{base}{k + 1:0{width}d}"
            out.append(StoreConf(name, counters, regions[k % len(regions)], tuple(groups), wl))
    seen: set[str] = set()
    for s in out:
        if s.name in seen:
            raise ScenarioError(f"{source}: store name {s.name!r} is used twice")
        seen.add(s.name)
    return tuple(out)


def _resolve_node(
    value: Any, stores: tuple[StoreConf, ...], single: str | None, where: str
) -> tuple[str, str]:
    if not isinstance(value, str) or not value:
        raise ScenarioError(
            f"{where}: node must name a terminal, like 'S1/T2' (or 'T2' with one store)"
        )
    store, _, name = value.rpartition("/")
    if not store:
        if single is None:
            raise ScenarioError(f"{where}: node {value!r}: say which store, like 'S1/{value}'")
        store = single
    conf = next((s for s in stores if s.name == store), None)
    if conf is None:
        raise ScenarioError(f"{where}: node {value!r}: no store named {store!r}")
    if name not in conf.counter_names():
        raise ScenarioError(
            f"{where}: node {value!r}: store {store} has counters {conf.counter_names()}"
        )
    return store, name


def _nodes(
    raw: Any, stores: tuple[StoreConf, ...], single: str | None, source: str
) -> tuple[NodeConf, ...]:
    if not isinstance(raw, list):
        raise ScenarioError(f"{source}: [[nodes]] must be a list of tables")
    out = []
    for i, entry in enumerate(raw, start=1):
        where = f"{source}: [[nodes]] #{i}"
        if not isinstance(entry, dict):
            raise ScenarioError(f"{where}: must be a table")
        _check_keys(entry, {"node", "skew", "drift_ppm", "link"}, where)
        store, name = _resolve_node(entry.get("node"), stores, single, where)
        out.append(
            NodeConf(
                store,
                name,
                skew_ms=_signed_duration(entry.get("skew", 0), f"{where} skew"),
                drift_ppm=_int(entry, "drift_ppm", 0, where, -100_000, 100_000),
                link=LinkConf.parse(entry["link"], f"{where} [link]") if "link" in entry else None,
            )
        )
    return tuple(sorted(out, key=lambda n: (n.store, n.name)))


def _signed_duration(value: Any, where: str) -> int:
    if isinstance(value, str) and value.strip().startswith("-"):
        return -parse_duration(value.strip()[1:], where)
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        return value * 1000
    return parse_duration(value, where)


def _format_signed(ms: int) -> str:
    return ("-" if ms < 0 else "") + format_duration(abs(ms))


FAULT_KEYS = {
    "at",
    "kind",
    "stores",
    "region",
    "node",
    "groups",
    "duration",
    "link",
    "replacement",
    "restore",
    "after",
    "lose_tail",
    "bootstrap_first",
    "skew",
    "drift_ppm",
}
STORE_KINDS = {"wan_down", "wan_up"}
NODE_KINDS = {
    "hq_cut",
    "hq_restore",
    "isolate",
    "link",
    "link_reset",
    "crash",
    "restart",
    "disk_death",
    "clock",
}
LAN_KINDS = {"partition", "heal"}


def _faults(
    raw: Any, sc: Scenario, names: set[str], single: str | None, source: str
) -> tuple[FaultConf, ...]:
    if not isinstance(raw, list):
        raise ScenarioError(f"{source}: [[faults]] must be a list of tables")
    out: list[FaultConf] = []
    for i, entry in enumerate(raw, start=1):
        where = f"{source}: [[faults]] #{i}"
        if not isinstance(entry, dict):
            raise ScenarioError(f"{where}: must be a table")
        _check_keys(entry, FAULT_KEYS, where)
        kind = _str(entry, "kind", "", where, FAULT_KINDS)
        where = f"{where} ({kind})"
        if "at" not in entry:
            raise ScenarioError(f"{where}: `at` is required ('13:00' or '+2h')")
        at = parse_at(entry["at"], sc.start_ms, where)
        if at > sc.duration_ms:
            raise ScenarioError(f"{where}: at {entry['at']} is after the end of the run")
        stores_raw = entry.get("stores", [])
        if not isinstance(stores_raw, list) or not all(s in names for s in stores_raw):
            raise ScenarioError(
                f"{where}: stores must list store names among {sorted(names)[:5]}..."
            )
        region = _str(entry, "region", "", where)
        if region and not any(s.region == region for s in sc.stores):
            raise ScenarioError(f"{where}: no store is in region {region!r}")
        node = ""
        if kind in NODE_KINDS:
            store, name = _resolve_node(entry.get("node"), sc.stores, single, where)
            node = f"{store}/{name}"
        elif "node" in entry:
            raise ScenarioError(f"{where}: `node` does not apply to {kind}; use `stores`")
        groups: list[tuple[str, ...]] = []
        if kind in LAN_KINDS:
            if not stores_raw and single is None:
                raise ScenarioError(f"{where}: say which store (stores = ['S1'])")
            if kind == "partition":
                conf = sc.store(stores_raw[0] if stores_raw else single or "")
                groups = _groups(entry.get("groups"), conf, where)
        elif "groups" in entry:
            raise ScenarioError(f"{where}: `groups` applies only to partition")
        link = LinkConf.parse(entry["link"], f"{where} [link]", sc.lan) if "link" in entry else None
        if kind == "link" and link is None:
            raise ScenarioError(f"{where}: a link fault needs a [link] table (e.g. loss = 0.3)")
        lose_tail = entry.get("lose_tail", False)
        bootstrap_first = entry.get("bootstrap_first", True)
        if not isinstance(lose_tail, bool) or not isinstance(bootstrap_first, bool):
            raise ScenarioError(f"{where}: lose_tail and bootstrap_first must be true or false")
        out.append(
            FaultConf(
                at_ms=at,
                kind=kind,
                stores=tuple(stores_raw),
                region=region,
                node=node,
                groups=tuple(groups),
                duration_ms=parse_duration(entry.get("duration", 0), f"{where} duration"),
                link=link,
                replacement=_str(entry, "replacement", "new", where, ("new", "same")),
                restore=_str(entry, "restore", "empty", where, ("empty", "acked")),
                after_ms=parse_duration(entry.get("after", "10m"), f"{where} after"),
                lose_tail=lose_tail,
                bootstrap_first=bootstrap_first,
                skew_ms=(
                    _signed_duration(entry["skew"], f"{where} skew") if "skew" in entry else None
                ),
                drift_ppm=(
                    _int(entry, "drift_ppm", 0, where, -100_000, 100_000)
                    if "drift_ppm" in entry
                    else None
                ),
            )
        )
    return tuple(out)


def _groups(raw: Any, conf: StoreConf, where: str) -> list[tuple[str, ...]]:
    if not isinstance(raw, list) or len(raw) < 2:
        raise ScenarioError(
            f"{where}: groups must list at least two groups (names or counter lists)"
        )
    out: list[tuple[str, ...]] = []
    seen: set[str] = set()
    for g in raw:
        members: tuple[str, ...] | None
        if isinstance(g, str):
            members = conf.group(g)
            if members is None:
                known = [name for name, _ in conf.groups]
                raise ScenarioError(
                    f"{where}: store {conf.name} has no group {g!r} (groups: {known})"
                )
        elif isinstance(g, list) and all(isinstance(m, str) for m in g):
            members = tuple(g)
        else:
            raise ScenarioError(f"{where}: a group is a group name or a list of counters")
        for m in members:
            if m not in conf.counter_names():
                raise ScenarioError(f"{where}: {m!r} is not a counter of {conf.name}")
            if m in seen:
                raise ScenarioError(f"{where}: counter {m} is in two groups")
            seen.add(m)
        out.append(members)
    return out


def _random(raw: Mapping[str, Any], source: str) -> RandomFaults:
    where = f"{source}: [random]"
    _check_keys(
        raw,
        {
            "crash_per_hour",
            "partition_per_hour",
            "wan_flap_per_hour",
            "disk_death_per_hour",
            "mean_outage",
        },
        where,
    )
    return RandomFaults(
        crash_per_hour=_num(raw, "crash_per_hour", 0, where, 0, 1000),
        partition_per_hour=_num(raw, "partition_per_hour", 0, where, 0, 1000),
        wan_flap_per_hour=_num(raw, "wan_flap_per_hour", 0, where, 0, 1000),
        disk_death_per_hour=_num(raw, "disk_death_per_hour", 0, where, 0, 1000),
        mean_outage_ms=parse_duration(raw.get("mean_outage", "5m"), f"{where} mean_outage"),
    )


# -- writing ------------------------------------------------------------------------------------


def dump(sc: Scenario) -> str:
    """TOML that `loads` turns back into `sc` (stores are written one per entry)."""
    doc: dict[str, Any] = {
        "name": sc.name,
        "description": sc.description,
        "seed": sc.seed,
        "start": format_clock(sc.start_ms),
        "duration": format_duration(sc.duration_ms),
        "final_heal": format_duration(sc.final_heal_ms),
    }
    if sc.sample_ms:
        doc["sample_every"] = format_duration(sc.sample_ms)
    if sc.catalog_rows:
        doc["catalog_rows"] = sc.catalog_rows
    if sc.stock_factor != 1.0:
        doc["stock_factor"] = sc.stock_factor
    if sc.tick_ms != 100:
        doc["tick_ms"] = sc.tick_ms
    if sc.sync:
        doc["sync"] = dict(sc.sync)
    if sc.lan != LinkConf():
        doc["lan"] = sc.lan.dump()
    if sc.wan != WAN_DEFAULT:
        doc["wan"] = sc.wan.dump(WAN_DEFAULT)
    hq: dict[str, Any] = {}
    if not sc.hq.enabled:
        hq["enabled"] = False
    if sc.hq.relay != "elected":
        hq["relay"] = sc.hq.relay
    if sc.hq.failover_ms != 3000:
        hq["failover"] = format_duration(sc.hq.failover_ms)
    if sc.hq.price_changes != 4:
        hq["price_changes"] = sc.hq.price_changes
    if hq:
        doc["hq"] = hq
    if sc.workload != WorkloadConf():
        doc["workload"] = sc.workload.dump()
    stores = []
    for s in sc.stores:
        entry: dict[str, Any] = {"name": s.name, "counters": s.counters}
        if s.region:
            entry["region"] = s.region
        if s.groups:
            entry["groups"] = {g: list(m) for g, m in s.groups}
        if s.workload != sc.workload:
            entry["workload"] = s.workload.dump(sc.workload)
        stores.append(entry)
    doc["stores"] = stores
    if sc.nodes:
        nodes = []
        for n in sc.nodes:
            item: dict[str, Any] = {"node": f"{n.store}/{n.name}"}
            if n.skew_ms:
                item["skew"] = _format_signed(n.skew_ms)
            if n.drift_ppm:
                item["drift_ppm"] = n.drift_ppm
            if n.link is not None:
                item["link"] = n.link.dump()
            nodes.append(item)
        doc["nodes"] = nodes
    if sc.faults:
        doc["faults"] = [_dump_fault(f, sc) for f in sc.faults]
    if sc.random != RandomFaults():
        r = sc.random
        doc["random"] = {
            "crash_per_hour": r.crash_per_hour,
            "partition_per_hour": r.partition_per_hour,
            "wan_flap_per_hour": r.wan_flap_per_hour,
            "disk_death_per_hour": r.disk_death_per_hour,
            "mean_outage": format_duration(r.mean_outage_ms),
        }
    return tomli_w.dumps(doc)


def _dump_fault(f: FaultConf, sc: Scenario) -> dict[str, Any]:
    out: dict[str, Any] = {"at": "+" + format_duration(f.at_ms), "kind": f.kind}
    if f.stores:
        out["stores"] = list(f.stores)
    if f.region:
        out["region"] = f.region
    if f.node:
        out["node"] = f.node
    if f.groups:
        out["groups"] = [list(g) for g in f.groups]
    if f.duration_ms:
        out["duration"] = format_duration(f.duration_ms)
    if f.link is not None:
        out["link"] = f.link.dump(sc.lan)
    if f.kind == "disk_death":
        out["replacement"] = f.replacement
        out["restore"] = f.restore
    if f.after_ms != 600_000:
        out["after"] = format_duration(f.after_ms)
    if f.lose_tail:
        out["lose_tail"] = True
    if not f.bootstrap_first:
        out["bootstrap_first"] = False
    if f.skew_ms is not None:
        out["skew"] = _format_signed(f.skew_ms)
    if f.drift_ppm is not None:
        out["drift_ppm"] = f.drift_ppm
    return out


def shipped() -> dict[str, Path]:
    """The scenarios that come with meshpos, by name."""
    folder = Path(__file__).resolve().parent / "scenarios"
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}
