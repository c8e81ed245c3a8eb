"""What a hostile sender cannot make a mailbox hold: huge seqs, long lives, big bodies, far gaps, floods of orders."""

from __future__ import annotations

import pytest

from node.core import envelope
from node.core.crypto import StoreKey
from node.core.errors import ValidationError
from node.messaging import wire
from node.messaging.mailbox import Mailbox
from tests.unit.test_messaging_kit import CAP, FIRST, GIVE_UP, Clock, Side, anyone, open_side, order_fields


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
async def vendor(tmp_path, clock):
    side = await open_side(tmp_path / "vendor.sqlite", clock, seed=2)
    yield side
    await side.db.close()


def signed(key, order, to, *, seq=1, kind="order", fields=None, now, ttl=wire.MSG_TTL):
    body = wire.message_body(wire.new_message_id(), order, kind, to, fields or order_fields(to))
    return dict(envelope.seal(key, wire.MSG_TYPE, body, seq=seq, issued_at=now, expires_at=now + ttl))


async def receive(side: Side, raws, clock):
    return await side.mailbox.receive(raws, me=side.me, party=anyone, now=clock.now)


async def opened(vendor: Side, clock):
    """A store key held by the vendor, a buyer's order key and an order it opened (seq 1 stored)."""
    store, buyer, order = StoreKey.generate(), StoreKey.generate(), wire.new_order_id()
    vendor.add(store)
    got = await receive(vendor, [signed(buyer, order, store.onion, now=clock.now)], clock)
    assert len(got.new) == 1
    return store, buyer, order


def message(buyer, order, store, seq, clock, text="hi", **kw):
    return signed(buyer, order, store.onion, seq=seq, kind="message", fields={"text": text}, now=clock.now, **kw)


async def test_a_seq_past_2_to_the_31_is_refused_for_good(vendor, clock):
    store, buyer, order = await opened(vendor, clock)
    for seq in (wire.MAX_SEQ + 1, 2**63, 2**70):  # 2**63 overflowed SQLite (not a PasarError)
        got = await receive(vendor, [message(buyer, order, store, seq, clock)], clock)
        assert got.new == [] and "at most" in got.refused[0][1] and not wire.is_transient(got.refused[0][1])


async def test_a_message_living_longer_than_the_ttl_is_refused(vendor, clock):
    store, buyer, order = await opened(vendor, clock)
    ttl = wire.MSG_TTL + wire.TTL_SLACK
    got = await receive(vendor, [message(buyer, order, store, 2, clock, ttl=ttl + 1)], clock)
    assert "lives at most" in got.refused[0][1]
    got = await receive(vendor, [message(buyer, order, store, 2, clock, ttl=ttl)], clock)
    assert len(got.new) == 1


async def test_bodies_are_capped_by_kind(vendor, clock):
    store, buyer, order = await opened(vendor, clock)
    big = message(buyer, order, store, 2, clock, text="x" * wire.max_bytes("message"))
    got = await receive(vendor, [big], clock)
    assert "message messages are at most" in got.refused[0][1]
    psbt = {"payout": "release", "psbt": "x" * 100_000}  # a PSBT may be much bigger than a message
    got = await receive(
        vendor, [signed(buyer, order, store.onion, seq=2, kind="psbt", fields=psbt, now=clock.now)], clock
    )
    assert len(got.new) == 1
    flood = {**order_fields(store.onion), "ship_to": "x" * wire.max_bytes("order")}
    got = await receive(vendor, [signed(buyer, wire.new_order_id(), store.onion, fields=flood, now=clock.now)], clock)
    assert "order messages are at most" in got.refused[0][1]


async def test_the_sender_never_queues_what_the_receiver_refuses(vendor, clock):
    key, peer = StoreKey.generate(), StoreKey.generate().onion
    with pytest.raises(ValidationError, match="at most"):
        await vendor.mailbox.send(
            key, peer=peer, order=wire.new_order_id(), kind="message", fields={"text": "x" * 30_000}, to=peer
        )


async def test_a_seq_far_past_the_last_applied_waits_for_the_gap(vendor, clock):
    store, buyer, order = await opened(vendor, clock)
    far = await receive(vendor, [message(buyer, order, store, wire.SEQ_AHEAD + 1, clock)], clock)
    assert wire.is_transient(far.refused[0][1])  # the sender tries again once the gap is applied
    edge = await receive(vendor, [message(buyer, order, store, wire.SEQ_AHEAD, clock)], clock)
    assert len(edge.new) == 1  # at most SEQ_AHEAD waiting rows per (order, sender)
    await vendor.mailbox.apply_ready(order, buyer.onion, vendor.apply)  # applies seq 1 (2.. is a gap)
    again = await receive(vendor, [message(buyer, order, store, wire.SEQ_AHEAD + 1, clock)], clock)
    assert len(again.new) == 1


async def test_an_order_holds_at_most_order_rows(vendor, clock, monkeypatch):
    monkeypatch.setattr(wire, "ORDER_ROWS", 5)
    store, buyer, order = await opened(vendor, clock)
    got = await receive(vendor, [message(buyer, order, store, seq, clock) for seq in range(2, 8)], clock)
    assert len(got.new) == 4 and len(got.refused) == 2
    assert all("at most 5 messages" in reason and not wire.is_transient(reason) for _, reason in got.refused)


async def test_new_orders_from_unknown_keys_are_rate_limited_per_store(tmp_path, clock):
    side = await open_side(tmp_path / "v.sqlite", clock)
    side.mailbox = Mailbox(
        side.db, clock=clock, retry_first=FIRST, retry_cap=CAP, give_up=GIVE_UP, new_orders_per_hour=3
    )
    try:
        store, other = StoreKey.generate(), StoreKey.generate()
        side.add(store)
        side.add(other)

        def new_order(to):
            return signed(StoreKey.generate(), wire.new_order_id(), to.onion, now=clock.now)

        got = await receive(side, [new_order(store) for _ in range(4)], clock)
        assert (
            len(got.new) == 3 and wire.is_transient(got.refused[0][1]) and "3 new orders an hour" in got.refused[0][1]
        )
        assert len((await receive(side, [new_order(other)], clock)).new) == 1  # per store
        clock.now += 3600
        assert len((await receive(side, [new_order(store)], clock)).new) == 1
    finally:
        await side.db.close()
