"""How op bodies are kept in the `ops` table: zstd with a dictionary shipped with the package.

Storage only. Signatures and hashes cover the body as signed; every read gives back exactly those
bytes, and no compressed byte leaves the database (sync, bundles, HQ relay and verify all read
through `restore`). A sale body of ~600 bytes is stored in ~270 (+1 for the marker); compressing
it costs ~4 µs, restoring it ~1 µs.

Each row says how it is stored, by its first byte: an op body is a msgpack array, so it starts at
0x90 or above, and a row that does is the body as signed (every row of a database written before
this codec, and any body that compression would not shrink); a row starting with 1-0x7f is a zstd
frame (without zstd's 4-byte magic) compressed with the dictionary of that number. A dictionary is
shipped under its number and never changed once released (`bench/body_zdict.py` trains one): a
new one gets the next number, so old rows keep reading and a database holding rows of a newer
dictionary than this meshpos knows is refused by name, not misread.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import zstandard

from meshpos.core.errors import EncodingError
from meshpos.core.ops import MAX_OP_BYTES

DICTIONARIES = {1: "body-zdict-1.bin"}
CURRENT = 1
"""The dictionary new rows are written with."""

LEVEL = 3
"""zstd's effort, measured on the bench's sales: level 3 stores a sale in ~267 bytes for ~4 µs,
level 5 in ~253 for ~6 µs (more than merging gains from storing less), level 1 in ~274."""

PLAIN_FROM = 0x90
"""Rows whose first byte is at least this are bodies as signed (a msgpack array starts here)."""


@cache
def _dictionary(number: int) -> zstandard.ZstdCompressionDict:
    name = DICTIONARIES.get(number)
    if name is None:
        raise EncodingError(
            f"an op in this database was stored with body dictionary {number}, which this version "
            f"of meshpos does not have (it has {', '.join(map(str, sorted(DICTIONARIES)))}): "
            "upgrade meshpos to read it"
        )
    return zstandard.ZstdCompressionDict(files("meshpos").joinpath("data", name).read_bytes())


@cache
def _compressor(number: int) -> zstandard.ZstdCompressor:
    params = zstandard.ZstdCompressionParameters.from_level(
        LEVEL,
        format=zstandard.FORMAT_ZSTD1_MAGICLESS,
        write_checksum=0,  # the hash chain checks every body
        write_dict_id=0,  # the row's first byte names the dictionary
        write_content_size=1,
    )
    return zstandard.ZstdCompressor(dict_data=_dictionary(number), compression_params=params)


@cache
def _decompressor(number: int) -> zstandard.ZstdDecompressor:
    return zstandard.ZstdDecompressor(
        dict_data=_dictionary(number), format=zstandard.FORMAT_ZSTD1_MAGICLESS
    )


def store(body: bytes) -> bytes:
    """The bytes to keep in the `ops` table for signed body `body`."""
    packed = _compressor(CURRENT).compress(body)
    if len(packed) + 1 >= len(body) and body[:1] >= bytes((PLAIN_FROM,)):
        return body
    return bytes((CURRENT,)) + packed


def restore(data: bytes, origin: str = "", seq: int = 0) -> bytes:
    """The signed body a row of the `ops` table holds (`origin` and `seq` name it in errors)."""
    if not data or data[0] >= PLAIN_FROM:
        return data
    try:
        return _decompressor(data[0]).decompress(memoryview(data)[1:], max_output_size=MAX_OP_BYTES)
    except zstandard.ZstdError as exc:
        what = f"op {origin}:{seq}" if origin else "an op"
        raise EncodingError(
            f"{what} is damaged in this database: its stored body does not decompress ({exc}); "
            "restore the database from a backup, or from a peer"
        ) from None
