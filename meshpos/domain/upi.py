"""UPI payments at the counter (pure): the `upi://pay` request the till shows as a QR code, and the
reference (UTR) the cashier confirms the payment with.

The customer's phone pays over its own data, so UPI keeps working while the store is offline: the
till shows the request for the amount, the customer pays, and the cashier types the 12-digit UTR
the phone (or the store's sound box) shows. The tender is then "UPI, pending reconciliation" until
HQ matches it against the bank's settlement file (meshpos/hq/upi.py).
"""

from __future__ import annotations

import re
from urllib.parse import quote

from meshpos.core.errors import InputError

_UTR = re.compile(r"^\d{12}$")
_VPA = re.compile(r"^[A-Za-z0-9.\-_]{2,256}@[A-Za-z][A-Za-z0-9.\-]{1,64}$")
VPA_SETTING = "upi_vpa"  # `[store] upi_vpa` in meshpos.toml


def check_ref(text: str) -> str:
    """A UTR as typed: 12 digits (spaces ignored)."""
    ref = re.sub(r"\s", "", text)
    if not _UTR.match(ref):
        raise InputError(
            f"UPI reference {text!r}: type the 12-digit UTR (UPI transaction reference) the "
            "customer's phone or the sound box shows"
        )
    return ref


def check_vpa(vpa: str) -> str:
    """The store's UPI id (VPA), like `shop@okaxis`."""
    vpa = vpa.strip()
    if not _VPA.match(vpa):
        raise InputError(
            f"[store] upi_vpa {vpa!r} is not a UPI id: it looks like name@bank (shop@okaxis)"
        )
    return vpa


def pay_uri(vpa: str, payee: str, amount: int, reference: str, note: str = "") -> str:
    """The `upi://pay` request for `amount` paise to `vpa`, carrying the sale's `reference`
    (`tr`), which the bank's settlement file echoes back for reconciliation."""
    if amount <= 0:
        raise InputError("a UPI request needs an amount above zero")
    params = {
        "pa": check_vpa(vpa),
        "pn": payee or vpa,
        "am": f"{amount // 100}.{amount % 100:02d}",
        "cu": "INR",
        "tr": reference,
        "tn": note or f"Bill {reference}",
    }
    return "upi://pay?" + "&".join(f"{k}={quote(v, safe='@.-_')}" for k, v in params.items())
