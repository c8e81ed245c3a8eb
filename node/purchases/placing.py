"""What a purchase is priced from: the store's signed catalog as this node's directory holds it.

The catalog's signature is checked again (``catalogs.verify_catalog``), then
the one listing and the profile's terms are read with their types checked
(the store signed them, but a store is a stranger): a listing whose content
hash does not match its fields is refused, since the store checks that hash
when it takes the order.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Protocol, cast

from ..core import addresses, crypto
from ..core.errors import NotFound, ValidationError
from ..core.models import PublicListing
from ..discovery import catalogs
from ..discovery.models import VerifiedCatalog

_LISTING_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "title": (str,),
    "kind": (str,),
    "price_sat": (int,),
    "shipping": (list,),
    "variants": (list,),
    "inventory": (int, type(None)),
    "min_qty": (int,),
    "max_qty": (int, type(None)),
    "expires_at": (int, type(None)),
    "accepts_coupons": (bool,),
    "hash": (str,),
}


class Mirrors(Protocol):
    """What placing reads of ``discovery.directory.Directory``."""

    async def mirror(self, store: str) -> bytes | None: ...


@dataclass(frozen=True)
class Offer:
    """One listing of a store's verified catalog and the store's terms that bind the escrow."""

    listing: PublicListing
    moderators: tuple[str, ...]
    timeout_blocks: int | None  # the profile's escrow_timeout_blocks, when it publishes one


def _typed(value: object, kinds: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in kinds:
        return False
    return isinstance(value, kinds)


def _check_listing(item: object) -> PublicListing:
    if not isinstance(item, dict):
        raise ValidationError({"listing": "the catalog's listing is not an object"})
    for name, kinds in _LISTING_FIELDS.items():
        if not _typed(item.get(name), kinds):
            raise ValidationError({"listing": f"the catalog's listing has no valid {name!r}"})
    for option in item["shipping"]:
        if not (
            isinstance(option, dict) and isinstance(option.get("name"), str) and _typed(option.get("price_sat"), (int,))
        ):
            raise ValidationError({"listing": "the catalog's listing has a malformed shipping option"})
    for variant in item["variants"]:
        ok = isinstance(variant, dict) and all(isinstance(variant.get(k), str) for k in ("sku", "label"))
        if not ok or not all(_typed(variant.get(k), (int, type(None))) for k in ("price_sat", "inventory")):
            raise ValidationError({"listing": "the catalog's listing has a malformed variant"})
    if crypto.content_hash({k: v for k, v in item.items() if k != "hash"}) != item["hash"]:
        raise ValidationError({"listing": "the catalog's listing does not match its own hash: crawl the store again"})
    return cast(PublicListing, item)


def _terms(profile: object) -> tuple[tuple[str, ...], int | None]:
    if not isinstance(profile, dict):
        return (), None
    moderators = profile.get("moderators")
    names = (
        tuple(addresses.normalize(m) for m in moderators if isinstance(m, str)) if isinstance(moderators, list) else ()
    )
    timeout = profile.get("escrow_timeout_blocks")
    return names, timeout if _typed(timeout, (int,)) else None


def _open_held(raw: bytes, store: str, now: int) -> tuple[VerifiedCatalog, Any]:
    verified = catalogs.verify_catalog(raw, store=store, now=now)
    return verified, json.loads(raw)["body"]  # verified above: an object


async def open_held(raw: bytes, *, store: str, now: int) -> tuple[VerifiedCatalog, Any]:
    """A held catalog verified and its body parsed, in a worker thread: catalogs reach 64 MiB and carry up to
    1,000 reviews to verify, so even a small one is too much CPU for the event loop."""
    return await asyncio.to_thread(_open_held, raw, store, now)


async def offer(directory: Mirrors, store: str, listing_id: str, *, now: int) -> Offer:
    """The listing ``listing_id`` of ``store``'s catalog held by the directory, verified.

    ``NotFound`` when the directory holds no (current) catalog of the store or it has no such listing.
    """
    raw = await directory.mirror(store)
    if raw is None:
        raise NotFound(
            f"{store}.onion is not in this node's directory yet: crawl it (pasar crawl {store}) and try again"
        )
    _, body = await open_held(raw, store=store, now=now)
    listings = body.get("listings") if isinstance(body, dict) else None
    found = next((item for item in listings or [] if isinstance(item, dict) and item.get("id") == listing_id), None)
    if found is None:
        raise NotFound(f"{store}.onion's catalog has no listing {listing_id!r} (any more): crawl it again")
    moderators, timeout = _terms(body.get("profile"))
    return Offer(listing=_check_listing(found), moderators=moderators, timeout_blocks=timeout)
