"""CSV bulk import: parse and check every row before anything is written.

Columns (header row required, any order, only ``title`` and ``price_sat``
required): title, description, description_format, kind, price_sat,
ref_currency, ref_minor, category, tags, inventory, min_qty, max_qty,
expires_at, shipping, variants, coupons, images, active. Repeated fields use
the line formats of ``lineformats`` with ``;`` between rows; ``images`` holds
file paths relative to the CSV file, separated by ``;``; ``expires_at`` is a
date (YYYY-MM-DD, UTC midnight) or unix seconds.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ValidationError
from . import lineformats, listings

COLUMNS = (
    "title", "description", "description_format", "kind", "price_sat", "ref_currency",
    "ref_minor", "category", "tags", "inventory", "min_qty", "max_qty", "expires_at",
    "shipping", "variants", "coupons", "images", "active",
)  # fmt: skip
MAX_ROWS = 100_000


@dataclass(frozen=True)
class Row:
    line: int
    data: dict[str, Any]
    images: list[Path]


def _expiry(value: str) -> int | str:
    value = value.strip()
    if not value or value.isdigit():
        return value
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise ValidationError({"expires_at": "a date YYYY-MM-DD or unix seconds"}) from None
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())


def _row_data(raw: dict[str | None, Any], base_dir: Path) -> tuple[dict[str, Any], list[Path]]:
    cell = {str(k): (v or "").strip() for k, v in raw.items()}
    data: dict[str, Any] = {k: cell[k] for k in cell if k in COLUMNS and cell[k] != ""}
    for name, parse in (
        ("shipping", lineformats.parse_shipping),
        ("variants", lineformats.parse_variants),
        ("coupons", lineformats.parse_coupons),
    ):
        if name in data:
            data[name] = parse(data[name], sep=";")
    if "expires_at" in data:
        data["expires_at"] = _expiry(data["expires_at"])
    currency, minor = data.pop("ref_currency", None), data.pop("ref_minor", None)
    if currency or minor:
        data["ref_price"] = {"currency": currency, "minor": minor}
    paths = [base_dir / p.strip() for p in data.pop("images", "").split(";") if p.strip()]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ValidationError({"images": f"file not found: {missing[0]}"})
    return data, paths


def _records(reader: csv.DictReader[str]) -> Iterator[dict[str | None, Any]]:
    try:
        yield from reader
    except csv.Error as exc:
        raise ValidationError({"file": f"line {reader.line_num}: not valid CSV ({exc})"}) from None


def parse(text: str, *, base_dir: Path, max_images: int, now: int) -> list[Row]:
    """All rows, each checked; one ValidationError naming every bad line."""
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    unknown = [h for h in header if h not in COLUMNS]
    if unknown or "title" not in header or "price_sat" not in header:
        raise ValidationError(
            {"header": f"columns must include title and price_sat; unknown: {', '.join(unknown) or 'none'}"}
        )
    rows: list[Row] = []
    problems: dict[str, str] = {}
    for raw in _records(reader):
        line = reader.line_num
        if len(rows) >= MAX_ROWS:
            raise ValidationError({"file": f"at most {MAX_ROWS} rows per import"})
        if None in raw:  # DictReader's place for cells beyond the header
            problems[f"line {line}"] = "more cells than the header has columns (a comma inside a cell needs quotes)"
            continue
        try:
            data, paths = _row_data(raw, base_dir)
            listings.validate(dict(data, images=[]), max_images=max_images, now=now)
            if len(paths) > max_images:
                raise ValidationError({"images": f"at most {max_images} images"})
        except ValidationError as exc:
            for field_name, message in exc.fields.items():
                problems[f"line {line}: {field_name}"] = message
            continue
        rows.append(Row(line, data, paths))
    if problems:
        raise ValidationError(problems, f"{len(problems)} problem(s) in the CSV; nothing was imported")
    return rows
