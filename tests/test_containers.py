"""`make demo-containers` as tests: docker/'s images built with podman, compose.yaml's store
(PostgreSQL, HQ, three terminals) run in containers, and everything the runs made removed again,
also when a run is stopped halfway or died without cleaning up.

They take minutes (a first build downloads the dependencies), so `make test` skips them and
`make test-containers` (run by .ci/run) runs them; where podman cannot run they skip, saying why.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "docker" / "podman_store.py"
LABEL = "meshpos.demo-containers"
CONF = {"CONTAINERS_CONF": str(REPO / "docker" / "podman" / "containers.conf")}

pytestmark = [
    pytest.mark.containers,
    pytest.mark.skipif(
        os.environ.get("MESHPOS_CONTAINERS") != "1",
        reason="builds images and runs containers for minutes: `make test-containers` runs it",
    ),
]


def script(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


def podman(*args: str) -> str:
    proc = subprocess.run(
        ["podman", *args], capture_output=True, text=True, env={**os.environ, **CONF}, check=True
    )
    return proc.stdout


def labelled(owner: int) -> list[str]:
    """Pods, containers and volumes a run of the script (process `owner`) made and left."""
    found = []
    for kind in ("pod", "container", "volume"):
        listing = ["ps", "--all"] if kind == "container" else [kind, "ls"]
        rows = json.loads(
            podman(*listing, "--filter", f"label={LABEL}={owner}", "--format", "json") or "[]"
        )
        found += [f"{kind} {row.get('Name') or row.get('Names')}" for row in rows]
    return found


@pytest.fixture(scope="module", autouse=True)
def podman_runs() -> None:
    check = script("check")
    if check.returncode == 3:
        pytest.skip(check.stderr.strip())
    assert check.returncode == 0, check.stderr


def start(out: Path, *args: str) -> subprocess.Popen[str]:
    with out.open("w") as log:
        return subprocess.Popen(
            [sys.executable, str(SCRIPT), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
            start_new_session=True,
        )


def finish(proc: subprocess.Popen[str], out: Path, timeout: float) -> str:
    """Wait for the script; past `timeout` stop it with SIGTERM (it cleans up) and fail."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        proc.wait(180)
        pytest.fail(f"the run took over {timeout:.0f} s:\n{out.read_text()[-6000:]}")
    finally:
        script("clean")
    return out.read_text()


def test_store_runs_in_containers(tmp_path: Path) -> None:
    summary, out = tmp_path / "summary.json", tmp_path / "run.log"
    proc = start(out, "--summary", str(summary))
    text = finish(proc, out, timeout=1500)
    assert proc.returncode == 0, text[-8000:]
    result = json.loads(summary.read_text())
    assert result["sales"] == result["hq_sales"] == 5  # 3 sales, then 2 while t3 was down
    assert result["ops"] > 500  # the sample catalogue came through too
    assert set(result["users"]) == {"hq", "t1", "t2", "t3"}
    assert set(result["users"].values()) == {"meshpos"}
    assert result["restart_catch_up_s"] < 180
    assert text.count(": ok: ") == 3  # `meshpos verify` at every terminal
    assert {i.rsplit("/", 1)[-1] for i in result["images"]} == {
        "meshpos-hq",
        "meshpos-terminal",
        "meshpos-postgres",
    }
    assert labelled(proc.pid) == []


def test_stopped_run_removes_what_it_made(tmp_path: Path) -> None:
    """SIGTERM while the store starts: the pod, its containers and volumes go with the run."""
    out = tmp_path / "run.log"
    proc = start(out)
    postgres = f"meshpos-store-{proc.pid}-postgres"
    deadline = time.monotonic() + 1500
    while subprocess.run(
        ["podman", "container", "exists", postgres], env={**os.environ, **CONF}, check=False
    ).returncode:
        assert proc.poll() is None, out.read_text()[-6000:]
        assert time.monotonic() < deadline, "the run never started PostgreSQL"
        time.sleep(0.5)
    assert labelled(proc.pid) != []
    proc.send_signal(signal.SIGTERM)
    text = finish(proc, out, timeout=180)
    assert proc.returncode == 130, text[-6000:]
    assert "interrupted" in text
    assert labelled(proc.pid) == []


def test_clean_removes_leftovers_of_dead_runs() -> None:
    """A run killed with SIGKILL cannot clean up: the next run's (or `clean`'s) sweep does, and
    leaves the things of runs still alive alone."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    alive = os.getpid()
    for owner in (dead.pid, alive):
        podman("volume", "create", "--label", f"{LABEL}={owner}", f"meshpos-test-{owner}")
    try:
        cleaned = script("clean")
        assert cleaned.returncode == 0, cleaned.stderr
        assert labelled(dead.pid) == []
        assert labelled(alive) == [f"volume meshpos-test-{alive}"]
    finally:
        podman("volume", "rm", "--force", f"meshpos-test-{alive}", f"meshpos-test-{dead.pid}")
