"""HTML form fields <-> domain input dicts (the admin UI has no JavaScript)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from ..core.errors import ValidationError
from ..core.models import Listing
from ..market import lineformats
from ..market.profile import POLICIES
from .render import date

_COUNT = re.compile(r"[0-9]{1,9}")
_MONEY = re.compile(r"^\s*(\d{1,10})(?:\.(\d{1,2}))?\s*$")
_HOURS = re.compile(r"\s*([0-9]{1,6}(?:\.[0-9]{1,4})?)\s*")


def _str(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def _minor_units(text: str) -> int | str | None:
    if not text.strip():
        return None
    match = _MONEY.match(text)
    if not match:
        return text  # let validation report it
    return int(match.group(1)) * 100 + int((match.group(2) or "0").ljust(2, "0"))


def _expiry(text: str) -> int | None:
    if not text.strip():
        return None
    try:
        day = dt.date.fromisoformat(text.strip())
    except ValueError:
        raise ValidationError({"expires_at": "a date such as 2027-01-31"}) from None
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())


def listing_input(form: Mapping[str, Any], images: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The listing a submitted form describes, and the lines that could not be read.

    ``images`` are the ids to keep. A box with an unreadable line counts as empty
    in the listing, so validation can still report every other field.
    """
    errors: dict[str, str] = {}
    parsed: dict[str, Any] = {}
    for name, parse in (
        ("shipping", lineformats.parse_shipping),
        ("variants", lineformats.parse_variants),
        ("coupons", lineformats.parse_coupons),
    ):
        try:
            parsed[name] = parse(_str(form, name))
        except ValidationError as exc:
            errors.update(exc.fields)
    try:
        parsed["expires_at"] = _expiry(_str(form, "expires_on"))
    except ValidationError as exc:
        errors.update(exc.fields)
    currency, minor = _str(form, "ref_currency").strip(), _minor_units(_str(form, "ref_amount"))
    data = {
        "title": _str(form, "title"),
        "description": _str(form, "description"),
        "description_format": _str(form, "description_format") or "text",
        "kind": _str(form, "kind") or "physical",
        "price_sat": _str(form, "price_sat"),
        "ref_price": {"currency": currency, "minor": minor} if currency or minor is not None else None,
        "category": _str(form, "category"),
        "tags": _str(form, "tags"),
        "inventory": _str(form, "inventory"),
        "min_qty": _str(form, "min_qty"),
        "max_qty": _str(form, "max_qty"),
        "active": "active" in form,
        "images": images,
        **parsed,
    }
    return data, errors


def listing_values(listing: Listing) -> dict[str, object]:
    """Form field values for editing a stored listing."""
    ref = listing.get("ref_price")

    def text(v: int | None) -> str:
        return "" if v is None else str(v)

    return {
        "title": listing["title"],
        "description": listing["description"],
        "description_format": listing["description_format"],
        "kind": listing["kind"],
        "price_sat": text(listing["price_sat"]),
        "ref_currency": ref["currency"] if ref else "",
        "ref_amount": f"{ref['minor'] // 100}.{ref['minor'] % 100:02d}" if ref else "",
        "category": listing["category"],
        "tags": ", ".join(listing["tags"]),
        "inventory": text(listing["inventory"]),
        "min_qty": text(listing["min_qty"]),
        "max_qty": text(listing["max_qty"]),
        "expires_on": date(listing["expires_at"]),
        "shipping": lineformats.format_shipping(listing["shipping"]),
        "variants": lineformats.format_variants(listing["variants"]),
        "coupons": lineformats.format_coupons(listing["coupons"]),
        "active": listing["active"],
        "images": list(listing["images"]),
    }


def blank_listing() -> dict[str, Any]:
    return {
        "title": "", "description": "", "description_format": "text", "kind": "physical",
        "price_sat": "", "ref_currency": "", "ref_amount": "", "category": "", "tags": "",
        "inventory": "", "min_qty": "1", "max_qty": "", "expires_on": "", "shipping": "",
        "variants": "", "coupons": "", "active": True, "images": [],
    }  # fmt: skip


def inventory_input(form: Mapping[str, Any]) -> tuple[dict[str, dict[str, int | None]], dict[str, str]]:
    """Fields ``stock:<listing id>:<sku>`` -> {listing id: {sku: count or None}}, and errors."""
    stock: dict[str, dict[str, int | None]] = {}
    errors: dict[str, str] = {}
    for name, value in form.items():
        if not name.startswith("stock:") or name.count(":") != 2:
            continue
        _, listing_id, sku = name.split(":")
        text = value.strip() if isinstance(value, str) else ""
        if text and not _COUNT.fullmatch(text):
            errors[f"{listing_id}:{sku}"] = "a whole number from 0, or empty for unlimited"
            continue
        stock.setdefault(listing_id, {})[sku] = int(text) if text else None
    return stock, errors


def _seconds(hours: str) -> int | str | None:
    """The accept window typed in hours (``72``, ``1.5``) as seconds; empty -> None; else the text, for validation."""
    if not hours.strip():
        return None
    match = _HOURS.fullmatch(hours)
    return round(float(match.group(1)) * 3600) if match else hours


def profile_input(form: Mapping[str, Any]) -> dict[str, Any]:
    """The profile the store form describes; empty escrow fields mean the node's settings."""
    return {
        "name": _str(form, "name"),
        "description": _str(form, "description"),
        "policies": {p: _str(form, f"policy_{p}") for p in POLICIES},
        "moderators": [m.strip() for m in _str(form, "moderators").split() if m.strip()],
        "vacation": "vacation" in form,
        "display_unit": _str(form, "display_unit") or "sat",
        "escrow_timeout_blocks": _str(form, "escrow_timeout_blocks").strip() or None,
        "accept_window": _seconds(_str(form, "accept_window_hours")),
    }


def form_values(form: Mapping[str, Any], images: list[str]) -> dict[str, Any]:
    """What the user typed, to show again next to the errors (nothing is lost)."""
    values = {k: v for k, v in blank_listing().items()}
    values.update({k: _str(form, k) for k in values if k not in ("active", "images")})
    values["active"] = "active" in form
    values["images"] = images
    return values


def access_input(form: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "invite_only": "invite_only" in form,
        "max_streams": _str(form, "max_streams") or 0,
        "pow": "pow" in form,
        "announce": "announce" in form,
    }
