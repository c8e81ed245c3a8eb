"""The order store on a real SQLite file: orders, stock epochs, compare-and-set, no oversell under concurrency."""

import asyncio
import dataclasses

import pytest

from node.adapters import payments_schema
from node.core.errors import Conflict, NotFound, Unavailable, ValidationError
from node.core.models import Sats
from node.market import listings as L
from node.payments import orders
from node.payments.models import Funding, HistoryEntry, Message, OrderState, Party
from node.payments.order_store import OrderStore
from node.payments.pricing import CheckoutForm, price
from tests.unit.order_helpers import STORE, T0, listing, moved, order, reservation

S = OrderState
DAY = 86_400


@pytest.fixture
async def db(tmp_path):
    db = await payments_schema.open_order_db(tmp_path / payments_schema.FILE_NAME)
    yield db
    await db.close()


@pytest.fixture
def now():
    return [T0 + 3 * DAY]


@pytest.fixture
def store(db, now):
    return OrderStore(db, clock=lambda: now[0])


async def test_durable_file_and_schema(db):
    assert db.schema_version == len(payments_schema.MIGRATIONS)
    assert await db.execute_write_fn(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == 2  # FULL


async def test_insert_then_read_back_by_id_and_token(store):
    o = order()
    stored = await store.insert(o, reservation(o))
    assert stored.stock_epoch == 1
    assert await store.get(o.id) == stored
    assert await store.by_token(STORE, o.token_hash) == stored
    with pytest.raises(NotFound, match="check the link"):
        await store.by_token("c" * 56, o.token_hash)  # another store's page never finds it
    with pytest.raises(NotFound):
        await store.get("0" * 16)


async def test_a_reopened_file_has_everything(tmp_path):
    path = tmp_path / "orders.sqlite"
    db = await payments_schema.open_order_db(path)
    o = order()
    stored = await OrderStore(db).insert(o, reservation(o))
    await db.close()
    db = await payments_schema.open_order_db(path)
    try:
        assert await OrderStore(db).get(o.id) == stored
        assert await OrderStore(db).committed(STORE, o.item.listing_id) == {None: 1}
    finally:
        await db.close()


async def test_not_enough_stock_is_a_conflict_and_nothing_is_stored(store):
    first = order(qty=4)
    await store.insert(first, reservation(first))
    second = order(qty=2)
    with pytest.raises(Conflict, match="only 1 left"):
        await store.insert(second, reservation(second))
    with pytest.raises(NotFound):
        await store.get(second.id)
    assert await store.committed(STORE, "lst000000001") == {None: 4}
    last = order(qty=1)
    await store.insert(last, reservation(last))
    with pytest.raises(Conflict, match="sold out"):
        await store.insert(order(), reservation(order()))


async def test_the_unpaid_cap_is_counted_in_the_inserts_own_transaction(store):
    first, second, third = order(created_at=T0), order(created_at=T0 + 1), order(created_at=T0 + 2)
    stored = await store.insert(first, reservation(first), max_unpaid=2)
    await store.insert(second, reservation(second), max_unpaid=2)
    with pytest.raises(Unavailable, match="too many unpaid orders"):
        await store.insert(third, reservation(third), max_unpaid=2)
    assert [o.id for o in await store.list()] == [second.id, first.id]  # nothing stored, no unit taken
    assert (await store.committed(STORE, first.item.listing_id)) == {None: 2}
    await store.update(moved(stored, OrderState.FUNDED), expect=stored)  # paid: no longer counts
    await store.insert(third, reservation(third), max_unpaid=2)


async def test_unlimited_stock_counts_but_never_refuses(store):
    for _ in range(3):
        o = order(qty=5)
        await store.insert(o, reservation(o, inventory=None))
    assert await store.committed(STORE, "lst000000001") == {None: 15}


async def test_skus_are_counted_apart(store):
    for sku, qty in (("red", 2), ("blue", 1), ("red", 1)):
        o = order(sku=sku, qty=qty)
        await store.insert(o, reservation(o, inventory=3))
    assert await store.committed(STORE, "lst000000001") == {"red": 3, "blue": 1}
    o = order(sku="red")
    with pytest.raises(Conflict, match="sold out"):
        await store.insert(o, reservation(o, inventory=3))


async def test_concurrent_checkouts_never_oversell(store):
    async def checkout():
        o = order()
        try:
            await store.insert(o, reservation(o, inventory=7))
        except Conflict:
            return None
        return o.id

    ids = [i for i in await asyncio.gather(*(checkout() for _ in range(40))) if i]
    assert len(ids) == 7
    assert await store.committed(STORE, "lst000000001") == {None: 7}
    assert await store.count(STORE) == 7


async def checkout(store, lst, qty=1, sku=""):
    """An order priced from ``lst`` exactly as the storefront prices it, then inserted."""
    f = CheckoutForm(listing=lst["id"], sku=sku, qty=str(qty), shipping="post", ship_to="Street 1")
    item, res = price(lst, f, now=T0, store=STORE)
    placed = dataclasses.replace(order(sku=item.sku, qty=qty), item=item, amount_sat=item.total_sat)
    return await store.insert(placed, res)


async def test_a_title_only_edit_keeps_the_committed_units(store):
    first = await checkout(store, listing(updated_at=T0), qty=4)
    # The merchant fixes a typo: same count, so the 4 units sold before the edit still count.
    edited = listing(updated_at=T0 + 100, title="Wool socks, warm")
    assert await store.available(STORE, edited) == {None: 1}
    assert await store.available(STORE, L.public_view(edited)) == {None: 1}
    with pytest.raises(Conflict, match="only 1 left"):
        await checkout(store, edited, qty=2)
    last = await checkout(store, edited, qty=1)
    assert (first.stock_epoch, last.stock_epoch) == (1, 1)
    with pytest.raises(Conflict, match="sold out"):
        await checkout(store, edited)
    # A page still showing the listing before the edit has the same count: counted in the same epoch, not refused.
    with pytest.raises(Conflict, match="sold out"):
        await checkout(store, listing(updated_at=T0))
    assert await store.committed(STORE, "lst000000001") == {None: 5}
    assert await store.count(STORE) == 2


async def test_a_new_count_starts_a_new_epoch(store):
    old = await checkout(store, listing(updated_at=T0), qty=4)
    await store.update(moved(old, S.FULFILLED))  # shipped: its units have left the shelf
    # The merchant counts 3 left at T0 + 100: the 4 shipped before are already out of that number.
    recount = listing(updated_at=T0 + 100, inventory=3)
    assert await store.available(STORE, recount) == {None: 3}
    new = await checkout(store, recount, qty=3)
    assert (old.stock_epoch, new.stock_epoch) == (1, 2)
    assert await store.committed(STORE, "lst000000001") == {None: 3}
    with pytest.raises(Conflict, match="sold out"):
        await checkout(store, recount)
    # A page rendered from the listing before the recount is stale: refused, it cannot undo the merchant's count.
    with pytest.raises(Conflict, match="reload"):
        await checkout(store, listing(updated_at=T0))
    assert await store.committed(STORE, "lst000000001") == {None: 3}
    # Unlimited is a figure too: going unlimited starts an epoch that counts without refusing
    # (the 3 units of the unshipped order carried over).
    await checkout(store, listing(updated_at=T0 + 200, inventory=None), qty=7)
    assert await store.committed(STORE, "lst000000001") == {None: 10}


async def test_a_shipped_orders_release_after_a_count_change_leaves_the_new_epoch_alone(store):
    old = await checkout(store, listing(updated_at=T0), qty=2)
    await store.update(moved(old, S.FULFILLED))
    recount = listing(updated_at=T0 + 100, inventory=4)
    await checkout(store, recount, qty=1)
    await store.release_stock(old)  # its units belong to an epoch that is over
    assert await store.committed(STORE, "lst000000001") == {None: 1}
    assert await store.available(STORE, recount) == {None: 3}


async def test_a_restock_carries_over_the_units_of_open_orders(store, db):
    """Review finding 6: a new count used to start from 0, so units held by unshipped orders were sold twice."""
    held = await checkout(store, listing(updated_at=T0), qty=2)
    shipped = await checkout(store, listing(updated_at=T0), qty=1)
    await store.update(moved(shipped, S.FULFILLED))
    recount = listing(updated_at=T0 + 100, inventory=3)  # the shelf: 2 of them still to leave with ``held``
    assert await store.available(STORE, recount) == {None: 1}
    new = await checkout(store, recount, qty=1)
    assert new.stock_epoch == 2
    with pytest.raises(Conflict, match="sold out"):
        await checkout(store, recount)
    epochs = await db.execute("SELECT id, stock_epoch FROM orders ORDER BY id")
    assert {r["id"]: r["stock_epoch"] for r in epochs}[held.id] == 2  # moved into the new epoch
    await store.update(orders.transition(held, S.EXPIRED, now=T0 + 200))  # its release counts in the new epoch
    assert await store.committed(STORE, "lst000000001") == {None: 1}
    assert await store.available(STORE, recount) == {None: 2}


async def test_committed_counts_only_the_epoch_of_the_listings_count(store):
    await checkout(store, listing(updated_at=T0), qty=3)
    assert await store.committed(STORE, "lst000000001", inventory={None: 5}) == {None: 3}
    # Another figure: only the units a new epoch carries over (the order is unshipped) count.
    assert await store.committed(STORE, "lst000000001", inventory={None: 6}) == {None: 3}
    assert await store.committed(STORE, "lst000000001", inventory={"red": 5}) == {}  # now with variants
    assert await store.available(STORE, listing(updated_at=T0 + 1, inventory=6)) == {None: 3}
    assert await store.available(STORE, listing(updated_at=T0 + 1, price_sat=Sats(9_000))) == {None: 2}


async def test_a_count_change_of_one_variant_leaves_the_others_epochs(store):
    variants = [{"sku": "red", "label": "Red", "price_sat": None, "inventory": 3}]
    variants.append({"sku": "blue", "label": "Blue", "price_sat": None, "inventory": None})
    before = listing(updated_at=T0, inventory=None, variants=variants)
    await checkout(store, before, qty=2, sku="red")
    await checkout(store, before, qty=2, sku="blue")
    after = listing(updated_at=T0 + 100, inventory=None, variants=[{**variants[0], "inventory": 10}, variants[1]])
    assert await store.available(STORE, after) == {"red": 8, "blue": None}  # the 2 red still held carry over
    await checkout(store, after, qty=1, sku="red")
    await checkout(store, after, qty=1, sku="blue")
    assert await store.committed(STORE, "lst000000001") == {"red": 3, "blue": 3}


async def test_release_is_idempotent_and_never_below_zero(store, db):
    a, b = order(qty=2), order(qty=1)
    a = await store.insert(a, reservation(a))
    await store.insert(b, reservation(b))
    await store.release_stock(a)
    await store.release_stock(a)
    assert await store.committed(STORE, "lst000000001") == {None: 1}
    await db.execute_write_fn(lambda c: c.execute("UPDATE stock SET committed = 0"))
    await store.release_stock(b)
    assert await store.committed(STORE, "lst000000001") == {None: 0}
    with pytest.raises(NotFound):
        await store.release_stock(order())


async def test_expiry_and_refund_before_shipping_give_units_back_in_the_same_write(store):
    a, b, c = order(qty=1), order(qty=1), order(qty=1)
    for o in (a, b, c):
        await store.insert(o, reservation(o))
    await store.update(orders.transition(a, S.EXPIRED, now=T0 + 1))
    refunded = moved(b, S.DECLINED)
    await store.update(orders.transition(refunded, S.REFUNDED, now=T0 + 2))
    shipped = moved(c, S.FULFILLED)
    shipped = dataclasses.replace(shipped, history=(*shipped.history, HistoryEntry(T0, S.FULFILLED)))
    await store.update(orders.transition(moved(shipped, S.DECLINED), S.REFUNDED, now=T0 + 3))
    assert await store.committed(STORE, "lst000000001") == {None: 1}  # the shipped one stays sold


@pytest.mark.parametrize("state", [S.DECLINED, S.REFUNDING, S.CLAIMED])
async def test_an_order_that_will_not_ship_gives_its_units_back(store, state):
    """Review finding 1: declined, refunding and claimed orders that never shipped kept their units forever."""
    a = await store.insert(order(qty=2), reservation(order(qty=2)))
    await store.update(moved(a, state))
    assert await store.committed(STORE, "lst000000001") == {None: 0}


async def test_update_is_a_compare_and_set_on_state(store):
    o = await store.insert(order(), reservation(order()))
    funded = orders.transition(o, S.FUNDED, now=T0 + 1)
    assert await store.update(funded, expect_state=S.AWAITING_PAYMENT) == funded
    assert await store.get(o.id) == funded
    # A second writer that still holds the unpaid order loses.
    expired = orders.transition(o, S.EXPIRED, now=T0 + 2)
    with pytest.raises(Conflict, match="it is now funded"):
        await store.update(expired, expect_state=S.AWAITING_PAYMENT)
    assert (await store.get(o.id)).state is S.FUNDED
    assert await store.committed(STORE, "lst000000001") == {None: 1}
    with pytest.raises(NotFound):
        await store.update(order())


async def test_open_orders_and_list(store):
    made = {}
    for n, state in enumerate([S.AWAITING_PAYMENT, S.CONFIRMED, S.COMPLETED, S.EXPIRED, S.DISPUTED]):
        o = order(created_at=T0 + n)
        await store.insert(o, reservation(o, inventory=None))
        if state is not S.AWAITING_PAYMENT:
            await store.update(moved(o, state))
        made[state] = o.id
    other = order(store="c" * 56, created_at=T0 + 10)
    await store.insert(other, reservation(other))
    assert [o.id for o in await store.open_orders()] == [
        made[S.AWAITING_PAYMENT],
        made[S.CONFIRMED],
        made[S.DISPUTED],
        other.id,
    ]
    assert [o.id for o in await store.list(STORE)] == [made[s] for s in reversed(list(made))]
    assert [o.id for o in await store.list(state="completed")] == [made[S.COMPLETED]]
    assert [o.id for o in await store.list(STORE, S.DISPUTED)] == [made[S.DISPUTED]]
    assert [o.id for o in await store.list(limit=2, offset=1)] == [made[S.DISPUTED], made[S.EXPIRED]]
    assert await store.count() == 6 and await store.count("c" * 56) == 1
    with pytest.raises(ValidationError) as caught:
        await store.list(state="shipped")
    assert "awaiting_payment" in caught.value.fields["state"]


async def test_counts_by_day_for_the_sales_chart(store, now):
    start = T0 - T0 % DAY  # midnight UTC
    now[0] = start + 2 * DAY + 3600
    placed = [(start + 10, S.CONFIRMED), (start + 20, S.COMPLETED), (start + 2 * DAY, S.FUNDED)]
    placed += [(start + 30, S.EXPIRED), (start + 40, S.AWAITING_PAYMENT), (start - 5 * DAY, S.COMPLETED)]
    for at, state in placed:
        o = order(created_at=at)
        await store.insert(o, reservation(o, inventory=None))
        await store.update(moved(o, state))
    other = order(store="c" * 56, created_at=start + 50)
    await store.insert(other, reservation(other, inventory=None))
    await store.update(moved(other, S.CONFIRMED))
    days = await store.counts_by_day(STORE, 3)
    per = order().amount_sat
    assert [d for d, _, _ in days] == ["2027-01-15", "2027-01-16", "2027-01-17"]
    assert [(n, sats) for _, n, sats in days] == [(2, 2 * per), (0, 0), (1, per)]
    assert (await store.counts_by_day(None, 3))[0][1] == 3
    assert len(await store.counts_by_day(STORE, 30)) == 30


async def test_update_with_expect_loses_no_concurrent_change_that_kept_the_state(store):
    o = await store.insert(order(), reservation(order()))
    seen_by_vendor = await store.get(o.id)
    seen_by_watcher = await store.get(o.id)
    message = Message(T0 + 1, Party.BUYER, "sealed")
    await store.update(orders.with_message(seen_by_vendor, message, now=T0 + 1), expect=seen_by_vendor)
    paid = orders.with_funding(seen_by_watcher, Funding(Sats(5)), now=T0 + 2)
    await store.update(paid, expect_state=S.AWAITING_PAYMENT)  # state-only check: passes, and would lose the message
    assert (await store.get(o.id)).messages == ()
    current = await store.get(o.id)
    stale = orders.with_message(seen_by_vendor, message, now=T0 + 3)
    with pytest.raises(Conflict, match="changed meanwhile"):
        await store.update(stale, expect=seen_by_vendor)
    assert await store.get(o.id) == current
