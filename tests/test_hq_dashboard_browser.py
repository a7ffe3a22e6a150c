"""HQ's dashboard in real headless Chromium (Debian's, driven by Playwright; nothing downloaded),
served by a real `meshpos hq serve`. The chain: two stores with two weeks of trade relayed
earlier (chain_helpers.py: card payments approved, declined and pending, a loyal customer,
jackets oversold), and a live store of two `meshpos node run` daemons relaying to HQ now.

An admin signs in (after a wrong password), reads every page, filters sales, stock and customers,
changes a price that reaches the live store's terminals, sets GST bands, blocks and lifts a card,
and adds a viewer; the viewer signs in and finds no forms and no People page. Every page is
screenshotted to $MESHPOS_SCREENSHOTS (docs/screenshots when refreshing the docs) as hq-*.png.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chain_helpers import build_chain, trade_history
from mesh_procs import Daemons, sell, wait_until

from bench.common import CHROMIUM, chromium, screenshot_dir
from meshpos.demo.hq import HQProcess, enrol_store, store_vv
from meshpos.hq import keys
from meshpos.hq.accounts import Accounts
from meshpos.hq.service import HQService
from meshpos.hq.storage.contacts import Contact
from meshpos.service.terminal import Terminal

sync_api = pytest.importorskip("playwright.sync_api", reason="Python Playwright is not installed")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Chromium is not installed: apt-get install -y chromium (see .ci/run)",
    ),
]
ADMIN_PW = "correct horse battery"
VIEWER_PW = "viewer reads only"
DEADLINE = 45.0
LIVE = "MGR"
HOT = "TSH-NAV-M"


@dataclass
class Chain:
    hq: HQProcess
    svc: HQService
    live: list[Path]
    daemons: Daemons
    shots: Path
    customer: str


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    base = tmp_path_factory.mktemp("hqbrowser")
    hq_dir = base / "hq"
    svc = HQService(keys.init_hq(hq_dir, name="chain-hq"))
    try:
        built = build_chain(svc, base)
        for st in built.stores.values():
            trade_history(svc, st)
        customer = built.customer
        now = svc.now_ms()
        svc.storage.contacts.record(
            [
                Contact(
                    "KOR",
                    built.stores["KOR"].t1.node_id,
                    now - 3 * 3_600_000,
                    now - 3 * 3_600_000,
                    0,
                )
            ]
        )
        built.close()
        Accounts(svc.storage.people).add("asha", "Asha Rao", "admin", ADMIN_PW)
    finally:
        svc.close()
    hq = HQProcess(hq_dir).start()
    daemons = Daemons()
    try:
        live = enrol_store(
            hq, base / "live", LIVE, ("T1", "T2"), relay={"probe_ms": 500, "poll_ms": 1000}
        )
        daemons.start(live[0])
        daemons.start(live[1])
        svc = hq.service()
        wait_until(lambda: store_vv(live[1]) == store_vv(live[0]) == svc.storage.vv(LIVE), DEADLINE,
                   "the live store's catalogue on both terminals and at HQ", daemons)  # fmt: skip
        for _ in range(2):
            sell(live[0], HOT)
        shots = screenshot_dir(base / "screenshots")
        yield Chain(hq, svc, live, daemons, shots, customer)
        svc.close()
    finally:
        daemons.close()
        hq.stop()


@pytest.fixture(scope="module")
def browser(chain: Chain) -> Iterator[Any]:
    with chromium(1366, 900) as context:
        yield context


@pytest.fixture(scope="module")
def page(browser: Any, chain: Chain) -> Any:
    """The admin's tab: a wrong password first, then signed in."""
    page = browser.new_page()
    page.set_default_timeout(15_000)
    page.goto(chain.hq.url + "/sales")
    assert "/signin?next=/sales" in page.url
    page.fill("#user", "asha")
    page.fill("#password", "not my password")
    page.click("#signin-button")
    assert page.inner_text("#signin-error") == "wrong user name or password"
    page.screenshot(path=str(chain.shots / "hq-signin.png"))
    page.fill("#password", ADMIN_PW)
    page.click("#signin-button")
    page.wait_for_url("**/sales")
    assert page.inner_text("#me") == "Asha Rao"
    return page


def shot(page: Any, chain: Chain, name: str) -> None:
    page.screenshot(path=str(chain.shots / f"hq-{name}.png"), full_page=True)


def test_stores_page_shows_the_live_store_online_with_its_relay(page: Any, chain: Chain) -> None:
    def online() -> bool:
        page.goto(chain.hq.url + "/stores")
        row = page.locator(f'tr[data-store="{LIVE}"]')
        relay = row.locator("td").nth(4).inner_text()  # the lower node id of the two relays
        return "Online" in row.inner_text() and relay in ("T1", "T2")

    wait_until(online, DEADLINE, "the live store online at HQ with its relay", chain.daemons)
    assert "Offline" in page.locator('tr[data-store="KOR"]').inner_text()
    assert "3 h ago" in page.locator('tr[data-store="KOR"]').inner_text()
    assert page.locator('tr[data-store="IND"] a.chip.bad').inner_text() == "2"
    assert page.locator("svg.spark").count() >= 2
    shot(page, chain, "stores")
    page.select_option("select[name=show]", "offline")
    page.click("form.filters button")
    assert page.locator(f'tr[data-store="{LIVE}"]').count() == 0


