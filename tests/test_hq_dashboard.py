"""HQ's dashboard in-process (the app over httpx's ASGI transport) on a small chain with a day of
trade (chain_helpers.py): every page behind a sign-in, the figures each page shows against the
stores' own, roles enforced on every action, the CSRF token and origin checks, bad input answered
with a message and no change, and the takings view filled from the op log for an older database.
The browser tests (test_hq_dashboard_browser.py) drive the same pages in Chromium."""

from __future__ import annotations

import asyncio
import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from chain_helpers import STORES, Chain, build_chain, pull, push
from pg import pg_cluster_fixture

from meshpos.domain.money import rupees
from meshpos.hq import keys
from meshpos.hq.accounts import Accounts
from meshpos.hq.app import create_app
from meshpos.hq.dashboard.routes import ACTIONS, PAGES
from meshpos.hq.dashboard.site import COOKIE
from meshpos.hq.overview import store_statuses
from meshpos.hq.service import HQService
from meshpos.hq.storage import open_storage
from meshpos.hq.storage.browse import StockQuery
from meshpos.hq.storage.takings import MARK
from meshpos.ledger.judging import unauthorised_detail

PW = "correct horse battery"
PEOPLE = {"vera": "viewer", "omar": "operator", "asha": "admin"}
ROW = r"<tr><td>(\w+)</td><td[^>]*>\d+</td><td[^>]*>([^<]+)</td>"  # a takings-by-kind row


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    base = tmp_path_factory.mktemp("dash")
    svc = HQService(keys.init_hq(base / "hq"))
    accounts = Accounts(svc.storage.people)
    for user, role in PEOPLE.items():
        accounts.add(user, user.capitalize(), role, PW)
    c = build_chain(svc, base)
    yield c
    c.close()
    svc.close()


class Browser:
    """A signed-in person, as a browser on the same site would send requests."""

    def __init__(self, chain: Chain, user: str | None) -> None:
        self.svc = chain.svc
        self.app = create_app(chain.svc, sweep_s=0)
        self.user = user
        self.cookies: dict[str, str] = {}
        if user:
            r = self.post("/signin", {"user": user, "password": PW, "next": "/stores"}, csrf=False)
            assert r.status_code == 303, r.text
            self.cookies[COOKIE] = r.cookies[COOKIE]

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://hq.test", cookies=self.cookies
            ) as client:
                return await client.request(method, path, **kw)

        return asyncio.run(go())

    def get(self, path: str) -> httpx.Response:
        return self.request("GET", path)

    def csrf(self) -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', self.get("/account").text)
        assert found
        return found.group(1)

    def post(
        self, path: str, data: dict[str, str], *, csrf: bool = True, origin: str | None = None
    ) -> httpx.Response:
        form = {**data, **({"csrf": self.csrf()} if csrf else {})}
        headers = {"origin": origin or "http://hq.test"}
        return self.request("POST", path, data=form, headers=headers)


