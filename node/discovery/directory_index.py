"""The directory's write functions: index a verified catalog, crawl state, mirrors, thumbnails, expiry.

Each function runs inside one write transaction of ``directory.sqlite``
(``ports.Database.execute_write_fn``); the schema is
``node/adapters/directory_schema.py``. Blocks are re-read from the table in
the same transaction, so a block that committed first always wins over an
index that was queued before it. On PostgreSQL, where several frontends
write at once, the Directory first takes ``Dialect.lock``'s locks in the
same transaction, which keeps that true across frontends.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..core import ports
from . import review_index
from .models import CatalogListing, HeldCatalog, Source, VerifiedCatalog

BACKOFF_BASE = 60  # seconds after the first failure, doubled each failure
BACKOFF_MAX = 6 * 3600
# min(BACKOFF_BASE / 2 * 2**failures, BACKOFF_MAX) in SQL both engines run: the max from this many failures on.
_BACKOFF_STEPS = next(k for k in range(64) if (BACKOFF_BASE // 2) << k >= BACKOFF_MAX)


@dataclass(frozen=True)
class Caps:
    """The size caps the write functions need (from DirectoryLimits)."""

    mirror_store_bytes: int
    mirror_total_bytes: int
    thumb_bytes: int
    thumbs_total_bytes: int


def delimited(values: Iterable[str]) -> str:
    """``"\\na\\nb\\n"``: one value is then found with ``instr(column, "\\nvalue\\n")``."""
    clean = [v for v in values if v and "\n" not in v]
    return "\n" + "\n".join(clean) + "\n" if clean else ""


def split_delimited(text: str) -> tuple[str, ...]:
    return tuple(v for v in text.split("\n") if v)


def store_blocked(conn: ports.SqlConnection, store: str) -> bool:
    row = conn.execute("SELECT 1 FROM blocks WHERE kind = 'store' AND value = ? LIMIT 1", (store,)).fetchone()
    return row is not None


def blocked_tags(conn: ports.SqlConnection) -> set[str]:
    return {str(r[0]) for r in conn.execute("SELECT DISTINCT value FROM blocks WHERE kind = 'tag'").fetchall()}


# -- index -------------------------------------------------------------------------
_TEXT = ("title", "description", "category", "tags")
_OTHER = ("price_sat", "ships_to", "created_at", "thumb")


_NO_MARKS = str.maketrans("", "", "\ue000\ue001\x00")


def unmarked(text: str) -> str:
    """``text`` without U+E000/U+E001 (search snippets use them to mark matches, so stored text never has them)
    and without NUL (PostgreSQL text cannot hold it)."""
    return text.translate(_NO_MARKS)


def _fields(listing: CatalogListing) -> tuple[object, ...]:
    return (
        unmarked(listing.title),
        unmarked(listing.description),
        unmarked(listing.category),
        unmarked(delimited(t.lower() for t in listing.tags)),
        int(listing.price_sat),
        delimited(listing.ships_to),
        listing.created_at,
        listing.thumb,
    )


def wanted_listings(catalog: VerifiedCatalog, banned_tags: set[str]) -> list[CatalogListing]:
    """The catalog's listings without those carrying a blocked tag, one per id (first wins)."""
    seen: set[str] = set()
    kept: list[CatalogListing] = []
    for listing in catalog.listings:
        if listing.id in seen or (banned_tags and banned_tags.intersection(t.lower() for t in listing.tags)):
            continue
        seen.add(listing.id)
        kept.append(listing)
    return kept


