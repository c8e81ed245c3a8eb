"""Placing an order: price it, take the three parties' keys, build and watch the escrow, then store it.

Nothing is stored until every outside step worked (keys from the vendor's
wallet and the moderator's node, the descriptor checked against Core, the
escrow imported into the watch-only wallet); the order and its stock
reservation are then written in one transaction, so a failure anywhere
leaves nothing half created.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..core import addresses
from ..core.errors import Conflict, NotFound, PasarError, Unavailable, Unreachable, ValidationError
from ..core.models import Listing, Profile, Sats
from . import escrow, pricing
from . import moderation_wire as wire
from .flows import Ctx
from .models import Escrow, HistoryEntry, KeyRef, ModeratorOffer, Order, OrderItem, OrderState, SignedTerms
from .moderation_wire import KeyRequest
from .pricing import CheckoutForm
from .sealing import seal_to_onion
from .settings import PaymentSettings

log = logging.getLogger(__name__)
ACCEPT_WINDOW = "accept_window"  # ``Order.extra`` key: the store's window (seconds) the buyer agreed to
# ``Order.extra`` of an order placed by a buyer's node: its order-key address, "node", the moderator's answer.
PEER, CHANNEL, MODERATOR_ANSWER = "peer", "channel", "moderator_answer"
NODE_CHANNEL = "node"


def store_terms(profile: Profile, settings: PaymentSettings) -> tuple[int, int]:
    """The store's escrow timeout N (blocks) and accept window (seconds); the node's settings where unset."""
    return (
        profile.get("escrow_timeout_blocks") or settings.timeout_blocks,
        profile.get("accept_window") or settings.accept_window,
    )


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _field(problems: dict[str, str], name: str, exc: ValidationError) -> None:
    problems[name] = "; ".join(exc.fields.values()) or exc.message


async def _listing(ctx: Ctx, store: str, listing_id: str) -> Listing | None:
    try:
        return await ctx.market.listing(store, listing_id)
    except NotFound:
        return None


def _moderator(choice: str, accepted: list[str], problems: dict[str, str]) -> str:
    onion = addresses.normalize(choice.strip())
    if not onion:
        problems["moderator"] = "choose one of the store's moderators"
    elif onion not in accepted:
        problems["moderator"] = "this store does not work with that moderator: choose one of the list"
    return onion


async def validate(ctx: Ctx, store: str, form: CheckoutForm) -> tuple[OrderItem, pricing.Reservation, KeyRef, str, str]:
    """The priced item, its reservation, the buyer's key, the refund address and the moderator's onion.

    One ``ValidationError`` naming every problem of the form.
    """
    problems: dict[str, str] = {}
    buyer = KeyRef(pubkey="")
    refund = ""
    try:
        buyer = escrow.parse_key(form.buyer_pubkey)
    except ValidationError as exc:
        _field(problems, "buyer_pubkey", exc)
    try:
        refund = escrow.parse_address(form.refund_address, ctx.settings.network)
    except ValidationError as exc:
        _field(problems, "refund_address", exc)
    profile = (await ctx.market.store(store))["profile"]
    moderator = _moderator(form.moderator, profile["moderators"], problems)
    listing = await _listing(ctx, store, form.listing.strip())
    if listing is None:
        problems["listing"] = "no such listing in this store"
        raise ValidationError(problems, "the order was not placed: " + "; ".join(sorted(problems.values())))
    item, reservation = pricing.price(listing, form, now=ctx.now(), store=store, problems=problems)
    left = (await ctx.store.available(store, listing)).get(item.sku)
    if left is not None:
        left = max(0, left - ctx.placing.get(_units_key(store, item), 0))  # other checkouts under way
    if left is not None and left < item.qty:
        raise ValidationError({"qty": f"only {left} left"}, f"the order was not placed: only {left} left")
    return item, reservation, buyer, refund, moderator


async def _escrow(ctx: Ctx, buyer: KeyRef, vendor: KeyRef, moderator: KeyRef, timeout: KeyRef, blocks: int) -> Escrow:
    btc = ctx.wallet()
    desc = escrow.descriptor(buyer, vendor, moderator, timeout, blocks)
    checksum = await btc.checksum(desc)
    core_address = await btc.derive_address(f"{desc}#{checksum}")
    built = escrow.build_escrow(buyer, vendor, moderator, timeout, blocks, checksum, ctx.settings.network, core_address)
    await btc.watch(built.descriptor)
    return built


def _units_key(store: str, item: OrderItem) -> str:
    return f"{store}/{item.listing_id}/{item.sku or ''}"


@contextmanager
def _under_way(ctx: Ctx, store: str, item: OrderItem) -> Iterator[None]:
    """Count this checkout's order and units as taken while it asks Core and the moderator."""
    keys = ((store, 1), (_units_key(store, item), item.qty))
    for key, n in keys:
        ctx.placing[key] = ctx.placing.get(key, 0) + n
    try:
        yield
    finally:
        for key, n in keys:
            left = ctx.placing.get(key, 0) - n
            if left > 0:
                ctx.placing[key] = left
            else:
                ctx.placing.pop(key, None)


