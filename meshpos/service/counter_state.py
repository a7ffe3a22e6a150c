"""The counter's state in one calm line: what a cashier sees at the top of the web till and on the
text till's state line.

Being offline is normal for meshpos: sales are recorded on this counter and copied to the others,
and go up to HQ when it is back. So an outage is one amber chip, "Offline — sales are safe · N
waiting to sync", with the details (which counters, last sync, the raw errors) behind it. Red is
kept for what the cashier must act on: the printer is out, this counter alone has held sales for
minutes with no second copy, its clock is wrong, or it was revoked.

`state()` is pure (the daemon's status, a few counts from the database and the time in); `read()`
gathers those for a node.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshpos.domain.storetime import StoreTime, ago
from meshpos.ledger.live_feed import LiveFeed
from meshpos.service import printer_words
from meshpos.service.config import NodeConfig
from meshpos.service.daemon_link import daemon_status

OK, OFFLINE, ACT = "ok", "offline", "act"
ALONE_MS = 5 * 60_000  # sales held by this counter alone longer than this turn red
CLOCK_MS = 5 * 60_000  # other counters' clocks this far ahead of ours: ours is wrong


@dataclass(frozen=True)
class Counts:
    """What the state needs from this node's database."""

    own_seq: int  # ops this counter made
    acked_seq: int  # the highest of them a peer confirmed holding
    pending: int = 0  # ops held back past a gap
    ops_since_hq_sync: int = 0  # ops stamped after this node's last HQ round
    ops_since_hq_down: int = 0  # ops stamped after HQ became unreachable
    oldest_alone_ms: int = 0  # wall time of the oldest own op no peer confirmed (0: none)
    newest_ms: int = 0  # wall time of the newest op held (any counter's)
    print_waiting: int = 0  # slips waiting for a printer that failed
    print_error: str = ""  # how it failed, in the driver's words


@dataclass(frozen=True)
class Alert:
    """Something red: the cashier must act on it."""

    key: str  # printer, alone, clock, revoked, unknown
    text: str


@dataclass(frozen=True)
class CounterState:
    level: str  # ok (green chip), offline (amber chip); alerts are red whatever the chip
    chip: str
    alerts: tuple[Alert, ...] = ()
    details: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()  # the raw errors, for details and the log
    waiting: int = 0
    one_copy: int = 0
    daemon: bool = False
    printer: printer_words.PrinterTrouble | None = field(default=None)

    @property
    def worst(self) -> str:
        return ACT if self.alerts else self.level

    def line(self) -> str:
        """The text till's state line."""
        mark = {OK: "●", OFFLINE: "◐"}.get(self.level, "●")
        text = f"{mark} {self.chip}"
        for alert in self.alerts:
            text += f"  ! {alert.text}"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "level": self.worst,
            "chip_level": self.level,
            "chip": self.chip,
            "alerts": [{"key": a.key, "text": a.text} for a in self.alerts],
            "details": list(self.details),
            "errors": list(self.errors),
            "waiting": self.waiting,
            "one_copy": self.one_copy,
            "daemon": self.daemon,
        }


def hhmm(ms: int) -> str:
    """Store time (India's unless the caller passes its store's) of a ms timestamp, HH:MM."""
    return StoreTime().clock(ms) if ms else "never"


