"""Typed records shared by the parts of discovery (gossip, crawler, directory, mirrors).

docs/protocol.md has the wire formats; this module has what the code passes around.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NotRequired, TypedDict

from ..core.models import Sats
from ..core.reviews import Review

ANNOUNCE_TYPE = "pasar.announce"
BLOCKLIST_TYPE = "pasar.blocklist"


# -- announcements (gossip) ----------------------------------------------------
class AnnounceBody(TypedDict):
    """The body of a ``pasar.announce`` envelope, signed by the store key (strict: no other fields)."""

    name: str  # 1-80 characters
    description: str  # at most 280 characters
    tags: list[str]  # at most 16, lower-case, each 1-32 characters, sorted, unique
    ships_to: list[str]  # at most 64: "WORLDWIDE" or ISO 3166 two-letter codes, sorted, unique
    listings: int  # active listings in the catalog
    catalog_seq: int  # the catalog envelope's seq
    catalog_hash: str  # "sha256:<hex>" of the catalog envelope's bytes exactly as served


@dataclass(frozen=True)
class Announcement:
    """A verified announcement: the envelope's fields, its typed body and its canonical bytes."""

    store: str
    seq: int
    issued_at: int
    expires_at: int
    body: AnnounceBody
    raw: bytes  # canonical JSON of the whole envelope (what is stored and relayed)


class PeerView(TypedDict):
    """A gossip peer (another node's onion) as the API and CLI show it."""

    onion: str
    source: str  # "seed" | "manual" | "gossip"
    added_at: int
    last_success: int | None
    last_attempt: int | None
    failures: int  # consecutive failures
    score: float  # 0..1, reachability (recent successes weigh more)
    next_try: int  # unix seconds; backoff after failures
    banned: bool


# -- catalogs of other stores (crawler, directory, mirrors) ---------------------
class Source(StrEnum):
    """Where a held catalog came from: the store's own onion, or a peer's mirror."""

    DIRECT = "direct"
    MIRROR = "mirror"


@dataclass(frozen=True)
class CatalogListing:
    """One listing of a verified foreign catalog, as the directory indexes it."""

    id: str
    title: str
    description: str
    category: str
    tags: tuple[str, ...]
    price_sat: Sats
    ships_to: tuple[str, ...]  # union of the shipping options' regions ("WORLDWIDE" or codes)
    created_at: int
    thumb: str | None  # id (sha256 hex) of the first image; its thumbnail is /images/<id>.thumb.jpg


@dataclass(frozen=True)
class VerifiedCatalog:
    """A store's signed catalog, verified against its address; ``raw`` is byte-identical to what the store served."""

    store: str
    seq: int
    issued_at: int
    expires_at: int
    name: str
    description: str
    listings: tuple[CatalogListing, ...]
    raw: bytes
    hash: str  # "sha256:<hex>" of raw
    reviews: tuple[Review, ...] = ()  # the buyers' reviews it carries that verify (one per signer)
    bad_reviews: int = 0  # entries of its ``reviews`` skipped: not verifying, about another store, past the cap


@dataclass(frozen=True)
class HeldCatalog:
    """What the directory holds about one store (crawl state)."""

    store: str
    seq: int | None  # None: never fetched
    hash: str | None
    etag: str | None
    source: Source | None
    as_of: int | None  # the held catalog's issued_at
    last_seen: int | None  # last time the store itself answered
    last_attempt: int | None
    failures: int  # consecutive failures to reach the store
    next_try: int  # backoff: not before this time


class DirectoryReview(TypedDict):
    """One buyer's review as the directory shows it."""

    signer: str  # the buyer's per-order key address
    seq: int
    rating: int  # 1..5
    text: str
    listing: str
    order: str
    issued_at: int
    chain: str  # "checked" | "unchecked" | "failed: <why>": the escrow outpoint checked on chain
    in_catalog: bool  # the store's held catalog carries it
    gossip: bool  # gossip brought it


class Rating(TypedDict):
    """The reviews of a store that did not fail the chain check."""

    count: int
    mean: float | None  # rounded to 2 decimals; None without reviews
    stars: list[int]  # how many reviews gave 1, 2, 3, 4, 5 stars


class DirectoryStore(TypedDict):
    """``GET /api/v1/directory/stores/<onion>``: one store as the directory sees it."""

    store: str
    name: str
    description: str
    reachable: bool
    last_seen: int | None
    last_attempt: int | None
    failures: int
    catalog_seq: int | None
    as_of: int | None
    source: str | None  # "direct" | "mirror" | None
    listings: int
    blocked: bool
    rating: Rating
    # Gossiped reviews of the store issued more than ``review_grace`` before its held catalog that the
    # catalog leaves out (not counting those failing the chain check): > 0 flags "omits reviews".
    omitted: int
    reviews: NotRequired[list[DirectoryReview]]  # one store's page/API only: the newest, at most 200


# -- search ----------------------------------------------------------------------
@dataclass(frozen=True)
class SearchQuery:
    """A directory search; ``q`` is raw user text (never FTS5 syntax), the rest filters."""

    q: str = ""
    limit: int = 20
    offset: int = 0
    category: str = ""
    min_price_sat: int | None = None
    max_price_sat: int | None = None
    ships_to: str = ""  # a two-letter code: listings shipping there or WORLDWIDE
    store: str = ""  # one store's onion


class SearchResult(TypedDict):
    store: str
    listing: str
    title: str
    price_sat: Sats
    snippet: str  # plain text; matched terms between U+E000 and U+E001 (the page renders them as <mark>)
    score: float  # higher is better (negated bm25)
    source: str  # "direct" | "mirror"
    as_of: int  # the held catalog's issued_at
    category: str
    store_name: str
    thumb: str | None
    reachable: bool
    created_at: int


class SearchPage(TypedDict):
    total: int
    results: list[SearchResult]


class Block(TypedDict):
    kind: str  # "store" | "tag"
    value: str
    reason: str
    source: str  # "operator" or the onion of a subscribed blocklist
    created_at: int


class Report(TypedDict):
    id: int
    store: str
    listing: str
    reason: str
    created_at: int
