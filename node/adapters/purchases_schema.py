"""Schema of ``purchases.sqlite``: this node's purchases on other stores' nodes.

SQL text only; the queries live in ``node/purchases/store.py``. A released
migration is never edited. Purchases hold the per-order keys and what the
buyer paid: the file is opened with ``synchronous=FULL`` (one fsync per commit).

- ``purchases``: one row per purchase. ``record`` is the whole purchase as
  canonical JSON (``payments.codec``); ``store``, ``state``, ``final`` and the
  times are copies for the queries (newest first, the open ones).
"""

from __future__ import annotations

from pathlib import Path

from .sqlite import SQLiteDatabase
from .sqlite_schema import Migration

FILE_NAME = "purchases.sqlite"

_V1 = """
CREATE TABLE purchases (
    id TEXT PRIMARY KEY,
    store TEXT NOT NULL,
    state TEXT NOT NULL,
    final INTEGER NOT NULL CHECK (final IN (0, 1)),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    record TEXT NOT NULL
) STRICT;
CREATE INDEX purchases_created ON purchases (created_at);
CREATE INDEX purchases_open ON purchases (final, store);
"""

MIGRATIONS: tuple[Migration, ...] = (Migration(1, "purchases", _V1),)


def purchase_database(path: Path) -> SQLiteDatabase:
    """The purchases database at ``path`` (not opened yet): durable commits (``synchronous=FULL``)."""
    return SQLiteDatabase(path, MIGRATIONS, synchronous="FULL")


async def open_purchase_db(path: Path) -> SQLiteDatabase:
    """The purchases database at ``path``, created or upgraded and opened; the caller closes it."""
    db = purchase_database(path)
    await db.open()
    return db
