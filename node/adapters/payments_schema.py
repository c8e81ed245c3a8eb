"""Schema of ``orders.sqlite``: orders and the stock they hold.

SQL text only; the queries live in ``node/payments/order_store.py`` and run
through the ``ports.Database`` port. A released migration is never edited.
Orders confirmed to a buyer must not come undone: the file is opened with
``synchronous=FULL`` (one fsync per commit).

- ``orders``: one row per order. ``record`` is the whole order as canonical
  JSON (``node/payments/codec.py``; its history, messages and payouts are in
  it); the other columns are copies for the queries (by state, by token, the
  sales chart). ``stock_held`` is 1 while the order's units count against its
  stock row, 0 once released (expired, or declined/refunded/claimed before it
  shipped): releasing twice
  changes nothing.
- ``stock``: units committed by orders, per (store, listing, sku) with ``""``
  for a listing without variants. The catalog keeps the merchant's inventory;
  available = inventory - committed. ``base_inventory`` is the merchant's
  figure for that sku when the epoch began (NULL = unlimited): an edit of the
  listing that keeps it (a typo in the title) keeps the committed units; an
  order priced from a listing with another figure starts a new ``epoch`` (the
  merchant's new count is the truth from then on) whose ``committed`` starts
  at the units of the orders still holding stock and not shipped (awaiting
  payment, funded, confirmed, accepted); their ``orders.stock_epoch`` moves to
  the new epoch in the same transaction (the column is the truth, the
  record's ``stock_epoch`` is the epoch at checkout).
  ``seen_updated_at`` is the newest listing ``updated_at`` an order of the row
  was priced from: an order priced from an older listing with another figure
  is refused (a stale page must not undo the merchant's newer count). An order
  remembers its epoch; its release decrements ``committed`` only in that
  epoch, never below 0.
"""

from __future__ import annotations

from pathlib import Path

from .sqlite import SQLiteDatabase
from .sqlite_schema import Migration

FILE_NAME = "orders.sqlite"

_V1 = """
CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    store TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    amount_sat INTEGER NOT NULL CHECK (amount_sat >= 0),
    listing_id TEXT NOT NULL,
    sku TEXT NOT NULL,
    qty INTEGER NOT NULL CHECK (qty > 0),
    stock_epoch INTEGER NOT NULL,
    stock_held INTEGER NOT NULL DEFAULT 1 CHECK (stock_held IN (0, 1)),
    record TEXT NOT NULL
) STRICT;
CREATE INDEX orders_store_state ON orders (store, state);
CREATE INDEX orders_state ON orders (state);
CREATE INDEX orders_store_created ON orders (store, created_at);

CREATE TABLE stock (
    store TEXT NOT NULL,
    listing_id TEXT NOT NULL,
    sku TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    base_inventory INTEGER,
    seen_updated_at INTEGER NOT NULL,
    committed INTEGER NOT NULL CHECK (committed >= 0),
    PRIMARY KEY (store, listing_id, sku)
) STRICT, WITHOUT ROWID;
"""

MIGRATIONS: tuple[Migration, ...] = (Migration(1, "orders and stock", _V1),)


def order_database(path: Path) -> SQLiteDatabase:
    """The orders database at ``path`` (not opened yet): durable commits (``synchronous=FULL``)."""
    return SQLiteDatabase(path, MIGRATIONS, synchronous="FULL")


async def open_order_db(path: Path) -> SQLiteDatabase:
    """The orders database at ``path``, created or upgraded and opened; the caller closes it."""
    db = order_database(path)
    await db.open()
    return db
