"""Power: battery and UPS state from a fake /sys/class/power_supply and a fake `upsc`, the
low-battery rule, the guard a till runs (finish the sale, flush the print queue, say so), and
`meshpos power`."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import pytest
import tomli_w

from meshpos.domain.power import PowerPolicy, assess, parse_sysfs, parse_upsc
from meshpos.service.power import Flushed, LowBatteryGuard, PowerSetup, read_power, sysfs_supplies


def supply(root: Path, name: str, **files: object) -> Path:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    for key, value in files.items():
        (d / key).write_text(f"{value}\n")
    return d


@pytest.fixture
def laptop(tmp_path: Path) -> Path:
    """A till on a laptop: mains adapter AC and battery BAT0, plugged in and charging."""
    root = tmp_path / "power_supply"
    supply(root, "AC", type="Mains", online=1)
    supply(root, "BAT0", type="Battery", status="Charging", capacity=80, present=1)
    supply(
        root, "hid-mouse-battery", type="Battery", scope="Device", capacity=3, status="Discharging"
    )
    return root


def unplug(root: Path, capacity: int, status: str = "Discharging") -> None:
    (root / "AC" / "online").write_text("0\n")
    (root / "BAT0" / "status").write_text(f"{status}\n")
    (root / "BAT0" / "capacity").write_text(f"{capacity}\n")


def test_sysfs_on_mains_then_battery_then_low(laptop: Path):
    setup = PowerSetup(sysfs=laptop)
    state = read_power(setup)
    assert [s.name for s in state.supplies] == ["AC", "BAT0"]  # the mouse's battery is not ours
    assert not state.on_battery and not state.low and state.level == "ok"
    assert state.text == "On mains power (80%)"
    unplug(laptop, 45)
    state = read_power(setup)
    assert state.on_battery and not state.low and state.level == "warn"
    assert state.text == "On battery (45%): mains power is off"
    unplug(laptop, 20)
    state = read_power(setup)
    assert state.low and state.level == "down"
    assert state.text.startswith("Battery low (20%): finish this sale")


def test_sysfs_runtime_from_energy_and_critical_level(tmp_path: Path):
    root = tmp_path / "ps"
    supply(root, "BAT1", type="Battery", status="Discharging", energy_now=10_000_000,
           energy_full=40_000_000, power_now=20_000_000)  # fmt: skip
    state = read_power(PowerSetup(sysfs=root))
    assert state.percent == 25 and state.runtime_s == 1800  # 10 Wh at 20 W: half an hour
    assert state.on_battery and not state.low
    (root / "BAT1" / "capacity_level").write_text("Critical\n")
    assert read_power(PowerSetup(sysfs=root)).low  # the battery's own word counts


def test_time_left_makes_low_before_percent(tmp_path: Path):
    root = tmp_path / "ps"
    supply(root, "BAT0", type="Battery", status="Discharging", capacity=60, time_to_empty_now=240)
    state = read_power(PowerSetup(sysfs=root, policy=PowerPolicy(low_percent=20, low_minutes=5)))
    assert state.low and "about 4 min left" in state.text


def test_missing_or_unreadable_sysfs_is_not_an_error(tmp_path: Path):
    state = read_power(PowerSetup(sysfs=tmp_path / "absent"))
    assert not state.known and not state.low and state.text == "Power: not reported"
    assert sysfs_supplies(tmp_path / "absent") == []
    assert parse_sysfs("x", {"type": "USB", "online": "1"}) is None
    assert parse_sysfs("b", {"type": "Battery", "present": "0"}) is None


UPSC_ON_BATTERY = "battery.charge: 35\nbattery.runtime: 900\nups.status: OB DISCHRG\n"


def fake_upsc(tmp_path: Path, text: str, code: int = 0) -> Path:
    script = tmp_path / "upsc"
    (tmp_path / "upsc.out").write_text(text)
    script.write_text(
        f"#!/bin/sh\n[ \"$1\" = shop@localhost ] || {{ echo 'Error: Unknown UPS' >&2; exit 1; }}\n"
        f"cat {tmp_path / 'upsc.out'}\nexit {code}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_nut_ups_on_battery_and_low_flag(tmp_path: Path):
    upsc = fake_upsc(tmp_path, UPSC_ON_BATTERY)
    setup = PowerSetup(sysfs=tmp_path / "none", ups="shop@localhost", upsc=str(upsc))
    state = read_power(setup)
    assert state.on_battery and not state.low
    assert state.text == "On battery (35%, about 15 min left): mains power is off"
    (tmp_path / "upsc.out").write_text("battery.charge: 50\nups.status: OB LB\n")
    assert read_power(setup).low  # NUT's LB flag, whatever the charge
    (tmp_path / "upsc.out").write_text("battery.charge: 100\nups.status: OL CHRG\n")
    state = read_power(setup)
    assert not state.on_battery and state.text == "On mains power (100%)"


def test_nut_failures_are_reported_not_raised(tmp_path: Path):
    upsc = fake_upsc(tmp_path, UPSC_ON_BATTERY)
    state = read_power(PowerSetup(sysfs=tmp_path / "none", ups="other@localhost", upsc=str(upsc)))
    assert not state.known and "Unknown UPS" in state.errors[0]
    state = read_power(PowerSetup(sysfs=tmp_path / "none", ups="shop", upsc="/nonexistent/upsc"))
    assert "is not installed" in state.errors[0]
    with pytest.raises(ValueError):
        parse_upsc("shop", "Init SSL without certificate database\n")


def test_ups_and_mains_together(tmp_path: Path):
    """A desktop till behind a UPS: sysfs shows no battery; the UPS decides."""
    ups = parse_upsc("shop", "battery.charge: 90\nups.status: OL\n")
    mains = parse_sysfs("AC", {"type": "Mains", "online": "1"})
    assert mains is not None
    assert not assess([mains, ups], PowerPolicy()).on_battery
    ups_off = parse_upsc("shop", "battery.charge: 18\nups.status: OB\n")
    state = assess([ups_off], PowerPolicy(low_percent=20))
    assert state.on_battery and state.low and state.percent == 18


def test_guard_finishes_the_sale_then_flushes_once(laptop: Path):
    setup = PowerSetup(sysfs=laptop)
    flushes: list[int] = []

    def flush() -> Flushed:
        flushes.append(1)
        return Flushed(printed=2, waiting=0)

    guard = LowBatteryGuard(lambda: read_power(setup), flush, check_ms=0)
    assert guard.poll(0, sale_open=True) == []
    unplug(laptop, 10)
    said = guard.poll(1, sale_open=True)
    assert len(said) == 1 and "complete it now" in said[0] and not flushes
    assert guard.poll(2, sale_open=True) == []  # said once
    said = guard.poll(3, sale_open=False)  # the sale is done: flush now
    assert flushes == [1]
    assert "print queue flushed: 2 receipts printed" in said[0]
    assert guard.poll(4, sale_open=False) == [] and flushes == [1]
    (laptop / "AC" / "online").write_text("1\n")
    (laptop / "BAT0" / "status").write_text("Charging\n")
    assert guard.poll(5, sale_open=False) == ["Power is back: On mains power (10%)"]
    unplug(laptop, 9)
    assert guard.poll(6, sale_open=False) and flushes == [1, 1]  # a new spell flushes again


def test_guard_says_what_could_not_print(laptop: Path):
    unplug(laptop, 5)
    guard = LowBatteryGuard(
        lambda: read_power(PowerSetup(sysfs=laptop)),
        lambda: Flushed(printed=0, waiting=3, note="printer offline"),
    )
    said = guard.poll(0, sale_open=False)
    assert "0 receipts printed; 3 still waiting (printer offline)" in said[0]


def test_guard_reads_at_most_every_check_interval(laptop: Path):
    reads: list[int] = []

    def read():
        reads.append(1)
        return read_power(PowerSetup(sysfs=laptop))

    guard = LowBatteryGuard(read, lambda: Flushed(0, 0), check_ms=10_000)
    for now in (0, 5_000, 9_999):
        guard.poll(now, sale_open=False)
    assert len(reads) == 1
    guard.poll(10_000, sale_open=False)
    assert len(reads) == 2


# -- the command ----------------------------------------------------------------------------------


def set_power(node, **values: object) -> None:
    path = node.path / "meshpos.toml"
    doc = tomllib.loads(path.read_text())
    doc["power"] = values
    path.write_text(tomli_w.dumps(doc))


def test_power_command(node, laptop: Path, tmp_path: Path):
    set_power(
        node,
        sysfs=str(laptop),
        ups="shop@localhost",
        upsc=str(fake_upsc(tmp_path, UPSC_ON_BATTERY)),
    )
    out = node.json("power")
    assert out["on_battery"] and not out["low"] and out["level"] == "warn"
    assert {s["name"] for s in out["supplies"]} == {"AC", "BAT0", "shop@localhost"}
    text = node.ok("power").out
    assert text.splitlines()[0].startswith("On battery (35%, about 15 min left)")
    assert "ups shop@localhost (nut), mains off, 35%, discharging, 15 min left" in text


def test_power_command_refuses_bad_config(node):
    set_power(node, low_percent=150)
    assert "low_percent must be a whole number from 0 to 100" in node.fail("power")
    set_power(node, battery="yes")
    assert "unknown key(s) battery" in node.fail("power")


def test_real_sysfs_is_read_without_error():
    if not os.path.isdir("/sys/class/power_supply"):
        pytest.skip("no /sys/class/power_supply here")
    state = read_power(PowerSetup())
    assert state.level in ("ok", "warn", "down")


# -- the daemon's status and the web till's banner ------------------------------------------------


def test_daemon_watch_flushes_once_and_the_banner_says_so(node, laptop: Path):
    from meshpos.service import counter_state
    from meshpos.service.power import PowerWatch
    from meshpos.service.printing import queue_receipt
    from meshpos.service.terminal import Terminal

    set_power(node, sysfs=str(laptop), check_s=1)
    t = Terminal.open(node.path, on_record=[queue_receipt])
    t.sell([("TEE-M", 1)])  # its receipt waits in the queue
    assert len(t.ledger.print_queue.jobs()) == 1
    clock = iter(range(0, 100_000, 2_000))
    try:
        watch = PowerWatch(t, lambda: next(clock))
        snap = watch.snapshot()
        assert snap is not None and snap["level"] == "ok" and snap["notice"] == ""
        unplug(laptop, 7)
        snap = watch.snapshot()
        assert snap is not None and snap["low"]
        assert "print queue flushed: 1 receipt printed" in snap["notice"]
        assert t.ledger.print_queue.jobs() == []
        status = {"pid": 1, "peers": [], "peers_up": 0, "power": snap}
        state = counter_state.state(
            status, counter_state.Counts(own_seq=0, acked_seq=0), node_id=t.node_id,
            hq_url=None, now_ms=0,
        )  # fmt: skip
        power = next(a for a in state.alerts if a.key == "power")  # red: act on it
        assert power.text.startswith("Battery low (7%)")
        assert "Shut the till down or plug it in" in power.text
    finally:
        t.close()


def test_no_power_supply_no_banner_item(node, tmp_path: Path):
    from meshpos.service import counter_state
    from meshpos.service.power import PowerWatch
    from meshpos.service.terminal import Terminal

    set_power(node, sysfs=str(tmp_path / "none"))
    t = Terminal.open(node.path)
    try:
        assert PowerWatch(t, lambda: 0).snapshot() is None
    finally:
        t.close()
    status = {"pid": 1, "peers": [], "peers_up": 0, "power": None}
    state = counter_state.state(
        status, counter_state.Counts(own_seq=0, acked_seq=0), node_id="x", hq_url=None, now_ms=0
    )
    assert not any(a.key == "power" for a in state.alerts)
    assert not any("battery" in d.lower() or "mains" in d.lower() for d in state.details)
