"""`python -m bench.zdict OUT`: make a sync compression dictionary (meshpos/sync/compression.py).

The dictionary is the signed bodies of sales rung on a made-up catalogue (not the sample one the
bench sells from, so the bench's compression figures are not flattered by a dictionary that knows
its product names), each without its `prev` hash: map keys, tender shapes and GST fields are what
every store's sales share. Deflate reads at most the last 32 KiB of a dictionary, and matches near
its end cost fewer bits, so the most common shape (a one-line cash sale) comes last. A released
dictionary never changes: make a new number instead.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from bench.ledger_bench import STORE, Generator, SaleSpec
from meshpos.domain.catalog import CatalogRow, parse_csv

WINDOW = 32 * 1024
CATEGORIES = ("Grocery", "Household", "Apparel", "Footwear", "Stationery", "Toys")


def made_up_rows() -> list[CatalogRow]:
    lines = ["sku,name,category,price,gst_rate,hsn,stock"]
    for i in range(60):
        cat = CATEGORIES[i % len(CATEGORIES)]
        price = 49 + (i * 37) % 2000
        lines.append(
            f"ZD-{i:04d},Article {i} {cat.lower()},{cat},{price}.00,{(5, 12, 18)[i % 3]},"
            f"{610000 + i * 7},0"
        )
    return parse_csv("\n".join(lines), "dictionary catalogue")


def build(seed: int = 7) -> bytes:
    rows = made_up_rows()
    gen = Generator(seed, names=("HQ", "Z1", "Z2"), rows=rows, customers=50)
    skus = [r.sku for r in rows]
    bodies: list[bytes] = []
    mixed = [gen.sale(1 + i % 2, gen.mix.next()) for i in range(30)]
    plain = [gen.sale(1, SaleSpec(((skus[i], 1),), None, None, "cash")) for i in range(20)]
    card = [gen.sale(2, SaleSpec(((skus[i], 1),), 3, None, "card")) for i in range(20, 30)]
    for op in mixed + card + plain:
        bodies.append(op.body[:-34])  # without prev: 2 bytes of header, 32 of hash
    # The bench's store name too would flatter its figures: a made-up one of the same length.
    return b"".join(bodies).replace(STORE.encode(), b"SHOP1")[-WINDOW:]


def main(make: Callable[[], bytes] = build, doc: str = __doc__ or "") -> None:
    """Write the dictionary `make` builds to the file named on the command line."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    data = make()
    args.out.write_bytes(data)
    print(f"wrote {len(data):,} bytes to {args.out}")


if __name__ == "__main__":
    main()
