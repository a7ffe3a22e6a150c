"""The mesh bench section, small: its heal figure comes from a real partition in network
namespaces, everything it created is gone afterwards (also when it fails), and without
namespaces it says the partition is skipped instead of faking one."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from bench import mesh_bench, netns
from bench.__main__ import parse_args
from bench.common import BenchError

pytestmark = [pytest.mark.slow]

BACKLOG = 300


def _args(out: Path) -> argparse.Namespace:
    sizes = ["--mesh-sales", "5", "--mesh-backlog", str(BACKLOG)]
    return parse_args(["--quick", "--only", "mesh", *sizes, "--out", str(out)])


def _leftovers() -> list[str]:
    """This process's namespaces, bridges and veths still present."""
    pid = os.getpid()
    namespaces = netns.ip("netns", "list").stdout.splitlines()
    links = netns.ip("-o", "link").stdout.splitlines()
    return [n for n in namespaces if f"meshpos-{pid}-" in n] + [
        link for link in links if f": m{pid:x}x" in link
    ]


def _need_netns() -> None:
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(f"network namespace tests skipped: {reason}")


@pytest.mark.netns
def test_heal_after_a_real_partition(tmp_path: Path) -> None:
    _need_netns()
    res = mesh_bench.mesh_section(_args(tmp_path), {})
    part = res["partition"]
    assert "skipped" not in part
    assert part["partition_how"].startswith("host end of T3's veth down")
    # Every side saw the others gone: ZMTP heartbeats (3 x 1 s) or the session timeout.
    assert part["partition_detect_s"] >= 1.0
    assert part["partition_s"] >= part["partition_detect_s"]
    assert part["heal_s"] > 0
    assert part["heal_link_up_s"] is not None and part["heal_link_up_s"] <= part["heal_s"]
    assert part["heal_session_up_s"] is not None
    assert part["heal_first_op_s"] is not None and part["heal_first_op_s"] <= part["heal_s"]
    assert part["heal_payload_ratio"] > 0
    assert part["heal_cpu_s"]["T3"] > 0 and part["heal_ops_per_t3_cpu_s"] > 0
    assert res["verify_problems"] == 0
    assert res["where"].startswith("in 3 network namespaces")
    names = [t["name"] for t in res["targets"]]
    assert f"mesh: heal {BACKLOG:,} backlog after a real partition" in names
    assert _leftovers() == []


@pytest.mark.netns
def test_a_failing_run_removes_what_it_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _need_netns()
    seen: list[list[str]] = []
    running: list[list[str]] = []

    def broken_backlog(*args: object) -> int:
        seen.append(_leftovers())
        running.append(_processes_under(tmp_path))
        raise BenchError("planted failure")

    monkeypatch.setattr(mesh_bench, "_backlog", broken_backlog)
    with pytest.raises(BenchError, match="planted failure"):
        mesh_bench.mesh_section(_args(tmp_path), {})
    assert seen and any("meshpos-" in line for line in seen[0])  # the lab existed
    assert len(running[0]) == 3  # and the three daemons ran
    assert _leftovers() == []
    assert not list(tmp_path.glob("mesh-*"))
    assert _processes_under(tmp_path) == []


def _processes_under(directory: Path) -> list[str]:
    """Command lines of live processes that name `directory` (the bench's daemons did)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if any(str(directory).encode() in arg for arg in argv):
            found.append(b" ".join(argv).decode(errors="replace"))
    return found


def test_without_namespaces_the_partition_is_skipped_not_faked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(netns, "unavailable_reason", lambda: "no namespaces in this test")
    with netns.loopback_multicast():
        res = mesh_bench.mesh_section(_args(tmp_path), {})
    assert res["partition"] == {"skipped": "no namespaces in this test"}
    assert res["where"] == "on 127.0.0.1"
    assert not any("heal" in t["name"] for t in res["targets"])
    assert "SKIPPED: no namespaces in this test" in capsys.readouterr().out
    assert res["verify_problems"] == 0
