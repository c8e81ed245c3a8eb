"""What the crawler works with and decides from: its ports, limits, progress and the due rule (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..core.config import Config
from .models import Announcement, Block, HeldCatalog, Source, VerifiedCatalog

MIB = 1024 * 1024


class DirectoryPort(Protocol):
    """What the crawler uses of ``directory.Directory``."""

    def is_blocked(self, store: str, tags: Sequence[str] = ()) -> bool: ...
    async def held(self, store: str) -> HeldCatalog | None: ...
    async def index(self, catalog: VerifiedCatalog, *, source: Source, etag: str | None) -> int: ...
    async def seen(self, store: str) -> None: ...
    async def failed(self, store: str, reason: str) -> None: ...
    async def expire(self, *, drop_after: int) -> int: ...
    async def put_thumb(self, store: str, image_id: str, data: bytes) -> None: ...
    async def thumb(self, store: str, image_id: str) -> bytes | None: ...
    async def lists_image(self, store: str, image_id: str) -> bool: ...
    async def replace_blocks(self, source: str, stores: Sequence[str], tags: Sequence[str]) -> None: ...
    async def blocks(self) -> list[Block]: ...


class GossipPort(Protocol):
    """What the crawler uses of ``gossip.Gossip``."""

    async def announcements(self) -> list[Announcement]: ...
    async def sample_peers(self, k: int) -> list[str]: ...


@dataclass(frozen=True)
class CrawlLimits:
    concurrency: int = 8  # catalogs fetched at once
    per_store_timeout: float = 60.0  # seconds for one request (the store's catalog, one mirror, a thumbnail)
    crawl_interval: int = 900  # seconds between two checks of one store (sooner if it announces a newer catalog)
    max_catalog_bytes: int = 64 * MIB  # a longer answer is a failure (never read past this)
    mirror_peers: int = 3  # peers asked for a mirror copy when the store fails
    max_thumb_bytes: int = 64 * 1024
    thumb_concurrency: int = 4  # thumbnail fetches at once (the rest wait)
    thumb_retry_after: int = 600  # seconds a thumbnail that could not be fetched is not asked again
    drop_after: int = 14 * 86400  # an unreachable store (and its held catalog) is dropped after this

    @classmethod
    def from_config(cls, config: Config) -> CrawlLimits:
        return cls(crawl_interval=config.crawl_interval, drop_after=config.unreachable_drop_after)

    @property
    def pass_interval(self) -> float:
        """Seconds between passes: a newly announced store is fetched within this (each store is still
        checked at most once per ``crawl_interval`` unless it announces a newer catalog)."""
        return float(min(max(5, self.crawl_interval // 5), 60))


@dataclass
class CrawlProgress:
    running: bool = False
    done: int = 0  # stores handled in this pass
    total: int = 0  # stores due in this pass
    indexed: int = 0  # listings indexed
    failed: int = 0  # stores that did not answer or served a bad catalog
    mirrored: int = 0  # stores indexed from a peer's mirror copy
    started_at: int | None = None
    finished_at: int | None = None
    unchanged: int = 0  # stores that answered 304 (or the catalog held already)


def is_due(ann: Announcement, held: HeldCatalog | None, *, now: int, interval: int, tried: int | None = None) -> bool:
    """Fetch now? Never before ``next_try`` (backoff); yes if nothing is held, if the announcement
    names a newer catalog than held (unless that announced seq was ``tried`` already and the store
    still served an older one), or if the last check is ``interval`` seconds old."""
    if held is None:
        return True
    if held.next_try > now:
        return False
    announced = ann.body["catalog_seq"]
    if held.seq is None or (announced > held.seq and tried != announced):
        return True
    last = max(held.last_attempt or 0, held.last_seen or 0)
    return now - last >= interval
