"""Deflate with a preset dictionary for batches of ops on the wire and in bundles.

A batch of sale ops repeats its map keys, store, origin and catalogue text op after op, so deflate
takes a backlog from ~675 to under 200 bytes a sale; a lone op has nothing to repeat, so the
dictionary (sale op bodies of a made-up catalogue, `bench/zdict.py`) gives it the keys and the
shape of a sale to refer to. A dictionary is shipped with the package under its number and never
changed once released: a new one gets the next number, nodes advertise the numbers they hold in
their Hello, a sender uses the newest both sides hold, and a bundle names the one it used, so old
peers and old bundles are still read and a node without a dictionary refuses it by name.
"""

from __future__ import annotations

import zlib
from functools import cache

from meshpos.core.errors import EncodingError
from meshpos.core.shipped import shipped_dictionary

DICTIONARIES = {1: "sync-zdict-1.bin"}
LEVEL = 3
"""Deflate's effort: 3 takes half the sender's CPU of the default 6 (~6 against ~12 µs a sale
here) for ~9 % more bytes (~200 against ~185 a sale in a backlog)."""


MIN_BATCH = 1
"""Every Ops message with an op in it is deflated for a peer that reads a dictionary: a sale pushed
alone as it is rung goes from ~580 to ~300 bytes. Deflate starts from a copy of a compressor that
has already read the 32 KiB dictionary (~40 µs a lone sale here, against ~80 µs setting it up each
time); backlogs come in batches of up to `SyncConfig.batch_ops`."""


def for_batch(zdict: int, ops: int) -> int:
    """The dictionary to deflate a batch of `ops` ops with for a peer that reads `zdict`."""
    return zdict if ops >= MIN_BATCH else 0


def known() -> tuple[int, ...]:
    """The dictionary numbers this node can read, oldest first."""
    return tuple(sorted(DICTIONARIES))


def best(theirs: tuple[int, ...] | list[int]) -> int:
    """The newest dictionary both sides hold; 0 when none (then nothing is compressed)."""
    return max(set(theirs) & set(DICTIONARIES), default=0)


@cache
def dictionary(number: int) -> bytes:
    return shipped_dictionary(DICTIONARIES, number, "the data was compressed with")


@cache
def _primed(number: int) -> zlib._Compress:
    """A compressor that has read dictionary `number`; callers deflate with a copy of it
    (copying takes the object's lock, so threads may share it)."""
    return zlib.compressobj(LEVEL, zdict=dictionary(number))


def compress(data: bytes, number: int) -> bytes:
    packer = _primed(number).copy()
    return packer.compress(data) + packer.flush()


def decompress(data: bytes, number: int, limit: int) -> bytes:
    """Inflate at most `limit` bytes; more, or a damaged stream, is refused (no zip bombs)."""
    unpacker = zlib.decompressobj(zdict=dictionary(number))
    try:
        out = unpacker.decompress(data, limit)
    except zlib.error as exc:
        raise EncodingError(f"compressed data is damaged ({exc})") from None
    if unpacker.unconsumed_tail or not unpacker.eof:
        raise EncodingError(
            f"compressed data is truncated or inflates past the limit of {limit:,} bytes"
        )
    return out
