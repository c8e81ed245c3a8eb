"""Pricing a checkout exactly as the listing says, and the stock a page may show.

``price`` turns the checkout form into the ``OrderItem`` the buyer pays for
and the ``Reservation`` the order store commits atomically with the order.
It checks against the catalog alone (variant, quantity limits, shipping
option, coupon, active, the merchant's inventory); units held by other open
orders are checked by ``OrderStore.insert`` in the same transaction as the
insert, so two buyers cannot both take the last unit.

Prices: the variant's price (or the listing's) x qty, plus the shipping
option's price once per order, minus the coupon: a percent coupon takes that
percent of the items (rounded down; shipping is not discounted), an amount
coupon takes at most the items' price.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..core.errors import ValidationError
from ..core.models import Coupon, Listing, PublicListing, Sats, Variant
from ..market import listings as L
from .models import OrderItem

# Below this an escrow is not worth its payout fees (the refund alone costs a few hundred sat).
MIN_ORDER_SAT = Sats(10_000)  # several payout fees: a smaller escrow may not cover its refund
MAX_SHIP_TO = 2_000
AnyListing = Listing | PublicListing  # characters of shipping address / contact


@dataclass(frozen=True)
class CheckoutForm:
    """The storefront's checkout form as posted (every field a string, unchecked)."""

    listing: str
    sku: str = ""
    qty: str = "1"
    shipping: str = ""
    coupon: str = ""
    moderator: str = ""
    buyer_pubkey: str = ""
    refund_address: str = ""
    ship_to: str = ""


@dataclass(frozen=True)
class Reservation:
    """Units an order takes from a listing's stock, checked and committed with the order."""

    store: str
    listing_id: str
    sku: str | None  # None: a listing without variants
    qty: int
    listing_updated_at: int  # the listing as priced: older than the stock's newest, with another count, is stale
    inventory: int | None  # the merchant's count for this sku (None = unlimited): another one starts a new epoch


def _variant(listing: AnyListing, sku: str, errors: dict[str, str]) -> Variant | None:
    variants = listing["variants"]
    if not variants:
        if sku:
            errors["sku"] = "this listing has no variants: leave the variant empty"
        return None
    for variant in variants:
        if variant["sku"] == sku:
            return variant
    skus = ", ".join(v["sku"] for v in variants)
    errors["sku"] = f"choose one of: {skus}" if not sku else f"unknown variant; choose one of: {skus}"
    return None


def _qty(listing: AnyListing, text: str, errors: dict[str, str]) -> int:
    text = text.strip() or "1"
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 10**6:
        errors["qty"] = "a whole number of items from 1"
        return 1
    qty = int(text)
    low, high = listing["min_qty"], listing["max_qty"]
    if qty < low:
        errors["qty"] = f"at least {low} per order"
    elif high is not None and qty > high:
        errors["qty"] = f"at most {high} per order"
    return qty


def _shipping(listing: AnyListing, name: str, errors: dict[str, str]) -> tuple[str | None, Sats]:
    options = listing["shipping"]
    if not options:
        if name:
            errors["shipping"] = "this listing does not ship: leave the shipping option empty"
        return None, Sats(0)
    for option in options:
        if option["name"] == name:
            return name, option["price_sat"]
    names = ", ".join(o["name"] for o in options)
    errors["shipping"] = f"choose a shipping option: {names}" if not name else f"unknown option; choose one of: {names}"
    return None, Sats(0)


def _coupon(listing: Listing, code: str, items_sat: int, errors: dict[str, str]) -> tuple[str | None, Sats]:
    if not code:
        return None, Sats(0)
    found: Coupon | None = next((c for c in listing["coupons"] if c["code"].upper() == code.upper()), None)
    if found is None:
        errors["coupon"] = "this coupon is not valid for this listing"
        return None, Sats(0)
    if found["percent"] is not None:
        discount = items_sat * found["percent"] // 100
    else:
        discount = min(items_sat, found["amount_sat"] or 0)
    return found["code"], Sats(discount)


def _stock(listing: AnyListing, variant: Variant | None, qty: int, errors: dict[str, str]) -> int | None:
    inventory = variant["inventory"] if variant is not None else listing["inventory"]
    if inventory is not None and qty > inventory and "qty" not in errors:
        errors["qty"] = "sold out" if inventory <= 0 else f"only {inventory} left"
    return inventory


def _ship_to(listing: AnyListing, text: str, errors: dict[str, str]) -> None:
    if len(text) > MAX_SHIP_TO:
        errors["ship_to"] = f"at most {MAX_SHIP_TO} characters"
    elif listing["kind"] == "physical" and not text.strip():
        errors["ship_to"] = "give the shipping address (or how the vendor reaches you)"


