"""What the dashboard's forms do. Each action checks every field before it changes anything,
signs HQ ops in the acting person's name (`hq-<user id>`: stores see who changed a price), and
returns the notice the page shows. Who may run which action is in routes.py."""

from __future__ import annotations

import json
import logging
from typing import Any

from meshpos.core.errors import InputError
from meshpos.core.ops import Op
from meshpos.domain.cards import BLOCK_PREFIX
from meshpos.domain.gst import Band, bands_value, check_band_key, check_bands
from meshpos.hq.accounts import ROLES, Session
from meshpos.hq.card_float import hq_open_float
from meshpos.hq.dashboard import forms
from meshpos.hq.dashboard.pages import GST_PREFIX
from meshpos.hq.dashboard.site import Form, Site, money
from meshpos.ledger.fold import PRODUCT_FIELDS

log = logging.getLogger("meshpos.hq.dashboard")
MAX_BANDS = 6


def _signed(ops: list[Op], what: str) -> str:
    stores = sorted({op.store for op in ops})
    return (
        f"{what}: {len(ops)} op(s) signed by HQ for {len(stores)} store(s); "
        "each store's relay carries them down at its next sync"
    )


def _targets(site: Site, form: Form) -> list[str] | None:
    return forms.stores(form, (s.store for s in site.storage.enrolment.stores()))


def _audit(session: Session, what: str) -> None:
    log.info("HQ user %s: %s", session.person.user_id, what)


# -- catalogue ------------------------------------------------------------------------------------


def set_price(site: Site, session: Session, form: Form) -> str:
    sku = forms.sku(form)
    price = forms.rupees(form, "price", "price")
    assert price is not None
    ops = site.service.set_price(sku, price, _targets(site, form), user=session.person.op_user)
    _audit(session, f"price of {sku} set to {money(price)}")
    return _signed(ops, f"Price of {sku} set to {money(price)}")


def upsert_product(site: Site, session: Session, form: Form) -> str:
    sku = forms.sku(form)
    fields: dict[str, Any] = {}
    for name in ("name", "category", "barcode", "size", "colour"):
        value = forms.optional_text(form, name, name)
        if value is not None:
            fields[name] = value
    price = forms.rupees(form, "price", "price", required=False)
    if price is not None:
        fields["price"] = price
    gst = forms.percent(form, "gst", "GST rate", required=False)
    if gst is not None:
        fields["gst_rate"] = gst
    active = form.get("active", "")
    if active in ("1", "0"):
        fields["active"] = int(active)
    elif active:
        raise InputError("active must be yes or no")
    if not fields:
        raise InputError("give at least one field of the product to set")
    assert set(fields) <= set(PRODUCT_FIELDS)
    stores = _targets(site, form)
    if "name" not in fields:
        known = site.storage.views.known_skus
        missing = [s for s in site.service.ready_stores(stores) if sku not in known(s)]
        if missing:
            raise InputError(
                f"store(s) {', '.join(missing)} have no product {sku} yet: give it a name"
            )
    ops = site.service.upsert_product(sku, fields, stores, user=session.person.op_user)
    _audit(session, f"product {sku} set: {', '.join(sorted(fields))}")
    return _signed(ops, f"Product {sku} ({', '.join(sorted(fields))})")


def set_gst_bands(site: Site, session: Session, form: Form) -> str:
    """A category's (or an HSN prefix's, `hsn:61`) GST rate by net unit price: bands `up to ₹X:
    R%`, the last one open-ended, sent as the setting the tills read, `gst.bands.<key>`, in the
    stored form of meshpos.domain.gst (checked by the same rules as `[gst.bands]`)."""
    category = check_band_key(
        forms.text(form, "category", "category", required=True, limit=40), "category"
    )
    bands: list[dict[str, int | None]] = []
    for i in range(1, MAX_BANDS + 1):
        rate = forms.percent(form, f"rate{i}", f"rate of band {i}", required=False)
        up_to = forms.rupees(form, f"up_to{i}", f"upper price of band {i}", required=False)
        if rate is None and up_to is None:
            continue
        if rate is None:
            raise InputError(f"band {i} has a price but no rate")
        if bands and bands[-1]["up_to"] is None:
            raise InputError(f"band {i} follows a band with no upper price: that one must be last")
        if up_to is not None and bands and up_to <= int(bands[-1]["up_to"] or 0):
            raise InputError(f"band {i}'s upper price must be above band {i - 1}'s")
        bands.append({"up_to": up_to, "rate": rate})
    if not bands:
        raise InputError(
            "give at least one band (a rate, with an upper price for all but the last)"
        )
    if bands[-1]["up_to"] is not None:
        raise InputError("the last band must have no upper price: it covers everything above")
    key = GST_PREFIX + category
    value = bands_value(
        check_bands((Band(int(b["rate"] or 0), b["up_to"]) for b in bands), "GST bands")
    )
    ops = site.service.set_setting(key, value, _targets(site, form), user=session.person.op_user)
    _audit(session, f"GST bands of {category}: {json.dumps(value)}")
    return _signed(ops, f"GST bands of {category}")