def _n(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _peers(peers: Sequence[Mapping[str, Any]], clock: Callable[[int], str]) -> str:
    if not peers:
        return "Other counters: none seen yet"
    parts = []
    for p in peers:
        name = str(p.get("name") or p.get("node_id", "?"))
        if p.get("up"):
            parts.append(f"{name} reachable")
        else:
            seen = int(p.get("last_seen_ms") or 0)
            parts.append(f"{name} not reachable" + (f" (last heard {clock(seen)})" if seen else ""))
    return "Other counters: " + ", ".join(parts)


def state(
    status: Mapping[str, Any],
    counts: Counts,
    *,
    node_id: str,
    hq_url: str | None,
    now_ms: int,
    clock: Callable[[int], str] = hhmm,
    training: bool = False,
) -> CounterState:
    """The state from the daemon's status (`{}` when no daemon runs) and the database's counts.
    `training`: a practice till (its sales never leave it); `status` is then the real node's."""
    running = bool(status)
    peers = list(status.get("peers") or []) if running else []
    up = [p for p in peers if p.get("up")]
    wan = status.get("wan") if running else None
    wan = wan if isinstance(wan, Mapping) else None
    one_copy = max(0, counts.own_seq - counts.acked_seq)
    names = {p.get("node_id"): p.get("name") for p in peers}
    details: list[str] = []
    errors: list[str] = []
    offline = False
    hq_waiting = 0

    if not running:
        offline = True
        details.append(
            "The sync service is not running here: sales stay on this counter until it runs "
            "(`meshpos node run`)"
        )
    else:
        details.append(_peers(peers, clock))
        offline = offline or any(not p.get("up") for p in peers)
    if one_copy:
        details.append(
            f"{_n(one_copy, 'op')} on this counter only"
            + (f" (since {clock(counts.oldest_alone_ms)})" if counts.oldest_alone_ms else "")
        )
    else:
        details.append("Every op made here is on at least one other counter")
    if not hq_url:
        details.append("HQ: not set up for this store")
    elif wan is None:
        if running:
            details.append("HQ: not known yet")
    else:
        since = int(wan.get("wan_since_ms") or 0)
        last = int(wan.get("last_sync_ms") or 0)
        synced = f"; last sync {clock(last)}" if last else "; nothing synced from here yet"
        relay = wan.get("relay")
        if wan.get("wan_ok"):
            details.append(f"HQ reachable since {clock(since)}{synced}")
            if relay and relay != node_id:
                details.append(f"Sales go up to HQ through {names.get(relay) or relay}")
            else:
                hq_waiting = int(wan.get("ops_waiting") or 0) + counts.ops_since_hq_sync
        else:
            offline = True
            when = f" since {clock(since)} ({ago(since, now_ms)})" if since else ""
            details.append(f"HQ not reachable{when}{synced}; sales go up when it is back")
            hq_waiting = counts.ops_since_hq_down if since else counts.ops_since_hq_sync
        if wan.get("last_error"):
            errors.append(f"HQ relay said: {wan['last_error']}")
    rejected = int(status.get("rejected") or 0) if running else 0
    if rejected:
        errors.append(f"{_n(rejected, 'connection')} from unenrolled nodes refused")
    if counts.pending:
        errors.append(f"{_n(counts.pending, 'op')} waiting for earlier ops (a gap)")

    alerts: list[Alert] = []
    trouble = None
    if counts.print_waiting and counts.print_error:
        trouble = printer_words.explain(counts.print_error, counts.print_waiting)
        alerts.append(Alert("printer", trouble.text))
        errors.append(f"printer: {counts.print_error}")
    alone_ms = now_ms - counts.oldest_alone_ms
    if one_copy and counts.oldest_alone_ms and alone_ms > ALONE_MS and not up:
        fix = (
            "start the sync service (`meshpos node run`)"
            if not running
            else "check this counter's network cable, and that another counter is on"
        )
        alerts.append(
            Alert(
                "alone",
                f"Only this counter holds its last {_n(one_copy, 'op')} "
                f"({ago(counts.oldest_alone_ms, now_ms)}): {fix}",
            )
        )
    fast = list(status.get("clock_ahead") or []) if running else []
    for node in fast:
        alerts.append(
            Alert(
                "clock",
                f"{node.get('name') or node.get('node')}'s clock is "
                f"{ago(now_ms, now_ms + int(node.get('lead_ms') or 0))} ahead of this counter's: "
                "its sales carry wrong times; set its date and time, then resolve the conflict",
            )
        )
    if counts.newest_ms - now_ms > CLOCK_MS and not fast:
        alerts.append(
            Alert(
                "clock",
                f"This counter's clock is {ago(now_ms, counts.newest_ms)} behind the store's: "
                "set the right date and time",
            )
        )
    power = status.get("power") if running else None
    on_battery = ""
    if isinstance(power, Mapping) and power.get("text"):
        said = str(power.get("notice") or power.get("text"))  # the notice repeats the state
        if power.get("level") == "down":
            alerts.append(Alert("power", said))
        elif power.get("level") == "warn":
            on_battery = said  # on battery: worth a glance, not an action
        details.append(said)
    if running and status.get("revoked"):
        why = status["revoked"]
        alerts.append(
            Alert(
                "revoked",
                "This counter has been revoked"
                + (f" ({why})" if isinstance(why, str) else "")
                + ": stop selling and call the manager",
            )
        )

    waiting = max(hq_waiting, one_copy)
    if training:
        chip = "Training — practice sales, never synced"
    elif offline:
        chip = f"Offline — sales are safe · {waiting} waiting to sync"
    else:
        chip = f"Online · {waiting} waiting to sync" if waiting else "Online · synced"
    if on_battery:
        chip = f"{chip} · {on_battery}"
    return CounterState(
        level=OFFLINE if offline else OK,
        chip=chip,
        alerts=tuple(alerts),
        details=tuple(details + errors),
        errors=tuple(errors),
        waiting=waiting,
        one_copy=one_copy,
        daemon=running,
        printer=trouble,
    )


def counts(feed: LiveFeed, node_id: str, wan: Mapping[str, Any] | None) -> Counts:
    """The counts `state` needs, read through a node's live feed."""
    since_sync = since_down = 0
    if wan is not None:
        last = int(wan.get("last_sync_ms") or 0)
        down = 0 if wan.get("wan_ok") else int(wan.get("wan_since_ms") or 0)
        since_sync = feed.ops_after(last) if last else 0
        since_down = feed.ops_after(down) if down else 0
    acked = feed.acked_seq()
    waiting, error = feed.print_trouble()
    return Counts(
        own_seq=feed.own_seq(node_id),
        acked_seq=acked,
        pending=feed.pending(),
        ops_since_hq_sync=since_sync,
        ops_since_hq_down=since_down,
        oldest_alone_ms=feed.oldest_after(node_id, acked),
        newest_ms=feed.newest(),
        print_waiting=waiting,
        print_error=error,
    )


def read(
    feed: LiveFeed,
    cfg: NodeConfig,
    node_id: str,
    now_ms: int,
    clock: Callable[[int], str] = hhmm,
    *,
    training: bool = False,
) -> CounterState:
    """This node's state now: its daemon's status file and its database. A practice till passes
    the real node's `cfg` (its daemon, its HQ) and `training`."""
    status = daemon_status(cfg.dir)
    wan = status.get("wan") if status else None
    hq = cfg.raw.get("hq", {}).get("url") if isinstance(cfg.raw, dict) else None
    return state(
        status,
        counts(feed, node_id, wan if isinstance(wan, Mapping) else None),
        node_id=node_id,
        hq_url=str(hq) if hq else None,
        now_ms=now_ms,
        clock=clock,
        training=training,
    )
