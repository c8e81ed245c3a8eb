"""This node's purchases from other stores' nodes (the buyer's side; docs/api.md "Purchases").

Their JSON shape is ``purchases.views.PurchaseView``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..core.errors import ValidationError
from ..core.fields import Errors, whole_number
from ..purchases.models import PurchaseRequest
from ..purchases.views import PurchaseView, purchase_view
from .base import Context, Operation
from .payments import MAX_TEXT, text_field

DEFAULT_PURCHASES, MAX_PURCHASES = 100, 500
MAX_SHIP_TO = 2000


@dataclass(frozen=True)
class PurchaseQuery:
    """Query-string of ``GET /purchases``: newest first."""

    limit: str = ""
    offset: str = ""


@dataclass(frozen=True)
class PurchaseRef:
    id: str


@dataclass(frozen=True)
class PurchaseBody:
    id: str
    body: Any  # {"statement": ...}, {"text": ...}, {"rating": ..., "text": ...}, {"address", "amount_sat"} or nothing


@dataclass(frozen=True)
class NewPurchase:
    body: Any  # {"store", "listing", "sku", "qty", "shipping", "moderator", "ship_to", "coupon"}


# -- reading bodies --------------------------------------------------------------------
def _object(body: object, example: str) -> dict[str, object]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ValidationError({"body": f"must be a JSON object such as {example}"})
    return body


def _str(errors: Errors, body: dict[str, object], name: str, *, required: bool = False, limit: int = 200) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > limit:
        errors.add(name, f"{'required: ' if required else ''}text of at most {limit} characters")
        return None
    return value.strip()


def _int(errors: Errors, body: dict[str, object], name: str, low: int, high: int, default: int | None) -> int | None:
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        errors.add(name, f"a whole number from {low} to {high}")
        return None
    return value


def _only(data: dict[str, object], allowed: set[str]) -> None:
    """Unknown fields are refused (as ``POST /purchases`` does), never silently ignored."""
    errors = Errors()
    for extra in sorted(set(data) - allowed):
        errors.add(extra, "unknown field")
    if errors:
        raise ValidationError(errors)


def purchase_request(body: object) -> PurchaseRequest:
    """``POST /purchases``'s body checked for types (the service checks it against the catalog)."""
    data = _object(body, '{"store": "<onion>", "listing": "<id>", "moderator": "<onion>", ...}')
    errors = Errors()
    store = _str(errors, data, "store", required=True)
    listing = _str(errors, data, "listing", required=True)
    moderator = _str(errors, data, "moderator", required=True)
    sku, shipping, coupon = _str(errors, data, "sku"), _str(errors, data, "shipping"), _str(errors, data, "coupon")
    ship_to = _str(errors, data, "ship_to", limit=MAX_SHIP_TO) or ""
    qty = _int(errors, data, "qty", 1, 10**6, 1)
    for extra in sorted(set(data) - {"store", "listing", "sku", "qty", "shipping", "moderator", "ship_to", "coupon"}):
        errors.add(extra, "unknown field")
    if errors or store is None or listing is None or moderator is None or qty is None:
        raise ValidationError(errors, "the order was not placed: " + "; ".join(f"{k}: {v}" for k, v in errors.items()))
    return PurchaseRequest(
        store=store,
        listing=listing,
        sku=sku or None,
        qty=qty,
        shipping=shipping or None,
        moderator=moderator,
        ship_to=ship_to,
        coupon=coupon or None,
    )


# -- calls -----------------------------------------------------------------------------
async def _list(ctx: Context, inp: PurchaseQuery) -> list[PurchaseView]:
    errors = Errors()
    limit = whole_number(errors, "limit", inp.limit, DEFAULT_PURCHASES, 1, MAX_PURCHASES)
    offset = whole_number(errors, "offset", inp.offset, 0, 0, 10**9)
    if errors:
        raise ValidationError(errors)
    return [purchase_view(d) for d in await ctx.purchases.details(limit=limit, offset=offset)]


async def _view(ctx: Context, purchase_id: str) -> PurchaseView:
    return purchase_view(await ctx.purchases.detail(purchase_id))


async def _show(ctx: Context, inp: PurchaseRef) -> PurchaseView:
    return await _view(ctx, inp.id)


async def _place(ctx: Context, inp: NewPurchase) -> PurchaseView:
    """Returns at once (state ``queued``), also while the store's node is unreachable."""
    placed = await ctx.purchases.place(purchase_request(inp.body))
    return await _view(ctx, placed.id)


async def _pay(ctx: Context, inp: PurchaseBody) -> PurchaseView:
    """``{"address": ..., "amount_sat": ...}`` (optional; when given they must be the escrow's)."""
    data = _object(inp.body, '{"address": "<escrow address>", "amount_sat": 150000}')
    _only(data, {"address", "amount_sat"})
    errors = Errors()
    address = _str(errors, data, "address", limit=100)
    amount = _int(errors, data, "amount_sat", 1, 21 * 10**14, None)
    if errors:
        raise ValidationError(errors)
    await ctx.purchases.pay(inp.id, address=address, amount_sat=amount)
    return await _view(ctx, inp.id)


async def _release(ctx: Context, inp: PurchaseBody) -> PurchaseView:
    _only(_object(inp.body, "{}"), set())
    await ctx.purchases.release(inp.id)
    return await _view(ctx, inp.id)


async def _dispute(ctx: Context, inp: PurchaseBody) -> PurchaseView:
    _only(_object(inp.body, '{"statement": "..."}'), {"statement"})
    await ctx.purchases.dispute(inp.id, text_field(inp.body, "statement", required=True))
    return await _view(ctx, inp.id)


async def _review(ctx: Context, inp: PurchaseBody) -> PurchaseView:
    data = _object(inp.body, '{"rating": 5, "text": "..."}')
    _only(data, {"rating", "text"})
    errors = Errors()
    rating = _int(errors, data, "rating", 1, 5, None)
    text = _str(errors, data, "text", limit=MAX_TEXT) or ""
    if rating is None:
        errors.add("rating", "required: a whole number from 1 to 5")
    if errors or rating is None:
        raise ValidationError(errors)
    await ctx.purchases.review(inp.id, rating, text)
    return await _view(ctx, inp.id)


async def _message(ctx: Context, inp: PurchaseBody) -> PurchaseView:
    _only(_object(inp.body, '{"text": "..."}'), {"text"})
    await ctx.purchases.message(inp.id, text_field(inp.body, "text", required=True))
    return await _view(ctx, inp.id)


def _action(
    name: str, verb: str, call: Callable[[Context, PurchaseBody], Awaitable[PurchaseView]]
) -> Operation[PurchaseBody, PurchaseView]:
    return Operation(name, "POST", f"/purchases/{{id}}/{verb}", PurchaseBody, call, optional_body=True)


purchases_list = Operation("purchases_list", "GET", "/purchases", PurchaseQuery, _list)
purchases_show = Operation("purchases_show", "GET", "/purchases/{id}", PurchaseRef, _show)
purchases_place = Operation("purchases_place", "POST", "/purchases", NewPurchase, _place, status=201)
purchases_pay = _action("purchases_pay", "pay", _pay)
purchases_release = _action("purchases_release", "release", _release)
purchases_dispute = _action("purchases_dispute", "dispute", _dispute)
purchases_review = _action("purchases_review", "review", _review)
purchases_message = _action("purchases_message", "message", _message)

OPERATIONS = (
    purchases_list, purchases_show, purchases_place, purchases_pay, purchases_release, purchases_dispute,
    purchases_review, purchases_message,
)  # fmt: skip
