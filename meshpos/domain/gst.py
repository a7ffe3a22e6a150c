"""GST for a tax invoice: GSTINs and states, rates by price band, and the CGST/SGST/IGST split.

Prices are tax-inclusive (MRP), so a line's tax is the part of its total the rate contains. Which
rate applies can depend on the price: apparel and made-up textiles (HSN chapters 61, 62, 63) and
footwear (64) pay 5 % up to a sale value of ₹2,500 a piece (or pair) and 18 % above, since
22 September 2025. "Sale value" is the value before GST, after every discount: a line takes the
lowest band whose limit its value per piece, net of that band's own tax, stays within (₹2,625.00
inclusive is the last price taxed at 5 %). Bands are kept per category or per HSN prefix, set by
`[gst.bands]` in meshpos.toml or by a `gst.bands.<key>` setting (from HQ), because the
government changes them by notification.

Tax splits by place of supply: within the store's state it is CGST + SGST, two equal halves at
half the rate each; to another state it is IGST at the full rate. Both are rounded per line to the
paisa, so an invoice's totals are the sums of its lines. docs/gst.md says what an invoice carries.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshpos.core.errors import InputError
from meshpos.domain.money import parse_rate, parse_rupees, portion, rate, rupees

# State and union territory codes of GSTINs (the first two digits), as the GST portal lists them.
STATES: dict[str, str] = {
    "01": "Jammu and Kashmir",
    "02": "Himachal Pradesh",
    "03": "Punjab",
    "04": "Chandigarh",
    "05": "Uttarakhand",
    "06": "Haryana",
    "07": "Delhi",
    "08": "Rajasthan",
    "09": "Uttar Pradesh",
    "10": "Bihar",
    "11": "Sikkim",
    "12": "Arunachal Pradesh",
    "13": "Nagaland",
    "14": "Manipur",
    "15": "Mizoram",
    "16": "Tripura",
    "17": "Meghalaya",
    "18": "Assam",
    "19": "West Bengal",
    "20": "Jharkhand",
    "21": "Odisha",
    "22": "Chhattisgarh",
    "23": "Madhya Pradesh",
    "24": "Gujarat",
    "26": "Dadra and Nagar Haveli and Daman and Diu",
    "27": "Maharashtra",
    "29": "Karnataka",
    "30": "Goa",
    "31": "Lakshadweep",
    "32": "Kerala",
    "33": "Tamil Nadu",
    "34": "Puducherry",
    "35": "Andaman and Nicobar Islands",
    "36": "Telangana",
    "37": "Andhra Pradesh",
    "38": "Ladakh",
    "97": "Other Territory",
}
_BY_NAME = {name.casefold(): code for code, name in STATES.items()}
_GSTIN = re.compile(r"^(\d{2})[A-Z]{5}\d{4}[A-Z][1-9A-Z]Z[0-9A-Z]$")
_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_HSN = re.compile(r"^\d{4}(?:\d{2}){0,2}$")

BANDS_SETTING = "gst.bands."  # + a category name or "hsn:<prefix>"
HSN_KEY = "hsn:"


# -- states and GSTINs ----------------------------------------------------------------------------


def state_code(text: str, what: str = "state") -> str:
    """A state or union territory by GST code ('29') or name ('Karnataka') -> its code."""
    value = str(text).strip()
    code = value.zfill(2) if value.isdigit() else _BY_NAME.get(value.casefold(), "")
    if code not in STATES:
        raise InputError(
            f"{what} {text!r} is not an Indian state or union territory: give its name "
            "(like Karnataka) or its two-digit GST code (like 29)"
        )
    return code


def state_label(code: str) -> str:
    """'29' -> '29-Karnataka', as an invoice prints the place of supply."""
    return f"{code}-{STATES.get(code, '?')}"


def gstin_checksum(first14: str) -> str:
    """The 15th character of a GSTIN: a mod-36 check over the first 14 (factors 1, 2, 1, ...)."""
    total = 0
    for i, ch in enumerate(first14):
        product = _CHARS.index(ch) * (2 if i % 2 else 1)
        total += product // 36 + product % 36
    return _CHARS[(36 - total % 36) % 36]


def check_gstin(text: str, what: str = "GSTIN") -> str:
    """A GSTIN, upper-cased, after checking its shape, state code and check character."""
    value = str(text).strip().upper()
    m = _GSTIN.match(value)
    if not m:
        raise InputError(
            f"{what} {text!r} is not a GSTIN: 15 characters, a state code, the holder's PAN, "
            "an entity number, Z and a check character (like 29ABCDE1234F1Z5)"
        )
    if m.group(1) not in STATES:
        raise InputError(f"{what} {value} starts with {m.group(1)}, which is no state's code")
    if gstin_checksum(value[:14]) != value[14]:
        raise InputError(
            f"{what} {value} fails its check character (a typo?): the last character would be "
            f"{gstin_checksum(value[:14])}"
        )
    return value


def check_hsn(text: str, what: str = "HSN code") -> str:
    """An HSN code: 4, 6 or 8 digits (chapter, heading, sub-heading, tariff item)."""
    value = str(text).strip().replace(".", "").replace(" ", "")
    if not _HSN.match(value):
        raise InputError(f"{what} {text!r} is not an HSN code of 4, 6 or 8 digits (like 6109)")
    return value


# -- rates by price band ------------------------------------------------------------------------


@dataclass(frozen=True)
class Band:
    """`rate` (basis points) for a value per piece, before GST, up to `up_to` paise (None: any)."""

    rate: int
    up_to: int | None = None


Bands = tuple[Band, ...]

APPAREL: Bands = (Band(500, 250_000), Band(1800))
# The law as of 22 September 2025 (notification 9/2025-Central Tax (Rate)); config or HQ settings
# override it per category or HSN prefix.
DEFAULT_BANDS: dict[str, Bands] = {f"{HSN_KEY}{ch}": APPAREL for ch in ("61", "62", "63", "64")}

_BAND_TEXT = re.compile(r"^\s*(?P<rate>[\d.]+\s*%?)\s*(?:up\s*to\s+(?P<limit>.+?)|above)?\s*$")


def check_bands(bands: Iterable[Band], what: str) -> Bands:
    """Bands in order of their limits, the last without one."""
    out = tuple(bands)
    limits = [b.up_to for b in out]
    if not out or limits[-1] is not None or None in limits[:-1]:
        raise InputError(f"{what}: the last band, and only the last, has no limit ('18% above')")
    if any(a is not None and b is not None and a >= b for a, b in itertools.pairwise(limits)):
        raise InputError(f"{what}: band limits must rise from one band to the next")
    if any(not 0 <= b.rate <= 10000 for b in out):
        raise InputError(f"{what}: a rate must be between 0% and 100%")
    return out


def parse_bands(value: Any, what: str = "GST bands") -> Bands:
    """Bands from text, '5% up to 2500, 18% above' (rupees of value before GST per piece), or
    from their stored form, a list of {"rate": basis points, "up_to": paise or null}."""
    if isinstance(value, str):
        parts = [p for p in re.split(r"[,;]", value) if p.strip()]
        bands = []
        for part in parts:
            m = _BAND_TEXT.match(part)
            if not m:
                raise InputError(
                    f"{what}: {part.strip()!r} is not a band like '5% up to 2500' or '18% above'"
                )
            limit = m.group("limit")
            bands.append(
                Band(
                    parse_rate(m.group("rate"), what),
                    parse_rupees(limit, f"{what} limit") if limit else None,
                )
            )
        return check_bands(bands, what)
    if isinstance(value, list):
        bands = []
        for item in value:
            r = item.get("rate") if isinstance(item, dict) else None
            up = item.get("up_to") if isinstance(item, dict) else None
            if type(r) is not int or not (up is None or type(up) is int):
                raise InputError(f"{what}: {item!r} is not a band {{rate, up_to}}")
            bands.append(Band(r, up))
        return check_bands(bands, what)
    raise InputError(f"{what}: give bands like '5% up to 2500, 18% above'")


def bands_value(bands: Bands) -> list[dict[str, int | None]]:
    """The stored (JSON) form of bands, as a `gst.bands.<key>` setting holds them."""
    return [{"rate": b.rate, "up_to": b.up_to} for b in bands]


def describe_bands(bands: Bands) -> str:
    """'5% up to ₹2,500.00 a piece, 18% above'."""
    parts = [
        f"{rate(b.rate)} up to {rupees(b.up_to)} a piece" if b.up_to is not None else
        f"{rate(b.rate)} above" if len(bands) > 1 else rate(b.rate)
        for b in bands
    ]  # fmt: skip
    return ", ".join(parts)


def band_rate(bands: Bands, total: int, qty: int) -> int:
    """The rate of a line of `qty` pieces whose tax-inclusive total after discounts is `total`:
    the first band whose limit holds the value per piece net of that band's tax."""
    for band in bands:
        if band.up_to is None:
            return band.rate
        # total / qty / (1 + rate) <= up_to, in integers
        if total * 10000 <= band.up_to * max(qty, 1) * (10000 + band.rate):
            return band.rate
    return bands[-1].rate


