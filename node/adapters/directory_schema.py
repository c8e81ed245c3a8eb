"""Schema of ``directory.sqlite``: crawled stores, their listings and full-text index, mirrors, moderation.

The queries live in ``node/discovery/directory*.py`` and ``moderation.py``
(run through the ``ports.Database`` port); this module is SQL text only.
The file can be rebuilt from the network, so the app opens it with
``synchronous=NORMAL``.

- ``stores``: one row per store the directory knows: its name, the held
  catalog's seq/hash/etag/source/issued_at/expires_at and the crawl state
  (last_seen, last_attempt, failures, next_try).
- ``mirrors``: the held catalog's raw bytes (byte-identical, for
  ``/.well-known/pasar/mirror/<store>/catalog.json``), apart from ``stores``
  so that updating the crawl state never rewrites a multi-megabyte row.
- ``listings``: the indexed listings; ``tags`` and ``ships_to`` are
  ``"\\n"``-delimited (``"\\na\\nb\\n"``) so that one tag or region is found with
  ``instr``; ``listed_at`` = min(created_at, first indexed): a merchant cannot
  pin a listing on top of "newest" with a future date.
- ``listings_fts``: FTS5 over title, description, category, tags, with
  ``listings`` as external content kept in sync by triggers (a store's
  re-index touches only the rows that changed); unicode61 with
  ``remove_diacritics 2`` (non-English text, "creme" finds "crème"),
  prefix indexes for 2 and 3 characters, and bm25 weights as the table's
  ``rank`` (title 10, description 2, category 4, tags 5) so that
  ``ORDER BY rank LIMIT n`` is sorted inside FTS5 and snippet() runs only
  on the rows returned.
- ``thumbs``: lazily fetched thumbnails, capped each and in total.
- ``blocks``, ``reports``, ``subscriptions``: moderation.
- ``reviews`` (migration 2): buyers' signed reviews, one per signer (the buyer's
  per-order key; a higher seq replaces), from held catalogs (``in_catalog``)
  and from gossip (``gossip_at``: when gossip first brought it), with the
  result of the escrow outpoint's chain check (``chain``: "checked",
  "unchecked" or "failed: ..."; ``checked_at`` NULL = not tried yet).
"""

from __future__ import annotations

from .sqlite_schema import Migration

RANK = "bm25(10.0, 2.0, 4.0, 5.0)"  # the rank configured below (bare-FTS5 bench uses it too)

_V1 = """
CREATE TABLE stores (
    onion TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    seq INTEGER,
    hash TEXT,
    etag TEXT,
    source TEXT CHECK (source IN ('direct', 'mirror')),
    as_of INTEGER,
    expires_at INTEGER,
    listings INTEGER NOT NULL DEFAULT 0,
    added_at INTEGER NOT NULL,
    last_seen INTEGER,
    last_attempt INTEGER,
    failures INTEGER NOT NULL DEFAULT 0,
    next_try INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX stores_expires ON stores (expires_at);
CREATE INDEX stores_name ON stores (name COLLATE NOCASE, onion);

CREATE TABLE mirrors (
    store TEXT PRIMARY KEY,
    held_at INTEGER NOT NULL,
    size INTEGER NOT NULL,
    raw BLOB NOT NULL
);
CREATE INDEX mirrors_held_at ON mirrors (held_at);

CREATE TABLE listings (
    rowid INTEGER PRIMARY KEY,
    store TEXT NOT NULL,
    id TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    category TEXT NOT NULL,
    tags TEXT NOT NULL,
    price_sat INTEGER NOT NULL,
    ships_to TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    listed_at INTEGER NOT NULL,
    thumb TEXT,
    UNIQUE (store, id)
);
CREATE INDEX listings_listed ON listings (listed_at);
CREATE INDEX listings_category ON listings (category);

CREATE VIRTUAL TABLE listings_fts USING fts5(
    title, description, category, tags,
    content='listings', content_rowid='rowid',
    tokenize='unicode61 remove_diacritics 2', prefix='2 3'
);
INSERT INTO listings_fts (listings_fts, rank) VALUES ('rank', 'bm25(10.0, 2.0, 4.0, 5.0)');

CREATE TRIGGER listings_ai AFTER INSERT ON listings BEGIN
    INSERT INTO listings_fts (rowid, title, description, category, tags)
    VALUES (new.rowid, new.title, new.description, new.category, new.tags);
END;
CREATE TRIGGER listings_ad AFTER DELETE ON listings BEGIN
    INSERT INTO listings_fts (listings_fts, rowid, title, description, category, tags)
    VALUES ('delete', old.rowid, old.title, old.description, old.category, old.tags);
END;
CREATE TRIGGER listings_au AFTER UPDATE OF title, description, category, tags ON listings BEGIN
    INSERT INTO listings_fts (listings_fts, rowid, title, description, category, tags)
    VALUES ('delete', old.rowid, old.title, old.description, old.category, old.tags);
    INSERT INTO listings_fts (rowid, title, description, category, tags)
    VALUES (new.rowid, new.title, new.description, new.category, new.tags);
END;

CREATE TABLE thumbs (
    store TEXT NOT NULL,
    image_id TEXT NOT NULL,
    fetched_at INTEGER NOT NULL,
    size INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (store, image_id)
);
CREATE INDEX thumbs_fetched ON thumbs (fetched_at);

CREATE TABLE blocks (
    kind TEXT NOT NULL CHECK (kind IN ('store', 'tag')),
    value TEXT NOT NULL,
    source TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    PRIMARY KEY (kind, value, source)
) WITHOUT ROWID;
CREATE INDEX blocks_source ON blocks (source);

CREATE TABLE reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    store TEXT NOT NULL,
    listing TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE subscriptions (
    onion TEXT PRIMARY KEY,
    added_at INTEGER NOT NULL,
    seq INTEGER,
    fetched_at INTEGER
) WITHOUT ROWID;
"""

_V2 = """
CREATE TABLE reviews (
    signer TEXT PRIMARY KEY,
    store TEXT NOT NULL,
    seq INTEGER NOT NULL,
    order_id TEXT NOT NULL,
    listing TEXT NOT NULL,
    rating INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    text TEXT NOT NULL,
    outpoint TEXT NOT NULL,
    block TEXT NOT NULL,
    address TEXT NOT NULL,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    raw BLOB NOT NULL,
    in_catalog INTEGER NOT NULL DEFAULT 0,
    gossip_at INTEGER,
    chain TEXT NOT NULL DEFAULT 'unchecked',
    checked_at INTEGER
) WITHOUT ROWID;
CREATE INDEX reviews_store ON reviews (store, issued_at);
CREATE INDEX reviews_expiry ON reviews (expires_at);
CREATE INDEX reviews_checked ON reviews (checked_at);
CREATE INDEX reviews_order ON reviews (store, order_id);
"""

MIGRATIONS: tuple[Migration, ...] = (Migration(1, "directory", _V1), Migration(2, "reviews", _V2))
