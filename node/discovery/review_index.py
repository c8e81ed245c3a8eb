"""The directory's reviews (table ``reviews`` of ``directory.sqlite``, migration 2): writes and reads.

Each function runs inside one read or write job of ``ports.Database``. A
review is kept per signer (the buyer's per-order key) and per (store, order):
every review carries the store's receipt naming its order and signer, and the
first one held for an order wins (another signer for the same order would need
a second receipt from the store). A higher seq replaces the held one (its
chain check starts over when the outpoint, block or address changed), a
lower or equal one only adds where it was seen (the held catalog carries it,
gossip brought it). Reviews that fail the chain
check are shown but count in neither the rating nor the "omits reviews"
flag. Every review held is receipt-bound (``core.reviews.verify`` refuses the
others), so the rating and the flag count only those. Gossip-only reviews are
capped per store (the newest kept), so a flood of reviews about one store
cannot fill the file.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..core import envelope, ports, reviews
from ..core.reviews import Review
from .models import DirectoryReview, Rating, VerifiedCatalog

MAX_GOSSIP_PER_STORE = 2000  # gossip-only reviews kept per store (catalogs carry at most 1,000 more)
MAX_SHOWN = 200  # reviews in one store's page / API answer
UNCHECKED = "unchecked"
_ALL = 2**62  # LIMIT of "all the rest" (SQLite's -1 and PostgreSQL's ALL differ)


_COLUMNS = (
    "signer, store, seq, order_id, listing, rating, text, outpoint, block, address, issued_at, expires_at, raw, "
    "in_catalog, gossip_at, chain, checked_at"
)
_REPLACE = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS.split(", ")[1:])


def _text(value: str) -> str:
    return value.replace("\x00", "")  # PostgreSQL text cannot hold NUL


def _insert(
    conn: ports.SqlConnection,
    r: Review,
    *,
    in_catalog: bool,
    gossip_at: int | None,
    chain: str,
    checked_at: int | None,
) -> None:
    conn.execute(
        f"INSERT INTO reviews ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "  # noqa: S608
        f"ON CONFLICT (signer) DO UPDATE SET {_REPLACE}",
        (
            r.signer,
            r.store,
            r.seq,
            _text(r.order),
            _text(r.listing),
            r.rating,
            _text(r.text),
            _text(r.outpoint),
            _text(r.block),
            _text(r.address),
            r.issued_at,
            r.expires_at,
            r.raw,
            int(in_catalog),
            gossip_at,
            chain,
            checked_at,
        ),
    )


def put(conn: ports.SqlConnection, review: Review, *, now: int, from_catalog: bool) -> bool:
    """(write) Keep ``review`` (from a held catalog or from gossip); True when it is new or replaced one."""
    row = conn.execute(
        "SELECT seq, store, outpoint, block, address, in_catalog, gossip_at, chain, checked_at FROM reviews "
        "WHERE signer = ?",
        (review.signer,),
    ).fetchone()
    gossip_at = None if from_catalog else now
    if _order_taken(conn, review):
        return False
    if row is not None and int(row["seq"]) >= review.seq:
        conn.execute(
            "UPDATE reviews SET in_catalog = CASE WHEN ? = 1 THEN 1 ELSE in_catalog END, "
            " gossip_at = coalesce(gossip_at, ?) "
            "WHERE signer = ? AND store = ?",
            (int(from_catalog), gossip_at, review.signer, review.store),
        )
        return False
    chain, checked_at = UNCHECKED, None
    if row is not None:
        same = (row["store"], row["outpoint"], row["block"], row["address"])
        if same == (review.store, review.outpoint, review.block, review.address):  # the check still holds
            chain, checked_at = str(row["chain"]), row["checked_at"]
        from_catalog = from_catalog or (row["store"] == review.store and bool(row["in_catalog"]))
        gossip_at = row["gossip_at"] if row["gossip_at"] is not None else gossip_at
    _insert(conn, review, in_catalog=from_catalog, gossip_at=gossip_at, chain=chain, checked_at=checked_at)
    return True


def _order_taken(conn: ports.SqlConnection, review: Review) -> bool:
    """Whether another signer's review of the same (store, order) is held (the first one wins)."""
    row = conn.execute(
        "SELECT 1 FROM reviews WHERE store = ? AND order_id = ? AND signer != ? LIMIT 1",
        (review.store, review.order, review.signer),
    ).fetchone()
    return row is not None


def from_catalog(conn: ports.SqlConnection, catalog: VerifiedCatalog, *, now: int) -> None:
    """(write, inside the catalog's index job) The catalog's reviews; ``in_catalog`` = what it carries now."""
    conn.execute("UPDATE reviews SET in_catalog = 0 WHERE store = ? AND in_catalog = 1", (catalog.store,))
    for review in catalog.reviews:
        put(conn, review, now=now, from_catalog=True)


