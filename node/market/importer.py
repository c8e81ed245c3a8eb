"""CSV bulk import: decode, parse and check every row (and image) before anything is written.

Columns (header row required, any order, each at most once, only ``title``
and ``price_sat`` required): title, description, description_format, kind,
price_sat, ref_currency, ref_minor, category, tags, inventory, min_qty,
max_qty, expires_at, shipping, variants, coupons, images, active. Repeated
fields use the line formats of ``lineformats`` with ``;`` between rows;
``images`` holds file paths relative to the CSV file, separated by ``;``;
``expires_at`` is a date (YYYY-MM-DD, UTC midnight) or unix seconds.

Problems are keyed ``line N: field`` where N is the line of the file on which
the row starts (a quoted cell may span several lines).

Each row carries an idempotency key (``row_key``): a hash of its cells by
column name plus how many identical rows came before it in the file. The
store skips a row whose key it already holds, so importing a file again, or
resuming a cut-off import with ``--from-line``, never stores a row twice.

Rows are then written in batches (``batches``), each one atomic and
acknowledged. The store is one JSON file rewritten whole per write, so batches
grow with what is already imported: the bytes written stay proportional to
the file's size instead of growing with its square.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import PayloadTooLarge, ValidationError
from . import images as image_check
from . import lineformats, listings

COLUMNS = (
    "title", "description", "description_format", "kind", "price_sat", "ref_currency",
    "ref_minor", "category", "tags", "inventory", "min_qty", "max_qty", "expires_at",
    "shipping", "variants", "coupons", "images", "active",
)  # fmt: skip
MAX_ROWS = 100_000
FIRST_BATCH = 50  # rows in the first write: early feedback, little lost by a crash
SAVE_AS_UTF8 = 'save the file as UTF-8 ("CSV UTF-8" in a spreadsheet\'s Save As) and import again'
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True)
class Row:
    line: int  # the file line the row starts on
    data: dict[str, object]  # listing input, checked by listings.validate but not yet stored
    images: list[Path]
    size: int = 0  # rough size of the row as JSON, bytes (to keep a batch within a request)
    key: str = ""  # idempotency key (row_key): the store skips a row whose key it already holds


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_side: int


# -- decoding ------------------------------------------------------------------
def decode(data: bytes) -> str:
    """The file as text (UTF-8, with or without a BOM); else the line and byte that are not UTF-8."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValidationError({"file": f"is UTF-16 text; {SAVE_AS_UTF8}"}, "the file is not UTF-8 text")
    skip = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        line_start = max(data.rfind(b"\n", 0, offset), data.rfind(b"\r", 0, offset)) + 1
        line = len(_LINE_BREAK.findall(data, 0, offset)) + 1
        where = f"byte {offset} of the file (0x{data[offset]:02x}, column {offset - line_start + 1} of the line)"
        raise ValidationError(
            {f"line {line}": f"{where} is not UTF-8 text; {SAVE_AS_UTF8}"},
            f"the file is not UTF-8 text (line {line}, byte {offset}); nothing was imported",
        ) from None


# -- rows ----------------------------------------------------------------------
def _expiry(value: str) -> int | str:
    value = value.strip()
    if not value or value.isdigit():
        return value
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        raise ValidationError({"expires_at": "a date YYYY-MM-DD or unix seconds"}) from None
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())


def _row_data(cell: dict[str, str], base_dir: Path) -> tuple[dict[str, object], list[Path]]:
    """The row as listing input (its cells still text where validation reads text) and its image paths."""
    given = {k: v for k, v in cell.items() if v != ""}
    data: dict[str, object] = dict(given)
    for name, parse_lines in (
        ("shipping", lineformats.parse_shipping),
        ("variants", lineformats.parse_variants),
        ("coupons", lineformats.parse_coupons),
    ):
        if name in given:
            data[name] = parse_lines(given[name], sep=";")
    if "expires_at" in given:
        data["expires_at"] = _expiry(given["expires_at"])
    currency, minor = data.pop("ref_currency", None), data.pop("ref_minor", None)
    if currency or minor:
        data["ref_price"] = {"currency": currency, "minor": minor}
    data.pop("images", None)
    paths = [base_dir / p.strip() for p in given.get("images", "").split(";") if p.strip()]
    return data, paths


def _positions(header: list[str], name: str) -> str:
    return " and ".join(str(i + 1) for i, h in enumerate(header) if h == name)


def _header(fields: list[str]) -> list[str]:
    header = [h.strip() for h in fields]
    doubled = [name for name, n in Counter(header).items() if n > 1]
    if doubled:
        where = "; ".join(f"{name!r} is columns {_positions(header, name)}" for name in doubled)
        raise ValidationError({"header": f"a column appears more than once ({where}): keep one of each"})
    unknown = [repr(h) for h in header if h not in COLUMNS]
    if unknown or "title" not in header or "price_sat" not in header:
        raise ValidationError(
            {"header": f"columns must include title and price_sat; unknown: {', '.join(unknown) or 'none'}"}
        )
    return header


def _records(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line the record starts on, cells) for each non-blank record, the header first."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)  # an unclosed quote is an error
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if "field larger than field limit" in str(exc):
                problem = f"a cell of the row starting here is longer than {csv.field_size_limit()} characters"
            elif "unexpected end of data" in str(exc):
                problem = 'a quote (") opened in the row starting here is never closed'
            else:
                problem = f"not valid CSV ({exc}); check the quotes of the row starting here"
            raise ValidationError({f"line {start}": problem}) from None
        if cells:  # a blank line is no record
            yield start, cells


