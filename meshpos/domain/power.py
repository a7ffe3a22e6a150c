"""Battery and UPS state: what the till says about power, from what the operating system reports.

Pure: the caller reads Linux's `power_supply` class (one directory of small text files per supply
under /sys/class/power_supply) and NUT's `upsc` output and passes the text in. Power cuts are what
take many stores offline, so the till says plainly whether it runs on mains or battery, how much is
left, and when the battery is low enough that the cashier should finish the sale and shut down.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

KINDS = ("battery", "ups", "mains")
SOURCES = ("sysfs", "nut")
LEVELS = ("ok", "warn", "down")


@dataclass(frozen=True)
class Supply:
    """One power supply as the operating system reports it."""

    name: str
    kind: str  # battery | ups | mains
    source: str  # sysfs | nut
    online: bool | None = None  # mains present (mains, ups); None when not reported
    percent: int | None = None  # charge left (battery, ups)
    charging: bool | None = None
    runtime_s: int | None = None  # time left on battery, when reported
    low_flag: bool = False  # the device itself says the battery is low (NUT's LB, critical)

    @property
    def on_battery(self) -> bool:
        """Running from this supply's own charge: a discharging battery, or a UPS off mains."""
        if self.kind == "mains":
            return False
        if self.kind == "ups":
            return self.online is False
        return self.charging is False and self.online is not True


@dataclass(frozen=True)
class PowerPolicy:
    """When the till calls the battery low (`[power]` in meshpos.toml)."""

    low_percent: int = 20
    low_minutes: int = 5


@dataclass(frozen=True)
class PowerState:
    """What the till shows: one line of plain words and a severity."""

    supplies: tuple[Supply, ...]
    on_battery: bool
    low: bool
    percent: int | None
    runtime_s: int | None
    errors: tuple[str, ...] = ()

    @property
    def known(self) -> bool:
        return bool(self.supplies)

    @property
    def level(self) -> str:
        if self.low:
            return "down"
        if self.on_battery:
            return "warn"
        return "ok"

    @property
    def headline(self) -> str:
        """`Battery low (12%)`, `On battery (45%)`, `On mains power`: the state in a few words."""
        left = _left(self.percent, self.runtime_s)
        if self.low:
            return f"Battery low{left}"
        return f"On battery{left}" if self.on_battery else f"On mains power{left}"

    @property
    def text(self) -> str:
        left = _left(self.percent, self.runtime_s)
        if not self.supplies:
            return "Power: not reported" + (f" ({self.errors[0]})" if self.errors else "")
        if self.low:
            return f"Battery low{left}: finish this sale, then shut down or plug in"
        if self.on_battery:
            return f"On battery{left}: mains power is off"
        batteries = [s for s in self.supplies if s.kind != "mains" and s.percent is not None]
        if batteries:
            return f"On mains power{left}"
        return "On mains power"

    def as_dict(self) -> dict[str, object]:
        return {
            "on_battery": self.on_battery,
            "low": self.low,
            "percent": self.percent,
            "runtime_s": self.runtime_s,
            "level": self.level,
            "text": self.text,
            "supplies": [s.__dict__.copy() for s in self.supplies],
            "errors": list(self.errors),
        }


def _left(percent: int | None, runtime_s: int | None) -> str:
    parts = []
    if percent is not None:
        parts.append(f"{percent}%")
    if runtime_s is not None:
        minutes = runtime_s // 60
        parts.append(f"about {minutes} min left" if minutes else "under a minute left")
    return f" ({', '.join(parts)})" if parts else ""


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(float(text.strip()))
    except ValueError:
        return None


def parse_sysfs(name: str, files: Mapping[str, str]) -> Supply | None:
    """A supply from the files of /sys/class/power_supply/NAME (file name -> content). USB and
    wireless chargers and peripherals' batteries (`scope` Device: a wireless mouse) are left out:
    they say nothing about the till's own power."""
    kind_text = files.get("type", "").strip().lower()
    if files.get("scope", "").strip().lower() == "device":
        return None
    if kind_text == "battery":
        kind = "battery"
    elif kind_text == "ups":
        kind = "ups"
    elif kind_text == "mains":
        kind = "mains"
    else:
        return None
    if files.get("present", "1").strip() == "0":
        return None
    online = _int(files.get("online"))
    status = files.get("status", "").strip().lower()
    charging: bool | None = None
    if status in ("charging", "full", "not charging"):
        charging = True
    elif status == "discharging":
        charging = False
    percent = _int(files.get("capacity"))
    if percent is None:
        now, full = _int(files.get("energy_now")), _int(files.get("energy_full"))
        if now is not None and full:
            percent = round(100 * now / full)
    runtime = _int(files.get("time_to_empty_now"))
    if runtime is None:
        energy, power = _int(files.get("energy_now")), _int(files.get("power_now"))
        if energy is not None and power and charging is False:
            runtime = energy * 3600 // power
    if percent is not None:
        percent = max(0, min(100, percent))
    level = files.get("capacity_level", "").strip().lower()
    return Supply(
        name=name,
        kind=kind,
        source="sysfs",
        online=None if online is None else bool(online),
        percent=percent if kind != "mains" else None,
        charging=charging,
        runtime_s=runtime,
        low_flag=level == "critical",
    )


def parse_upsc(name: str, text: str) -> Supply:
    """A UPS from `upsc NAME` output (`battery.charge: 87`, `ups.status: OB DISCHRG`, ...)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            values[key.strip()] = value.strip()
    flags = set(values.get("ups.status", "").split())
    if not flags and "battery.charge" not in values:
        raise ValueError(f"upsc {name} printed no ups.status or battery.charge")
    online: bool | None = None
    if "OL" in flags:
        online = True
    elif "OB" in flags:
        online = False
    charging: bool | None = None
    if "CHRG" in flags:
        charging = True
    elif "DISCHRG" in flags or online is False:
        charging = False
    percent = _int(values.get("battery.charge"))
    return Supply(
        name=name,
        kind="ups",
        source="nut",
        online=online,
        percent=None if percent is None else max(0, min(100, percent)),
        charging=charging,
        runtime_s=_int(values.get("battery.runtime")),
        low_flag=bool(flags & {"LB", "FSD"}),
    )


def assess(
    supplies: Sequence[Supply], policy: PowerPolicy, errors: Sequence[str] = ()
) -> PowerState:
    """The till's power state: on battery when mains is off (no mains supply online, or a UPS
    says it is on battery, or the till's own battery discharges); low when, on battery, the charge
    or the time left falls to the policy's limit, or the device itself says so."""
    mains = [s for s in supplies if s.kind == "mains" and s.online is not None]
    draining = [s for s in supplies if s.on_battery]
    on_battery = bool(draining) or (bool(mains) and not any(s.online for s in mains))
    stores = [s for s in supplies if s.kind != "mains"]
    relevant = [s for s in stores if s.on_battery] or stores
    percents = [s.percent for s in relevant if s.percent is not None]
    runtimes = [s.runtime_s for s in relevant if s.runtime_s is not None]
    percent = min(percents) if percents else None
    runtime = min(runtimes) if runtimes else None
    low = on_battery and (
        any(s.low_flag for s in relevant)
        or (percent is not None and percent <= policy.low_percent)
        or (runtime is not None and runtime <= policy.low_minutes * 60)
    )
    return PowerState(
        supplies=tuple(supplies),
        on_battery=on_battery,
        low=low,
        percent=percent,
        runtime_s=runtime,
        errors=tuple(errors),
    )
