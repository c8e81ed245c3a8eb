"""The directory: crawled stores, a full-text index of their listings, mirrors, moderation.

``Directory`` runs the SQL of ``directory_index.py`` (writes, each one
transaction), ``directory_read.py`` (reads, one snapshot each) and
``moderation.py`` on ``directory.sqlite`` (or, with ``directory_dsn``, a
PostgreSQL database several frontends may share) through the
``ports.Database`` port; ``directory_dialect.py`` holds what the two
engines say differently (full-text search). Search semantics are in
``search.py`` (user text -> words -> a safe match text) and
``directory_read.py`` (ranking, filters, total).

The block list is held in memory (``is_blocked`` is synchronous, for the
gossip relay and the crawler); every moderation write returns the new sets
from the table in its transaction, and the write functions of the index
re-check the table, so a block always wins over a write queued before it.
On a database several frontends share, ``refresh_blocks`` re-reads the set
(the app calls it periodically) to pick up blocks made by the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ..core import ports
from ..core.config import Config
from ..core.errors import ValidationError
from ..core.reviews import Review
from . import directory_index as ix
from . import directory_read as rd
from . import moderation as mod
from . import review_index as rv
from .directory_batch import IndexBatcher
from .directory_dialect import SQLITE, Dialect
from .models import (
    Block,
    DirectoryStore,
    HeldCatalog,
    Report,
    SearchPage,
    SearchQuery,
    SearchResult,
    Source,
    VerifiedCatalog,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

MIB = 1024 * 1024
MAX_LIMIT = 100
MAX_OFFSET = 10_000
MAX_CATEGORY = 64
COUNT_CAP = rd.COUNT_CAP
CATEGORIES_TTL = 60.0


@dataclass(frozen=True)
class DirectoryLimits:
    """Size caps and time windows of the directory."""

    mirror_store_bytes: int = 8 * MIB  # a bigger catalog is indexed but not kept for mirroring
    mirror_total_bytes: int = 256 * MIB  # past this the oldest held catalogs are dropped
    thumb_bytes: int = 64 * 1024
    thumbs_total_bytes: int = 64 * MIB
    unreachable_drop_after: int = 14 * 86400
    reachable_window: int = 86400  # "reachable" = no failure since, and seen within this many seconds
    max_reports: int = mod.MAX_REPORTS
    review_grace: int = 86400  # a gossiped review older than this before the held catalog must be in it

    @classmethod
    def from_config(cls, config: Config) -> DirectoryLimits:
        return cls(
            unreachable_drop_after=config.unreachable_drop_after,
            mirror_total_bytes=config.mirror_total_bytes,
            review_grace=config.review_grace,
        )

    @property
    def caps(self) -> ix.Caps:
        return ix.Caps(
            mirror_store_bytes=self.mirror_store_bytes,
            mirror_total_bytes=self.mirror_total_bytes,
            thumb_bytes=self.thumb_bytes,
            thumbs_total_bytes=self.thumbs_total_bytes,
        )


def validate_query(query: SearchQuery) -> SearchQuery:
    """The query with its filters checked and normalized (ValidationError names the bad field)."""
    problems: dict[str, str] = {}
    if not 1 <= query.limit <= MAX_LIMIT:
        problems["limit"] = f"limit is 1-{MAX_LIMIT}"
    if not 0 <= query.offset <= MAX_OFFSET:
        problems["offset"] = f"offset is 0-{MAX_OFFSET:,}: narrow the search instead of paging further"
    for name, price in (("min_price_sat", query.min_price_sat), ("max_price_sat", query.max_price_sat)):
        if price is not None and price < 0:
            problems[name] = "a price is a whole number of satoshis, 0 or more"
    ships_to = query.ships_to.strip().upper()
    if ships_to and not (ships_to == "WORLDWIDE" or (len(ships_to) == 2 and ships_to.isascii() and ships_to.isalpha())):
        problems["ships_to"] = "a two-letter country code (like DE) or WORLDWIDE"
    if len(query.category) > MAX_CATEGORY:
        problems["category"] = f"a category has at most {MAX_CATEGORY} characters"
    store = query.store.strip()
    if store:
        try:
            store = mod.normalize_store(store, "store")
        except ValidationError as exc:
            problems.update(exc.fields)
    if problems:
        raise ValidationError(problems)
    return SearchQuery(
        q=query.q,
        limit=query.limit,
        offset=query.offset,
        category=query.category.strip(),
        min_price_sat=query.min_price_sat,
        max_price_sat=query.max_price_sat,
        ships_to=ships_to,
        store=store,
    )


class Directory:
    def __init__(
        self,
        db: ports.Database,
        *,
        limits: DirectoryLimits,
        clock: Callable[[], float] = time.time,
        dialect: Dialect = SQLITE,
    ) -> None:
        self._db = db
        self._dialect = dialect
        self._limits = limits
        self._clock = clock
        self._blocked: mod.BlockSets = (frozenset(), frozenset())
        self._categories: tuple[float, list[tuple[str, int]]] | None = None
        self._batcher = IndexBatcher(db, limits.caps, self._now, dialect.lock)

    @property
    def limits(self) -> DirectoryLimits:
        return self._limits

    def _now(self) -> int:
        return int(self._clock())

    def _reachable_since(self) -> int:
        return self._now() - self._limits.reachable_window

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    async def open(self) -> None:
        """Load the block list into memory."""
        self._blocked = await self._db.execute_fn(mod.load_blocks)

    async def refresh_blocks(self) -> None:
        """Read the block list again (a database shared by several frontends: another one may have blocked)."""
        self._blocked = await self._db.execute_fn(mod.load_blocks)

    async def _write(
        self, fn: Callable[[ports.SqlConnection], T], *, stores: Sequence[str] = (), blocks: bool = False
    ) -> T:
        """``fn`` in one write transaction, after the dialect's locks (``Dialect.lock``)."""
        lock = self._dialect.lock

        def locked(conn: ports.SqlConnection) -> T:
            lock(conn, stores, blocks=blocks)
            return fn(conn)

        return await self._db.execute_write_fn(locked)

    # -- crawl state ---------------------------------------------------------------
    async def held(self, store: str) -> HeldCatalog | None:
        return await self._db.execute_fn(lambda conn: ix.held(conn, store))

    async def index(self, catalog: VerifiedCatalog, *, source: Source, etag: str | None) -> int:
        """Replace the store's listings with the catalog's; keep its raw bytes for mirrors (capped).

        Calls made at the same time share one write transaction (``directory_batch.py``).
        """
        if self.is_blocked(catalog.store):
            return 0
        count = await self._batcher.index(catalog, source=source, etag=etag)
        self._categories = None
        return count

    async def seen(self, store: str) -> None:
        now = self._now()
        await self._write(lambda conn: ix.mark_seen(conn, store, now), stores=[store])

    async def failed(self, store: str, reason: str) -> None:
        now = self._now()
        await self._write(lambda conn: ix.mark_failed(conn, store, reason, now), stores=[store])

    async def expire(self, *, drop_after: int) -> int:
        now = self._now()
        dropped = await self._write(lambda conn: ix.expire(conn, now=now, drop_after=drop_after), blocks=True)
        if dropped:
            self._categories = None
            log.info("directory: %d store(s) expired or dropped as unreachable", dropped)
        return dropped

    # -- reading ----------------------------------------------------------------------
    async def search(self, query: SearchQuery) -> SearchPage:
        """bm25-ranked results and the total (at most COUNT_CAP + 1 = "more than COUNT_CAP").

        An empty query lists the newest listings that pass the filters; a query with more than
        COUNT_CAP matches lists them most recently indexed first, unranked (directory_read.py).
        """
        checked = validate_query(query)
        match, dialect = self._dialect.match(checked.q), self._dialect
        since = self._reachable_since()
        page = await self._db.execute_fn(
            lambda conn: rd.search(conn, checked, match, reachable_since=since, dialect=dialect)
        )
        results = [r for r in page["results"] if not self._result_blocked(r)]
        return SearchPage(total=page["total"], results=results)

    def _result_blocked(self, result: SearchResult) -> bool:
        # Blocked rows are deleted with the block; this only covers a read racing that write.
        return result["store"] in self._blocked[0]

    async def newest(self, limit: int = 20) -> list[SearchResult]:
        page = await self.search(SearchQuery(limit=max(1, min(limit, MAX_LIMIT))))
        return page["results"]

    async def store(self, onion: str) -> DirectoryStore | None:
        if self.is_blocked(onion):
            return rd.blocked_store(onion)
        since, now, grace = self._reachable_since(), self._now(), self._limits.review_grace
        return await self._db.execute_fn(
            lambda conn: rd.store(conn, onion, reachable_since=since, now=now, grace=grace)
        )

    async def stores(self, *, limit: int = 100, offset: int = 0) -> list[DirectoryStore]:
        limit, offset, since = max(1, min(limit, 1000)), max(0, offset), self._reachable_since()
        now, grace, dialect = self._now(), self._limits.review_grace, self._dialect
        return await self._db.execute_fn(
            lambda conn: rd.stores(
                conn, limit=limit, offset=offset, reachable_since=since, now=now, grace=grace, dialect=dialect
            )
        )

    async def categories(self) -> list[tuple[str, int]]:
        """Categories by number of listings (cached for a minute: it counts the whole index)."""
        cached = self._categories
        if cached is not None and time.monotonic() - cached[0] < CATEGORIES_TTL:
            return list(cached[1])
        found = await self._db.execute_fn(rd.categories)
        self._categories = (time.monotonic(), found)
        return list(found)

    async def mirror(self, store: str) -> bytes | None:
        if self.is_blocked(store):
            return None
        now = self._now()
        return await self._db.execute_fn(lambda conn: rd.mirror(conn, store, now=now))

    async def put_thumb(self, store: str, image_id: str, data: bytes) -> None:
        """Keep a thumbnail; one over ``thumb_bytes`` (or of a blocked store) is not kept."""
        if self.is_blocked(store):
            return
        now, caps = self._now(), self._limits.caps
        kept = await self._write(
            lambda conn: ix.put_thumb(conn, store, image_id, data, now=now, caps=caps), stores=[store]
        )
        if not kept:
            log.debug("directory: thumbnail %s of %s not kept (%d bytes)", image_id, store, len(data))

    async def has_listing(self, store: str, listing: str) -> bool:
        """Whether the index holds this listing (reports name only those)."""
        return not self.is_blocked(store) and await self._db.execute_fn(
            lambda conn: rd.has_listing(conn, store, listing)
        )

    async def lists_image(self, store: str, image_id: str) -> bool:
        """Whether an indexed listing of the store shows this image (only those thumbnails are fetched)."""
        return not self.is_blocked(store) and await self._db.execute_fn(
            lambda conn: rd.lists_image(conn, store, image_id)
        )

    async def thumb(self, store: str, image_id: str) -> bytes | None:
        if self.is_blocked(store):
            return None
        return await self._db.execute_fn(lambda conn: rd.thumb(conn, store, image_id))

    async def counts(self) -> tuple[int, int]:
        return await self._db.execute_fn(rd.counts)

    # -- reviews ---------------------------------------------------------------------
    async def add_reviews(self, reviews: Sequence[Review]) -> int:
        """Keep reviews gossip brought (verified); those about blocked stores are dropped. Returns how many were new."""
        wanted = [r for r in reviews if not self.is_blocked(r.store)]
        if not wanted:
            return 0
        now = self._now()
        return await self._db.execute_write_fn(lambda conn: rv.from_gossip(conn, wanted, now=now))

    async def due_checks(self, *, limit: int, recheck_after: int) -> list[Review]:
        """Reviews whose escrow outpoint is to be checked on chain (never checked, or "unchecked" long enough)."""
        now = self._now()
        return await self._db.execute_fn(
            lambda conn: rv.due_checks(conn, now=now, recheck_before=now - recheck_after, limit=limit)
        )

    async def set_chain(self, review: Review, result: str) -> None:
        now = self._now()
        await self._db.execute_write_fn(lambda conn: rv.set_chain(conn, review, result, now=now))

    # -- moderation ------------------------------------------------------------------
    def is_blocked(self, store: str, tags: Sequence[str] = ()) -> bool:
        stores, banned_tags = self._blocked
        return store in stores or any(t.lower() in banned_tags for t in tags)

    async def block(self, kind: str, value: str, reason: str = "", source: str = mod.OPERATOR) -> Block:
        kind, value = mod.normalize_block(kind, value)
        block = Block(
            kind=kind, value=value, reason=mod.clean_text(reason, mod.MAX_REASON), source=source, created_at=self._now()
        )
        self._blocked = await self._write(lambda conn: mod.add_block(conn, block), blocks=True)
        self._categories = None
        return block

    async def unblock(self, kind: str, value: str) -> None:
        kind, value = mod.normalize_block(kind, value)
        self._blocked = await self._write(lambda conn: mod.remove_block(conn, kind, value), blocks=True)

    async def blocks(self) -> list[Block]:
        return await self._db.execute_fn(mod.list_blocks)

    async def replace_blocks(self, source: str, stores: Sequence[str], tags: Sequence[str]) -> None:
        """A subscribed blocklist's entries (``source`` = its onion) replace that source's previous ones."""
        now = self._now()
        stores, tags = list(stores), list(tags)
        self._blocked = await self._write(
            lambda conn: mod.replace_source(conn, source, stores, tags, now=now), blocks=True
        )
        self._categories = None

    async def report(self, store: str, listing: str, reason: str) -> Report:
        onion, listing_id, text = mod.validate_report(store, listing, reason)
        now, cap = self._now(), self._limits.max_reports
        return await self._db.execute_write_fn(
            lambda conn: mod.add_report(conn, onion, listing_id, text, now=now, cap=cap)
        )

    async def reports(self, *, limit: int = 200) -> list[Report]:
        limit = max(1, min(limit, self._limits.max_reports))
        return await self._db.execute_fn(lambda conn: mod.list_reports(conn, limit=limit))

    # -- blocklist subscriptions ---------------------------------------------------------
    async def subscribe(self, onion: str) -> None:
        """Follow another directory's signed blocklist (the crawler fetches it and calls replace_blocks)."""
        onion, now = mod.normalize_store(onion, "onion"), self._now()
        await self._db.execute_write_fn(lambda conn: mod.add_subscription(conn, onion, now=now))

    async def unsubscribe(self, onion: str) -> None:
        """Stop following a blocklist and drop its entries (NotFound if not subscribed)."""
        onion = mod.normalize_store(onion, "onion")
        self._blocked = await self._write(lambda conn: mod.remove_subscription(conn, onion), blocks=True)

    async def subscriptions(self) -> list[str]:
        return await self._db.execute_fn(mod.list_subscriptions)
