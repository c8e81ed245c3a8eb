"""Orders (the vendor's actions), disputes and moderation (the moderator's), and a store's moderators.

Their JSON shapes are in ``order_views.py`` (docs/api.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypedDict

from ..core.errors import ValidationError
from ..core.fields import Errors, whole_number
from ..core.models import ModeratorTermsRecord, Sats
from ..market import profile as P
from ..payments.models import OrderState
from .base import Context, NoInput, Operation
from .order_views import (
    CaseView,
    ModerationView,
    OrderDetail,
    OrderView,
    case_view,
    moderation_view,
    node_message_views,
    order_detail,
    order_view,
)

MAX_TEXT = 2000


# -- inputs --------------------------------------------------------------------
@dataclass(frozen=True)
class OrderQuery:
    """Query-string filters of ``GET /orders``."""

    store: str = ""
    state: str = ""
    limit: str = ""  # newest first, at most MAX_ORDERS per call (default DEFAULT_ORDERS)
    offset: str = ""  # skip this many of the newest (the next page: offset + limit)


@dataclass(frozen=True)
class OrderRef:
    id: str


@dataclass(frozen=True)
class OrderBody:
    id: str
    body: Any  # {"note": ...}, {"reason": ...}, {"statement": ...}, {"text": ...} or nothing


@dataclass(frozen=True)
class Body:
    body: Any


@dataclass(frozen=True)
class StoreBody:
    store: str
    body: Any


def text_field(body: object, name: str, *, required: bool = False) -> str:
    """``body[name]`` as stripped text (at most MAX_TEXT characters); "" when absent and not required."""
    value = body.get(name, "") if isinstance(body, dict) else ""
    if body is not None and not isinstance(body, dict):
        raise ValidationError({"body": f'must be a JSON object such as {{"{name}": "..."}}'})
    if not isinstance(value, str):
        raise ValidationError({name: "must be text"})
    value = value.strip()
    if required and not value:
        raise ValidationError({name: "required"})
    if len(value) > MAX_TEXT:
        raise ValidationError({name: f"at most {MAX_TEXT} characters"})
    return value


def _sat(errors: Errors, body: dict[str, object], name: str) -> Sats:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        errors.add(name, "required: a whole number of satoshis, 0 or more")
        return Sats(0)
    return Sats(value)


def decision(body: object) -> tuple[Sats, Sats]:
    """``{"buyer_sat": ..., "vendor_sat": ...}`` checked (the service checks they add up)."""
    if not isinstance(body, dict):
        raise ValidationError({"body": 'must be a JSON object: {"buyer_sat": ..., "vendor_sat": ...}'})
    errors = Errors()
    buyer, vendor = _sat(errors, body, "buyer_sat"), _sat(errors, body, "vendor_sat")
    if errors:
        raise ValidationError(errors)
    return buyer, vendor


def moderators_of(body: object) -> list[str]:
    value = body.get("moderators") if isinstance(body, dict) else None
    if not isinstance(value, list):
        raise ValidationError({"moderators": 'required: a list of moderators\' node onions, e.g. {"moderators": []}'})
    return [str(m) for m in value]


def state_filter(text: str) -> OrderState | None:
    if not text:
        return None
    try:
        return OrderState(text)
    except ValueError:
        known = ", ".join(s.value for s in OrderState)
        raise ValidationError({"state": f"must be one of {known}"}) from None


class StoreModerators(TypedDict):
    """The answer of ``PATCH /stores/<store>/moderators``."""

    store: str
    moderators: list[str]
    moderator_terms: list[ModeratorTermsRecord]  # as published in the catalog (moderators that answered)
    warnings: list[str]  # moderators that did not answer or offer no moderation (still accepted)


# -- calls -----------------------------------------------------------------------
DEFAULT_ORDERS, MAX_ORDERS, MAX_SKIP = 100, 1000, 10**9


async def _list_orders(ctx: Context, inp: OrderQuery) -> list[OrderView]:
    errors = Errors()
    limit = whole_number(errors, "limit", inp.limit, DEFAULT_ORDERS, 1, MAX_ORDERS)
    offset = whole_number(errors, "offset", inp.offset, 0, 0, MAX_SKIP)
    if errors:
        raise ValidationError(errors)
    store = await ctx.market.resolve(inp.store) if inp.store.strip() else None
    state = state_filter(inp.state.strip())
    orders = await ctx.payments.orders(store, state.value if state else None, limit=limit, offset=offset)
    return [order_view(o) for o in orders]


async def _get_order(ctx: Context, inp: OrderRef) -> OrderDetail:
    order = await ctx.payments.order(inp.id)
    ship_to, messages = await ctx.payments.reveal(order)
    told = ctx.payments.node_messages
    node = node_message_views(*await told(order.id)) if told is not None else []
    return order_detail(order, ship_to, messages, node)


async def _accept(ctx: Context, inp: OrderBody) -> OrderView:
    return order_view(await ctx.payments.accept(inp.id))


async def _decline(ctx: Context, inp: OrderBody) -> OrderView:
    """``{"reason": ...}``: the refund, signed by the vendor's wallet, waits for the buyer's signature."""
    return order_view(await ctx.payments.decline(inp.id, text_field(inp.body, "reason")))


async def _fulfill(ctx: Context, inp: OrderBody) -> OrderView:
    """``{"note": "tracking ..."}``: the release, signed by the vendor's wallet, waits for the buyer's."""
    return order_view(await ctx.payments.fulfill(inp.id, text_field(inp.body, "note")))


async def _release(ctx: Context, inp: OrderBody) -> OrderView:
    return order_view(await ctx.payments.release(inp.id))


async def _refund(ctx: Context, inp: OrderBody) -> OrderView:
    return order_view(await ctx.payments.refund(inp.id, text_field(inp.body, "reason")))


async def _claim(ctx: Context, inp: OrderBody) -> OrderView:
    """The timeout path; before the escrow's timeout: Conflict naming the block height it opens at."""
    return order_view(await ctx.payments.claim(inp.id))