@dataclass(frozen=True)
class GstRules:
    """The bands in force: per category name, or per HSN prefix (key 'hsn:61'). A category's
    bands win over its HSN's; a longer HSN prefix over a shorter one; a product matching none
    keeps the fixed rate of its catalogue row."""

    bands: Mapping[str, Bands] = field(default_factory=lambda: dict(DEFAULT_BANDS))

    def for_product(self, category: str, hsn: str) -> Bands:
        if category and category in self.bands:
            return self.bands[category]
        for end in range(len(hsn), 1, -1):
            found = self.bands.get(f"{HSN_KEY}{hsn[:end]}")
            if found is not None:
                return found
        return ()

    def merged(self, overrides: Mapping[str, Bands | None]) -> GstRules:
        """These rules with `overrides` on top; a None override removes a key's bands."""
        out = dict(self.bands)
        for key, bands in overrides.items():
            if bands:
                out[key] = bands
            else:
                out.pop(key, None)
        return GstRules(out)


def check_band_key(key: str, what: str = "GST band key") -> str:
    """A category name, or 'hsn:' and an HSN prefix of 2 to 8 digits."""
    key = key.strip()
    if key.lower().startswith(HSN_KEY):
        prefix = key[len(HSN_KEY) :].strip()
        if not (prefix.isdigit() and 2 <= len(prefix) <= 8):
            raise InputError(f"{what} {key!r}: after 'hsn:' give 2 to 8 digits (like hsn:61)")
        return HSN_KEY + prefix
    if not key or any(ch in key for ch in "\r\n\t"):
        raise InputError(f"{what} {key!r} must be a category name or hsn:<digits>")
    return key


