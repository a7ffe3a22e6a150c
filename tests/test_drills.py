"""Staff drills: each of the four real faults against a practice store of real daemons (and a real
HQ for the WAN drill), run by a model trainee (--auto) to full marks with the store coming through;
a scripted trainee who answers wrong and skips a task is scored down and told what to do; bad
input is refused before anything starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meshpos.core.errors import InputError
from meshpos.sim.drills import DRILLS, DrillRun

MESHPOS = [sys.executable, "-c", "from meshpos.cli.app import main; main()"]

pytestmark = pytest.mark.slow


def drill(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MESHPOS, "drill", "run", *args], capture_output=True, text=True, timeout=240, cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.parametrize("kind", DRILLS)
def test_each_drill_with_a_model_trainee(kind: str, tmp_path: Path):
    base = tmp_path / "store"
    done = drill(kind, "--auto", "--no-web", "--json", "--dir", str(base), cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout[done.stdout.index("{\n") :])
    assert result["score"] == result["total"] == 4
    assert result["store_ok"] and all(c["ok"] for c in result["checks"])
    assert "the tills showed the fault" in [c["what"] for c in result["checks"]]
    assert "== what staff should have seen and done" in done.stdout
    # the practice tills were marked TRAINING and nothing is left running
    assert "practice = true" in (base / "T1" / "meshpos.toml").read_text()
    assert not list(base.glob("*/status.json"))


def test_a_trainee_who_gets_it_wrong_is_scored_down_and_told(tmp_path: Path):
    done = drill("printer-off", "--answers", "b,done,a,c", "--no-web", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout[done.stdout.index("{\n") :])
    assert [i["ok"] for i in result["items"]] == [False, False, True, False]
    assert result["score"] == 1 and result["store_ok"]
    assert "MISSED A sale at T1 did not print. Was the sale recorded? (answered b, right: a)" in (
        done.stdout
    )
    assert result["items"][1]["note"] == "no sale was rung at T1 during the fault"


def test_bad_input_is_refused_before_anything_starts(tmp_path: Path):
    done = drill("flood", "--auto", cwd=tmp_path)
    assert done.returncode == 2 and "flood" in done.stderr
    done = drill("wan-outage", "--answers", "a,zz", cwd=tmp_path)
    assert done.returncode == 1 and "'zz' must be a letter a-d or `done`" in done.stderr
    done = drill("wan-outage", cwd=tmp_path)  # no terminal to ask at
    assert done.returncode == 1 and "pass --auto or --answers" in done.stderr
    with pytest.raises(InputError, match="unknown drill"):
        DrillRun("flood", auto=True)
    assert not list(tmp_path.iterdir())
