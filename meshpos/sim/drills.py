"""`meshpos drill run KIND`: a staff drill with a real fault against practice tills.

A practice store is built on this machine's loopback with the live simulator's machinery
(meshpos/sim/live.py): three counters, each a real `meshpos node run` daemon marked
`[training] practice = true` (TRAINING on every screen and receipt), with a receipt printer
stand-in and a web till each; for the WAN drill, a real HQ process too. Counters reach each other,
and HQ, only through links (meshpos/sim/links.py), so the faults are real network faults:

- `wan-outage`: the store's internet goes (every link to HQ is cut), then comes back;
- `lan-split`: the shop network splits (T1 cannot reach T2 and T3), both sides sell the last unit
  of an item, then it heals;
- `printer-off`: T1's receipt printer is switched off, then on;
- `counter-dies`: T2's daemon is killed (SIGKILL: a pulled plug), then restarted.

While the fault is on, the trainee works through a checklist at the practice tills: questions
about what the till shows and what to do (answered by letter) and tasks to carry out (ring a
sale at a counter), which the drill checks in the practice ledgers. At the end it says, item by
item, what staff should have seen and done, the score, and whether the store came through (every
counter holding every sale, HQ caught up, every receipt printed).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from meshpos.core.errors import InputError, MeshposError
from meshpos.domain.catalog import parse_csv
from meshpos.domain.pricing import Tender
from meshpos.hq import keys
from meshpos.hq.service import HQService
from meshpos.node import membership
from meshpos.service.daemon_link import daemon_status
from meshpos.service.printing import queue_receipt
from meshpos.service.terminal import Terminal
from meshpos.sim.links import Link, PrinterStandIn
from meshpos.sim.live import MESHPOS, STORE, Counter, Drill, _free_port, _sample

DRILLS = ("wan-outage", "lan-split", "printer-off", "counter-dies")
LETTERS = "abcd"


@dataclass(frozen=True)
class Item:
    """One step of a checklist: a question (`options`, the right one `answer`) or a task the
    drill checks (`check` says what is missing, None when done). `should`: what staff should
    have seen and done, said at the end."""

    prompt: str
    should: str
    options: tuple[str, ...] = ()
    answer: int = 0
    check: Callable[[PracticeStore], str | None] | None = None
    act: Callable[[PracticeStore], None] | None = None  # what a model trainee does (--auto)
    after: bool = False  # asked once the fault is over

    @property
    def task(self) -> bool:
        return self.check is not None


@dataclass
class Outcome:
    item: Item
    given: str
    ok: bool
    note: str = ""


@dataclass
class DrillResult:
    drill: str
    outcomes: list[Outcome]
    checks: list[tuple[str, bool]]  # what the store did: (what, held)
    lines: list[str] = field(default_factory=list)

    @property
    def score(self) -> int:
        return sum(1 for o in self.outcomes if o.ok)

    @property
    def total(self) -> int:
        return len(self.outcomes)

    @property
    def store_ok(self) -> bool:
        return all(ok for _, ok in self.checks)


Ask = Callable[[str], str]


class PracticeStore(Drill):
    """The live drill's store, with links, printers, web tills and (optionally) HQ."""

    on_record = (queue_receipt,)  # its sales queue receipts, which the daemons print

    def __init__(self, *, hq: bool, web: bool, base: str | Path | None = None, keep: bool = False):
        super().__init__(nodes=3, seconds=600, seed=1, base=base, keep=keep)
        self.with_hq = hq
        self.with_web = web
        self.lan: dict[tuple[str, str], Link] = {}
        self.wan: dict[str, Link] = {}
        self.printers: dict[str, PrinterStandIn] = {}
        self.web_ports: dict[str, int] = {}
        self.hq_proc: subprocess.Popen[bytes] | None = None
        self.hq_port = 0
        self.marks: dict[str, int] = {}  # sale numbers per counter when the fault began
        # an item none of the background sales touch: the last unit both floors sell
        self.last_unit = next(
            r.sku
            for r in reversed(parse_csv(_sample(), "sample_catalog.csv"))
            if r.sku not in self.hot
        )

    # -- building -------------------------------------------------------------------------------

    def build(self) -> None:
        super().build()
        by_name = {c.name: c for c in self.counters}
        for a in self.counters:
            for b in self.counters:
                if a is not b:
                    self.lan[(a.name, b.name)] = Link(b.port, f"{a.name}->{b.name}")
        if self.with_hq:
            self._build_hq()
        for c in self.counters:
            self.printers[c.name] = PrinterStandIn()
            t = Terminal.open(c.directory)
            try:
                peers = [
                    {
                        "node": o.node_id,
                        "host": "127.0.0.1",
                        "port": self.lan[(c.name, o.name)].port,
                    }
                    for o in by_name.values()
                    if o is not c
                ]
                membership.set_config(t.cfg, "mesh", "static_peers", peers)
                membership.set_config(t.cfg, "training", "practice", True)
                printer = {
                    "kind": "network",
                    "host": "127.0.0.1",
                    "port": self.printers[c.name].port,
                }
                for key, value in printer.items():
                    membership.set_config(t.cfg, "printer", key, value)
                membership.set_config(t.cfg, "store", "name", "Practice store (drill)")
                if self.with_web:
                    self.web_ports[c.name] = _free_port()
                    membership.set_config(t.cfg, "web", "port", self.web_ports[c.name])
                if self.with_hq:
                    self.wan[c.name] = Link(self.hq_port, f"{c.name}->HQ")
                    membership.set_config(
                        t.cfg, "hq", "url", f"http://127.0.0.1:{self.wan[c.name].port}"
                    )
                    membership.set_config(t.cfg, "hq", "probe_ms", 500)
                    membership.set_config(t.cfg, "hq", "poll_ms", 1000)
                    membership.set_config(t.cfg, "hq", "timeout_s", 2.0)
            finally:
                t.close()

    def _build_hq(self) -> None:
        """A real HQ process; the store key stays at T1, which certifies HQ."""
        directory = self.base / "hq"
        keys.init_hq(directory, name="practice-hq")
        first = Terminal.open(self.counters[0].directory)
        svc = HQService.open(directory)
        try:
            pub = first.cfg.store_public_key or b""
            enrolled = svc.enroll_store(STORE, "Practice store", public_key=pub)
            assert enrolled.request is not None
            svc.install_cert(membership.sign(first, enrolled.request, role="hq"))
        finally:
            svc.close()
            first.close()
        self.hq_port = _free_port()
        log = open(directory / "serve.log", "ab")  # noqa: SIM115 (handed to the child)
        try:
            self.hq_proc = subprocess.Popen(
                [*MESHPOS, "hq", "serve", "--dir", str(directory), "--port", str(self.hq_port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        finally:
            log.close()
        url = f"http://127.0.0.1:{self.hq_port}/v1/health"
        if not self.wait(lambda: _answers(url), 30):
            raise MeshposError(f"the practice HQ did not start: see {directory / 'serve.log'}")

    def stop_all(self) -> None:
        super().stop_all()
        for link in [*self.lan.values(), *self.wan.values()]:
            link.close()
        for printer in self.printers.values():
            printer.off()
        if self.hq_proc is not None and self.hq_proc.poll() is None:
            self.hq_proc.terminate()
            try:
                self.hq_proc.wait(10)
            except subprocess.TimeoutExpired:
                self.hq_proc.kill()
                self.hq_proc.wait(5)

    # -- what the tills see and hold ------------------------------------------------------------

    def counter(self, name: str) -> Counter:
        return next(c for c in self.counters if c.name == name)

    def wait(self, predicate: Callable[[], bool], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(MeshposError, OSError):
                if predicate():
                    return True
            time.sleep(0.1)
        with contextlib.suppress(MeshposError, OSError):
            return predicate()
        return False

    def terminal(self, name: str) -> Terminal:
        return Terminal.open(self.counter(name).directory, on_record=[queue_receipt])

    def sales_count(self, name: str) -> int:
        t = self.terminal(name)
        try:
            return t.ledger.views.next_number(t.node_id) - 1
        finally:
            t.close()

    def mark(self) -> None:
        self.marks = {c.name: self.sales_count(c.name) for c in self.counters}

    def rang_since_mark(self, name: str) -> bool:
        return self.sales_count(name) > self.marks.get(name, 0)

    def wan_ok(self, name: str) -> bool:
        wan = daemon_status(self.counter(name).directory).get("wan") or {}
        return bool(wan.get("wan_ok"))

    def ops_waiting(self, name: str) -> int:
        wan = daemon_status(self.counter(name).directory).get("wan") or {}
        return int(wan.get("ops_waiting", -1))

    def queue_open(self, name: str) -> int:
        t = self.terminal(name)
        try:
            return len(t.ledger.print_queue.jobs())
        finally:
            t.close()

    def hq_holds_everything(self) -> bool:
        svc = HQService.open(self.base / "hq")
        try:
            at_hq = {str(o): int(s) for o, s in svc.storage.vv(STORE).items()}
        finally:
            svc.close()
        vvs = self.vvs()
        return vvs[0] is not None and all(at_hq.get(o, 0) >= s for o, s in vvs[0].items())

    def set_stock(self, sku: str, qty: int) -> None:
        t = self.terminal("T1")
        try:
            have = t.ledger.views.stock_qty(sku)
            if have != qty:
                t.move_stock("adjust", sku, qty - have, "drill: last unit", "drill")
        finally:
            t.close()

    def conflicts_everywhere(self, kind: str) -> bool:
        for c in self.counters:
            t = self.terminal(c.name)
            try:
                if not any(x["kind"] == kind for x in t.conflicts()):
                    return False
            finally:
                t.close()
        return True

    def split(self, left: Sequence[str]) -> None:
        for (a, b), link in self.lan.items():
            if (a in left) != (b in left):
                link.cut()

    def heal(self) -> None:
        for link in self.lan.values():
            link.mend()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


# -- the four drills ------------------------------------------------------------------------------


def _rang(name: str) -> Callable[[PracticeStore], str | None]:
    def check(store: PracticeStore) -> str | None:
        return (
            None if store.rang_since_mark(name) else f"no sale was rung at {name} during the fault"
        )

    return check


def _ring(name: str) -> Callable[[PracticeStore], None]:
    return lambda store: store.ring(store.counter(name))


def _ring_both(store: PracticeStore) -> None:
    _ring("T1")(store)
    _ring("T2")(store)


@dataclass(frozen=True)
class Plan:
    """A drill: what goes wrong and how it is put right, how to tell it shows at the tills,
    its checklist, and what the store must have come through with."""

    title: str
    briefing: str
    fault: Callable[[PracticeStore], None]
    shows: Callable[[PracticeStore], bool]
    mend: Callable[[PracticeStore], None]
    recovered: Callable[[PracticeStore], bool]
    items: tuple[Item, ...]
    outcome: str
    hq: bool = False
    prepare: Callable[[PracticeStore], None] | None = None
    during: Callable[[PracticeStore], None] | None = None  # what the drill itself does meanwhile


def _wan_plan() -> Plan:
    def fault(s: PracticeStore) -> None:
        for link in s.wan.values():
            link.cut()

    def mend(s: PracticeStore) -> None:
        for link in s.wan.values():
            link.mend()

    return Plan(
        title="WAN outage: the store's internet goes down",
        briefing="The store's internet is about to fail. Watch the tills and keep serving customers.",
        fault=fault,
        shows=lambda s: not s.wan_ok("T1"),
        mend=mend,
        recovered=lambda s: s.agree() and s.hq_holds_everything() and s.wan_ok("T1"),
        hq=True,
        items=(
            Item(
                "What does the bar at the top of the till say now?",
                "The amber chip \u201cOffline \u2014 sales are safe \u00b7 N waiting to sync\u201d (the "
                "text till: HQ unreachable, ops waiting). Amber means carry on, not stop.",
                (
                    "Offline, sales are safe, some waiting to sync (amber)",
                    "Till locked: stop selling (red)",
                    "Nothing changes",
                ),
                0,
            ),
            Item(
                "Ring a sale at T1 now (any item, cash), then press Enter.",
                "Keep selling: every sale is saved on the counter and copied to the other counters "
                "over the shop network at once; HQ gets it later.",
                check=_rang("T1"),
                act=_ring("T1"),
            ),
            Item(
                "A customer wants to pay by card and the card machine has no signal either. What do you do?",
                "Take the card at the till up to the offline limit on the cheat sheet (it is "
                "checked against HQ's blocklist and sealed for HQ), or cash. Never write card numbers down.",
                (
                    "Take it at the till within the offline card limit, or ask for cash",
                    "Write the card number on paper and charge it later",
                    "Send the customer away",
                ),
                0,
            ),
            Item(
                "The internet is back. Do the sales rung meanwhile need entering again?",
                "No: the relay sends HQ exactly what it lacks; the chip goes back to green and "
                "\u201cwaiting to sync\u201d drops to 0. `meshpos sync now` hurries it.",
                ("No, they go up to HQ by themselves", "Yes, ring them again", "Only card sales"),
                0,
                after=True,
            ),
        ),
        outcome="every counter holds every sale and HQ has caught up",
    )


def _split_plan() -> Plan:
    last = "the last unit"

    def prepare(s: PracticeStore) -> None:
        s.set_stock(s.last_unit, 1)
        s.wait(s.agree, 15)

    def during(s: PracticeStore) -> None:
        s.say(f"(customers buy {last} of {s.last_unit} on both floors)")
        for name in ("T1", "T2"):
            t = s.terminal(name)
            try:
                t.sell([(s.last_unit, 1)], tenders=[Tender("cash")])
            except MeshposError as exc:
                s.say(f"{name} refused: {exc}")
            finally:
                t.close()

    return Plan(
        title="LAN split: the shop network splits between floors (T1 | T2, T3)",
        briefing="The cable between the ground floor (T1) and the first floor (T2, T3) is about to fail.",
        prepare=prepare,
        fault=lambda s: s.split(["T1"]),
        shows=lambda s: s.peers_up(s.counter("T1")) == 0 and s.peers_up(s.counter("T2")) == 1,
        during=during,
        mend=lambda s: s.heal(),
        recovered=lambda s: s.agree() and s.conflicts_everywhere("oversell"),
        items=(
            Item(
                "T1's bar says no other counter is reachable. Can T1 keep selling?",
                "Yes: T1's sales are safe on T1 (1 copy) and go to T2 and T3 when the network heals.",
                (
                    "Yes, its sales sync when the network is back",
                    "No, wait for the network",
                    "Only cash",
                ),
                0,
            ),
            Item(
                "Ring a sale at T1 and one at T2 now, then press Enter.",
                "Both floors keep selling; nothing is lost while split.",
                check=lambda s: _rang("T1")(s) or _rang("T2")(s),
                act=_ring_both,
            ),
            Item(
                "A customer at T1 wants to redeem points that T2 holds; the till refuses. What now?",
                "Points are spent only where the rights are, so nothing is spent twice while split: "
                "redeem at T2 (same floor as the holder), or pay another way and redeem later.",
                (
                    "Redeem at T2 or pay another way now",
                    "Give the discount by hand",
                    "Restart T1",
                ),
                0,
            ),
            Item(
                "The network is back and the stock of an item sold on both floors shows \u22121 with a "
                "conflict. Who deals with it?",
                "A supervisor on the Manager page (or `meshpos conflicts`): count the shelf, adjust, "
                "resolve with a note. Both sales stand.",
                (
                    "A supervisor, from the conflicts list",
                    "Nobody: it fixes itself",
                    "Void one sale",
                ),
                0,
                after=True,
            ),
        ),
        outcome="every counter holds every sale, and the double sale of the last unit is a conflict at each",
    )


def _printer_plan() -> Plan:
    def during(s: PracticeStore) -> None:
        s.ring(s.counter("T1"))

    return Plan(
        title="Printer off: T1's receipt printer is switched off",
        briefing="T1's receipt printer is about to lose power.",
        fault=lambda s: s.printers["T1"].off(),
        during=during,
        shows=lambda s: s.queue_open("T1") > 0,
        mend=lambda s: s.printers["T1"].on(),
        recovered=lambda s: (
            s.agree()
            and s.queue_open("T1") == 0
            and sum(p.printed() for p in s.printers.values())
            >= sum(map(s.sales_count, ("T1", "T2", "T3")))
        ),
        items=(
            Item(
                "A sale at T1 did not print. Was the sale recorded?",
                "Yes: the sale is recorded before the receipt is printed; the slip waits in the print "
                "queue and the till says the printer is not answering, with Retry.",
                ("Yes, only the receipt waits", "No, ring it again", "Only if paid by card"),
                0,
            ),
            Item(
                "Ring another sale at T1 now, then press Enter.",
                "Keep selling; receipts queue in order and print when the printer is back.",
                check=_rang("T1"),
                act=_ring("T1"),
            ),
            Item(
                "The customer needs the receipt now. What do you do?",
                "Print it on another counter: `meshpos print queue --via T2` (or the till's Print on "
                "another counter). Never ring the sale again.",
                ("Print it on another counter", "Ring the sale again", "Hand-write a receipt"),
                0,
            ),
            Item(
                "The printer is back on. What happens to the waiting receipts?",
                "They print by themselves, each once, in order (`meshpos print retry` hurries them).",
                ("They print by themselves, each once", "They are lost", "They print twice"),
                0,
                after=True,
            ),
        ),
        outcome="every counter holds every sale and every waiting receipt printed",
    )


def _death_plan() -> Plan:
    return Plan(
        title="A counter dies: T2 loses power mid-shift",
        briefing="Counter T2 is about to go dark.",
        fault=lambda s: s.kill(s.counter("T2")),
        shows=lambda s: s.peers_up(s.counter("T1")) == 1,
        mend=lambda s: s.start(s.counter("T2")),
        recovered=lambda s: s.agree() and s.peers_up(s.counter("T1")) == 2,
        items=(
            Item(
                "T2 went dark right after completing a sale. Is that sale lost?",
                "No: a completed sale is on T2's disk, and on the other counters once the till said "
                "\u201csafe: held by 2 copies\u201d.",
                (
                    "No, a completed sale is on disk",
                    "Yes, ring it again at once",
                    "Only cash sales are lost",
                ),
                0,
            ),
            Item(
                "Move T2's queue to T1: ring a sale at T1, then press Enter.",
                "Send customers to another counter and carry on there.",
                check=_rang("T1"),
                act=_ring("T1"),
            ),
            Item(
                "The customer at T2 wants a copy of the receipt T2 just printed. How?",
                "Look the sale up at T1 (it is there once copied) and reprint it: "
                "`meshpos print reprint T2-000123`. Never ring it again.",
                ("Reprint it from T1", "Ring the sale again at T1", "Wait for T2"),
                0,
            ),
            Item(
                "T2 is back. What do you check before using it?",
                "That `meshpos status` (or the bar) shows it caught up with the others, then sell.",
                (
                    "It shows it caught up with the other counters",
                    "Nothing",
                    "That its drawer is empty",
                ),
                0,
                after=True,
            ),
        ),
        outcome="T2 is back and every counter holds every sale",
    )


PLANS: dict[str, Callable[[], Plan]] = {
    "wan-outage": _wan_plan,
    "lan-split": _split_plan,
    "printer-off": _printer_plan,
    "counter-dies": _death_plan,
}


# -- running a drill ------------------------------------------------------------------------------


class DrillRun:
    """One drill: `ask` reads the trainee's answers (stdin, a script, or a model trainee when
    `auto`), `say` prints."""

    def __init__(
        self,
        kind: str,
        *,
        ask: Ask | None = None,
        say: Callable[[str], None] = print,
        auto: bool = False,
        web: bool = True,
        base: str | Path | None = None,
        keep: bool = False,
    ) -> None:
        if kind not in PLANS:
            raise InputError(f"unknown drill {kind!r}: choose one of {', '.join(DRILLS)}")
        if ask is None and not auto:
            raise InputError("a drill needs a trainee: answer at the prompt, or pass --auto")
        self.kind = kind
        self.plan = PLANS[kind]()
        self.ask = ask
        self.auto = auto
        self.store = PracticeStore(hq=self.plan.hq, web=web and not auto, base=base, keep=keep)
        self.store.print = say
        self.say = self.store.say
        self.outcomes: list[Outcome] = []

    def run(self) -> DrillResult:
        s, plan = self.store, self.plan
        s.t0 = time.monotonic()
        checks: list[tuple[str, bool]] = []
        with s.running():
            self.say(f"DRILL {plan.title}")
            self.say(f"setting up a practice store in {s.base} (TRAINING: nothing here is real)")
            s.build()
            for c in s.counters:
                s.start(c)
            ready = s.wait(lambda: all(s.peers_up(c) == 2 for c in s.counters) and s.agree(), 40)
            if plan.hq:
                ready = ready and s.wait(lambda: all(s.wan_ok(c.name) for c in s.counters), 30)
            if not ready:
                raise MeshposError(f"the practice store did not come up: see {s.base}/*/daemon.log")
            self._tills()
            for c in s.counters:
                s.ring(c)
            if plan.prepare is not None:
                plan.prepare(s)
            s.wait(s.agree, 15)
            self.say(plan.briefing)
            plan.fault(s)
            if self.auto:
                self.say(f"FAULT: {plan.title}")
            if plan.during is not None:
                plan.during(s)
            s.mark()  # a task counts what the trainee rang from here on
            shown = s.wait(lambda: plan.shows(s), 30)
            checks.append(("the tills showed the fault", shown))
            for item in plan.items:
                if not item.after:
                    self._step(item)
            plan.mend(s)
            self.say("the fault is over: the store recovers")
            checks.append((plan.outcome, s.wait(lambda: plan.recovered(s), 60)))
            for item in plan.items:
                if item.after:
                    self._step(item)
            checks.append(("no sale lost: every counter holds every sale", s.wait(s.agree, 20)))
        result = DrillResult(self.kind, self.outcomes, checks, s.lines)
        self._debrief(result)
        return result

    def _tills(self) -> None:
        s = self.store
        self.say("your practice tills (TRAINING on every screen and receipt):")
        for c in s.counters:
            web = (
                f"  web till http://127.0.0.1:{s.web_ports[c.name]}/"
                if c.name in s.web_ports
                else ""
            )
            self.say(f"  {c.name}: meshpos --dir {c.directory} till{web}")

    def _step(self, item: Item) -> None:
        number = len(self.outcomes) + 1
        if item.task:
            self.say(f"[{number}] TASK {item.prompt}")
            if self.auto and item.act is not None:
                item.act(self.store)
                given = "(done by the drill)"
            else:
                given = self._ask("    press Enter when done > ")
            assert item.check is not None
            missing = item.check(self.store)
            self.outcomes.append(Outcome(item, given, missing is None, missing or "done"))
            return
        self.say(f"[{number}] {item.prompt}")
        for i, option in enumerate(item.options):
            self.say(f"    {LETTERS[i]}) {option}")
        if self.auto:
            given = LETTERS[item.answer]
        else:
            given = self._ask("    your answer > ").strip().lower()[:1]
            while given not in LETTERS[: len(item.options)]:
                given = (
                    self._ask(f"    answer {', '.join(LETTERS[: len(item.options)])} > ")
                    .strip()
                    .lower()[:1]
                )
        self.outcomes.append(Outcome(item, given, given == LETTERS[item.answer]))

    def _ask(self, prompt: str) -> str:
        assert self.ask is not None
        try:
            return self.ask(prompt)
        except EOFError:
            return ""

    def _debrief(self, result: DrillResult) -> None:
        say = self.store.print
        say("")
        say(f"== what staff should have seen and done: {self.plan.title}")
        for i, o in enumerate(result.outcomes, start=1):
            mark = "ok " if o.ok else "MISSED"
            right = (
                ""
                if o.item.task or o.ok
                else f" (answered {o.given or '-'}, right: {LETTERS[o.item.answer]})"
            )
            say(f"  [{i}] {mark} {o.item.prompt}{right}")
            say(f"        {o.item.should}")
        say("== what the store did")
        for what, held in result.checks:
            say(f"  {'ok ' if held else 'FAILED'} {what}")
        say(
            f"== score {result.score}/{result.total}"
            + ("" if result.store_ok else " (the store did not come through: see above)")
        )
