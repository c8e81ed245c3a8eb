"""A purchase and a store's escrow answer for it, built without Core (pure-logic tests of node/purchases)."""

from __future__ import annotations

import copy
from typing import Any

from node.core import envelope, reviews
from node.core.crypto import StoreKey
from node.core.models import Sats
from node.messaging import wire
from node.payments import address_codec, escrow
from node.payments import moderation_wire as mw
from node.payments.models import KeyRef, ModeratorTerms
from node.purchases.models import Purchase, PurchaseState

B = KeyRef("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798", "[d34db33f/84h/1h/0h/0/1]")
V = KeyRef("02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5", "[0badcafe/84h/1h/0h/0/2]")
M = KeyRef("02f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9", "[abcdef01/84h/1h/0h/0/3]")
V2 = KeyRef("02e493dbf1c10d80f3581e4904930b1404cc6c13900ee0758474fa94abe8c4cd13", "[0badcafe/84h/1h/0h/0/4]")
OTHER = KeyRef("022f8bde4d1a07209355b4a7250a5c5128e88b84bddc619ab7cba8d569b240efe4")
N = 144
T0 = 1_800_000_000
STORE_KEY = StoreKey(bytes(range(32)))
MODERATOR_KEY = StoreKey(bytes(range(1, 33)))
STORE = STORE_KEY.onion
MODERATOR = MODERATOR_KEY.onion
ORDER = "0123456789abcdef0123456789abcdef"
REFUND = address_codec.segwit_encode("bcrt", 0, b"\x01" * 20)
VENDOR_PAY = address_codec.segwit_encode("bcrt", 0, b"\x02" * 20)
STRANGER = address_codec.segwit_encode("bcrt", 0, b"\x03" * 20)
AMOUNT = Sats(150_000)
ORDER_KEY = StoreKey(bytes(range(2, 34)))
BUYER = wire.key_address(ORDER_KEY)  # the order key's address (what the store's receipt names)
LISTING_HASH = "sha256:" + "ab" * 32


def purchase(**changes: Any) -> Purchase:
    base = Purchase(
        id=ORDER,
        store=STORE,
        listing_id="lst000000001",
        listing_hash="sha256:" + "ab" * 32,
        title="Tea",
        sku=None,
        qty=2,
        shipping="post",
        coupon=None,
        moderator=MODERATOR,
        amount_sat=AMOUNT,
        order_key=ORDER_KEY.seed.hex(),
        buyer_key=B,
        refund_address=REFUND,
        state=PurchaseState.PLACED.value,
        created_at=T0,
        updated_at=T0,
        store_timeout=N,
    )
    return base.__class__(**{**base.__dict__, **changes})


def moderator_answer(
    *,
    key: StoreKey = MODERATOR_KEY,
    order: str = ORDER,
    store: str = STORE,
    pubkey: KeyRef = M,
    address: str | None = None,
    issued_at: int = T0,
) -> dict[str, Any]:
    addr = address or escrow.escrow_address(escrow.witness_script(B, V, M, V2, N), "regtest")
    terms = ModeratorTerms(
        onion=key.onion, pubkey=pubkey, fee_percent=1, fee_sat=Sats(0), terms_hash="sha256:" + "0" * 64
    )
    answer = mw.KeyAnswer(terms=terms, order_id=order, store=store, descriptor="x", address=addr)
    body = mw.key_answer_body(answer, "request-sig")
    return dict(envelope.seal(key, mw.KEY_TYPE, body, seq=1, issued_at=issued_at, expires_at=issued_at + 3600))


def escrow_fields(b: KeyRef = B, v: KeyRef = V, m: KeyRef = M, v2: KeyRef = V2, n: int = N) -> dict[str, Any]:
    bare = escrow.descriptor(b, v, m, v2, n)
    return {
        "descriptor": f"{bare}#{escrow.descriptor_checksum(bare)}",
        "address": escrow.escrow_address(escrow.witness_script(b, v, m, v2, n), "regtest"),
        "buyer": b.descriptor_key(),
        "vendor": v.descriptor_key(),
        "moderator": m.descriptor_key(),
        "vendor_timeout": v2.descriptor_key(),
        "timeout_blocks": n,
    }


def receipt(*, key: StoreKey = STORE_KEY, **changes: Any) -> dict[str, object]:
    """The store's signed receipt for the order (``changes`` override order, buyer, address, listing_hash)."""
    fields: dict[str, Any] = {
        "order": ORDER,
        "buyer": BUYER,
        "address": escrow_fields()["address"],
        "listing_hash": LISTING_HASH,
    }
    return reviews.seal_receipt(key, **(fields | changes), now=T0)


def escrow_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "escrow": escrow_fields(),
        "amount_sat": AMOUNT,
        "pay_by": T0 + 7200,
        "accept_window": 86400,
        "vendor_address": VENDOR_PAY,
        "moderator_answer": moderator_answer(),
        "receipt": receipt(),
        "item": {
            "listing": "lst000000001",
            "listing_hash": "sha256:" + "ab" * 32,
            "title": "Tea",
            "sku": None,
            "qty": 2,
            "unit_price_sat": 70_000,
            "shipping": "post",
            "shipping_sat": 10_000,
            "discount_sat": 0,
        },
    }
    body.update(changes)
    return copy.deepcopy(body)
