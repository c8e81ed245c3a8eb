"""One-line-per-row text formats for repeated fields.

Used by the no-JavaScript admin forms (one textarea per repeated field) and by
CSV import (rows joined with ``;``), so both accept exactly the same syntax:

    shipping  Name | US, CA | 1500        (regions: country codes or WORLDWIDE)
    variants  SKU | Label | price_sat | inventory   (price and inventory optional)
    coupons   CODE | 10%   or   CODE | 5000        (percent or satoshis off)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..core.errors import ValidationError
from ..core.models import Coupon, ShippingOption, Variant

RawRow = dict[str, str | None]
"""One parsed line, its cells still text: listing validation checks them."""


def _rows(text: str, sep: str = "\n") -> list[list[str]]:
    return [[c.strip() for c in line.split("|")] for line in text.split(sep) if line.strip()]


def _parse(
    field: str, text: str, sep: str, arity: tuple[int, int], hint: str, make: Callable[[list[str]], RawRow]
) -> list[RawRow]:
    """Every line checked; one ValidationError naming each malformed line."""
    out: list[RawRow] = []
    errors: dict[str, str] = {}
    for n, cols in enumerate(_rows(text, sep)):
        if arity[0] <= len(cols) <= arity[1]:
            out.append(make(cols + [""] * (arity[1] - len(cols))))
        else:
            errors[f"{field}[{n}]"] = f"write: {hint}"
    if errors:
        raise ValidationError(errors)
    return out


def parse_shipping(text: str, sep: str = "\n") -> list[RawRow]:
    return _parse(
        "shipping", text, sep, (3, 3), "Name | regions | price in sats",
        lambda c: {"name": c[0], "regions": c[1], "price_sat": c[2]},
    )  # fmt: skip


def parse_variants(text: str, sep: str = "\n") -> list[RawRow]:
    return _parse(
        "variants", text, sep, (2, 4), "SKU | Label | price in sats | inventory",
        lambda c: {"sku": c[0], "label": c[1], "price_sat": c[2], "inventory": c[3]},
    )  # fmt: skip


def _coupon(cols: list[str]) -> RawRow:
    code, value = cols
    if value.endswith("%"):
        return {"code": code, "percent": value[:-1].strip(), "amount_sat": None}
    return {"code": code, "percent": None, "amount_sat": value}


def parse_coupons(text: str, sep: str = "\n") -> list[RawRow]:
    return _parse("coupons", text, sep, (2, 2), "CODE | 10%  or  CODE | sats off", _coupon)


def format_shipping(rows: Sequence[ShippingOption]) -> str:
    return "\n".join(f"{r['name']} | {', '.join(r['regions'])} | {r['price_sat']}" for r in rows)


def format_variants(rows: Sequence[Variant]) -> str:
    def cell(v: int | None) -> str:
        return "" if v is None else str(v)

    return "\n".join(f"{r['sku']} | {r['label']} | {cell(r['price_sat'])} | {cell(r['inventory'])}" for r in rows)


def format_coupons(rows: Sequence[Coupon]) -> str:
    return "\n".join(
        f"{r['code']} | {r['percent']}%" if r["percent"] else f"{r['code']} | {r['amount_sat']}" for r in rows
    )
