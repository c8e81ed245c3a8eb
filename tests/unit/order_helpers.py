"""Sample listings and orders for the payments unit tests (plain values, no fakes of behaviour)."""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from typing import cast

from node.core.models import Listing, Sats
from node.payments.models import (
    Escrow,
    KeyRef,
    ModeratorTerms,
    Order,
    OrderItem,
    OrderState,
)
from node.payments.pricing import Reservation

STORE = "a" * 56
MODERATOR = "b" * 56
T0 = 1_800_000_000
KEY = "02" + "11" * 32


def listing(**changes: object) -> Listing:
    base: Listing = {
        "id": "lst000000001",
        "created_at": T0 - 1000,
        "updated_at": T0 - 1000,
        "title": "Wool socks",
        "description": "Warm.",
        "description_format": "text",
        "kind": "physical",
        "price_sat": Sats(10_000),
        "ref_price": None,
        "category": "clothes",
        "tags": [],
        "images": [],
        "shipping": [
            {"name": "post", "regions": ["WORLDWIDE"], "price_sat": Sats(2_000)},
            {"name": "pickup", "regions": ["DE"], "price_sat": Sats(0)},
        ],
        "variants": [],
        "inventory": 5,
        "min_qty": 1,
        "max_qty": 10,
        "expires_at": None,
        "coupons": [
            {"code": "TENOFF", "percent": 10, "amount_sat": None},
            {"code": "flat", "percent": None, "amount_sat": Sats(3_000)},
        ],
        "active": True,
    }
    return cast(Listing, {**base, **changes})


def item(listing_id: str = "lst000000001", sku: str | None = None, qty: int = 1) -> OrderItem:
    return OrderItem(
        listing_id=listing_id,
        listing_hash="sha256:" + "0" * 64,
        title="Wool socks",
        sku=sku,
        qty=qty,
        unit_price_sat=Sats(10_000),
        shipping="post",
        shipping_sat=Sats(2_000),
        coupon=None,
        discount_sat=Sats(0),
    )


def order(
    *,
    store: str = STORE,
    state: OrderState = OrderState.AWAITING_PAYMENT,
    created_at: int = T0,
    listing_id: str = "lst000000001",
    sku: str | None = None,
    qty: int = 1,
) -> Order:
    token = secrets.token_urlsafe(24)
    it = item(listing_id, sku, qty)
    key = KeyRef(KEY, "[deadbeef/84h/1h/0h/0/1]")
    return Order(
        id=secrets.token_hex(8),
        store=store,
        token_hash=hashlib.sha256(token.encode()).hexdigest(),
        state=state,
        created_at=created_at,
        updated_at=created_at,
        item=it,
        amount_sat=it.total_sat,
        refund_address="bcrt1qexample",
        ship_to_sealed="sealed",
        escrow=Escrow(key, key, key, key, 144, "wsh(...)#abcdefgh", "bcrt1qescrow"),
        moderator=ModeratorTerms(MODERATOR, key, 2, Sats(0), "sha256:" + "1" * 64),
        pay_by=created_at + 7200,
    )


def reservation(o: Order, *, updated_at: int = T0 - 1000, inventory: int | None = 5) -> Reservation:
    return Reservation(o.store, o.item.listing_id, o.item.sku, o.item.qty, updated_at, inventory)


def moved(o: Order, state: OrderState, at: int = T0 + 10) -> Order:
    """``o`` in ``state`` without checking the state machine (to set up a store's contents)."""
    return dataclasses.replace(o, state=state, updated_at=at)