def from_gossip(conn: ports.SqlConnection, reviews: Iterable[Review], *, now: int) -> int:
    """(write) Reviews gossip brought; returns how many were new. Past the per-store cap the oldest go."""
    stores: set[str] = set()
    new = 0
    for review in reviews:
        if put(conn, review, now=now, from_catalog=False):
            new += 1
            stores.add(review.store)
    for store in stores:
        conn.execute(
            "DELETE FROM reviews WHERE signer IN (SELECT signer FROM reviews WHERE store = ? AND in_catalog = 0 "
            " ORDER BY issued_at DESC, signer LIMIT ? OFFSET ?)",
            (store, _ALL, MAX_GOSSIP_PER_STORE),
        )
    return new


def expire(conn: ports.SqlConnection, *, now: int) -> int:
    """(write) Drop expired reviews."""
    return int(conn.execute("DELETE FROM reviews WHERE expires_at <= ?", (now,)).rowcount)


def forget_store(conn: ports.SqlConnection, store: str) -> None:
    """(write) A store dropped or blocked: its reviews go too."""
    conn.execute("DELETE FROM reviews WHERE store = ?", (store,))


# -- chain checks ------------------------------------------------------------------------
def due_checks(conn: ports.SqlConnection, *, now: int, recheck_before: int, limit: int) -> list[Review]:
    """(read) Reviews never checked, then "unchecked" ones last tried before ``recheck_before`` (oldest first)."""
    rows = conn.execute(
        "SELECT raw FROM reviews WHERE expires_at > ? AND (checked_at IS NULL OR (chain = ? AND checked_at < ?)) "
        "ORDER BY checked_at IS NOT NULL, checked_at, issued_at LIMIT ?",
        (now, UNCHECKED, recheck_before, limit),
    ).fetchall()
    return [stored(bytes(r[0])) for r in rows]


def set_chain(conn: ports.SqlConnection, review: Review, result: str, *, now: int) -> None:
    """(write) The check's result, if the review held is still the one checked."""
    conn.execute(
        "UPDATE reviews SET chain = ?, checked_at = ? WHERE signer = ? AND seq = ?",
        (result, now, review.signer, review.seq),
    )


def stored(raw: bytes) -> Review:
    """A review verified before it was stored, read back (verified again as of its issue time)."""
    env: Any = envelope.loads(raw)
    return reviews.verify(env, now=int(env["issued_at"]))


# -- reads --------------------------------------------------------------------------------
def rating(conn: ports.SqlConnection, store: str, *, now: int) -> Rating:
    rows = conn.execute(
        "SELECT rating, count(*) FROM reviews WHERE store = ? AND expires_at > ? AND chain NOT LIKE 'failed%' "
        "GROUP BY rating",
        (store, now),
    ).fetchall()
    stars = [0] * 5
    for value, n in rows:
        stars[int(value) - 1] = int(n)
    count = sum(stars)
    mean = round(sum((i + 1) * n for i, n in enumerate(stars)) / count, 2) if count else None
    return Rating(count=count, mean=mean, stars=stars)


def omitted(conn: ports.SqlConnection, store: str, *, as_of: int | None, grace: int, now: int) -> int:
    """Gossiped reviews issued more than ``grace`` before the held catalog (``as_of``) that it leaves out."""
    if as_of is None:
        return 0
    row = conn.execute(
        "SELECT count(*) FROM reviews WHERE store = ? AND in_catalog = 0 AND gossip_at IS NOT NULL "
        " AND issued_at < ? AND expires_at > ? AND chain NOT LIKE 'failed%'",
        (store, as_of - grace, now),
    ).fetchone()
    return int(row[0])


def shown(conn: ports.SqlConnection, store: str, *, now: int, limit: int = MAX_SHOWN) -> list[DirectoryReview]:
    rows = conn.execute(
        "SELECT signer, seq, rating, text, listing, order_id, issued_at, chain, in_catalog, gossip_at FROM reviews "
        "WHERE store = ? AND expires_at > ? ORDER BY issued_at DESC, signer LIMIT ?",
        (store, now, limit),
    ).fetchall()
    return [
        DirectoryReview(
            signer=r["signer"],
            seq=int(r["seq"]),
            rating=int(r["rating"]),
            text=r["text"],
            listing=r["listing"],
            order=r["order_id"],
            issued_at=int(r["issued_at"]),
            chain=r["chain"],
            in_catalog=bool(r["in_catalog"]),
            gossip=r["gossip_at"] is not None,
        )
        for r in rows
    ]
