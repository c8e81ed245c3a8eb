"""Listings, their stock, and images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.errors import BadRequest
from ..core.models import Listing, UploadedImage
from .base import Context, Operation
from .stores import StoreBody, StoreRef


@dataclass(frozen=True)
class ListingRef:
    store: str
    id: str


@dataclass(frozen=True)
class ListingBody:
    store: str
    id: str
    body: Any


@dataclass(frozen=True)
class ImageUpload:
    store: str
    data: bytes


async def _list_listings(ctx: Context, inp: StoreRef) -> list[Listing]:
    return await ctx.market.listings(await ctx.market.resolve(inp.store))


async def _add_listings(ctx: Context, inp: StoreBody) -> list[Listing] | Listing:
    """One listing object, or ``{"listings": [...]}`` stored in one atomic write.

    Each may carry an ``import_key``: a listing whose key is already stored is
    skipped, so the reply (the listings stored) is then shorter than the
    request; one listing alone answers 409 instead.
    """
    onion, body = await ctx.market.resolve(inp.store), inp.body
    if isinstance(body, dict) and set(body) == {"listings"} and isinstance(body["listings"], list):
        return await ctx.market.add_listings(onion, body["listings"])
    return await ctx.market.add_listing(onion, body)


async def _get_listing(ctx: Context, inp: ListingRef) -> Listing:
    return await ctx.market.listing(await ctx.market.resolve(inp.store), inp.id)


async def _update_listing(ctx: Context, inp: ListingBody) -> Listing:
    return await ctx.market.update_listing(await ctx.market.resolve(inp.store), inp.id, inp.body)


async def _delete_listing(ctx: Context, inp: ListingRef) -> None:
    await ctx.market.remove_listing(await ctx.market.resolve(inp.store), inp.id)


async def _set_inventory(ctx: Context, inp: ListingBody) -> Listing:
    """``{SKU (or "" without variants): count or null}``; answers the listing."""
    market = ctx.market
    onion = await market.resolve(inp.store)
    if not isinstance(inp.body, dict):
        raise BadRequest('body must map SKU (or "" without variants) to a count or null')
    await market.listing(onion, inp.id)  # 404 before 422 for a missing listing
    await market.set_inventory(onion, {inp.id: inp.body})
    return await market.listing(onion, inp.id)


async def _add_image(ctx: Context, inp: ImageUpload) -> UploadedImage:
    """Raw image bytes (the web also reads multipart with an ``image`` file field)."""
    return await ctx.market.add_image(await ctx.market.resolve(inp.store), inp.data)


S, ITEM = "/stores/{store}", "/stores/{store}/listings/{id}"
list_listings = Operation("list_listings", "GET", f"{S}/listings", StoreRef, _list_listings)
add_listings = Operation("add_listings", "POST", f"{S}/listings", StoreBody, _add_listings, status=201)
get_listing = Operation("get_listing", "GET", ITEM, ListingRef, _get_listing)
update_listing = Operation("update_listing", "PUT", ITEM, ListingBody, _update_listing)
delete_listing = Operation("delete_listing", "DELETE", ITEM, ListingRef, _delete_listing, status=204)
set_inventory = Operation("set_inventory", "PUT", f"{ITEM}/inventory", ListingBody, _set_inventory)
add_image = Operation("add_image", "POST", f"{S}/images", ImageUpload, _add_image, status=201)

OPERATIONS = (list_listings, add_listings, get_listing, update_listing, delete_listing, set_inventory, add_image)
