"""`make demo-store`: a store of three terminals and an HQ, as processes on loopback.

The same topology as docker/compose.yaml, without containers: every step is a real `meshpos`
command in its own process (printed as it runs), so what this runs is what the containers run.

    python -m meshpos.demo.store [run] [--base DIR] [--short] [--no-encrypt] [--no-hq]
    python -m meshpos.demo.store setup --base /data --host T1=t1 ... --hq-url URL --hq-db URL

`setup` only builds the directories (HQ, store enrolment, three enrolled and encrypted terminals
with static peers); docker/compose.yaml runs it once in a setup container. `run` (the default)
also starts `meshpos hq serve` and three `meshpos node run` daemons, rings sales at every counter,
waits until every terminal and HQ hold the same ops, backs a terminal up to an "off-site"
directory, loses that terminal's disk, restores it and lets it catch up, and runs `meshpos verify`
everywhere. Without `meshpos hq serve` (or with --no-hq) the store's key lives on T1 instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshpos.demo.hq import store_vv
from meshpos.demo.processes import (
    DemoFailed,
    Process,
    check_alive,
    free_port,
    meshpos,
    wait_for,
)
from meshpos.node import membership
from meshpos.service.config import load_config

STORE = "DEMO"
NAMES = ("T1", "T2", "T3")


def say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def run(args: Sequence[str], *, quiet: bool = False) -> str:
    """Run `meshpos ARGS` as its own process, printing the command; returns stdout."""
    print(f"    $ meshpos {' '.join(args)}", flush=True)
    out = _run(args)
    if not quiet and out.strip():
        print("      " + out.strip().replace("\n", "\n      "), flush=True)
    return out


def run_parallel(commands: Sequence[Sequence[str]]) -> list[str]:
    """Run independent commands (one per terminal) at once, as three machines would."""
    for args in commands:
        print(f"    $ meshpos {' '.join(args)}", flush=True)
    with ThreadPoolExecutor(max_workers=len(commands) or 1) as pool:
        return list(pool.map(_run, commands))


def _run(args: Sequence[str]) -> str:
    return meshpos(*args, timeout=300).stdout


def hq_available() -> bool:
    return meshpos("hq", "serve", "--help", check=False).returncode == 0


def configure(directory: Path, tables: dict[str, dict[str, Any]]) -> None:
    """Set values in tables of a node's meshpos.toml."""
    cfg = load_config(directory)
    for table, values in tables.items():
        for key, value in values.items():
            membership.set_config(cfg, table, key, value)


# -- setup ----------------------------------------------------------------------------------------


@dataclass
class Layout:
    base: Path
    hosts: dict[str, str]  # terminal name -> host its peers dial
    ports: dict[str, int]
    hq_url: str | None
    hq_db: str | None
    encrypt: bool = True
    offsite: Path | None = None

    def dir(self, name: str) -> Path:
        return self.base / name

    @property
    def hq_dir(self) -> Path:
        return self.base / "hq"


def setup(layout: Layout) -> None:
    """HQ (if any) enrols the store and certifies three terminals; each terminal is encrypted at
    rest and told where its peers and HQ are."""
    base = layout.base
    base.mkdir(parents=True, exist_ok=True)
    hq = layout.hq_url is not None
    if hq:
        say("HQ: create it, enrol the store (HQ keeps the store key)")
        db = ["--db", layout.hq_db] if layout.hq_db else []
        run(["hq", "init", "--dir", str(layout.hq_dir), *db], quiet=True)
        run(["hq", "enroll-store", STORE, "--dir", str(layout.hq_dir), "--name", "Demo store"],
            quiet=True)  # fmt: skip
    say(
        f"terminals {', '.join(NAMES)}: init, enrol{' at HQ' if hq else ' with T1'}"
        + (", encrypt at rest" if layout.encrypt else "")
    )
    dirs = {name: str(layout.dir(name)) for name in NAMES}
    plain = [] if layout.encrypt else ["--no-encrypt"]  # `init` encrypts by default
    run_parallel([["--dir", d, "init", "--store", STORE, "--name", n, *plain]
                  for n, d in dirs.items()])  # fmt: skip
    joining = list(NAMES) if hq else list(NAMES[1:])
    if not hq:
        run(["--dir", dirs[NAMES[0]], "store", "init"], quiet=True)
    req = {n: str(base / f"{n}.request") for n in joining}
    enr = {n: str(base / f"{n}.enrolment") for n in joining}
    run_parallel([["--dir", dirs[n], "enroll", "request", "--out", req[n]] for n in joining])
    for n in joining:
        if hq:
            run(["hq", "enroll-node", STORE, req[n], "--out", enr[n], "--dir", str(layout.hq_dir)],
                quiet=True)  # fmt: skip
        else:
            run(["--dir", dirs[NAMES[0]], "enroll", "sign", req[n], "--out", enr[n]], quiet=True)
    run_parallel([["--dir", dirs[n], "enroll", "install", enr[n]] for n in joining])
    if layout.encrypt:
        run_parallel([["--dir", d, "encrypt"] for d in dirs.values()])
    ids = {name: load_config(layout.dir(name)).node_id for name in NAMES}
    for name in NAMES:
        peers = [
            {"node": ids[p], "host": layout.hosts[p], "port": layout.ports[p]}
            for p in NAMES
            if p != name
        ]
        tables: dict[str, dict[str, Any]] = {
            "mesh": {"port": layout.ports[name], "discovery": False, "static_peers": peers},
            "backup": {"every_minutes": 60, "keep": 24},
        }
        if layout.offsite is not None:
            tables["backup"]["offsite_dir"] = str(layout.offsite)
        if layout.hq_url:
            tables["hq"] = {"url": layout.hq_url}
        configure(layout.dir(name), tables)
    say(f"catalogue: imported once at {NAMES[0]}; the mesh carries it to the others")
    run(["--dir", str(layout.dir(NAMES[0])), "catalog", "import", "--sample"], quiet=True)


