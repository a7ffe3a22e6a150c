"""Customer history (issue 15 item 3) at the three front doors: `meshpos customer show`, the text
till's `history`, and the web till's customer panel. Recent purchases and returns, sizes bought,
points and credit notes, all from the counter's own views: T1 shows what Kiran bought at T2 once
T2's ops reached it, with no network asked."""

from __future__ import annotations

from typing import Any

import pytest
from test_front_doors import PINS, Store, TextDoor, WebDoor, store

from meshpos.domain.pricing import Tender
from meshpos.service import paper
from meshpos.service.staff import approved_by, sign_in
from meshpos.service.terminal import Terminal

__all__ = ["store"]  # the front doors' store fixture


@pytest.fixture
def kiran(store: Store) -> dict[str, Any]:
    """Kiran's visits at T1 on top of the jacket bought at T2: two navy tees (one comes back as
    a credit note) and a cap."""
    t = Terminal.open(store.t1.path)
    try:
        tees = t.sell([("TSH-NAV-M", 2), ("CAP", 1)], customer=store.kiran, user="ana")
        with approved_by(t, sign_in(t, "sam", PINS["sam"])):
            back = t.return_items(
                tees.sale_id, [("TSH-NAV-M", 1)], refund="credit_note", user="sam"
            )
        note = next(x["code"] for x in back.payload["tenders"] if x["method"] == "credit_note")
        jacket = t.ledger.views.sales("S1-T2-000001")[0]["sale_id"]
        return {"tees": tees.sale_id, "back": back.sale_id, "note": note, "jacket": jacket}
    finally:
        t.close()


def test_customer_show_lists_visits_sizes_points_and_credit_notes(
    store: Store, kiran: dict[str, Any]
) -> None:
    h = store.t1.json("customer", "show", "9800000002")
    assert h["customer_id"] == store.kiran and h["name"] == "Kiran Rao"
    assert [v["sale_id"] for v in h["recent"]][:1] == [kiran["back"]]
    assert {v["sale_id"] for v in h["recent"]} == {kiran["back"], kiran["tees"], kiran["jacket"]}
    assert (h["purchases"], h["returns"]) == (2, 1)
    sizes = {(s["category"], s["size"]): s["qty"] for s in h["sizes"]}
    assert sizes[("Tops", "M")] == 1  # two bought, one came back
    assert sizes[("Outerwear", "L")] == 1  # bought at T2, seen here
    (card,) = h["cards"]
    assert card["code"] == kiran["note"] and card["kind"] == "credit_note"
    assert card["balance"] == 124_900
    assert h["points"] == h["rights_here"] + sum(h["points_elsewhere"].values())
    text = store.t1.ok("customer", "show", store.kiran).out
    assert f"credit note {kiran['note']}: ₹1,249.00 left" in text
    assert "Tops M ×1" in text and kiran["jacket"] in text


def test_the_text_till_shows_the_attached_customer_s_history(
    store: Store, kiran: dict[str, Any]
) -> None:
    door = TextDoor(store)
    try:
        door.console.handle("history")
        assert any("attach a customer" in line for line in door.lines)
        door.lines.clear()
        door.console.handle("c 9800000002")
        door.console.handle("history")
        said = "\n".join(door.lines)
        assert "Kiran Rao" in said and "2 purchase(s), 1 return(s)" in said
        assert "sizes: Outerwear L ×1, Tops M ×1" in said
        assert f"credit note {kiran['note']}" in said
        assert f"return {kiran['back']}" in said
    finally:
        door.close()


def test_the_web_till_shows_the_history_in_the_customer_panel(
    store: Store, kiran: dict[str, Any]
) -> None:
    web = WebDoor(store)
    try:
        web.post("/till/customer", customer=store.kiran)
        html = web.c.get("/part/till").text
        assert 'id="customer-history"' in html and "History · 2 visits" in html
        assert f'data-code="{kiran["note"]}"' in html
        assert f'data-sale="{kiran["jacket"]}"' in html and f'data-sale="{kiran["back"]}"' in html
        assert "Tops <b>M</b> ×1" in html
    finally:
        web.close()


def test_a_paper_sale_shows_in_the_history_as_one(store: Store) -> None:
    t = Terminal.open(store.t1.path)
    try:
        at = t.store_time().stamp(t.now_ms() - 3_600_000)
        written = f"{at[6:10]}-{at[3:5]}-{at[0:2]} {at[11:]}"
        sale = paper.add(t, [("CAP", 1)], slip="9", written=written, customer=store.kiran,
                         tenders=[Tender("cash")], user="ana")  # fmt: skip
    finally:
        t.close()
    h = store.t1.json("customer", "show", store.kiran)
    (entry,) = [v for v in h["recent"] if v["sale_id"] == sale.sale_id]
    assert entry["paper"] is True
