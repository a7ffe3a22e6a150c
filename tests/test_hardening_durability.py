"""Issue 13, point 11: durability you can see. The crash test (test_crash.py) kills a process with
SIGKILL, which leaves the page cache intact, so a build that never calls fsync passes it. Here a
real `meshpos sell` runs under strace: the database's WAL (or the database) must be fsynced or
fdatasynced before the sale's result reaches stdout, where the cashier's screen, a script or
the till reads it as done. The same check on a build with `synchronous=OFF` (patched in the
test's own child process only) fails: the test can see a missing fsync.

Debian's strace (`apt-get install strace`, which .ci/run does) must be on PATH, and ptrace allowed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from meshpos.demo.processes import MESHPOS

SYNCED = re.compile(r"\b(?:fsync|fdatasync)\(\d+<([^>]*)>\)\s*=\s*0")
RESULT = re.compile(r'\bwrite\(1<[^>]*>, "\{\\n  \\"sale_id\\"')
# The same CLI with every ledger opened `durable=False` (synchronous=OFF): a build without fsync.
NO_SYNC = (
    sys.executable, "-c",
    "import meshpos.ledger.store as s\n"
    "opened = s.Ledger.__init__\n"
    "def off(self, *a, **k):\n"
    "    opened(self, *a, **{**k, 'durable': False})\n"
    "s.Ledger.__init__ = off\n"
    "from meshpos.cli.app import main\n"
    "main()",
)  # fmt: skip


def _strace() -> str:
    path = shutil.which("strace")
    if path is None:
        pytest.skip("strace is not installed: apt-get install -y strace (see .ci/run)")
    probe = subprocess.run([path, "-o", "/dev/null", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"strace cannot trace here (ptrace not allowed?): {probe.stderr.strip()}")
    return path


def synced_before_result(trace: str, db: Path) -> bool:
    """Whether an fsync/fdatasync of the database or its WAL returned before the sale's JSON
    was written to stdout."""
    files = {str(db), f"{db}-wal"}
    synced = False
    for line in trace.splitlines():
        m = SYNCED.search(line)
        if m and m.group(1) in files:
            synced = True
        if RESULT.search(line):
            return synced
    raise AssertionError(f"the sale's result never reached stdout:\n{trace[-3000:]}")


def traced_sale(cli: tuple[str, ...], node: Path, tmp_path: Path, strace: str) -> str:
    out = tmp_path / f"trace-{len(list(tmp_path.glob('trace-*')))}"
    proc = subprocess.run(
        [strace, "-y", "-s", "64", "-e", "trace=fsync,fdatasync,write", "-o", str(out),
         *cli, "--dir", str(node), "sell", "TSH-NAV-M", "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert '"sale_id"' in proc.stdout
    return out.read_text()


def test_a_sale_is_on_disk_before_its_result_is_printed(tmp_path: Path) -> None:
    strace = _strace()
    for encrypt in ("--encrypt", "--no-encrypt"):
        node = tmp_path / encrypt
        for args in (
            ("init", "--store", "S1", "--name", "T1", encrypt),
            ("catalog", "import", "--sample"),
        ):
            made = subprocess.run([*MESHPOS, "--dir", str(node), *args], capture_output=True,
                                  text=True, timeout=120)  # fmt: skip
            assert made.returncode == 0, made.stderr
        db = node / "meshpos.db"
        assert synced_before_result(traced_sale(MESHPOS, node, tmp_path, strace), db), encrypt
        # The check sees a build that does not sync: it would fail on one.
        assert not synced_before_result(traced_sale(NO_SYNC, node, tmp_path, strace), db)
