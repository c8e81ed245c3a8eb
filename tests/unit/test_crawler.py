"""Crawler over real loopback HTTP (LoopbackHttp -> real aiohttp routes) into a real Directory on SQLite.

Gossip is a tiny fake exposing only announcements() and sample_peers() (the crawler's whole use of it).
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from aiohttp import web

from node.adapters.directory_schema import MIGRATIONS
from node.adapters.loophttp import LoopbackHttp
from node.adapters.sqlite import SQLiteDatabase
from node.core.crypto import StoreKey
from node.core.errors import StorageError
from node.discovery import announce, blocklist
from node.discovery import crawler as crawler_module
from node.discovery.crawler import Crawler, CrawlLimits, is_due
from node.discovery.directory import Directory, DirectoryLimits
from node.discovery.models import HeldCatalog, SearchQuery, Source

from .test_crawler_kit import NOW, StoreServer, snapshot

JPEG = b"\xff\xd8\xff\xe0" + b"x" * 100


class Clock:
    def __init__(self, t: float = NOW + 10) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeGossip:
    def __init__(self) -> None:
        self.anns: dict[str, announce.Announcement] = {}
        self.peers: list[str] = []

    async def announcements(self):
        return list(self.anns.values())

    async def sample_peers(self, k):
        return self.peers[:k]


@dataclasses.dataclass
class World:
    server: StoreServer
    directory: Directory
    gossip: FakeGossip
    crawler: Crawler
    http: LoopbackHttp
    clock: Clock

    def store(self, key: StoreKey, n: int = 3, *, seq: int = NOW, announce_snap=None, serve=True):
        """A store serving a real signed catalog, announced through gossip; returns the snapshot."""
        snap = snapshot(key, n, seq=seq, now=seq)
        if serve:
            self.server.catalogs[key.onion] = snap.envelope_bytes
        ann_snap = announce_snap or snap
        body = announce.body_of(ann_snap)
        self.gossip.anns[key.onion] = announce.build(key, body, seq=seq, now=int(self.clock()), ttl=86400)
        return snap

    def crawler_with(self, **limits) -> Crawler:
        return Crawler(self.http, self.directory, self.gossip, limits=CrawlLimits(**limits), clock=self.clock)


@pytest.fixture
async def world(tmp_path):
    server = StoreServer()
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.base = f"http://{host}:{port}"
    db = SQLiteDatabase(tmp_path / "directory.sqlite", MIGRATIONS, synchronous="NORMAL")
    await db.open()
    clock = Clock()
    directory = Directory(db, limits=DirectoryLimits(), clock=clock)
    await directory.open()
    gossip = FakeGossip()
    http = LoopbackHttp(server.resolve)
    crawler = Crawler(http, directory, gossip, limits=CrawlLimits(concurrency=4), clock=clock)
    yield World(server, directory, gossip, crawler, http, clock)
    await crawler.close()
    await http.close()
    await db.close()
    await runner.cleanup()


async def titles(directory: Directory, q: str) -> list[str]:
    return [r["title"] for r in (await directory.search(SearchQuery(q=q)))["results"]]


async def test_direct_crawl_indexes_verified_listings(world):
    a, b = StoreKey.generate(), StoreKey.generate()
    snap_a = world.store(a, 3)
    world.store(b, 2)
    progress = await world.crawler.crawl_once()
    assert (progress.total, progress.done, progress.indexed, progress.failed) == (2, 2, 5, 0)
    assert not progress.running and progress.finished_at is not None
    held = await world.directory.held(a.onion)
    assert held.seq == snap_a.seq and held.source is Source.DIRECT and held.etag == snap_a.etag
    assert snap_a.listings[0]["title"] in await titles(world.directory, "number")
    assert await world.directory.mirror(a.onion) == snap_a.envelope_bytes


async def test_not_due_until_the_interval_then_304(world):
    a = StoreKey.generate()
    world.store(a)
    await world.crawler.crawl_once()
    assert (await world.crawler.crawl_once()).total == 0  # checked just now
    world.clock.t += CrawlLimits().crawl_interval
    progress = await world.crawler.crawl_once()
    assert (progress.total, progress.unchanged, progress.indexed) == (1, 1, 0)
    assert world.server.hits.count(a.onion) == 2
    assert (await world.directory.held(a.onion)).last_seen == int(world.clock())


async def test_a_newer_announced_catalog_is_fetched_at_once(world):
    a = StoreKey.generate()
    world.store(a, 2)
    await world.crawler.crawl_once()
    newer = world.store(a, 4, seq=NOW + 5)
    progress = await world.crawler.crawl_once()
    assert progress.indexed == 4 and (await world.directory.held(a.onion)).seq == newer.seq


async def test_hash_mismatch_is_refused(world):
    a = StoreKey.generate()
    other = snapshot(a, 1)  # same seq, other bytes: announced, but not what is served
    world.store(a, 3, announce_snap=other)
    progress = await world.crawler.crawl_once()
    assert (progress.failed, progress.indexed) == (1, 0)
    held = await world.directory.held(a.onion)
    assert held.seq is None and held.failures == 1 and held.next_try > world.clock()


async def test_wrong_signer_is_refused(world):
    a, b = StoreKey.generate(), StoreKey.generate()
    world.store(a)
    world.server.catalogs[a.onion] = snapshot(b, 3).envelope_bytes  # b's catalog at a's address
    progress = await world.crawler.crawl_once()
    assert (progress.failed, progress.indexed) == (1, 0)
    assert (await world.directory.held(a.onion)).seq is None


async def test_unreachable_store_falls_back_to_a_peer_mirror(world):
    a, peer = StoreKey.generate(), StoreKey.generate().onion
    snap = world.store(a, 3, serve=False)
    world.server.mirrors[(peer, a.onion)] = snap.envelope_bytes
    world.gossip.peers = [StoreKey.generate().onion, peer]  # the first peer is offline
    progress = await world.crawler.crawl_once()
    assert (progress.failed, progress.mirrored, progress.indexed) == (1, 1, 3)
    held = await world.directory.held(a.onion)
    assert held.source is Source.MIRROR and held.seq == snap.seq and held.last_seen is None
    results = (await world.directory.search(SearchQuery(q="number")))["results"]
    assert {r["source"] for r in results} == {"mirror"}


async def test_a_mirror_copy_older_than_held_is_ignored(world):
    a, peer = StoreKey.generate(), StoreKey.generate().onion
    old = snapshot(a, 1, seq=NOW - 100, now=NOW - 100)
    current = world.store(a, 2)
    await world.crawler.crawl_once()
    world.server.offline.add(a.onion)
    world.store(a, 5, seq=NOW + 5, serve=False)  # announces a newer catalog nobody serves
    world.server.mirrors[(peer, a.onion)] = old.envelope_bytes
    world.gossip.peers = [peer]
    progress = await world.crawler.crawl_once()
    assert (progress.failed, progress.mirrored, progress.indexed) == (1, 0, 0), progress
    held = await world.directory.held(a.onion)
    assert held.seq == current.seq and held.source is Source.DIRECT


async def test_blocked_stores_and_tags_are_never_fetched(world):
    a, b, c = StoreKey.generate(), StoreKey.generate(), StoreKey.generate()
    for key in (a, b, c):
        world.store(key)
    await world.directory.block("store", a.onion)
    tag = world.gossip.anns[b.onion].body["tags"][0]
    await world.directory.block("tag", tag)
    world.gossip.anns = {k: v for k, v in world.gossip.anns.items() if k != c.onion or tag not in v.body["tags"]}
    progress = await world.crawler.crawl_once()
    assert a.onion not in world.server.hits and b.onion not in world.server.hits
    assert progress.total == len(world.gossip.anns) - 2


async def test_concurrency_is_bounded(world):
    keys = [StoreKey.generate() for _ in range(12)]
    for key in keys:
        world.store(key, 1)
    full = asyncio.Event()

    async def gate():
        if world.server.in_flight >= 3:
            full.set()
        async with asyncio.timeout(10):
            await full.wait()

    world.server.gate = gate
    progress = await world.crawler_with(concurrency=3).crawl_once()
    assert progress.indexed == 12 and world.server.max_in_flight == 3


async def test_concurrent_callers_join_one_pass(world):
    for _ in range(3):
        world.store(StoreKey.generate(), 1)
    first, second = await asyncio.gather(world.crawler.crawl_once(), world.crawler.crawl_once())
    assert first == second and first.total == 3 and len(world.server.hits) == 3


async def test_thumbnails_are_fetched_lazily_capped_and_kept(world):
    a, peer = StoreKey.generate(), StoreKey.generate().onion
    snap = world.store(a, 3)
    ids = [v["images"][0]["id"] for v in snap.listings]
    world.server.thumbs[(a.onion, ids[0])] = JPEG
    world.server.thumbs[(a.onion, ids[1])] = JPEG + b"x" * (64 * 1024)  # over the cap
    world.server.mirror_thumbs[(peer, a.onion, ids[2])] = JPEG
    world.gossip.peers = [peer]
    await world.crawler.crawl_once()
    assert not any(h.startswith("thumb:") for h in world.server.hits)  # a crawl fetches no images
    assert await world.crawler.thumb(a.onion, ids[0]) == JPEG
    assert await world.crawler.thumb(a.onion, ids[0]) == JPEG  # now from the directory
    assert world.server.hits.count(f"thumb:{ids[0]}.thumb.jpg") == 1
    assert await world.directory.thumb(a.onion, ids[0]) == JPEG
    assert await world.crawler.thumb(a.onion, ids[1]) is None  # too big: refused, and not asked again soon
    assert await world.crawler.thumb(a.onion, ids[1]) is None
    assert world.server.hits.count(f"thumb:{ids[1]}.thumb.jpg") == 1
    assert await world.crawler.thumb(a.onion, ids[2]) == JPEG  # the store has none: a peer's mirror
    assert f"mirror-thumb:{peer}" in world.server.hits
    made_up = "b" * 64  # an indexed store, but no listing of it shows this image: nothing is fetched
    world.server.thumbs[(a.onion, made_up)] = JPEG
    hits = len(world.server.hits)
    assert await world.crawler.thumb(a.onion, made_up) is None and len(world.server.hits) == hits


async def test_thumbnails_only_for_indexed_stores_and_valid_ids(world):
    a = StoreKey.generate()
    image = "a" * 64
    world.server.thumbs[(a.onion, image)] = JPEG
    assert await world.crawler.thumb(a.onion, image) is None  # never crawled: not fetched for a stranger
    assert await world.crawler.thumb(a.onion, "../x") is None
    assert await world.crawler.thumb("nope", image) is None
    assert not world.server.hits


async def test_blocklist_subscription_replaces_the_sources_blocks(world):
    directory_key, bad = StoreKey.generate(), StoreKey.generate().onion
    world.server.blocklists[directory_key.onion] = blocklist.seal(
        directory_key, [bad], ["weapons"], seq=5, now=NOW, ttl=86400
    )

    async def subscriptions():
        return [directory_key.onion, StoreKey.generate().onion]  # the second is offline: skipped

    crawler = Crawler(
        world.http, world.directory, world.gossip, limits=CrawlLimits(), clock=world.clock, subscriptions=subscriptions
    )
    assert await crawler.update_blocklists() == 1
    assert world.directory.is_blocked(bad) and world.directory.is_blocked("x" * 56, ["weapons"])
    sources = {b["source"] for b in await world.directory.blocks()}
    assert sources == {directory_key.onion}
    world.server.blocklists[directory_key.onion] = blocklist.seal(directory_key, [], [], seq=6, now=NOW, ttl=86400)
    assert await crawler.update_blocklists() == 1
    assert not world.directory.is_blocked(bad)


async def test_an_unsubscribed_blocklist_takes_its_entries_with_it(world):
    directory_key, bad = StoreKey.generate(), StoreKey.generate().onion
    world.server.blocklists[directory_key.onion] = blocklist.seal(directory_key, [bad], [], seq=5, now=NOW, ttl=86400)
    subscribed = [directory_key.onion]

    async def subscriptions():
        return list(subscribed)

    crawler = Crawler(
        world.http, world.directory, world.gossip, limits=CrawlLimits(), clock=world.clock, subscriptions=subscriptions
    )
    await world.directory.block("tag", "mine", "the operator's own")
    assert await crawler.update_blocklists() == 1 and world.directory.is_blocked(bad)
    subscribed.clear()  # the operator removed it from blocklist_subscriptions
    assert await crawler.update_blocklists() == 0
    assert not world.directory.is_blocked(bad)
    assert [(b["kind"], b["value"], b["source"]) for b in await world.directory.blocks()] == [
        ("tag", "mine", "operator")
    ]  # the operator's own blocks stay


def held(**kw) -> HeldCatalog:
    base = dict(
        store="s",
        seq=10,
        hash="h",
        etag=None,
        source=Source.DIRECT,
        as_of=NOW,
        last_seen=NOW,
        last_attempt=NOW,
        failures=0,
        next_try=0,
    )
    return HeldCatalog(**{**base, **kw})


def test_due_rules():
    key = StoreKey.generate()
    ann = announce.build(key, announce.body_of(snapshot(key, 1, seq=10)), seq=NOW, now=NOW, ttl=3600)
    assert is_due(ann, None, now=NOW, interval=900)
    assert is_due(ann, held(seq=None), now=NOW, interval=900)
    assert is_due(ann, held(seq=9), now=NOW, interval=900)  # a newer catalog announced
    assert not is_due(ann, held(seq=10), now=NOW + 899, interval=900)
    assert is_due(ann, held(seq=10), now=NOW + 900, interval=900)
    assert not is_due(ann, held(seq=9, next_try=NOW + 60), now=NOW + 59, interval=900)  # backoff wins
    assert not is_due(ann, held(seq=None, next_try=NOW + 60), now=NOW, interval=900)
    assert not is_due(ann, held(seq=9), now=NOW + 10, interval=900, tried=10)  # asked for 10, got 9: wait
    assert is_due(ann, held(seq=9), now=NOW + 900, interval=900, tried=10)


async def test_big_catalogs_are_verified_off_the_loop(world, monkeypatch):
    monkeypatch.setattr(crawler_module, "OFFLOAD_BYTES", 0)
    world.store(StoreKey.generate(), 2)
    assert (await world.crawler.crawl_once()).indexed == 2


async def test_close_cancels_a_pass_under_way(world):
    world.store(StoreKey.generate(), 1)
    entered, never = asyncio.Event(), asyncio.Event()

    async def gate():
        entered.set()
        await never.wait()

    world.server.gate = gate
    caller = asyncio.create_task(world.crawler.crawl_once())
    async with asyncio.timeout(10):
        await entered.wait()
    await world.crawler.close()
    with pytest.raises(asyncio.CancelledError):
        await caller
    never.set()


async def test_an_oversized_catalog_is_a_failure(world):
    world.store(StoreKey.generate(), 3)
    progress = await world.crawler_with(max_catalog_bytes=1000).crawl_once()
    assert (progress.failed, progress.indexed) == (1, 0)


async def test_a_store_serving_older_than_announced_is_not_asked_every_pass(world):
    a = StoreKey.generate()
    served = world.store(a, 2)
    world.store(a, 3, seq=NOW + 5, serve=False)  # announces NOW + 5, still serves NOW
    first = await world.crawler.crawl_once()
    assert first.indexed == 2 and (await world.directory.held(a.onion)).seq == served.seq
    assert (await world.crawler.crawl_once()).total == 0
    world.clock.t += CrawlLimits().crawl_interval
    assert (await world.crawler.crawl_once()).total == 1


async def test_a_storage_error_ends_the_pass_with_that_error(world, monkeypatch):
    for _ in range(3):
        world.store(StoreKey.generate(), 1)

    async def broken(*args, **kwargs):
        raise StorageError("disk full: free some space")

    monkeypatch.setattr(world.directory, "index", broken)
    with pytest.raises(StorageError, match="disk full"):
        await world.crawler.crawl_once()
    assert not world.crawler.progress.running and world.crawler.progress.finished_at is not None
