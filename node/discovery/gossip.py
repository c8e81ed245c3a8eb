"""Gossip of store announcements between node onions: push-pull anti-entropy with since-cursors.

docs/protocol.md ("Gossip") has the messages; docs/design.md ("Discovery")
the threat model. In one round a node picks ``fanout`` random peers and, with
each, sends what it accepted since the last push to that peer and pulls what
the peer accepted since the cursor it gave last time, so a steady-state
round costs bytes in proportion to what is new, not to the network's size.

Buyers' reviews (``pasar.review``) ride the same stream, keyed by their
signer (``gossip_items.py``); they schedule no crawl: the new ones go to
``on_reviews`` (the directory).

Everything received is checked before anything is stored (``announce.verify``),
in batches with a yield to the event loop between them, so a flood does not
starve the node's other work. Announcements pushed by unauthenticated senders
draw from a budget of ``push_budget`` per gossip interval; past it they are
refused before any signature is checked.

The node's own announcements follow the stem rule (``gossip_own.py``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..core import ports, reviews
from ..core.errors import Conflict, PasarError, PayloadTooLarge, SignatureError, Unreachable, ValidationError
from ..core.reviews import Review
from . import announce, gossip_own
from . import gossip_items as items_
from . import gossip_state as S
from . import gossip_wire as wire
from .gossip_types import GOSSIP_PATH, GossipLimits, HttpTransport, Intake, RoundStats, Transport
from .models import Announcement, PeerView
from .peers import Peer, PeerTable

log = logging.getLogger(__name__)

__all__ = ["GOSSIP_PATH", "Gossip", "GossipLimits", "HttpTransport", "Intake", "RoundStats", "Transport"]


Renew = Callable[[str], Awaitable[Announcement | None]]
ReviewSink = Callable[[list[Review]], Awaitable[object]]


class Gossip:
    def __init__(
        self,
        db: ports.Database,
        transport: Transport,
        *,
        me: str | None,
        limits: GossipLimits,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        blocked: Callable[[str, Sequence[str]], bool] = lambda store, tags: False,
        renew: Renew | None = None,
        on_reviews: ReviewSink | None = None,
    ) -> None:
        self.db = db
        self.transport = transport
        self.me = me
        self.limits = limits
        self._clock = clock
        self.rng = rng or random.SystemRandom()
        self._blocked = blocked
        self.renew = renew
        self.on_reviews = on_reviews  # where new reviews go (the directory)
        self.peer_table = PeerTable(db, me=me, max_peers=limits.max_peers, interval=limits.gossip_interval)
        self.epoch, self.counter = "", 0
        self.held: dict[str, S.Held] = {}
        self.own = gossip_own.OwnSchedule(self)
        self.served = RoundStats()
        self.totals = RoundStats()  # every round's figures added up (the node's metrics read them)
        self._writing = asyncio.Lock()
        self._floor: int | None = None  # while the table is full: what a newcomer must beat
        self._tokens = float(limits.push_budget)
        self._tokens_at = 0.0

    def now(self) -> int:
        return int(self._clock())

    async def open(self) -> None:
        loaded = await self.db.execute_write_fn(S.init)
        self.epoch, self.counter, self.held = loaded.epoch, loaded.counter, loaded.held
        self.peer_table.load(loaded.peers)
        self.own.load(loaded.own)
        self._tokens_at = self._clock()

    # -- server side ---------------------------------------------------------------
    async def handle(self, message: bytes, *, now: int | None = None) -> bytes:
        """Answer a peer's request (the body of ``POST /.well-known/pasar/gossip``)."""
        now = self.now() if now is None else now
        if len(message) > self.limits.max_message_bytes:
            raise PayloadTooLarge(f"a gossip message is at most {self.limits.max_message_bytes} bytes")
        request = await asyncio.to_thread(wire.parse_request, message, max_bytes=self.limits.max_message_bytes)
        self.served.messages += 1
        self.served.received_bytes += len(message)
        learned = ([request.sender] if request.sender else []) + request.peers
        await self.peer_table.add_many(learned[: self.limits.peers_per_message], now=now, push_after=self.counter)
        intake = await self.take(request.push, rank=S.PUSHED, now=now, origin=request.sender)
        intake.add_to(self.served)
        cursor = request.cursor
        if cursor == wire.HEAD:
            after = self.counter
        else:
            after = cursor.after if isinstance(cursor, wire.Cursor) and cursor.epoch == self.epoch else 0
        answer = await self._answer(after, now, exclude=request.sender)
        self.served.sent_bytes += len(answer)
        return answer

    async def _answer(self, after: int, now: int, *, exclude: str | None) -> bytes:
        limit = self.limits.page_size
        items, last, more = await self.db.execute_fn(lambda c: S.page(c, after=after, limit=limit, now=now))
        items = [i for i in items if self._servable(i[1])]
        n = wire.fit([raw for _, _, raw in items], max_bytes=self.limits.max_message_bytes)
        if n < len(items):
            last, more = items[n - 1][0] if n else after, True
        chosen = [raw for _, _, raw in items[:n]]
        self.rng.shuffle(chosen)
        peers = self.peer_table.sample(
            self.limits.peers_per_message, self.rng, now=now, keep=lambda p: p.onion != exclude
        )
        return wire.encode_answer(self.epoch, last, more, len(self.held), chosen, peers)

    def _servable(self, key: str) -> bool:
        held = self.held.get(key)
        if held is None:
            return False
        return not (self._blocked(held.subject, ()) if held.subject else self._blocked(key, held.tags))

    # -- checking and storing ------------------------------------------------------
    async def take(self, items: list[Any], *, rank: int, now: int, origin: str | None = None) -> Intake:
        """Check ``items`` and store the good ones; bad ones are counted.

        Cheap checks run here; signatures are checked in batches on a worker
        thread, so a flood never holds the event loop for long.
        """
        intake = Intake()
        todo: list[items_.Gossiped] = []
        # New reviewers this intake may add, and the reviews they replace:
        room = items_.ReviewRoom(self.held, per_store=self.limits.max_reviews_per_store, total=self.limits.max_reviews)
        size, checked = self.limits.verify_batch, 0
        # A push of one item (a stem, or a store's own news) is always checked: one signature per request
        # costs little, and a flood of junk must not use up the budget that new stores' stems need.
        budgeted = rank if len(items) > 1 else S.PULLED
        for start in range(0, len(items), size):
            batch: list[Any] = []
            for item in items[start : start + size]:
                if self._prescreen(item, budgeted, intake, checked + len(batch)):
                    batch.append(item)
            checked += len(batch)
            for result in await asyncio.to_thread(items_.verify_all, batch, now) if batch else []:
                if isinstance(result, Announcement | Review):
                    if items_.refused(result, self.held, self._blocked, room):
                        intake.refused += 1
                    else:
                        todo.append(result)
                else:
                    intake.rejected += 1
                    intake.bad_signatures += isinstance(result, SignatureError)
        if todo:
            await self._store(todo, rank, now, intake, origin, room.evicted)
        return intake

    def _reviews_held(self) -> int:
        return sum(1 for h in self.held.values() if h.subject)

    def _prescreen(self, item: Any, rank: int, intake: Intake, checked: int) -> bool:
        """False (counted) for what needs no signature check: copies of what is held, what would be refused."""
        if isinstance(item, dict):
            store, seq = item.get("store"), item.get("seq")
            held = self.held.get(store) if isinstance(store, str) else None
            if held is not None and isinstance(seq, int) and held.seq >= seq:
                intake.duplicates += 1
                return False
            expires = item.get("expires_at")
            if held is None and self._floor is not None and isinstance(expires, int) and expires <= self._floor:
                intake.refused += 1  # the table is full of announcements that outlive it
                return False
        if checked >= self.limits.per_exchange or (rank == S.PUSHED and not self._take_token()):
            intake.refused += 1
            return False
        return True

    def _take_token(self) -> bool:
        at = self._clock()
        rate = self.limits.push_budget / self.limits.gossip_interval
        self._tokens = min(float(self.limits.push_budget), self._tokens + (at - self._tokens_at) * rate)
        self._tokens_at = at
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    async def _store(self, todo: list[items_.Gossiped], rank: int, now: int, intake: Intake, origin: str | None,
                     evict: Sequence[str] = ()) -> None:  # fmt: skip
        # Reviews have their own share (``max_reviews``, room made before): announcements keep theirs whole.
        gone = [key for key in evict if (held := self.held.get(key)) is not None and held.subject]
        cap = (
            self.limits.max_announcements + self._reviews_held() - len(gone) + sum(isinstance(i, Review) for i in todo)
        )
        batch = [(item, rank) for item in todo]
        async with self._writing:  # memory follows the database in the order the writes ran
            stored = await self.db.execute_write_fn(
                lambda c: S.store_batch(c, batch, capacity=cap, now=now, origin=origin, evict=gone)
            )
            for key, kept in stored.final.items():
                if kept is None:
                    self.held.pop(key, None)
                else:
                    self.held[key] = items_.held_of(kept)
            self.counter = max(self.counter, stored.counter)
            self._floor = stored.floor
        new_reviews: list[Review] = []
        for item, outcome in zip(todo, stored.outcomes, strict=True):
            if outcome is S.Outcome.NEW:
                intake.accepted += 1
            elif outcome is S.Outcome.REFUSED:
                intake.refused += 1
            else:
                intake.duplicates += 1
            if isinstance(item, Review) and outcome is S.Outcome.NEW:
                new_reviews.append(item)
            if outcome is not S.Outcome.REFUSED:
                await self.own.came_back(item)
        if new_reviews and self.on_reviews is not None:
            try:
                await self.on_reviews(new_reviews)
            except PasarError as exc:  # gossip keeps and relays them; the directory gets them from a catalog later
                log.warning("gossip: %d review(s) not handed to the directory: %s", len(new_reviews), exc.message)

    # -- client side ---------------------------------------------------------------
    async def round(self) -> RoundStats:
        """One round: expire, renew and stem own announcements, then exchange with ``fanout`` random peers."""
        now = self.now()
        with self.totals.adding() as stats:  # into the totals even when the round raises
            async with self._writing:
                gone = await self.db.execute_write_fn(lambda c: S.expire(c, now=now))
                for store in gone:
                    self.held.pop(store, None)
                self._floor = None if gone else self._floor
            await self.own.renew_due(now)
            stemmed = await self.own.stem_due(now, stats)
            due = [p for p in self.peer_table.due(now) if p.onion not in stemmed]  # no exchange beside a stem
            chosen = self.rng.sample(due, min(self.limits.fanout, len(due)))
            await asyncio.gather(*(self._exchange(peer, now, stats) for peer in chosen))
        return stats

    async def _exchange(self, peer: Peer, now: int, stats: RoundStats) -> None:
        stats.contacted += 1
        push, push_next = await self._push_page(peer.push_after, now, peer.onion)
        cursor: wire.Cursor | str | None = wire.Cursor(peer.pull_epoch, peer.pull_after) if peer.pull_epoch else None
        if cursor is None and self._synced():
            cursor = wire.HEAD  # first contact, and this node has a table already: only what is new from now
        bad, failed = 0, False
        for page in range(self.limits.pages_per_exchange):
            peers = self.peer_table.sample(
                self.limits.peers_per_message, self.rng, now=now, keep=lambda p: p is not peer
            )
            message = wire.encode_request(self.me, cursor, push if page == 0 else [], peers)
            try:
                answer = await self._send(peer.onion, message, stats)
            except (Unreachable, ValidationError, PayloadTooLarge) as exc:
                log.info("gossip with %s failed: %s", peer.onion, exc.message)
                stats.failed += 1
                await self.peer_table.failed(peer, now=now)
                bad, failed = bad + (not isinstance(exc, Unreachable)), True
                break
            peer.push_after = max(peer.push_after, push_next)
            bad += await self._absorb(peer, answer, now, stats)
            behind = cursor == wire.HEAD and answer.held > len(self.held)  # it holds more: pull it all
            cursor = wire.Cursor(answer.epoch, 0 if behind else answer.next)
            peer.pull_epoch, peer.pull_after = cursor.epoch, cursor.after
            if not (answer.more or behind):
                break
        await self._judge(peer, bad, failed, now, stats)

    async def _absorb(self, peer: Peer, answer: wire.Answer, now: int, stats: RoundStats) -> int:
        """Take a pull answer's announcements and peers; returns its invalid signatures."""
        intake = await self.take(answer.announcements, rank=S.PULLED, now=now, origin=peer.onion)
        intake.add_to(stats)
        await self.peer_table.add_many(answer.peers, now=now, push_after=self.counter)
        return intake.bad_signatures

    async def _judge(self, peer: Peer, bad: int, failed: bool, now: int, stats: RoundStats) -> None:
        if not bad and not failed:
            stats.succeeded += 1
            await self.peer_table.succeeded(peer, now=now)
        if await self.peer_table.judged(peer, bad_signatures=bad, now=now):
            log.warning("gossip peer %s banned for a day: invalid signatures in its answers", peer.onion)
            stats.banned.append(peer.onion)

    def _synced(self) -> bool:
        """True once this node pulls from some peer with a cursor (it then has, or is getting, a table)."""
        return any(p.pull_epoch is not None for p in self.peer_table.by_onion.values())

    async def _send(self, onion: str, message: bytes, stats: RoundStats) -> wire.Answer:
        stats.messages += 1
        stats.sent_bytes += len(message)
        reply = await self.transport.exchange(onion, message)
        stats.received_bytes += len(reply)
        return wire.parse_answer(reply, max_bytes=self.limits.max_message_bytes)

    async def _push_page(self, after: int, now: int, peer: str) -> tuple[list[bytes], int]:
        """What this node accepted after ``after`` (one message's worth, less what came from ``peer``) and the
        cursor after it."""
        if after >= self.counter:
            return [], after
        limit, fresh = self.limits.per_exchange, now - 2 * self.limits.gossip_interval  # push news only
        items, last, _ = await self.db.execute_fn(
            lambda c: S.page(c, after=after, limit=limit, now=now, skip_origin=peer, received_since=fresh)
        )
        items = [i for i in items if self._servable(i[1])]
        n = wire.fit([raw for _, _, raw in items], max_bytes=self.limits.max_message_bytes)
        if n < len(items):
            last = items[n - 1][0] if n else after
        return [raw for _, _, raw in items[:n]], last

    async def run(self) -> None:
        """Forever: a round, then ``gossip_interval`` x a random factor in [0.5, 1.5] (own stems on their due time)."""
        while True:
            await self.round()
            wake = self._clock() + self.limits.gossip_interval * self.rng.uniform(0.5, 1.5)
            while (left := wake - self._clock()) > 0:
                due = self.own.next_due()
                await asyncio.sleep(max(0.0, min(left, left if due is None else due - self._clock())))
                with self.totals.adding(rounds=0) as stems:  # stems on their own due time count too
                    await self.own.stem_due(self.now(), stems)

    # -- own stores and reviews -----------------------------------------------------
    async def publish_review(self, raw: bytes) -> None:
        """Gossip a review this node's buyer signed, by the stem rule like a store's announcement (nothing links
        this node to it), and give it to this node's directory at once; ValidationError / SignatureError."""
        review = reviews.verify(raw, now=self.now())
        if self.on_reviews is not None:
            await self.on_reviews([review])
        await self.own.schedule(review)

    async def announce_own(self, ann: Announcement) -> None:
        await self.own.schedule(ann)

    def own_announcements(self) -> dict[str, Announcement]:
        """The node's own announcements it holds on to (stemmed, or waiting to be), by store."""
        rows = self.own.rows.items()
        return {store: announce.from_stored(row.raw) for store, row in rows if not items_.is_review(row.raw)}

    async def withdraw_own(self, store: str) -> None:
        await self.own.withdraw(store)
        await self.forget_store(store)

    # -- peers ---------------------------------------------------------------------
    async def add_peer(self, onion: str, source: str = "manual") -> PeerView:
        now = self.now()
        peer = await self.peer_table.add(onion, source, now=now, push_after=self.counter)
        if peer is None:
            raise Conflict("the peer table is full of banned peers: remove some with `pasar peers remove`")
        return PeerTable.view(peer, now)

    async def remove_peer(self, onion: str) -> None:
        await self.peer_table.remove(onion)

    async def ban_peer(self, onion: str) -> None:
        await self.peer_table.ban(onion, now=self.now())

    async def peers(self) -> list[PeerView]:
        now = self.now()
        return sorted((PeerTable.view(p, now) for p in self.peer_table.by_onion.values()), key=lambda v: -v["score"])

    async def sample_peers(self, k: int) -> list[str]:
        return self.peer_table.sample(k, self.rng, now=self.now())

    # -- held announcements --------------------------------------------------------
    async def announcements(self) -> list[Announcement]:
        now = self.now()
        raws = await self.db.execute_fn(lambda c: S.all_raw(c, now=now))
        found = [announce.from_stored(raw) for raw in raws if not items_.is_review(raw)]
        return [a for a in found if not self._blocked(a.store, a.body["tags"])]

    async def announcement(self, store: str) -> Announcement | None:
        raw = await self.db.execute_fn(lambda c: S.one_raw(c, store))
        if raw is None or items_.is_review(raw):
            return None
        ann = announce.from_stored(raw)
        return None if self._blocked(ann.store, ann.body["tags"]) or ann.expires_at <= self.now() else ann

    async def forget_store(self, store: str) -> None:
        async with self._writing:
            await self.db.execute_write_fn(lambda c: S.forget(c, store))
            self.held.pop(store, None)
            self._floor = None

    async def counts(self) -> tuple[int, int]:
        """(peers, store announcements held); reviews held are not counted here."""
        return len(self.peer_table), len(self.held) - self._reviews_held()
