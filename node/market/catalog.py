"""The signed catalog and the in-memory snapshot the storefront serves from.

A snapshot is built once per change (``seq``) and shared by every request, so
serving a page never touches storage.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import TypeVar

from ..core import envelope, fields
from ..core.crypto import StoreKey, canonical_json
from ..core.models import CatalogBody, Listing, Profile, PublicListing
from . import listings as L

CATALOG_TYPE = "pasar.catalog"
AnyListing = TypeVar("AnyListing", Listing, PublicListing)


@dataclass(frozen=True)
class Category:
    name: str
    slug: str
    count: int


@dataclass
class Snapshot:
    onion: str
    seq: int
    profile: Profile
    listings: list[PublicListing]
    by_id: dict[str, PublicListing]
    categories: list[Category]
    envelope_bytes: bytes
    etag: str
    refresh_at: int
    search_text: dict[str, str] = field(repr=False, default_factory=dict)
    image_ids: frozenset[str] = frozenset()


def newest_first(items: list[AnyListing]) -> list[AnyListing]:
    """Newest first; within one second (a batch), the later-stored one first."""
    return sorted(reversed(items), key=lambda x: -int(x["created_at"]))


def _search_text(view: PublicListing) -> str:
    parts = [view["title"], view["category"], " ".join(view["tags"]), view["description"]]
    return " ".join(parts).casefold()


def _categories(views: list[PublicListing]) -> list[Category]:
    counts: dict[str, int] = {}
    for v in views:
        if v["category"]:
            counts[v["category"]] = counts.get(v["category"], 0) + 1
    out: list[Category] = []
    taken: set[str] = set()
    for name, count in sorted(counts.items(), key=lambda x: (x[0].casefold(), x[0])):
        slug, n = fields.slug(name), 1
        while slug in taken:  # "Hats & Caps" and "Hats Caps" both get a page
            n += 1
            slug = f"{fields.slug(name)}-{n}"
        taken.add(slug)
        out.append(Category(name, slug, count))
    return out


def build(
    key: StoreKey,
    profile: Profile,
    all_listings: list[Listing],
    *,
    seq: int,
    now: int,
    ttl: int,
) -> Snapshot:
    active = newest_first([x for x in all_listings if L.is_active(x, now)])
    views = [L.public_view(x) for x in active]
    body = CatalogBody(profile=profile, listings=views)
    env = envelope.seal(key, CATALOG_TYPE, body, seq=seq, issued_at=now, expires_at=now + ttl)
    data = canonical_json(env)
    expiries = [expires for x in active if (expires := x["expires_at"])]
    refresh_at = min([now + ttl // 2, *expiries])
    return Snapshot(
        onion=key.onion,
        seq=seq,
        profile=profile,
        listings=views,
        by_id={v["id"]: v for v in views},
        categories=_categories(views),
        envelope_bytes=data,
        etag='"' + hashlib.sha256(data).hexdigest()[:32] + '"',
        refresh_at=refresh_at,
        search_text={v["id"]: _search_text(v) for v in views},
        image_ids=frozenset(i["id"] for v in views for i in v["images"]),
    )


@dataclass(frozen=True)
class Page:
    items: list[PublicListing]
    total: int
    number: int
    pages: int
    query: str
    category: Category | None


def browse(snap: Snapshot, *, query: str = "", category: str = "", page: int = 1, size: int = 24) -> Page:
    """Filter by category slug and search words (all must match), then page."""
    cat = next((c for c in snap.categories if c.slug == category), None) if category else None
    items = snap.listings
    if cat is not None:
        items = [v for v in items if v["category"] == cat.name]
    elif category:
        items = []
    words = query.casefold().split()[:10]
    if words:
        items = [v for v in items if all(w in snap.search_text[v["id"]] for w in words)]
    pages = max(1, math.ceil(len(items) / size))
    number = min(max(1, page), pages)
    start = (number - 1) * size
    return Page(items[start : start + size], len(items), number, pages, query, cat)
