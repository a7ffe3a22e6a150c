"""The persistent print queue: receipts written with their sale, printed once and in order through a
real TCP listener standing in for the printer, surviving a printer fault and a node restart;
backoff, reprints, reports, crash recovery, and printer failover to a peer terminal."""

from __future__ import annotations

import itertools
import json
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from conftest import Node
from hypothesis import given, settings
from hypothesis import strategies as st
from mesh_helpers import Mesh
from printer_listener import PrinterListener

from meshpos.core.errors import InputError, NotFound
from meshpos.devices import escpos_decode as ed
from meshpos.devices.printers import PrinterUnavailable
from meshpos.domain.pricing import Tender
from meshpos.ledger.print_queue import (
    BACKOFF_CAP_MS,
    LEASE_MS,
    JobState,
    PrintJob,
    PrintQueue,
    backoff_ms,
)
from meshpos.ledger.store import Ledger
from meshpos.service.printing import (
    COPY_NOTE,
    FORWARD_RETRY_MS,
    INTERRUPTED_NOTE,
    REQUEST_ACK,
    REQUEST_JOB,
    DaemonPrinting,
    Printing,
    queue_receipt,
)
from meshpos.service.terminal import Terminal
from meshpos.sync.protocol import RequestReceived, Send

T0 = 1_764_000_000_000
MACHINE = Tender("card_machine", card_last4="4242", card_approval="A1B2C3")  # its slip


class Clock:
    def __init__(self, start: int = T0) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


def set_printer(directory: Path, table: dict[str, Any] | None) -> None:
    path = directory / "meshpos.toml"
    doc = tomllib.loads(path.read_text())
    doc.pop("printer", None)
    if table is not None:
        doc["printer"] = table
    path.write_text(tomli_w.dumps(doc))


def network(listener: PrinterListener) -> dict[str, Any]:
    return {"kind": "network", "host": "127.0.0.1", "port": listener.port, "connect_timeout": 1.0}


@pytest.fixture
def listener() -> Iterator[PrinterListener]:
    with PrinterListener() as printer:
        yield printer


def open_terminal(node: Node, clock: Clock) -> Terminal:
    return Terminal.open(node.path, now_ms=clock, on_record=[queue_receipt])


def lines_of(job: bytes) -> list[str]:
    return ed.decode(job).lines


# -- the printer-fault test ----------------------------------------------------------------


def test_five_sales_while_the_printer_refuses_print_once_in_order_after_a_restart(
    node: Node, listener: PrinterListener
) -> None:
    set_printer(node.path, network(listener))
    listener.refuse()
    clock = Clock()
    t = open_terminal(node, clock)
    printing = Printing(t)
    sales = []
    for i in range(5):
        tenders = [Tender("cash", 500_000)] if i % 2 == 0 else [MACHINE]
        sales.append(t.sell([("TEE-M", 1), ("CAP", i + 1)], tenders=tenders, allow_oversell=True))
        result = printing.drain()
        assert result.printed == () and result.waiting == i + 1
        assert "unavailable" in (result.error if i == 0 else result.head_error)
        assert (result.error is None) == (i > 0)  # tried once, then it waits out its backoff
        clock.advance(100)
    queued = printing.queue.jobs()
    assert [j.sale_id for j in queued] == [s.sale_id for s in sales]
    assert [j.state for j in queued] == [JobState.WAITING] * 5
    # only the head of the line was tried: nothing overtakes it while it waits out its backoff
    assert [j.attempts for j in queued] == [1, 0, 0, 0, 0]
    assert listener.connections == 0
    t.close()

    # the node restarts: the jobs are on disk
    t = open_terminal(node, clock)
    printing = Printing(t)
    assert [j.sale_id for j in printing.queue.jobs()] == [s.sale_id for s in sales]
    listener.accept()
    assert printing.drain().printed == ()  # still backing off: the printer is not hammered
    clock.advance(backoff_ms(1))
    result = printing.drain()
    assert [j.sale_id for j in result.printed] == [s.sale_id for s in sales]
    assert result.error is None and result.waiting == 0
    jobs = listener.wait_for_jobs(5)
    assert len(jobs) == 5

    for data, sale in zip(jobs, sales, strict=True):
        slip = ed.decode(data)
        p = sale.payload
        assert [(b.symbology, b.data) for b in slip.barcodes] == [("CODE128", sale.sale_id)]
        assert f"Invoice {p['sale_id']}" in slip.text
        assert "TAX INVOICE" in slip.lines
        assert any(ln.startswith("Test tee") for ln in slip.lines)
        assert any(ln.startswith("Test cap") for ln in slip.lines)
        total = f"{p['total'] // 100:,}.00"
        assert any(ln.startswith("TOTAL") and ln.endswith(total) for ln in slip.lines), total
        assert slip.cuts == [ed.Cut(partial=False)] and isinstance(slip.commands[-1], ed.Cut)
        cash = p["tenders"][0]["method"] == "cash"
        assert len(slip.drawer_kicks) == (1 if cash else 0)
        if cash:
            change = p["tenders"][0]["change"]
            assert any(
                ln.startswith("  Change") and ln.endswith(f"{change / 100:,.2f}")
                for ln in slip.lines
            )

    # nothing prints twice, however often the queue is drained again
    clock.advance(10 * BACKOFF_CAP_MS)
    assert printing.drain().printed == ()
    assert listener.connections == 5
    assert {j.state for j in printing.queue.jobs(None)} == {JobState.PRINTED}
    t.close()