def test_sales_page_charts_two_weeks_and_filters_by_store(page: Any, chain: Chain) -> None:
    page.goto(chain.hq.url + "/sales")
    bars = page.locator("#daily-chart svg rect.bar")
    assert bars.count() == 14
    assert page.locator("#kinds tbody tr").count() == 3  # cash, card, points
    shot(page, chain, "sales")
    page.select_option("#store-select", "IND")
    page.click("form.filters button")
    assert "Indiranagar" in page.inner_text("h2")
    assert page.locator("#per-store tbody tr").count() == 1
    page.fill("input[name=from]", "2025-09-30")
    page.fill("input[name=to]", "2025-09-01")
    page.click("form.filters button")
    assert "is after the to date" in page.inner_text("#error")


def test_stock_search_and_low_stock(page: Any, chain: Chain) -> None:
    page.goto(chain.hq.url + "/stock")
    page.fill("#stock-search", "jack")
    page.check("#low")
    page.fill("#at-most", "3")
    page.click("#stock-filters button")
    rows = page.locator("#stock tbody tr")
    assert rows.count() >= 1
    assert "JKT" in rows.first.inner_text() and "-2" in rows.first.inner_text()
    shot(page, chain, "stock")


def test_loyalty_finds_the_customer(page: Any, chain: Chain) -> None:
    page.goto(chain.hq.url + "/loyalty")
    page.fill("#customer-search", "priya")
    page.press("#customer-search", "Enter")
    assert "Priya Nair" in page.inner_text("#customers")
    assert page.locator("#gift-cards").is_visible()
    shot(page, chain, "loyalty")


def test_a_price_change_from_the_form_reaches_the_live_terminals(page: Any, chain: Chain) -> None:
    page.goto(chain.hq.url + f"/catalogue?q={HOT}")
    form = page.locator("#price-form")
    form.locator("input[name=sku]").fill(HOT)
    form.locator("input[name=price]").fill("1111.50")
    form.locator("input[name=stores]").fill(LIVE)
    form.locator("button").click()
    assert f"Price of {HOT} set to ₹1,111.50" in page.inner_text("#notice")

    def priced(d: Path) -> bool:
        t = Terminal.open(d)
        try:
            return t.query("SELECT price FROM products WHERE sku = ?", (HOT,))[0]["price"] == 111150
        finally:
            t.close()

    everywhere = "the new price on both live terminals"
    wait_until(lambda: all(priced(d) for d in chain.live), DEADLINE, everywhere, chain.daemons)
    gst = page.locator("#gst-form")
    gst.locator("input[name=category]").fill("Tops")
    gst.locator("input[name=up_to1]").fill("2500")
    gst.locator("input[name=rate1]").fill("5")
    gst.locator("input[name=rate2]").fill("18")
    gst.locator("button").click()
    assert "GST bands of Tops" in page.inner_text("#notice")
    assert "up to ₹2,500.00: 5%" in page.inner_text("#bands")
    bad = page.locator("#price-form")
    bad.locator("input[name=sku]").fill(HOT)
    bad.locator("input[name=price]").fill("eleven")
    bad.locator("button").click()
    assert "price 'eleven' is not an amount of rupees" in page.inner_text("#error")
    assert page.locator("#price-form input[name=price]").input_value() == "eleven"
    assert page.locator("#product-form input[name=price]").input_value() == ""  # not its form
    shot(page, chain, "catalogue")


def test_payments_page_blocks_and_lifts_a_card(page: Any, chain: Chain) -> None:
    page.goto(chain.hq.url + "/payments?status=all")
    listed = page.inner_text("#payments")  # the one left pending is settled by HQ's sweep by now
    assert "ending 0002" in listed and "declined" in listed and "approved" in listed
    block = page.locator("#block-form")
    block.locator("input[name=card]").fill("4111 1111 1111 1111")
    block.locator("input[name=reason]").fill("stolen bag")
    block.locator("button").click()
    assert "Card ending 1111 is on the blocklist" in page.inner_text("#notice")
    assert "stolen bag" in page.inner_text("#blocklist")
    shot(page, chain, "payments")
    page.locator("#blocklist tr", has_text="stolen bag").locator("button").click()
    assert "taken off the blocklist" in page.inner_text("#notice")


def test_conflicts_page_in_plain_words(page: Any, chain: Chain) -> None:
    page.goto(chain.hq.url + "/conflicts")
    text = page.inner_text("main")
    assert "Sold more Jacket (JKT) than the store held" in text
    assert "What to do:" in text
    shot(page, chain, "conflicts")


def test_admin_adds_a_viewer_who_sees_no_forms(page: Any, browser: Any, chain: Chain) -> None:
    page.goto(chain.hq.url + "/people")
    form = page.locator("#add-person")
    form.locator("input[name=user_id]").fill("vera")
    form.locator("input[name=name]").fill("Vera Menon")
    form.locator("select[name=role]").select_option("viewer")
    form.locator("input[name=password]").fill(VIEWER_PW)
    form.locator("input[name=password2]").fill(VIEWER_PW)
    form.locator("button").click()
    assert "vera can now sign in as viewer" in page.inner_text("#notice")
    shot(page, chain, "people")
    page.click("#signout")
    page.wait_for_url("**/signin")
    page.fill("#user", "vera")
    page.fill("#password", VIEWER_PW)
    page.click("#signin-button")
    page.wait_for_url("**/stores")
    assert page.locator("header nav a", has_text="People").count() == 0
    page.goto(chain.hq.url + "/catalogue")
    assert page.locator("#price-form").count() == 0
    assert "need the operator role" in page.inner_text("main")
    page.goto(chain.hq.url + "/people")
    assert "This needs the admin role" in page.inner_text("#denied")
    shot(page, chain, "denied")
