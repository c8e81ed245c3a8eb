"""Signed reviews for tests: a buyer's order key reviewing a store, with the store's receipt."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from node.core import reviews
from node.core.crypto import StoreKey

NOW = 1_800_000_000
TXID = "ab" * 32
BLOCK = "cd" * 32
HASH = "sha256:" + "ef" * 32
ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
ORDER = "0123456789abcdef"
_SHOPS: dict[str, StoreKey] = {}


def shop(key: StoreKey | None = None) -> str:
    """A store's onion whose key ``make`` can find to sign receipts (a fresh key unless one is given)."""
    key = key or StoreKey.generate()
    _SHOPS[key.onion] = key
    return key.onion


def store_key(store: StoreKey | str) -> StoreKey:
    if isinstance(store, StoreKey):
        return store
    if store not in _SHOPS:
        raise KeyError(f"no key for store {store}: make its onion with review_helpers.shop()")
    return _SHOPS[store]


def receipt(
    store: StoreKey | str,
    buyer: StoreKey | str,
    *,
    order: str = ORDER,
    address: str = ADDRESS,
    listing_hash: str = HASH,
    now: int = NOW,
) -> dict[str, object]:
    """The store's receipt for ``order`` placed by ``buyer`` (its order key or that key's address)."""
    return reviews.seal_receipt(
        store_key(store),
        order=order,
        buyer=buyer.onion if isinstance(buyer, StoreKey) else buyer,
        address=address,
        listing_hash=listing_hash,
        now=now,
    )


def _order_of(buyer: StoreKey) -> str:
    """One order per buyer key (as a buyer's node makes one key per order): the same key, the same order."""
    return hashlib.sha256(buyer.onion.encode()).hexdigest()[:16]


def make(
    store: StoreKey | str,
    *,
    key: StoreKey | None = None,
    order: str | None = None,
    rating: int = 5,
    text: str = "good",
    seq: int = 1,
    now: int = NOW,
    vout: int = 0,
    address: str = ADDRESS,
    listing: str = "abc123",
    txid: str = TXID,
    block: str = BLOCK,
    receipt_of: Mapping[str, object] | None = None,
) -> reviews.Review:
    """A review of ``store`` (its key, or an onion from ``shop()``, signs the receipt) by ``key`` (a fresh buyer
    order key by default) of ``order`` (by default one derived from the buyer key: one order per key)."""
    seller = store_key(store)
    buyer = key or StoreKey.generate()
    order = order or _order_of(buyer)
    return reviews.build(
        buyer,
        store=seller.onion,
        order=order,
        listing=listing,
        listing_hash=HASH,
        outpoint=f"{txid}:{vout}",
        block=block,
        address=address,
        rating=rating,
        text=text,
        receipt=receipt_of if receipt_of is not None else receipt(seller, buyer, order=order, address=address, now=now),
        seq=seq,
        now=now,
    )
