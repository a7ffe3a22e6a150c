"""How op bodies are kept in the `ops` table: zstd with a dictionary, restored exactly on every read.

Storage only. Signatures and hashes cover the body as signed; every read gives back exactly those
bytes, and no compressed byte leaves the database (sync, bundles, HQ relay and verify all read
through `restore`). Compressing a sale body costs ~2 µs, restoring it ~1 µs.

Two kinds of dictionary. One shipped with the package (`bench/body_zdict.py` trains it on a made-up
store) takes a ~600-byte sale to ~275 bytes from the first op. Once a database holds `TRAIN_AFTER`
ops, zstd trains a dictionary on its latest 2,000 (0.1 s, once in its life), which knows this
store's catalogue, terminals and staff and takes a sale to ~150 bytes; it is kept in the database's
`body_dicts` table under an id made from its content, so a process that holds several databases
never mixes theirs up. Older rows keep the dictionary they were written with.

Each row says how it is stored, by its first byte: an op body is a msgpack array, so it starts at
0x90 or above, and a row that does is the body as signed (every row of a database written before
this codec, and any body compression would not shrink); 1-0x3f is a zstd frame (without zstd's
4-byte magic) compressed with the shipped dictionary of that number; `TRAINED` is followed by the
4-byte id of the database's dictionary, then the frame. A shipped dictionary never changes once
released: a new one gets the next number, so old rows keep reading and a row of a dictionary this
meshpos lacks is refused by name, not misread.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from functools import cache

import zstandard

from meshpos.core.errors import EncodingError
from meshpos.core.ops import MAX_OP_BYTES
from meshpos.core.shipped import shipped_dictionary

DICTIONARIES = {1: "body-zdict-1.bin"}
SHIPPED = 1
"""The shipped dictionary new rows are written with until the database has its own."""

TRAINED = 0x40
"""First byte of a row compressed with the database's own dictionary."""

TRAIN_AFTER = 5000
TRAIN_ON = 2000
TRAIN_SIZE = 32 * 1024
"""Measured on the bench's store: a 32 KiB dictionary trained on its first 2,000 / 5,000 / 10,000
ops stores a later sale in 155 / 150 / 149 bytes (a 16 KiB one in 163 / 155 / 154), on the latest
2,000 of its first 5,000 (past the catalogue import, mostly sales) in 147, in 0.1 s."""

LEVEL = 1
"""zstd's effort, measured on the bench's sales with the database's own dictionary: level 1
compresses a sale in ~2.1 µs to 151 bytes, level 3 in ~3 µs to 147, level 5 spends ~2 µs more
for ~5 % fewer bytes. Merging pays this for every op, so the cheapest level."""

PLAIN_FROM = 0x90
"""Rows whose first byte is at least this are bodies as signed (a msgpack array starts here)."""

_PARAMS = dict(
    format=zstandard.FORMAT_ZSTD1_MAGICLESS,
    write_checksum=0,  # the hash chain checks every body
    write_dict_id=0,  # the row names its dictionary
    write_content_size=1,
)


def _compressor(data: bytes) -> zstandard.ZstdCompressor:
    params = zstandard.ZstdCompressionParameters.from_level(LEVEL, **_PARAMS)
    return zstandard.ZstdCompressor(
        dict_data=zstandard.ZstdCompressionDict(data), compression_params=params
    )


def _decompressor(data: bytes) -> zstandard.ZstdDecompressor:
    return zstandard.ZstdDecompressor(
        dict_data=zstandard.ZstdCompressionDict(data), format=zstandard.FORMAT_ZSTD1_MAGICLESS
    )


@cache
def _shipped(number: int) -> bytes:
    return shipped_dictionary(DICTIONARIES, number, "an op in this database was stored with body")


_dictionaries: dict[int, bytes] = {}
"""Databases' own dictionaries by content id, for every database this process reads (bytes only:
zstd's objects are not safe to share between threads, so each thread builds its own from these)."""

_threads = threading.local()


def dictionary_id(data: bytes) -> int:
    return int.from_bytes(hashlib.sha256(data).digest()[:4], "big")


def _trained(conn: sqlite3.Connection | None, ident: int) -> bytes:
    data = _dictionaries.get(ident)
    if data is not None:
        return data
    row = None
    if conn is not None:
        row = conn.execute("SELECT dict FROM body_dicts WHERE id = ?", (ident,)).fetchone()
    if row is None or dictionary_id(bytes(row[0])) != ident:
        raise EncodingError(
            f"this database's body dictionary {ident:08x} is missing or damaged, so the ops "
            "stored with it cannot be read; restore the database from a backup, or from a peer"
        )
    _dictionaries[ident] = data = bytes(row[0])
    return data


