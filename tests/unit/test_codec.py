"""Orders as canonical JSON: exact round trips of every nested record, and damaged records refused by field."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.core.errors import BadRequest
from node.payments import codec
from node.payments.models import (
    Dispute,
    Escrow,
    Funding,
    HistoryEntry,
    KeyRef,
    Message,
    ModeratorTerms,
    Order,
    OrderItem,
    OrderState,
    Party,
    Payout,
    PayoutKind,
    PayoutOutput,
)
from tests.unit.order_helpers import order

text = st.text(max_size=30)  # any unicode, escapes and all
maybe_text = st.none() | text
sats = st.integers(min_value=0, max_value=21_000_000 * 100_000_000)
maybe_sats = st.none() | sats
ints = st.integers(min_value=0, max_value=2**62)
keys = st.builds(KeyRef, pubkey=text, origin=text)
parties = st.sampled_from(Party)

escrows = st.builds(
    Escrow,
    buyer=keys,
    vendor=keys,
    moderator=keys,
    vendor_timeout=keys,
    timeout_blocks=ints,
    descriptor=text,
    address=text,
)
items = st.builds(
    OrderItem,
    listing_id=text,
    listing_hash=text,
    title=text,
    sku=maybe_text,
    qty=ints,
    unit_price_sat=sats,
    shipping=maybe_text,
    shipping_sat=sats,
    coupon=maybe_text,
    discount_sat=sats,
)
fundings = st.builds(
    Funding,
    paid_sat=sats,
    outpoints=st.lists(st.tuples(text, ints, sats), max_size=3).map(tuple),
    confirmations=ints,
    first_seen_height=st.none() | ints,
)
payouts = st.builds(
    Payout,
    kind=st.sampled_from(PayoutKind),
    outputs=st.lists(st.builds(PayoutOutput, address=text, amount_sat=sats, role=parties), max_size=3).map(tuple),
    fee_sat=sats,
    dust_sat=sats,
    psbt=text,
    signed_by=st.lists(parties, max_size=3).map(tuple),
    created_at=ints,
    note=text,
    txid=maybe_text,
)
disputes = st.builds(
    Dispute,
    opened_by=parties,
    opened_at=ints,
    statements=st.lists(st.tuples(parties, text), max_size=3).map(tuple),
    buyer_sat=maybe_sats,
    vendor_sat=maybe_sats,
    moderator_sat=maybe_sats,
)
orders = st.builds(
    Order,
    id=text,
    store=text,
    token_hash=text,
    state=st.sampled_from(OrderState),
    created_at=ints,
    updated_at=ints,
    item=items,
    amount_sat=sats,
    refund_address=text,
    ship_to_sealed=text,
    escrow=escrows,
    moderator=st.builds(ModeratorTerms, onion=text, pubkey=keys, fee_percent=ints, fee_sat=sats, terms_hash=text),
    pay_by=ints,
    accept_by=st.none() | ints,
    funding=fundings,
    pending=st.none() | payouts,
    payouts=st.lists(payouts, max_size=2).map(tuple),
    history=st.lists(st.builds(HistoryEntry, at=ints, state=st.sampled_from(OrderState), note=text), max_size=4).map(
        tuple
    ),
    messages=st.lists(st.builds(Message, at=ints, sender=parties, sealed=text), max_size=3).map(tuple),
    dispute=st.none() | disputes,
    fulfillment_note=text,
    stock_epoch=ints,
    extra=st.dictionaries(text, text, max_size=3),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(orders)
def test_every_order_round_trips_exactly(o):
    encoded = codec.order_to_json(o)
    back = codec.order_from_json(encoded)
    assert back == o
    assert codec.order_to_json(back) == encoded  # canonical: one text per order
    assert codec._fast(Order)(json.loads(encoded)) == o  # the fast decoder takes every valid record
    assert type(back.state) is OrderState
    assert all(type(h.state) is OrderState for h in back.history)


def test_canonical_shape():
    o = order()
    encoded = codec.order_to_json(o)
    assert encoded == json.dumps(json.loads(encoded), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    plain = json.loads(encoded)
    assert plain["state"] == "awaiting_payment"
    assert plain["item"]["qty"] == 1
    assert plain["funding"]["outpoints"] == []
    assert plain["pending"] is None
    assert "missing_sat" not in plain  # properties are not stored


def test_unicode_is_kept_as_utf8():
    o = order()
    o = type(o)(**{**o.__dict__, "fulfillment_note": "Paket ist unterwegs 📦"})
    assert "📦" in codec.order_to_json(o)


def test_a_record_without_fields_added_later_decodes_to_their_defaults():
    plain = json.loads(codec.order_to_json(order()))
    for later in ("stock_epoch", "extra", "dispute", "messages", "funding"):
        del plain[later]
    back = codec.order_from_json(json.dumps(plain))
    assert back.stock_epoch == 0 and back.extra == {} and back.dispute is None and back.funding == Funding()


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (("state",), "lost", "order.state: expected one of"),
        (("amount_sat",), "12", "order.amount_sat: expected a whole number"),
        (("amount_sat",), True, "order.amount_sat: expected a whole number"),
        (("item", "sku"), 5, "order.item.sku: expected a string"),
        (("funding", "outpoints"), [["tx", 0]], "order.funding.outpoints[0]: expected a list of 3"),
        (("escrow",), [], "order.escrow: expected an object"),
        (("extra",), {"k": 1}, "order.extra.k: expected a string"),
        (("history",), [{"at": 1, "state": "funded", "note": "", "who": "x"}], "order.history[0].who: unknown field"),
    ],
)
def test_damaged_records_are_refused_naming_the_field(path, value, reason):
    plain = json.loads(codec.order_to_json(order()))
    target = plain
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(BadRequest) as caught:
        codec.order_from_json(json.dumps(plain))
    assert reason in caught.value.message
    with pytest.raises((codec._Mismatch, KeyError)):
        codec._fast(Order)(plain)  # and refuses every damaged one


def test_missing_required_field_and_not_json():
    plain = json.loads(codec.order_to_json(order()))
    del plain["escrow"]["address"]
    with pytest.raises(BadRequest, match=r"order\.escrow\.address: missing"):
        codec.order_from_json(json.dumps(plain))
    with pytest.raises(BadRequest, match="not JSON"):
        codec.order_from_json("{")