def test_the_receipt_commits_with_its_sale_or_not_at_all(node: Node) -> None:
    clock = Clock()
    t = open_terminal(node, clock)
    q = t.ledger.print_queue
    with pytest.raises(InputError):
        t.sell([("TEE-M", 1)], tenders=[replace(MACHINE, amount=100)])  # short: no sale, no job
    assert q.jobs(None) == []

    def boom(terminal: Terminal, op: Any, payload: dict[str, Any]) -> None:
        raise RuntimeError("disk full")

    failing = Terminal(t.cfg, t.signer, t.ledger, clock, on_record=[queue_receipt, boom])
    with pytest.raises(RuntimeError):
        failing.sell([("TEE-M", 1)])
    assert q.jobs(None) == [] and t.query("SELECT COUNT(*) AS n FROM sales")[0]["n"] == 0
    sale = t.sell([("TEE-M", 2)])
    back = t.return_items(sale.sale_id, [("TEE-M", 1)])
    swap = t.exchange(sale.sale_id, [("TEE-M", 1)], [("CAP", 4)])
    jobs = q.jobs()
    assert [(j.kind, j.sale_id, j.doc["op_kind"]) for j in jobs] == [
        ("receipt", sale.sale_id, "sale"),
        ("receipt", back.sale_id, "return"),
        ("receipt", swap.sale_id, "exchange"),
    ]
    assert (jobs[0].origin, jobs[0].seq) == (sale.op.origin, sale.op.seq)
    t.close()


def test_printing_off_queues_nothing(node: Node) -> None:
    set_printer(node.path, {"kind": "none"})
    t = open_terminal(node, Clock())
    t.sell([("CAP", 1)])
    assert t.ledger.print_queue.jobs(None) == []
    t.close()


def test_default_file_printer_appends_every_receipt(node: Node) -> None:
    t = open_terminal(node, Clock())
    printing = Printing(t)
    a, b = t.sell([("CAP", 1)]), t.sell([("TEE-M", 2)])
    assert len(printing.drain().printed) == 2
    data = (node.path / "receipts.bin").read_bytes()
    assert [x.data for x in ed.decode(data).barcodes] == [a.sale_id, b.sale_id]
    t.close()


# -- backoff, order and exactly-once ---------------------------------------------------------------


def memory_queue() -> tuple[Ledger, PrintQueue]:
    ledger = Ledger(":memory:", "S1", durable=False)
    return ledger, ledger.print_queue


def test_backoff_doubles_to_a_cap_on_simulated_time() -> None:
    _, q = memory_queue()
    q.enqueue("report", {"title": "A", "rows": []}, now_ms=0)
    tries: list[int] = []
    now = 0

    def refuse(job: PrintJob) -> None:
        tries.append(now)
        raise PrinterUnavailable("printer is off")

    for now in range(0, 200_001, 250):
        q.drain(now, refuse, unavailable=PrinterUnavailable)
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    assert gaps[:7] == [1000, 2000, 4000, 8000, 16000, 32000, 60000]
    assert set(gaps[6:]) == {BACKOFF_CAP_MS}
    job = q.jobs()[0]
    assert job.attempts == len(tries) and job.last_error == "printer is off"
    assert [backoff_ms(n) for n in (0, 1, 2, 7, 40)] == [0, 1000, 2000, 60000, 60000]


