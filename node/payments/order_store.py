"""Orders and the stock they hold, in ``orders.sqlite`` (schema: ``node/adapters/payments_schema.py``).

Every write is one transaction on the database's single writer (one fsync,
``synchronous=FULL``): the stock check, the stock change and the order row
commit together or not at all, and no other write runs in between, so
concurrent checkouts cannot oversell. Orders are stored whole as canonical
JSON (``codec.py``) beside the columns the queries need.

Stock: the catalog keeps the merchant's inventory and is not rewritten per
sale (a big store's catalog is megabytes, signed). Available = inventory -
units committed by orders in the current epoch of (store, listing, sku). An
epoch begins with the merchant's inventory figure for that sku (NULL =
unlimited) and lasts while the listing keeps that figure: an edit that leaves
it alone (a typo in the title, a new price) keeps the committed units; an
order priced from a listing whose figure differs starts a new epoch (the
merchant's new count is the truth from then on) that carries over the units of
the orders still holding stock and not shipped (awaiting payment, funded,
confirmed, accepted): the new count is what is on the shelf, and those units
are still to leave it. Their ``stock_epoch`` column moves to the new epoch in
the same transaction, so their release decrements the new epoch (the column,
not the record's ``stock_epoch``, is the truth: the record keeps the epoch at
checkout). An
order priced from a listing older than the newest one an order of this row
was priced from, with another figure, is refused (the page was stale: its
count is no longer the merchant's). An order remembers its epoch; giving its
units back (expired, or refunded before it shipped) decrements ``committed``
only while that epoch is current, never below 0, and once.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Callable, Mapping, Sequence

from ..core.errors import BadRequest, Conflict, NotFound, StorageError, Unavailable, ValidationError
from ..core.models import Listing, PublicListing
from ..core.ports import Database, SqlConnection, SqlRow
from . import codec
from .models import Order, OrderState
from .orders import gives_back_stock, label
from .pricing import Reservation, available, inventories

OrderList = list[Order]
DayCounts = list[tuple[str, int, int]]  # (UTC date, orders, sats)
_OPEN = tuple(s.value for s in OrderState if not s.final)
_UNPAID = (OrderState.AWAITING_PAYMENT.value, OrderState.EXPIRED.value)
_NOT_SHIPPED = tuple(
    s.value for s in (OrderState.AWAITING_PAYMENT, OrderState.FUNDED, OrderState.CONFIRMED, OrderState.ACCEPTED)
)
DAY = 86_400


def _sku_key(sku: str | None) -> str:
    return "" if sku is None else sku


def _decode(row: SqlRow) -> Order:
    try:
        return codec.order_from_json(row["record"])
    except BadRequest as exc:
        raise StorageError(
            f"an order in orders.sqlite is damaged ({exc.message}): restore the file from a backup"
        ) from exc


class _Decoded:
    """Orders decoded before, by their exact record text: the watcher reads every open order each poll.

    Shared by reader threads: a race decodes twice, never returns a wrong order (the text is the key).
    """

    def __init__(self, capacity: int = 5_000) -> None:
        self._capacity = capacity
        self._orders: dict[str, tuple[str, Order]] = {}

    def __call__(self, row: SqlRow) -> Order:
        text = row["record"]
        if not isinstance(text, str):
            return _decode(row)
        order_id = row["id"]
        held = self._orders.get(order_id)
        if held is not None and held[0] == text:
            return held[1]
        order = _decode(row)
        if len(self._orders) >= self._capacity:
            self._orders.clear()
        self._orders[order_id] = (text, order)
        return order


# -- write functions (run on the writer thread, one transaction each) ----------
def _reserve(conn: SqlConnection, store: str, res: Reservation) -> int:
    """Commit ``res.qty`` units in the current epoch (a new one if the merchant's count changed); the epoch."""
    key = (store, res.listing_id, _sku_key(res.sku))
    row = conn.execute(
        "SELECT epoch, base_inventory, seen_updated_at, committed FROM stock "
        "WHERE store = ? AND listing_id = ? AND sku = ?",
        key,
    ).fetchone()
    seen = res.listing_updated_at
    if row is None:
        epoch, committed = 1, 0
    elif res.inventory == row["base_inventory"]:
        epoch, committed, seen = row["epoch"], row["committed"], max(seen, row["seen_updated_at"])
    elif res.listing_updated_at < row["seen_updated_at"]:
        raise Conflict("the listing changed while you were ordering: reload its page and order again")
    else:
        epoch, committed = row["epoch"] + 1, _carry_over(conn, key, row["epoch"] + 1)
    if res.inventory is not None and committed + res.qty > res.inventory:
        left = max(0, res.inventory - committed)
        raise Conflict("sold out" if left == 0 else f"only {left} left")
    conn.execute(
        "INSERT INTO stock (store, listing_id, sku, epoch, base_inventory, seen_updated_at, committed) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (store, listing_id, sku) DO UPDATE SET epoch = excluded.epoch, "
        "base_inventory = excluded.base_inventory, seen_updated_at = excluded.seen_updated_at, "
        "committed = excluded.committed",
        (*key, epoch, res.inventory, seen, committed + res.qty),
    )
    return int(epoch)


_HOLDING_UNSHIPPED = (
    "store = ? AND listing_id = ? AND sku = ? AND stock_held = 1 AND state IN ("
    + ", ".join("?" * len(_NOT_SHIPPED))
    + ")"
)


def _unshipped(conn: SqlConnection, key: tuple[str, str, str]) -> int:
    """Units held by the row's orders that have not shipped (what a new epoch carries over)."""
    sql = f"SELECT coalesce(sum(qty), 0) FROM orders WHERE {_HOLDING_UNSHIPPED}"  # noqa: S608 - only "?"s
    return int(conn.execute(sql, (*key, *_NOT_SHIPPED)).fetchone()[0])


def _carry_over(conn: SqlConnection, key: tuple[str, str, str], epoch: int) -> int:
    """Units of the row's orders that hold stock and have not shipped, moved into ``epoch``; their sum."""
    held = _unshipped(conn, key)
    sql = f"UPDATE orders SET stock_epoch = ? WHERE {_HOLDING_UNSHIPPED}"  # noqa: S608 - only "?"s
    conn.execute(sql, (epoch, *key, *_NOT_SHIPPED))
    return held


def _unpaid_cap(conn: SqlConnection, store: str, max_unpaid: int | None) -> None:
    if max_unpaid is None:
        return
    row = conn.execute(
        "SELECT count(*) AS n FROM orders WHERE store = ? AND state = ?", (store, OrderState.AWAITING_PAYMENT.value)
    ).fetchone()
    if int(row["n"]) >= max_unpaid:
        raise Unavailable(
            "this store has too many unpaid orders right now; please try again in a while "
            "(unpaid orders expire after the payment window)"
        )


def _insert(order: Order, res: Reservation, max_unpaid: int | None) -> Callable[[SqlConnection], Order]:
    item = order.item
    same_item = (res.listing_id, res.sku, res.qty) == (item.listing_id, item.sku, item.qty)
    if not same_item or res.store not in ("", order.store):
        raise ValueError("the reservation does not match the order's item")  # a bug in the caller

    def run(conn: SqlConnection) -> Order:
        _unpaid_cap(conn, order.store, max_unpaid)
        epoch = _reserve(conn, order.store, res)
        stored = dataclasses.replace(order, stock_epoch=epoch)
        conn.execute(
            "INSERT INTO orders (id, store, token_hash, state, created_at, updated_at, amount_sat, listing_id, sku, "
            "qty, stock_epoch, stock_held, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
            (
                *(stored.id, stored.store, stored.token_hash, stored.state.value, stored.created_at),
                *(stored.updated_at, stored.amount_sat, item.listing_id, _sku_key(item.sku), item.qty, epoch),
                codec.order_to_json(stored),
            ),
        )
        return stored

    return run


def _release(conn: SqlConnection, order_id: str) -> bool:
    """Give the order's units back if it still holds them; whether anything changed."""
    row = conn.execute(
        "SELECT store, listing_id, sku, qty, stock_epoch, stock_held FROM orders WHERE id = ?", (order_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no order {order_id}")
    if not row["stock_held"]:
        return False
    conn.execute("UPDATE orders SET stock_held = 0 WHERE id = ?", (order_id,))
    conn.execute(
        "UPDATE stock SET committed = max(0, committed - ?) WHERE store = ? AND listing_id = ? AND sku = ? "
        "AND epoch = ?",
        (row["qty"], row["store"], row["listing_id"], row["sku"], row["stock_epoch"]),
    )
    return True


def _update(order: Order, expect: OrderState | None, before: Order | None) -> Callable[[SqlConnection], Order]:
    def run(conn: SqlConnection) -> Order:
        row = conn.execute("SELECT state, record FROM orders WHERE id = ?", (order.id,)).fetchone()
        if row is None:
            raise NotFound(f"no order {order.id}")
        state = OrderState(row["state"])
        if (expect is not None and state is not expect) or (
            before is not None and row["record"] != codec.order_to_json(before)
        ):
            raise Conflict(f"order {order.id} changed meanwhile (it is now {label(state)}): reload it and try again")
        conn.execute(
            "UPDATE orders SET state = ?, updated_at = ?, amount_sat = ?, record = ? WHERE id = ?",
            (order.state.value, order.updated_at, order.amount_sat, codec.order_to_json(order), order.id),
        )
        if gives_back_stock(order):
            _release(conn, order.id)
        return order

    return run


def _days(now: int, days: int) -> list[str]:
    today = datetime.datetime.fromtimestamp(now, datetime.UTC).date()
    return [(today - datetime.timedelta(days=n)).isoformat() for n in range(days - 1, -1, -1)]


class OrderStore:
    """The orders of every store on this node (the vendor side's only copy of them)."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        self._decoded = _Decoded()

    # -- writes --------------------------------------------------------------
    async def insert(self, order: Order, reserve: Reservation, *, max_unpaid: int | None = None) -> Order:
        """Store a new order and commit its units, atomically; ``Conflict("only N left")`` when short, and
        ``Unavailable`` when the store already holds ``max_unpaid`` unpaid orders (counted in the same
        transaction, so concurrent checkouts cannot pass the cap together).

        Returns the order as stored (with its ``stock_epoch``).
        """
        return await self._db.execute_write_fn(_insert(order, reserve, max_unpaid))

    async def update(
        self, order: Order, *, expect_state: OrderState | None = None, expect: Order | None = None
    ) -> Order:
        """Save ``order``; ``Conflict`` if the stored one changed meanwhile.

        ``expect_state``: only if the stored order is still in that state.
        ``expect``: only if the stored order is exactly ``expect`` (the order
        the change was made from): no concurrent change is lost, even one that
        kept the state (a message, a funding update).

        Reaching a state that gives the units back (expired, refunded before it
        shipped) releases them in the same transaction.
        """
        return await self._db.execute_write_fn(_update(order, expect_state, expect))

    async def release_stock(self, order: Order) -> None:
        """Give ``order``'s units back (idempotent; only while its stock epoch is current)."""
        await self._db.execute_write_fn(lambda conn: _release(conn, order.id))

    # -- reads ---------------------------------------------------------------
    async def _orders(self, sql: str, params: tuple[object, ...]) -> OrderList:
        """The orders a query selects, decoded on the reader thread (not on the event loop)."""
        decode = self._decoded
        return await self._db.execute_fn(lambda conn: [decode(r) for r in conn.execute(sql, params).fetchall()])

    async def get(self, order_id: str) -> Order:
        found = await self._orders("SELECT id, record FROM orders WHERE id = ?", (order_id,))
        if not found:
            raise NotFound(f"no order {order_id}: check the order id")
        return found[0]

    async def by_token(self, store: str, token_hash: str) -> Order:
        found = await self._orders(
            "SELECT id, record FROM orders WHERE token_hash = ? AND store = ?", (token_hash, store)
        )
        if not found:
            raise NotFound("no such order: check the link you were given at checkout")
        return found[0]

    async def open_orders(self) -> OrderList:
        """Every order not in a final state, oldest first (what the watcher polls)."""
        marks = ", ".join("?" * len(_OPEN))
        return await self._orders(
            f"SELECT id, record FROM orders WHERE state IN ({marks}) ORDER BY created_at, id",  # noqa: S608 - only "?"s
            _OPEN,
        )

    async def list(
        self, store: str | None = None, state: OrderState | str | None = None, limit: int = 100, offset: int = 0
    ) -> OrderList:
        """Orders newest first, of one store and/or in one state."""
        where, params = _filters(store, state)
        return await self._orders(
            f"SELECT id, record FROM orders{where} ORDER BY created_at DESC, id LIMIT ? OFFSET ?",  # noqa: S608
            (*params, max(0, limit), max(0, offset)),
        )

    async def count(self, store: str | None = None, state: OrderState | str | None = None) -> int:
        where, params = _filters(store, state)
        rows = await self._db.execute(f"SELECT count(*) FROM orders{where}", params)  # noqa: S608
        return int(rows[0][0])

    async def committed(
        self, store: str, listing_id: str, *, inventory: Mapping[str | None, int | None] | None = None
    ) -> dict[str | None, int]:
        """Units committed per sku (None: no variants) in the current epoch.

        ``inventory``: the listing's figure per sku (``pricing.inventories``);
        an epoch that began with another figure counts only the units the next
        epoch will carry over (orders holding stock, not shipped) and a sku the
        listing no longer has is left out. Without it every epoch counts.
        """

        def read(conn: SqlConnection) -> dict[str | None, int]:
            rows = conn.execute(
                "SELECT sku, base_inventory, committed FROM stock WHERE store = ? AND listing_id = ?",
                (store, listing_id),
            ).fetchall()
            held: dict[str | None, int] = {}
            for r in rows:
                sku = r["sku"] or None
                if inventory is None or (sku in inventory and inventory[sku] == r["base_inventory"]):
                    held[sku] = int(r["committed"])
                elif sku in inventory:
                    held[sku] = _unshipped(conn, (store, listing_id, r["sku"]))
            return held

        return await self._db.execute_fn(read)

    async def available(self, store: str, listing: Listing | PublicListing) -> dict[str | None, int | None]:
        """Units a buyer may still order per sku (None = unlimited), open orders counted.

        ``listing``: the stored listing or its published view (the catalog snapshot's, for pages).
        """
        held = await self.committed(store, listing["id"], inventory=inventories(listing))
        return available(listing, held)

    async def counts_by_day(self, store: str | None, days: int) -> DayCounts:
        """(UTC date, paid orders, their sats) for each of the last ``days`` days, oldest first, zeros included.

        Orders count on the day they were placed, once paid (not awaiting payment, not expired).
        """
        days = max(1, min(days, 3660))
        now = int(self._clock())
        wanted = _days(now, days)
        since = int(datetime.datetime.fromisoformat(wanted[0]).replace(tzinfo=datetime.UTC).timestamp())
        where = "created_at >= ? AND state NOT IN (?, ?)" + (" AND store = ?" if store is not None else "")
        params: Sequence[object] = (since, *_UNPAID, *((store,) if store is not None else ()))
        rows = await self._db.execute(
            "SELECT date(created_at, 'unixepoch') AS day, count(*) AS n, coalesce(sum(amount_sat), 0) AS sats "  # noqa: S608
            f"FROM orders WHERE {where} GROUP BY day",
            params,
        )
        found = {str(r["day"]): (int(r["n"]), int(r["sats"])) for r in rows}
        return [(day, *found.get(day, (0, 0))) for day in wanted]


def _filters(store: str | None, state: OrderState | str | None) -> tuple[str, tuple[object, ...]]:
    clauses: list[str] = []
    params: list[object] = []
    if store is not None:
        clauses.append("store = ?")
        params.append(store)
    if state is not None and state != "":
        try:
            params.append(OrderState(state).value)
        except ValueError as exc:
            names = ", ".join(s.value for s in OrderState)
            raise ValidationError({"state": f"one of {names}"}) from exc
        clauses.append("state = ?")
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)
