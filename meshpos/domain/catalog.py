"""Catalogue CSV import: validate every row before anything is written, and name the bad cell."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from meshpos.core.errors import InputError
from meshpos.domain.gst import check_hsn
from meshpos.domain.money import parse_rate, parse_rupees

SAMPLE_CATALOG = Path(__file__).resolve().parents[1] / "data" / "sample_catalog.csv"

# The product fields a catalogue row sets (the fold adds `active`), and the file's columns.
FIELDS = ("name", "barcode", "category", "size", "colour", "price", "gst_rate", "hsn")
COLUMNS = ("sku", *FIELDS, "stock")
REQUIRED = ("sku", "name", "price", "gst_rate")
MAX_ROWS = 200_000


@dataclass(frozen=True)
class CatalogRow:
    line: int
    sku: str
    fields: dict[str, str | int]
    stock: int


def parse_csv(text: str, source: str = "CSV") -> list[CatalogRow]:
    """Parse a catalogue CSV. Raises InputError naming line and column of the first bad cell."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip().lower() for h in next(reader, [])]
    except csv.Error as exc:
        raise InputError(f"{source} line 1: the header is not valid CSV ({exc})") from None
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InputError(f"{source}: header lacks column(s) {', '.join(missing)}")
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        raise InputError(f"{source}: unknown column(s) {', '.join(unknown)}")
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise InputError(f"{source}: header repeats column(s) {', '.join(repeated)}")
    rows: list[CatalogRow] = []
    seen: dict[str, int] = {}
    while True:
        line = reader.line_num + 1
        try:
            raw = next(reader, None)
        except csv.Error as exc:
            raise InputError(f"{source} line {line}: not valid CSV ({exc})") from None
        if raw is None:
            break
        if len(raw) > len(header):
            raise InputError(
                f"{source} line {line}, column {len(header) + 1}: more cells than the header's "
                f"{len(header)} columns"
            )
        cells = dict(zip(header, (v.strip() for v in raw), strict=False))
        for col, value in cells.items():
            if any(ch in value for ch in "\r\n"):
                raise InputError(
                    f"{source} line {line}, column {col}: the cell runs over several lines "
                    "(a quote is not closed?)"
                )
            if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
                raise InputError(f"{source} line {line}, column {col}: holds control characters")
        if not any(cells.values()):
            continue
        rows.append(_row(cells, line, source, seen))
        if len(rows) > MAX_ROWS:
            raise InputError(f"{source}: more than {MAX_ROWS} rows; split the file")
    if not rows:
        raise InputError(f"{source}: no products in the file")
    return rows


def _row(cells: dict[str, str], line: int, source: str, seen: dict[str, int]) -> CatalogRow:
    where = f"{source} line {line}, column"
    for col in REQUIRED:
        if not cells.get(col):
            raise InputError(f"{where} {col}: value is missing")
    sku = cells["sku"]
    if any(ch.isspace() for ch in sku) or len(sku) > 64:
        raise InputError(f"{where} sku: {sku!r} is not a valid SKU")
    if sku in seen:
        raise InputError(f"{where} sku: {sku!r} repeats line {seen[sku]}")
    seen[sku] = line
    fields: dict[str, str | int] = {"name": cells["name"]}
    for col in ("barcode", "category", "size", "colour"):
        if cells.get(col):
            fields[col] = cells[col]
    if cells.get("barcode") and not (cells["barcode"].isascii() and cells["barcode"].isdigit()):
        raise InputError(f"{where} barcode: {cells['barcode']!r} is not digits")
    if cells.get("hsn"):
        try:
            fields["hsn"] = check_hsn(cells["hsn"])
        except InputError as exc:
            raise InputError(f"{where} hsn: {exc}") from None
    for col, parse in (("price", parse_rupees), ("gst_rate", parse_rate)):
        try:
            fields[col] = parse(cells[col], col)
        except InputError as exc:
            raise InputError(f"{where} {col}: {exc}") from None
    stock_text = cells.get("stock") or "0"
    if not (stock_text.isascii() and stock_text.isdigit()):
        raise InputError(f"{where} stock: {stock_text!r} is not a whole number >= 0")
    return CatalogRow(line, sku, fields, int(stock_text))