@settings(max_examples=60, deadline=None)
@given(
    outcomes=st.lists(st.booleans(), min_size=1, max_size=40),
    jobs=st.integers(min_value=1, max_value=8),
    step=st.integers(min_value=0, max_value=5000),
)
def test_any_pattern_of_faults_prints_every_job_once_in_order(
    outcomes: list[bool], jobs: int, step: int
) -> None:
    _, q = memory_queue()
    ids = [q.enqueue("report", {"n": i}, now_ms=0) for i in range(jobs)]
    printed: list[int] = []
    faults = iter(outcomes)

    def printer(job: PrintJob) -> None:
        if not next(faults, True):
            raise PrinterUnavailable("paper out")
        printed.append(job.id)

    now = 0
    while len(printed) < jobs:
        q.drain(now, printer, unavailable=PrinterUnavailable)
        waiting = q.jobs()
        if waiting:
            now = max(now + step, waiting[0].next_try_ms)
    assert printed == ids
    assert all(j.state is JobState.PRINTED for j in q.jobs(None))


def test_two_processes_draining_at_once_print_each_job_once(
    node: Node, listener: PrinterListener
) -> None:
    set_printer(node.path, network(listener))
    clock = Clock()
    seller = open_terminal(node, clock)
    sales = [seller.sell([("CAP", 1)], allow_oversell=True) for _ in range(6)]
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def drain() -> None:
        t = open_terminal(node, clock)  # its own connection, as another process would have
        try:
            barrier.wait()
            results.append(Printing(t).drain())
        finally:
            t.close()

    threads = [threading.Thread(target=drain) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    printed = [j.sale_id for r in results for j in r.printed]
    assert sorted(printed) == sorted(s.sale_id for s in sales) and len(printed) == 6
    data = listener.wait_for_jobs(6)
    assert [ed.decode(d).barcodes[0].data for d in data] == [s.sale_id for s in sales]
    seller.close()


def test_a_print_interrupted_by_a_crash_prints_again_marked_as_a_possible_duplicate(
    node: Node, listener: PrinterListener
) -> None:
    set_printer(node.path, network(listener))
    clock = Clock()
    t = open_terminal(node, clock)
    first = t.sell([("CAP", 1)], tenders=[Tender("cash", 50_000)])
    second = t.sell([("TEE-M", 1)])
    q = t.ledger.print_queue
    claimed = q.claim_next(clock(), "process that then died")
    assert claimed is not None and claimed.sale_id == first.sale_id
    printing = Printing(t)
    clock.advance(LEASE_MS - 1)
    assert printing.drain().printed == ()  # the claim still holds; the second does not overtake
    clock.advance(2)
    result = printing.drain()
    assert [j.sale_id for j in result.printed] == [first.sale_id, second.sale_id]
    again, normal = (ed.decode(d) for d in listener.wait_for_jobs(2))
    assert INTERRUPTED_NOTE in again.lines and again.drawer_kicks == []
    assert INTERRUPTED_NOTE not in normal.lines
    t.close()


def test_a_job_that_can_never_print_is_set_aside_and_does_not_block_the_rest(node: Node) -> None:
    t = open_terminal(node, Clock())
    q = t.ledger.print_queue
    bad = q.enqueue("receipt", {"payload": {"sale_id": "X"}}, now_ms=0)
    sale = t.sell([("CAP", 1)])
    result = Printing(t).drain()
    assert [j.id for j in result.broken] == [bad]
    assert [j.sale_id for j in result.printed] == [sale.sale_id]
    job = q.get(bad)
    assert job is not None and job.state is JobState.FAILED and "ts_ms" in job.last_error
    t.close()


# -- reprints and reports --------------------------------------------------------------------------


def test_reprint_is_a_marked_copy_that_does_not_open_the_drawer(
    node: Node, listener: PrinterListener
) -> None:
    set_printer(node.path, network(listener))
    t = open_terminal(node, Clock())
    printing = Printing(t)
    sale = t.sell([("TEE-M", 1)], tenders=[Tender("cash", 100_000)])
    back = t.return_items(sale.sale_id, [("TEE-M", 1)])
    printing.drain()
    printing.reprint(sale.payload["receipt"])  # the receipt number printed on the slip works too
    printing.reprint(back.sale_id)
    assert [j.kind for j in printing.drain().printed] == ["reprint", "reprint"]
    original, slip, copy, slip_copy = (ed.decode(d) for d in listener.wait_for_jobs(4))
    assert COPY_NOTE not in original.lines and len(original.drawer_kicks) == 1
    assert COPY_NOTE in copy.lines and copy.drawer_kicks == []
    assert copy.lines.index(COPY_NOTE) == copy.lines.index("TAX INVOICE") + 1
    assert [b.data for b in copy.barcodes] == [sale.sale_id]
    assert "CREDIT NOTE" in slip.lines and COPY_NOTE in slip_copy.lines
    with pytest.raises(NotFound):
        printing.reprint("S1-T1-999999")
    t.close()


def test_x_and_z_reports_print_and_z_closes_the_day_with_its_job(
    node: Node, listener: PrinterListener
) -> None:
    set_printer(node.path, network(listener))
    t = open_terminal(node, Clock())
    printing = Printing(t)
    t.sell([("TEE-M", 2)], tenders=[MACHINE])
    printing.drain()
    totals, _ = printing.report("x")
    assert totals["sales"] == 1
    z, job = printing.report("z")
    assert t.ledger.print_queue.get(job) is not None
    assert t.query("SELECT COUNT(*) AS n FROM ops WHERE kind = 'report.z'")[0]["n"] == 1
    printing.drain()
    _, x_slip, z_slip = (ed.decode(d) for d in listener.wait_for_jobs(3))
    assert "X REPORT" in x_slip.lines and f"Z REPORT #{z['z_number']}" in z_slip.lines
    for slip in (x_slip, z_slip):
        assert any(ln.startswith("Net takings") and ln.endswith("2,000.00") for ln in slip.lines)
        assert any(ln.startswith("Card machine (1)") for ln in slip.lines)
        assert isinstance(slip.commands[-1], ed.Cut)
    t.close()


# -- failover to a peer's printer ------------------------------------------------------------------


class Wire:
    """Two DaemonPrinting objects whose requests reach each other directly; acks can be lost."""

    def __init__(self, a: Terminal, b: Terminal, clock: Clock) -> None:
        self.clock = clock
        self.drop_acks = 0
        self.requests: list[tuple[str, str]] = []
        self.a = DaemonPrinting(a, self._sender(a), worker=False)
        self.b = DaemonPrinting(b, self._sender(b), worker=False)
        self.by_id = {a.node_id: self.a, b.node_id: self.b}

    def _sender(self, me: Terminal) -> Any:
        def send(peer: str, kind: str, body: dict[str, object]) -> bool:
            self.requests.append((me.cfg.name, kind))
            if kind == REQUEST_ACK and self.drop_acks:
                self.drop_acks -= 1
                return True
            wire_body = json.loads(json.dumps(body))  # what crosses the wire: plain data only
            assert self.by_id[peer].on_request(me.node_id, kind, wire_body, self.clock())
            return True

        return send


def test_failover_to_a_peer_prints_each_job_exactly_once_even_when_acks_are_lost(
    pair: tuple[Node, Node],
) -> None:
    t1_node, t2_node = pair
    with PrinterListener() as own, PrinterListener() as peer:
        set_printer(t1_node.path, network(own))
        set_printer(t2_node.path, network(peer))
        own.refuse()
        clock = Clock()
        t1, t2 = open_terminal(t1_node, clock), open_terminal(t2_node, clock)
        t1.ledger.add_node(t2.node_record())
        p1, p2 = Printing(t1), Printing(t2)
        sales = [t1.sell([("CAP", n + 1)], allow_oversell=True) for n in range(3)]
        assert p1.drain().error
        name, handed = p1.forward("T2")
        assert name == "T2" and [j.sale_id for j in handed] == [s.sale_id for s in sales]
        wire = Wire(t1, t2, clock)
        wire.drop_acks = 1
        wire.a.tick(clock())  # sent; T2 queues the jobs; the ack is lost
        assert [j.state for j in p1.queue.jobs(None)] == [JobState.FORWARDING] * 3
        wire.a.tick(clock() + 100)  # not due again yet
        assert wire.requests.count(("T1", REQUEST_JOB)) == 1
        clock.advance(FORWARD_RETRY_MS)
        wire.a.tick(clock())  # resent: T2 queues nothing twice, and this ack arrives
        assert wire.requests.count(("T1", REQUEST_JOB)) == 2
        assert [j.state for j in p1.queue.jobs(None)] == [JobState.FORWARDED] * 3
        mine = t2.sell([("TEE-M", 1)])
        result = p2.drain()
        assert [j.sale_id for j in result.printed] == [s.sale_id for s in sales] + [mine.sale_id]
        printed = [ed.decode(d) for d in peer.wait_for_jobs(4)]
        assert [slip.barcodes[0].data for slip in printed] == [
            *(s.sale_id for s in sales),
            mine.sale_id,
        ]
        assert "Terminal T1" in printed[0].text  # it is T1's receipt, printed at T2
        # T1's printer comes back: forwarded jobs never print there too
        own.accept()
        clock.advance(10 * BACKOFF_CAP_MS)
        assert p1.drain().printed == ()
        clock.advance(FORWARD_RETRY_MS)
        wire.a.tick(clock())
        assert wire.requests.count(("T1", REQUEST_JOB)) == 2
        assert own.connections == 0 and peer.connections == 4
        t1.close()
        t2.close()


def test_a_peer_that_cannot_print_refuses_and_the_jobs_come_back(pair: tuple[Node, Node]) -> None:
    t1_node, t2_node = pair
    set_printer(t2_node.path, {"kind": "none"})
    clock = Clock()
    t1, t2 = open_terminal(t1_node, clock), open_terminal(t2_node, clock)
    t1.ledger.add_node(t2.node_record())
    sale = t1.sell([("CAP", 1)])
    Printing(t1).forward("T2")
    wire = Wire(t1, t2, clock)
    wire.a.tick(clock())
    (job,) = t1.ledger.print_queue.jobs()
    assert job.state is JobState.WAITING and job.via is None
    assert "printing is off" in job.last_error and job.sale_id == sale.sale_id
    assert t2.ledger.print_queue.jobs(None) == []
    # a forged or damaged request is refused job by job, never half-queued
    wire.b.on_request(
        t1.node_id,
        REQUEST_JOB,
        {"jobs": [{"id": 9, "kind": "receipt", "doc": "{nope"}, "junk"]},
        clock(),
    )
    assert t2.ledger.print_queue.jobs(None) == []
    assert not wire.b.on_request(t1.node_id, "loyalty.need", {}, clock())
    t1.close()
    t2.close()


def test_forward_names_a_known_peer_not_this_terminal(node: Node) -> None:
    t = open_terminal(node, Clock())
    printing = Printing(t)
    with pytest.raises(NotFound, match="unknown peer 'T7'"):
        printing.forward("T7")
    with pytest.raises(InputError, match="is this terminal"):
        printing.forward("T1")
    t.close()


def test_failover_through_the_sync_protocol_on_a_lossy_network(
    listener: PrinterListener,
) -> None:
    """The real request path: SyncNode.request -> bytes -> a lossy MemNet -> RequestReceived."""
    from meshpos.sync.memnet import LinkSpec

    mesh = Mesh(
        2,
        seed=7,
        link=LinkSpec(latency_ms=2, loss=0.3),
        customers=0,
        on_record=[queue_receipt],
    )
    assert mesh.settle() >= 0
    a, b = (n.terminal for n in mesh.nodes)
    b.cfg.raw["printer"] = network(listener)
    seen = {b.node_id: "T1"}  # what the daemon's status lists: a peer the ledger has no row for
    printers: dict[str, DaemonPrinting] = {}

    sent: list[str] = []

    def sender(nid: str) -> Any:
        def send(peer: str, kind: str, body: dict[str, object]) -> bool:
            sent.append(kind)
            actions = mesh.net.nodes[nid].request(peer, kind, body, mesh.net.now)
            for act in actions:
                if isinstance(act, Send):
                    mesh.net.send(nid, act.peer, act.data)
            return bool(actions)

        return send

    for t in (a, b):
        printers[t.node_id] = DaemonPrinting(t, sender(t.node_id), worker=False)

    def on_action(nid: str, action: object) -> None:
        if isinstance(action, RequestReceived):
            printers[nid].on_request(action.peer, action.kind, action.body, mesh.now_ms())

    mesh.net.on_action = on_action
    sales = [mesh.sell(0, [("SKU1", 1)]) for _ in range(4)]
    assert Printing(a).forward("T1", seen)[0] == "T1"

    def forwarded() -> bool:
        for p in printers.values():
            p.tick(mesh.now_ms())
        return all(j.state is JobState.FORWARDED for j in a.ledger.print_queue.jobs(None))

    assert mesh.net.settle(forwarded, limit_ms=60_000) >= 0
    result = Printing(b).drain()
    assert [j.sale_id for j in result.printed] == [s.sale_id for s in sales]
    assert [ed.decode(d).barcodes[0].data for d in listener.wait_for_jobs(4)] == [
        s.sale_id for s in sales
    ]
    assert len(b.ledger.print_queue.jobs(None)) == 4  # resends after loss queued nothing twice
    assert sent.count(REQUEST_JOB) > 1 and mesh.net.stats.dropped > 0  # loss did bite


# -- two real daemons ------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_daemons_print_the_backlog_and_fail_over_to_a_peer(tmp_path: Path) -> None:
    """`meshpos node run` on two terminals over loopback: A's daemon prints its backlog when its
    printer comes back; then A's printer dies again and `print queue --via B` sends the waiting
    receipts over the mesh to B's printer, once each, marked forwarded only when B confirms."""
    from mesh_procs import Daemons, converged, make_store, meshpos, wait_until
    from netns import loopback_multicast

    with (
        loopback_multicast(),
        PrinterListener() as at_a,
        PrinterListener() as at_b,
        Daemons() as daemons,
    ):
        a, b = make_store(tmp_path, ["A", "B"])
        set_printer(a, network(at_a))
        set_printer(b, network(at_b))
        at_a.refuse()
        first = meshpos(a, "sell", "TSH-NAV-M", "--json").json()["sale_id"]
        for d in (a, b):
            daemons.start(d)
        wait_until(lambda: converged([a, b]), 30, "A and B in sync", daemons)
        at_a.accept()  # A's daemon retries with backoff and prints the waiting receipt
        (slip,) = at_a.wait_for_jobs(1, timeout=15)
        assert ed.decode(slip).barcodes[0].data == first

        at_a.refuse()
        sales = [meshpos(a, "sell", "TSH-NAV-S", "--json").json()["sale_id"] for _ in range(2)]

        def peers_up() -> bool:
            status = json.loads((a / "status.json").read_text() or "{}")
            return bool(status.get("peers_up"))

        wait_until(peers_up, 30, "A to see B", daemons)
        handed = meshpos(a, "print", "queue", "--via", "B", "--json").json()
        assert [j["sale_id"] for j in handed] == sales
        jobs = at_b.wait_for_jobs(2, timeout=15)
        assert [ed.decode(j).barcodes[0].data for j in jobs] == sales

        def all_forwarded() -> bool:
            rows = meshpos(a, "print", "queue", "--all", "--json").json()
            return [r["state"] for r in rows] == ["printed", "forwarded", "forwarded"]

        wait_until(all_forwarded, 15, "B's acknowledgement at A", daemons)
        at_a.accept()
        assert meshpos(a, "print", "retry").out.strip() == "nothing to print"
        assert at_a.connections == 1 and at_b.connections == 2
        assert "queued print job" in daemons.all[1].log()


def test_an_attempt_cut_short_in_this_process_is_retried_as_a_possible_duplicate() -> None:
    _, q = memory_queue()
    job_id = q.enqueue("report", {"title": "X", "rows": []}, now_ms=0)

    def interrupted(job: PrintJob) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        q.drain(0, interrupted, unavailable=PrinterUnavailable)
    job = q.get(job_id)
    assert job is not None and job.state is JobState.WAITING and job.interrupted
    seen: list[PrintJob] = []
    q.drain(backoff_ms(1), seen.append, unavailable=PrinterUnavailable)
    assert [j.interrupted for j in seen] == [True]
