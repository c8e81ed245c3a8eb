"""The crawler: fetch announced stores' signed catalogs into the directory, with mirror fallback.

A pass takes every held announcement whose store is not blocked and is due
(see ``is_due``), and fetches ``http://<store>.onion/.well-known/pasar/catalog.json``
with ``If-None-Match`` under a fixed number of workers, each request bounded
by ``per_store_timeout`` and ``max_catalog_bytes``. A store that fails (or
serves a bad catalog) is marked failed (the directory backs it off); then, if
nothing is held for it or its announcement names a newer catalog than the one
held, up to ``mirror_peers`` random peers are asked for their mirror copy,
verified against the store's own address and kept only if newer than what is
held. docs/design.md has the rules.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence

from ..core import addresses, ports
from ..core.errors import PasarError, SignatureError, Unreachable, ValidationError
from ..core.models import HttpReply
from . import blocklist
from .catalogs import verify_catalog
from .crawl_plan import MIB, CrawlLimits, CrawlProgress, DirectoryPort, GossipPort, is_due
from .models import Announcement, HeldCatalog, Source, VerifiedCatalog

__all__ = ["CrawlLimits", "CrawlProgress", "Crawler", "DirectoryPort", "GossipPort", "is_due"]
log = logging.getLogger(__name__)

CATALOG_PATH = "/.well-known/pasar/catalog.json"
BLOCKLIST_PATH = "/.well-known/pasar/blocklist.json"
JPEG = b"\xff\xd8\xff"
OFFLOAD_BYTES = 1 * MIB  # catalogs bigger than this are verified in a worker thread
_IMAGE_ID = re.compile(r"[0-9a-f]{64}")
REFUSED = (Unreachable, ValidationError, SignatureError)


def _header(reply: HttpReply, name: str) -> str | None:
    """A response header by case-insensitive name (``HttpReply.headers`` is a plain dict)."""
    return next((v for k, v in reply.headers.items() if k.lower() == name), None)


def _checked(catalog: VerifiedCatalog, ann: Announcement | None) -> VerifiedCatalog:
    """Refuse a catalog whose seq is the announced one but whose bytes are not the announced ones."""
    if ann is not None and catalog.seq == ann.body["catalog_seq"] and catalog.hash != ann.body["catalog_hash"]:
        raise ValidationError({"catalog": "its hash differs from the announced one"}, "catalog hash mismatch")
    return catalog


class Crawler:
    def __init__(
        self,
        http: ports.Http,
        directory: DirectoryPort,
        gossip: GossipPort,
        *,
        limits: CrawlLimits,
        clock: Callable[[], float] = time.time,
        subscriptions: Callable[[], Awaitable[Sequence[str]]] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._http = http
        self._directory = directory
        self._gossip = gossip
        self.limits = limits
        self._clock = clock
        self._subscriptions = subscriptions
        self._rng = rng or random.Random()
        self.progress = CrawlProgress()
        # Since start, for the node's metrics: passes, listings indexed, stores by result of their fetch
        # ("indexed", "unchanged", "failed"; a failed store's catalog then taken from a mirror: also "mirrored").
        self.passes = 0
        self.last_finished: int | None = None  # when the last pass ended (stays while the next one runs)
        self.listings_indexed = 0
        self.results: Counter[str] = Counter()
        self._pass: asyncio.Task[CrawlProgress] | None = None
        self._thumbs = asyncio.Semaphore(limits.thumb_concurrency)
        self._thumb_fetches: dict[tuple[str, str], asyncio.Future[bytes | None]] = {}
        self._thumb_misses: dict[tuple[str, str], float] = {}
        self._blocklist_seq: dict[str, int] = {}
        self._tried: dict[str, int] = {}  # store -> the announced catalog_seq last fetched for

    def _now(self) -> int:
        return int(self._clock())

    # -- passes ----------------------------------------------------------------------
    async def crawl_once(self) -> CrawlProgress:
        """One pass over the due stores; joins the pass under way if there is one. Returns its progress."""
        if self._pass is None or self._pass.done():
            self._pass = asyncio.create_task(self._crawl(), name="crawl-pass")
        return dataclasses.replace(await asyncio.shield(self._pass))

    async def close(self) -> None:
        """Cancel a pass and thumbnail fetches under way (app shutdown) and wait for them to end."""
        task, self._pass = self._pass, None
        pending = [t for t in (task, *self._thumb_fetches.values()) if t is not None and not t.done()]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def run(self) -> None:
        """Forever: a pass, expiry, subscribed blocklists (each ``crawl_interval``), then a pause."""
        blocklists_at = 0.0
        try:
            while True:
                await self.crawl_once()
                dropped = await self._directory.expire(drop_after=self.limits.drop_after)
                if dropped:
                    log.info("crawler: dropped %d expired or long-unreachable stores", dropped)
                if self._clock() >= blocklists_at:
                    await self.update_blocklists()
                    blocklists_at = self._clock() + self.limits.crawl_interval
                await asyncio.sleep(self.limits.pass_interval * self._rng.uniform(0.8, 1.2))
        finally:
            await self.close()

    async def _due(self, anns: list[Announcement], now: int) -> list[tuple[Announcement, HeldCatalog | None]]:
        out: list[tuple[Announcement, HeldCatalog | None]] = []
        candidates = [a for a in anns if not self._directory.is_blocked(a.store, a.body["tags"])]
        self._tried = {a.store: self._tried[a.store] for a in candidates if a.store in self._tried}
        for start in range(0, len(candidates), 256):  # bounded gathers of reads
            chunk = candidates[start : start + 256]
            helds = await asyncio.gather(*(self._directory.held(a.store) for a in chunk))
            interval = self.limits.crawl_interval
            out.extend(
                (a, h)
                for a, h in zip(chunk, helds, strict=True)
                if is_due(a, h, now=now, interval=interval, tried=self._tried.get(a.store))
            )
        return out

    async def _crawl(self) -> CrawlProgress:
        started = self._now()
        progress = self.progress = CrawlProgress(running=True, started_at=started)
        try:
            due = await self._due(await self._gossip.announcements(), started)
            self._rng.shuffle(due)
            progress.total = len(due)
            work = iter(due)  # one shared iterator: exactly ``concurrency`` fetches at a time
            async with asyncio.TaskGroup() as group:
                for _ in range(max(1, self.limits.concurrency)):
                    group.create_task(self._worker(work, progress))
        except ExceptionGroup as failed:  # e.g. a StorageError: the first one, as the caller expects
            raise failed.exceptions[0] from failed
        finally:
            progress.running, progress.finished_at = False, self._now()
            self.passes += 1
            self.last_finished = progress.finished_at
        log.info(
            "crawler: pass done, %d stores, %d listings indexed, %d failed, %d from mirrors",
            progress.total,
            progress.indexed,
            progress.failed,
            progress.mirrored,
        )
        return progress

    async def _worker(self, work: Iterator[tuple[Announcement, HeldCatalog | None]], progress: CrawlProgress) -> None:
        for ann, held in work:
            await self._store(ann, held, progress)
            progress.done += 1

    # -- one store ----------------------------------------------------------------------
    async def _store(self, ann: Announcement, held: HeldCatalog | None, progress: CrawlProgress) -> None:
        store = ann.store
        if self._directory.is_blocked(store, ann.body["tags"]):  # blocked since the pass began
            return
        self._tried[store] = ann.body["catalog_seq"]
        try:
            indexed = await self._direct(ann, held)
        except REFUSED as exc:
            progress.failed += 1
            self.results["failed"] += 1
            reason = exc.message if isinstance(exc, PasarError) else str(exc)
            log.info("crawler: %s failed: %s", store, reason)
            await self._directory.failed(store, reason)
            if held is None or held.seq is None or ann.body["catalog_seq"] > held.seq:
                mirrored = await self._from_mirrors(ann, held)
                if mirrored is not None:
                    progress.mirrored += 1
                    progress.indexed += mirrored
                    self.results["mirrored"] += 1
                    self.listings_indexed += mirrored
            return
        if indexed is None:
            progress.unchanged += 1
            self.results["unchanged"] += 1
        else:
            progress.indexed += indexed
            self.results["indexed"] += 1
            self.listings_indexed += indexed

    async def _direct(self, ann: Announcement, held: HeldCatalog | None) -> int | None:
        """Listings indexed from the store itself, or None when it had nothing newer (304 / same or older)."""
        store = ann.store
        headers = {}
        if held is not None and held.etag and held.source is Source.DIRECT:
            headers["If-None-Match"] = held.etag
        reply = await self._get(f"http://{store}.onion{CATALOG_PATH}", headers, self.limits.max_catalog_bytes)
        if reply.status == 304 and headers:
            await self._directory.seen(store)
            return None
        if reply.status != 200:
            raise Unreachable(f"the store answered HTTP {reply.status} for its catalog")
        catalog = await self._verify(reply.body, ann)
        if held is not None and held.seq is not None and catalog.seq <= held.seq and catalog.hash == held.hash:
            await self._directory.seen(store)
            return None
        if held is not None and held.seq is not None and catalog.seq < held.seq:
            await self._directory.seen(store)  # alive, but serving an older catalog than one held: keep ours
            return None
        return await self._directory.index(catalog, source=Source.DIRECT, etag=_header(reply, "etag"))

    async def _from_mirrors(self, ann: Announcement, held: HeldCatalog | None) -> int | None:
        """Listings indexed from the first peer holding a newer verified copy, or None."""
        store = ann.store
        for peer in await self._gossip.sample_peers(self.limits.mirror_peers):
            url = f"http://{peer}.onion/.well-known/pasar/mirror/{store}/catalog.json"
            try:
                reply = await self._get(url, {}, self.limits.max_catalog_bytes)
                if reply.status != 200:
                    continue
                catalog = await self._verify(reply.body, ann)
            except REFUSED as exc:
                log.info("crawler: mirror of %s at %s refused: %s", store, peer, exc)
                continue
            if held is not None and held.seq is not None and catalog.seq <= held.seq:
                continue  # not newer than what we hold: another peer may have a newer one
            if self._directory.is_blocked(store):
                return None
            return await self._directory.index(catalog, source=Source.MIRROR, etag=None)
        return None

    async def _verify(self, raw: bytes, ann: Announcement) -> VerifiedCatalog:
        """Verify against the store's address (and its announced hash); a big catalog off the event loop."""
        now = self._now()
        if len(raw) > OFFLOAD_BYTES:  # about 50 ms of CPU and more: let the loop keep serving meanwhile
            catalog = await asyncio.to_thread(verify_catalog, raw, store=ann.store, now=now)
        else:
            catalog = verify_catalog(raw, store=ann.store, now=now)
        return _checked(catalog, ann)

    async def _get(self, url: str, headers: dict[str, str], max_bytes: int) -> HttpReply:
        return await self._http.get(url, deadline=self.limits.per_store_timeout, headers=headers, max_bytes=max_bytes)

    # -- thumbnails -------------------------------------------------------------------------
    async def thumb(self, store: str, image_id: str) -> bytes | None:
        """A listing's thumbnail: held, else fetched from the store, else from a peer's mirror (capped)."""
        if not _IMAGE_ID.fullmatch(image_id) or not addresses.is_address(store) or self._directory.is_blocked(store):
            return None
        held = await self._directory.thumb(store, image_id)
        if held is not None:
            return held
        key = (store, image_id)
        if self._clock() < self._thumb_misses.get(key, 0.0):
            return None
        pending = self._thumb_fetches.get(key)
        if pending is None:  # one fetch per thumbnail, however many pages ask for it at once
            pending = asyncio.ensure_future(self._fetch_thumb(store, image_id))
            self._thumb_fetches[key] = pending
            pending.add_done_callback(lambda _: self._thumb_fetches.pop(key, None))
        return await asyncio.shield(pending)

    async def _fetch_thumb(self, store: str, image_id: str) -> bytes | None:
        # Only images of listings we index: a visitor asking for made-up ids must not make us fetch anything.
        if not await self._directory.lists_image(store, image_id):
            return None
        path = f"/images/{image_id}.thumb.jpg"
        urls = [f"http://{store}.onion{path}"]
        urls += [f"http://{p}.onion/.well-known/pasar/mirror/{store}{path}" for p in await self._gossip.sample_peers(2)]
        async with self._thumbs:
            for url in urls:
                try:
                    reply = await self._get(url, {}, self.limits.max_thumb_bytes)
                except Unreachable:
                    continue
                if reply.status == 200 and reply.body.startswith(JPEG):
                    await self._directory.put_thumb(store, image_id, reply.body)
                    return reply.body
        self._remember_miss((store, image_id))
        return None

    def _remember_miss(self, key: tuple[str, str]) -> None:
        now = self._clock()
        if len(self._thumb_misses) >= 10_000:  # bounded: forget the expired ones, else all
            self._thumb_misses = {k: t for k, t in self._thumb_misses.items() if t > now}
            if len(self._thumb_misses) >= 10_000:
                self._thumb_misses.clear()
        self._thumb_misses[key] = now + self.limits.thumb_retry_after

    # -- blocklist subscriptions --------------------------------------------------------------
    async def update_blocklists(self) -> int:
        """Fetch and apply each subscribed directory's blocklist; returns how many were applied."""
        if self._subscriptions is None:
            return 0
        applied, subscribed = 0, [addresses.normalize(o) for o in await self._subscriptions()]
        for gone in {b["source"] for b in await self._directory.blocks()} - {"operator", *subscribed}:
            await self._directory.replace_blocks(gone, [], [])  # unsubscribed: its entries go with it
            self._blocklist_seq.pop(gone, None)
        for onion in subscribed:
            try:
                reply = await self._get(f"http://{onion}.onion{BLOCKLIST_PATH}", {}, blocklist.MAX_BYTES)
                if reply.status != 200:
                    raise Unreachable(f"the directory answered HTTP {reply.status} for its blocklist")
                stores, tags, seq = blocklist.verify(reply.body, signer=onion, now=self._now())
            except REFUSED as exc:
                log.warning("crawler: blocklist of %s not updated: %s", onion, exc)
                continue
            if seq < self._blocklist_seq.get(onion, -1):
                continue  # an older list than one applied (a replay): keep the newer
            self._blocklist_seq[onion] = seq
            await self._directory.replace_blocks(onion, stores, tags)
            applied += 1
        return applied