async def _room_for_one_more(ctx: Ctx, store: str) -> None:
    """Refuse checkout while the store holds ``max_unpaid`` unpaid orders: each holds stock, two wallet keys
    and a moderator's key, so a flood of orders nobody pays must not empty the store or those wallets.
    (Checked again inside the order's insert, where concurrent checkouts cannot pass it together.)"""
    cap = ctx.settings.max_unpaid
    unpaid = len(await ctx.store.list(store=store, state=OrderState.AWAITING_PAYMENT, limit=cap))
    if unpaid + ctx.placing.get(store, 0) > cap:  # ``placing`` counts this checkout too
        raise Unavailable(
            "this store has too many unpaid orders right now; please try again in a while "
            "(unpaid orders expire after the payment window)"
        )


# A node buyer's order id asked again after a crash between the moderator's answer and the order's insert
# (this node drew new keys): the moderator's refusal says so (``ModeratorService``'s words).
_KEY_GIVEN = "already has this moderator's key"


class UsedOrderId(Conflict):
    """The moderator already gave this order id a key (for other keys): the id cannot be placed any more."""


class TermsChanged(Conflict):
    """The moderator's key answer names another fee or terms than the offer the buyer was shown."""


async def _moderator_key(
    ctx: Ctx, store: str, moderator: str, order_id: str, details: KeyRequest, shown: ModeratorOffer | None
) -> SignedTerms:
    """The moderator's key for this order, on the terms the buyer saw; any refusal is ``Unreachable`` (the
    form then offers the store's other moderators), a change of terms is ``TermsChanged``; a key given to
    this order id before (for other keys) is ``UsedOrderId``."""
    try:
        signed = await ctx.moderation.signed_key(store, moderator, order_id, details)
    except Unreachable:
        raise
    except Conflict as exc:
        if _KEY_GIVEN in exc.message:
            raise UsedOrderId(
                f"the moderator {moderator}.onion already gave order {order_id} a key: place the order again"
            ) from exc
        raise Unreachable(f"the moderator {moderator}.onion cannot take this order now ({exc.message})") from exc
    except PasarError as exc:  # it answered, but will not take this order (disabled, rate limit, bad answer)
        raise Unreachable(f"the moderator {moderator}.onion cannot take this order now ({exc.message})") from exc
    terms = signed.terms
    if shown is not None:
        agreed = (shown.fee_percent, shown.fee_sat, wire.terms_hash(shown.terms))
        if (terms.fee_percent, terms.fee_sat, terms.terms_hash) != agreed:
            raise TermsChanged(
                f"the moderator {moderator}.onion changed its fee or terms since this page was shown: "
                "nothing was placed; reload the page to read them"
            )
    return signed


