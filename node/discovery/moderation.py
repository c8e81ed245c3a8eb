"""Blocks and reports: validation and the write functions the Directory runs.

A block is ``(kind, value, source)``: kind "store" (an onion address) or
"tag" (lower case); source "operator" or the onion of a subscribed
blocklist. The same value may be blocked by several sources; it is blocked
while any row names it. Blocking a store deletes its listings, held catalog,
thumbnails and row in the same write; blocking a tag deletes the listings
carrying it (the index skips them from then on). Unblocking a tag forgets
every store's ETag, so the next crawl fetches full catalogs again and the
listings come back within one ``crawl_interval``.

Reports are bounded: past :data:`MAX_REPORTS` the oldest are dropped.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from ..core import addresses, ports
from ..core.errors import NotFound, ValidationError
from .directory_index import purge_store
from .models import Block, Report

KINDS = ("store", "tag")
OPERATOR = "operator"
MAX_TAG = 32
MAX_REASON = 500
MAX_LISTING_ID = 128
MAX_REPORTS = 10_000
MAX_BLOCKLIST_ENTRIES = 10_000

BlockSets = tuple[frozenset[str], frozenset[str]]
"""(blocked stores, blocked tags), as held in memory by the Directory."""


def clean_text(text: str, limit: int) -> str:
    """``text`` without control characters, white space collapsed, cut to ``limit`` characters."""
    kept = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in text)
    return " ".join(kept.split())[:limit]


def normalize_store(value: str, field: str = "value") -> str:
    onion = addresses.normalize(value)
    if not addresses.is_address(onion):
        raise ValidationError({field: "not an onion address: paste the store's 56-character .onion address"})
    return onion


def normalize_tag(value: str) -> str:
    tag = value.strip().lower()
    if not 1 <= len(tag) <= MAX_TAG or any(unicodedata.category(c)[0] in "CZ" for c in tag):
        raise ValidationError({"value": f"a tag has 1-{MAX_TAG} characters and no spaces"})
    return tag


def normalize_block(kind: str, value: str) -> tuple[str, str]:
    if kind not in KINDS:
        raise ValidationError({"kind": "kind is 'store' or 'tag'"})
    return kind, normalize_store(value) if kind == "store" else normalize_tag(value)


def load_blocks(conn: ports.SqlConnection) -> BlockSets:
    rows = conn.execute("SELECT DISTINCT kind, value FROM blocks").fetchall()
    return (
        frozenset(str(r[1]) for r in rows if r[0] == "store"),
        frozenset(str(r[1]) for r in rows if r[0] == "tag"),
    )


def list_blocks(conn: ports.SqlConnection) -> list[Block]:
    rows = conn.execute(
        "SELECT kind, value, reason, source, created_at FROM blocks ORDER BY created_at DESC, kind, value"
    ).fetchall()
    return [Block(kind=r[0], value=r[1], reason=r[2], source=r[3], created_at=int(r[4])) for r in rows]


def purge_tag(conn: ports.SqlConnection, tag: str) -> None:
    """Delete the listings carrying ``tag`` and fix their stores' listing counts."""
    needle = f"\n{tag}\n"
    stores = [
        str(r[0])
        for r in conn.execute("SELECT DISTINCT store FROM listings WHERE instr(tags, ?) > 0", (needle,)).fetchall()
    ]
    conn.execute("DELETE FROM listings WHERE instr(tags, ?) > 0", (needle,))
    # Their signed catalogs still hold those listings: they are no longer served as mirrors.
    conn.executemany("DELETE FROM mirrors WHERE store = ?", [(s,) for s in stores])
    conn.executemany(
        "UPDATE stores SET listings = (SELECT count(*) FROM listings WHERE store = ?) WHERE onion = ?",
        [(s, s) for s in stores],
    )


def _forget_etags(conn: ports.SqlConnection) -> None:
    conn.execute("UPDATE stores SET etag = NULL WHERE etag IS NOT NULL")


def add_block(conn: ports.SqlConnection, block: Block) -> BlockSets:
    before = load_blocks(conn)
    conn.execute(
        "INSERT INTO blocks (kind, value, source, reason, created_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (kind, value, source) DO UPDATE SET reason = excluded.reason",
        (block["kind"], block["value"], block["source"], block["reason"], block["created_at"]),
    )
    if block["kind"] == "store":
        purge_store(conn, block["value"], keep_row=False)
    elif block["value"] not in before[1]:
        purge_tag(conn, block["value"])
    return load_blocks(conn)


