"""Schema of ``gossip.sqlite``: peers, held store announcements, own-announcement schedule.

SQL text only; the queries live in ``node/discovery/gossip_state.py`` and run
through the ``ports.Database`` port. A released migration is never edited.
"""

from __future__ import annotations

from .sqlite_schema import Migration

_V1 = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE peers (
    onion TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    added_at INTEGER NOT NULL,
    last_success INTEGER,
    last_attempt INTEGER,
    failures INTEGER NOT NULL DEFAULT 0,
    score REAL NOT NULL DEFAULT 0.5,
    next_try INTEGER NOT NULL DEFAULT 0,
    banned INTEGER NOT NULL DEFAULT 0,
    banned_until INTEGER NOT NULL DEFAULT 0,
    strikes INTEGER NOT NULL DEFAULT 0,
    pull_epoch TEXT,
    pull_after INTEGER NOT NULL DEFAULT 0,
    push_after INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE announcements (
    store TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    counter INTEGER NOT NULL UNIQUE,
    rank INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    origin TEXT,
    raw BLOB NOT NULL
) STRICT;
CREATE INDEX announcements_expiry ON announcements (expires_at);

CREATE TABLE own (
    store TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    raw BLOB NOT NULL,
    state TEXT NOT NULL,
    due_at INTEGER NOT NULL,
    stem_peer TEXT,
    attempts INTEGER NOT NULL DEFAULT 0
) STRICT;
"""

MIGRATIONS: tuple[Migration, ...] = (Migration(1, "gossip tables", _V1),)
