"""Schema of the directory on PostgreSQL (``directory_dsn``): the tables of ``directory_schema.py``, PG-typed.

Same tables, columns and meaning as the SQLite file, so the queries of
``node/discovery/directory*.py`` run on both; what differs:

- Full-text search: ``listings.fts`` is a stored ``tsvector`` generated from
  the text columns (weights: title A, tags B, category C, description D;
  ``ts_rank`` gets {D, C, B, A} = {0.2, 0.4, 0.5, 1.0}, the ratios of the
  FTS5 bm25 weights 10/2/4/5), with a GIN index. The text search
  configuration ``pasar_text`` is ``simple`` (lower case, no stemming, no
  stop words: as FTS5's unicode61) behind ``unaccent`` ("creme" finds
  "crème", as ``remove_diacritics 2``), fed through ``translate`` (ASCII
  punctuation -> spaces) so that words are cut where unicode61 cuts them; the
  parser's view of other characters follows the database's ``LC_CTYPE``: create
  it with a UTF-8 locale (``C.UTF-8``). ``unaccent`` is a trusted extension:
  the database owner may create it (Debian ships it with ``postgresql``).
- ``rowid`` is an ordinary identity column where the SQLite queries use it
  (listings, mirrors, thumbs); ``instr(a, b)`` is a SQL function
  (``strpos``) so the same ``instr(tags, ?) > 0`` runs on both.
- Integers are ``BIGINT``, blobs ``BYTEA``; text that is sorted (store
  names, categories) uses the ``"C"`` collation, byte order as in SQLite,
  whatever the database's locale.

Migrations are tracked in ``pasar_schema`` (one row per component), applied
under an advisory lock so several frontends starting at once migrate once.
"""

from __future__ import annotations

import string

from .pg import PgMigration

COMPONENT = "directory"
TEXT_CONFIG = "pasar_text"
RANK_WEIGHTS = "'{0.2, 0.4, 0.5, 1.0}'"  # D description, C category, B tags, A title

# ASCII punctuation -> spaces before the parser, so PostgreSQL cuts words where FTS5's unicode61 does
# ("1.5", "shop.example.com", "a@b.c", "t-shirt", "/usr/bin" are words side by side, not one token).
# Inline translate() rather than a SQL function: the generated column then costs no function call per row.
_PUNCT = "'" + string.punctuation.replace("'", "''") + "'"
_SPACES = "'" + " " * len(string.punctuation) + "'"

_V1 = r"""
CREATE EXTENSION IF NOT EXISTS unaccent;
CREATE TEXT SEARCH CONFIGURATION pasar_text (COPY = simple);
ALTER TEXT SEARCH CONFIGURATION pasar_text
    ALTER MAPPING FOR asciiword, asciihword, hword_asciipart, word, hword, hword_part, numword, numhword
    WITH unaccent, simple;
CREATE FUNCTION instr(haystack TEXT, needle TEXT) RETURNS INTEGER
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS 'SELECT strpos(haystack, needle)';

CREATE TABLE stores (
    onion TEXT COLLATE "C" PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    seq BIGINT,
    hash TEXT,
    etag TEXT,
    source TEXT CHECK (source IN ('direct', 'mirror')),
    as_of BIGINT,
    expires_at BIGINT,
    listings BIGINT NOT NULL DEFAULT 0,
    added_at BIGINT NOT NULL,
    last_seen BIGINT,
    last_attempt BIGINT,
    failures BIGINT NOT NULL DEFAULT 0,
    next_try BIGINT NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX stores_expires ON stores (expires_at);
CREATE INDEX stores_name ON stores (lower(name), onion);

CREATE TABLE mirrors (
    rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    store TEXT COLLATE "C" PRIMARY KEY,
    held_at BIGINT NOT NULL,
    size BIGINT NOT NULL,
    raw BYTEA NOT NULL
);
CREATE INDEX mirrors_held_at ON mirrors (held_at);

CREATE TABLE listings (
    rowid BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    store TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    category TEXT COLLATE "C" NOT NULL,
    tags TEXT NOT NULL,
    price_sat BIGINT NOT NULL,
    ships_to TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    listed_at BIGINT NOT NULL,
    thumb TEXT,
    fts tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('pasar_text', translate(title, {PUNCT}, {SPACES})), 'A')
        || setweight(to_tsvector('pasar_text', translate(tags, {PUNCT}, {SPACES})), 'B')
        || setweight(to_tsvector('pasar_text', translate(category, {PUNCT}, {SPACES})), 'C')
        || setweight(to_tsvector('pasar_text', translate(description, {PUNCT}, {SPACES})), 'D')
    ) STORED,
    UNIQUE (store, id)
);
CREATE INDEX listings_listed ON listings (listed_at);
CREATE INDEX listings_category ON listings (category);
CREATE INDEX listings_fts ON listings USING gin (fts);

CREATE TABLE thumbs (
    rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    store TEXT COLLATE "C" NOT NULL,
    image_id TEXT COLLATE "C" NOT NULL,
    fetched_at BIGINT NOT NULL,
    size BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (store, image_id)
);
CREATE INDEX thumbs_fetched ON thumbs (fetched_at);

CREATE TABLE blocks (
    kind TEXT COLLATE "C" NOT NULL CHECK (kind IN ('store', 'tag')),
    value TEXT COLLATE "C" NOT NULL,
    source TEXT COLLATE "C" NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    PRIMARY KEY (kind, value, source)
);
CREATE INDEX blocks_source ON blocks (source);

CREATE TABLE reports (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    store TEXT NOT NULL,
    listing TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE subscriptions (
    onion TEXT COLLATE "C" PRIMARY KEY,
    added_at BIGINT NOT NULL,
    seq BIGINT,
    fetched_at BIGINT
);

CREATE TABLE reviews (
    signer TEXT COLLATE "C" PRIMARY KEY,
    store TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    order_id TEXT COLLATE "C" NOT NULL,
    listing TEXT NOT NULL,
    rating INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    text TEXT NOT NULL,
    outpoint TEXT NOT NULL,
    block TEXT NOT NULL,
    address TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    raw BYTEA NOT NULL,
    in_catalog INTEGER NOT NULL DEFAULT 0,
    gossip_at BIGINT,
    chain TEXT COLLATE "C" NOT NULL DEFAULT 'unchecked',
    checked_at BIGINT
);
CREATE INDEX reviews_store ON reviews (store, issued_at);
CREATE INDEX reviews_expiry ON reviews (expires_at);
CREATE INDEX reviews_checked ON reviews (checked_at);
CREATE INDEX reviews_order ON reviews (store, order_id);
"""

MIGRATIONS: tuple[PgMigration, ...] = (
    PgMigration(1, "directory", _V1.replace("{PUNCT}", _PUNCT).replace("{SPACES}", _SPACES)),
)
