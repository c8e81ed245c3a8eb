"""The mailbox on real SQLite files: seq, idempotent send, dedupe, in-order apply, refusals, acks, backoff."""

from __future__ import annotations

import asyncio

import pytest

from node.core import envelope
from node.core.crypto import StoreKey
from node.core.errors import Unavailable, ValidationError
from node.messaging import wire
from node.messaging.models import ApplyError, Delivery, InMessage
from tests.unit.test_messaging_kit import CAP, FIRST, GIVE_UP, Clock, anyone, open_side, order_fields

DAY = 86_400


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
async def buyer(tmp_path, clock):
    side = await open_side(tmp_path / "buyer.sqlite", clock, seed=1)
    yield side
    await side.db.close()


@pytest.fixture
async def vendor(tmp_path, clock):
    side = await open_side(tmp_path / "vendor.sqlite", clock, seed=2)
    yield side
    await side.db.close()


@pytest.fixture
def keys(buyer, vendor):
    """(order key, store key, order id): the buyer holds the order key, the vendor the store key."""
    order_key, store_key = StoreKey.generate(), StoreKey.generate()
    buyer.add(order_key)
    vendor.add(store_key)
    return order_key, store_key, wire.new_order_id()


async def place(buyer, keys, *more: str):
    """The buyer queues the order then one ``message`` per text in ``more``; the raws, by seq."""
    order_key, store_key, order = keys
    sent = [
        await buyer.mailbox.send(
            order_key,
            peer=store_key.onion,
            order=order,
            kind="order",
            fields=order_fields(store_key.onion),
            to=store_key.onion,
        )
    ]
    for text in more:
        sent.append(
            await buyer.mailbox.send(
                order_key, peer=store_key.onion, order=order, kind="message", fields={"text": text}, to=store_key.onion
            )
        )
    return sent


def raw(msg):
    return envelope.loads(msg.raw)


async def receive(side, raws, clock, party=anyone):
    return await side.mailbox.receive(raws, me=side.me, party=party, now=clock.now)


# -- sending -------------------------------------------------------------------------
async def test_seq_per_order_and_sender_in_one_transaction(buyer, keys):
    order_key, store_key, order = keys
    sent = await asyncio.gather(
        *(
            buyer.mailbox.send(
                order_key, peer=store_key.onion, order=order, kind="message", fields={"n": i}, to=store_key.onion
            )
            for i in range(20)
        )
    )
    assert sorted(m.seq for m in sent) == list(range(1, 21))
    other = await buyer.mailbox.send(
        order_key, peer=store_key.onion, order=wire.new_order_id(), kind="order", fields={}, to=store_key.onion
    )
    assert other.seq == 1
    out = await buyer.mailbox.outgoing(order)
    assert [m.seq for m in out] == list(range(1, 21))
    assert all(m.delivery is Delivery.QUEUED and m.delivery_text() == "queued" for m in out)
    env = envelope.open_(raw(out[0]), now=out[0].created_at, expected_type=wire.MSG_TYPE)
    assert env["store"] == order_key.onion and env["seq"] == 1
    assert env["expires_at"] - env["issued_at"] == wire.MSG_TTL
    assert env["body"]["to"] == store_key.onion and env["body"]["order"] == order


async def test_send_is_idempotent_by_message_id(buyer, keys, clock):
    order_key, store_key, order = keys
    mid = wire.new_message_id()
    first = await buyer.mailbox.send(
        order_key, peer=store_key.onion, order=order, kind="state", fields={"a": 1}, to=store_key.onion, message_id=mid
    )
    clock.now += 100
    again = await buyer.mailbox.send(
        order_key, peer=store_key.onion, order=order, kind="state", fields={"a": 2}, to=store_key.onion, message_id=mid
    )
    assert again == first
    assert len(await buyer.mailbox.outgoing(order)) == 1