# -- place of supply and the split ----------------------------------------------------------------


@dataclass(frozen=True)
class Supply:
    """Who sells to whom, where: what decides CGST + SGST or IGST."""

    seller_state: str = ""
    place: str = ""  # the place of supply's state code
    seller_gstin: str = ""
    buyer_gstin: str = ""

    @property
    def inter_state(self) -> bool:
        return bool(self.seller_state and self.place and self.place != self.seller_state)

    def fields(self) -> dict[str, str]:
        """What a sale payload records of it (keys absent when empty)."""
        out = {
            "seller_gstin": self.seller_gstin,
            "seller_state": self.seller_state,
            "place_of_supply": self.place,
            "buyer_gstin": self.buyer_gstin,
        }
        return {k: v for k, v in out.items() if v}

    @classmethod
    def of(cls, payload: Mapping[str, Any]) -> Supply:
        """The supply a sale payload recorded; a sale made before GST invoices: intra-state."""

        def text(key: str) -> str:
            value = payload.get(key)
            return value if isinstance(value, str) else ""

        return cls(
            text("seller_state"),
            text("place_of_supply") or text("seller_state"),
            text("seller_gstin"),
            text("buyer_gstin"),
        )


def supply(
    seller_state: str,
    seller_gstin: str = "",
    buyer_gstin: str | None = None,
    buyer_state: str | None = None,
) -> Supply:
    """The supply of one sale. The place of supply is the buyer's state when the cashier records
    it (goods delivered there) or the buyer's GSTIN names one; otherwise the store's own."""
    gstin = check_gstin(buyer_gstin, "buyer GSTIN") if buyer_gstin else ""
    place = state_code(buyer_state, "buyer state") if buyer_state else gstin[:2]
    if place and not seller_state:
        raise InputError(
            "the store's state is not set: put `state` (or a `gstin`) in [store] of "
            "meshpos.toml, so a sale to another state can carry IGST"
        )
    if gstin and seller_gstin and gstin == seller_gstin:
        raise InputError(f"buyer GSTIN {gstin} is the store's own")
    return Supply(seller_state, place or seller_state, seller_gstin, gstin)


