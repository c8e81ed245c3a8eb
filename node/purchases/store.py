"""Purchases in ``purchases.sqlite`` (schema: ``node/adapters/purchases_schema.py``).

Each purchase is one row holding the whole record as canonical JSON; every
change is a read-modify-write in one write transaction (``update``), so two
messages applied at once never lose each other's change.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from ..core.errors import BadRequest, Conflict, NotFound, StorageError
from ..core.ports import Database, SqlConnection, SqlRow
from ..payments import codec
from .models import Purchase

Change = Callable[[Purchase], Purchase]


def _decode(row: SqlRow) -> Purchase:
    try:
        return codec.from_plain(Purchase, json.loads(row["record"]), "purchase")
    except (BadRequest, ValueError) as exc:
        message = exc.message if isinstance(exc, BadRequest) else str(exc)
        raise StorageError(
            f"purchase {row['id']} in purchases.sqlite is damaged ({message}): restore the file from a backup"
        ) from exc


def _row(p: Purchase) -> tuple[object, ...]:
    return (p.id, p.store, p.state, int(p.final), p.created_at, p.updated_at, codec.canonical(codec.to_plain(p)))


class PurchaseStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, purchase: Purchase) -> Purchase:
        def write(conn: SqlConnection) -> Purchase:
            if conn.execute("SELECT 1 FROM purchases WHERE id = ?", (purchase.id,)).fetchone() is not None:
                raise Conflict(f"a purchase {purchase.id} exists already")
            conn.execute("INSERT INTO purchases VALUES (?, ?, ?, ?, ?, ?, ?)", _row(purchase))
            return purchase

        return await self._db.execute_write_fn(write)

    async def get(self, purchase_id: str) -> Purchase:
        rows = await self._db.execute("SELECT id, record FROM purchases WHERE id = ?", (purchase_id,))
        if not rows:
            raise NotFound(f"no purchase {purchase_id}: see pasar purchases list")
        return _decode(rows[0])

    async def find(self, purchase_id: str) -> Purchase | None:
        rows = await self._db.execute("SELECT id, record FROM purchases WHERE id = ?", (purchase_id,))
        return _decode(rows[0]) if rows else None

    async def page(self, *, limit: int = 100, offset: int = 0) -> list[Purchase]:
        rows = await self._db.execute(
            "SELECT id, record FROM purchases ORDER BY created_at DESC, id LIMIT ? OFFSET ?", (limit, offset)
        )
        return [_decode(r) for r in rows]

    async def open(self) -> list[Purchase]:
        """Every purchase not in a final state, oldest first."""
        rows = await self._db.execute("SELECT id, record FROM purchases WHERE final = 0 ORDER BY created_at, id")
        return [_decode(r) for r in rows]

    async def update(self, purchase_id: str, change: Change) -> Purchase:
        """``change`` applied to the stored purchase in one write transaction; the stored result.

        ``change`` may raise (nothing is written then); returning the purchase unchanged writes nothing.
        """

        def write(conn: SqlConnection) -> Purchase:
            row = conn.execute("SELECT id, record FROM purchases WHERE id = ?", (purchase_id,)).fetchone()
            if row is None:
                raise NotFound(f"no purchase {purchase_id}: see pasar purchases list")
            before = _decode(row)
            after = change(before)
            if after != before:
                conn.execute(
                    "UPDATE purchases SET store = ?, state = ?, final = ?, created_at = ?, updated_at = ?, "
                    "record = ? WHERE id = ?",
                    (*_row(after)[1:], purchase_id),
                )
            return after

        return await self._db.execute_write_fn(write)