async def test_send_refuses_bad_input(buyer, keys):
    order_key, store_key, order = keys
    with pytest.raises(ValidationError):
        await buyer.mailbox.send(
            order_key, peer=store_key.onion, order="nothex", kind="order", fields={}, to=store_key.onion
        )
    with pytest.raises(ValidationError):
        await buyer.mailbox.send(
            order_key, peer=store_key.onion, order=order, kind="order", fields={"id": "x"}, to=store_key.onion
        )
    with pytest.raises(ValidationError):
        await buyer.mailbox.send(
            order_key, peer=store_key.onion, order=order, kind="order", fields={"f": 1.5}, to=store_key.onion
        )
    assert await buyer.mailbox.outgoing(order) == []


# -- receiving -----------------------------------------------------------------------
async def test_receive_stores_acks_and_dedupes_by_id(buyer, vendor, keys, clock):
    order_key, store_key, order = keys
    sent = await place(buyer, keys, "hello")
    got = await receive(vendor, [raw(m) for m in sent], clock)
    assert [m.id for m in got.new] == [m.id for m in sent] and got.refused == []
    assert [a["body"]["id"] for a in got.acks] == [m.id for m in sent]
    assert all(a["store"] == store_key.onion and a["type"] == wire.ACK_TYPE for a in got.acks)
    assert got.new[1].body["text"] == "hello" and got.new[0].sender == order_key.onion
    assert await vendor.mailbox.opener(order) == order_key.onion

    assert await vendor.mailbox.apply_ready(order, order_key.onion, vendor.apply) == 2
    again = await receive(vendor, [raw(m) for m in sent], clock)  # the acks were lost: re-sent
    assert again.new == [] and again.refused == []
    assert [a["body"]["id"] for a in again.acks] == [m.id for m in sent]
    assert await vendor.mailbox.apply_ready(order, order_key.onion, vendor.apply) == 0
    assert [m.id for m in vendor.applied] == [m.id for m in sent]  # applied once
    assert [m.applied for m in await vendor.mailbox.incoming(order)] == ["applied", "applied"]


async def test_out_of_order_waits_for_the_gap(buyer, vendor, keys, clock):
    order_key, _, order = keys
    sent = await place(buyer, keys, "two", "three", "four")
    await receive(vendor, [raw(sent[0]), raw(sent[2]), raw(sent[3])], clock)
    assert await vendor.mailbox.apply_ready(order, order_key.onion, vendor.apply) == 1
    assert await vendor.mailbox.unapplied() == [(order, order_key.onion)]
    got = await receive(vendor, [raw(sent[1])], clock)
    assert [m.seq for m in got.new] == [2]
    assert await vendor.mailbox.apply_ready(order, order_key.onion, vendor.apply) == 3
    assert [m.seq for m in vendor.applied] == [1, 2, 3, 4]
    assert await vendor.mailbox.unapplied() == []


async def test_forged_signature_is_refused(buyer, vendor, keys, clock):
    _order_key, _, order = keys
    (sent,) = await place(buyer, keys)
    forged = raw(sent)
    forged["body"]["amount_sat"] = 1
    got = await receive(vendor, [forged], clock)
    assert got.new == [] and got.acks == []
    assert got.refused[0][0] == sent.id and "signature" in got.refused[0][1]
    assert await vendor.mailbox.incoming(order) == []


async def test_garbage_and_wrong_type_are_refused(vendor, clock):
    got = await receive(vendor, [b"{", {"type": "pasar.msg"}, 5], clock)
    assert [r[0] for r in got.refused] == ["", "", ""] and got.new == []


async def test_message_not_for_this_node_is_refused(buyer, vendor, keys, clock):
    order_key, _, order = keys
    stranger = StoreKey.generate()
    msg = await buyer.mailbox.send(
        order_key, peer=stranger.onion, order=order, kind="order", fields={}, to=stranger.onion
    )
    got = await receive(vendor, [raw(msg)], clock)
    assert got.refused == [(msg.id, "not addressed to this node")]