@dataclass(frozen=True)
class LineTax:
    """The tax a line carries: taxable value plus the tax heads, which sum to its total."""

    taxable: int
    cgst: int = 0
    sgst: int = 0
    igst: int = 0

    @property
    def tax(self) -> int:
        return self.cgst + self.sgst + self.igst

    def __add__(self, other: LineTax) -> LineTax:
        return LineTax(
            self.taxable + other.taxable,
            self.cgst + other.cgst,
            self.sgst + other.sgst,
            self.igst + other.igst,
        )


def _round_div(num: int, den: int) -> int:
    """num / den rounded half away from zero."""
    q = (2 * abs(num) + den) // (2 * den)
    return q if num >= 0 else -q


def split(total: int, rate_bp: int, inter_state: bool) -> LineTax:
    """The tax in a tax-inclusive `total` at `rate_bp`: IGST at the full rate, or CGST and SGST
    each at half the rate on the same taxable value, so the two halves are always equal (an odd
    paisa stays in the taxable value). Rounded to the paisa."""
    if rate_bp <= 0:
        return LineTax(total)
    if inter_state:
        igst = _round_div(total * rate_bp, 10000 + rate_bp)
        return LineTax(total - igst, igst=igst)
    half = _round_div(total * rate_bp, 2 * (10000 + rate_bp))
    return LineTax(total - 2 * half, half, half)


def recorded_split(line: Mapping[str, Any], inter_state: bool) -> LineTax:
    """The split of a recorded sale line: its own cgst/sgst/igst when it carries them; for a sale
    recorded before meshpos split GST, its one `tax` halved, the odd paisa to CGST."""
    total = int(line.get("total") or 0)
    heads = [line.get(k) for k in ("cgst", "sgst", "igst")]
    if all(type(h) is int for h in heads):
        cgst, sgst, igst = (int(h) for h in heads)  # type: ignore[arg-type]
        return LineTax(total - cgst - sgst - igst, cgst, sgst, igst)
    tax = int(line.get("tax") or 0)
    if inter_state:
        return LineTax(total - tax, igst=tax)
    sgst = tax // 2 if tax >= 0 else -(-tax // 2)
    return LineTax(total - tax, tax - sgst, sgst)


def invoice_tax(payload: Mapping[str, Any]) -> LineTax:
    """The tax heads of a sale, return or exchange payload: the sums of its lines, less those of
    the goods an exchange takes back (so a payload's totals are its lines' by construction)."""
    inter = Supply.of(payload).inter_state
    total = LineTax(0)
    for key, sign in (("lines", 1), ("returned", -1)):
        for line in payload.get(key) or ():
            t = recorded_split(line, inter)
            total += LineTax(sign * t.taxable, sign * t.cgst, sign * t.sgst, sign * t.igst)
    return total


def heads_text(cgst: int, sgst: int, igst: int) -> str:
    """'CGST ₹59.48 + SGST ₹59.48', 'IGST ₹118.96' (both when an exchange mixes them)."""
    parts = [f"{name} {rupees(v)}" for name, v in (("CGST", cgst), ("SGST", sgst)) if v]
    if igst or not parts:
        parts.append(f"IGST {rupees(igst)}")
    return " + ".join(parts)


def share(t: LineTax, amount: int, done: int, qty: int, sold: int) -> LineTax:
    """The part of a line's tax that `qty` more of its `sold` pieces carry once `done` came back
    and the refund is `amount`: each head shared like the line's total, cumulatively, so a line
    returned in parts gives back exactly its tax."""

    cgst, sgst, igst = (portion(v, sold, done, qty) for v in (t.cgst, t.sgst, t.igst))
    return LineTax(amount - cgst - sgst - igst, cgst, sgst, igst)