@dataclass(frozen=True)
class NodeBuyer:
    """A buyer's node placing the order (``node_orders``): its order id and order-key address, the amount it
    priced from the store's signed catalog (before any coupon) and the listing's hash it read there."""

    order_id: str
    peer: str
    amount_sat: Sats
    listing_hash: str = ""  # the listing as the buyer's node read it ("": not checked)


async def _new_id(ctx: Ctx, node: NodeBuyer | None) -> tuple[str, str]:
    """The order id and the buyer's secret token (a node buyer has its own id and no token: a random hash)."""
    token = secrets.token_urlsafe(24)
    if node is None:
        return secrets.token_hex(8), token
    try:
        await ctx.store.get(node.order_id)
    except NotFound:
        return node.order_id, token
    raise Conflict(f"the order id {node.order_id} is already used on this store: place the order again")


def _check_amount(item: OrderItem, node: NodeBuyer | None) -> None:
    """A node buyer priced the order itself from the listing it read: the listing must be the same, and the
    store's price too (less with a coupon)."""
    if node is None:
        return
    if node.listing_hash and node.listing_hash != item.listing_hash:
        raise ValidationError(
            {"listing_hash": "the listing changed"},
            "the listing changed since your node read it: check out again once it has the store's new catalog",
        )
    total = item.total_sat
    if total == node.amount_sat or (item.discount_sat > 0 and total <= node.amount_sat):
        return
    raise ValidationError(
        {"amount_sat": f"the price is now {total} sat"},
        f"the price changed: it is now {total} sat; check out again",
    )


def _extra(window: int, node: NodeBuyer | None, signed: SignedTerms) -> dict[str, str]:
    extra = {ACCEPT_WINDOW: str(window)}
    if node is not None:
        extra.update({PEER: node.peer, CHANNEL: NODE_CHANNEL, MODERATOR_ANSWER: signed.answer})
    return extra


async def place(
    ctx: Ctx, store: str, form: CheckoutForm, *, shown: ModeratorOffer | None = None, node: NodeBuyer | None = None
) -> tuple[Order, str]:
    """The stored order (awaiting payment) and the buyer's secret token; ``shown``: the chosen moderator's
    offer as the checkout form showed it (the key answer must name the same fee and terms); ``node``: the
    buyer's node placing it (its order id; the price it expects)."""
    item, reservation, buyer, refund, moderator = await validate(ctx, store, form)
    _check_amount(item, node)
    with _under_way(ctx, store, item):  # entered with no await since validate's stock check
        await _room_for_one_more(ctx, store)
        order_id, token = await _new_id(ctx, node)
        blocks, window = store_terms((await ctx.market.store(store))["profile"], ctx.settings)
        btc = ctx.wallet()
        vendor, timeout = await btc.new_key(), await btc.new_key()
        details = KeyRequest(
            amount_sat=Sats(item.total_sat),
            refund_address=refund,
            buyer=buyer,
            vendor=KeyRef(vendor.pubkey, vendor.origin),
            vendor_timeout=KeyRef(timeout.pubkey, timeout.origin),
            timeout_blocks=blocks,
            network=ctx.settings.network,
            accept_window=window,
        )
        signed = await _moderator_key(ctx, store, moderator, order_id, details, shown)
        built = await _escrow(ctx, buyer, details.vendor, signed.terms.pubkey, details.vendor_timeout, blocks)
        now = ctx.now()
        order = Order(
            id=order_id,
            store=store,
            token_hash=token_hash(token),
            state=OrderState.AWAITING_PAYMENT,
            created_at=now,
            updated_at=now,
            item=item,
            amount_sat=Sats(item.total_sat),
            refund_address=refund,
            ship_to_sealed=seal_to_onion(store, form.ship_to.strip()),
            escrow=built,
            moderator=signed.terms,
            pay_by=now + ctx.settings.payment_window,
            vendor_address=vendor.address,
            history=(HistoryEntry(at=now, state=OrderState.AWAITING_PAYMENT, note="order placed"),),
            extra=_extra(window, node, signed),
        )
        return await ctx.store.insert(order, reservation, max_unpaid=ctx.settings.max_unpaid), token