def set_loyalty_rule(site: Site, session: Session, form: Form) -> str:
    earn = forms.whole(form.get("earn_per_100"), "points per ₹100", 0, 10_000, -1)
    value = forms.whole(form.get("point_value"), "paise one point is worth", 1, 1_000_000, -1)
    if earn < 0 and value < 0:
        raise InputError("give points per ₹100 and/or what one point is worth")
    stores = _targets(site, form)
    ops: list[Op] = []
    user = session.person.op_user
    if earn >= 0:
        ops += site.service.set_setting("loyalty.earn_per_100", earn, stores, user=user)
    if value >= 0:
        ops += site.service.set_setting("loyalty.point_value", value, stores, user=user)
    _audit(session, f"loyalty rule set (earn {earn}, value {value})")
    return _signed(ops, "Loyalty rule")


# -- cards ----------------------------------------------------------------------------------------


def block_card(site: Site, session: Session, form: Form) -> str:
    pan = forms.text(form, "card", "card number", required=True, limit=40).replace(" ", "")
    reason = forms.text(form, "reason", "reason", required=True, limit=80)
    ops = site.service.block_card(pan, reason)
    _audit(session, f"card ending {pan[-4:]} blocked ({reason})")
    return _signed(ops, f"Card ending {pan[-4:]} is on the blocklist")


def unblock_card(site: Site, session: Session, form: Form) -> str:
    key = forms.text(form, "key", "blocklist entry", required=True)
    if not key.startswith(BLOCK_PREFIX) or not any(
        e["setting_key"] == key for e in site.storage.blocklist.entries()
    ):
        raise InputError("that blocklist entry does not exist")
    reason = forms.text(form, "reason", "reason", limit=80) or "unblocked at HQ"
    svc = site.service
    ops = svc.storage.blocklist.change(svc.signer, key, reason, False, svc.now_ms())
    _audit(session, f"blocklist entry {key[len(BLOCK_PREFIX) :][:8]} lifted")
    return _signed(ops, "Card taken off the blocklist")


def settle_payments(site: Site, session: Session, form: Form) -> str:
    done = site.service.process_payments()
    _audit(session, f"settled {done} card payment(s)")
    return f"{done} card payment(s) settled with the acquirer"


def set_card_float(site: Site, session: Session, form: Form) -> str:
    total = forms.rupees(form, "total", "card float")
    assert total is not None
    ops = hq_open_float(site.service, total, _targets(site, form), user=session.person.op_user)
    _audit(session, f"card float set to {money(total)}")
    return _signed(ops, f"Card float set to {money(total)} per store")


# -- people ---------------------------------------------------------------------------------------


def add_person(site: Site, session: Session, form: Form) -> str:
    user = forms.user_id(form)
    role = forms.choice(form, "role", "role", ROLES)
    if form.get("password", "") != form.get("password2", ""):
        raise InputError("the two passwords differ")
    site.accounts.add(
        user, forms.text(form, "name", "name", limit=80), role, form.get("password", "")
    )
    _audit(session, f"added HQ user {user} as {role}")
    return f"{user} can now sign in as {role}"


def change_person(site: Site, session: Session, form: Form) -> str:
    """One change to another person's account: role, disable/enable, unlock, new password."""
    user = forms.user_id(form)
    what = forms.choice(
        form, "change", "change", ("role", "disable", "enable", "unlock", "password")
    )
    acc = site.accounts
    if what == "role":
        role = forms.choice(form, "role", "role", ROLES)
        acc.set_role(user, role)
        done = f"{user} is now {role} (signed out everywhere)"
    elif what in ("disable", "enable"):
        if user == session.person.user_id and what == "disable":
            raise InputError("you cannot disable your own account")
        acc.set_disabled(user, what == "disable")
        done = f"{user} is {what}d"
    elif what == "unlock":
        acc.unlock(user)
        done = f"{user} is unlocked"
    else:
        acc.set_password(user, form.get("password", ""))
        done = f"{user} has a new password (signed out everywhere)"
    _audit(session, done)
    return done


def change_own_password(site: Site, session: Session, form: Form) -> str:
    if form.get("password", "") != form.get("password2", ""):
        raise InputError("the two new passwords differ")
    site.accounts.change_password(
        session.person.user_id, form.get("current", ""), form.get("password", "")
    )
    return "Password changed: sign in again with the new one"
