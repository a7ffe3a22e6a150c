"""HQ's schema: every table of every storage part, created once per database in one
transaction, in the dialect of its backend (`{blob}`, `{int}`).

Tables by part: `stores`, `nodes` (enrolment); `ops`, `heads` (the op log and version vectors);
`sales`, `sales_daily`, `stock`, `loyalty`, `rights`, `registers` (chain views folded from the
ops); `staff_log`, `rights_log`, `unauthorised`, `resolutions`, `conflicts` (what the rulebook
reads and decides, per store: meshpos/hq/storage/judging.py); `payments` (card tenders and their
settlement); `blocklist`; `loyalty_asks` (points other stores wait for); `takings_daily` (takings
per store, day and payment kind); `store_contacts` (when each terminal last reached HQ);
`hq_users`, `hq_sessions` (HQ's people and their dashboard sessions).

Indexes are those HQ's own queries read by, and no more: each costs every op that writes its
table. Two that none read any more go when HQ opens a database that has them: `sales_customer`,
and `rights_log_op` (only debits without authority are deleted by op: `rights_log_unheld`).

Schema 2 added the rulebook's tables; a database of schema 1 gets them when HQ opens it, and every
store's views refolded (`HQStorage`).
"""

from __future__ import annotations

from collections.abc import Callable

from meshpos.core.errors import LocalError
from meshpos.hq.storage.database import Database, Tx