# -- processes ------------------------------------------------------------------------------------


@dataclass
class Procs:
    """Every process the demo starts, by label (logs in LOGS/LABEL.log), stopped when the block
    ends: SIGTERM, then SIGKILL."""

    logs: Path
    running: dict[str, Process] = field(default_factory=dict)

    def start(self, label: str, args: Sequence[str]) -> None:
        print(f"    $ meshpos {' '.join(args)} &   (log: {self.logs / label}.log)", flush=True)
        self.running[label] = Process(args, self.logs / f"{label}.log", label=label).start()

    def stop(self, label: str) -> None:
        proc = self.running.pop(label, None)
        if proc is not None:
            proc.stop()

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float) -> float:
        """Poll until `predicate` holds, failing at once if a process died; the seconds it took."""
        took = wait_for(
            predicate, what, watch=list(self.running.values()), timeout=timeout, interval=0.2
        )
        print(f"    {what}: after {took:.1f} s", flush=True)
        return took

    def close(self) -> None:
        for label in reversed(list(self.running)):  # terminals first, HQ last
            self.stop(label)


@contextlib.contextmanager
def processes(logs: Path) -> Iterator[Procs]:
    procs = Procs(logs)
    try:
        yield procs
    finally:
        procs.close()


def converged(dirs: Sequence[Path]) -> bool:
    vvs = [store_vv(d) for d in dirs]
    return all(v and v == vvs[0] for v in vvs)


def hq_ops(layout: Layout) -> int:
    db = ["--db", layout.hq_db] if layout.hq_db else []
    proc = meshpos("hq", "stores", "--dir", str(layout.hq_dir), *db, "--json", check=False)
    if proc.returncode:
        return -1
    rows = json.loads(proc.stdout or "[]")
    return sum(int(r.get("ops", 0)) for r in rows if r.get("store") == STORE)


