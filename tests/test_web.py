"""The web till over HTTP (Starlette's TestClient, and a real uvicorn for the event stream, the
`meshpos web serve` command and the daemon's `[web] port` hook): every screen calls the same
service layer as the CLI, so what it records is checked in the node's own database."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Node
from hq_helpers import free_port
from mesh_procs import Daemons, make_store, wait_until

from meshpos.core.errors import ConfigError
from meshpos.devices import escpos_decode as ed
from meshpos.ledger.live_feed import LiveFeed
from meshpos.ledger.print_queue import JobKind
from meshpos.node import membership
from meshpos.service.config import load_config
from meshpos.service.staff import add_user, approved_by, set_policy, sign_in
from meshpos.service.terminal import Terminal
from meshpos.web import escrow_wait
from meshpos.web.server import WebServer, WebSettings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from meshpos.web.app import create_app

FRAG = {"x-fragment": "1"}
REPO = Path(__file__).resolve().parent.parent


# -- helpers ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def till(directory: Path, *, sign_in: bool = True) -> Iterator[TestClient]:
    app = create_app(directory, live_interval=0.02)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        if sign_in:
            r = client.post("/signin")
            assert r.status_code == 200 and r.url.path == "/till", r.text
        yield client


def post(client: TestClient, path: str, **data: Any) -> str:
    r = client.post(path, data={k: str(v) for k, v in data.items()}, headers=FRAG)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.text


def notice(html: str) -> tuple[str, str]:
    """(level, text) of the notice under the scan field."""
    m = re.search(r'id="notice" class="notice n-\w+" data-level="(\w+)"[^>]*>([^<]*)<', html)
    assert m, html[:2000]
    return m.group(1), unescape(m.group(2))


def state(client: TestClient) -> dict[str, Any]:
    r = client.get("/api/till")
    assert r.status_code == 200
    data: dict[str, Any] = r.json()
    return data


def ops(directory: Path) -> int:
    t = Terminal.open(directory)
    try:
        return t.ledger.op_count()
    finally:
        t.close()


@contextlib.contextmanager
def terminal(directory: Path) -> Iterator[Terminal]:
    t = Terminal.open(directory)
    try:
        yield t
    finally:
        t.close()


def sale_op(t: Terminal, sale_id: str) -> dict[str, Any]:
    return t.sale(sale_id)


# -- selling -------------------------------------------------------------------------------------


def test_a_sale_rung_on_the_page_is_recorded_by_the_service_layer_and_printed(node: Node) -> None:
    with till(node.path) as c:
        assert "Ready: scan an item" in c.get("/till").text
        level, text = notice(post(c, "/till/scan", code="2000000000017\r\n"))  # TEE-M barcode
        assert level == "ok" and "Test tee" in text
        post(c, "/till/scan", code="2000000000017")
        post(c, "/till/scan", code="CAP")
        post(c, "/till/qty", which="sale", line=2, delta=1)
        html = post(c, "/till/discount", spec="10%", line=1)
        assert notice(html) == ("ok", "discount 10% on line 1")
        lines = [(ln["sku"], ln["qty"], ln["total"]) for ln in state(c)["lines"]]
        assert lines == [("TEE-M", 2, 180_000), ("CAP", 2, 50_000)]
        # size/colour shown on the line
        assert re.search(r'data-sku="TEE-M".*?class="variant">M / Red<', html, re.S)

        html = post(c, "/till/customer/new", name="Meera Iyer", phone="9800000001", email="")
        assert notice(html)[0] == "ok" and 'id="customer-name">Meera Iyer<' in html
        html = post(c, "/till/pay", method="cash", amount="2500")
        assert notice(html) == ("ok", "cash taken: paid in full; change ₹200.00")
        assert 'id="change">₹200.00<' in html
        html = post(c, "/till/complete")
        level, text = notice(html)
        assert level == "ok" and "recorded" in text and "change ₹200.00" in text
        last = state(c)["last"]
        assert state(c)["lines"] == []

    with terminal(node.path) as t:
        sale = sale_op(t, last["sale_id"])
        p = sale["payload"]
        assert p["total"] == 230_000 and p["customer"] == t.customer("9800000001")["customer_id"]
        assert [(ln["sku"], ln["qty"]) for ln in p["lines"]] == [("TEE-M", 2), ("CAP", 2)]
        assert p["tenders"] == [
            {"method": "cash", "amount": 230_000, "tendered": 250_000, "change": 20_000}
        ]
        assert p["points_earned"] == 23
        jobs = t.ledger.print_queue.for_sale(last["sale_id"])
        assert [j.kind for j in jobs] == [JobKind.RECEIPT]

    # the web server's print worker printed it to the node's default printer (a file)
    receipts = node.path / "receipts.bin"
    wait_until(lambda: receipts.exists() and receipts.stat().st_size > 0, 10, "the receipt")
    slip = ed.decode(receipts.read_bytes())
    assert [b.data for b in slip.barcodes] == [last["sale_id"]]
    assert any(ln.startswith("Test tee") for ln in slip.lines)


def test_bad_scans_and_input_explain_themselves_and_record_nothing(node: Node) -> None:
    before = ops(node.path)
    with till(node.path) as c:
        level, text = notice(post(c, "/till/scan", code="4006381333931"))  # valid, not stocked
        assert level == "warn" and "not in the catalogue" in text
        html = post(c, "/till/scan", code="4006381333932")  # bad check digit
        assert notice(html)[0] == "error" and 'data-beep="invalid"' in html
        html = post(c, "/till/scan", code="Test")  # a name: pick from what matches
        assert 'id="picks"' in html and 'value="TEE-M"' in html
        assert notice(post(c, "/till/complete"))[0] == "error"  # nothing to sell
        post(c, "/till/scan", code="CAP")
        level, text = notice(post(c, "/till/qty", which="sale", line=1, qty="lots"))
        assert level == "error" and "whole number" in text
        level, text = notice(post(c, "/till/pay", method="card", amount="9999"))
        assert level == "error" and "more than the" in text
        level, text = notice(post(c, "/till/discount", spec="120%", line=1))
        assert level == "error"
        level, text = notice(post(c, "/till/pay", method="points"))
        assert level == "error" and "needs a customer" in text
        assert notice(post(c, "/till/void"))[1].startswith("sale voided")
        assert state(c)["lines"] == []
    assert ops(node.path) == before


def points_held_at_t2(pair: tuple[Node, Node]) -> str:
    """A customer with 30 points, redeemable at T2 only; T1 holds T2's ops. Their id."""
    t1, t2 = pair
    with terminal(t2.path) as t:
        cid = t.add_customer({"name": "Kiran", "phone": "9800000002"})
        t.sell([("JKT-L", 1)], customer=cid)
    t2.ok("sync", "export", str(t2.path / "b.bundle"))
    t1.ok("sync", "import", str(t2.path / "b.bundle"))
    return cid


