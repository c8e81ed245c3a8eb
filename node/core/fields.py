"""Small field checkers shared by listing and profile validation.

Each returns the cleaned value or records a message in ``errors`` under the
field's name, so a form can show every problem at once.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping
from typing import Any, overload

from .models import MAX_SATS, Sats

MAX_SAT: int = MAX_SATS
_MISSING = object()
Data = Mapping[str, object]
"""Untrusted input (JSON, a form, a CSV row) before it is checked."""


class Errors(dict[str, str]):
    def add(self, field: str, message: str) -> None:
        self.setdefault(field, message)


def whole_number(errors: Errors, name: str, text: str, default: int, low: int, high: int) -> int:
    """A query-string count (``limit``, ``offset``): ``default`` when empty; a problem in ``errors`` when it is
    not a whole number from ``low`` to ``high``."""
    text = text.strip()
    if not text:
        return default
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        errors.add(name, f"must be a whole number from {low} to {high}")
        return default
    return int(text)


def _clean_text(value: str, multiline: bool) -> str:
    value = unicodedata.normalize("NFC", value.replace("\r\n", "\n").replace("\r", "\n"))
    allowed = "\n\t" if multiline else ""
    # Fast path: printable text has no control or format characters (category C) to drop.
    if (value.replace("\n", "").replace("\t", "") if multiline else value).isprintable():
        return value.strip()
    return "".join(c for c in value if c in allowed or unicodedata.category(c)[0] != "C").strip()


def text(
    data: Data,
    name: str,
    errors: Errors,
    *,
    max_len: int,
    required: bool = False,
    multiline: bool = False,
    default: str = "",
    field: str | None = None,
) -> str:
    field = field or name
    value = data.get(name, _MISSING)
    if value is _MISSING or value is None:
        value = default
    if not isinstance(value, str):
        errors.add(field, "must be text")
        return default
    value = _clean_text(value, multiline)
    if required and not value:
        errors.add(field, "is required")
    elif len(value) > max_len:
        errors.add(field, f"must be at most {max_len} characters (got {len(value)})")
    return str(value)


@overload
def integer(
    data: Data,
    name: str,
    errors: Errors,
    *,
    minimum: int = ...,
    maximum: int = ...,
    required: bool = ...,
    default: int,
    field: str | None = ...,
) -> int: ...
@overload
def integer(
    data: Data,
    name: str,
    errors: Errors,
    *,
    minimum: int = ...,
    maximum: int = ...,
    required: bool = ...,
    default: None = ...,
    field: str | None = ...,
) -> int | None: ...
def integer(
    data: Data,
    name: str,
    errors: Errors,
    *,
    minimum: int = 0,
    maximum: int = MAX_SAT,
    required: bool = False,
    default: int | None = None,
    field: str | None = None,
) -> int | None:
    """Integers only: ``"1.5"`` or ``1.5`` is rejected, never rounded."""
    field = field or name
    value = data.get(name)
    if value is None or value == "":
        if required:
            errors.add(field, "is required")
        return default
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]{1,20}\s*", value):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        errors.add(field, "must be a whole number")
        return default
    if not minimum <= value <= maximum:
        errors.add(field, f"must be between {minimum} and {maximum}")
        return default
    return value


def sats(data: Data, name: str, errors: Errors, *, minimum: int = 0, field: str | None = None) -> Sats | None:
    """An amount in satoshis (0 to 21 million BTC), or None when empty."""
    value = integer(data, name, errors, minimum=minimum, maximum=MAX_SATS, field=field)
    return None if value is None else Sats(value)


def required_sats(data: Data, name: str, errors: Errors, *, minimum: int = 0, field: str | None = None) -> Sats:
    """A required amount; when it is missing or wrong the error is recorded and ``Sats(0)`` stands in
    (the caller raises the ValidationError, so the stand-in never leaves it)."""
    value = integer(data, name, errors, minimum=minimum, maximum=MAX_SATS, required=True, field=field)
    return Sats(value or 0)


def boolean(data: Data, name: str, errors: Errors, *, default: bool) -> bool:
    value = data.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        return value.lower() in ("1", "true", "yes", "on")
    errors.add(name, "must be true or false")
    return default


def choice(data: Data, name: str, errors: Errors, options: tuple[str, ...]) -> str:
    value = data.get(name) or options[0]
    if value not in options:
        errors.add(name, f"must be one of {', '.join(options)}")
        return options[0]
    return str(value)


def items(data: Data, name: str, errors: Errors, *, max_items: int) -> list[Any]:
    value = data.get(name)
    if value is None or value == "":
        return []
    if not isinstance(value, list):
        errors.add(name, "must be a list")
        return []
    if len(value) > max_items:
        errors.add(name, f"at most {max_items} entries")
        return []
    return value


def slug(value: str) -> str:
    """Lower-case URL form of a category name; letters of any script are kept."""
    text = re.sub(r"[\W_]+", "-", unicodedata.normalize("NFC", value).casefold()).strip("-")
    return text or "c-" + hashlib.sha256(value.encode()).hexdigest()[:8]
