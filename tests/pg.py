"""A throwaway PostgreSQL 15 cluster for tests and the bench.

`initdb` refuses to run as root, and sessions and CI run as root, so the cluster belongs to the
`postgres` user: a temp dir it owns, a Unix socket in that dir (no TCP port to collide on), trust
auth, fsync off. `stop()` kills it with `pg_ctl -m immediate` and removes the dir.
`.ci/ensure-postgres` installs the server on a fresh machine.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN_DIRS = (Path("/usr/lib/postgresql/15/bin"), Path("/usr/lib/postgresql/16/bin"))
USER = "postgres"


def bin_dir() -> Path | None:
    for d in BIN_DIRS:
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    return None


def unavailable() -> str | None:
    """Why no cluster can be started here, or None."""
    if bin_dir() is None:
        return (
            "PostgreSQL server binaries not found in /usr/lib/postgresql/15/bin: "
            "run .ci/ensure-postgres (apt-get install -y postgresql-15)"
        )
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return "there is no `postgres` user to own a throwaway cluster"
    if os.geteuid() != 0 and pwd.getpwuid(os.geteuid()).pw_name != USER:
        return "starting a throwaway cluster needs root (to run as `postgres`) or the postgres user"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """`durable=False` (tests) turns fsync off; the bench keeps PostgreSQL's durable defaults."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        reason = unavailable()
        if reason:
            raise RuntimeError(reason)
        bins = bin_dir()
        assert bins is not None
        self.bins = bins
        self.root = Path(tempfile.mkdtemp(prefix="meshpos-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()  # names the socket file; nothing listens on TCP
        self._started = False
        if os.geteuid() == 0:
            user = pwd.getpwnam(USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.root.chmod(0o755)

    def _run(self, *args: str) -> None:
        cmd = [str(self.bins / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", USER, "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.root)
        if out.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {out.stderr.strip() or out.stdout.strip()}")

    def start(self) -> Cluster:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", USER, "--no-sync", "-E",
                  "UTF8", "--locale=C")  # fmt: skip
        opts = (
            f"-c listen_addresses='' -c unix_socket_directories='{self.root}' -p {self.port} "
            "-c max_connections=200"
        )
        if not self.durable:
            opts += " -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"),
                  "-w", "-t", "60", "start")  # fmt: skip
        self._started = True
        return self

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{USER}@/{db}?host={self.root}&port={self.port}"

    def create_db(self, name: str | None = None) -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            if self._started:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            self._started = False
            shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def cluster(*, durable: bool = False) -> Iterator[Cluster]:
    c = Cluster(durable=durable)
    try:
        yield c.start()
    finally:
        c.stop()


def pg_cluster_fixture() -> Iterator[Cluster]:
    """Body of a session-scoped pytest fixture: skips with the reason when no cluster can run."""
    import pytest

    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with cluster() as c:
        yield c
