"""Readable payment card numbers in a node's files, for `meshpos verify`.

A hit is a 13-19 digit run passing the Luhn check with a card brand's issuer prefix and length;
a 13-digit run that is also a valid EAN-13 is taken for a barcode. Only the sealed blob, the last
four digits and the brand may ever be on disk.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from meshpos.devices.barcodes import is_valid_ean13
from meshpos.domain.cards import luhn_ok
from meshpos.service.config import NodeConfig

# A maximal run of 13-19 digits, or 4-digit groups split by single spaces or dashes.
# Not next to a hex letter either: keys, node ids and signatures written as hex text are full of
# digit runs, and one in a few thousand random keys holds a Luhn-valid run with a card prefix.
_CARD = re.compile(
    rb"(?<![0-9a-f])(?:[0-9]{13,19}|[0-9]{4}(?:[ -][0-9]{4}){2,3}(?:[ -][0-9]{1,3})?)(?![0-9a-f])"
)
_CHUNK = 4 << 20
_OVERLAP = 64
_CONTEXT = 32


@dataclass(frozen=True)
class CardHit:
    path: Path
    offset: int
    masked: str

    def __str__(self) -> str:
        return f"readable card number {self.masked} in {self.path} at byte {self.offset}"


def issuer_ok(d: str) -> bool:
    """An issuer prefix and length of a real card brand (Visa, Mastercard, Amex, Diners, JCB,
    Discover, UnionPay, Maestro, RuPay). In-store barcodes (GS1 prefixes 20-29), India's EAN
    prefix 890 and millisecond timestamps fall outside them."""
    n, p2, p3, p4 = len(d), int(d[:2]), int(d[:3]), int(d[:4])
    if d[0] == "4":
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return n == 16
    if p2 in (34, 37):
        return n == 15
    if p2 in (36, 38, 39) or 300 <= p3 <= 305:
        return 14 <= n <= 19
    if 3528 <= p4 <= 3589 or p3 in (353, 356):
        return 16 <= n <= 19
    if d[0] == "6" or p2 == 50 or 56 <= p2 <= 58 or p2 in (81, 82):
        return 13 <= n <= 19
    return False


def looks_like_card(digits: str) -> bool:
    """13-19 digits, Luhn-valid, with a card brand's prefix and length; a 13-digit run that is
    also a valid EAN-13 is taken for a barcode."""
    if not 13 <= len(digits) <= 19 or not luhn_ok(digits) or not issuer_ok(digits):
        return False
    return not (len(digits) == 13 and is_valid_ean13(digits))


def _mask(digits: str) -> str:
    return digits[:4] + "*" * (len(digits) - 8) + digits[-4:]


# Digits -> "1", space and dash -> "2", anything else -> "0": bytes.translate and bytes.find run
# at memory speed, so only the rare stretches that could hold a card number meet the regex.
_CLASSES = bytes(0x31 if 48 <= b <= 57 else 0x32 if b in (0x20, 0x2D) else 0x30 for b in range(256))


_NEEDLES = (b"1" * 13, b"11112111121111")


def _stretches(mapped: bytes) -> list[tuple[int, int]]:
    """Maximal stretches of digits and separators that contain 13 digits in a row or three
    separated groups of four."""
    spans: set[tuple[int, int]] = set()
    for needle in _NEEDLES:
        i = mapped.find(needle)
        while i != -1:
            start, end = i, i + len(needle)
            while start > 0 and mapped[start - 1] != 0x30:
                start -= 1
            while end < len(mapped) and mapped[end] != 0x30:
                end += 1
            spans.add((start, end))
            i = mapped.find(needle, end)
    return sorted(spans)


def scan_bytes(data: bytes) -> Iterator[tuple[int, str]]:
    seen: set[int] = set()
    for start, end in _stretches(data.translate(_CLASSES)):
        for m in _CARD.finditer(data, max(0, start - 1), min(len(data), end + 1)):
            digits = re.sub(rb"[ -]", b"", m.group()).decode()
            if m.start() not in seen and looks_like_card(digits):
                seen.add(m.start())
                yield m.start(), digits


def scan_file(path: Path, chunk_size: int = _CHUNK) -> list[CardHit]:
    """Scan in chunks; each round keeps the last bytes so a number split across two reads is
    found once, with the byte before it in view (a run of 20+ digits is not a card number)."""
    hits: list[CardHit] = []
    try:
        with open(path, "rb") as fh:
            data, base, ctx = b"", 0, 0
            while True:
                chunk = fh.read(chunk_size)
                data += chunk
                final = not chunk
                limit = len(data) if final else max(ctx, len(data) - _OVERLAP)
                for off, digits in scan_bytes(data):
                    if off < ctx:
                        continue
                    if off >= limit:
                        break
                    hits.append(CardHit(path, base + off, _mask(digits)))
                if final:
                    return hits
                cut = max(0, limit - _CONTEXT)
                base, data, ctx = base + cut, data[cut:], limit - cut
    except OSError:
        return hits


def find_card_numbers(paths: Iterable[Path]) -> list[CardHit]:
    """Every readable card number in the given files and, recursively, directories."""
    hits: list[CardHit] = []
    for root in paths:
        if root.is_file():
            hits += scan_file(root)
        elif root.is_dir():
            for path in sorted(root.rglob("*")):
                if path.is_file() and not path.is_symlink():
                    hits += scan_file(path)
    return hits


def card_number_problems(cfg: NodeConfig) -> list[str]:
    """For `meshpos verify`: card numbers readable anywhere the node keeps files (database, WAL,
    backups, receipts, logs) and in the off-site backup directory if one is configured."""
    roots = [cfg.dir]
    offsite = cfg.section("backup").get("offsite_dir")
    if isinstance(offsite, str) and offsite:
        roots.append(Path(offsite).expanduser())
    return [str(hit) for hit in find_card_numbers(roots)]
