"""What the web till shows, as plain data: the state banner and small formatting helpers.

Pure: no SQLite, no files, no clock. The caller (meshpos/web/live.py) reads the daemon's status and
a few counters and passes them in with the time, so the banner's wording is tested without a daemon.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from meshpos.domain.money import rupees
from meshpos.domain.storetime import StoreTime

LEVELS = ("ok", "off", "warn", "down")  # increasing severity; "off" is neutral (not configured)


@dataclass(frozen=True)
class BannerItem:
    key: str
    text: str
    level: str


@dataclass(frozen=True)
class Counters:
    """What the banner needs from this node's database."""

    own_seq: int  # ops this counter made
    acked_seq: int  # the highest of them a peer confirmed holding
    pending: int = 0  # ops held back past a gap
    ops_since_hq_sync: int = 0  # ops in the log stamped after this node's last HQ round
    ops_since_hq_down: int = 0  # ops in the log stamped after HQ became unreachable


def clock(ms: int, zone: StoreTime | None = None) -> str:
    """Store time of a ms timestamp, HH:MM:SS (`Terminal.store_time()`; India's by default)."""
    return (zone or StoreTime()).clock(ms, seconds=True) if ms else "never"


def ago(ms: int, now_ms: int) -> str:
    """Minute-grained, so the banner text changes rarely while nothing happens."""
    minutes = max(0, now_ms - ms) // 60_000
    if minutes < 1:
        return "<1 min"
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def money(paise: int | None) -> str:
    """₹1,23,456.00, −₹1,282.12 (meshpos/domain/money.py)."""
    return rupees(int(paise or 0))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _names(peers: Sequence[Mapping[str, Any]], up: bool) -> str:
    return ", ".join(
        str(p.get("name") or p.get("node_id", "?")) for p in peers if bool(p.get("up")) == up
    )


def _waiting(
    wan: Mapping[str, Any], counters: Counters, node_id: str, status: Mapping[str, Any]
) -> BannerItem:
    """How many ops wait to go up to HQ, as far as this counter can know: exactly when it is the
    relay (HQ's last answer plus what came since); while HQ is away, at least what was made since
    it went; when another counter relays, that counter knows, so the banner names it."""
    names = {p.get("node_id"): p.get("name") for p in status.get("peers") or []}
    relay = wan.get("relay")
    last = int(wan.get("last_sync_ms") or 0)
    since = int(wan.get("wan_since_ms") or 0)
    if not wan.get("wan_ok"):
        if not since:
            return BannerItem("waiting", "Nothing has gone up to HQ from here yet", "warn")
        n = counters.ops_since_hq_down
        return BannerItem(
            "waiting",
            f"{_plural(n, 'op')} made since HQ went away wait to go up",
            "down" if n else "warn",
        )
    if relay and relay != node_id:
        return BannerItem("waiting", f"Ops go up to HQ through {names.get(relay) or relay}", "ok")
    if not last:
        return BannerItem("waiting", "First HQ sync from this counter is under way", "warn")
    n = int(wan.get("ops_waiting") or 0) + counters.ops_since_hq_sync
    text = f"{_plural(n, 'op')} waiting to go up (last HQ sync {clock(last)})"
    return BannerItem("waiting", text, "ok" if n == 0 else "warn")


def power_item(power: object) -> BannerItem | None:
    """Battery and UPS state as the daemon last read it (meshpos/service/power.py), with what
    it did on low battery; nothing when the machine reports no power supply."""
    if not isinstance(power, Mapping):
        return None
    level = str(power.get("level") or "ok")
    text = str(power.get("notice") or power.get("text") or "")  # the notice repeats the state
    return BannerItem("power", text, level if level in LEVELS else "warn")


def banner(
    status: Mapping[str, Any],
    counters: Counters,
    *,
    node_id: str,
    hq_url: str | None,
    now_ms: int,
    training: bool = False,
) -> dict[str, Any]:
    """The banner every page shows: LAN peers, copies held, HQ reachability and since when, ops
    waiting to go up, sync errors. `status` is `daemon_status()` ({} when no daemon runs)."""
    items: list[BannerItem] = []
    one_copy = max(0, counters.own_seq - counters.acked_seq)
    running = bool(status)
    if not running:
        items.append(
            BannerItem(
                "daemon",
                "Daemon not running: sales are kept on this counter, nothing syncs "
                "(start `meshpos node run`)",
                "down",
            )
        )
    else:
        peers = list(status.get("peers") or [])
        up = int(status.get("peers_up") or 0)
        if not peers:
            items.append(BannerItem("lan", "LAN: no other counter seen yet", "warn"))
        elif up == 0:
            items.append(
                BannerItem("lan", f"LAN: no peer reachable ({_names(peers, False)} down)", "down")
            )
        else:
            down = _names(peers, False)
            text = f"LAN: {up} of {_plural(len(peers), 'peer')} up ({_names(peers, True)})"
            items.append(
                BannerItem(
                    "lan", text + (f"; {down} down" if down else ""), "warn" if down else "ok"
                )
            )
    if training:  # practice sales never leave this counter: no copies to count
        items.append(BannerItem("training", "Training: practice sales, never synced", "warn"))
    elif one_copy:
        items.append(
            BannerItem(
                "copies", f"{_plural(one_copy, 'op')} held by this counter only (1 copy)", "warn"
            )
        )
    else:
        items.append(BannerItem("copies", "Copies: every op held by 2+ counters", "ok"))
    wan = status.get("wan") if running else None
    if not hq_url:
        items.append(BannerItem("hq", "HQ: not configured", "off"))
    elif not running or not isinstance(wan, Mapping):
        items.append(BannerItem("hq", "HQ: unknown (daemon not running)", "warn"))
    else:
        since = int(wan.get("wan_since_ms") or 0)
        if wan.get("wan_ok"):
            items.append(
                BannerItem("hq", f"HQ reachable since {clock(since)} ({ago(since, now_ms)})", "ok")
            )
        elif since:
            items.append(
                BannerItem(
                    "hq", f"HQ UNREACHABLE since {clock(since)} ({ago(since, now_ms)})", "down"
                )
            )
        else:
            items.append(BannerItem("hq", "HQ not reached yet", "down"))
        items.append(_waiting(wan, counters, node_id, status))
    errors: list[str] = []
    if isinstance(wan, Mapping) and wan.get("last_error"):
        errors.append(str(wan["last_error"]))
    rejected = int(status.get("rejected") or 0) if running else 0
    if rejected:
        errors.append(f"{_plural(rejected, 'connection')} from unenrolled nodes refused")
    if counters.pending:
        errors.append(f"{_plural(counters.pending, 'op')} waiting for earlier ops (gap)")
    if errors:
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        items.append(BannerItem("errors", f"Sync error: {errors[0]}{more}", "down"))
    else:
        items.append(BannerItem("errors", "No sync errors", "ok"))
    power = power_item(status.get("power") if running else None)
    if power is not None:
        items.append(power)
    level = max((i.level for i in items), key=LEVELS.index, default="ok")
    return {
        "level": level,
        "daemon": running,
        "one_copy": one_copy,
        "errors": errors,
        "items": [asdict(i) for i in items],
    }