def http_up(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


# -- the run --------------------------------------------------------------------------------------


def demo(base: Path, *, short: bool, encrypt: bool, with_hq: bool) -> dict[str, Any]:
    sales = 2 if short else 10
    hq = with_hq and hq_available()
    if with_hq and not hq:
        print("note: `meshpos hq serve` is not available in this build: running without HQ")
    hq_port = free_port()
    layout = Layout(
        base=base,
        hosts=dict.fromkeys(NAMES, "127.0.0.1"),
        ports={name: free_port() for name in NAMES},
        hq_url=f"http://127.0.0.1:{hq_port}" if hq else None,
        hq_db=None,
        encrypt=encrypt,
        offsite=base / "usb-stick",
    )
    assert layout.offsite is not None
    layout.offsite.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    setup(layout)
    dirs = [layout.dir(n) for n in NAMES]
    logs = base / "logs"
    logs.mkdir(exist_ok=True)
    result: dict[str, Any] = {"hq": hq, "encrypted": encrypt, "sales_per_terminal": sales}
    with processes(logs) as procs:
        say("start HQ and the three terminal daemons (static peers on loopback)")
        if hq:
            procs.start("hq", ["hq", "serve", "--dir", str(layout.hq_dir), "--port", str(hq_port)])
            procs.wait("HQ listening", lambda: http_up(hq_port), 60)
        for name in NAMES:
            procs.start(name, ["--dir", str(layout.dir(name)), "node", "run", "--no-discovery"])
        result["catalogue_sync_s"] = procs.wait(
            "catalogue on every terminal", lambda: converged(dirs), 120
        )
        say(f"ring {sales} sales at each counter")
        skus = ["TSH-NAV-M", "JNS-BLA-L", "TSH-NAV-S"]
        for i in range(sales):
            run_parallel(
                [
                    ["--dir", str(layout.dir(n)), "sell", skus[(i + j) % 3]]
                    for j, n in enumerate(NAMES)
                ]
            )
        result["sales_sync_s"] = procs.wait(
            "every terminal holds every sale", lambda: converged(dirs), 120
        )
        stock = [
            json.loads(out)[0]["qty"]
            for out in run_parallel(
                [["--dir", str(d), "stock", "TSH-NAV-M", "--json"] for d in dirs]
            )
        ]
        print(f"    stock of TSH-NAV-M seen at {', '.join(NAMES)}: {stock}")
        if len(set(stock)) != 1:
            raise DemoFailed(f"terminals disagree on stock: {stock}")
        total = sum(store_vv(dirs[0]).values())
        result["ops"] = total
        if hq:
            result["hq_sync_s"] = procs.wait(
                f"HQ holds all {total} ops", lambda: hq_ops(layout) >= total, 120
            )
        say("T3: backup (sealed, verified) with a copy to the 'USB stick'")
        run(["--dir", str(dirs[2]), "backup"])
        say("T1 sells on; then T3's disk dies and it is restored from the backup")
        run(["--dir", str(dirs[0]), "sell", "TSH-NAV-M"], quiet=True)
        procs.stop("T3")
        for f in dirs[2].glob("meshpos.db*"):
            f.unlink()
        print(f"    (deleted {dirs[2] / 'meshpos.db'} and its WAL)")
        newest = sorted(layout.offsite.glob("*.mpbak"))[-1]
        run(["--dir", str(dirs[2]), "restore", str(newest)])
        procs.start("T3", ["--dir", str(dirs[2]), "node", "run", "--no-discovery"])
        result["restore_catch_up_s"] = procs.wait(
            "restored T3 caught up from its peers", lambda: converged(dirs), 120
        )
        say("verify every terminal: chains, signatures, views, no readable card number on disk")
        for out in run_parallel([["--dir", str(d), "verify"] for d in dirs]):
            print("      " + out.strip(), flush=True)
        check_alive(list(procs.running.values()), "the demo ran")
    result["seconds"] = round(time.monotonic() - t0, 1)
    say(f"done in {result['seconds']} s: {json.dumps(result)}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshpos.demo.store", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("command", nargs="?", default="run", choices=["run", "setup"])
    parser.add_argument("--base", type=Path, help="directory for every node (default: a temp dir)")
    parser.add_argument("--short", action="store_true", help="fewer sales (for tests)")
    parser.add_argument("--no-encrypt", action="store_true", help="leave databases unencrypted")
    parser.add_argument("--no-hq", action="store_true", help="no HQ; the store key lives on T1")
    parser.add_argument("--keep", action="store_true", help="keep the directory afterwards")
    parser.add_argument(
        "--host", action="append", default=[], help="setup: NAME=HOST peers dial (e.g. T1=t1)"
    )
    parser.add_argument("--port", type=int, default=7700, help="setup: mesh port of every node")
    parser.add_argument("--hq-url", help="setup: HQ's URL as terminals reach it")
    parser.add_argument("--hq-db", help="setup: HQ's database (e.g. postgresql://...)")
    args = parser.parse_args(argv)
    try:
        if args.command == "setup":
            if args.base is None:
                parser.error("setup needs --base")
            hosts = dict.fromkeys(NAMES, "127.0.0.1")
            for item in args.host:
                name, _, host = item.partition("=")
                if name not in hosts or not host:
                    parser.error(f"--host {item!r}: expected NAME=HOST with NAME in {NAMES}")
                hosts[name] = host
            layout = Layout(
                base=args.base,
                hosts=hosts,
                ports=dict.fromkeys(NAMES, args.port),
                hq_url=args.hq_url,
                hq_db=args.hq_db,
                encrypt=not args.no_encrypt,
            )
            if (layout.base / NAMES[0] / "meshpos.toml").exists():
                print(f"{layout.base} is already set up")
                return 0
            setup(layout)
            return 0
        base = args.base or Path(tempfile.mkdtemp(prefix="meshpos-store-"))
        try:
            demo(base, short=args.short, encrypt=not args.no_encrypt, with_hq=not args.no_hq)
        finally:
            if args.keep or args.base is not None:
                print(f"node directories and logs kept in {base}")
            else:
                shutil.rmtree(base, ignore_errors=True)
    except DemoFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
