"""What the node runs for discovery: its parts bundled, and the announcer of its own stores.

The announcer keeps one fresh signed announcement per own store in gossip:
a new one when the store's catalog changes (its ``seq`` or hash), at half
the announcement's lifetime, and none for a store that is invite-only,
has ``announce`` off, or is gone. Store events only wake it; gossip decides
when and to whom each announcement first goes (the stem rule, so that
nothing links two stores of one node).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.crypto import StoreKey
from ..core.errors import NotFound, Unavailable
from ..market.market import Market
from . import announce, blocklist
from .crawler import Crawler
from .directory import Directory
from .gossip import Gossip
from .models import Announcement

log = logging.getLogger(__name__)


@dataclass
class Discovery:
    """The parts operations use; ``crawler`` is None where nothing can be fetched (no tor, node stopped)."""

    gossip: Gossip
    directory: Directory
    crawler: Crawler | None
    node_key: StoreKey  # the node onion's key (``node.key``), never a store's
    directory_onion: str | None = None
    gossip_on: bool = True  # the ``gossip`` setting
    running: bool = False  # the node is running (gossip and crawler loops), not the CLI on a stopped node

    def __post_init__(self) -> None:
        if self.gossip.on_reviews is None:  # the reviews gossip brings go to this node's directory
            self.gossip.on_reviews = self.directory.add_reviews

    @property
    def node_onion(self) -> str:
        return self.node_key.onion

    async def publish_review(self, raw: bytes) -> None:
        """Gossip a review the buyer of this node signed; this node's directory shows it at once."""
        await self.gossip.publish_review(raw)

    def need_crawler(self) -> Crawler:
        if self.crawler is None:
            raise Unavailable(
                "crawling needs the running node with tor: start it with `pasar run` (not --no-tor)"
                if not self.running
                else "this node runs without tor, so it cannot fetch other stores (restart it without --no-tor)"
            )
        return self.crawler


@dataclass
class Announcer:
    """Signs and hands to gossip the announcements of this node's own stores."""

    market: Market
    gossip: Gossip
    ttl: int
    interval: float  # seconds between checks when nothing wakes it
    clock: Callable[[], float] = time.time
    # Whether a store can be reached now (its onion published): announcing it earlier would send
    # crawlers to a descriptor that is not there yet, and tor waits long before asking again.
    ready: Callable[[str], bool] = lambda onion: True
    _sent: dict[str, Announcement] = field(default_factory=dict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _loaded: bool = False
    _rng: random.Random = field(default_factory=random.SystemRandom)

    def wake(self) -> None:
        """A store changed: look again now."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            await self.check()
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except TimeoutError:
                pass

    async def check(self) -> None:
        """Announce what changed or ages; withdraw what must no longer be announced."""
        held = self.gossip.own_announcements()
        if not self._loaded:  # after a restart: what gossip still holds was signed then, not now
            self._sent.update(held)
            self._loaded = True
        wanted: set[str] = set()
        for record in await self.market.stores():
            options = Market.access_options(record)
            if options["announce"] and not options["invite_only"]:
                wanted.add(record["onion"])
        # Also what gossip held from before a restart: a store made invite-only (or deleted) while the
        # node was stopped must not be stemmed again.
        for onion in (set(self._sent) | set(held)) - wanted:
            self._sent.pop(onion, None)
            await self.gossip.withdraw_own(onion)
        for onion in sorted(o for o in wanted if self.ready(o)):
            try:
                await self._refresh(onion)
            except NotFound:  # deleted meanwhile; the next check withdraws it
                continue

    async def _refresh(self, onion: str) -> None:
        snap = await self.market.snapshot(onion)
        body = announce.body_of(snap)
        # Signed at a random moment of the last interval: stores re-signed together (at a restart, at the
        # same half-life) must not carry the same timestamp, which would say "one node".
        now = int(self.clock()) - self._rng.randrange(0, max(1, int(self.interval)))
        sent = self._sent.get(onion)
        fresh = sent is not None and now < sent.issued_at + (sent.expires_at - sent.issued_at) // 2
        if fresh and sent is not None and sent.body == body:
            return
        held = await self.gossip.announcement(onion)
        last = max(sent.seq if sent else 0, held.seq if held else 0)
        ann = announce.build(await self.market.key(onion), body, seq=max(last + 1, now), now=now, ttl=self.ttl)
        self._sent[onion] = ann
        await self.gossip.announce_own(ann)
        log.debug("store %s: announcement %d handed to gossip", onion, ann.seq)


@dataclass
class BlocklistPublisher:
    """The directory's signed blocklist (the operator's own blocks), re-signed when they change or age."""

    directory: Directory
    key: StoreKey
    ttl: int
    clock: Callable[[], float] = time.time
    _cached: tuple[tuple[tuple[str, ...], tuple[str, ...]], int, int, bytes] | None = None  # (blocks, seq, at, raw)

    async def current(self) -> bytes:
        own = [b for b in await self.directory.blocks() if b["source"] == "operator"]
        entries = (
            tuple(sorted(b["value"] for b in own if b["kind"] == "store")),
            tuple(sorted(b["value"] for b in own if b["kind"] == "tag")),
        )
        now = int(self.clock())
        if self._cached is not None:
            held, seq, at, raw = self._cached
            if held == entries and now < at + self.ttl // 2:
                return raw
        seq = max((self._cached[1] + 1) if self._cached else 0, now)
        raw = blocklist.seal(self.key, list(entries[0]), list(entries[1]), seq=seq, now=now, ttl=self.ttl)
        self._cached = (entries, seq, now, raw)
        return raw