async def test_replay_under_a_new_id_is_refused(buyer, vendor, keys, clock):
    order_key, _store_key, _order = keys
    (sent,) = await place(buyer, keys)
    await receive(vendor, [raw(sent)], clock)
    body = {**raw(sent)["body"], "id": wire.new_message_id()}
    replay = envelope.seal(order_key, wire.MSG_TYPE, body, seq=1, issued_at=clock.now, expires_at=clock.now + 99)
    got = await receive(vendor, [dict(replay)], clock)
    assert got.new == [] and "taken by another message" in got.refused[0][1]


async def test_foreign_order_is_refused(buyer, vendor, keys, clock):
    order_key, store_key, order = keys
    sent = await place(buyer, keys)
    await receive(vendor, [raw(sent[0])], clock)
    # Another key sends on the order: as a second order under the same id, then as a plain message.
    thief = StoreKey.generate()
    for kind, seq in (("order", 1), ("message", 2)):
        body = {"id": wire.new_message_id(), "order": order, "kind": kind, "to": store_key.onion}
        env = envelope.seal(thief, wire.MSG_TYPE, body, seq=seq, issued_at=clock.now, expires_at=clock.now + 99)
        got = await receive(vendor, [dict(env)], clock)
        assert got.new == [] and got.acks == []
        assert ("taken by another buyer" if kind == "order" else "only the order's buyer") in got.refused[0][1]

    async def party(o: str, sender: str) -> str | None:
        return "this order is closed"

    (late,) = [
        await buyer.mailbox.send(
            order_key, peer=store_key.onion, order=order, kind="message", fields={}, to=store_key.onion
        )
    ]
    got = await receive(vendor, [raw(late)], clock, party)
    assert got.refused == [(late.id, "this order is closed")]
    again = await receive(vendor, [raw(sent[0])], clock, party)  # a held id is acked again, party or not
    assert [a["body"]["id"] for a in again.acks] == [sent[0].id]


async def test_unknown_order_must_start_with_the_order(buyer, vendor, keys, clock):
    order_key, store_key, order = keys
    msg = await buyer.mailbox.send(
        order_key, peer=store_key.onion, order=order, kind="message", fields={}, to=store_key.onion
    )
    got = await receive(vendor, [raw(msg)], clock)
    assert "unknown order" in got.refused[0][1]


async def test_expired_and_future_messages_are_refused(buyer, vendor, keys, clock):
    sent = await place(buyer, keys)
    clock.now += wire.MSG_TTL + 1
    got = await receive(vendor, [raw(sent[0])], clock)
    assert "expired" in got.refused[0][1]
    assert wire.is_transient(got.refused[0][1])  # the clocks disagree: the sender retries, it does not give up
    clock.now -= wire.MSG_TTL + 10_000
    got = await receive(vendor, [raw(sent[0])], clock)
    assert "future" in got.refused[0][1] and wire.is_transient(got.refused[0][1])


# -- acks ----------------------------------------------------------------------------
async def test_acks_mark_delivered_only_from_the_peer(buyer, vendor, keys, clock):
    order_key, store_key, order = keys
    sent = await place(buyer, keys, "x")
    got = await receive(vendor, [raw(m) for m in sent], clock)
    stranger = StoreKey.generate()
    wrong = wire.seal_ack(stranger, message_id=sent[0].id, order=order, sender=order_key.onion, seq=1, now=clock.now)
    other_order = wire.seal_ack(
        store_key, message_id=sent[0].id, order=wire.new_order_id(), sender=order_key.onion, seq=1, now=clock.now
    )
    tampered = dict(got.acks[1])
    tampered["body"] = {**tampered["body"], "id": sent[0].id}
    assert await buyer.mailbox.mark_delivered([dict(wrong), dict(other_order), tampered, "junk"]) == []
    assert {m.delivery for m in await buyer.mailbox.outgoing(order)} == {Delivery.QUEUED}
    await buyer.mailbox.mark_sent([sent[0].id], clock.now)
    assert (await buyer.mailbox.outgoing(order))[0].delivery_text() == "sent"
    assert await buyer.mailbox.mark_delivered(got.acks) == [m.id for m in sent]
    assert [m.delivery_text() for m in await buyer.mailbox.outgoing(order)] == ["delivered", "delivered"]
    assert (await buyer.mailbox.counts())["delivered"] == 2