def price(
    listing: Listing,
    form: CheckoutForm,
    *,
    now: int,
    store: str = "",
    problems: Mapping[str, str] | None = None,
) -> tuple[OrderItem, Reservation]:
    """The exact item and its stock reservation; one ``ValidationError`` naming every problem.

    ``problems``: what the caller already found wrong in the other fields (a bad
    pubkey, an unknown moderator), reported in the same error.
    """
    errors: dict[str, str] = dict(problems or {})
    if form.listing != listing["id"]:
        errors["listing"] = "unknown listing"
    elif not L.is_active(listing, now):
        errors["listing"] = "this listing is no longer for sale"
    variant = _variant(listing, form.sku.strip(), errors)
    qty = _qty(listing, form.qty, errors)
    unit = variant["price_sat"] if variant is not None and variant["price_sat"] is not None else listing["price_sat"]
    shipping, shipping_sat = _shipping(listing, form.shipping.strip(), errors)
    coupon, discount = _coupon(listing, form.coupon.strip(), unit * qty, errors)
    inventory = _stock(listing, variant, qty, errors)
    _ship_to(listing, form.ship_to, errors)
    item = OrderItem(
        listing_id=listing["id"],
        listing_hash=L.public_view(listing)["hash"],
        title=listing["title"] if variant is None else f"{listing['title']} ({variant['label']})",
        sku=variant["sku"] if variant is not None else None,
        qty=qty,
        unit_price_sat=Sats(unit),
        shipping=shipping,
        shipping_sat=shipping_sat,
        coupon=coupon,
        discount_sat=discount,
    )
    if not errors and item.total_sat < MIN_ORDER_SAT:
        errors["qty"] = f"the order must come to at least {MIN_ORDER_SAT} sat (escrow payouts cost fees)"
    if errors:
        raise ValidationError(errors, "the order was not placed: " + "; ".join(sorted(errors.values())))
    reservation = Reservation(store, listing["id"], item.sku, qty, listing["updated_at"], inventory)
    return item, reservation


def price_public(
    listing: PublicListing, form: CheckoutForm, *, now: int, problems: Mapping[str, str] | None = None
) -> OrderItem:
    """A buyer's node pricing a listing of another store's signed catalog, by the rules of ``price``.

    The published view carries no coupon codes (the store checks a code when it takes the order), so
    the item is priced before any coupon (``discount_sat`` 0, ``coupon`` kept as typed); expiry and
    quantity limits are checked, stock only as far as the catalog says (the store checks it again).
    """
    errors: dict[str, str] = dict(problems or {})
    if form.listing != listing["id"]:
        errors["listing"] = "unknown listing"
    elif listing["expires_at"] is not None and listing["expires_at"] <= now:
        errors["listing"] = "this listing is no longer for sale"
    variant = _variant(listing, form.sku.strip(), errors)
    qty = _qty(listing, form.qty, errors)
    unit = variant["price_sat"] if variant is not None and variant["price_sat"] is not None else listing["price_sat"]
    shipping, shipping_sat = _shipping(listing, form.shipping.strip(), errors)
    if form.coupon.strip() and not listing["accepts_coupons"]:
        errors["coupon"] = "this listing takes no coupons"
    _stock(listing, variant, qty, errors)
    _ship_to(listing, form.ship_to, errors)
    item = OrderItem(
        listing_id=listing["id"],
        listing_hash=listing["hash"],
        title=listing["title"] if variant is None else f"{listing['title']} ({variant['label']})",
        sku=variant["sku"] if variant is not None else None,
        qty=qty,
        unit_price_sat=Sats(unit),
        shipping=shipping,
        shipping_sat=shipping_sat,
        coupon=form.coupon.strip() or None,
        discount_sat=Sats(0),
    )
    if not errors and item.total_sat < MIN_ORDER_SAT:
        errors["qty"] = f"the order must come to at least {MIN_ORDER_SAT} sat (escrow payouts cost fees)"
    if errors:
        raise ValidationError(errors, "the order was not placed: " + "; ".join(sorted(errors.values())))
    return item


def inventories(listing: Listing | PublicListing) -> dict[str | None, int | None]:
    """The merchant's count per sku (None: a listing without variants); None = unlimited."""
    if listing["variants"]:
        return {v["sku"]: v["inventory"] for v in listing["variants"]}
    return {None: listing["inventory"]}


def available(listing: Listing | PublicListing, committed: Mapping[str | None, int]) -> dict[str | None, int | None]:
    """Units a buyer may still order per sku (None: a listing without variants); None = unlimited.

    ``listing``: the stored listing or its published view (a page has the view at hand: no storage read).

    ``committed``: units held by orders in the stock epoch of the listing's counts (``OrderStore.committed``).
    """
    return {sku: _left(count, committed.get(sku, 0)) for sku, count in inventories(listing).items()}


def _left(inventory: int | None, committed: int) -> int | None:
    return None if inventory is None else max(0, inventory - committed)
