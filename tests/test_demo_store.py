"""`make demo-store` in its short mode: three encrypted terminals and an HQ as real processes on
loopback converge, back up, lose and restore a terminal, and verify. It is the container topology
of docker/compose.yaml without containers, so this is the test that those files' commands work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_demo_store_short(tmp_path: Path) -> None:
    base = tmp_path / "store"
    proc = subprocess.run(
        [sys.executable, "-m", "meshpos.demo.store", "--short", "--base", str(base)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        check=False,
    )
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
        for p in sorted((base / "logs").glob("*.log"))
    )
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr}\n{logs}"
    summary = json.loads(proc.stdout.rsplit("done in", 1)[1].split(": ", 1)[1].splitlines()[0])
    assert summary["encrypted"] is True
    assert summary["ops"] > 500  # the sample catalogue plus the sales
    assert "restore_catch_up_s" in summary
    assert proc.stdout.count("ok: ") == 3  # `meshpos verify` on every terminal
    for name in ("T1", "T2", "T3"):
        db = (base / name / "meshpos.db").read_bytes()
        assert not db.startswith(b"SQLite format 3") and b"Crew T-shirt" not in db
    assert list((base / "usb-stick").glob("DEMO-T3-*.mpbak"))
    if summary["hq"]:
        assert "hq_sync_s" in summary
