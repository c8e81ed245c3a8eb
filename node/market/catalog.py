"""The signed catalog and the in-memory snapshot the storefront serves from.

A snapshot is built once per change (``seq``) and shared by every request, so
serving a page never touches storage.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from ..core import envelope, fields
from ..core.crypto import StoreKey, canonical_json
from ..core.models import CatalogBody, Listing, Profile, PublicListing, StoredReview
from ..core.ports import TextIndex, TextIndexFactory
from . import listings as L
from . import reviews as R
from . import textsearch

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
    image_ids: frozenset[str] = frozenset()
    # Full-text index of ``listings`` (position n = listings[n]), built with the snapshot.
    index: TextIndex = field(repr=False, default_factory=lambda: textsearch.ScanIndex(()))


def newest_first(items: list[AnyListing]) -> list[AnyListing]:
    """Newest first; within one second (a batch), the later-stored one first."""
    return sorted(reversed(items), key=lambda x: -int(x["created_at"]))


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
    text_index: TextIndexFactory = textsearch.scan_index,
    reviews: Sequence[StoredReview] = (),
) -> Snapshot:
    """Seal the catalog and build what the storefront serves from (``text_index`` builds the search index).

    ``reviews``: the buyers' reviews the store holds; the unexpired ones go in the body's ``reviews``
    (absent when there are none, so a store without reviews publishes what it did before).
    """
    active = newest_first([x for x in all_listings if L.is_active(x, now)])
    views = [L.public_view(x) for x in active]
    body = CatalogBody(profile=profile, listings=views)
    published = R.published(reviews, now=now)
    if published:
        body["reviews"] = published
    env = envelope.seal(key, CATALOG_TYPE, body, seq=seq, issued_at=now, expires_at=now + ttl)
    data = canonical_json(env)
    expiries = [expires for x in active if (expires := x["expires_at"])]
    if (review_expiry := R.next_expiry(reviews, now=now)) is not None:
        expiries.append(review_expiry)
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
        image_ids=frozenset(i["id"] for v in views for i in v["images"]),
        index=text_index([textsearch.doc(v) for v in views]),
    )


@dataclass(frozen=True)
class Page:
    items: list[PublicListing]
    total: int
    number: int
    pages: int
    query: str
    category: Category | None


def _category(snap: Snapshot, slug: str) -> tuple[Category | None, bool]:
    """The category a slug names, and whether the filter can match anything at all."""
    if not slug:
        return None, True
    cat = next((c for c in snap.categories if c.slug == slug), None)
    return cat, cat is not None


def _paged(items: list[PublicListing], total: int, number: int, size: int, query: str, cat: Category | None) -> Page:
    return Page(items, total, number, max(1, math.ceil(total / size)), query, cat)


def _number(page: int, total: int, size: int) -> int:
    """The page to show: ``page`` clamped to the pages there are."""
    return min(max(1, page), max(1, math.ceil(total / size)))


def browse(snap: Snapshot, *, query: str = "", category: str = "", page: int = 1, size: int = 24) -> Page:
    """Filter by category slug and search words (all must match), then page.

    With search words this queries the index on the calling thread: the
    storefront uses :func:`search`, which does it off the event loop.
    """
    cat, possible = _category(snap, category)
    words = textsearch.words(query)
    if words and possible:
        name = cat.name if cat is not None else None
        hits = snap.index.search(words, category=name, offset=(max(1, page) - 1) * size, limit=size)
        number = _number(page, hits.total, size)
        if number != max(1, page):  # past the last page: show the last one
            hits = snap.index.search(words, category=name, offset=(number - 1) * size, limit=size)
        return _paged([snap.listings[n] for n in hits.positions], hits.total, number, size, query, cat)
    items = snap.listings if possible else []
    if cat is not None:
        items = [v for v in items if v["category"] == cat.name]
    number = _number(page, len(items), size)
    start = (number - 1) * size
    return _paged(items[start : start + size], len(items), number, size, query, cat)


async def search(snap: Snapshot, *, query: str, category: str = "", page: int = 1, size: int = 24) -> Page:
    """:func:`browse` for the storefront: the index is queried off the event loop."""
    words = textsearch.words(query)
    cat, possible = _category(snap, category)
    if not words or not possible:
        return browse(snap, query=query, category=category, page=page, size=size)
    name = cat.name if cat is not None else None
    hits = await snap.index.find(words, category=name, offset=(max(1, page) - 1) * size, limit=size)
    number = _number(page, hits.total, size)
    if number != max(1, page):  # past the last page: show the last one
        hits = await snap.index.find(words, category=name, offset=(number - 1) * size, limit=size)
    return _paged([snap.listings[n] for n in hits.positions], hits.total, number, size, query, cat)