def _decompressor_of(key: int, conn: sqlite3.Connection | None) -> zstandard.ZstdDecompressor:
    """This thread's decompressor for shipped dictionary `key`, or (above 0xff) the database's
    own dictionary of id `key - 0x100`."""
    mine: dict[int, zstandard.ZstdDecompressor] | None = getattr(_threads, "decompressors", None)
    if mine is None:
        mine = _threads.decompressors = {}
    got = mine.get(key)
    if got is None:
        data = _shipped(key) if key <= 0xFF else _trained(conn, key - 0x100)
        if len(mine) >= 64:
            mine.clear()
        mine[key] = got = _decompressor(data)
    return got


def restore(
    data: bytes, origin: str = "", seq: int = 0, conn: sqlite3.Connection | None = None
) -> bytes:
    """The signed body a row of the `ops` table holds. `conn`: the database it was read from
    (where its own dictionary is); `origin` and `seq` name the op in errors."""
    if not data or data[0] >= PLAIN_FROM:
        return data
    try:
        if data[0] == TRAINED:
            key = 0x100 + int.from_bytes(data[1:5], "big")
            return _decompressor_of(key, conn).decompress(memoryview(data)[5:], MAX_OP_BYTES)
        return _decompressor_of(data[0], None).decompress(memoryview(data)[1:], MAX_OP_BYTES)
    except zstandard.ZstdError as exc:
        what = f"op {origin}:{seq}" if origin else "an op"
        raise EncodingError(
            f"{what} is damaged in this database: its stored body does not decompress ({exc}); "
            "restore the database from a backup, or from a peer"
        ) from None


class BodyStore:
    """One database's op bodies: compressed with its own dictionary once it has one, the shipped
    one before. Held by the Ledger, so used by one thread, as the Ledger is."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._prefix = bytes((SHIPPED,))
        self._compressor = _compressor(_shipped(SHIPPED))
        self._own = False
        self._looked = False
        self._gave_up = False

    def store(self, body: bytes) -> bytes:
        """The bytes to keep in the `ops` table for signed body `body` (in a write transaction)."""
        if not self._looked:
            self._looked = True
            self._adopt()
        packed = self._prefix + self._compressor.compress(body)
        if len(packed) >= len(body) and body[:1] >= b"\x90":
            return body
        return packed

    def restore(self, data: bytes, origin: str = "", seq: int = 0) -> bytes:
        return restore(data, origin, seq, self.conn)

    def keep_up(self) -> None:
        """In a write transaction that stored ops: once the database holds `TRAIN_AFTER` ops,
        train its own dictionary on the latest of them (once; or take the one another process
        on the file trained) and store new bodies with it."""
        if self._own or self._gave_up:
            return
        held = self.conn.execute("SELECT COALESCE(SUM(seq), 0) FROM vv").fetchone()[0]
        if held < TRAIN_AFTER or self._adopt():
            return
        rows = self.conn.execute(
            "SELECT origin, seq, body FROM ops ORDER BY rowid DESC LIMIT ?", (TRAIN_ON,)
        ).fetchall()
        try:
            # Without the `prev` hash each body ends with: random bytes teach nothing.
            samples: list[bytes | bytearray | memoryview] = [
                self.restore(b, o, q)[:-34] for o, q, b in rows
            ]
            data = zstandard.train_dictionary(TRAIN_SIZE, samples, level=LEVEL).as_bytes()
        except (zstandard.ZstdError, EncodingError):
            # Too little to learn from, or a damaged row (verify names it): the shipped
            # dictionary serves, and the sale being stored is not held up.
            self._gave_up = True
            return
        self.conn.execute(
            "INSERT OR IGNORE INTO body_dicts VALUES (?, ?)", (dictionary_id(data), data)
        )
        self._adopt()

    def _adopt(self) -> bool:
        row = self.conn.execute("SELECT id, dict FROM body_dicts ORDER BY id LIMIT 1").fetchone()
        if row is None:
            return False
        ident, data = int(row[0]), bytes(row[1])
        self._prefix = bytes((TRAINED,)) + ident.to_bytes(4, "big")
        self._compressor = _compressor(data)
        self._own = True
        return True
