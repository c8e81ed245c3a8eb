"""What gossip carries: store announcements and buyers' reviews, in one stream (docs/protocol.md).

Both are signed envelopes keyed by their signer (the envelope's ``store``
field): an announcement by its store, a review by the buyer's per-order key,
so one review per order is held and a higher seq replaces it, exactly like a
store's announcements. Reviews never schedule a crawl; gossip hands the new
ones to the directory. Everything here is pure.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..core import reviews
from ..core.errors import SignatureError, ValidationError
from ..core.reviews import REVIEW_TYPE, Review
from . import announce
from .gossip_state import Held
from .models import Announcement

Gossiped = Announcement | Review
# Stored items are canonical JSON (keys sorted): "type" and "v" are the last members.
_REVIEW_TAIL = b'"type":"' + REVIEW_TYPE.encode() + b'","v":1}'


def key_of(item: Gossiped) -> str:
    """The key an item is held under: its signer."""
    return item.store if isinstance(item, Announcement) else item.signer


def held_of(item: Gossiped) -> Held:
    if isinstance(item, Announcement):
        return Held(item.seq, item.expires_at, tuple(item.body["tags"]))
    return Held(item.seq, item.expires_at, (), subject=item.store)


def is_review(raw: bytes) -> bool:
    """Whether a stored item (canonical bytes) is a review."""
    return raw.endswith(_REVIEW_TAIL)


def verify(item: Any, now: int) -> Gossiped:
    """A received item checked completely, by its type; ValidationError / SignatureError."""
    if isinstance(item, dict) and item.get("type") == REVIEW_TYPE:
        return reviews.verify(item, now=now)
    return announce.verify(item, now=now)


def verify_all(items: list[Any], now: int) -> list[Gossiped | ValidationError | SignatureError]:
    """``verify`` each item (pure: runs on a worker thread)."""
    results: list[Gossiped | ValidationError | SignatureError] = []
    for item in items:
        try:
            results.append(verify(item, now))
        except (ValidationError, SignatureError) as exc:
            results.append(exc)
    return results


MAX_REVIEWS_PER_STORE = 2000  # reviews of one store held in gossip; the store's oldest make room


class ReviewRoom:
    """Room for new reviewers in one intake.

    Per store at most ``per_store``: a new review of a store at its cap takes the place of that store's review
    expiring soonest (refused when it expires sooner itself). In all at most ``total``: past it, a new review
    takes the place of the review expiring soonest of the store holding the most when that holds at least two
    more than the new review's store, else of its own store's (refused when it expires sooner itself, or its
    store holds none), so reviews of one store cannot crowd out another's.
    ``evicted``: the signers whose reviews are to go (in the same write as the new ones).
    """

    def __init__(self, held: Mapping[str, Held], *, per_store: int, total: int) -> None:
        self._held = held
        self._per_store = per_store
        self._total = total
        self._by_store: dict[str, list[tuple[int, str]]] | None = None  # store -> heap (expires_at, signer)
        self._sizes: list[tuple[int, str]] = []  # max-heap (-size, store), stale entries skipped
        self._count = 0
        self._added: set[str] = set()
        self.evicted: list[str] = []

    def _stores(self) -> dict[str, list[tuple[int, str]]]:
        """Built at the first new reviewer only: most intakes bring none."""
        if self._by_store is None:
            self._by_store = {}
            for key, h in self._held.items():
                if h.subject:
                    self._by_store.setdefault(h.subject, []).append((h.expires_at, key))
            for store, heap in self._by_store.items():
                heapq.heapify(heap)
                self._sizes.append((-len(heap), store))
            heapq.heapify(self._sizes)
            self._count = sum(len(heap) for heap in self._by_store.values())
        return self._by_store

    def _largest(self, stores: dict[str, list[tuple[int, str]]]) -> str:
        while self._sizes and -self._sizes[0][0] != len(stores.get(self._sizes[0][1], ())):
            heapq.heappop(self._sizes)  # stale: that store's size changed since
        return self._sizes[0][1] if self._sizes else ""

    def admit(self, review: Review) -> bool:
        """Whether a review of a new signer is kept (making room as above)."""
        if review.signer in self._added:
            return True
        stores = self._stores()
        own = stores.setdefault(review.store, [])
        if len(own) >= self._per_store or self._count >= self._total:
            victim = review.store
            if len(own) < self._per_store:
                largest = self._largest(stores)
                # At least two more: moving one review over evens the shares (gossip converges, no ping-pong).
                victim = largest if len(stores.get(largest, ())) > len(own) + 1 else review.store
            heap = stores[victim]
            if not heap or (victim == review.store and heap[0][0] >= review.expires_at):
                return False
            self.evicted.append(heapq.heappop(heap)[1])
            heapq.heappush(self._sizes, (-len(heap), victim))
            self._count -= 1
        heapq.heappush(own, (review.expires_at, review.signer))
        heapq.heappush(self._sizes, (-len(own), review.store))
        self._added.add(review.signer)
        self._count += 1
        return True


def refused(
    item: Gossiped, held: Mapping[str, Held], blocked: Callable[[str, Sequence[str]], bool], room: ReviewRoom
) -> bool:
    """Valid but not kept: about a blocked store, or a new review ``room`` has no place for."""
    if isinstance(item, Announcement):
        return blocked(item.store, item.body["tags"])
    if blocked(item.store, ()):
        return True
    if item.signer in held:
        return False
    return not room.admit(item)