async def _dispute_order(ctx: Context, inp: OrderBody) -> OrderView:
    return order_view(await ctx.payments.dispute(inp.id, text_field(inp.body, "statement", required=True)))


async def _message(ctx: Context, inp: OrderBody) -> OrderView:
    return order_view(await ctx.payments.vendor_message(inp.id, text_field(inp.body, "text", required=True)))


async def _list_disputes(ctx: Context, _: NoInput) -> list[CaseView]:
    return [case_view(c) for c in await ctx.moderation.disputes()]


async def _decide(ctx: Context, inp: OrderBody) -> CaseView:
    buyer_sat, vendor_sat = decision(inp.body)
    return case_view(await ctx.moderation.decide(inp.id, buyer_sat, vendor_sat))


async def _get_moderation(ctx: Context, _: NoInput) -> ModerationView:
    return moderation_view(await ctx.moderation.offer())


async def _set_moderation(ctx: Context, inp: Body) -> ModerationView:
    """``{"enabled": true, "fee_percent": 2, "fee_sat": 0, "terms": "..."}`` (any of them)."""
    return moderation_view(await ctx.moderation.set_offer(inp.body))


async def _set_store_moderators(ctx: Context, inp: StoreBody) -> StoreModerators:
    """``{"moderators": ["<node onion>", ...]}``: the moderators the store accepts, published in its signed
    catalog with the fee and terms of each one's signed offer (asked now, over tor). One that cannot be
    reached is still accepted, listed without terms, and named in ``warnings``."""
    onion = await ctx.market.resolve(inp.store)
    current = (await ctx.market.store(onion))["profile"]
    wanted = P.validate({"moderators": moderators_of(inp.body)}, partial=current)["moderators"]  # before tor
    terms, warnings = await _offered_terms(ctx, wanted, current.get("moderator_terms", []))
    profile = await ctx.market.update_profile(onion, {"moderators": wanted, "moderator_terms": terms})
    published, accepted = list(profile.get("moderator_terms", [])), list(profile["moderators"])
    return StoreModerators(store=onion, moderators=accepted, moderator_terms=published, warnings=warnings)


async def _offered_terms(
    ctx: Context, onions: list[str], published: list[ModeratorTermsRecord]
) -> tuple[list[ModeratorTermsRecord], list[str]]:
    if not onions:
        return [], []
    try:
        payments = ctx.payments
    except RuntimeError:  # the CLI on a stopped node's data directory: no tor to ask the moderators over
        kept = [t for t in published if t["onion"] in onions]
        note = "the node is not running: the moderators' fee and terms are published once it runs"
        return kept, [note]
    return await payments.moderator_terms(onions, published)


def _action(
    name: str, verb: str, call: Callable[[Context, OrderBody], Awaitable[OrderView]]
) -> Operation[OrderBody, OrderView]:
    return Operation(name, "POST", f"/orders/{{id}}/{verb}", OrderBody, call, optional_body=True)


list_orders = Operation("list_orders", "GET", "/orders", OrderQuery, _list_orders)
get_order = Operation("get_order", "GET", "/orders/{id}", OrderRef, _get_order)
accept_order = _action("accept_order", "accept", _accept)
decline_order = _action("decline_order", "decline", _decline)
fulfill_order = _action("fulfill_order", "fulfill", _fulfill)
release_order = _action("release_order", "release", _release)
refund_order = _action("refund_order", "refund", _refund)
claim_order = _action("claim_order", "claim", _claim)
dispute_order = _action("dispute_order", "dispute", _dispute_order)
message_order = _action("message_order", "message", _message)
list_disputes = Operation("list_disputes", "GET", "/disputes", NoInput, _list_disputes)
decide_dispute = Operation("decide_dispute", "POST", "/disputes/{id}/decide", OrderBody, _decide)
get_moderation = Operation("get_moderation", "GET", "/moderation", NoInput, _get_moderation)
set_moderation = Operation("set_moderation", "PATCH", "/moderation", Body, _set_moderation)
set_store_moderators = Operation(
    "set_store_moderators", "PATCH", "/stores/{store}/moderators", StoreBody, _set_store_moderators
)

ORDER_ACTIONS = (
    accept_order, decline_order, fulfill_order, release_order, refund_order, claim_order, dispute_order, message_order,
)  # fmt: skip
OPERATIONS = (
    list_orders, get_order, *ORDER_ACTIONS, list_disputes, decide_dispute, get_moderation, set_moderation,
    set_store_moderators,
)  # fmt: skip
