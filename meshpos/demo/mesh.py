"""`make demo`, part two: three terminals of one store find each other over mDNS and stay in sync.

It starts three real `meshpos node run` daemons on 127.0.0.1 (each its own process, logging to
DIR/Tn/daemon.log), rings sales at all three counters the way `meshpos sell` does (a write to that
terminal's database, which its daemon pushes at once), and prints the stock of one hot SKU on every
terminal as the sales converge. Then one terminal's daemon stops, the others keep selling (and so
does the stopped one's counter, offline), it restarts and catches up. Every daemon is stopped when
the demo ends, also on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from meshpos.core.errors import MeshposError
from meshpos.demo.bundle import cmd, console, step
from meshpos.demo.processes import Daemon, Daemons, DemoFailed, wait_for
from meshpos.domain.catalog import SAMPLE_CATALOG, parse_csv
from meshpos.domain.pricing import Tender
from meshpos.node import membership
from meshpos.service.config import init_node
from meshpos.service.daemon_link import wait_for_copies
from meshpos.service.terminal import Terminal

HOT = "TSH-NAV-M"
OTHERS = ("JNS-BLA-L", "KUR-GRE-M", "TSH-WHI-M")
NAMES = ("T1", "T2", "T3")
WAIT_S = 30.0
POLL_S = 0.001  # the arrival times shown are this precise


def run_demo(run: Callable[[Path], int], argv: list[str], prefix: str, stopped: str) -> int:
    """A demo's entry point: its base directory (argv[0] or a fresh temp dir), and Ctrl-C or
    SIGTERM turned into a clean stop of every process it started."""
    base = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix=prefix))
    base.mkdir(parents=True, exist_ok=True)

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # also when started with SIGINT ignored (`cmd &`)
    try:
        return run(base)
    except KeyboardInterrupt:
        console.print(f"\n[bold]interrupted[/]: {stopped} stopped")
        return 130
    except MeshposError as exc:
        console.print(f"\n[bold red]error[/]: {exc}")
        return 1


def make_terminals(base: Path, store: str) -> list[Terminal]:
    terminals = []
    for name in NAMES:
        cfg = init_node(base / name, store, name)
        cmd(f"--dir {cfg.dir} init --store {store} --name {name}")
        terminals.append(Terminal.open(cfg.dir))
    t1 = terminals[0]
    membership.store_init(t1)
    cmd(f"--dir {t1.cfg.dir} store init")
    for t in terminals[1:]:
        req, enr = base / f"{t.cfg.name}.req", base / f"{t.cfg.name}.enrolment"
        req.write_bytes(membership.request(t))
        cmd(f"--dir {t.cfg.dir} enroll request --out {req}")
        enr.write_bytes(membership.sign(t1, req.read_bytes()))
        cmd(f"--dir {t1.cfg.dir} enroll sign {req} --out {enr}")
        membership.install(t, enr.read_bytes())
        cmd(f"--dir {t.cfg.dir} enroll install {enr}")
    return terminals


def hot_stock(terminals: Sequence[Terminal]) -> list[int]:
    return [t.ledger.views.stock_qty(HOT) for t in terminals]


def watch(terminals: Sequence[Terminal], title: str) -> float:
    """Print the hot SKU's stock on every terminal each time it changes, until all agree and
    hold the same ops; returns the seconds that took."""
    start = time.monotonic()
    last: list[int] = []
    console.print(f"    [dim]{title}; stock of {HOT} per terminal:[/]")
    while True:
        now = hot_stock(terminals)
        vvs = [t.ledger.vv() for t in terminals]
        same = all(v == vvs[0] for v in vvs)
        if now != last or same:
            ms = (time.monotonic() - start) * 1000
            cells = "  ".join(f"{t.cfg.name} {q:>3}" for t, q in zip(terminals, now, strict=True))
            mark = "[bold green]converged[/]" if same else ""
            console.print(f"    t+{ms:6.0f} ms   {cells}   {mark}")
            last = now
        if same:
            return time.monotonic() - start
        if time.monotonic() - start > WAIT_S:
            raise DemoFailed(f"terminals did not converge within {WAIT_S:.0f} s")
        time.sleep(0.005)


def ring(t: Terminal, items: list[tuple[str, int]], others: Sequence[Terminal] = ()) -> None:
    """Ring a sale at `t` as `meshpos sell` does; show its copies and, for `others`, how long
    it took to show up there."""
    result = t.sell(items, tenders=[Tender("cash")])
    rung = time.monotonic()
    arrived: dict[str, float] = {}

    def everywhere() -> bool:
        for o in others:
            if o.cfg.name not in arrived and o.ledger.get(result.op.origin, result.op.seq):
                arrived[o.cfg.name] = time.monotonic() - rung
        return len(arrived) == len(others)

    wait_for(
        everywhere, f"sale {result.sale_id} reaching every peer", timeout=WAIT_S, interval=POLL_S
    )
    copies = wait_for_copies(t, result.op.seq, 500)
    held = "2 copies" if copies >= 2 else "1 copy, no peer reachable"
    seen = [f"on {name} +{secs * 1000:.0f} ms" for name, secs in arrived.items()]
    text = " ".join(f"{s}x{q}" for s, q in items)
    console.print(
        f"    {t.cfg.name}: {result.sale_id:<20} {text:<24} held by {held}"
        + (f"; {', '.join(seen)}" if seen else "")
    )


def peers_line(d: Daemon) -> str:
    status = d.status()
    parts = [
        f"{p['name']} {'up' if p['up'] else 'down'} at {p['address']} (behind {p['behind']})"
        for p in status.get("peers", [])
    ]
    return ", ".join(parts) or "no peers"


def run(base: Path) -> int:
    store = f"DEMO{os.getpid() % 10000:04d}"
    step(f"Three terminals of store {store} in {base}: one store key, two enrolments")
    terminals = make_terminals(base, store)
    t1, t2, t3 = terminals
    t1.import_catalog(parse_csv(SAMPLE_CATALOG.read_text(), SAMPLE_CATALOG.name))
    cmd(f"--dir {t1.cfg.dir} catalog import --sample")
    daemons = Daemons()
    every = daemons.all
    try:
        step("Start a daemon on each: they find each other over mDNS on 127.0.0.1")
        for t in terminals:
            d = daemons.start(t.cfg.dir)
            cmd(f"--dir {d.directory} node run   # logs in {d.log_path}")
        took = wait_for(
            lambda: all(d.status().get("peers_up") == 2 for d in every),
            "mDNS discovery and CURVE handshakes",
            watch=every,
            timeout=WAIT_S,
            interval=POLL_S,
        )
        console.print(f"    every terminal sees the other two after {took:.1f} s")
        watch(terminals, "T1's catalogue replicates to T2 and T3")
        wait_for(
            lambda: all(
                p["up"] and p["behind"] == 0 for d in every for p in d.status().get("peers", [])
            ),
            "the daemons' status to show no lag",
            watch=every,
            timeout=WAIT_S,
            interval=POLL_S,
        )
        cmd(f"--dir {t1.cfg.dir} peers")
        for d in every:
            console.print(f"      {d.directory.name}: {peers_line(d)}")

        step("Sales at all three counters: each is pushed to the others at once")
        for i in range(3):
            for t in terminals:
                extra = [(OTHERS[i], 1)] if i else []
                ring(t, [(HOT, 1), *extra], [o for o in terminals if o is not t])
        cmd(f"--dir {t1.cfg.dir} sell {HOT}   # (and so on, at each counter)")
        watch(terminals, "every sale reaches every terminal")

        step("T3's daemon stops (a cable pulled, a reboot): T1 and T2 carry on, and so does T3")
        every[2].stop()
        cmd(f"--dir {t3.cfg.dir} node run   # Ctrl-C")
        wait_for(
            lambda: "T3 down" in peers_line(every[0]),
            "T1 noticing T3 left",
            watch=every,
            timeout=WAIT_S,
            interval=POLL_S,
        )
        console.print(f"    T1 sees: {peers_line(every[0])}")
        for i in range(2):
            ring(t1, [(HOT, 1)], [t2])
            ring(t2, [(HOT, 2)], [t1])
            ring(t3, [(HOT, 1), (OTHERS[i], 1)])
        console.print(
            "    stock of "
            + HOT
            + ": "
            + "  ".join(
                f"{t.cfg.name} {q}" for t, q in zip(terminals, hot_stock(terminals), strict=True)
            )
            + "   (T3 counts only its own offline sales)"
        )

        step("T3's daemon restarts: it rejoins over mDNS and catches up both ways")
        every[2].start()
        cmd(f"--dir {t3.cfg.dir} node run")
        took = watch(terminals, "T3 back on the LAN")
        console.print(
            f"    caught up {took:.1f} s after the restart (process start and discovery included)"
        )

        step("All three verify: signatures, hash chains, every view equals a fresh fold")
        ok = True
        for t in terminals:
            problems = t.ledger.verify()
            cmd(f"--dir {t.cfg.dir} verify")
            state = "ok" if not problems else f"PROBLEMS {problems}"
            console.print(
                f"    {t.cfg.name}: {t.ledger.op_count()} ops, vv {json.dumps(t.ledger.vv())}: {state}"
            )
            ok = ok and not problems
        same = len({json.dumps(t.ledger.vv(), sort_keys=True) for t in terminals}) == 1
        console.print(
            f"\n[bold]{'converged' if ok and same else 'DIVERGED'}[/]: "
            f"try `meshpos --dir {t1.cfg.dir} status` while `meshpos --dir {t1.cfg.dir} node run` runs"
        )
        return 0 if ok and same else 1
    finally:
        daemons.close()
        for t in terminals:
            t.close()


def main(argv: list[str]) -> int:
    return run_demo(run, argv, "meshpos-mesh-demo-", "daemons")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