def _size(cells: list[str]) -> int:
    """An upper estimate of the row's JSON size (non-ASCII may become \\uXXXX escapes)."""
    return 600 + sum(len(c) if c.isascii() else 6 * len(c) for c in cells)


def _cells(header: list[str], cells: list[str]) -> dict[str, str]:
    return {name: value.strip() for name, value in zip(header, cells, strict=False)}


def row_key(header: list[str], cells: list[str], seen: Counter[str]) -> str:
    """``csv:<hash of the row's non-empty cells by column>:<n>``, n counting identical rows so far.

    Content, not the file's bytes or line numbers: a file saved again by a
    spreadsheet (other line endings, quoting, column order, a BOM) or with
    rows added keeps its keys, and an edited row becomes a new listing. The
    count keeps identical rows of one file apart (both are imported).
    """
    content = sorted((k, v) for k, v in _cells(header, cells).items() if v)
    digest = hashlib.sha256(json.dumps(content, ensure_ascii=False).encode()).hexdigest()[:32]
    seen[digest] += 1
    return f"csv:{digest}:{seen[digest]}"


def _row(line: int, header: list[str], cells: list[str], base_dir: Path, max_images: int, now: int, key: str) -> Row:
    if len(cells) > len(header):
        raise ValidationError(
            {f"line {line}": "more cells than the header has columns (a comma inside a cell needs quotes)"}
        )
    cell = _cells(header, cells)
    try:
        data, paths = _row_data(cell, base_dir)
        listings.validate(dict(data, images=[]), max_images=max_images, now=now)
        if len(paths) > max_images:
            raise ValidationError({"images": f"at most {max_images} images"})
    except ValidationError as exc:
        raise ValidationError({f"line {line}: {k}": v for k, v in exc.fields.items()}) from None
    return Row(line, data, paths, _size(cells), key)


def parse(
    text: str,
    *,
    base_dir: Path,
    max_images: int,
    now: int,
    image_limits: ImageLimits | None = None,
    from_line: int = 1,
) -> list[Row]:
    """The rows starting on ``from_line`` or later, each checked; one ValidationError naming every bad line.

    Image files must exist; with ``image_limits`` each one is also decoded by
    ``images.process`` (format, bytes, pixels), so a bad image fails the whole
    import before anything is written. Rows before ``from_line`` (an import
    being resumed) are not checked, only counted for the keys (``row_key``).
    """
    records = _records(text)
    first = next(records, None)
    header = _header(first[1] if first else [])
    rows: list[Row] = []
    problems: dict[str, str] = {}
    count, seen = 0, Counter[str]()
    try:
        for line, cells in records:
            count += 1
            if count > MAX_ROWS:
                break
            key = row_key(header, cells, seen)  # rows before from_line count too: keys match the first run
            if line < from_line:
                continue
            try:
                rows.append(_row(line, header, cells, base_dir, max_images, now, key))
            except ValidationError as exc:
                problems.update(exc.fields)
    except ValidationError as exc:  # unreadable CSV from here on: report it with what was found before
        problems.update(exc.fields)
    if count > MAX_ROWS:
        limit = f"at most {MAX_ROWS} rows per import; split the file"
        raise ValidationError({"file": f"has more than {MAX_ROWS} rows: {limit}"}, limit)
    problems.update(image_problems(rows, image_limits))
    if problems:
        raise ValidationError(problems, f"{len(problems)} problem(s) in the CSV; nothing was imported")
    return rows


# -- images --------------------------------------------------------------------
def _image_problem(path: Path, limits: ImageLimits | None) -> str | None:
    if not path.is_file():
        return "file not found"
    if limits is None:
        return None
    try:
        with path.open("rb") as fh:
            data = fh.read(limits.max_bytes + 1)  # enough to tell it is too big, never more
    except OSError as exc:
        return f"cannot read it ({exc.strerror})"
    try:
        image_check.process(data, max_bytes=limits.max_bytes, max_side=limits.max_side)
    except PayloadTooLarge:
        return f"is {path.stat().st_size} bytes; the limit is {limits.max_bytes} (setting max_image_bytes)"
    except ValidationError as exc:
        return "; ".join(exc.fields.values()) or exc.message
    return None


def image_problems(rows: list[Row], limits: ImageLimits | None) -> dict[str, str]:
    """``line N: images`` -> what is wrong with which file; each file is checked once."""
    verdicts: dict[Path, str | None] = {}
    problems: dict[str, str] = {}
    for row in rows:
        found = []
        for path in row.images:
            if path not in verdicts:
                verdicts[path] = _image_problem(path, limits)
            if verdicts[path] is not None:
                found.append(f"{path}: {verdicts[path]}")
        if found:
            problems[f"line {row.line}: images"] = "; ".join(found)
    return problems


# -- writing -------------------------------------------------------------------
def batches(rows: list[Row], *, max_bytes: int, fixed: int | None = None) -> Iterator[list[Row]]:
    """Consecutive slices of ``rows``, one atomic write each.

    ``fixed``: that many rows per batch. Otherwise FIRST_BATCH rows, then
    each batch as many rows as were written before it (the total doubles), so
    n rows take about log2(n / FIRST_BATCH) whole-file rewrites and the bytes
    written stay below twice the final file (plus what the store held before,
    once per batch). A batch never exceeds ``max_bytes`` by the rows'
    estimated size (the node's request limit) unless it is a single row.
    """
    done = 0
    while done < len(rows):
        want = fixed or max(FIRST_BATCH, done)
        end, size = done, 0
        while end < len(rows) and end - done < want and (end == done or size + rows[end].size <= max_bytes):
            size += rows[end].size
            end += 1
        yield rows[done:end]
        done = end
