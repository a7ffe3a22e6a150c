"""UPI reconciliation at HQ: the UPI tenders the stores recorded, read from the op log, and HQ's
verdicts on them (`upi.result` ops signed into each store's log, which the store folds; a missing
or wrong-amount payment opens a conflict there). The matching itself is pure
(meshpos/domain/upi.py)."""

from __future__ import annotations

import json

from meshpos.core.ops import Op, Signer, decode_body
from meshpos.domain.upi import MATCHED, RESULT_KIND, RecordedUpi, Verdict, upi_tenders
from meshpos.hq.storage.database import Database
from meshpos.hq.storage.log import OpLog, OpToSign


class UpiLedger:
    def __init__(self, db: Database, log: OpLog) -> None:
        self.db = db
        self.log = log

    def unsettled(self, through_ms: int, store: str | None = None) -> list[RecordedUpi]:
        """UPI tenders recorded up to `through_ms` (sale time) that no settlement file matched
        yet, in stores' order; tenders of ops without authority are left out."""
        where = " AND o.store = ?" if store else ""
        rows = self.db.query(
            "SELECT o.store, o.origin, o.seq, o.body, o.sig FROM ops o "
            "LEFT JOIN unauthorised u ON u.store = o.store AND u.origin = o.origin "
            "AND u.seq = o.seq WHERE o.kind IN ('sale', 'exchange') AND u.seq IS NULL" + where
            + " ORDER BY o.store, o.hlc, o.origin",
            (store,) if store else (),
        )  # fmt: skip
        matched = self.statuses(store)
        out: list[RecordedUpi] = []
        for st, origin, seq, body, sig in rows:
            op = decode_body(bytes(body), bytes(sig))
            ts = op.payload.get("ts_ms")
            sale_id = op.payload.get("sale_id")
            if type(ts) is not int or ts > through_ms or not isinstance(sale_id, str):
                continue
            for i, utr, amount in upi_tenders(op.payload):
                if matched.get((str(st), f"{sale_id}#{i}")) != MATCHED:
                    out.append(RecordedUpi(str(st), sale_id, i, f"{origin}:{seq}", utr, amount, ts))
        return out

    def statuses(self, store: str | None = None) -> dict[tuple[str, str], str]:
        """HQ's last verdict per (store, `<sale_id>#<tender>`)."""
        where = " AND store = ?" if store else ""
        return {
            (str(st), str(key)): str(json.loads(value))
            for st, key, value in self.db.query(
                "SELECT store, key, value FROM registers WHERE entity = 'upi' "
                "AND field = 'status'" + where,
                (store,) if store else (),
            )
        }

    def record(self, signer: Signer, verdicts: list[Verdict], now_ms: int) -> list[Op]:
        """Sign the verdicts that change what a store knows (a new one, or a status that
        differs from HQ's last) into the stores' logs, in one transaction."""
        known = self.statuses()
        items: list[OpToSign] = []
        for v in verdicts:
            p = v.payment
            if known.get((p.store, p.key)) == v.status:
                continue
            payload = {
                "sale_id": p.sale_id,
                "tender": p.tender,
                "status": v.status,
                "amount": p.amount,
                "settled": v.settled,
                "utr": p.utr,
                "sale_op": p.sale_op,
                "message": v.message,
            }
            items.append((p.store, RESULT_KIND, payload))
        return self.log.emit(signer, items, now_ms, "hq-upi") if items else []
