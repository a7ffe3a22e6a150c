"""The web till in real headless Chromium (Debian's `chromium`, driven by Playwright pointed at
/usr/bin/chromium; nothing is downloaded): a store of two terminals, each a real `meshpos node run`
daemon syncing over loopback, a real HQ process, and a TCP listener standing in for T1's network
receipt printer. T1's daemon serves the web till (`[web] port`).

The tests run in order on one store: a cashier sells with loyalty points and the receipt prints;
a sale at T2 changes T1's stock screen live (and, overselling, opens a conflict the manager screen
resolves with a supervisor's PIN); HQ stops and the banner says so, without a reload.
Screenshots go to $MESHPOS_SCREENSHOTS (docs/screenshots when refreshing the docs), else tmp.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hq_helpers import HQServer, free_port, unique_store
from mesh_procs import SAMPLE, Daemons, converged, meshpos, wait_until
from printer_listener import PrinterListener

from bench.common import CHROMIUM, CHROMIUM_ARGS
from meshpos.devices import escpos_decode as ed
from meshpos.domain.catalog import parse_csv
from meshpos.node import membership
from meshpos.service.config import init_node, load_config
from meshpos.service.staff import add_user, approved_by, set_policy, sign_in
from meshpos.service.terminal import Terminal

PINS = {"boss": "999999", "asha": "1357", "sam": "246824"}

sync_api = pytest.importorskip("playwright.sync_api", reason="Python Playwright is not installed")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Chromium is not installed: apt-get install -y chromium (see .ci/run)",
    ),
]


@dataclass
class Store:
    t1: Path
    t2: Path
    hq: HQServer
    printer: PrinterListener
    daemons: Daemons
    url: str
    shots: Path
    customer: str


def _mesh(d: Path, port: int, peer: tuple[str, int], hq_url: str) -> None:
    cfg = load_config(d)
    membership.set_config(cfg, "mesh", "host", "127.0.0.1")
    membership.set_config(cfg, "mesh", "port", port)
    membership.set_config(cfg, "mesh", "discovery", False)
    membership.set_config(
        cfg, "mesh", "static_peers", [{"node": peer[0], "host": "127.0.0.1", "port": peer[1]}]
    )
    membership.set_config(cfg, "hq", "url", hq_url)


def _seed(t1: Path) -> str:
    """The catalogue, a loyal customer with 58 points earned at T1, and staff."""
    t = Terminal.open(t1)
    try:
        t.import_catalog(parse_csv(SAMPLE.read_text(), SAMPLE.name))
        cid = t.add_customer({"name": "Priya Nair", "phone": "9811111111"})
        t.sell([("LIN-BLA-L", 2)], customer=cid)
        add_user(t, "boss", name="Boss", role="admin", pin=PINS["boss"])
        with approved_by(t, sign_in(t, "boss", PINS["boss"])):
            add_user(t, "asha", name="Asha", role="cashier", pin=PINS["asha"], user="boss")
            add_user(t, "sam", name="Sam", role="supervisor", pin=PINS["sam"], user="boss")
            set_policy(t, "staff.list_users_at_signin", "yes", user="boss")
        return cid
    finally:
        t.close()


def _introduce(a: Path, b: Path) -> None:
    """Each terminal learns the other's certificate (a bundle each way, as `meshpos sync export`
    and `import` carry them): terminals HQ enrolled one by one do not know each other yet."""
    ta, tb = Terminal.open(a), Terminal.open(b)
    try:
        tb.import_bundle(ta.export_bundle()[0])
        ta.import_bundle(tb.export_bundle()[0])
    finally:
        ta.close()
        tb.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    base = tmp_path_factory.mktemp("browser")
    hq = HQServer(base / "hq")
    printer = PrinterListener()
    printer.start()
    daemons = Daemons()
    try:
        sid = unique_store("W")
        svc = hq.service()
        try:
            svc.enroll_store(sid, "Web store")
            dirs = []
            for name in ("T1", "T2"):
                init_node(base / name, sid, name)
                t = Terminal.open(base / name)
                membership.install(t, svc.enroll_node(sid, membership.request(t)))
                dirs.append(base / name)
                t.close()
        finally:
            svc.close()
        t1, t2 = dirs
        ports = [free_port(), free_port()]
        ids = [load_config(d).node_id for d in dirs]
        _mesh(t1, ports[0], (ids[1], ports[1]), hq.url)
        _mesh(t2, ports[1], (ids[0], ports[0]), hq.url)
        cfg1 = load_config(t1)
        net = {"kind": "network", "host": "127.0.0.1", "port": printer.port}
        for key, value in net.items():
            membership.set_config(cfg1, "printer", key, value)
        web_port = free_port()
        membership.set_config(cfg1, "web", "port", web_port)
        membership.set_config(load_config(t2), "printer", "kind", "none")
        customer = _seed(t1)
        _introduce(t1, t2)
        daemons.start(t1)
        daemons.start(t2)
        url = f"http://127.0.0.1:{web_port}"

        def serving() -> bool:
            try:
                return bool(httpx.get(url + "/api/banner", timeout=1).json().get("daemon"))
            except (httpx.HTTPError, ValueError):
                return False

        wait_until(serving, 30, "T1's daemon to serve the web till", daemons)
        wait_until(lambda: converged(dirs), 30, "T2 to hold T1's catalogue and staff", daemons)
        wait_until(
            lambda: any(p.get("up") for p in daemons.all[0].status().get("peers", [])),
            30,
            "T1 to see T2 on the LAN",
            daemons,
        )
        shots = Path(os.environ.get("MESHPOS_SCREENSHOTS") or base / "screenshots")
        shots.mkdir(parents=True, exist_ok=True)
        yield Store(t1, t2, hq, printer, daemons, url, shots, customer)
    finally:
        daemons.close()
        hq.stop()
        printer.stop()


@pytest.fixture(scope="module")
def browser(store: Store) -> Iterator[Any]:
    profile = tempfile.mkdtemp(prefix="meshpos-chromium-")
    try:
        with sync_api.sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 860},
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def page(browser: Any, store: Store) -> Any:
    """One tab, signed in as cashier Asha with the PIN pad, as a cashier would."""
    page = browser.new_page()
    page.set_default_timeout(10_000)
    page.goto(store.url + "/till")
    assert page.url.endswith("/signin")
    page.locator("label.user", has_text="Asha").click()
    for digit in PINS["asha"]:
        page.click(f'#signin-form [data-key="{digit}"]')
    page.screenshot(path=str(store.shots / "signin.png"))
    page.click("#signin-button")
    page.wait_for_url("**/till")
    assert page.inner_text("#who") == "Asha · cashier"
    page.wait_for_selector('#live-state[data-state="ok"]')  # the event stream is connected
    return page


def scan(page: Any, code: str) -> None:
    """A keyboard-wedge scanner: keystrokes into whatever has focus, then Enter."""
    page.keyboard.type(code)
    page.keyboard.press("Enter")


def test_cashier_signs_in_scans_redeems_points_pays_cash_and_the_receipt_prints(
    page: Any, store: Store
) -> None:
    assert page.evaluate("document.activeElement.id") == "scan"
    scan(page, "8901000000026")  # TSH-NAV-M, by barcode
    scan(page, "TSH-WHI-S")  # typed straight after: queued, not lost
    page.wait_for_selector('tr.line[data-sku="TSH-WHI-S"]')
    assert page.locator("#lines tr.line").count() == 2
    assert "M / Navy" in page.inner_text('tr.line[data-sku="TSH-NAV-M"]')

    # a new customer is added and attached; then the loyal one is looked up instead
    page.click("details.new-customer summary")
    page.fill('#new-customer input[name="name"]', "Ravi Kumar")
    page.fill('#new-customer input[name="phone"]', "9822222222")
    page.click("#new-customer button")
    page.wait_for_selector("#customer-name:has-text('Ravi Kumar')")
    page.click("text=Remove customer")
    page.wait_for_selector("#find-customer")
    page.fill('#find-customer input[name="q"]', "98111")
    page.click("#find-customer button")
    page.click("#customer-results button:has-text('Priya Nair')")
    page.wait_for_selector("#customer-name:has-text('Priya Nair')")
    assert page.get_attribute("#points", "data-points") == "58"

    page.fill('#redeem-form input[name="amount"]', "40")
    page.click("#redeem-form button")
    page.wait_for_selector('.tender[data-method="points"]')
    page.click("button:has-text('₹2000')")
    page.wait_for_selector("#change")
    assert page.inner_text("#change") == "₹92.00"  # 1249 + 699 - 40 points = 1908
    page.screenshot(path=str(store.shots / "till.png"), full_page=True)

    page.click(".finish .btn.go")
    page.wait_for_selector("#last-sale")
    sale_id = page.get_attribute("#last-sale", "data-sale")
    assert "recorded" in page.inner_text("#notice")
    assert page.locator("#lines tr.line").count() == 0

    def printed() -> ed.Decoded | None:
        slips = [ed.decode(job) for job in store.printer.jobs]
        return next((s for s in slips if [b.data for b in s.barcodes] == [sale_id]), None)

    slip = wait_until(printed, 15, "the receipt at the printer listener", store.daemons)
    assert any(ln.startswith("Crew T-shirt") for ln in slip.lines)
    assert any("92.00" in ln and "Change" in ln for ln in slip.lines), slip.lines
    assert any("40" in ln and "oint" in ln for ln in slip.lines), slip.lines
    # the page learns the slip printed through the event stream, without a reload
    page.wait_for_selector('#last-sale[data-receipt="printed"]')

    # the receipt's code starts a return; the customer takes another size instead (exchange)
    scan(page, str(sale_id))
    page.wait_for_selector("#return-of")
    page.click('tr.line[data-sku="TSH-WHI-S"] button[aria-label="one more"]')
    page.wait_for_selector('tr.line[data-sku="TSH-WHI-S"][data-qty="1"]')
    page.click("button:has-text('Exchange: customer takes other items')")
    page.wait_for_selector("#going-out")
    scan(page, "TSH-WHI-M")
    page.wait_for_selector('#take-lines tr.line[data-sku="TSH-WHI-M"]')
    page.screenshot(path=str(store.shots / "exchange.png"), full_page=True)
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Void')")
    page.wait_for_selector("#notice:has-text('voided')")

    t = Terminal.open(store.t1)
    try:
        sale = t.sale(str(sale_id))
        assert sale["user"] == "asha" and sale["points_redeemed"] == 40
        assert t.points(store.customer) == 58 - 40 + sale["points_earned"]
    finally:
        t.close()


def test_a_sale_at_the_other_counter_changes_the_stock_screen_live(page: Any, store: Store) -> None:
    page.goto(store.url + "/stock?q=TSH-WHI")
    cell = 'tr[data-sku="TSH-WHI-S"] td.stock-qty'
    before = int(page.get_attribute(cell, "data-qty"))
    page.evaluate("window.__sameDocument = true")
    t0 = time.monotonic()
    sold = meshpos(store.t2, "--user", "asha", "sell", f"TSH-WHI-Sx{before + 2}", "--json").json()
    page.wait_for_function(f"document.querySelector('{cell}').dataset.qty === '-2'", timeout=15_000)
    took = time.monotonic() - t0
    assert page.evaluate("window.__sameDocument") is True  # no reload: the live path did it
    assert page.get_attribute('#terminals tr[data-name="T2"]', "data-sales") == "1"
    assert "neg" in (page.get_attribute(cell, "class") or "")
    print(f"\nT2 sale {sold['sale_id']} on T1's stock screen after {took * 1000:.0f} ms")
    page.screenshot(path=str(store.shots / "stock.png"), full_page=True)

    # selling what was not there opened an oversell conflict: the manager screen resolves it,
    # and since Asha is a cashier, a supervisor approves with their PIN
    page.goto(store.url + "/manager")
    conflict = page.locator('[data-conflict="oversell:TSH-WHI-S"]')
    conflict.wait_for()
    assert "T2" in conflict.inner_text()
    conflict.locator('input[name="note"]').fill("two found in the back room")
    conflict.locator('input[name="adjust"]').fill("2")
    conflict.locator("button:has-text('Resolve')").click()
    page.wait_for_selector("#approval")
    assert "needs a supervisor" in page.inner_text("#notice")
    page.locator("#approval label", has_text="Sam").click()
    for digit in PINS["sam"]:
        page.click(f'#approval [data-key="{digit}"]')
    page.screenshot(path=str(store.shots / "manager.png"), full_page=True)
    page.click("#approval button:has-text('Approve')")
    page.wait_for_selector("#notice:has-text('resolved')")
    assert page.locator('[data-conflict="oversell:TSH-WHI-S"]').count() == 0


def test_the_banner_shows_the_hq_outage_when_hq_stops(page: Any, store: Store) -> None:
    page.goto(store.url + "/till")
    hq = '#banner [data-key="hq"]'
    page.wait_for_selector(f'{hq}[data-level="ok"]', timeout=20_000)
    assert page.inner_text(hq).startswith("HQ reachable since")
    assert page.inner_text('#banner [data-key="lan"]') == "LAN: 1 of 1 peer up (T2)"
    page.evaluate("window.__sameDocument = true")
    store.hq.stop()
    page.wait_for_selector(f'{hq}[data-level="down"]', timeout=20_000)
    assert "UNREACHABLE since" in page.inner_text(hq)
    assert page.evaluate("window.__sameDocument") is True
    page.screenshot(path=str(store.shots / "banner-hq-down.png"))
    # selling goes on while HQ is away
    scan(page, "TSH-NAV-L")
    page.wait_for_selector('tr.line[data-sku="TSH-NAV-L"]')
    page.click("button:has-text('Cash exact')")
    page.wait_for_selector(".tender")
    page.click(".finish .btn.go")
    page.wait_for_selector("#notice:has-text('recorded')")
