"""``PurchaseStore`` over a real ``purchases.sqlite``, the operations' body checks, and the purchase view."""

from __future__ import annotations

import dataclasses

import pytest

from node.adapters.purchases_schema import open_purchase_db
from node.core.errors import Conflict, NotFound, StorageError, ValidationError
from node.core.models import Sats
from node.messaging.models import Delivery, OutMessage
from node.operations.purchases import purchase_request
from node.payments.models import Party, PayoutKind, PayoutOutput
from node.purchases.models import Event, Note, PendingPayout, PurchaseState
from node.purchases.service import PurchaseDetail, _delivered
from node.purchases.store import PurchaseStore
from node.purchases.views import purchase_view
from tests.unit.purchase_helpers import MODERATOR, REFUND, STORE, T0, purchase


@pytest.fixture
async def store(tmp_path):
    db = await open_purchase_db(tmp_path / "purchases.sqlite")
    yield PurchaseStore(db)
    await db.close()


def full():
    pending = PendingPayout(
        PayoutKind.REFUND, "cHNidP8=", (PayoutOutput(REFUND, Sats(9000), Party.BUYER),), Sats(500), T0
    )
    return purchase(
        history=(Event(T0, "queued", "order queued"),),
        notes=(Note("ab" * 16, T0, "out", "message", "hi"),),
        pending=pending,
        refused_fields={"qty": "only 1 left"},
        funding=(("cd" * 32, 1, 150_000),),
    )


async def test_a_purchase_round_trips_and_updates_in_one_transaction(store):
    p = await store.insert(full())
    assert await store.get(p.id) == p and await store.page() == [p] and await store.open() == [p]
    with pytest.raises(Conflict):
        await store.insert(p)
    done = await store.update(p.id, lambda c: dataclasses.replace(c, state=PurchaseState.COMPLETED.value))
    assert done.final and await store.open() == [] and (await store.get(p.id)).state == "completed"

    def fails(c):
        raise ValidationError({"x": "no"})

    with pytest.raises(ValidationError):
        await store.update(p.id, fails)
    assert await store.get(p.id) == done
    with pytest.raises(NotFound, match="pasar purchases list"):
        await store.get("ef" * 16)
    assert await store.find("ef" * 16) is None


async def test_a_damaged_record_says_to_restore(store, tmp_path):
    p = await store.insert(purchase())
    await store._db.execute_write_fn(lambda conn: conn.execute("UPDATE purchases SET record = '{\"id\": 1}'"))
    with pytest.raises(StorageError, match="restore the file"):
        await store.get(p.id)


def out(kind: str, delivery: Delivery, reason: str = "") -> OutMessage:
    return OutMessage("12" * 16, "0" * 32, STORE, kind, 1, T0, delivery, reason, 1, T0, b"{}")


def test_queued_becomes_placed_when_delivered_and_refused_when_failed():
    p = purchase(state="queued")
    assert _delivered(p, [out("order", Delivery.SENT)]).state == "queued"
    assert _delivered(p, [out("order", Delivery.DELIVERED)]).state == "placed"
    failed = _delivered(p, [out("order", Delivery.FAILED, "not delivered in 14 days")])
    assert failed.state == "refused" and failed.reason == "failed: not delivered in 14 days"


def test_the_view_never_shows_the_order_key_and_joins_texts_to_messages():
    p = full()
    message = dataclasses.replace(out("message", Delivery.DELIVERED), id="ab" * 16)
    view = purchase_view(PurchaseDetail(p, [out("order", Delivery.DELIVERED), message], []))
    assert p.order_key not in repr(view)
    assert view["messages"][1] == {
        "id": "ab" * 16,
        "kind": "message",
        "delivery": "delivered",
        "direction": "out",
        "at": T0,
        "text": "hi",
        "attempts": 1,
        "reason": "",
    }
    assert view["pending_payout"]["outputs"] == [{"address": REFUND, "amount_sat": 9000, "role": "buyer"}]
    assert (view["escrow_address"], view["amount_sat"], view["review"]) == (None, 150_000, None)


def test_the_place_body_is_checked_for_types():
    req = purchase_request({"store": STORE, "listing": "l1", "moderator": MODERATOR, "qty": 2, "sku": None})
    assert (req.store, req.qty, req.sku, req.shipping, req.ship_to, req.coupon) == (STORE, 2, None, None, "", None)
    for body, field in [
        ({"listing": "l1", "moderator": MODERATOR}, "store"),
        ({"store": STORE, "listing": "l1", "moderator": MODERATOR, "qty": "2"}, "qty"),
        ({"store": STORE, "listing": "l1", "moderator": MODERATOR, "qty": True}, "qty"),
        ({"store": STORE, "listing": "l1", "moderator": MODERATOR, "price": 1}, "price"),
        ({"store": STORE, "listing": 5, "moderator": MODERATOR}, "listing"),
    ]:
        with pytest.raises(ValidationError) as caught:
            purchase_request(body)
        assert field in caught.value.fields
    with pytest.raises(ValidationError, match="JSON object"):
        purchase_request(["x"])
