"""Real `meshpos` processes for the demos, the integration tests and the benches.

- `Process` is one background `meshpos ...` command (`hq serve`, `node run`) in its own session,
  so Ctrl-C at the demo's terminal reaches only the demo, with its output appended to a log file.
  It can be stopped (SIGTERM, then SIGKILL), killed like a pulled power cord, frozen with SIGSTOP
  and started again.
- `Daemon` is `meshpos --dir DIR node run`, logging to DIR/daemon.log; `Daemons` holds the daemons
  of one demo or test and stops every one it started when the block ends, whatever happened.
- `wait_for` is the one way to wait: poll a check until a deadline, failing at once when a
  process being watched died, and naming what was awaited with the tail of each log.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from meshpos.core.errors import MeshposError
from meshpos.service.daemon_link import STATUS_FILE

MESHPOS = (sys.executable, "-c", "from meshpos.cli.app import main; main()")  # the console script
LOG_FILE = "daemon.log"
WAIT_S = 60.0


class DemoFailed(MeshposError):
    """A step of a demo did not happen in time, or two views disagree (the message says which)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def meshpos(
    *args: str, check: bool = True, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`meshpos ARGS` as its own process, as a person types it; DemoFailed if it fails."""
    proc = subprocess.run(
        [*MESHPOS, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if check and proc.returncode != 0:
        raise DemoFailed(f"`meshpos {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc


class Process:
    """One background `meshpos ARGS` process; `prefix` runs it through another command
    (e.g. `ip netns exec NS`)."""

    def __init__(
        self,
        args: Sequence[str],
        log_path: Path,
        *,
        label: str | None = None,
        prefix: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.args = tuple(args)
        self.log_path = log_path
        self.label = label or " ".join(self.args[:2])
        self.prefix = tuple(prefix)
        self.env = dict(env or {})
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log_offset = 0
        self.stopping = False  # stopped, killed or signalled on purpose: not a crash

    def start(self) -> Process:
        if self.running():
            raise DemoFailed(f"{self.label} is already running")
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        argv = [*self.prefix, *MESHPOS, *self.args]
        with open(self.log_path, "ab") as log:
            log.write(f"=== start {self.starts + 1}: {' '.join(argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
                start_new_session=True,
            )
        self.starts += 1
        self.stopping = False
        return self

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def died(self) -> bool:
        """It exited without being told to."""
        return self.popen is not None and not self.stopping and self.popen.poll() is not None

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise DemoFailed(f"{self.label} was never started")
        return self.popen.pid

    def signal(self, sig: int) -> None:
        """SIGSTOP freezes it without closing its links (a hung machine); SIGCONT thaws it."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(sig)

    def terminate(self) -> None:
        self.stopping = True
        self.signal(signal.SIGTERM)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it has not exited by `timeout`. Its exit code."""
        if self.popen is None:
            return None
        self.terminate()
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no goodbye to the peers, no cleanup, like a pulled power cord."""
        self.stopping = True
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)

    def log(self, since_start: bool = False) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[self.log_offset if since_start else 0 :].decode("utf-8", "replace")

    def tail(self, chars: int = 2500) -> str:
        return f"\n--- {self.label} ({self.log_path})\n{self.log()[-chars:]}"


class Daemon(Process):
    """`meshpos --dir DIRECTORY node run [ARGS]`, logging to DIRECTORY/daemon.log."""

    def __init__(
        self,
        directory: Path,
        args: Sequence[str] = (),
        *,
        prefix: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            ["--dir", str(directory), "node", "run", *args],
            directory / LOG_FILE,
            label=f"daemon of {directory.name}",
            prefix=prefix,
            env=env,
        )
        self.directory = directory

    @property
    def name(self) -> str:
        return self.directory.name

    def status(self) -> dict[str, Any]:
        return status_of(self.directory)


def status_of(directory: Path) -> dict[str, Any]:
    """The daemon's last status.json, as `meshpos status` reads it ({} until it wrote one); it
    stays after the daemon stops."""
    try:
        status: dict[str, Any] = json.loads((directory / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return status


class Daemons:
    """The daemons of one demo or test: started through it, all stopped when the block ends."""

    def __init__(self) -> None:
        self.all: list[Daemon] = []

    def __enter__(self) -> Daemons:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(
        self,
        directory: Path,
        *args: str,
        prefix: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> Daemon:
        daemon = Daemon(directory, args, prefix=prefix, env=env)
        self.all.append(daemon)
        daemon.start()
        return daemon

    def __getitem__(self, directory: Path) -> Daemon:
        """The daemon last started for `directory`."""
        for daemon in reversed(self.all):
            if daemon.directory == directory:
                return daemon
        raise KeyError(directory)

    def close(self, timeout: float = 10.0) -> None:
        for d in self.all:
            d.terminate()
        deadline = time.monotonic() + timeout
        for d in self.all:
            if d.popen is None:
                continue
            try:
                d.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                d.popen.kill()
                d.popen.wait(5)

    def logs(self, tail: int = 3000) -> str:
        return "".join(d.tail(tail) for d in self.all)


def check_alive(processes: Sequence[Process], doing: str) -> None:
    """DemoFailed naming the processes that died, with the tail of their logs."""
    dead = [p for p in processes if p.died()]
    if dead:
        codes = ", ".join(f"{p.label} (code {p.popen and p.popen.returncode})" for p in dead)
        raise DemoFailed(f"exited while {doing}: {codes}" + "".join(p.tail() for p in dead))


def wait_for(
    check: Callable[[], Any],
    what: str,
    *,
    watch: Sequence[Process] = (),
    timeout: float = WAIT_S,
    interval: float = 0.02,
) -> float:
    """Poll `check` until it is truthy; the seconds it took. Fails at once when a process in
    `watch` died, and after `timeout`, with the tail of each one's log."""
    start = time.monotonic()
    while not check():
        check_alive(watch, f"waiting for {what}")
        if time.monotonic() - start > timeout:
            raise DemoFailed(
                f"{what} did not happen within {timeout:.0f} s" + "".join(p.tail() for p in watch)
            )
        time.sleep(interval)
    return time.monotonic() - start