SCHEMA_VERSION = "2"
UPGRADES = ("1",)  # schema versions this HQ upgrades in place
DDL = """
CREATE TABLE IF NOT EXISTS hq_meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS stores (
    store       TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    public_key  {blob} NOT NULL,
    key_at_hq   {int} NOT NULL,
    enrolled_ms {int} NOT NULL,
    hq_cert     {blob}
);
CREATE TABLE IF NOT EXISTS nodes (
    store      TEXT NOT NULL,
    node_id    TEXT NOT NULL,
    public_key {blob} NOT NULL,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    cert       {blob} NOT NULL,
    PRIMARY KEY (store, node_id)
);
CREATE TABLE IF NOT EXISTS ops (
    store  TEXT NOT NULL,
    origin TEXT NOT NULL,
    seq    {int} NOT NULL,
    hlc    {int} NOT NULL,
    kind   TEXT NOT NULL,
    actor  TEXT NOT NULL,
    body   {blob} NOT NULL,
    sig    {blob} NOT NULL,
    PRIMARY KEY (store, origin, seq)
);
CREATE INDEX IF NOT EXISTS ops_revoke ON ops (store) WHERE kind = 'node.revoke';
CREATE TABLE IF NOT EXISTS heads (
    store      TEXT NOT NULL,
    origin     TEXT NOT NULL,
    seq        {int} NOT NULL,
    head       {blob} NOT NULL,
    hlc        {int} NOT NULL,
    updated_ms {int} NOT NULL,
    PRIMARY KEY (store, origin)
);
CREATE TABLE IF NOT EXISTS sales (
    store    TEXT NOT NULL,
    origin   TEXT NOT NULL,
    seq      {int} NOT NULL,
    sale_id  TEXT NOT NULL,
    kind     TEXT NOT NULL,
    day      TEXT NOT NULL,
    ts_ms    {int} NOT NULL,
    hlc      {int} NOT NULL,
    terminal TEXT NOT NULL,
    actor    TEXT NOT NULL,
    customer_id TEXT,
    subtotal {int} NOT NULL,
    discount {int} NOT NULL,
    tax      {int} NOT NULL,
    total    {int} NOT NULL,
    points_earned   {int} NOT NULL,
    points_redeemed {int} NOT NULL,
    ref_sale TEXT,
    PRIMARY KEY (store, origin, seq)
);
DROP INDEX IF EXISTS sales_customer;
CREATE TABLE IF NOT EXISTS sales_daily (
    store     TEXT NOT NULL,
    day       TEXT NOT NULL,
    sales     {int} NOT NULL,
    returns   {int} NOT NULL,
    exchanges {int} NOT NULL,
    net       {int} NOT NULL,
    tax       {int} NOT NULL,
    discount  {int} NOT NULL,
    PRIMARY KEY (store, day)
);
CREATE TABLE IF NOT EXISTS stock (
    store TEXT NOT NULL,
    sku   TEXT NOT NULL,
    qty   {int} NOT NULL,
    PRIMARY KEY (store, sku)
);
CREATE TABLE IF NOT EXISTS loyalty (
    store       TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    points      {int} NOT NULL,
    PRIMARY KEY (store, customer_id)
);
CREATE INDEX IF NOT EXISTS loyalty_customer ON loyalty (customer_id);
CREATE TABLE IF NOT EXISTS rights (
    store       TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    node        TEXT NOT NULL,
    points      {int} NOT NULL,
    PRIMARY KEY (store, customer_id, node)
);
CREATE INDEX IF NOT EXISTS rights_customer ON rights (customer_id, node);
CREATE TABLE IF NOT EXISTS registers (
    store  TEXT NOT NULL,
    entity TEXT NOT NULL,
    key    TEXT NOT NULL,
    field  TEXT NOT NULL,
    value  TEXT NOT NULL,
    hlc    {int} NOT NULL,
    origin TEXT NOT NULL,
    PRIMARY KEY (store, entity, key, field)
);
CREATE TABLE IF NOT EXISTS sealed (
    store  TEXT NOT NULL,
    origin TEXT NOT NULL,
    seq    {int} NOT NULL,
    tender {int} NOT NULL,
    blob   {blob} NOT NULL,
    PRIMARY KEY (store, origin, seq, tender)
);
CREATE TABLE IF NOT EXISTS payments (
    store      TEXT NOT NULL,
    origin     TEXT NOT NULL,
    seq        {int} NOT NULL,
    tender     {int} NOT NULL,
    sale_id    TEXT NOT NULL,
    amount     {int} NOT NULL,
    last4      TEXT NOT NULL,
    brand      TEXT NOT NULL,
    sealed     {blob} NOT NULL,
    status     TEXT NOT NULL,
    attempts   {int} NOT NULL,
    claimed_ms {int} NOT NULL,
    created_ms {int} NOT NULL,
    code       TEXT NOT NULL,
    message    TEXT NOT NULL,
    auth_code  TEXT NOT NULL,
    result_seq {int} NOT NULL,
    PRIMARY KEY (store, origin, seq, tender)
);
CREATE INDEX IF NOT EXISTS payments_status ON payments (status, created_ms);
CREATE TABLE IF NOT EXISTS blocklist (
    setting_key TEXT PRIMARY KEY,
    reason      TEXT NOT NULL,
    blocked     {int} NOT NULL,
    changed_ms  {int} NOT NULL
);
CREATE TABLE IF NOT EXISTS staff_log (
    store  TEXT NOT NULL,
    origin TEXT NOT NULL,
    seq    {int} NOT NULL,
    hlc    {int} NOT NULL,
    entity TEXT NOT NULL,
    key    TEXT NOT NULL,
    field  TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (store, origin, seq, entity, key, field)
);
CREATE INDEX IF NOT EXISTS staff_log_key ON staff_log (store, entity, key, field, hlc);
CREATE TABLE IF NOT EXISTS rights_log (
    store       TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    node        TEXT NOT NULL,
    origin      TEXT NOT NULL,
    seq         {int} NOT NULL,
    hlc         {int} NOT NULL,
    delta       {int} NOT NULL,
    authority   {int} NOT NULL
);
CREATE INDEX IF NOT EXISTS rights_log_holder ON rights_log (store, customer_id, node, origin, seq);
DROP INDEX IF EXISTS rights_log_op;
CREATE INDEX IF NOT EXISTS rights_log_unheld ON rights_log (store, origin, seq) WHERE authority = 0;
CREATE TABLE IF NOT EXISTS unauthorised (
    store    TEXT NOT NULL,
    origin   TEXT NOT NULL,
    seq      {int} NOT NULL,
    hlc      {int} NOT NULL,
    kind     TEXT NOT NULL,
    actor    TEXT NOT NULL,
    terminal TEXT NOT NULL,
    rule     TEXT NOT NULL,
    detail   TEXT NOT NULL,
    PRIMARY KEY (store, origin, seq)
);
CREATE TABLE IF NOT EXISTS resolutions (
    store       TEXT NOT NULL,
    origin      TEXT NOT NULL,
    seq         {int} NOT NULL,
    conflict_id TEXT NOT NULL,
    hlc         {int} NOT NULL,
    actor       TEXT NOT NULL,
    ack_level   {int},
    note        TEXT NOT NULL,
    PRIMARY KEY (store, origin, seq)
);
CREATE INDEX IF NOT EXISTS resolutions_conflict ON resolutions (store, conflict_id, hlc);
CREATE TABLE IF NOT EXISTS conflicts (
    store       TEXT NOT NULL,
    conflict_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    status      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    ops         TEXT NOT NULL,
    resolved_by TEXT,
    PRIMARY KEY (store, conflict_id)
);
CREATE TABLE IF NOT EXISTS loyalty_asks (
    store       TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    node        TEXT NOT NULL,
    points      {int} NOT NULL,
    asked_ms    {int} NOT NULL,
    PRIMARY KEY (store, customer_id, node)
);
CREATE TABLE IF NOT EXISTS takings_daily (
    store   TEXT NOT NULL,
    day     TEXT NOT NULL,
    method  TEXT NOT NULL,
    amount  {int} NOT NULL,
    tenders {int} NOT NULL,
    PRIMARY KEY (store, day, method)
);
CREATE TABLE IF NOT EXISTS store_contacts (
    store    TEXT NOT NULL,
    node     TEXT NOT NULL,
    seen_ms  {int} NOT NULL,
    relay_ms {int} NOT NULL,
    waiting  {int} NOT NULL,
    address  TEXT NOT NULL,
    PRIMARY KEY (store, node)
);
CREATE TABLE IF NOT EXISTS hq_users (
    user_id         TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    role            TEXT NOT NULL,
    pw_hash         TEXT NOT NULL,
    disabled        {int} NOT NULL,
    failures        {int} NOT NULL,
    locked_until_ms {int} NOT NULL,
    created_ms      {int} NOT NULL,
    changed_ms      {int} NOT NULL,
    signed_in_ms    {int} NOT NULL
);
CREATE TABLE IF NOT EXISTS hq_sessions (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    created_ms {int} NOT NULL,
    seen_ms    {int} NOT NULL,
    address    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS hq_sessions_user ON hq_sessions (user_id)
"""

