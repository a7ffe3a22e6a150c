"""The HQ service layer: what `meshpos hq ...` and the HTTP API do, over an `HQStorage`.

Stateless between calls (everything lives in the database), so any number of HQ processes can
serve one chain. Time comes from an injected `now_ms`, the acquirer from an injected gateway.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypedDict

import zmq

from meshpos.core.clock import wall_ms
from meshpos.core.errors import ConfigError, EncodingError, InputError, LocalError, RemoteError
from meshpos.core.ops import Op, Payload, Signer, decode_op, pack, unpack
from meshpos.domain import revocation
from meshpos.domain.cards import (
    HQ_KEY_SETTING,
    AuthRequest,
    Gateway,
    SimulatedAcquirer,
    blocklist_key,
    open_card,
    parse_card,
)
from meshpos.domain.enrolment import NodeRecord, issue, make_request, read_certificate, read_request
from meshpos.domain.store_settings import check_setting
from meshpos.domain.upi import MISSING, Verdict, parse_settlement, reconcile
from meshpos.hq import keys
from meshpos.hq.storage import HQStorage, open_storage
from meshpos.hq.storage.database import Record, Tx
from meshpos.hq.storage.enrolment import NotEnrolled, StoreRow, UnknownStore
from meshpos.hq.storage.log import IngestOutcome, OpToSign, VersionVector
from meshpos.hq.storage.loyalty import Ask
from meshpos.hq.storage.payments import PaymentJob, PaymentOutcome
from meshpos.hq.wire import NodeRow, node_rows
from meshpos.ledger.fold import PRODUCT_FIELDS

# open_storage lives in meshpos.hq.storage; meshpos/cli/hq.py imports it from here.
__all__ = ["Enrolled", "HQService", "PullAnswer", "open_storage"]

log = logging.getLogger("meshpos.hq")


@dataclass(frozen=True)
class Enrolled:
    store: StoreRow
    request: bytes | None  # HQ's enrolment request, when the store key lives at the store


class PullAnswer(TypedDict):
    """HQ's answer to a relay's pull (msgpack): ops and node records the store lacks, HQ's vv,
    whether more remain, and the loyalty asks the store's nodes can serve."""

    ops: list[bytes]
    nodes: list[NodeRow]
    vv: VersionVector
    more: bool
    asks: list[Ask]


