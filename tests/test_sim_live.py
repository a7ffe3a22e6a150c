"""`meshpos sim live`: a short drill with real daemons on loopback: sales at every counter, a
frozen and a killed daemon, the counters agreeing at the end, every process stopped and the
temporary store removed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mesh_procs import meshpos

from meshpos.sim.live import Drill

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


def test_live_drill_with_three_daemons(tmp_path: Path) -> None:
    drill = Drill(nodes=3, seconds=12, seed=2)
    lines: list[str] = []
    summary = drill.run(print_line=lines.append)
    text = "\n".join(lines)
    assert summary.converged, text
    assert summary.sales >= 5, text
    assert "SIGSTOP" in text and "SIGKILL" in text and "restarts" in text
    assert "safe: held by 2 copies" in text
    assert "every drill process stopped" in lines[-1]
    pids = [c.proc.pid for c in drill.counters if c.proc is not None]
    assert len(pids) == 3 and not any(_alive(p) for p in pids)
    assert not drill.base.exists(), "the temporary store was not removed"


def test_live_command_keeps_the_directory_when_asked(tmp_path: Path) -> None:
    base = tmp_path / "drill"
    run = meshpos(tmp_path, "sim", "live", "--nodes", "2", "--seconds", "6", "--dir", str(base))
    assert "all counters agree" in run.out
    assert (base / "T1" / "meshpos.db").exists() and (base / "T2" / "daemon.log").exists()
