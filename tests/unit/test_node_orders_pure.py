"""The pure parts of the vendor's node orders: reading an ``order`` message, what a sync plans, review binding."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from node.core import reviews
from node.core.crypto import StoreKey
from node.core.errors import ValidationError
from node.core.models import Sats
from node.payments import node_orders_apply as apply
from node.payments import node_orders_tell as tell
from node.payments.models import (
    Dispute,
    Funding,
    HistoryEntry,
    Message,
    Order,
    OrderState,
    Party,
    Payout,
    PayoutKind,
    PayoutOutput,
)
from node.payments.node_orders_apply import applied
from node.payments.node_orders_read import order_fields, review_problem
from tests.unit.order_helpers import STORE, T0, order

S = OrderState
BUYER = StoreKey.generate()
SHOP = StoreKey.generate()  # a real onion: reviews check it
OUTPOINT = ("ab" * 32, 1)
HASH = "sha256:" + "0" * 64
ESCROW = "bcrt1qescrowaddressofthisorder"


def fields(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "store": STORE,
        "listing": "lst000000001",
        "listing_hash": "sha256:" + "0" * 64,
        "sku": None,
        "qty": 2,
        "shipping": "post",
        "coupon": None,
        "moderator": "b" * 56,
        "buyer_key": "[deadbeef/84h/1h/0h/0/1]02" + "11" * 32,
        "refund_address": "bcrt1qexample",
        "amount_sat": 22_000,
        "ship_to": "boxed",
    }
    return {**base, **changes}


def test_an_order_message_reads_as_the_checkout_form() -> None:
    read = order_fields(fields())
    assert read.form.qty == "2" and read.form.sku == "" and read.form.shipping == "post"
    assert read.form.buyer_pubkey.endswith("11" * 32) and read.amount_sat == 22_000 and read.store == STORE
    with pytest.raises(ValidationError) as caught:
        order_fields(fields(qty="2", amount_sat=-1, listing=None, ship_to=7))
    assert set(caught.value.fields) == {"qty", "amount_sat", "listing", "ship_to"}


def node_order(state: OrderState = S.COMPLETED) -> Order:
    o = order(state=state, store=SHOP.onion)
    paid = Funding(paid_sat=o.amount_sat, outpoints=((*OUTPOINT, o.amount_sat),), confirmations=1)
    escrow = dataclasses.replace(o.escrow, address=ESCROW)
    return dataclasses.replace(o, escrow=escrow, funding=paid, extra={"peer": BUYER.onion, "channel": "node"})


def review(o: Order, key: StoreKey = BUYER, *, listing_hash: str = HASH, outpoint: str = "") -> reviews.Review:
    return reviews.build(
        key,
        store=o.store,
        order=o.id,
        listing="lst000000001",
        listing_hash=listing_hash,
        outpoint=outpoint or f"{OUTPOINT[0]}:{OUTPOINT[1]}",
        block="cd" * 32,
        address=ESCROW,
        rating=4,
        text="fine",
        receipt=reviews.seal_receipt(
            SHOP, order=o.id, buyer=key.onion, address=ESCROW, listing_hash=listing_hash, now=T0
        ),
        now=T0,
    )


def test_a_review_must_be_the_buyers_of_a_finished_paid_order() -> None:
    done = node_order()
    assert review_problem(done, review(done)) is None
    assert "not signed by the key" in str(review_problem(done, review(done, StoreKey.generate())))
    assert "another listing" in str(review_problem(done, review(done, listing_hash="sha256:" + "9" * 64)))
    assert "did not fund" in str(review_problem(done, review(done, outpoint="ef" * 32 + ":0")))
    other = dataclasses.replace(done, id="00" * 8)
    assert "another order" in str(review_problem(other, review(done)))
    accepted = dataclasses.replace(done, state=S.ACCEPTED)
    assert "once the order is completed" in str(review_problem(accepted, review(accepted)))
    refunded = dataclasses.replace(done, state=S.REFUNDED)
    assert review_problem(refunded, review(refunded)) is not None  # refunded without a dispute: no review


def test_the_plan_is_deterministic_in_time_order_with_the_payout_last() -> None:
    o = node_order(S.FULFILLED)
    o = dataclasses.replace(
        o,
        history=(HistoryEntry(T0, S.AWAITING_PAYMENT, "placed"), HistoryEntry(T0 + 20, S.FULFILLED, "sent")),
        messages=(Message(T0 + 10, Party.VENDOR, "sealed1"), Message(T0 + 15, Party.BUYER, "sealed2")),
        pending=Payout(
            PayoutKind.RELEASE,
            (PayoutOutput("bcrt1qv", Sats(11_000), Party.VENDOR),),
            Sats(1000),
            Sats(0),
            "cHNidP8=",
            (Party.VENDOR,),
            T0 + 20,
        ),
    )
    first = tell.plan(o, 3600, lambda order: "cHNidP8=")
    assert [p.kind for p in first] == ["escrow", "state", "message", "state", "payout"]
    assert first == tell.plan(o, 3600, lambda order: "cHNidP8=")
    assert len({p.id for p in first}) == 5 and all(len(p.id) == 32 for p in first)
    assert first[0].id == tell.message_id(o.id, "escrow")
    assert first[2].sealed == "sealed1" and first[3].fields["state"] == "fulfilled"
    assert [p.kind for p in tell.plan(o, 3600, lambda order: None)][-1] == "state"


def test_the_escrow_message_carries_the_stores_receipt_for_the_order() -> None:
    o = dataclasses.replace(
        node_order(S.AWAITING_PAYMENT), item=dataclasses.replace(node_order().item, listing_hash=HASH)
    )
    escrow = tell.plan(o, 3600, lambda order: None, key=SHOP)[0]
    assert escrow.kind == "escrow" and escrow == tell.plan(o, 3600, lambda order: None, key=SHOP)[0]
    got = reviews.verify_receipt(escrow.fields["receipt"], store=SHOP.onion, now=T0)
    assert (got.order, got.buyer, got.address, got.listing_hash) == (o.id, BUYER.onion, ESCROW, HASH)
    assert "receipt" not in tell.plan(o, 3600, lambda order: None)[0].fields


def test_a_buyer_message_seq_is_applied_once() -> None:
    o = node_order()
    assert not applied(o, 1)
    seen = dataclasses.replace(o, extra={**o.extra, "buyer_seq": "3"})
    assert applied(seen, 2) and applied(seen, 3) and not applied(seen, 4)


def test_refusals_are_noted_once_per_kind_with_a_counter() -> None:
    o = order(state=S.AWAITING_PAYMENT)
    before = len(o.history)
    for i, kind in enumerate(["dispute", "dispute", "zzz", "qqq", "dispute"]):
        o = apply.refusal_noted(o, kind, f"reason {i}", T0 + i)
    notes = [h.note for h in o.history[before:]]
    assert notes == [
        "the buyer's dispute message was refused (3 times; last: reason 4)",
        "the buyer's other message was refused (2 times; last: reason 3)",
    ]
    assert o.extra["refused_dispute"] == "3" and o.extra["refused_other"] == "2"


def test_review_replacements_are_capped_and_spaced() -> None:
    o = order(state=S.COMPLETED)
    assert apply.review_limit(o, T0) is None  # the first review
    o = dataclasses.replace(o, extra={**o.extra, apply.REVIEWS: "1", apply.REVIEW_AT: str(T0)})
    assert "once an hour" in str(apply.review_limit(o, T0 + 3599))
    assert apply.review_limit(o, T0 + apply.REVIEW_GAP) is None
    o = dataclasses.replace(o, extra={**o.extra, apply.REVIEWS: str(apply.MAX_REVIEWS)})
    assert "replaced 5 times already" in str(apply.review_limit(o, T0 + 10 * apply.REVIEW_GAP))


async def test_a_buyer_node_adds_at_most_max_statements_to_a_dispute() -> None:
    said = tuple((Party.BUYER, f"s{i}") for i in range(apply.MAX_STATEMENTS))
    o = dataclasses.replace(
        order(state=S.DISPUTED), dispute=Dispute(opened_by=Party.BUYER, opened_at=T0, statements=said)
    )

    class OneOrder:  # ``Payments.act`` over this order (the cap is checked before anything is written)
        async def act(self, order_id: str, action: Callable[[Order], Awaitable[Order]]) -> Order:
            return await action(o)

    payments: Any = OneOrder()
    with pytest.raises(apply.ApplyError, match="20 statements"):
        await apply.dispute(payments, o.id, "again", 99)
