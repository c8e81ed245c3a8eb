"""Schema of ``messages.sqlite``: the order messages a node sends and receives (docs/protocol.md "Order messages").

SQL text only; the queries live in ``node/messaging/`` and run through the
``ports.Database`` port. A released migration is never edited. A message
the node acknowledged must never be lost and one it queued must be re-sent
after any crash: the file is opened with ``synchronous=FULL``.

- ``outbox``: one row per message this node signed, in the order it was
  queued. ``(order_id, sender, seq)`` is unique: the sender's per-order
  sequence has no gap and no repeat. ``raw`` is the signed envelope
  (canonical JSON) sent as it is on every attempt. ``delivery`` is queued |
  sent | delivered | failed (``reason`` says why), ``next_try`` the earliest
  time of the next attempt, ``attempts`` how many failed so far,
  ``last_error`` the last transport problem (shown, not a state).
- ``inbox``: one row per message received and verified, by id (a message
  received again is acknowledged again, never stored twice). ``applied`` is
  "" while it waits (for its turn, or after a transient failure of the
  feature applying it), "applied", or "rejected: <reason>".
- ``cursors``: per (order, sender), the last seq applied or rejected; the
  next to apply is ``applied_seq + 1``, and a message beyond it waits.
"""

from __future__ import annotations

from pathlib import Path

from .sqlite import SQLiteDatabase
from .sqlite_schema import Migration

FILE_NAME = "messages.sqlite"

_V1 = """
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    peer TEXT NOT NULL,
    kind TEXT NOT NULL,
    seq INTEGER NOT NULL CHECK (seq > 0),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    delivery TEXT NOT NULL CHECK (delivery IN ('queued', 'sent', 'delivered', 'failed')),
    reason TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_try INTEGER NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    raw BLOB NOT NULL,
    UNIQUE (order_id, sender, seq)
) STRICT;
CREATE INDEX outbox_waiting ON outbox (next_try) WHERE delivery IN ('queued', 'sent');
CREATE INDEX outbox_peer ON outbox (peer, order_id, seq);

CREATE TABLE inbox (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    kind TEXT NOT NULL,
    seq INTEGER NOT NULL CHECK (seq > 0),
    received_at INTEGER NOT NULL,
    applied TEXT NOT NULL DEFAULT '',
    raw BLOB NOT NULL,
    UNIQUE (order_id, sender, seq)
) STRICT;
CREATE INDEX inbox_waiting ON inbox (order_id, sender) WHERE applied = '';
CREATE INDEX inbox_kind ON inbox (order_id, kind);

CREATE TABLE cursors (
    order_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    applied_seq INTEGER NOT NULL CHECK (applied_seq >= 0),
    PRIMARY KEY (order_id, sender)
) STRICT, WITHOUT ROWID;
"""

MIGRATIONS: tuple[Migration, ...] = (Migration(1, "outbox, inbox and apply cursors", _V1),)


def messages_database(path: Path) -> SQLiteDatabase:
    """The messages database at ``path`` (not opened yet): durable commits (``synchronous=FULL``)."""
    return SQLiteDatabase(path, MIGRATIONS, synchronous="FULL")


async def open_messages_db(path: Path) -> SQLiteDatabase:
    """The messages database at ``path``, created or upgraded and opened; the caller closes it."""
    db = messages_database(path)
    await db.open()
    return db
