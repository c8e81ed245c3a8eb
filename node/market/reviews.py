"""The buyers' reviews a store keeps and publishes in its catalog.

Pure rules over the stored reviews (``Market.add_review`` runs them inside one
storage job): one review per signer (the buyer's per-order key) and one per
order (each carries the store's receipt naming its order and signer; the first
one held for an order wins), a higher ``seq`` replaces the held one, a lower
or equal one is ignored, and the newest ``MAX_REVIEWS`` (by ``issued_at``) are kept. The
catalog carries every unexpired review held, newest first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..core import envelope, reviews
from ..core.errors import ValidationError
from ..core.models import Envelope, StoredReview

MAX_REVIEWS = 1000


def check(onion: str, env: Mapping[str, object] | bytes, *, now: int) -> reviews.Review:
    """The verified review, when it is about this store; ValidationError / SignatureError otherwise."""
    review = reviews.verify(env, now=now)
    if review.store != onion:
        raise ValidationError({"store": f"the review is about store {review.store}, not this one ({onion})"})
    return review


def stored(review: reviews.Review) -> StoredReview:
    env = review.envelope()
    return StoredReview(
        signer=review.signer,
        seq=review.seq,
        issued_at=review.issued_at,
        expires_at=review.expires_at,
        envelope=envelope.typed(env),
    )


def _order(held: StoredReview) -> object:
    return held["envelope"]["body"].get("order")


def _newest_first(items: Sequence[StoredReview]) -> list[StoredReview]:
    return sorted(items, key=lambda r: (-r["issued_at"], r["signer"]))


def merged(
    current: Sequence[StoredReview], review: reviews.Review, *, now: int, cap: int | None = None
) -> list[StoredReview] | None:
    """The reviews to keep once ``review`` is added (the newest ``cap``, default ``MAX_REVIEWS``).

    None when nothing changes: the held review of its signer has a seq >= its seq, another signer's review
    of the same order is held, or it is older than the newest ``cap``.
    """
    held = next((r for r in current if r["signer"] == review.signer), None)
    if held is not None and held["seq"] >= review.seq:
        return None
    if any(r["signer"] != review.signer and r["expires_at"] > now and _order(r) == review.order for r in current):
        return None
    rest = [r for r in current if r["signer"] != review.signer and r["expires_at"] > now]
    kept = _newest_first([*rest, stored(review)])[: MAX_REVIEWS if cap is None else cap]
    if not any(r["signer"] == review.signer for r in kept):
        return None  # older than the newest ``cap``: not kept
    return kept


def published(held: Sequence[StoredReview], *, now: int) -> list[Envelope]:
    """What the catalog carries: unexpired reviews, newest first."""
    return [r["envelope"] for r in _newest_first(held) if r["expires_at"] > now]


def next_expiry(held: Sequence[StoredReview], *, now: int) -> int | None:
    """When the first published review expires (the catalog is re-sealed then)."""
    return min((r["expires_at"] for r in held if r["expires_at"] > now), default=None)