# -- backoff -------------------------------------------------------------------------
async def test_backoff_first_doubling_jitter_cap_then_failed(buyer, keys, clock):
    (msg,) = await place(buyer, keys)
    assert [m.id for m in (await buyer.mailbox.due(clock.now))[msg.peer]] == [msg.id]
    waits = []
    for _ in range(12):
        await buyer.mailbox.retry_later([msg.id], clock.now, "unreachable")
        (held,) = await buyer.mailbox.outgoing(msg.order)
        waits.append(held.next_try - clock.now)
        assert await buyer.mailbox.due(clock.now) == {}
        clock.now = held.next_try
    assert FIRST * 0.8 <= waits[0] <= FIRST * 1.2
    assert FIRST * 2 * 0.8 <= waits[1] <= FIRST * 2 * 1.2
    assert FIRST * 4 * 0.8 <= waits[2] <= FIRST * 4 * 1.2
    assert max(waits) <= CAP and waits[-1] >= CAP * 0.8
    assert len(set(waits[-3:])) > 1 or waits[-1] == CAP  # jittered, or capped
    assert held.attempts == 12 and held.delivery is Delivery.QUEUED

    clock.now = msg.created_at + GIVE_UP
    await buyer.mailbox.retry_later([msg.id], clock.now, "unreachable")
    (held,) = await buyer.mailbox.outgoing(msg.order)
    assert held.delivery_text() == "failed: not delivered in 14 days"
    # Never dropped: a gap would stop the store at this seq for good. Still due at the cap interval.
    assert held.delivery is Delivery.QUEUED and held.next_try - clock.now <= CAP
    assert [m.id for m in (await buyer.mailbox.due(clock.now + CAP))[msg.peer]] == [msg.id]
    clock.now = msg.created_at + wire.MSG_TTL  # past its lifetime no receiver takes it: failed for good
    await buyer.mailbox.retry_later([msg.id], clock.now, "unreachable")
    (held,) = await buyer.mailbox.outgoing(msg.order)
    assert held.delivery_text() == "failed: expired before it was delivered"
    assert await buyer.mailbox.due(clock.now + 10 * DAY) == {}


async def test_a_message_given_up_on_is_still_offered_and_delivered_when_acked(buyer, vendor, keys, clock):
    a, b = await place(buyer, keys, "b")
    clock.now += GIVE_UP
    assert await buyer.mailbox.give_up_old(clock.now) == [a.id, b.id]
    assert await buyer.mailbox.give_up_old(clock.now) == []  # marked once
    pending = await buyer.mailbox.pending_for(a.peer, a.order)
    assert [m.id for m in pending] == [a.id, b.id]  # a vendor still hands them to a poll
    assert [m.delivery_text() for m in pending] == ["failed: not delivered in 14 days"] * 2
    got = await receive(vendor, [raw(a), raw(b)], clock)
    assert await buyer.mailbox.mark_delivered(got.acks) == [a.id, b.id]
    assert [m.delivery_text() for m in await buyer.mailbox.outgoing(a.order)] == ["delivered", "delivered"]


async def test_give_up_old_and_fail(buyer, keys, clock):
    a, b = await place(buyer, keys, "b")
    await buyer.mailbox.fail([b.id], "the store refused it")
    clock.now += GIVE_UP
    assert await buyer.mailbox.give_up_old(clock.now) == [a.id]
    texts = [m.delivery_text() for m in await buyer.mailbox.outgoing(a.order)]
    assert texts == ["failed: not delivered in 14 days", "failed: the store refused it"]
    assert [m.id for m in await buyer.mailbox.pending_for(a.peer, a.order)] == [a.id]
    assert (await buyer.mailbox.counts())["failed"] == 1
    clock.now = a.created_at + wire.MSG_TTL
    assert await buyer.mailbox.give_up_old(clock.now) == [a.id]
    assert await buyer.mailbox.pending_for(a.peer, a.order) == []
    assert (await buyer.mailbox.counts())["failed"] == 2


