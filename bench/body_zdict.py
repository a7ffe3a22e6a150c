"""`python -m bench.body_zdict OUT`: make the zstd dictionary op bodies are stored with
(meshpos/ledger/body_codec.py).

Trained by zstd on the signed bodies of a made-up store (bench/zdict.py's catalogue, not the sample
one the bench sells from, so the bench's bytes per op are not flattered by a dictionary that knows
its product names): its catalogue, stock and customer ops and sales of every shape, each without
its `prev` hash (random bytes teach nothing). A released dictionary never changes: make a new
number instead.
"""

from __future__ import annotations

import zstandard

from bench.ledger_bench import STORE, Generator
from bench.zdict import made_up_rows
from bench.zdict import main as write_dictionary

SIZE = 16 * 1024
"""Measured on sale bodies: 16, 32, 64 and 110 KiB dictionaries compress them within 1 % of each
other; the smallest is the quickest to load and stays in the CPU's cache."""


def samples(seed: int = 7, sales: int = 6000) -> list[bytes]:
    gen = Generator(seed, names=("HQ", "Z1", "Z2"), rows=made_up_rows(), customers=50)
    ops = gen.preamble(100) + [gen.sale(1 + i % 2, gen.mix.next()) for i in range(sales)]
    # The bench's store name would flatter its figures: a made-up one of the same length.
    return [op.body[:-34].replace(STORE.encode(), b"SHOP1") for op in ops]


def build() -> bytes:
    return zstandard.train_dictionary(SIZE, samples()).as_bytes()


if __name__ == "__main__":
    write_dictionary(build, __doc__ or "")
