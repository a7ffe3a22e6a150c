"""SQLite schema: every table of a node's database, created when a ledger opens.

Three groups: the op log and its bookkeeping (with `sealed`, the sealed card data that travels
beside a sale op until HQ answered it); the views folded from it (with `unauthorised`, the
ops the rulebook gave no authority, and `rights_log`, the escrow moves it judges spends by); and
node-local tables, which hold this node's own state (print queue, PIN lockouts, escrow asks for the
daemon, peer acknowledgements, parked carts, other stores' stock), are never replicated and are not
part of `verify`. Views are created from the same DDL in the main database and in a scratch
database that `verify` folds from scratch, so the two can be compared table by table. Every
statement is `IF NOT EXISTS`: a database made by an older version gets its missing tables when it
is next opened (and its views refolded under the rulebook, see `Ledger._upgrade`).

Tables keyed by op id (and the registers) are `WITHOUT ROWID`: one b-tree instead of a table and
its key index, which saves disk and a b-tree insert per row. A database made before keeps its
rowid tables; every statement reads and writes both alike.
"""

from __future__ import annotations

LOG_DDL = """
CREATE TABLE IF NOT EXISTS ops (
    origin TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    hlc    INTEGER NOT NULL,
    user   TEXT NOT NULL,
    kind   TEXT NOT NULL,
    body   BLOB NOT NULL,
    sig    BLOB NOT NULL,
    PRIMARY KEY (origin, seq)
);
CREATE INDEX IF NOT EXISTS ops_hlc ON ops (hlc);
DROP INDEX IF EXISTS ops_user;
CREATE INDEX IF NOT EXISTS ops_revoke ON ops (origin, seq) WHERE kind = 'node.revoke';
CREATE TABLE IF NOT EXISTS body_dicts (
    id   INTEGER PRIMARY KEY,
    dict BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS vv (
    origin TEXT PRIMARY KEY,
    seq    INTEGER NOT NULL,
    head   BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS pending (
    origin TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    body   BLOB NOT NULL,
    sig    BLOB NOT NULL,
    PRIMARY KEY (origin, seq)
);
CREATE TABLE IF NOT EXISTS nodes (
    node_id    TEXT PRIMARY KEY,
    public_key BLOB NOT NULL,
    store      TEXT NOT NULL,
    name       TEXT NOT NULL,
    cert       BLOB
);
CREATE TABLE IF NOT EXISTS sealed (
    origin TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    tender INTEGER NOT NULL,
    blob   BLOB NOT NULL,
    PRIMARY KEY (origin, seq, tender)
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

VIEW_TABLES = (
    "registers",
    "products",
    "customers",
    "settings",
    "stock",
    "stock_by_origin",
    "stock_moves",
    "loyalty",
    "rights",
    "sales",
    "sale_lines",
    "tenders",
    "returned",
    "resolutions",
    "conflicts",
    "users",
    "staff_log",
    "rights_log",
    "unauthorised",
)

VIEW_DDL = """
CREATE TABLE IF NOT EXISTS {s}.registers (
    entity TEXT NOT NULL,
    key    TEXT NOT NULL,
    field  TEXT NOT NULL,
    value  TEXT NOT NULL,
    hlc    INTEGER NOT NULL,
    origin TEXT NOT NULL,
    PRIMARY KEY (entity, key, field)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS {s}.products (
    sku      TEXT PRIMARY KEY,
    name     TEXT NOT NULL DEFAULT '',
    barcode  TEXT NOT NULL DEFAULT '',
    category TEXT NOT NULL DEFAULT '',
    size     TEXT NOT NULL DEFAULT '',
    colour   TEXT NOT NULL DEFAULT '',
    price    INTEGER NOT NULL DEFAULT 0,
    gst_rate INTEGER NOT NULL DEFAULT 0,
    active   INTEGER NOT NULL DEFAULT 1,
    hsn      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS {s}.products_barcode ON products (barcode);
CREATE TABLE IF NOT EXISTS {s}.customers (
    customer_id TEXT PRIMARY KEY,
    name  TEXT NOT NULL DEFAULT '',
    phone TEXT NOT NULL DEFAULT '',
    email TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS {s}.customers_phone ON customers (phone);
CREATE TABLE IF NOT EXISTS {s}.users (
    user_id  TEXT PRIMARY KEY,
    name     TEXT NOT NULL DEFAULT '',
    role     TEXT NOT NULL DEFAULT 'cashier',
    active   INTEGER NOT NULL DEFAULT 1,
    pin_salt TEXT NOT NULL DEFAULT '',
    pin_key  TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS {s}.staff_log (
    origin TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    hlc    INTEGER NOT NULL,
    entity TEXT NOT NULL,
    key    TEXT NOT NULL,
    field  TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (origin, seq, entity, key, field)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS {s}.staff_log_key ON staff_log (entity, key, field, hlc);
CREATE TABLE IF NOT EXISTS {s}.rights_log (
    customer_id TEXT NOT NULL,
    node        TEXT NOT NULL,
    origin      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    hlc         INTEGER NOT NULL,
    delta       INTEGER NOT NULL,
    authority   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS {s}.rights_log_holder ON rights_log (customer_id, node, origin, seq);
DROP INDEX IF EXISTS {s}.rights_log_op;
CREATE INDEX IF NOT EXISTS {s}.rights_log_unheld ON rights_log (origin, seq) WHERE authority = 0;
CREATE TABLE IF NOT EXISTS {s}.unauthorised (
    origin   TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    hlc      INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    user     TEXT NOT NULL,
    terminal TEXT NOT NULL,
    rule     TEXT NOT NULL,
    detail   TEXT NOT NULL,
    PRIMARY KEY (origin, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS {s}.settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.stock (
    sku TEXT PRIMARY KEY,
    qty INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.stock_by_origin (
    sku    TEXT NOT NULL,
    origin TEXT NOT NULL,
    qty    INTEGER NOT NULL,
    PRIMARY KEY (sku, origin)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS {s}.stock_moves (
    origin TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    sku    TEXT NOT NULL,
    delta  INTEGER NOT NULL,
    kind   TEXT NOT NULL,
    hlc    INTEGER NOT NULL,
    PRIMARY KEY (origin, seq, sku)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS {s}.stock_moves_sku ON stock_moves (sku, hlc);
CREATE TABLE IF NOT EXISTS {s}.loyalty (
    customer_id TEXT PRIMARY KEY,
    points      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.rights (
    customer_id TEXT NOT NULL,
    node        TEXT NOT NULL,
    points      INTEGER NOT NULL,
    PRIMARY KEY (customer_id, node)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS {s}.sales (
    sale_id  TEXT NOT NULL,
    origin   TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    number   INTEGER NOT NULL,
    terminal TEXT NOT NULL,
    hlc      INTEGER NOT NULL,
    ts_ms    INTEGER NOT NULL,
    user     TEXT NOT NULL,
    customer_id TEXT,
    subtotal INTEGER NOT NULL,
    discount INTEGER NOT NULL,
    tax      INTEGER NOT NULL,
    total    INTEGER NOT NULL,
    points_earned   INTEGER NOT NULL,
    points_redeemed INTEGER NOT NULL,
    ref_sale TEXT,
    PRIMARY KEY (origin, seq)
);
CREATE INDEX IF NOT EXISTS {s}.sales_id ON sales (sale_id);
DROP INDEX IF EXISTS {s}.sales_customer;
CREATE INDEX IF NOT EXISTS {s}.sales_by_customer ON sales (customer_id, ts_ms)
    WHERE customer_id IS NOT NULL;
DROP INDEX IF EXISTS {s}.sales_number;
CREATE INDEX IF NOT EXISTS {s}.sales_paper ON sales (origin) WHERE number = 0;
CREATE INDEX IF NOT EXISTS {s}.sales_ts ON sales (ts_ms);
CREATE TABLE IF NOT EXISTS {s}.sale_lines (
    origin   TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    line     INTEGER NOT NULL,
    sku      TEXT NOT NULL,
    name     TEXT NOT NULL,
    category TEXT NOT NULL,
    qty      INTEGER NOT NULL,
    unit_price INTEGER NOT NULL,
    discount INTEGER NOT NULL,
    gst_rate INTEGER NOT NULL,
    tax      INTEGER NOT NULL,
    total    INTEGER NOT NULL,
    hsn      TEXT NOT NULL DEFAULT '',
    taxable  INTEGER NOT NULL DEFAULT 0,
    cgst     INTEGER NOT NULL DEFAULT 0,
    sgst     INTEGER NOT NULL DEFAULT 0,
    igst     INTEGER NOT NULL DEFAULT 0,
    place    TEXT NOT NULL DEFAULT '',
    buyer_gstin TEXT NOT NULL DEFAULT '',
    hlc      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (origin, seq, line)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS {s}.tenders (
    origin TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    idx    INTEGER NOT NULL,
    method TEXT NOT NULL,
    amount INTEGER NOT NULL,
    points INTEGER NOT NULL,
    PRIMARY KEY (origin, seq, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS {s}.returned (
    origin   TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    ref_sale TEXT NOT NULL,
    sku      TEXT NOT NULL,
    qty      INTEGER NOT NULL,
    PRIMARY KEY (origin, seq, sku)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS {s}.returned_ref ON returned (ref_sale);
CREATE TABLE IF NOT EXISTS {s}.resolutions (
    origin      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    conflict_id TEXT NOT NULL,
    hlc         INTEGER NOT NULL,
    user        TEXT NOT NULL,
    ack_level   INTEGER,
    note        TEXT NOT NULL,
    PRIMARY KEY (origin, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS {s}.resolutions_conflict ON resolutions (conflict_id, hlc);
CREATE TABLE IF NOT EXISTS {s}.conflicts (
    conflict_id TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    status      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    ops         TEXT NOT NULL,
    resolved_by TEXT
);
"""


# other_stores, other_stock: HQ's view of other stores' stock, cached (ledger/other_stores.py)
LOCAL_TABLES = (
    "print_jobs",
    "staff_lockout",
    "escrow_asks",
    "peer_acks",
    "parked_carts",
    "other_stores",
    "other_stock",
)

LOCAL_DDL = """
CREATE TABLE IF NOT EXISTS print_jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    sale_id     TEXT,
    origin      TEXT,
    seq         INTEGER,
    doc         TEXT NOT NULL,
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_try_ms INTEGER NOT NULL DEFAULT 0,
    created_ms  INTEGER NOT NULL,
    printed_ms  INTEGER,
    last_error  TEXT NOT NULL DEFAULT '',
    via         TEXT,
    source      TEXT UNIQUE,
    claim       TEXT,
    claimed_ms  INTEGER,
    interrupted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS print_jobs_state ON print_jobs (state, id);
CREATE INDEX IF NOT EXISTS print_jobs_sale ON print_jobs (sale_id);
CREATE TABLE IF NOT EXISTS staff_lockout (
    user_id         TEXT PRIMARY KEY,
    failures        INTEGER NOT NULL,
    locked_until_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS escrow_asks (
    id          INTEGER PRIMARY KEY,
    customer_id TEXT NOT NULL,
    points      INTEGER NOT NULL,
    at_ms       INTEGER NOT NULL,
    sent        INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS peer_acks (
    peer  TEXT PRIMARY KEY,
    seq   INTEGER NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS other_stores (
    store      TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    as_of_ms   INTEGER NOT NULL,
    fetched_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS other_stock (
    store TEXT NOT NULL,
    sku   TEXT NOT NULL,
    qty   INTEGER NOT NULL,
    PRIMARY KEY (sku, store)
);
CREATE TABLE IF NOT EXISTS parked_carts (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    label   TEXT NOT NULL,
    user    TEXT NOT NULL,
    held_ms INTEGER NOT NULL,
    items   INTEGER NOT NULL,
    total   INTEGER NOT NULL,
    doc     TEXT NOT NULL
);
"""


# Columns added to view tables after their first release, (table, column, definition): a database
# made before gets them by ALTER TABLE when it opens (always at the end, where the DDL above puts
# them, so `verify` compares like with like), and its views are refolded once.
ADDED_COLUMNS = (
    ("products", "hsn", "TEXT NOT NULL DEFAULT ''"),
    ("sale_lines", "hsn", "TEXT NOT NULL DEFAULT ''"),
    ("sale_lines", "taxable", "INTEGER NOT NULL DEFAULT 0"),
    ("sale_lines", "cgst", "INTEGER NOT NULL DEFAULT 0"),
    ("sale_lines", "sgst", "INTEGER NOT NULL DEFAULT 0"),
    ("sale_lines", "igst", "INTEGER NOT NULL DEFAULT 0"),
    ("sale_lines", "place", "TEXT NOT NULL DEFAULT ''"),
    ("sale_lines", "buyer_gstin", "TEXT NOT NULL DEFAULT ''"),
    ("sale_lines", "hlc", "INTEGER NOT NULL DEFAULT 0"),
)

# A line's GST as its tax invoice states it (HSN, rate, taxable value, CGST, SGST, IGST, place of
# supply, buyer's GSTIN) is kept in its `sale_lines` row: one row a line to write when a sale is
# folded, not two. `sale_tax`, a table of its own until then, is this view of those columns for
# its readers (GST returns). A database made before has its `sale_tax` table dropped when it
# opens (`RETIRED_TABLES`), and its views refolded once for the columns `sale_lines` gained.
SALE_TAX_VIEW = """
CREATE VIEW IF NOT EXISTS main.sale_tax AS
SELECT origin, seq, line, hsn, gst_rate, taxable, cgst, sgst, igst, place, buyer_gstin
FROM sale_lines
"""
RETIRED_TABLES = ("sale_tax",)


# A sale's, return's or exchange's stock moves are its lines (a line of `qty` units of `sku` moves
# -qty): they are not written again as `stock_moves` rows, which hold the other moves (stock
# counts, receipts, transfers). `all_stock_moves` is every move, one row per move (a sale with two
# lines of one SKU moves it twice), for every reader of stock moves; `sale_lines_sku` holds all a
# reader of a SKU's moves needs (its lines and their order, without a lookup in `sale_lines`).
# Both read `sale_lines.hlc`, which a database made before gains by `ADDED_COLUMNS`: `Ledger`
# runs this after adding columns, `verify` with the views.
MOVES_DDL = """
CREATE INDEX IF NOT EXISTS {s}.sale_lines_sku ON sale_lines (sku, hlc, qty);
CREATE VIEW IF NOT EXISTS {s}.all_stock_moves AS
SELECT origin, seq, sku, delta, hlc FROM stock_moves
UNION ALL
SELECT origin, seq, sku, -qty, hlc FROM sale_lines
"""


def view_ddl(schema: str = "main") -> str:
    return (VIEW_DDL + MOVES_DDL).format(s=schema)


def moves_ddl(schema: str = "main") -> list[str]:
    """`MOVES_DDL`'s statements for `schema`."""
    return [stmt for stmt in MOVES_DDL.format(s=schema).split(";") if stmt.strip()]


def node_ddl() -> list[str]:
    """Every statement that creates a node database's tables, in order (`moves_ddl` after the
    columns an older database lacks are added)."""
    text = LOG_DDL + VIEW_DDL.format(s="main") + LOCAL_DDL
    return [stmt for stmt in text.split(";") if stmt.strip()]