OP_COLUMNS = ("store", "origin", "seq", "hlc", "kind", "actor", "body", "sig")
SALE_COLUMNS = (
    "store", "origin", "seq", "sale_id", "kind", "day", "ts_ms", "hlc", "terminal", "actor",
    "customer_id", "subtotal", "discount", "tax", "total", "points_earned", "points_redeemed",
    "ref_sale",
)  # fmt: skip


def create_schema(db: Database, upgrade: Callable[[Tx], None]) -> None:
    """Create what is missing, under a lock so that HQ processes starting together agree; bring a
    database of an older schema up to date with `upgrade` (in the same transaction); refuse one
    of another schema version."""

    def fn(tx: Tx) -> None:
        tx.lock(["hq-schema"])
        for stmt in DDL.format(blob=db.blob, int=db.integer).split(";"):
            if stmt.strip():
                tx.execute(stmt)
        rows = tx.execute("SELECT value FROM hq_meta WHERE name = 'schema'")
        if not rows:
            tx.execute("INSERT INTO hq_meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        elif rows[0][0] in UPGRADES:
            upgrade(tx)
            tx.execute("UPDATE hq_meta SET value = ? WHERE name = 'schema'", (SCHEMA_VERSION,))
        elif rows[0][0] != SCHEMA_VERSION:
            raise LocalError(f"HQ database has schema {rows[0][0]}; this HQ needs {SCHEMA_VERSION}")

    db.run(fn)
