"""Reading the till's power (Linux `power_supply` in /sys, NUT's `upsc`) and acting on low battery.

`read_power` gathers every supply and judges it with `meshpos.domain.power`. `LowBatteryGuard` is
what both tills run between inputs: when the battery turns low it lets the sale in progress finish,
then flushes the print queue (every queued receipt printed while there is still power) and says so
once; when mains comes back it says that too.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshpos.core.errors import ConfigError
from meshpos.domain.power import PowerPolicy, PowerState, Supply, assess, parse_sysfs, parse_upsc
from meshpos.service.config import CONFIG_FILE, NodeConfig
from meshpos.service.printing import Printing
from meshpos.service.terminal import Terminal

SYSFS = "/sys/class/power_supply"
SUPPLY_FILES = (
    "type",
    "scope",
    "present",
    "online",
    "status",
    "capacity",
    "capacity_level",
    "energy_now",
    "energy_full",
    "power_now",
    "time_to_empty_now",
)
KEYS = ("sysfs", "ups", "upsc", "low_percent", "low_minutes", "check_s")


@dataclass(frozen=True)
class PowerSetup:
    """The `[power]` table of meshpos.toml."""

    sysfs: Path = Path(SYSFS)
    ups: str = ""  # a NUT UPS name such as "ups@localhost"; empty: no UPS is asked
    upsc: str = "upsc"
    policy: PowerPolicy = field(default_factory=PowerPolicy)
    check_s: int = 10  # how often a till looks again

    @classmethod
    def from_config(cls, cfg: NodeConfig) -> PowerSetup:
        raw = cfg.section("power")
        where = f"{cfg.dir / CONFIG_FILE}: [power]"
        unknown = set(raw) - set(KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        for key in ("sysfs", "ups", "upsc"):
            if key in raw and not isinstance(raw[key], str):
                raise ConfigError(f"{where} {key} must be text")
        numbers = {}
        for key, lo, hi in (("low_percent", 0, 100), ("low_minutes", 0, 600), ("check_s", 1, 3600)):
            value = raw.get(key)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise ConfigError(f"{where} {key} must be a whole number from {lo} to {hi}")
            numbers[key] = value
        policy = PowerPolicy(
            low_percent=numbers.get("low_percent", PowerPolicy.low_percent),
            low_minutes=numbers.get("low_minutes", PowerPolicy.low_minutes),
        )
        return cls(
            sysfs=Path(raw.get("sysfs") or SYSFS),
            ups=str(raw.get("ups", "")),
            upsc=str(raw.get("upsc") or "upsc"),
            policy=policy,
            check_s=numbers.get("check_s", cls.check_s),
        )


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:  # a supply vanished, or a file the driver does not offer
        return None


def sysfs_supplies(root: Path) -> list[Supply]:
    """Every supply under `root` that says something about the till's own power."""
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return []
    out = []
    for entry in entries:
        files = {name: text for name in SUPPLY_FILES if (text := _read_text(entry / name))}
        supply = parse_sysfs(entry.name, files)
        if supply is not None:
            out.append(supply)
    return out