def test_a_redemption_held_by_another_counter_is_refused_at_the_redeem_step(
    pair: tuple[Node, Node],
) -> None:
    t1 = pair[0]
    cid = points_held_at_t2(pair)
    before = ops(t1.path)
    with till(t1.path) as c:
        post(c, "/till/scan", code="CAP")
        html = post(c, "/till/customers", q="98000000")
        assert "Kiran · 9800000002 · 30 pts" in html
        html = post(c, "/till/customer", customer=cid)
        assert 'data-points="30"' in html and 'id="rights-here">0<' in html and "T2 (30)" in html
        level, text = notice(post(c, "/till/pay", method="points", amount="20"))
        assert level == "error", text
        assert f"Kiran ({cid}): 20 points asked" in text and "may redeem only 0" in text, text
        assert "T2 holds 30 (cannot be asked: this counter's sync service is not running)" in text
        assert state(c)["tenders"] == [] and ops(t1.path) == before  # refused before any tender
        post(c, "/till/pay", method="cash")
        assert "recorded" in notice(post(c, "/till/complete"))[1]
    assert ops(t1.path) > before


def _asks(directory: Path) -> int:
    """Escrow asks the till wrote for the daemon to send (0 before the first one)."""
    with terminal(directory) as t:
        try:
            return int(t.query("SELECT COUNT(*) AS n FROM escrow_asks")[0]["n"])
        except Exception:  # the table comes with the first ask
            return 0