# -- applying ------------------------------------------------------------------------
async def test_transient_failure_keeps_the_message_and_the_order(buyer, vendor, keys, clock):
    order_key, _, order = keys
    sent = await place(buyer, keys, "b", "c")
    await receive(vendor, [raw(m) for m in sent], clock)
    calls: list[int] = []

    async def flaky(msg: InMessage) -> None:
        calls.append(msg.seq)
        if msg.seq == 2 and calls.count(2) == 1:
            raise Unavailable("wallet down")

    assert await vendor.mailbox.apply_ready(order, order_key.onion, flaky) == 1
    assert [m.applied for m in await vendor.mailbox.incoming(order)] == ["applied", "", ""]
    assert await vendor.mailbox.unapplied() == [(order, order_key.onion)]
    assert await vendor.mailbox.apply_ready(order, order_key.onion, flaky) == 2
    assert calls == [1, 2, 2, 3]


async def test_permanent_failure_marks_rejected_and_moves_on(buyer, vendor, keys, clock):
    order_key, _, order = keys
    sent = await place(buyer, keys, "b")
    await receive(vendor, [raw(m) for m in sent], clock)

    async def refuse_order(msg: InMessage) -> None:
        if msg.kind == "order":
            raise ApplyError("the price changed: it is now 12000 sat; check out again")
        await vendor.apply(msg)

    assert await vendor.mailbox.apply_ready(order, order_key.onion, refuse_order) == 2
    applied = [m.applied for m in await vendor.mailbox.incoming(order)]
    assert applied == ["rejected: the price changed: it is now 12000 sat; check out again", "applied"]
    assert await vendor.mailbox.inbox_counts() == {"waiting": 0, "applied": 1, "rejected": 1}
    assert await vendor.mailbox.counts() == {"queued": 0, "sent": 0, "delivered": 0, "failed": 0}


async def test_concurrent_apply_runs_each_message_once(buyer, vendor, keys, clock):
    order_key, _, order = keys
    sent = await place(buyer, keys, *[str(i) for i in range(30)])
    await receive(vendor, [raw(m) for m in sent], clock)

    async def slow(msg: InMessage) -> None:
        await asyncio.sleep(0)
        await vendor.apply(msg)

    counts = await asyncio.gather(*(vendor.mailbox.apply_ready(order, order_key.onion, slow) for _ in range(4)))
    assert sum(counts) == 31
    assert [m.seq for m in vendor.applied] == list(range(1, 32))


async def test_nothing_is_lost_across_a_restart(tmp_path, clock, keys, buyer, vendor):
    order_key, store_key, order = keys
    sent = await place(buyer, keys, "b")
    await receive(vendor, [raw(sent[0])], clock)  # seq 1 arrives (its ack is lost); then both nodes stop
    await buyer.db.close()
    await vendor.db.close()
    buyer2 = await open_side(tmp_path / "buyer.sqlite", clock)
    vendor2 = await open_side(tmp_path / "vendor.sqlite", clock)
    vendor2.add(store_key)
    try:
        due = await buyer2.mailbox.due(clock.now)
        assert [m.id for m in due[store_key.onion]] == [m.id for m in sent]
        got = await receive(vendor2, [envelope.loads(m.raw) for m in due[store_key.onion]], clock)
        assert [m.seq for m in got.new] == [2] and len(got.acks) == 2
        assert await vendor2.mailbox.apply_ready(order, order_key.onion, vendor2.apply) == 2
        assert await buyer2.mailbox.mark_delivered(got.acks) == [m.id for m in sent]
    finally:
        await buyer2.db.close()
        await vendor2.db.close()