def index_catalog(
    conn: ports.SqlConnection, catalog: VerifiedCatalog, *, source: Source, etag: str | None, now: int, caps: Caps
) -> int:
    """Replace ``catalog.store``'s listings with the catalog's (only rows that changed are touched)."""
    if store_blocked(conn, catalog.store):
        return 0
    old = conn.execute("SELECT seq, hash FROM stores WHERE onion = ?", (catalog.store,)).fetchone()
    if old is not None and old["seq"] is not None and catalog.seq < int(old["seq"]):
        if source is Source.DIRECT:
            mark_seen(conn, catalog.store, now)
        return 0  # an older catalog than the one held (a replay): keep the newer
    blocked = blocked_tags(conn)
    kept = wanted_listings(catalog, blocked)
    _upsert_store(conn, catalog, source=source, etag=etag, now=now, listings=len(kept))
    replace_listings(conn, catalog.store, kept, now)
    review_index.from_catalog(conn, catalog, now=now)
    same_raw = old is not None and old["hash"] == catalog.hash
    if blocked and any(blocked.intersection(item.tags) for item in catalog.listings):
        # It carries a listing with a blocked tag: the signed copy cannot be trimmed, so it is not mirrored.
        conn.execute("DELETE FROM mirrors WHERE store = ?", (catalog.store,))
    else:
        hold_raw(conn, catalog, now=now, caps=caps, unchanged=same_raw)
    _drop_unused_thumbs(conn, catalog.store)
    return len(kept)


def _upsert_store(
    conn: ports.SqlConnection, catalog: VerifiedCatalog, *, source: Source, etag: str | None, now: int, listings: int
) -> None:
    direct = source is Source.DIRECT
    conn.execute(
        "INSERT INTO stores (onion, name, description, seq, hash, etag, source, as_of, expires_at, listings, "
        " added_at, last_seen, last_attempt, failures, next_try) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0) "
        "ON CONFLICT (onion) DO UPDATE SET name = excluded.name, description = excluded.description, "
        " seq = excluded.seq, hash = excluded.hash, etag = excluded.etag, source = excluded.source, "
        " as_of = excluded.as_of, expires_at = excluded.expires_at, listings = excluded.listings, "
        " last_seen = coalesce(excluded.last_seen, stores.last_seen), "
        " last_attempt = coalesce(excluded.last_attempt, stores.last_attempt), "
        " failures = CASE WHEN ? THEN 0 ELSE stores.failures END, "
        " next_try = CASE WHEN ? THEN 0 ELSE stores.next_try END, "
        " last_error = CASE WHEN ? THEN '' ELSE stores.last_error END",
        (
            catalog.store,
            unmarked(catalog.name),
            unmarked(catalog.description),
            catalog.seq,
            catalog.hash,
            etag,
            source.value,
            catalog.issued_at,
            catalog.expires_at,
            listings,
            now,
            now if direct else None,
            now if direct else None,
            direct,
            direct,
            direct,
        ),
    )