def test_a_redemption_short_of_rights_asks_the_peers_and_waits_off_the_worker(
    pair: tuple[Node, Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the Redeem step the till asks the peers for the rights it lacks and awaits them in the
    event loop: other requests are answered meanwhile, and the points are taken once a peer's
    transfer arrives."""
    t1, t2 = pair
    cid = points_held_at_t2(pair)
    t1_id = load_config(t1.path).node_id
    status = {
        "pid": os.getpid(),
        "written": time.time(),
        "peers_up": 1,
        "peers": [{"node_id": "t2", "name": "T2", "up": True}],
    }
    (t1.path / "status.json").write_text(json.dumps(status))  # a daemon with T2 up
    server = WebServer(t1.path, port=0).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            c.post("/signin")
            for path, data in [
                ("/till/scan", {"code": "CAP"}),
                ("/till/customer", {"customer": cid}),
            ]:
                assert notice(c.post(path, data=data, headers=FRAG).text)[0] == "ok"

            redeem = {"method": "points", "amount": "20"}
            monkeypatch.setattr(escrow_wait, "ESCROW_WAIT_MS", 100)  # no peer answers in time
            level, text = notice(c.post("/till/pay", data=redeem, headers=FRAG).text)
            assert level == "error" and "T2 holds 30 (reachable)" in text, text
            assert _asks(t1.path) == 1 and c.get("/api/till").json()["tenders"] == []

            monkeypatch.setattr(escrow_wait, "ESCROW_WAIT_MS", 30_000)
            answer: queue.Queue[str] = queue.Queue()
            waiting = threading.Thread(
                target=lambda: answer.put(c.post("/till/pay", data=redeem, headers=FRAG).text)
            )
            waiting.start()
            wait_until(lambda: _asks(t1.path) == 2, 10, "the till to ask its peers again")
            assert c.get("/api/till").json()["lines"][0]["sku"] == "CAP"
            assert waiting.is_alive(), "the redemption stopped waiting before the rights came"

            with terminal(t2.path) as t:  # T2 hands the rights over, as the daemon would ask
                assert t.grant_rights(cid, t1_id, 20) == 20
            t2.ok("sync", "export", str(t2.path / "b.bundle"))
            t1.ok("sync", "import", str(t2.path / "b.bundle"))
            level, text = notice(answer.get(timeout=15))
            assert level == "ok" and "20 points taken" in text, text
            waiting.join(5)
            c.post("/till/pay", data={"method": "cash"}, headers=FRAG)
            assert "recorded" in notice(c.post("/till/complete", headers=FRAG).text)[1]
            assert c.get("/api/till").json()["last"]["points_redeemed"] == 20
    finally:
        server.stop()
        (t1.path / "status.json").unlink(missing_ok=True)


def test_returns_and_exchanges_start_by_scanning_the_receipt(node: Node) -> None:
    with terminal(node.path) as t:
        sale = t.sell([("TEE-M", 2), ("CAP", 1)])
        stock_before = {r["sku"]: r["qty"] for r in t.stock()}
    with till(node.path) as c:
        html = post(c, "/till/scan", code=sale.payload["receipt"])  # the receipt's code
        assert notice(html)[1].startswith(f"return against sale {sale.sale_id}")
        assert 'data-mode="return"' in html
        post(c, "/till/scan", code="2000000000017")
        level, text = notice(post(c, "/till/scan", code="JKT-L"))
        assert level == "warn" and "not on sale" in text
        post(c, "/till/refund", method="card")
        html = post(c, "/till/complete")
        assert "return" in notice(html)[1] and "recorded" in notice(html)[1]

        post(c, "/till/scan", code=sale.sale_id)
        post(c, "/till/qty", which="sale", line=2, delta=1)  # the cap comes back
        html = post(c, "/till/exchange")
        assert 'id="going-out"' in html
        html = post(c, "/till/scan", code="JKT-L")
        assert "Customer pays" in html and "₹2,750.00" in html
        html = post(c, "/till/complete", method="cash")
        assert "exchange" in notice(html)[1] and "recorded" in notice(html)[1]
    with terminal(node.path) as t:
        rows = t.query("SELECT kind, ref_sale, total FROM sales ORDER BY seq")
        assert [(r["kind"], r["ref_sale"], r["total"]) for r in rows[-2:]] == [
            ("return", sale.sale_id, -100_000),
            ("exchange", sale.sale_id, 275_000),
        ]
        after = {r["sku"]: r["qty"] for r in t.stock()}
        assert after["TEE-M"] == stock_before["TEE-M"] + 1
        assert after["CAP"] == stock_before["CAP"] + 1
        assert after["JKT-L"] == stock_before["JKT-L"] - 1


# -- staff -----------------------------------------------------------------------------------------


def add_staff(directory: Path) -> None:
    with terminal(directory) as t:
        add_user(t, "boss", name="Boss", role="admin", pin="999999")
        with approved_by(t, sign_in(t, "boss", "999999")):
            add_user(t, "ana", name="Ana", role="cashier", pin="1234", user="boss")
            add_user(t, "sam", name="Sam", role="supervisor", pin="567856", user="boss")
            add_user(t, "lee", name="Lee", role="cashier", pin="2468", user="boss")
            set_policy(t, "staff.list_users_at_signin", "yes", user="boss")


def test_sign_in_lockout_and_a_supervisor_pin_for_a_big_discount(node: Node) -> None:
    add_staff(node.path)
    with till(node.path, sign_in=False) as c:
        assert c.get("/till").url.path == "/signin"
        page = c.get("/signin").text
        assert all(f'value="{u}"' in page for u in ("ana", "sam", "boss"))
        r = c.post("/signin", data={"user": "ana", "pin": "1111"})
        assert r.status_code == 401 and "wrong PIN for ana" in r.text
        for _ in range(2):
            r = c.post("/signin", data={"user": "lee", "pin": "0000"})
        assert r.status_code == 401 and "too many wrong PINs from this device" in r.text
        r = c.post("/signin", data={"user": "lee", "pin": "2468"})  # the right PIN, too late
        assert r.status_code == 401 and "this device" in r.text and 'id="unlock-form"' in r.text
        unlock = {"user": "lee", "approver": "sam", "approver_pin": "567856"}
        r = c.post("/signin/unlock", data=unlock)
        assert r.status_code == 200 and "lee unlocked by sam" in r.text

        r = c.post("/signin", data={"user": "ana", "pin": "1234"}, follow_redirects=False)
        assert r.status_code == 303
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        c.get("/till")
        assert state(c)["user"] == "ana"

        before = ops(node.path)
        post(c, "/till/scan", code="TEE-M")
        html = post(c, "/till/discount", spec="20%", line=1)  # the limit is 10%: asked now
        level, text = notice(html)
        assert level == "error" and "needs a supervisor" in text
        assert 'id="approval"' in html and 'value="sam"' in html
        assert state(c)["lines"][0]["discount"] == 0  # not given without the approval
        html = post(c, "/till/discount", spec="20%", line=1, approver="sam", approver_pin="0000")
        assert notice(html)[1].startswith("approval not given: wrong PIN for sam")
        assert 'id="approval"' in html and state(c)["lines"][0]["discount"] == 0
        html = post(c, "/till/discount", spec="20%", line=1, approver="sam", approver_pin="567856")
        assert notice(html) == ("ok", "discount 20% on line 1")
        assert state(c)["lines"][0]["discount"] == 20_000
        html = post(c, "/till/complete")  # the approval given at Discount goes with the sale
        assert "recorded" in notice(html)[1] and ops(node.path) == before + 1
        sale_id = state(c)["last"]["sale_id"]

        c.post("/signout")
        assert c.get("/till").url.path == "/signin"
        assert c.get("/api/till").status_code == 401
    with terminal(node.path) as t:
        op = t.ledger.get(*(lambda s: (s["origin"], s["seq"]))(t.sale(sale_id)))
        assert op is not None and op.user == "ana" and op.payload["approval"]["user"] == "sam"


# -- manager -----------------------------------------------------------------------------------------


def test_manager_screen_resolves_a_conflict_and_closes_the_day(pair: tuple[Node, Node]) -> None:
    t1, t2 = pair
    for n in pair:
        with terminal(n.path) as t:
            t.sell([("LAST", 1)])  # both counters sold the last unit while apart
    t2.ok("sync", "export", str(t2.path / "b.bundle"))
    t1.ok("sync", "import", str(t2.path / "b.bundle"))
    with till(t1.path) as c:
        page = c.get("/manager").text
        assert 'data-conflict="oversell:LAST"' in page and "T2" in page
        assert "The daemon is not running" in page
        html = post(c, "/manager/resolve", conflict_id="oversell:LAST", note="")
        assert notice(html)[0] == "error" and "needs a note" in notice(html)[1]
        html = post(c, "/manager/resolve", conflict_id="oversell:LAST", note="found one", adjust=1)
        assert notice(html)[1].startswith("conflict oversell:LAST resolved")
        assert "No open conflicts" in html
        html = post(c, "/manager/report", which="z")
        assert notice(html)[1].startswith("Z report #1 queued")
        assert 'id="z-reports"' in html
        # the till's notices stay on the till
        assert "Z report" not in c.get("/till").text
    with terminal(t1.path) as t:
        assert t.conflicts("open") == []
        assert t.query("SELECT COUNT(*) AS n FROM ops WHERE kind = 'report.z'")[0]["n"] == 1


def test_the_till_runs_on_an_encrypted_database(node: Node) -> None:
    node.ok("encrypt")
    with till(node.path) as c:
        post(c, "/till/scan", code="CAP")
        assert "recorded" in notice(post(c, "/till/complete"))[1]
        held = f"{ops(node.path)} ops on this counter only"  # read through SQLCipher
        wait_until(
            lambda: any(d.startswith(held) for d in c.get("/api/banner").json()["details"]), 5, held
        )
    assert b"Test cap" not in node.db.read_bytes()


def test_cross_site_posts_and_foreign_host_names_are_refused(node: Node) -> None:
    before = ops(node.path)
    with till(node.path) as c:
        r = c.post("/till/scan", data={"code": "CAP"}, headers={"origin": "http://evil.example"})
        assert r.status_code == 403
        r = c.post("/till/customer/new", data={"name": "X"}, headers={"origin": "null"})
        assert r.status_code == 403
        assert c.get("/till", headers={"host": "evil.example"}).status_code == 400
        assert state(c)["lines"] == []
    assert ops(node.path) == before


def test_stock_screen_shows_every_counter_and_its_moves(pair: tuple[Node, Node]) -> None:
    t1, t2 = pair
    with terminal(t2.path) as t:
        t.sell([("TEE-M", 3)])
    t2.ok("sync", "export", str(t2.path / "b.bundle"))
    t1.ok("sync", "import", str(t2.path / "b.bundle"))
    with till(t1.path) as c:
        html = c.get("/stock", params={"q": "TEE"}).text
        assert re.search(r'data-name="T2" data-sales="1"', html)
        assert re.search(r'data-name="T1" data-sales="0"', html)
        row = re.search(r'<tr data-sku="TEE-M">(.*?)</tr>', html, re.S)
        assert row is not None
        assert "+10" in row.group(1) and "-3" in row.group(1) and 'data-qty="7"' in row.group(1)
        assert 'data-sku="CAP"' not in html


# -- the state at the top of the page ------------------------------------------------------------


def test_the_live_feed_counts_what_the_banner_shows(node: Node) -> None:
    with terminal(node.path) as t:
        t.sell([("CAP", 1)])
        feed = LiveFeed(str(t.cfg.db_path), t.ledger.key)
        try:
            held = t.ledger.op_count()
            assert feed.own_seq(t.node_id) == held and feed.own_seq("nobody") == 0
            assert feed.acked_seq() == 0  # no daemon ever ran: no peer_acks table
            assert feed.pending() == 0
            assert feed.ops_after(0) == held and feed.ops_after(2**42) == 0  # year 2109
            seen = feed.data_version()
            assert feed.data_version() == seen
            t.sell([("CAP", 1)])  # another connection commits
            assert feed.data_version() != seen and feed.own_seq(t.node_id) == held + 1
        finally:
            feed.close()


# -- live updates, over a real server ------------------------------------------------------------


def read_events(url: str, out: queue.Queue[tuple[str, str]], stop: threading.Event) -> None:
    with httpx.stream("GET", url, timeout=httpx.Timeout(10, read=30)) as r:
        kind = ""
        for line in r.iter_lines():
            if stop.is_set():
                return
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                out.put((kind, line[6:]))


def next_event(events: queue.Queue[tuple[str, str]], kind: str, timeout: float = 5) -> str:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {kind!r} event within {timeout} s")
        got_kind, data = events.get(timeout=left)
        if got_kind == kind:
            return data


def test_events_follow_commits_by_any_process_and_the_daemon_status(node: Node) -> None:
    cfg = load_config(node.path)
    membership.set_config(cfg, "hq", "url", "http://127.0.0.1:9")
    server = WebServer(node.path, port=0).start()
    events: queue.Queue[tuple[str, str]] = queue.Queue()
    stop = threading.Event()
    reader = threading.Thread(
        target=read_events, args=(server.url + "events", events, stop), daemon=True
    )
    try:
        reader.start()
        hello = json.loads(next_event(events, "hello"))
        assert set(hello) == {"db", "status"}
        with terminal(node.path) as t:  # another connection, like `meshpos sell`
            t0 = time.monotonic()
            t.sell([("CAP", 1)])
            next_event(events, "db")
            assert time.monotonic() - t0 < 1.0
        status = {
            "pid": os.getpid(),
            "written": time.time(),
            "peers_up": 0,
            "peers": [],
            "wan": {"wan_ok": False, "wan_since_ms": int(time.time() * 1000), "relay": None},
        }
        (node.path / "status.json").write_text(json.dumps(status))

        def hq_down() -> bool:
            next_event(events, "status")  # each status event is a changed state
            got = httpx.get(server.url + "api/banner").json()
            hq = [d for d in got["details"] if d.startswith("HQ not reachable since")]
            return bool(got["chip"].startswith("Offline — sales are safe") and hq)

        wait_until(hq_down, 5, "a status event with HQ down")
        html = httpx.get(server.url + "part/banner").text
        assert 'id="state-chip" data-level="offline"' in html and "HQ not reachable since" in html
    finally:
        stop.set()
        (node.path / "status.json").unlink(missing_ok=True)
        server.stop()
        reader.join(timeout=5)
    assert not server.thread.is_alive()


def test_web_serve_command_serves_the_node(node: Node) -> None:
    cli = [sys.executable, "-c", "from meshpos.cli.app import main; main()"]
    proc = subprocess.Popen(
        [*cli, "--dir", str(node.path), "web", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"on (http://127\.0\.0\.1:\d+/)", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        r = httpx.get(m.group(1) + "signin")
        assert r.status_code == 200 and "Open the till" in r.text
    finally:
        proc.terminate()
        proc.wait(15)
    assert proc.returncode == 0


def test_a_port_in_use_is_one_clear_error(node: Node) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}: Address"):
            WebServer(node.path, port=port)
        r = node.run("web", "serve", "--port", str(port))
        assert r.code == 1 and "choose another --port" in r.err


def test_web_settings_are_checked(node: Node) -> None:
    cfg = load_config(node.path)
    assert WebSettings.from_config(cfg).port is None
    membership.set_config(cfg, "web", "port", "eighty")
    with pytest.raises(ConfigError, match=r"\[web\] port must be a whole number"):
        WebSettings.from_config(cfg)
    membership.set_config(cfg, "web", "port", 8123)
    membership.set_config(cfg, "web", "hots", "x")
    with pytest.raises(ConfigError, match="unknown key"):
        WebSettings.from_config(cfg)


def test_the_daemon_serves_the_till_when_web_port_is_set(tmp_path: Path) -> None:
    (a,) = make_store(tmp_path, ["A"], mesh={"discovery": False})
    port = free_port()
    membership.set_config(load_config(a), "web", "port", port)
    url = f"http://127.0.0.1:{port}/api/banner"

    def up() -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = httpx.get(url, timeout=1).json()
        except httpx.HTTPError:
            return None
        return data if data.get("daemon") else None

    with Daemons() as daemons:
        daemons.start(a)
        got = wait_until(up, 20, "the daemon's web till to report the daemon running", daemons)
        assert "Other counters: none seen yet" in got["details"]
        daemons.all[0].stop()
        assert "web till on http://127.0.0.1:" in daemons.all[0].log()
    with pytest.raises(httpx.HTTPError):
        httpx.get(url, timeout=1)
