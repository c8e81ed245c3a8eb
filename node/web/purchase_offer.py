"""What the buyer's checkout page shows: a listing of another store, read from the directory's held signed catalog.

The catalog is verified (``catalogs.verify_catalog``: the store's signature) before anything is read,
then only the parts the form shows are taken, each checked for its type: the catalog comes from a
stranger, so anything unreadable is left out (or the page says the listing can't be ordered) rather than
failing the page. The Purchases service prices the order again from the same catalog when it is placed;
this is only what the form offers.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..core.errors import NotFound, SignatureError, ValidationError
from ..core.models import Sats
from ..discovery.directory import Directory
from ..purchases.placing import open_held

MAX_CHOICES = 100
UNITS = ("sat", "BTC", "mBTC")


@dataclass(frozen=True)
class VariantChoice:
    sku: str
    label: str
    price_sat: Sats


@dataclass(frozen=True)
class ShippingChoice:
    name: str
    regions: tuple[str, ...]
    price_sat: Sats


@dataclass(frozen=True)
class ModeratorChoice:
    """One moderator the store's profile names, with the fee and terms its ``moderator_terms`` publish."""

    onion: str
    fee_percent: int | None  # None: the catalog publishes no terms for this moderator
    fee_sat: Sats
    terms: str

    def fee_for(self, amount: int) -> Sats:
        return Sats(self.fee_sat + amount * (self.fee_percent or 0) // 100)


@dataclass(frozen=True)
class Offer:
    store: str
    store_name: str
    listing: str
    title: str
    kind: str
    price_sat: Sats
    min_qty: int
    max_qty: int | None
    accepts_coupons: bool
    variants: tuple[VariantChoice, ...]
    shipping: tuple[ShippingChoice, ...]
    moderators: tuple[ModeratorChoice, ...]
    timeout_blocks: int | None  # the store's published escrow timeout (None: its node's setting)
    unit: str
    as_of: int  # the catalog's issue time


def _int(value: object, default: int | None = None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _items(value: object) -> list[Mapping[str, Any]]:
    return [v for v in value[:MAX_CHOICES] if isinstance(v, dict)] if isinstance(value, list) else []


def _variants(item: Mapping[str, Any], price: int) -> tuple[VariantChoice, ...]:
    out = []
    for v in _items(item.get("variants")):
        sku, own = _str(v.get("sku")), _int(v.get("price_sat"))
        if sku:
            out.append(VariantChoice(sku, _str(v.get("label")) or sku, Sats(price if own is None else own)))
    return tuple(out)


def _shipping(item: Mapping[str, Any]) -> tuple[ShippingChoice, ...]:
    out = []
    for s in _items(item.get("shipping")):
        name, price = _str(s.get("name")), _int(s.get("price_sat"))
        regions = s.get("regions")
        if name and price is not None:
            kept = tuple(r for r in regions[:MAX_CHOICES] if isinstance(r, str)) if isinstance(regions, list) else ()
            out.append(ShippingChoice(name, kept, Sats(price)))
    return tuple(out)


def _moderators(profile: Mapping[str, Any]) -> tuple[ModeratorChoice, ...]:
    terms = {_str(t.get("onion")): t for t in _items(profile.get("moderator_terms"))}
    named = profile.get("moderators")
    out = []
    for onion in named[:MAX_CHOICES] if isinstance(named, list) else []:
        if not isinstance(onion, str) or not onion:
            continue
        t = terms.get(onion, {})
        fee_percent = _int(t.get("fee_percent")) if t else None
        out.append(ModeratorChoice(onion, fee_percent, Sats(_int(t.get("fee_sat"), 0) or 0), _str(t.get("terms"))))
    return tuple(out)


def _offer(store: str, issued_at: int, profile: Mapping[str, Any], item: Mapping[str, Any]) -> Offer:
    price = _int(item.get("price_sat"))
    if price is None or not _str(item.get("title")):
        raise ValidationError({"listing": "the store's catalog gives this listing no readable price or title"})
    unit = _str(profile.get("display_unit"))
    return Offer(
        store=store,
        store_name=_str(profile.get("name")),
        listing=_str(item.get("id")),
        title=_str(item.get("title")),
        kind=_str(item.get("kind")) or "physical",
        price_sat=Sats(price),
        min_qty=max(1, _int(item.get("min_qty"), 1) or 1),
        max_qty=_int(item.get("max_qty")),
        accepts_coupons=item.get("accepts_coupons") is True,
        variants=_variants(item, price),
        shipping=_shipping(item),
        moderators=_moderators(profile),
        timeout_blocks=_int(profile.get("escrow_timeout_blocks")),
        unit=unit if unit in UNITS else "sat",
        as_of=issued_at,
    )


async def load_offer(directory: Directory, store: str, listing: str, *, now: int | None = None) -> Offer:
    """``listing`` of ``store`` as its held signed catalog offers it; NotFound when the directory has none."""
    raw = await directory.mirror(store)
    if raw is None:
        raise NotFound(f"{store}.onion is not in this node's directory yet: crawl it (pasar crawl {store})")
    try:
        verified, body = await open_held(raw, store=store, now=int(time.time()) if now is None else now)
    except (ValidationError, SignatureError) as exc:
        raise NotFound(
            f"this node's copy of the store's catalog can't be used ({exc.message}): crawl it again"
        ) from exc
    profile = body.get("profile")
    for item in _items(body.get("listings")):
        if item.get("id") == listing:
            return _offer(store, verified.issued_at, profile if isinstance(profile, dict) else {}, item)
    raise NotFound("the store's catalog held here has no such listing (it may have been removed): search again")