class HQService:
    def __init__(
        self,
        cfg: keys.HQConfig,
        storage: HQStorage | None = None,
        *,
        gateway: Gateway | None = None,
        now_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.cfg = cfg
        self.signer: Signer = keys.load_signer(cfg)
        self.payment_key = keys.load_payment_key(cfg)
        self.payment_public = keys.payment_public_key(cfg)
        self.storage = storage or open_storage(cfg.db_url)
        self.now_ms = now_ms
        if gateway is None:
            today = datetime.fromtimestamp(now_ms() / 1000, UTC)
            gateway = SimulatedAcquirer(today=(today.year, today.month))
        self.gateway = gateway

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str] | None = None,
        db: str | None = None,
        *,
        gateway: Gateway | None = None,
        now_ms: Callable[[], int] = wall_ms,
    ) -> HQService:
        """The HQ of a directory (default $MESHPOS_HQ_DIR or ./meshpos-hq), on `db` if given."""
        cfg = keys.load_hq(keys.resolve_dir(directory))
        if db:
            cfg.db = db
        return cls(cfg, gateway=gateway, now_ms=now_ms)

    def close(self) -> None:
        self.storage.close()

    @property
    def node_id(self) -> str:
        return self.signer.node_id

    def info(self) -> dict[str, str]:
        return {
            "name": self.cfg.name,
            "node_id": self.node_id,
            "public_key": self.signer.public_key.hex(),
            "payment_public_key": self.payment_public.hex(),
        }

    # -- enrolment ------------------------------------------------------------------------------

    def _request(self, store: str) -> bytes:
        curve_public, _ = zmq.curve_keypair()  # HQ never joins a mesh; the secret is dropped
        return make_request(self.signer, store, self.cfg.name, curve_public)

    def enroll_store(self, store: str, name: str = "", public_key: bytes | None = None) -> Enrolled:
        """Enrol a store. Without `public_key`, HQ creates and keeps the store key, gives itself a
        certificate and can certify the store's terminals (`enroll_node`). With it, the store key
        stays at the store, which must certify HQ's request (`enroll sign --role hq`)."""
        now = self.now_ms()
        if self.storage.enrolment.store(store) is not None:
            raise LocalError(f"store {store} is already enrolled at HQ")
        if public_key is not None:
            row = self.storage.enrolment.add_store(store, name or store, public_key,
                                                   key_at_hq=False, now_ms=now)  # fmt: skip
            return Enrolled(row, self._request(store))
        store_key = Signer.generate()
        keys.save_store_key(self.cfg, store, store_key)
        try:
            row = self.storage.enrolment.add_store(store, name or store, store_key.public_key,
                                                   key_at_hq=True, now_ms=now)  # fmt: skip
        except BaseException:
            keys.store_key_path(self.cfg, store).unlink(missing_ok=True)
            raise
        cert = issue(store_key, store, read_request(self._request(store)), role="hq", now_ms=now)
        self._install(store, cert)
        return Enrolled(self.storage.enrolment.store(store) or row, None)

    def install_cert(self, enrolment: bytes) -> str:
        """Install the certificate a store signed for HQ (`meshpos enroll sign --role hq`)."""
        outer = unpack(enrolment, "enrolment")
        if not isinstance(outer, list) or len(outer) != 5 or outer[0] != "meshpos-enrolment":
            raise EncodingError("this file is not a meshpos enrolment (from `meshpos enroll sign`)")
        _, store, pub, cert_bytes, roster = outer
        row = self.storage.enrolment.store(str(store))
        if row is None:
            raise UnknownStore(
                f"store {store!r} is not enrolled at HQ: run `meshpos hq enroll-store`"
            )
        if pub != row.public_key:
            raise RemoteError(f"this enrolment is signed by a key other than store {store}'s")
        cert = read_certificate(cert_bytes, row.public_key, row.store)
        if cert.node_id != self.node_id or cert.role != "hq":
            raise RemoteError("this enrolment is not HQ's: sign HQ's request with --role hq")
        self.storage.enrolment.add_nodes(row.store, [c for c in roster if isinstance(c, bytes)])
        self._install(row.store, cert_bytes)
        return row.store

    def _install(self, store: str, cert: bytes) -> None:
        self.storage.enrolment.set_hq_cert(store, cert, self.node_id)
        items: list[OpToSign] = [
            (store, "setting.set", {"key": HQ_KEY_SETTING, "value": self.payment_public.hex()})
        ]
        items += self.storage.blocklist.settings_for(store)
        self.storage.log.emit(self.signer, items, self.now_ms(), "hq")
        self.send_transfer_expects()  # transfers sent to this store before HQ could tell it

    def enroll_node(self, store: str, request: bytes, role: str = "terminal") -> bytes:
        """Certify a terminal of a store whose key HQ holds. The answer is the same enrolment
        file `meshpos enroll sign` writes, for `meshpos enroll install` on the terminal."""
        row = self.storage.enrolment.store(store)
        if row is None:
            raise UnknownStore(
                f"store {store!r} is not enrolled at HQ: run `meshpos hq enroll-store`"
            )
        store_key = keys.load_store_key(self.cfg, store)
        if store_key is None:
            raise ConfigError(
                f"HQ does not hold store {store}'s key (the store keeps it): enrol terminals there "
                "with `meshpos enroll sign`"
            )
        req = read_request(request)
        known = self.storage.enrolment.nodes(store)
        if any(n.node_id != req.node_id and n.name == req.name for n in known):
            raise InputError(f"a node named {req.name!r} is already enrolled in store {store}")
        cert = issue(store_key, store, req, role=role, now_ms=self.now_ms())
        self.storage.enrolment.add_nodes(store, [cert])
        roster = [n.cert for n in known if n.cert and n.node_id != req.node_id]
        return pack(["meshpos-enrolment", store, store_key.public_key, cert, roster])

    # -- the relay's requests -------------------------------------------------------------------

    def ingest(
        self, store: str, wires: Sequence[bytes], nodes: Sequence[NodeRecord]
    ) -> IngestOutcome:
        out = self.storage.log.ingest(store, wires, nodes, self.now_ms())
        log.info(
            "store %s: %d ops applied, %d duplicates, %d skipped past gaps",
            store, out.applied, out.duplicates, sum(out.skipped.values()),
        )  # fmt: skip
        if out.payments:
            self.process_payments()
        sent = [w for w in wires if b"transfer.out" in w]  # cheap: most batches carry none
        if out.applied and sent:
            tids = [str(op.payload.get("transfer_id")) for op in map(decode_op, sent)
                    if op.kind == "transfer.out"]  # fmt: skip
            self.send_transfer_expects(store, tids)
        for customer, to in sorted(out.transfers):
            if to == self.node_id:
                self.fulfil_asks(customer)
        return out

    def pull(self, store: str, vv: Mapping[str, int], limit: int) -> PullAnswer:
        wires, hq_vv, more = self.storage.log.ops_since(store, vv, limit)
        origins = {o for o, s in hq_vv.items() if s > vv.get(o, 0)}
        return {
            "ops": wires,
            "nodes": node_rows(self.storage.enrolment.nodes(store, origins)),
            "vv": hq_vv,
            "more": more,
            "asks": self.storage.escrow.asks_for(store, self.node_id),
        }

    def claim_points(
        self, store: str, customer: str, points: int, node: str
    ) -> dict[str, int | str]:
        """Move what HQ holds of `customer`'s rights to `node` of `store`: {"moved", "asked"},
        and "refused" saying why when nothing may move (an expired gift card)."""
        if not 0 < points <= 10_000_000:
            raise InputError("points to claim must be between 1 and 10,000,000")
        moved, asked, refused = self.storage.escrow.move_points(
            self.signer, store, customer, points, node, self.now_ms()
        )
        out: dict[str, int | str] = {"moved": moved, "asked": asked}
        if refused:
            out["refused"] = refused
        return out

    def fulfil_asks(self, customer: str | None = None) -> int:
        """Move rights that reached HQ to the stores that asked for them, oldest ask first."""
        moved = 0
        for store, cust, node, points in self.storage.escrow.asks():
            if customer is None or cust == customer:
                moved += self.storage.escrow.move_points(
                    self.signer, store, cust, points, node, self.now_ms()
                )[0]
        return moved

    # -- stock transfers between stores ---------------------------------------------------------

    def send_transfer_expects(
        self, store: str | None = None, tids: Sequence[str] | None = None
    ) -> list[Op]:
        """Tell the stores that `store` (default: every store) sent stock to what is on its way
        (`transfer.expect`): for transfers `tids` just ingested, or every one still owed (HQ
        does that at start, so an answer lost to a crash goes out then)."""
        stores = self.storage.enrolment.stores()
        ready = {s.store for s in stores if s.hq_cert is not None}

        def fn(tx: Tx) -> list[Op]:
            items = [
                item
                for sender in ([store] if store else sorted(s.store for s in stores))
                for item in self.storage.transfers.expects_due(tx, sender, ready, tids)
            ]
            return self.storage.log.emit_in(tx, self.signer, items, self.now_ms(), "hq")

        sent = self.storage.db.run(fn)
        for op in sent:
            log.info("transfer %s: told %s it is on its way", op.payload["transfer_id"], op.store)
        return sent

    def chain_stock(
        self, store: str, held: Mapping[str, int]
    ) -> dict[str, list[dict[str, object]] | list[str]]:
        """Other stores' stock for a till of `store` (see ChainTransfers.chain_stock)."""
        changed, same = self.storage.transfers.chain_stock(store, held)
        return {"stores": list(changed), "same": same}

    # -- card payments --------------------------------------------------------------------------

    def process_payments(self, limit: int = 1000) -> int:
        """Settle pending card payments with the gateway; returns how many were settled here."""
        done = 0
        stale = self.cfg.limit("payment_stale_s") * 1000
        while done < limit:
            job = self.storage.settlement.claim(self.now_ms(), stale)
            if job is None:
                break
            outcome = self._authorise(job)
            op = self.storage.settlement.finish(self.signer, job, outcome, self.now_ms())
            if op is not None:
                done += 1
                log.info(
                    "card payment %s (%s ending %s, %d paise): %s",
                    job.sale_id, job.brand, job.last4, job.amount, outcome.code,
                )  # fmt: skip
        return done

    def _authorise(self, job: PaymentJob) -> PaymentOutcome:
        try:
            card = open_card(self.payment_key, job.sealed, store=job.store, amount=job.amount,
                             last4=job.last4, brand=job.brand)  # fmt: skip
        except RemoteError as exc:
            return PaymentOutcome("declined", "unreadable_card", str(exc))
        key = blocklist_key(card.pan)
        if self.storage.blocklist.is_blocked(key):
            return PaymentOutcome("declined", "blocklisted", "the card is on HQ's blocklist")
        result = self.gateway.authorize(AuthRequest(job.key, card, job.amount, merchant=job.store))
        if result.approved:
            return PaymentOutcome("approved", result.code, result.message, result.auth_code)
        return PaymentOutcome(
            "declined", result.code, result.message, block_key=key if result.block else None
        )

    def import_upi(
        self, text: str, through_ms: int, source: str = "settlement file"
    ) -> list[Verdict]:
        """Reconcile the UPI payments the stores recorded up to `through_ms` against a bank's
        settlement file: every verdict, and the changed ones signed into the stores (a missing or
        wrong-amount payment opens a conflict there)."""
        rows = parse_settlement(text, source)
        known = self.storage.upi.statuses()
        verdicts = [
            v
            for v in reconcile(self.storage.upi.unsettled(through_ms), rows)
            # a later file lacks what an earlier one found short or missing: it stays so
            if v.status != MISSING or (v.payment.store, v.payment.key) not in known
        ]
        self.storage.upi.record(self.signer, verdicts, self.now_ms())
        return verdicts

    def block_card(self, pan: str, reason: str, blocked: bool = True) -> list[Op]:
        card = parse_card(pan, "12/99")
        return self.storage.blocklist.change(
            self.signer, blocklist_key(card.pan), reason, blocked, self.now_ms()
        )

    # -- HQ-originated catalogue and settings ---------------------------------------------------

    def ready_stores(self, stores: Sequence[str] | None) -> list[str]:
        """The stores to send HQ ops to: those named (each must hold HQ's certificate), else
        every store that does."""
        enrolled = {s.store: s for s in self.storage.enrolment.stores()}
        names = list(stores) if stores else sorted(enrolled)
        for s in names:
            if s not in enrolled:
                raise UnknownStore(f"store {s!r} is not enrolled at HQ")
        ready = [s for s in names if enrolled[s].hq_cert is not None]
        if stores and len(ready) < len(names):
            missing = sorted(set(names) - set(ready))
            raise NotEnrolled(f"HQ holds no certificate in store(s) {', '.join(missing)} yet")
        if not ready:
            raise LocalError("no enrolled store to send this to: `meshpos hq enroll-store` first")
        return ready

    def set_price(
        self, sku: str, price: int, stores: Sequence[str] | None = None, user: str = "hq"
    ) -> list[Op]:
        if price < 0:
            raise InputError("price must be >= 0")
        targets = self.ready_stores(stores)
        unknown = [s for s in targets if sku not in self.storage.views.known_skus(s)]
        if unknown:
            raise InputError(
                f"store(s) {', '.join(unknown)} have no product {sku}: add it with "
                "`meshpos hq product` (a price alone would make a nameless product)"
            )
        items = [(s, "product.upsert", {"sku": sku, "fields": {"price": price}}) for s in targets]
        return self.storage.log.emit(self.signer, items, self.now_ms(), user)

    def upsert_product(
        self,
        sku: str,
        fields: Payload,
        stores: Sequence[str] | None = None,
        user: str = "hq",
    ) -> list[Op]:
        bad = set(fields) - set(PRODUCT_FIELDS)
        if bad:
            raise InputError(f"unknown product field(s): {', '.join(sorted(bad))}")
        if not fields:
            raise InputError("give at least one product field")
        items = [(s, "product.upsert", {"sku": sku, "fields": dict(fields)})
                 for s in self.ready_stores(stores)]  # fmt: skip
        return self.storage.log.emit(self.signer, items, self.now_ms(), user)

    def set_setting(
        self, key: str, value: object, stores: Sequence[str] | None = None, user: str = "hq"
    ) -> list[Op]:
        value = check_setting(key, value)  # a value no till could read is refused here
        items = [
            (s, "setting.set", {"key": key, "value": value}) for s in self.ready_stores(stores)
        ]
        return self.storage.log.emit(self.signer, items, self.now_ms(), user)

    def revoke(self, store: str, ref: str, reason: str) -> tuple[Op, NodeRecord]:
        """Revoke node `ref` (name or id) of `store` from the last of its ops HQ holds: an op HQ
        signs, which relays carry to the store (meshpos/domain/revocation.py)."""
        self.ready_stores([store])
        node = revocation.find_node(self.storage.enrolment.nodes(store), ref, self.node_id)
        held = self.storage.log.revocations(store).get(node.node_id)
        if held is not None:
            raise InputError(f"{node.name} is already revoked in store {store} ({held.reason})")
        point = self.storage.log.vv(store).get(node.node_id, 0)
        body = revocation.payload(store, node.node_id, point, reason)
        [op] = self.storage.log.emit(
            self.signer, [(store, revocation.REVOKE_KIND, body)], self.now_ms(), "hq"
        )
        return op, node

    # -- reports --------------------------------------------------------------------------------

    def report(self, store: str | None = None) -> Record:
        """`hq report` and GET /v1/report: a JSON document of the chain's figures, with the open
        conflicts of every store (or of `store`): the ops HQ holds without authority."""
        stores = self.storage.views.summary()
        if store is not None and not any(s["store"] == store for s in stores):
            raise UnknownStore(f"store {store!r} is not enrolled at HQ")
        return {
            "hq": self.cfg.name,
            "backend": self.storage.db.describe(),
            "stores": stores,
            "chain": {
                "stores": len(stores),
                "ops": sum(int(s["ops"]) for s in stores),
                "sales": sum(int(s["sales"]) for s in stores),
                "net": sum(int(s["net"]) for s in stores),
            },
            "by_day": self.storage.views.chain_by_day(),
            "loyalty": self.storage.views.loyalty(),
            "payments": self.storage.views.payments(store),
            "conflicts": self.storage.views.conflicts(store),
        }