def remove_block(conn: ports.SqlConnection, kind: str, value: str) -> BlockSets:
    gone = conn.execute("DELETE FROM blocks WHERE kind = ? AND value = ?", (kind, value)).rowcount
    if gone == 0:
        raise NotFound(f"no {kind} {value!r} is blocked: check the list of blocks for its exact spelling")
    if kind == "tag":
        _forget_etags(conn)
    return load_blocks(conn)


def replace_source(
    conn: ports.SqlConnection, source: str, stores: Sequence[str], tags: Sequence[str], *, now: int
) -> BlockSets:
    """Make ``source``'s blocks exactly these entries (invalid ones skipped); purge what became blocked."""
    before_stores, before_tags = load_blocks(conn)
    conn.execute("DELETE FROM blocks WHERE source = ?", (source,))
    rows: set[tuple[str, str]] = set()
    for kind, values in (("store", stores), ("tag", tags)):
        for value in values[:MAX_BLOCKLIST_ENTRIES]:
            try:
                rows.add(normalize_block(kind, value))
            except ValidationError:
                continue
    conn.executemany(
        "INSERT INTO blocks (kind, value, source, reason, created_at) VALUES (?, ?, ?, '', ?)",
        [(kind, value, source, now) for kind, value in sorted(rows)],
    )
    after_stores, after_tags = load_blocks(conn)
    for store in after_stores - before_stores:
        purge_store(conn, store, keep_row=False)
    for tag in after_tags - before_tags:
        purge_tag(conn, tag)
    if before_tags - after_tags:
        _forget_etags(conn)
    return after_stores, after_tags


def add_report(
    conn: ports.SqlConnection, store: str, listing: str, reason: str, *, now: int, cap: int = MAX_REPORTS
) -> Report:
    """Record a buyer's report of an indexed listing; the table keeps the newest ``cap``."""
    found = conn.execute("SELECT 1 FROM listings WHERE store = ? AND id = ?", (store, listing)).fetchone()
    if found is None:
        raise ValidationError({"listing": "this directory has no such listing (it may have been removed)"})
    row = conn.execute(
        "INSERT INTO reports (store, listing, reason, created_at) VALUES (?, ?, ?, ?) RETURNING id",
        (store, listing, reason, now),
    ).fetchone()
    report_id = int(row[0])
    conn.execute("DELETE FROM reports WHERE id <= ?", (report_id - cap,))
    return Report(id=report_id, store=store, listing=listing, reason=reason, created_at=now)


def validate_report(store: str, listing: str, reason: str) -> tuple[str, str, str]:
    onion = normalize_store(store, "store")
    listing_id = listing.strip()
    if not 1 <= len(listing_id) <= MAX_LISTING_ID or any(unicodedata.category(c)[0] in "CZ" for c in listing_id):
        raise ValidationError({"listing": "not a listing id"})
    text = clean_text(reason, MAX_REASON)
    if not text:
        raise ValidationError({"reason": "say what is wrong with this listing"})
    return onion, listing_id, text


def list_reports(conn: ports.SqlConnection, *, limit: int) -> list[Report]:
    rows = conn.execute(
        "SELECT id, store, listing, reason, created_at FROM reports ORDER BY id DESC LIMIT ?", (limit,)
    ).fetchall()
    return [Report(id=int(r[0]), store=r[1], listing=r[2], reason=r[3], created_at=int(r[4])) for r in rows]


# -- blocklist subscriptions ---------------------------------------------------------
def add_subscription(conn: ports.SqlConnection, onion: str, *, now: int) -> None:
    conn.execute(
        "INSERT INTO subscriptions (onion, added_at) VALUES (?, ?) ON CONFLICT (onion) DO NOTHING", (onion, now)
    )


def remove_subscription(conn: ports.SqlConnection, onion: str) -> BlockSets:
    """Forget a subscription and the blocks that came from it."""
    if conn.execute("DELETE FROM subscriptions WHERE onion = ?", (onion,)).rowcount == 0:
        raise NotFound(f"this node does not subscribe to the blocklist of {onion}")
    return replace_source(conn, onion, (), (), now=0)


def list_subscriptions(conn: ports.SqlConnection) -> list[str]:
    return [str(r[0]) for r in conn.execute("SELECT onion FROM subscriptions ORDER BY added_at, onion").fetchall()]