def nut_supply(ups: str, upsc: str = "upsc", timeout_s: float = 3.0) -> Supply:
    """The UPS `ups` as NUT's `upsc` reports it; raises ConfigError saying what went wrong."""
    command = shutil.which(upsc) or upsc
    try:
        done = subprocess.run(
            [command, ups],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except FileNotFoundError:
        raise ConfigError(
            f"[power] ups = {ups!r} but `{upsc}` is not installed (Debian: apt install nut-client)"
        ) from None
    except subprocess.TimeoutExpired:
        raise ConfigError(f"`{upsc} {ups}` did not answer in {timeout_s:g} s") from None
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()
        raise ConfigError(f"`{upsc} {ups}` failed: {why[-1] if why else done.returncode}")
    try:
        return parse_upsc(ups, done.stdout)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def read_power(setup: PowerSetup) -> PowerState:
    """Every supply this till can see, judged; a UPS that cannot be read is an error in the
    state (shown), not an exception: the till keeps selling."""
    supplies = sysfs_supplies(setup.sysfs)
    errors = []
    if setup.ups:
        try:
            supplies.append(nut_supply(setup.ups, setup.upsc))
        except ConfigError as exc:
            errors.append(str(exc))
    return assess(supplies, setup.policy, errors)


def power_of(cfg: NodeConfig) -> PowerState:
    return read_power(PowerSetup.from_config(cfg))


@dataclass(frozen=True)
class Flushed:
    """What flushing the print queue did: receipts printed, and those still waiting (why)."""

    printed: int
    waiting: int
    note: str = ""


class LowBatteryGuard:
    """Between inputs, a till calls `poll(now_ms, sale_open)`; it returns the messages to show.

    On the first poll that finds the battery low, with a sale open it asks the cashier to finish
    it; as soon as no sale is open it flushes the print queue (`flush`) and says what was printed.
    Each of these is said once per low-battery spell; mains coming back ends the spell."""

    def __init__(
        self,
        read: Callable[[], PowerState],
        flush: Callable[[], Flushed],
        check_ms: int = 10_000,
    ) -> None:
        self.read = read
        self.flush = flush
        self.check_ms = check_ms
        self.state: PowerState | None = None
        self._checked_ms: int | None = None
        self._warned = False
        self._flushed = False

    def poll(self, now_ms: int, sale_open: bool) -> list[str]:
        if self._checked_ms is None or now_ms - self._checked_ms >= self.check_ms:
            self._checked_ms = now_ms
            self.state = self.read()
        state = self.state
        if state is None:
            return []
        out: list[str] = []
        if not state.low:
            if self._warned or self._flushed:
                out.append(f"Power is back: {state.text}")
            self._warned = self._flushed = False
            return out
        if sale_open:
            if not self._warned:
                self._warned = True
                out.append(
                    f"{state.headline}: this sale is kept, complete it now; waiting receipts "
                    "print before you shut down."
                )
            return out
        if not self._flushed:
            self._flushed = True
            self._warned = True
            done = self.flush()
            printed = f"{done.printed} receipt{'' if done.printed == 1 else 's'} printed"
            waiting = f"; {done.waiting} still waiting ({done.note})" if done.waiting else ""
            out.append(
                f"{state.headline}: every sale is saved; print queue flushed: {printed}{waiting}. "
                "Shut the till down or plug it in."
            )
        return out

    def snapshot(self) -> Mapping[str, Any]:
        return self.state.as_dict() if self.state is not None else {}


def flush_print_queue(printing: Printing) -> Flushed:
    """Print every queued receipt now (low battery), and say what is still waiting and why."""
    try:
        done = printing.drain()
    except ConfigError as exc:
        return Flushed(0, len(printing.queue.jobs()), str(exc))
    return Flushed(len(done.printed), done.waiting, done.error or done.head_error or "")


def till_power_guard(t: Terminal, printing: Printing) -> LowBatteryGuard:
    """The guard a till runs: this node's `[power]` setup, flushing its print queue."""
    setup = PowerSetup.from_config(t.cfg)
    return LowBatteryGuard(
        lambda: read_power(setup), lambda: flush_print_queue(printing), setup.check_s * 1000
    )


class PowerWatch:
    """The daemon's view of power, for its status file (the web till's banner reads it there):
    read at most every `check_s`; on low battery the print queue is flushed once per spell and
    what was done is kept as `notice`. None when this machine reports no power supply at all."""

    def __init__(self, t: Terminal, now_ms: Callable[[], int]) -> None:
        self.guard = till_power_guard(t, Printing(t))
        self.now_ms = now_ms
        self.notice = ""

    def snapshot(self) -> dict[str, Any] | None:
        said = self.guard.poll(self.now_ms(), sale_open=False)
        if said:
            self.notice = said[-1]
        state = self.guard.state
        if state is None or not (state.known or state.errors):
            return None
        if not state.low and not said:
            self.notice = ""
        return {**state.as_dict(), "notice": self.notice}
