"""The terminal service layer: every business action a till, the CLI or the web page can take.

It wires the pure rules (domain/, ledger/fold) to one node's ledger, key and clock. No business rule
lives in the CLI or the web page; they call these methods. Time comes from an injected `now_ms` so
the simulator and tests can drive it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from meshpos.core.clock import HLC, wall_ms
from meshpos.core.clock import pack as pack_hlc
from meshpos.core.errors import InputError, LocalError, NotFound, RemoteError
from meshpos.core.ops import Op, Payload, Signer
from meshpos.domain import giftcards
from meshpos.domain.authority import spends_of
from meshpos.domain.cards import detach_sealed
from meshpos.domain.catalog import CatalogRow
from meshpos.domain.enrolment import NodeRecord, admit_record
from meshpos.domain.escrow import EscrowShortfall
from meshpos.domain.gst import (
    BANDS_SETTING,
    Bands,
    GstRules,
    LineTax,
    Supply,
    invoice_tax,
    parse_bands,
    recorded_split,
    share,
    supply,
)
from meshpos.domain.money import portion, rupees
from meshpos.domain.pricing import (
    CartLine,
    LoyaltyRule,
    PricedSale,
    Product,
    Tender,
    price_lines,
    settle,
)
from meshpos.domain.revocation import Revoked
from meshpos.domain.staff import Credential
from meshpos.domain.storetime import SETTING as TIMEZONE_SETTING
from meshpos.domain.storetime import StoreTime
from meshpos.ledger.fold import CARD_FLOAT, CLOCK_AHEAD, CUSTOMER_FIELDS
from meshpos.ledger.store import IngestResult, Ledger
from meshpos.service import cards
from meshpos.service.cards import CardInput
from meshpos.service.config import NodeConfig, load_config, load_signer, resolve_dir
from meshpos.service.encryption import storage_key
from meshpos.service.staff import authorize
from meshpos.sync.bundle import decode_bundle, encode_bundle


@dataclass(frozen=True)
class SaleResult:
    op: Op
    payload: dict[str, Any]

    @property
    def sale_id(self) -> str:
        return str(self.payload["sale_id"])


DEFAULT_SKEW_MS = 300_000


class OversellNotConfirmed(LocalError):
    """A sale of more than this counter sees in stock, not confirmed by the cashier. Stock can
    be wrong (a delivery not yet received, a miscount), and goods in the customer's hand are
    real: the cashier may confirm and sell (a supervisor above `staff.oversell_limit` units)."""

    def __init__(self, over: Mapping[str, tuple[int, int]]) -> None:
        self.over = dict(over)
        parts = ", ".join(
            f"{sku} {want} asked, {max(have, 0)} in stock" for sku, (want, have) in over.items()
        )
        super().__init__(
            f"more than this counter has in stock ({parts}): sell anyway only if the goods are "
            "in hand"
        )


def units_beyond(over: Mapping[str, tuple[int, int]]) -> dict[str, int]:
    """Per SKU, the units a sale takes beyond the stock seen (what a sale's `oversold` says)."""
    return {sku: want - max(have, 0) for sku, (want, have) in over.items()}


REFUND_METHODS = ("cash", "card", "points", "credit_note")

RecordHook = Callable[["Terminal", Op, dict[str, Any]], None]
"""Called with (terminal, op, payload) inside the transaction that records a sale, return or
exchange, so a side table (the print queue) commits or rolls back with the op."""


class Terminal:
    """One node's service layer over its ledger, key and clock.

    `on_record` hooks run inside the transaction of every sale, return and exchange this terminal
    records (the print queue's `queue_receipt`); they are this terminal's own, given when it is
    made."""

    def __init__(
        self,
        cfg: NodeConfig,
        signer: Signer,
        ledger: Ledger,
        now_ms: Callable[[], int] = wall_ms,
        *,
        on_record: Sequence[RecordHook] = (),
    ) -> None:
        self.cfg = cfg
        self.signer = signer
        self.ledger = ledger
        self.now_ms = now_ms
        self.clock = HLC(self._followed_hlc())
        self.on_record = tuple(on_record)
        # PIN-backed credentials that may approve this terminal's ops (meshpos/service/staff.py).
        self.credentials: list[Credential] = []
        if ledger.public_key(signer.node_id) is None:
            ledger.add_node(self.node_record())

    @classmethod
    def open(
        cls,
        directory: str | Path | None = None,
        *,
        now_ms: Callable[[], int] = wall_ms,
        on_record: Sequence[RecordHook] = (),
    ) -> Terminal:
        """The terminal of a node directory (its database encrypted when meshpos.toml says so)."""
        cfg = load_config(resolve_dir(directory))
        signer = load_signer(cfg)
        key = storage_key(cfg)
        lost = not cfg.db_path.exists() and (cfg.dir / "node.cert").exists()
        ledger = Ledger(cfg.db_path, cfg.store, key=key)
        terminal = cls(cfg, signer, ledger, now_ms, on_record=on_record)
        if lost:
            terminal.set_bootstrapping(True)
        return terminal

    # -- a terminal whose database was lost ------------------------------------------------------

    def set_bootstrapping(self, on: bool) -> None:
        """An enrolled terminal that lost its database must not sign anything until its peers
        gave it back its own earlier ops: it would reuse seq numbers (a fork peers refuse) and
        could grant loyalty rights it already spent. The daemon clears this once caught up."""
        self.ledger.set_bootstrapping(on)

    def bootstrapping(self) -> bool:
        return self.ledger.bootstrapping()

    def close(self) -> None:
        self.ledger.close()

    def revoked(self) -> Revoked | None:
        """This terminal's revocation, once it heard of it: from the op itself, or from a peer
        that refused it for it (meshpos/domain/revocation.py)."""
        return self.ledger.revocations().get(self.node_id) or self.ledger.revoked_notice()

    def node_record(self) -> NodeRecord:
        return NodeRecord(
            self.signer.node_id, self.signer.public_key, self.cfg.store, self.cfg.name
        )

    @property
    def node_id(self) -> str:
        return self.signer.node_id

    # -- ops ------------------------------------------------------------------------------------

    def append(self, kind: str, payload: Payload, user: str | None = None) -> Op:
        """Record a local op; joins the caller's transaction if there is one."""
        with self.ledger.write():
            if self.bootstrapping():
                raise LocalError(
                    "this terminal lost its database and is getting its history back from its "
                    "peers; it can sell again once `meshpos status` shows it caught up "
                    "(start `meshpos node run` with a peer reachable)"
                )
            revoked = self.revoked()
            if revoked is not None:
                raise LocalError(
                    f"this terminal was revoked by the store ({revoked.reason}): it can no "
                    "longer sell or record anything. Ask the store's manager; a replacement "
                    "terminal is enrolled afresh"
                )
            hlc = self.clock.observe(self._followed_hlc(), self.now_ms())
            spent = spends_of(kind, payload)
            if spent:
                # A spend is stamped after the grants it spends, as the escrow rule orders them,
                # however fast the granting clock; this op only: the clock does not follow.
                hlc = max(hlc, self._granted_hlc(spent) + 1)
            acting = user or self.cfg.user
            # Sealed card data travels beside the op, its hash in the signed body, so it can be
            # deleted once HQ answered (meshpos/domain/cards.py).
            payload, sealed = detach_sealed(kind, payload)
            payload = authorize(self, kind, payload, acting, hlc)  # staff permissions
            return self.ledger.append(
                self.signer, kind=kind, payload=payload, user=acting, hlc=hlc, sealed=sealed
            )

    def ingest(self, ops: Sequence[Op], nodes: Sequence[NodeRecord] = ()) -> IngestResult:
        result = self.ledger.ingest(ops, nodes)
        if result.max_hlc:
            self.clock.observe(self._followed_hlc(), self.now_ms())
        return result

    def _granted_hlc(self, customers: Iterable[str]) -> int:
        """The latest stamp among the grants of these customers' rights this node holds: to
        it, and to nodes retired into it with their retirement (meshpos/domain/revocation.py)."""
        views = self.ledger.views
        found = views.credits_hlc(customers, self.node_id)
        for old, rev in self.ledger.revocations().items():
            if rev.to == self.node_id:
                found = max(found, rev.hlc, views.credits_hlc(customers, old))
        return found

    @property
    def max_skew_ms(self) -> int:
        """How far ahead of this clock another node's stamp may be and still be followed
        (`[mesh] max_skew_ms`, 5 minutes by default)."""
        value = self.cfg.section("mesh").get("max_skew_ms", DEFAULT_SKEW_MS)
        return value if type(value) is int and value >= 0 else DEFAULT_SKEW_MS

    def _followed_hlc(self) -> int:
        """The highest HLC this node's clock follows: the ops stamped at most `max_skew_ms`
        ahead of its wall clock (its own too: a clock set right returns to the right time).
        One fast clock in the store does not drag everyone's HLC ahead (it is flagged instead:
        meshpos/service/clocks.py)."""
        return self.ledger.max_hlc(below=pack_hlc(self.now_ms() + self.max_skew_ms + 1, 0))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows of a read on the views, as dicts keyed by column name."""
        rows: list[Any] = self.ledger.query(sql, params)
        return rows

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.ledger.write():
            yield

    # -- catalogue ------------------------------------------------------------------------------

    def import_catalog(
        self,
        rows: Sequence[CatalogRow],
        user: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[int, int]:
        """One product op per row. The stock column is opening stock: it is received only for
        products new to the catalogue, so re-importing a price list does not double the stock.
        All or nothing."""
        products = receipts = 0
        with self.transaction():
            known = self.ledger.views.skus()
            for i, row in enumerate(rows):
                self.append("product.upsert", {"sku": row.sku, "fields": row.fields}, user)
                products += 1
                if row.stock and row.sku not in known:
                    self.append(
                        "stock.receive",
                        {"sku": row.sku, "delta": row.stock, "reason": "catalogue import"},
                        user,
                    )
                    receipts += 1
                if progress:
                    progress(i + 1)
        return products, receipts

    def product(self, code: str) -> Product:
        """The product with SKU or barcode `code`, with the GST bands in force for it."""
        row = self.ledger.views.product(code)
        if row is None:
            raise NotFound(f"unknown product {code!r}: no SKU or barcode matches")
        p = Product.from_row(row)
        return replace(p, gst_bands=self.gst_rules().for_product(p.category, p.hsn))

    def products(self, search: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        return self.ledger.views.products(search, limit)

    def set_price(self, code: str, price: int, user: str | None = None) -> Op:
        sku = self.product(code).sku
        if price < 0:
            raise InputError("price must be >= 0")
        return self.append("product.upsert", {"sku": sku, "fields": {"price": price}}, user)

    # -- stock ----------------------------------------------------------------------------------

    def stock(self, sku: str | None = None) -> list[dict[str, Any]]:
        return self.ledger.views.stock(self.product(sku).sku if sku is not None else None)

    def stock_by_counter(self, sku: str | None = None) -> list[dict[str, Any]]:
        """`stock`, each row with `by_counter`: what each counter's ops moved (receipts +, sales
        -), by counter name; the amounts add up to `qty`."""
        rows = self.stock(sku)
        names = {n.node_id: n.name for n in self.ledger.nodes()}
        moved = self.ledger.views.stock_by_counter([rows[0]["sku"]] if sku is not None else None)
        return [
            {**row, "by_counter": {
                names.get(origin, origin): qty
                for origin, qty in sorted(moved.get(row["sku"], {}).items(),
                                          key=lambda kv: names.get(kv[0], kv[0]))
            }}
            for row in rows
        ]  # fmt: skip

    def move_stock(
        self, kind: str, code: str, qty: int, reason: str, user: str | None = None
    ) -> Op:
        sku = self.product(code).sku
        if not reason.strip():
            raise InputError("a stock change needs a reason (--reason)")
        if kind == "receive" and qty <= 0:
            raise InputError(f"received quantity must be positive, got {qty}")
        if kind == "adjust" and qty == 0:
            raise InputError("an adjustment of 0 changes nothing")
        return self.append(f"stock.{kind}", {"sku": sku, "delta": qty, "reason": reason}, user)

    # -- customers and loyalty ------------------------------------------------------------------

    def add_customer(self, fields: Mapping[str, str | None], user: str | None = None) -> str:
        clean = self._customer_fields(fields)
        if not clean.get("name"):
            raise InputError("a customer needs a name (--name)")
        if clean.get("phone") and self.ledger.views.phone_taken(clean["phone"]):
            raise InputError(f"a customer with phone {clean['phone']} already exists")
        with self.transaction():
            seq = self.ledger.head(self.node_id)[0] + 1
            cid = f"C{self.node_id[:6]}{seq}"
            self.append("customer.upsert", {"customer_id": cid, "fields": clean}, user)
        return cid

    def edit_customer(
        self, code: str, fields: Mapping[str, str | None], user: str | None = None
    ) -> Op:
        cid = self.customer(code)["customer_id"]
        clean = self._customer_fields(fields)
        if not clean:
            raise InputError("nothing to change: give --name, --phone or --email")
        if "name" in clean and not clean["name"]:
            raise InputError("a customer's name cannot be empty")
        if clean.get("phone") and self.ledger.views.phone_taken(clean["phone"], cid):
            raise InputError(f"a customer with phone {clean['phone']} already exists")
        return self.append("customer.upsert", {"customer_id": cid, "fields": clean}, user)

    @staticmethod
    def _customer_fields(fields: Mapping[str, str | None]) -> dict[str, str]:
        out = {}
        for key, value in fields.items():
            if value is None:
                continue
            if key not in CUSTOMER_FIELDS:
                raise InputError(f"unknown customer field {key!r}")
            value = value.strip()
            if key == "phone" and value and not value.lstrip("+").isdigit():
                raise InputError(f"phone {value!r} must be digits")
            if key == "email" and value and "@" not in value:
                raise InputError(f"email {value!r} is not an email address")
            out[key] = value
        return out

    def customer(self, cid: str) -> dict[str, Any]:
        row = self.ledger.views.customer(cid)
        if row is None:
            raise NotFound(f"unknown customer {cid!r}")
        return row

    def points(self, cid: str) -> int:
        return int(self.customer(cid)["points"])

    def loyalty_rule(self) -> LoyaltyRule:
        settings = self.ledger.views.settings("loyalty.")
        return LoyaltyRule(
            earn_per_100=int(settings.get("loyalty.earn_per_100", self.cfg.earn_per_100)),
            point_value=int(settings.get("loyalty.point_value", self.cfg.point_value)),
        )

    # -- store time and GST ---------------------------------------------------------------------

    def store_time(self) -> StoreTime:
        """The store's time zone: the `store.timezone` setting (from HQ) over `[store] timezone`.
        The one thing to ask for any time a person reads (reports, receipts, the till's clock:
        `t.store_time().clock(t.now_ms())`)."""
        name = self.ledger.views.settings(TIMEZONE_SETTING).get(TIMEZONE_SETTING)
        if isinstance(name, str):
            try:
                return StoreTime.named(name)
            except InputError:
                pass  # a zone this machine does not know: keep the configured one
        return StoreTime.named(self.cfg.timezone)

    def gst_rules(self) -> GstRules:
        """GST price bands in force: the law's defaults, `[gst.bands]` over them, and
        `gst.bands.<key>` settings (from HQ) over both; a null setting removes a key's bands."""
        overrides: dict[str, Bands | None] = dict(self.cfg.gst_bands)
        for key, value in self.ledger.views.settings(BANDS_SETTING).items():
            try:
                overrides[key[len(BANDS_SETTING) :]] = (
                    None if value is None else parse_bands(value, key)
                )
            except InputError:
                continue  # unreadable here: the other sources stand
        return GstRules().merged(overrides)

    def supply(self, buyer_gstin: str | None = None, buyer_state: str | None = None) -> Supply:
        """Where a sale is supplied: within the store's state unless the buyer is elsewhere."""
        return supply(self.cfg.state, self.cfg.gstin, buyer_gstin, buyer_state)

    # -- sales, returns, exchanges --------------------------------------------------------------

    def cart(
        self, items: Sequence[tuple[str, int]], line_discounts: Mapping[str, str]
    ) -> list[CartLine]:
        lines = [CartLine(self.product(code), qty) for code, qty in items]
        unknown = set(line_discounts) - {c.product.sku for c in lines}
        if unknown:
            raise InputError(f"discount names SKU(s) not in the sale: {', '.join(sorted(unknown))}")
        return [CartLine(c.product, c.qty, line_discounts.get(c.product.sku)) for c in lines]

    def beyond_stock(
        self, lines: Sequence[Mapping[str, Any]], back: Mapping[str, int] | None = None
    ) -> dict[str, tuple[int, int]]:
        """SKUs of priced `lines` asked beyond the stock this counter sees (plus what comes back
        in the same exchange): sku -> (asked, in stock)."""
        asked: dict[str, int] = {}
        for line in lines:
            asked[line["sku"]] = asked.get(line["sku"], 0) + int(line["qty"])
        out = {}
        for sku, want in asked.items():
            have = self.ledger.views.stock_qty(sku) + (back or {}).get(sku, 0)
            if want > have:
                out[sku] = (want, have)
        return out

    def _oversell(
        self, lines: Sequence[Mapping[str, Any]], allow: bool, back: Mapping[str, int] | None = None
    ) -> dict[str, Any]:
        """The `oversold` a payload carries; refused unless the cashier confirmed it."""
        over = self.beyond_stock(lines, back)
        if over and not allow:
            raise OversellNotConfirmed(over)
        return {"oversold": units_beyond(over)} if over else {}

    def check_redeem(self, customer_id: str, points: int) -> None:
        """Refuse redeeming more of a customer's points than this counter holds rights to (the
        loyalty escrow): EscrowShortfall says who holds the rest."""
        held = self.rights(customer_id)
        if points > max(held, 0):
            raise EscrowShortfall(customer_id, points, held, self.rights_elsewhere(customer_id))

    # -- gift cards and credit notes ------------------------------------------------------------

    def giftcard(self, text: str) -> giftcards.CardState:
        """A gift card or credit note by its code as typed or scanned."""
        code = giftcards.parse_code(text)
        issued = self.ledger.giftcards.issued(code)
        balance = self.ledger.giftcards.balance(code)
        if issued is None and balance == 0 and self.rights(giftcards.escrow_key(code)) == 0:
            raise NotFound(
                f"{giftcards.LABELS[giftcards.kind_of(code)]} {code} is not known at this store: "
                "check the code; another store's card is spent by naming the amount, and its "
                "balance is asked of HQ"
            )
        return giftcards.CardState.of_register(code, issued or {}, balance)

    def giftcard_balances(self, tenders: Sequence[Tender]) -> dict[str, int]:
        """The balances of the cards among `tenders`, for `settle` (a card with no amount pays
        as much as its balance covers). Codes are checked here: a typo is refused at once."""
        out = {}
        for t in tenders:
            if t.method == giftcards.TENDER:
                code = giftcards.parse_code(t.code or "")
                try:
                    state = self.giftcard(code)
                except NotFound:
                    if t.amount is None:
                        raise
                    out[t.code or ""] = t.amount  # another store's: asked of HQ when spent
                    continue
                self._spendable(state)  # before any amount is asked for: none makes it so
                if state.store and t.amount is not None:
                    out[t.code or ""] = max(t.amount, state.balance)  # the rest asked of HQ
                elif state.store and state.balance <= 0:
                    raise InputError(
                        f"{state.label} {code} was issued in store {state.store}: name the "
                        "amount to spend from it (its balance is asked of HQ)"
                    )
                else:
                    out[t.code or ""] = state.balance
        return out

    def _spendable(self, state: giftcards.CardState) -> None:
        """Refuse a card that cannot be spent now whatever its balance (expired): the one rule,
        `CardState.refusal`, in the store's calendar."""
        refused = state.refusal(self.now_ms(), self.store_time().day)
        if refused:
            raise InputError(refused)

    def check_giftcards(self, tenders: Sequence[Mapping[str, Any]]) -> None:
        """Refuse spending an expired card, more than its balance, or more than this counter
        holds rights to (escrow: EscrowShortfall names who holds the rest)."""
        for key, amount in giftcards.spent_by(list(tenders)).items():
            try:
                state = self.giftcard(giftcards.code_of(key))
            except NotFound:
                # Another store's card: its balance reaches this counter through HQ (the escrow
                # ask goes to the peers, then to HQ through the relay), as for loyalty.
                raise EscrowShortfall(key, amount, 0, {}) from None
            self._spendable(state)
            if amount > state.balance and state.store:
                # Another store's card HQ told this store of: the rest is asked of HQ.
                raise EscrowShortfall(key, amount, self.rights(key), self.rights_elsewhere(key))
            if amount > state.balance:
                raise InputError(
                    f"{state.label} {state.code} has {rupees(state.balance)} left; "
                    f"{rupees(amount)} cannot be spent"
                )
            held = self.rights(key)
            if amount > max(held, 0):
                raise EscrowShortfall(key, amount, held, self.rights_elsewhere(key))

    def _credit_note(self, amount: int) -> dict[str, Any]:
        """The tender of a refund paid as a new credit note of `amount` paise."""
        kind = giftcards.CREDIT_NOTE
        digits = "".join(secrets.choice("0123456789") for _ in range(giftcards.DIGITS))
        days = int(self.cfg.section("giftcards").get("credit_note_days", 180))
        return {
            "method": kind,
            "amount": amount,
            "code": giftcards.make_code(kind, digits),
            "expires_ms": giftcards.expiry(self.now_ms(), days),
        }

    def sale_id_of(self, number: int) -> str:
        """The id of this terminal's sale, return or exchange with receipt number `number`
        (`ledger.views.next_number` gives the next one)."""
        return f"{self.cfg.store}-{self.cfg.name}-{number:06d}"

    def _record(
        self,
        kind: str,
        priced: PricedSale,
        customer: str | None,
        user: str | None,
        extra: Mapping[str, Any],
        place: Supply | None = None,
    ) -> SaleResult:
        """Record a priced sale, return or exchange; `place`: its supply (default: within the
        store's state)."""
        place = place or self.supply()
        with self.transaction():
            paper = extra.get("paper")
            # a paper entry takes no receipt number: the terminal's stay gapless
            number = 0 if paper else self.ledger.views.next_number(self.node_id)
            sale_id = str(paper["id"]) if paper else self.sale_id_of(number)
            payload: dict[str, Any] = {
                "sale_id": sale_id,
                "receipt": sale_id.removeprefix(f"{self.cfg.store}-"),
                "number": number,
                "terminal": self.cfg.name,
                "customer": customer,
                "lines": priced.lines,
                "subtotal": priced.subtotal,
                "discount": priced.discount,
                "tax": priced.tax,
                "total": priced.total,
                "tenders": priced.tenders,
                "points_earned": priced.points_earned,
                "points_redeemed": priced.points_redeemed,
                "ts_ms": int(paper["written_ms"]) if paper else self.now_ms(),
                **place.fields(),
                **extra,
            }
            tax = invoice_tax(payload)
            payload.update(cgst=tax.cgst, sgst=tax.sgst, igst=tax.igst)
            op = self.append(kind, payload, user)
            for hook in self.on_record:
                hook(self, op, dict(op.payload))
        return SaleResult(op, dict(op.payload))

    def sell(
        self,
        items: Sequence[tuple[str, int]],
        *,
        tenders: Sequence[Tender] = (),
        customer: str | None = None,
        discount: str | None = None,
        line_discounts: Mapping[str, str] | None = None,
        user: str | None = None,
        card: CardInput | None = None,
        buyer_gstin: str | None = None,
        buyer_state: str | None = None,
        allow_oversell: bool = False,
        paper: Mapping[str, Any] | None = None,
    ) -> SaleResult:
        """`card`: a card read at the till (it pays the whole sale unless `tenders` say otherwise),
        sealed here to HQ's key for the card tender's amount (meshpos/service/cards.py); sealed card
        tenders must fit the offline floor limits, and every card tender says its kind.
        `buyer_gstin`: a registered buyer's GSTIN, printed on the invoice (a B2B sale); with
        `buyer_state` (the state the goods go to) it decides IGST or CGST + SGST.
        `allow_oversell`: the cashier confirmed selling beyond the stock this counter sees (the
        sale records how far, and beyond `staff.oversell_limit` units it needs a supervisor).
        `paper`: a sale written on a paper slip, entered now (meshpos/service/paper.py): its own
        id and number, and the time written on the slip."""
        if card is not None and not tenders:
            tenders = [Tender("card")]
        place = self.supply(buyer_gstin, buyer_state)
        with self.transaction():
            cid = self.customer(customer)["customer_id"] if customer else None
            priced = price_lines(self.cart(items, line_discounts or {}), discount, place)
            balance = self.points(cid) if cid else 0
            held = self.rights(cid) if cid else 0
            if any(t.method == "points" and t.amount is None for t in tenders):
                balance = min(balance, held)
            settled = settle(
                priced,
                tenders,
                self.loyalty_rule(),
                customer=cid,
                points_balance=balance,
                card_balances=self.giftcard_balances(tenders),
            )
            if card is not None:
                settled = cards.seal_tenders(self, settled, card)
            cards.check_sale(self, settled)
            self.check_giftcards(settled.tenders)
            if cid:
                self.check_redeem(cid, settled.points_redeemed)
            extra = {"ref_sale": None, **self._oversell(settled.lines, allow_oversell)}
            if paper is not None:
                extra["paper"] = dict(paper)
            return self._record("sale", settled, cid, user, extra, place)

    # -- loyalty escrow -------------------------------------------------------------------------

    def rights(self, customer_id: str, node: str | None = None) -> int:
        """Points of this customer that `node` (default: this terminal) may redeem."""
        return self.ledger.views.spendable(customer_id, node or self.node_id)

    def rights_elsewhere(self, customer_id: str) -> dict[str, int]:
        """Rights to this customer's points held by other counters, by name."""
        return self.ledger.views.rights_elsewhere(customer_id, self.node_id)

    def grant_rights(self, customer_id: str, to: str, wanted: int, user: str | None = None) -> int:
        """Hand up to `wanted` of this terminal's redemption rights to node `to`; returns how many
        were granted (0 when this terminal holds none). The card float stays among the store's
        counters: it is never handed to HQ, which moves loyalty between stores, not float."""
        with self.transaction():
            points = min(wanted, self.rights(customer_id))
            if points <= 0 or to == self.node_id:
                return 0
            if customer_id == CARD_FLOAT and to in self.ledger.hq_origins():
                return 0
            self.append(
                "escrow.transfer", {"customer_id": customer_id, "to": to, "points": points}, user
            )
            return points

    def sale(self, sale_id: str) -> dict[str, Any]:
        rows = self.ledger.views.sales(sale_id)
        if not rows:
            raise NotFound(f"unknown sale {sale_id!r}")
        if len({r["sale_id"] for r in rows}) > 1:
            raise InputError(f"sale {sale_id!r} is ambiguous: give the full sale id")
        sale = rows[0]
        op = self.ledger.get(sale["origin"], sale["seq"])
        assert op is not None
        sale["payload"] = dict(op.payload)
        return sale

    def returnable(self, sale_id: str) -> dict[str, dict[str, Any]]:
        """Per SKU of a sale: what was sold (qty, refund per unit) and what may still come back."""
        sale = self.sale(sale_id)
        inter = Supply.of(sale["payload"]).inter_state
        out: dict[str, dict[str, Any]] = {}
        for line in sale["payload"]["lines"]:
            entry = out.setdefault(
                line["sku"],
                {"line": line, "qty": 0, "total": 0, "tax": LineTax(0), "returned": 0},
            )
            entry["qty"] += line["qty"]
            entry["total"] += line["total"]
            entry["tax"] += recorded_split(line, inter)
        for sku, qty in self.ledger.views.returned(sale["sale_id"]).items():
            if sku in out:
                out[sku]["returned"] = qty
        return out

    def _refund_lines(
        self, sale_id: str, items: Sequence[tuple[str, int]]
    ) -> tuple[str, list[dict[str, Any]], int]:
        if not items:
            raise InputError("name at least one item to return")
        sale = self.sale(sale_id)
        avail = self.returnable(sale_id)
        wanted: dict[str, int] = {}
        for code, qty in items:
            sku = code if code in avail else self.product(code).sku
            wanted[sku] = wanted.get(sku, 0) + qty
        lines = []
        for sku, qty in wanted.items():
            if sku not in avail:
                raise InputError(f"sale {sale['sale_id']} has no {sku}")
            entry = avail[sku]
            left = entry["qty"] - entry["returned"]
            if qty > left:
                raise InputError(
                    f"sale {sale['sale_id']}: only {left} of {sku} can still be returned, not {qty}"
                )
            line = dict(entry["line"])
            total = portion(entry["total"], entry["qty"], entry["returned"], qty)
            tax = share(entry["tax"], total, entry["returned"], qty, entry["qty"])
            line.update(qty=qty, total=total, discount=line["unit_price"] * qty - total)
            line.update(tax=tax.tax, cgst=tax.cgst, sgst=tax.sgst, igst=tax.igst)
            lines.append(line)
        return sale["sale_id"], lines, sale["payload"].get("points_earned", 0)

    def return_items(
        self,
        sale_id: str,
        items: Sequence[tuple[str, int]],
        *,
        refund: str = "cash",
        user: str | None = None,
    ) -> SaleResult:
        refund = refund.replace("-", "_")
        if refund not in REFUND_METHODS:
            raise InputError(f"refund method {refund!r} must be cash, card, points or credit note")
        with self.transaction():
            ref, lines, earned = self._refund_lines(sale_id, items)
            orig = self.sale(ref)
            total = sum(ln["total"] for ln in lines)
            customer = orig["customer_id"]
            if refund == "points" and not customer:
                raise InputError("a refund to points needs a sale with a customer")
            tenders, points_back, clawback = self._refund_tenders(orig, total, earned, refund)
            priced = PricedSale(
                lines=lines,
                subtotal=sum(ln["unit_price"] * ln["qty"] for ln in lines),
                discount=sum(ln["discount"] for ln in lines),
                tax=sum(ln["tax"] for ln in lines),
                total=total,
                tenders=tenders,
                points_earned=-clawback,
                points_redeemed=-points_back,
            )
            return self._record(
                "return", priced, customer, user, {"ref_sale": ref}, Supply.of(orig["payload"])
            )

    def _refund_tenders(
        self, orig: Mapping[str, Any], total: int, earned: int, refund: str
    ) -> tuple[list[dict[str, Any]], int, int]:
        """How `total` of a sale goes back: the share paid with points returns as points, the
        share paid with gift cards as a credit note, the rest by `refund`; and the share of the
        points it earned to take back. Shares are counted on the running refunded total, so a
        sale returned in parts gives back exactly what it took."""
        sold = int(orig["total"])
        before = min(self.ledger.views.refunded(orig["sale_id"]), sold)
        now = min(total, sold - before)
        paid = [t for t in orig["payload"]["tenders"] if t["method"] == "points"]

        def part(amount: int) -> int:
            return portion(amount, sold, before, now) if sold > 0 else 0

        points = part(sum(int(t.get("points", 0)) for t in paid))
        tenders: list[dict[str, Any]] = []
        if points:
            tenders.append(
                {
                    "method": "points",
                    "amount": part(sum(t["amount"] for t in paid)),
                    "points": points,
                }
            )
        # The share paid with gift cards or credit notes never goes back as cash: it comes
        # back as a credit note (with the rest, when that is refunded as one too).
        stored = [t for t in orig["payload"]["tenders"] if t["method"] == giftcards.TENDER]
        rest = total - sum(t["amount"] for t in tenders)
        note = rest if refund == giftcards.CREDIT_NOTE else part(sum(t["amount"] for t in stored))
        if note > 0 and rest > 0:
            tenders.append(self._credit_note(min(note, rest)))
            rest -= min(note, rest)
        if rest or not tenders:
            tender: dict[str, Any] = {"method": refund, "amount": rest}
            if refund == "points":
                tender["points"] = -(-rest // self.loyalty_rule().point_value)
                points += tender["points"]
            tenders.append(tender)
        return tenders, points, part(earned)

    def exchange(
        self,
        sale_id: str,
        back: Sequence[tuple[str, int]],
        take: Sequence[tuple[str, int]],
        *,
        tenders: Sequence[Tender] = (),
        user: str | None = None,
        card: CardInput | None = None,
        allow_oversell: bool = False,
        refund: str = "cash",
    ) -> SaleResult:
        """Items of an earlier sale come back, others go out; the difference is paid (cash, the
        card machine, a gift card, or a card captured here: `card`, as in `sell`) or refunded by
        `refund`: cash, or a new credit note."""
        refund = refund.replace("-", "_")
        if refund not in ("cash", giftcards.CREDIT_NOTE):
            raise InputError(f"an exchange refunds cash or a credit note, not {refund!r}")
        with self.transaction():
            ref, returned, _ = self._refund_lines(sale_id, back)
            orig = self.sale(ref)
            place = Supply.of(orig["payload"])
            new = price_lines(self.cart(take, {}), None, place)
            credit = sum(ln["total"] for ln in returned)
            net = new.total - credit
            if net > 0:
                due = PricedSale(new.lines, new.subtotal, new.discount, new.tax, net)
                if card is not None and not tenders:
                    tenders = [Tender("card")]
                settled = settle(
                    due,
                    tenders,
                    self.loyalty_rule(),
                    customer=None,
                    card_balances=self.giftcard_balances(tenders),
                )
                if card is not None:
                    settled = cards.seal_tenders(self, settled, card)
                cards.check_sale(self, settled)
                self.check_giftcards(settled.tenders)
                paid = settled.tenders
            else:
                if tenders or card is not None:
                    raise InputError(
                        f"nothing is due on this exchange: the customer gets {rupees(-net)} "
                        "back, so it takes no payment"
                    )
                if net and refund == giftcards.CREDIT_NOTE:
                    note = self._credit_note(-net)
                    paid = [{**note, "amount": net}]
                else:
                    paid = [{"method": "cash", "amount": net}] if net else []
            back_qty = {ln["sku"]: int(ln["qty"]) for ln in returned}
            priced = PricedSale(
                lines=new.lines,
                subtotal=new.subtotal - sum(ln["unit_price"] * ln["qty"] for ln in returned),
                discount=new.discount - sum(ln["discount"] for ln in returned),
                tax=new.tax - sum(ln["tax"] for ln in returned),
                total=net,
                tenders=paid,
            )
            extra = {
                "ref_sale": ref,
                "returned": returned,
                **self._oversell(new.lines, allow_oversell, back_qty),
            }
            return self._record("exchange", priced, orig["customer_id"], user, extra, place)

    # -- conflicts ------------------------------------------------------------------------------

    def conflicts(self, status: str | None = "open") -> list[dict[str, Any]]:
        return self.ledger.views.conflicts(status)

    def resolve(
        self, conflict_id: str, note: str, *, adjust: int | None = None, user: str | None = None
    ) -> Op:
        found = self.ledger.views.conflict(conflict_id)
        if found is None:
            raise NotFound(f"unknown conflict {conflict_id!r}: see `meshpos conflicts list`")
        if found["status"] != "open":
            raise InputError(f"conflict {conflict_id} is already resolved")
        if not note.strip():
            raise InputError("a resolution needs a note saying what was done (--note)")
        kind, subject = found["kind"], found["subject"]
        with self.transaction():
            if adjust:
                if kind != "oversell":
                    raise InputError("--adjust applies only to oversell conflicts")
                self.move_stock("adjust", subject, adjust, f"resolve {conflict_id}: {note}", user)
            level = self._current_level(kind, subject)
            return self.append(
                "conflict.resolve",
                {"conflict_id": conflict_id, "note": note, "ack_level": level},
                user,
            )

    def _current_level(self, kind: str, subject: str) -> int | None:
        if kind == "oversell":
            return self.ledger.views.stock_qty(subject)
        if kind == "negative_points":
            return self.ledger.views.points(subject)
        if kind == "over_return":
            found = self.ledger.views.conflict(f"{kind}:{subject}")
            detail = found["detail"] if found else {}
            return int(sum(detail.get("excess", {}).values()))
        if kind == CLOCK_AHEAD:
            return self.ledger.views.register_hlc(CLOCK_AHEAD, subject) >> 16  # its wall ms
        return 0

    # -- sync by file ---------------------------------------------------------------------------

    def export_bundle(self, since: Mapping[str, int] | None = None) -> tuple[bytes, int]:
        raw = self.ledger.raw_since(since or {})
        data = encode_bundle(
            self.signer,
            self.cfg.store,
            self.ledger.nodes(),
            self.ledger.vv(),
            [(body, sig) for _, _, body, sig in raw],
            self.ledger.sealed_blobs(),
        )
        return data, len(raw)

    def import_bundle(self, data: bytes) -> IngestResult:
        bundle = decode_bundle(data, self.cfg.store)
        pinned = self.cfg.store_public_key
        if pinned is not None:
            for node in bundle.nodes:
                if self.ledger.public_key(node.node_id) == node.public_key and node.cert is None:
                    continue
                reason = admit_record(node, pinned, self.cfg.store)
                if reason is not None:
                    raise RemoteError(f"bundle lists node {node.name} ({node.node_id}): {reason}")
        return self.ingest(list(bundle.ops), list(bundle.nodes))