_SELECT_STORE_ROWS = (
    "SELECT rowid, id, listed_at, title, description, category, tags, price_sat, ships_to, created_at, thumb "
    "FROM listings WHERE store = ?"
)
_UPDATE_ALL = (
    "UPDATE listings SET title = ?, description = ?, category = ?, tags = ?, price_sat = ?, ships_to = ?, "
    "created_at = ?, thumb = ?, listed_at = ? WHERE rowid = ?"
)
_UPDATE_OTHER = (
    "UPDATE listings SET price_sat = ?, ships_to = ?, created_at = ?, thumb = ?, listed_at = ? WHERE rowid = ?"
)
_INSERT = (
    "INSERT INTO listings (store, id, title, description, category, tags, price_sat, ships_to, created_at, thumb, "
    "listed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def replace_listings(conn: ports.SqlConnection, store: str, kept: Sequence[CatalogListing], now: int) -> None:
    """Delete, update and insert so that the store's rows equal ``kept`` (triggers keep FTS5 in sync).

    A re-crawl that changed a few listings touches only those rows; a price-only change does not touch FTS5.
    """
    existing = {r["id"]: r for r in conn.execute(_SELECT_STORE_ROWS, (store,)).fetchall()}
    inserts: list[tuple[object, ...]] = []
    text_updates: list[tuple[object, ...]] = []
    other_updates: list[tuple[object, ...]] = []
    for listing in kept:
        fields = _fields(listing)
        row = existing.pop(listing.id, None)
        if row is None:
            inserts.append((store, listing.id, *fields, min(listing.created_at, now)))
            continue
        listed_at = min(listing.created_at, int(row["listed_at"]))
        if tuple(row[c] for c in _TEXT) != fields[:4]:
            text_updates.append((*fields, listed_at, row["rowid"]))
        elif tuple(row[c] for c in _OTHER) != fields[4:] or listed_at != row["listed_at"]:
            other_updates.append((*fields[4:], listed_at, row["rowid"]))
    conn.executemany("DELETE FROM listings WHERE rowid = ?", [(r["rowid"],) for r in existing.values()])
    conn.executemany(_UPDATE_ALL, text_updates)
    conn.executemany(_UPDATE_OTHER, other_updates)
    conn.executemany(_INSERT, inserts)


# -- mirrors -------------------------------------------------------------------------
def hold_raw(conn: ports.SqlConnection, catalog: VerifiedCatalog, *, now: int, caps: Caps, unchanged: bool) -> None:
    """Keep the raw catalog for mirroring if it fits ``mirror_store_bytes``; evict the oldest past the total."""
    size = len(catalog.raw)
    if size > caps.mirror_store_bytes:
        conn.execute("DELETE FROM mirrors WHERE store = ?", (catalog.store,))
        return
    if unchanged and conn.execute("SELECT 1 FROM mirrors WHERE store = ?", (catalog.store,)).fetchone():
        conn.execute("UPDATE mirrors SET held_at = ? WHERE store = ?", (now, catalog.store))
        return
    conn.execute(
        "INSERT INTO mirrors (store, held_at, size, raw) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (store) DO UPDATE SET held_at = excluded.held_at, size = excluded.size, raw = excluded.raw",
        (catalog.store, now, size, catalog.raw),
    )
    _evict(conn, "mirrors", caps.mirror_total_bytes)


_EVICT_SQL = {
    "mirrors": (
        "SELECT coalesce(sum(size), 0) FROM mirrors",
        "SELECT rowid, size FROM mirrors ORDER BY held_at, rowid LIMIT 64",
        "DELETE FROM mirrors WHERE rowid = ?",
    ),
    "thumbs": (
        "SELECT coalesce(sum(size), 0) FROM thumbs",
        "SELECT rowid, size FROM thumbs ORDER BY fetched_at, rowid LIMIT 64",
        "DELETE FROM thumbs WHERE rowid = ?",
    ),
}


def _evict(conn: ports.SqlConnection, table: str, cap: int) -> None:
    """Delete the oldest rows of ``table`` (mirrors or thumbs) until its total ``size`` is within ``cap``."""
    total_sql, oldest_sql, delete_sql = _EVICT_SQL[table]
    total = int(conn.execute(total_sql).fetchone()[0])
    while total > cap:
        rows = conn.execute(oldest_sql).fetchall()
        if not rows:
            return
        for row in rows:
            if total <= cap:
                return
            conn.execute(delete_sql, (row[0],))
            total -= int(row[1])


# -- thumbnails ----------------------------------------------------------------------
def put_thumb(conn: ports.SqlConnection, store: str, image_id: str, data: bytes, *, now: int, caps: Caps) -> bool:
    """Keep a thumbnail (False: too big or the store is blocked, nothing kept)."""
    if len(data) > caps.thumb_bytes or store_blocked(conn, store):
        return False
    conn.execute(
        "INSERT INTO thumbs (store, image_id, fetched_at, size, data) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (store, image_id) DO UPDATE SET fetched_at = excluded.fetched_at, size = excluded.size, "
        " data = excluded.data",
        (store, image_id, now, len(data), data),
    )
    _evict(conn, "thumbs", caps.thumbs_total_bytes)
    return True


def _drop_unused_thumbs(conn: ports.SqlConnection, store: str) -> None:
    conn.execute(
        "DELETE FROM thumbs WHERE store = ? AND image_id NOT IN "
        "(SELECT thumb FROM listings WHERE store = ? AND thumb IS NOT NULL)",
        (store, store),
    )


# -- crawl state ---------------------------------------------------------------------
def mark_seen(conn: ports.SqlConnection, store: str, now: int) -> None:
    if store_blocked(conn, store):
        return
    conn.execute(
        "INSERT INTO stores (onion, added_at, last_seen, last_attempt) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (onion) DO UPDATE SET last_seen = excluded.last_seen, last_attempt = excluded.last_attempt, "
        " failures = 0, next_try = 0, last_error = ''",
        (store, now, now, now),
    )


def mark_failed(conn: ports.SqlConnection, store: str, reason: str, now: int) -> None:
    """Count a failed fetch and back off; a failure while the store is already backed off (another
    frontend of a shared PostgreSQL directory failed on it first, in the same pass) is not counted again."""
    if store_blocked(conn, store):
        return
    conn.execute(
        "INSERT INTO stores (onion, added_at, last_attempt, failures, next_try, last_error) "
        "VALUES (?, ?, ?, 1, ?, ?) "
        "ON CONFLICT (onion) DO UPDATE SET last_attempt = excluded.last_attempt, last_error = excluded.last_error, "
        " failures = stores.failures + CASE WHEN stores.next_try > excluded.last_attempt THEN 0 ELSE 1 END, "
        " next_try = CASE WHEN stores.next_try > excluded.last_attempt THEN stores.next_try "
        "  ELSE excluded.last_attempt + CASE WHEN stores.failures + 1 >= ? THEN ? "
        "  ELSE ? * (1 << CAST(stores.failures + 1 AS INTEGER)) END END",
        (store, now, now, now + BACKOFF_BASE, unmarked(reason[:200]), _BACKOFF_STEPS, BACKOFF_MAX, BACKOFF_BASE // 2),
    )


def held(conn: ports.SqlConnection, store: str) -> HeldCatalog | None:
    row = conn.execute(
        "SELECT seq, hash, etag, source, as_of, last_seen, last_attempt, failures, next_try "
        "FROM stores WHERE onion = ?",
        (store,),
    ).fetchone()
    if row is None:
        return None
    return HeldCatalog(
        store=store,
        seq=row["seq"],
        hash=row["hash"],
        etag=row["etag"],
        source=Source(row["source"]) if row["source"] else None,
        as_of=row["as_of"],
        last_seen=row["last_seen"],
        last_attempt=row["last_attempt"],
        failures=int(row["failures"]),
        next_try=int(row["next_try"]),
    )


# -- expiry and purges ---------------------------------------------------------------
def purge_store(conn: ports.SqlConnection, store: str, *, keep_row: bool) -> None:
    """Delete a store's listings, held catalog and thumbnails; its row too unless ``keep_row``."""
    conn.execute("DELETE FROM listings WHERE store = ?", (store,))
    conn.execute("DELETE FROM mirrors WHERE store = ?", (store,))
    conn.execute("DELETE FROM thumbs WHERE store = ?", (store,))
    if keep_row:
        conn.execute(
            "UPDATE stores SET seq = NULL, hash = NULL, etag = NULL, source = NULL, as_of = NULL, "
            "expires_at = NULL, listings = 0 WHERE onion = ?",
            (store,),
        )
    else:
        conn.execute("DELETE FROM stores WHERE onion = ?", (store,))
        review_index.forget_store(conn, store)


def expire(conn: ports.SqlConnection, *, now: int, drop_after: int) -> int:
    """Forget expired catalogs (the crawl state stays) and reviews, and drop stores unreachable for ``drop_after`` s."""
    review_index.expire(conn, now=now)
    expired = [str(r[0]) for r in conn.execute("SELECT onion FROM stores WHERE expires_at <= ?", (now,)).fetchall()]
    for store in expired:
        purge_store(conn, store, keep_row=True)
    gone = [
        str(r[0])
        for r in conn.execute(
            "SELECT onion FROM stores WHERE failures > 0 AND coalesce(last_seen, added_at) <= ?", (now - drop_after,)
        ).fetchall()
    ]
    for store in gone:
        purge_store(conn, store, keep_row=False)
    return len(set(expired) | set(gone))
