"""Reading a buyer node's messages: the ``order`` fields as a checkout form, a review's binding to its order.

Pure: every problem is a ``ValidationError`` naming the field (an ``order``
message that does not read is answered with a ``refused`` message listing
them), a review that does not belong to its order a ``ValidationError`` with
the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..core import addresses
from ..core.errors import ValidationError
from ..core.reviews import Review
from .models import Order, OrderState
from .pricing import CheckoutForm

S = OrderState
_REVIEWABLE = {S.COMPLETED, S.RESOLVED}
MAX_FIELD = 500  # characters of one short field of an ``order`` message


@dataclass(frozen=True)
class NodeOrderFields:
    """An ``order`` message read: the form (``ship_to`` still boxed), the price the buyer expects."""

    form: CheckoutForm
    amount_sat: int
    listing_hash: str
    store: str
    ship_to_boxed: str


def _text(body: Mapping[str, object], name: str, problems: dict[str, str], *, optional: bool = False) -> str:
    value = body.get(name)
    if value is None and optional:
        return ""
    if not isinstance(value, str) or len(value) > MAX_FIELD:
        problems[name] = f"must be text of at most {MAX_FIELD} characters" + (" or null" if optional else "")
        return ""
    return value


def _whole(body: Mapping[str, object], name: str, problems: dict[str, str]) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        problems[name] = "must be a whole number"
        return 0
    return value


def order_fields(body: Mapping[str, object]) -> NodeOrderFields:
    """The checkout form an ``order`` message asks for; one ``ValidationError`` naming every bad field."""
    problems: dict[str, str] = {}
    store = addresses.normalize(_text(body, "store", problems))
    ship_to = body.get("ship_to")
    if not isinstance(ship_to, str):
        problems["ship_to"] = "must be a box (text)"
    form = CheckoutForm(
        listing=_text(body, "listing", problems),
        sku=_text(body, "sku", problems, optional=True),
        qty=str(_whole(body, "qty", problems)),
        shipping=_text(body, "shipping", problems, optional=True),
        coupon=_text(body, "coupon", problems, optional=True),
        moderator=_text(body, "moderator", problems),
        buyer_pubkey=_text(body, "buyer_key", problems),
        refund_address=_text(body, "refund_address", problems),
    )
    amount = _whole(body, "amount_sat", problems)
    listing_hash = _text(body, "listing_hash", problems)
    if problems:
        raise ValidationError(
            problems, "the order was not placed: " + "; ".join(f"{k}: {v}" for k, v in problems.items())
        )
    return NodeOrderFields(form, amount, listing_hash, store, str(ship_to))


def _outpoints(order: Order) -> set[str]:
    """Every escrow funding outpoint the order has known (the funding is spent once paid out)."""
    points = {f"{t}:{v}" for t, v, _a in order.funding.outpoints} | {f"{t}:{v}" for t, v, _h in order.funding.heights}
    payouts = [*order.payouts, *([order.pending] if order.pending is not None else [])]
    points |= {f"{t}:{v}" for p in payouts for t, v in p.inputs}
    return points


def review_problem(order: Order, review: Review) -> str | None:
    """Why ``review`` is not a review of ``order`` by its buyer (None: it is).

    ``review`` verified already, its receipt included (``core.reviews.verify``: signed by the review's store,
    naming its order, signer, escrow address and listing hash); these checks hold the review, and so its
    receipt, to this order as the store keeps it.
    """
    if review.signer != order.extra.get("peer") or review.receipt.buyer != order.extra.get("peer"):
        return "the review is not signed by the key that placed this order"
    if review.order != order.id or review.store != order.store:
        return "the review names another order or store"
    if review.listing_hash != order.item.listing_hash or review.listing != order.item.listing_id:
        return "the review names another listing than the one ordered"
    if review.address != order.escrow.address:
        return "the review names another escrow address than this order's"
    if review.outpoint not in _outpoints(order):
        return "the review's outpoint did not fund this order's escrow"
    after_dispute = order.state is S.REFUNDED and order.dispute is not None
    if order.state not in _REVIEWABLE and not after_dispute:
        return "a review comes once the order is completed, or after a dispute is resolved"
    return None