def text(r: httpx.Response) -> str:
    """The page's visible text, tags dropped and entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", r.text)).split())


def notice(r: httpx.Response) -> str:
    found = re.search(r'id="(?:error|notice)"[^>]*>([^<]*)<', r.text)
    return html.unescape(found.group(1)) if found else ""


def ops_held(svc: HQService) -> int:
    return svc.storage.log.op_count()


@pytest.mark.parametrize("path", [p for p, *_ in PAGES])
def test_every_page_needs_a_sign_in(chain: Chain, path: str) -> None:
    r = Browser(chain, None).get(path)
    assert r.status_code == 303
    assert r.headers["location"] == f"/signin?next={path}"


def test_pages_send_no_script_and_forbid_framing(chain: Chain) -> None:
    r = Browser(chain, "vera").get("/stores")
    csp = r.headers["content-security-policy"]
    assert "script-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "<script" not in r.text and r.headers["cache-control"] == "no-store"


def test_stores_page_shows_each_store_its_state_and_what_needs_a_look(chain: Chain) -> None:
    page = text(Browser(chain, "vera").get("/stores"))
    for name in STORES.values():
        assert name in page
    assert "0 / 2 stores online" in page  # nothing relayed over HTTP: no terminal seen
    row = re.search(r'data-store="IND".*?</tr>', Browser(chain, "vera").get("/stores").text, re.S)
    assert row and "2</a>" in row.group(0)  # oversold jackets + a declined card
    assert "₹21,750.00" in page and "₹6,750.00" in page  # net sales, as the stores count them
    assert chain.sold == {"KOR": 675000, "IND": 2175000}


def test_sales_page_matches_the_stores_and_takings_by_kind_match_their_tenders(
    chain: Chain,
) -> None:
    b = Browser(chain, "vera")
    r = b.get("/sales")
    assert r.status_code == 200 and "<svg" in r.text
    page = text(r)
    assert f"{chain.sold['KOR'] + chain.sold['IND']:,}" not in page  # paise never shown raw
    assert f"{rupees(chain.sold['KOR'] + chain.sold['IND'])} net sales" in page
    kinds = re.search(r'<table id="kinds">.*?</table>', r.text, re.S)
    assert kinds
    shown = {m: int(re.sub(r"[.,₹]", "", a)) for m, a in re.findall(ROW, kinds.group(0))}
    assert shown == chain.by_kind
    one = text(b.get("/sales?store=KOR"))
    assert f"{rupees(chain.sold['KOR'])} net sales" in one


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("/sales?from=2025-13-01", "from date '2025-13-01' is not a date like 2025-09-22"),
        ("/sales?from=2025-09-10&to=2025-09-01", "the from date 2025-09-10 is after the to date"),
        ("/sales?from=2020-01-01&to=2025-01-01", "choose at most 366 days"),
        ("/sales?store=NOPE", "store 'NOPE' is not enrolled at HQ"),
        ("/stock?page=0", "page '0' must be a whole number from 1 to 100000"),
        ("/stock?low=1&at_most=lots", "low stock level 'lots' must be a whole number"),
        ("/payments?status=lost", "status must be one of pending, declined, approved, all"),
        ("/stores?show=some", "show must be all, offline or attention"),
    ],
)
def test_a_bad_filter_is_answered_with_what_to_change(chain: Chain, query: str, says: str) -> None:
    r = Browser(chain, "vera").get(query)
    assert r.status_code == 400
    assert says in notice(r)


def test_stock_search_filters_and_low_stock(chain: Chain) -> None:
    b = Browser(chain, "vera")
    every = text(b.get("/stock"))
    assert "6 rows" in every  # 3 products x 2 stores
    jackets = b.get("/stock?q=jack")
    assert "2 rows" in text(jackets) and "TEE" not in text(jackets)
    low = b.get("/stock?low=1&at_most=0")
    assert "1 row" in text(low) and "IND" in text(low)
    assert 'class="chip bad"' in low.text  # below zero
    assert "Nothing matches" in text(b.get("/stock?q=%25%25nothing"))
    assert "3 rows" in text(b.get("/stock?store=KOR"))


def test_loyalty_page_finds_the_customer_with_points_per_store(chain: Chain) -> None:
    t = chain.stores["KOR"].t1
    points = t.query("SELECT points FROM loyalty WHERE customer_id = ?", (chain.customer,))
    page = text(Browser(chain, "vera").get("/loyalty?q=priya"))
    assert "Priya Nair" in page and "9811111111" in page
    assert f"Koramangala: {points[0]['points']}" in page
    assert "Gift cards and credit notes" in page


def test_payments_page_shows_pending_and_declined_card_payments_and_floats(chain: Chain) -> None:
    b = Browser(chain, "vera")
    pending = text(b.get("/payments"))
    assert "ending 4242" in pending and "pending" in pending and "0002" not in pending
    declined = text(b.get("/payments?status=declined"))
    assert "ending 0002" in declined and "the issuer declined the card" in declined
    assert "₹50,000.00" in pending  # the float HQ set per store
    assert "do_not_honour" in pending  # the declined card is on the blocklist


def test_conflicts_page_says_what_happened_and_what_to_do(chain: Chain) -> None:
    page = text(Browser(chain, "vera").get("/conflicts?store=IND"))
    assert "Sold more Jacket (JKT) than the store held" in page
    assert "Stock of Jacket (JKT) is -2" in page
    assert "Card payment of ₹3,000.00 declined" in page
    assert "What to do: Contact the customer" in page
    assert "Nothing needs a look in Koramangala" in text(
        Browser(chain, "vera").get("/conflicts?store=KOR")
    )


def test_an_op_hq_holds_without_authority_is_listed_in_words_and_counted(chain: Chain) -> None:
    detail = unauthorised_detail(
        ("T9", 4, 0, "stock.adjust", "cal", "T2", "approval", "needs a supervisor's approval")
    )
    row = ("KOR", "unauthorised:T9:4", "unauthorised", "T9:4", "open", json.dumps(detail),
           '["T9:4"]', None)  # fmt: skip
    db = chain.svc.storage.db
    db.run(lambda tx: tx.execute("INSERT INTO conflicts VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row))
    try:
        page = text(Browser(chain, "vera").get("/conflicts?store=KOR"))
        assert "A stock adjust by cal at T2 did not take effect" in page
        assert "needs a supervisor's approval" in page and "Op T9:4" in page
        [kor] = [
            s for s in store_statuses(chain.svc.storage, chain.svc.now_ms()) if s.store == "KOR"
        ]
        assert kor.open_conflicts == 1
    finally:
        db.run(lambda tx: tx.execute("DELETE FROM conflicts WHERE store = 'KOR'"))


def test_a_terminal_hq_revoked_is_counted_and_its_later_sale_listed_as_without_effect(
    tmp_path: Path,
) -> None:
    svc = HQService(keys.init_hq(tmp_path / "hq"))
    Accounts(svc.storage.people).add("vera", "Vera", "viewer", PW)
    c = build_chain(svc, tmp_path)
    try:
        kor = c.stores["KOR"]
        stolen = kor.terminals[1]
        svc.revoke("KOR", stolen.node_id, "stolen from the counter")
        late = stolen.sell([("TEE", 1)])  # it has not heard yet: HQ stores the sale, no effect
        push(svc, kor, stolen)
        b = Browser(c, "vera")
        row = re.search(r'data-store="KOR".*?</tr>', b.get("/stores").text, re.S)
        assert row and 'data-revoked="1"' in row.group(0)
        ind = re.search(r'data-store="IND".*?</tr>', b.get("/stores").text, re.S)
        assert ind and "data-revoked" not in ind.group(0)
        page = text(b.get("/conflicts?store=KOR"))
        assert "A sale by " in page and "did not take effect" in page
        assert f"{stolen.node_id} was revoked" in page and "stolen from the counter" in page
        held = svc.storage.db.select("SELECT sale_id FROM sales WHERE store = ?", ["KOR"])
        assert late.sale_id not in {str(r["sale_id"]) for r in held}
    finally:
        c.close()
        svc.close()


# -- actions and roles ---------------------------------------------------------------------------

GOOD: dict[str, dict[str, str]] = {
    "/catalogue/price": {"sku": "TEE", "price": "1099", "stores": "KOR"},
    "/catalogue/product": {"sku": "SCF", "name": "Scarf", "price": "399", "gst": "5"},
    "/catalogue/gst": {"category": "Tops", "up_to1": "2500", "rate1": "5", "rate2": "18"},
    "/loyalty/rule": {"earn_per_100": "2"},
    "/payments/block": {"card": "4111 1111 1111 1111", "reason": "stolen"},
    "/payments/unblock": {"key": "card.blocked.x"},
    "/payments/settle": {},
    "/payments/float": {"total": "60000"},
    "/people/add": {"user_id": "zed", "role": "viewer", "password": PW, "password2": PW},
    "/people/change": {"user_id": "omar", "change": "unlock"},
    "/account/password": {"current": "wrong one entirely", "password": "x", "password2": "x"},
}
RANK = {"viewer": 0, "operator": 1, "admin": 2}


@pytest.mark.parametrize(("path", "role"), [(p, r) for p, _, r, _ in ACTIONS if r != "viewer"])
def test_every_action_is_refused_below_its_role_and_changes_nothing(
    chain: Chain, path: str, role: str
) -> None:
    for user, held in PEOPLE.items():
        if RANK[held] >= RANK[role]:
            continue
        before = (
            ops_held(chain.svc),
            [p.role for p in Accounts(chain.svc.storage.people).people()],
        )
        r = Browser(chain, user).post(path, GOOD[path])
        assert r.status_code == 403, (path, user)
        assert f"This needs the {role} role" in text(r)
        after = (ops_held(chain.svc), [p.role for p in Accounts(chain.svc.storage.people).people()])
        assert after == before


@pytest.mark.parametrize("path", [p for p, *_ in ACTIONS])
def test_a_post_without_the_session_token_or_from_another_site_is_refused(
    chain: Chain, path: str
) -> None:
    b = Browser(chain, "asha")
    before = ops_held(chain.svc)
    no_token = b.post(path, GOOD[path], csrf=False)
    assert no_token.status_code == 403 and "reload the page" in no_token.text
    forged = b.post(path, {**GOOD[path], "csrf": "guessed"}, csrf=False)
    assert forged.status_code == 403
    elsewhere = b.post(path, GOOD[path], origin="https://evil.example")
    assert elsewhere.status_code == 403 and "cross-site" in elsewhere.text
    assert ops_held(chain.svc) == before


@pytest.mark.parametrize(
    ("path", "data", "says"),
    [
        (
            "/catalogue/price",
            {"sku": "TEE", "price": "ten"},
            "price 'ten' is not an amount of rupees",
        ),
        ("/catalogue/price", {"sku": "NOPE", "price": "10"}, "have no product NOPE"),
        (
            "/catalogue/price",
            {"sku": "TEE", "price": "10", "stores": "KOR, XX"},
            "store(s) XX are not enrolled",
        ),
        ("/catalogue/price", {"sku": "T E E", "price": "10"}, "SKU 'T E E' may hold only"),
        (
            "/catalogue/product",
            {"sku": "NEW1", "price": "10"},
            "have no product NEW1 yet: give it a name",
        ),
        ("/catalogue/product", {"sku": "TEE"}, "give at least one field"),
        ("/catalogue/product", {"sku": "TEE", "gst": "150"}, "GST rate '150' is more than 100%"),
        (
            "/catalogue/gst",
            {"category": "Tops", "up_to1": "2500", "rate1": "5"},
            "the last band must have no upper price",
        ),
        (
            "/catalogue/gst",
            {"category": "Tops", "rate1": "5", "rate2": "18"},
            "band 2 follows a band with no upper price",
        ),
        (
            "/catalogue/gst",
            {
                "category": "Tops",
                "up_to1": "2500",
                "rate1": "5",
                "up_to2": "1000",
                "rate2": "12",
                "rate3": "18",
            },
            "band 2's upper price must be above band 1's",
        ),
        ("/catalogue/gst", {"category": "Tops"}, "give at least one band"),
        ("/loyalty/rule", {}, "give points per ₹100"),
        (
            "/loyalty/rule",
            {"earn_per_100": "-3"},
            "points per ₹100 '-3' must be a whole number from 0",
        ),
        ("/payments/block", {"card": "1234", "reason": "lost"}, "card"),
        ("/payments/block", {"card": "4111111111111111", "reason": ""}, "reason is required"),
        (
            "/payments/unblock",
            {"key": "card.blocked.nothing"},
            "that blocklist entry does not exist",
        ),
        ("/payments/float", {"total": "-5"}, "card float '-5' is not an amount"),
        (
            "/people/add",
            {"user_id": "bad id", "role": "viewer", "password": PW, "password2": PW},
            "user id 'bad id' must be",
        ),
        (
            "/people/add",
            {"user_id": "kim", "role": "viewer", "password": PW, "password2": PW + "x"},
            "the two passwords differ",
        ),
        (
            "/people/add",
            {"user_id": "kim", "role": "owner", "password": PW, "password2": PW},
            "role must be one of viewer, operator, admin",
        ),
        (
            "/people/change",
            {"user_id": "asha", "change": "disable"},
            "you cannot disable your own account",
        ),
        ("/people/change", {"user_id": "nobody", "change": "unlock"}, "no HQ user 'nobody'"),
        (
            "/people/change",
            {"user_id": "vera", "change": "password", "password": "short"},
            "at least 10 characters",
        ),
        (
            "/account/password",
            {
                "current": "not it at all",
                "password": "new long phrase",
                "password2": "new long phrase",
            },
            "current password is not right",
        ),
    ],
)
def test_bad_input_is_answered_with_a_message_and_changes_nothing(
    chain: Chain, path: str, data: dict[str, str], says: str
) -> None:
    b = Browser(chain, "asha")
    people = Accounts(chain.svc.storage.people)
    before = (ops_held(chain.svc), people.people(), chain.svc.storage.blocklist.entries())
    r = b.post(path, {"back": path.rsplit("/", 1)[0] or "/", **data})
    assert r.status_code == 400, r.text[:500]
    assert says in notice(r)
    assert (ops_held(chain.svc), people.people(), chain.svc.storage.blocklist.entries()) == before
    if path not in ("/account/password", "/payments/unblock", "/people/change"):  # typed forms
        for key, value in data.items():
            if key not in ("card", "role") and "password" not in key and value:
                assert f'value="{html.escape(value, quote=True)}"' in r.text  # kept for a retry


def test_a_price_change_is_signed_in_the_operators_name_and_reaches_the_store(
    chain: Chain,
) -> None:
    b = Browser(chain, "omar")
    r = b.post(
        "/catalogue/price", {"sku": "CAP", "price": "275.50", "stores": "KOR", "back": "/catalogue"}
    )
    assert r.status_code == 303 and r.headers["location"] == "/catalogue"
    b.cookies["meshpos_hq_notice"] = r.cookies["meshpos_hq_notice"]  # what the browser keeps
    page = b.get("/catalogue")
    assert "Price of CAP set to ₹275.50: 1 op(s) signed by HQ for 1 store(s)" in notice(page)
    kor = chain.stores["KOR"]
    pull(chain.svc, kor, kor.t1)
    row = kor.t1.query("SELECT price FROM products WHERE sku = 'CAP'")[0]
    assert row["price"] == 27550
    [op] = [o for o in kor.t1.ledger.tail(5) if o.kind == "product.upsert"]
    assert op.user == "hq-omar"
    assert "₹250.00" in text(b.get("/catalogue?q=CAP"))  # IND keeps its price: both shown


def test_gst_bands_are_sent_as_a_setting_each_store_receives(chain: Chain) -> None:
    b = Browser(chain, "omar")
    form = {
        "category": "Bottoms",
        "up_to1": "2500",
        "rate1": "5",
        "rate2": "18",
        "back": "/catalogue",
    }
    assert b.post("/catalogue/gst", form).status_code == 303
    ind = chain.stores["IND"]
    pull(chain.svc, ind, ind.t1)
    [row] = ind.t1.query("SELECT value FROM settings WHERE key = 'gst.bands.Bottoms'")
    assert row["value"] == '[{"rate": 500, "up_to": 250000}, {"rate": 1800, "up_to": null}]'
    bands = ind.t1.gst_rules().for_product("Bottoms", "")  # the till taxes by them
    assert [(b.rate, b.up_to) for b in bands] == [(500, 250_000), (1800, None)]
    assert "up to ₹2,500.00: 5% · above: 18%" in text(b.get("/catalogue"))


def test_blocking_a_card_lists_it_and_lifting_it_takes_it_off(chain: Chain) -> None:
    b = Browser(chain, "omar")
    before = len(chain.svc.storage.blocklist.entries())
    assert (
        b.post(
            "/payments/block",
            {"card": "4111 1111 1111 1111", "reason": "stolen bag", "back": "/payments"},
        ).status_code
        == 303
    )
    entries = chain.svc.storage.blocklist.entries()
    assert len(entries) == before + 1
    page = b.get("/payments")
    assert "stolen bag" in text(page) and "4111111111111111" not in page.text
    key = next(e["setting_key"] for e in entries if e["reason"] == "stolen bag")
    assert b.post("/payments/unblock", {"key": key, "back": "/payments"}).status_code == 303
    assert not chain.svc.storage.blocklist.is_blocked(key)


def test_admin_manages_people_and_a_new_role_applies_at_the_next_sign_in(chain: Chain) -> None:
    admin = Browser(chain, "asha")
    add = {
        "user_id": "kiran",
        "name": "Kiran",
        "role": "viewer",
        "password": PW,
        "password2": PW,
        "back": "/people",
    }
    assert admin.post("/people/add", add).status_code == 303
    kiran = Browser(chain, "kiran")
    assert kiran.get("/people").status_code == 403
    assert (
        admin.post(
            "/people/change",
            {"user_id": "kiran", "change": "role", "role": "admin", "back": "/people"},
        ).status_code
        == 303
    )
    assert kiran.get("/stores").status_code == 303  # signed out by the change
    assert Browser(chain, "kiran").get("/people").status_code == 200
    assert (
        admin.post(
            "/people/change", {"user_id": "kiran", "change": "disable", "back": "/people"}
        ).status_code
        == 303
    )
    r = Browser(chain, None).post("/signin", {"user": "kiran", "password": PW}, csrf=False)
    assert r.status_code == 401 and "disabled" in text(r)


def test_sign_in_failures_lock_the_account_and_then_the_address(chain: Chain) -> None:
    anon = Browser(chain, None)
    Accounts(chain.svc.storage.people).add("lena", "Lena", "viewer", PW)
    for _ in range(5):
        r = anon.post("/signin", {"user": "lena", "password": "guess guess"}, csrf=False)
        assert r.status_code == 401
    assert "now locked" in text(r)
    r = anon.post("/signin", {"user": "lena", "password": PW}, csrf=False)
    assert r.status_code == 401 and "locked after 5 wrong passwords" in text(r)
    for _ in range(20):
        r = anon.post("/signin", {"user": "nobody", "password": "guess guess"}, csrf=False)
    assert r.status_code == 429 and "too many failed sign-ins from this address" in text(r)
    assert anon.post("/signin", {"user": "vera", "password": PW}, csrf=False).status_code == 429
    assert Browser(chain, "vera").get("/stores").status_code == 200  # a new address: allowed


def test_sign_out_ends_the_session_and_next_stays_on_this_site(chain: Chain) -> None:
    b = Browser(chain, "vera")
    assert b.post("/signout", {}).status_code == 303
    assert b.get("/stores").status_code == 303
    r = Browser(chain, None).post(
        "/signin", {"user": "vera", "password": PW, "next": "//evil.example/x"}, csrf=False
    )
    assert r.headers["location"] == "/stores"


def test_takings_are_filled_from_the_op_log_for_a_database_from_before(tmp_path: Path) -> None:
    base = tmp_path
    svc = HQService(keys.init_hq(base / "hq"))
    chain = build_chain(svc, base)
    try:
        expected = svc.storage.takings.by_kind()
        svc.storage.db.run(lambda tx: tx.execute("DELETE FROM takings_daily"))
        svc.storage.db.run(lambda tx: tx.execute("DELETE FROM hq_meta WHERE name = ?", (MARK,)))
        url = svc.cfg.db_url
    finally:
        chain.close()
        svc.close()
    again = open_storage(url)
    try:
        assert again.takings.by_kind() == expected
        assert {r["method"] for r in expected} == {"cash", "card", "points"}
    finally:
        again.close()


@pytest.fixture(scope="module")
def pg_cluster() -> Iterator[Any]:
    yield from pg_cluster_fixture()


def test_the_dashboards_reads_give_the_same_figures_on_postgresql(
    chain: Chain, pg_cluster: Any, tmp_path: Path
) -> None:
    svc = HQService(keys.init_hq(tmp_path / "hq"), open_storage(pg_cluster.create_db()))
    pg = build_chain(svc, tmp_path)
    try:

        def figures(s: HQService) -> dict[str, Any]:
            st, b = s.storage, s.storage.browse
            return {
                "takings": [(r["method"], r["amount"], r["tenders"]) for r in st.takings.by_kind()],
                "low": [
                    (r["store"], r["sku"], r["qty"]) for r in b.stock(StockQuery(at_most=5)).rows
                ],
                "jackets": b.stock(StockQuery(search="JAC", category="Top")).total,
                "customers": [(c["name"], c["points"]) for c in b.customers("priya").rows],
                "products": [(p["sku"], p["stores"]) for p in b.products("jack").rows],
                "anomalies": [(a.store, a.kind) for a in st.anomalies.open()],
                "counts": st.anomalies.counts(),
                "floats": [(f["store"], f["total"]) for f in b.card_floats(sorted(STORES))],
                "declined": len(b.payments("declined", None)),
                "statuses": [(r.store, r.net, r.open_conflicts) for r in store_statuses(st, 0)],
            }

        ours = figures(chain.svc)
        assert figures(svc) == ours
        assert ours["takings"] and ours["low"] and ours["anomalies"] and ours["customers"]
    finally:
        pg.close()
        svc.close()
