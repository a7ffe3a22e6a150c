"""Everything HQ keeps, over one database: one schema (schema.py) and one part per concern, each
written once over the small `Database` interface (database.py) that SQLite (sqlite.py) and
PostgreSQL (postgres.py) implement.

    enrolment   stores enrolled at HQ and the nodes certified in each
    log         each store's op log, version vectors, ingest from relays, HQ's own ops
    views       chain-wide views folded from the ops, and the reports on them
    blocklist   cards no till may take, sent to every store
    payments    settling card payments taken offline
    loyalty     HQ as escrow holder of loyalty rights between stores
    takings     takings per store, day and payment kind (folded with the views)
    contacts    when each terminal last reached HQ (online, relay, ops waiting)
    people      HQ's people and their dashboard sessions (rules: meshpos.hq.accounts)
    browse      stock, catalogue, customers and card floats searched across stores
    anomalies   what the chain views show needs a look (stock or points below zero...)
    transfers   stock transfers between stores, and other stores' stock for the tills

Parts hold no state of their own between calls, so any number of HQ processes can share the
database; how they stay consistent is told in log.py.
"""

from __future__ import annotations

from meshpos.core.clock import wall_ms
from meshpos.hq.storage import takings
from meshpos.hq.storage.anomalies import Anomalies
from meshpos.hq.storage.blocklist import Blocklist
from meshpos.hq.storage.browse import Browse
from meshpos.hq.storage.contacts import Contacts
from meshpos.hq.storage.database import Database
from meshpos.hq.storage.enrolment import Enrolment
from meshpos.hq.storage.log import OpLog
from meshpos.hq.storage.loyalty import LoyaltyEscrow
from meshpos.hq.storage.payments import Settlement
from meshpos.hq.storage.people import PeopleStore
from meshpos.hq.storage.postgres import PostgresDatabase
from meshpos.hq.storage.schema import create_schema
from meshpos.hq.storage.sqlite import SQLiteDatabase
from meshpos.hq.storage.transfers import ChainTransfers
from meshpos.hq.storage.upi import UpiLedger
from meshpos.hq.storage.views import ChainViews


class HQStorage:
    """HQ's storage parts over one database, wired together."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.enrolment = Enrolment(db)
        self.log = OpLog(db, self.enrolment)
        # A database from before the rulebook: every store's views refolded under it.
        create_schema(db, lambda tx: self.log.refold_all(tx, wall_ms()))
        self.views = ChainViews(db)
        self.blocklist = Blocklist(db, self.log)
        self.settlement = Settlement(db, self.log, self.blocklist)
        self.upi = UpiLedger(db, self.log)
        self.escrow = LoyaltyEscrow(db, self.log, self.enrolment)
        self.transfers = ChainTransfers(db)
        takings.backfill(db)
        self.takings = takings.Takings(db)
        self.contacts = Contacts(db)
        self.people = PeopleStore(db)
        self.browse = Browse(db)
        self.anomalies = Anomalies(db)
        # The reads `meshpos hq`, the demos and tests outside hq/ make, by the names they use.
        self.vv = self.log.vv
        self.summary = self.views.summary
        self.stock = self.views.stock
        self.sales_by_day = self.views.sales_by_day
        self.registers = self.views.registers
        self.payments = self.views.payments

    def close(self) -> None:
        self.db.close()


def open_storage(url: str, *, pool_size: int = 8, durable: bool = True) -> HQStorage:
    """`postgresql://...` opens PostgreSQL; anything else is a SQLite file path (or `:memory:`)."""
    db: Database
    if url.startswith(("postgresql://", "postgres://")):
        db = PostgresDatabase(url, pool_size=pool_size, durable=durable)
    else:
        db = SQLiteDatabase(url, pool_size=pool_size, durable=durable)
    return HQStorage(db)
