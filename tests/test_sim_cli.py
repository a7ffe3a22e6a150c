"""Scenario files (every key checked, clear errors, dump/load round trip) and `meshpos sim run`:
the report files, JSON on stdout, the exit code when an invariant fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from mesh_procs import meshpos

from meshpos.sim.fuzz import scenarios
from meshpos.sim.scenario import (
    Scenario,
    ScenarioError,
    dump,
    format_duration,
    loads,
    parse_duration,
)

BASE = """
name = "t"
duration = "10m"
catalog_rows = 6
[workload]
sales_per_hour = 120
customers = 3
[[stores]]
name = "S1"
counters = 2
"""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('colour = "red"\n', "unknown key(s) colour"),
        ("[lan]\nlatncy_ms = 3\n", "[lan]: unknown key(s) latncy_ms"),
        ('[[faults]]\nat = "+1m"\nkind = "wan-down"\n', "choose from wan_down"),
        ('[[faults]]\nat = "+1m"\nkind = "crash"\nnode = "T9"\n', "store S1 has counters"),
        ('[[faults]]\nat = "+20m"\nkind = "wan_down"\n', "after the end of the run"),
        ('[[faults]]\nat = "9:00"\nkind = "wan_down"\n', "before the start of the run"),
        (
            '[[faults]]\nat = "+1m"\nkind = "crash"\nnode = "T1"\nduration = "soon"\n',
            "not a duration",
        ),
        ('[[faults]]\nat = "+1m"\nkind = "partition"\ngroups = ["up", "down"]\n', "no group 'up'"),
        ('[[faults]]\nat = "+1m"\nkind = "link"\nnode = "T1"\n', "needs a [link] table"),
        ("[workload]\n", "Cannot declare"),
    ],
)
def test_bad_scenarios_are_refused_naming_the_key(extra: str, message: str) -> None:
    text = BASE + extra if extra.startswith("[") else extra + BASE
    with pytest.raises(ScenarioError) as err:
        loads(text, "bad.toml")
    assert message in str(err.value), str(err.value)


def test_durations_parse_and_format_exactly() -> None:
    assert parse_duration("1h30m", "x") == 5_400_000
    assert parse_duration("1500ms", "x") == 1500
    assert parse_duration(90, "x") == 90_000
    for ms in (0, 1500, 90_000, 5_400_000, 3 * 3_600_000 + 7):
        assert parse_duration(format_duration(ms), "x") == ms


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(scenarios())
def test_dump_then_load_gives_the_same_scenario(sc: Scenario) -> None:
    assert loads(dump(sc)) == sc


def test_sim_run_writes_json_and_html(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(BASE + '[[faults]]\nat = "+2m"\nkind = "wan_down"\nduration = "3m"\n')
    out = tmp_path / "out"
    run = meshpos(tmp_path, "sim", "run", str(path), "--out", str(out), "--json", "--seed", "4")
    report = json.loads(run.out)
    assert report["ok"] and report["scenario"]["seed"] == 4
    assert json.loads((out / "report.json").read_text()) == report
    assert "data:image/png;base64," in (out / "report.html").read_text()
    assert "store-hours per second" in run.err


def test_sim_run_shipped_by_name_with_table() -> None:
    run = meshpos(Path("."), "sim", "run", "flaky-wifi", "--shorten", "0.05", "--quiet")
    assert "all hold" in run.out and "second copy" in run.out


def test_sim_run_exits_2_when_an_invariant_fails(tmp_path: Path) -> None:
    # The WAN is down to the very end and the final heal gets no time: HQ cannot catch up.
    path = tmp_path / "s.toml"
    path.write_text(
        BASE.replace('duration = "10m"', 'duration = "10m"\nfinal_heal = "0s"')
        + '[[faults]]\nat = "+1m"\nkind = "wan_down"\n'
    )
    run = meshpos(tmp_path, "sim", "run", str(path), "--json", check=False)
    assert run.code == 2
    report = json.loads(run.out)
    assert not report["ok"]
    assert any("HQ does not equal the union" in v for v in report["violations"])


def test_unknown_scenario_name_lists_the_shipped_ones() -> None:
    run = meshpos(Path("."), "sim", "run", "no-such-day", check=False)
    assert run.code == 1 and "festive-wan-outage" in run.err
