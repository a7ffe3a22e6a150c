"""Catalogue CSV import: validate every row before anything is written, and name the bad cell."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from meshpos.domain.money import parse_rate, parse_rupees
from meshpos.errors import InputError

COLUMNS = ("sku", "name", "barcode", "category", "size", "colour", "price", "gst_rate", "stock")
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
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InputError(f"{source}: header lacks column(s) {', '.join(missing)}")
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        raise InputError(f"{source}: unknown column(s) {', '.join(unknown)}")
    reader.fieldnames = header
    rows: list[CatalogRow] = []
    seen: dict[str, int] = {}
    for raw in reader:
        line = reader.line_num
        if None in raw:
            raise InputError(f"{source} line {line}: more cells than the header has columns")
        cells = {k: (v or "").strip() for k, v in raw.items()}
        if not any(cells.values()):
            continue
        for col in REQUIRED:
            if not cells.get(col):
                raise InputError(f"{source} line {line}, column {col}: value is missing")
        sku = cells["sku"]
        if any(ch.isspace() for ch in sku) or len(sku) > 64:
            raise InputError(f"{source} line {line}, column sku: {sku!r} is not a valid SKU")
        if sku in seen:
            raise InputError(f"{source} line {line}, column sku: {sku!r} repeats line {seen[sku]}")
        seen[sku] = line
        fields: dict[str, str | int] = {"name": cells["name"]}
        for col in ("barcode", "category", "size", "colour"):
            if cells.get(col):
                fields[col] = cells[col]
        if cells.get("barcode") and not cells["barcode"].isdigit():
            raise InputError(f"{source} line {line}, column barcode: {cells['barcode']!r} is not digits")
        try:
            fields["price"] = parse_rupees(cells["price"], "price")
            fields["gst_rate"] = parse_rate(cells["gst_rate"], "gst_rate")
        except InputError as exc:
            col = "price" if "price" in str(exc) else "gst_rate"
            raise InputError(f"{source} line {line}, column {col}: {exc}") from None
        stock_text = cells.get("stock") or "0"
        if not stock_text.isdigit():
            raise InputError(
                f"{source} line {line}, column stock: {stock_text!r} is not a whole number >= 0"
            )
        rows.append(CatalogRow(line, sku, fields, int(stock_text)))
        if len(rows) > MAX_ROWS:
            raise InputError(f"{source}: more than {MAX_ROWS} rows; split the file")
    if not rows:
        raise InputError(f"{source}: no products in the file")
    return rows
