"""The vendor's side of orders from buyers' nodes, on a real regtest bitcoind (node_orders_vendor_kit.py).

The buyer's node is simulated: an order key, the "buyer" wallet, its own real
``Mailbox``; messages go through both mailboxes in-process. The vendor side is
the real ``Payments`` + ``NodeOrders`` over the escrow world's store and moderator.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest

from node.adapters.bitcoin import BitcoinCore
from node.core import envelope, reviews
from node.core.crypto import StoreKey
from node.core.errors import Conflict, NotFound, StorageError, Unauthorized, ValidationError
from node.core.models import Sats
from node.messaging import boxes, wire
from node.messaging.models import Delivery, InMessage
from node.payments import node_orders_apply
from node.payments.checkout import NodeBuyer
from node.payments.models import Order, OrderState, Party, PayoutKind
from tests.integration.escrow_world import AMOUNT
from tests.integration.node_orders_vendor_kit import SHIP_TO, Buyer, Pair, open_pair
from tests.regtest import Regtest

S = OrderState


@pytest.fixture
async def pair(
    regtest: Regtest, vendor_core: BitcoinCore, moderator_core: BitcoinCore, tmp_path: Path
) -> AsyncIterator[Pair]:
    async with open_pair(regtest, vendor_core, moderator_core, tmp_path) as p:
        yield p


def kinds(messages: list[InMessage]) -> list[str]:
    return [m.kind for m in messages]


def states(messages: list[InMessage]) -> list[object]:
    return [m.body["state"] for m in messages if m.kind == "state"]


async def paid(pair: Pair, buyer: Buyer) -> Order:
    """The node order paid by the buyer's wallet, confirmed and accepted."""
    w, p = pair.w, pair.p
    order = await p.order(buyer.order)
    w.pay(order.escrow.address, AMOUNT)
    await p.watch_once()
    w.regtest.mine(1)
    await p.watch_once()
    assert (await p.order(buyer.order)).state is S.CONFIRMED
    await w.moderator.watch_once()
    return await p.accept(buyer.order)


async def test_a_node_order_is_placed_and_the_buyer_told_its_escrow(pair: Pair) -> None:
    w, p = pair.w, pair.p
    buyer, received = await pair.place()
    assert not received.refused and len(received.acks) == 1
    order = await p.order(buyer.order)  # the buyer's own order id
    assert order.state is S.AWAITING_PAYMENT and order.amount_sat == AMOUNT
    assert order.extra["peer"] == buyer.address and order.extra["channel"] == "node"
    assert len(order.token_hash) == 64
    ship_to, _ = await p.reveal(order)
    assert ship_to == SHIP_TO and SHIP_TO not in order.ship_to_sealed
    assert await p.available(pair.store, w.listing_id) == {None: 4}

    told = await pair.fetch(buyer)
    assert kinds(told) == ["escrow", "state"] and [m.seq for m in told] == [1, 2]
    body = told[0].body
    escrow = body["escrow"]
    assert isinstance(escrow, Mapping)
    assert escrow["address"] == order.escrow.address and escrow["descriptor"] == order.escrow.descriptor
    assert escrow["buyer"] == order.escrow.buyer.descriptor_key() and escrow["timeout_blocks"] == 20
    assert body["amount_sat"] == AMOUNT and body["pay_by"] == order.pay_by
    assert body["vendor_address"] == order.vendor_address and body["accept_window"] == 3600
    item = body["item"]
    assert isinstance(item, Mapping) and item["listing"] == w.listing_id and item["shipping_sat"] == 5_000
    answer = envelope.open_(body["moderator_answer"], now=w.clock(), expected_type="pasar.moderation.key")
    assert answer["store"] == w.moderator.onion
    assert answer["body"]["order_id"] == buyer.order and answer["body"]["address"] == order.escrow.address
    assert told[1].body["state"] == "awaiting_payment" and told[1].body["index"] == 0
    sent = await pair.vendor_box.outgoing(buyer.order)
    assert {m.delivery for m in sent} == {Delivery.DELIVERED}  # the buyer's acks came back
    assert [m.delivery for m in await pair.buyer_box.outgoing(buyer.order)] == [Delivery.DELIVERED]
    assert await pair.fetch(buyer) == told  # nothing new; nothing sent twice


async def refusal(pair: Pair, buyer: Buyer) -> Mapping[str, object]:
    with pytest.raises(NotFound):
        await pair.p.order(buyer.order)  # nothing stored
    told = await pair.fetch(buyer)
    assert kinds(told) == ["refused"]
    return told[0].body


async def test_orders_the_store_will_not_take_are_refused(pair: Pair) -> None:
    w, p = pair.w, pair.p
    buyer, _ = await pair.place(qty=6)
    body = await refusal(pair, buyer)
    problems = body["fields"]
    assert "only 5 left" in str(body["reason"]) and isinstance(problems, Mapping) and "qty" in problems
    buyer, _ = await pair.place(amount_sat=AMOUNT - 1)
    body = await refusal(pair, buyer)
    assert body["reason"] == f"the price changed: it is now {AMOUNT} sat; check out again"
    buyer, _ = await pair.place(listing_hash="sha256:" + "0" * 64)
    assert str((await refusal(pair, buyer))["reason"]).startswith("the listing changed since your node read it")
    buyer, _ = await pair.place(moderator=StoreKey.generate().onion)
    assert "does not work with that moderator" in str((await refusal(pair, buyer))["reason"])
    assert await p.available(pair.store, w.listing_id) == {None: 5}  # nothing held

    tor_order, _token = await p.checkout(pair.store, w.form())  # a Tor-Browser order holds this id
    _, received = await pair.place(order=tor_order.id)
    assert [reason for _, reason in received.refused] == ["this order id is taken on this store: choose another"]
    first, _ = await pair.place()
    _, received = await pair.place(order=first.order)  # another key, the same id
    assert len(received.refused) == 1
    node = NodeBuyer(order_id=first.order, peer=first.address, amount_sat=Sats(AMOUNT))
    with pytest.raises(Conflict, match="already used"):
        await p.checkout(pair.store, w.form(), node=node)
    assert (await p.order(first.order)).extra["peer"] == first.address


async def test_a_transient_failure_is_retried_then_refused_after_the_payment_window(pair: Pair) -> None:
    w, p, nodes = pair.w, pair.p, pair.nodes
    w.http.offline = True  # the moderator's node does not answer
    buyer, received = await pair.place()
    assert not received.refused  # stored and acked: it waits
    assert [m.applied for m in await pair.vendor_box.incoming(buyer.order)] == [""]
    assert await nodes.retry_once() == 0
    w.http.offline = False
    assert await nodes.retry_once() == 1
    assert kinds(await pair.fetch(buyer)) == ["escrow", "state"]

    w.http.offline = True
    late, _ = await pair.place()
    w.clock.t += w.settings.payment_window + 1
    assert await nodes.retry_once() == 1
    body = await refusal(pair, late)
    assert body["reason"] == "the store could not take the order in time; order again later"
    with pytest.raises(NotFound):
        await p.order(late.order)


async def test_release_through_messages_then_a_review(pair: Pair) -> None:
    w, p = pair.w, pair.p
    buyer, _ = await pair.place()
    await paid(pair, buyer)
    order = await p.fulfill(buyer.order, "sent by post")
    told = await pair.fetch(buyer)
    assert states(told) == ["awaiting_payment", "funded", "confirmed", "accepted", "fulfilled"]
    assert told[-1].kind == "payout"
    payout = told[-1].body["payout"]
    assert isinstance(payout, Mapping) and order.pending is not None
    assert payout["kind"] == "release" and payout["psbt"] == order.pending.psbt
    assert payout["outputs"] == [
        {"address": order.vendor_address, "amount_sat": AMOUNT - order.pending.fee_sat, "role": "vendor"}
    ]
    assert told[2].body["paid_sat"] == AMOUNT

    await pair.send(buyer, "psbt", {"payout": "release", "psbt": str(payout["psbt"])})  # not signed by the buyer
    await pair.send(buyer, "psbt", {"payout": "release", "psbt": w.buyer_sign(str(payout["psbt"]))})
    await pair.deliver(buyer)
    applied = [m.applied for m in await pair.vendor_box.incoming(buyer.order) if m.kind == "psbt"]
    assert applied[0].startswith("rejected: ") and applied[1] == "applied", applied
    assert any("psbt message was refused" in str(m.body["note"]) for m in await pair.fetch(buyer) if m.kind == "state")
    sent = await p.order(buyer.order)
    assert sent.pending is not None and sent.pending.txid is not None and w.regtest.in_mempool(sent.pending.txid)
    assert Party.BUYER in sent.pending.signed_by and sent.pending.kind is PayoutKind.RELEASE
    w.regtest.mine(1)
    await p.watch_once()
    done = await p.order(buyer.order)
    assert done.state is S.COMPLETED
    told = await pair.fetch(buyer)
    assert told[-1].body["state"] == "completed" and told[-1].body["txid"] == sent.pending.txid
    assert sum(1 for m in told if m.kind == "payout") == 1

    funding = done.payouts[-1].inputs[0]
    block = w.regtest.cli("gettransaction", funding[0], wallet="buyer")["blockhash"]

    # The store's receipt came with the escrow message: bound to this order, the buyer's key, the escrow, the listing.
    (escrow_msg,) = [m for m in told if m.kind == "escrow"]
    given = escrow_msg.body["receipt"]
    assert isinstance(given, dict)
    receipt = reviews.verify_receipt(given, store=pair.store, now=w.clock())
    bound = (receipt.order, receipt.buyer, receipt.address, receipt.listing_hash)
    assert bound == (buyer.order, buyer.address, done.escrow.address, done.item.listing_hash)
    # Another key cannot use the buyer's receipt; even a receipt the store signed for that key is refused.
    thief = StoreKey.generate()
    misissued = reviews.seal_receipt(
        await w.market.key(pair.store),
        order=buyer.order,
        buyer=thief.onion,
        address=done.escrow.address,
        listing_hash=done.item.listing_hash,
        now=w.clock(),
    )

    def review(key: StoreKey, receipt: Mapping[str, object]) -> dict[str, object]:
        made = reviews.build(
            key,
            store=pair.store,
            order=buyer.order,
            listing=w.listing_id,
            listing_hash=done.item.listing_hash,
            outpoint=f"{funding[0]}:{funding[1]}",
            block=block,
            address=done.escrow.address,
            rating=5,
            text="warm socks",
            receipt=receipt,
            now=w.clock(),
        )
        return made.envelope()

    with pytest.raises(ValidationError):
        review(thief, given)
    await pair.send(buyer, "review", {"review": review(thief, misissued)})
    await pair.send(buyer, "review", {"review": review(buyer.key, given)})
    await pair.deliver(buyer)
    held = sorted((m for m in await pair.vendor_box.incoming(buyer.order) if m.kind == "review"), key=lambda m: m.seq)
    assert [m.applied for m in held] == [
        "rejected: the review is not signed by the key that placed this order",
        "applied",
    ]
    catalog = json.loads((await w.market.snapshot(pair.store)).envelope_bytes)
    assert [r["body"]["text"] for r in catalog["body"]["reviews"]] == ["warm socks"]
    await pair.nodes.apply(held[1])  # applied again (a crash before the mailbox's mark): not counted twice
    assert (await p.order(buyer.order)).extra["reviews"] == "1"

    # Each replacement re-signs the catalog: at most 5 per order, an hour apart; others are refused with a reason.
    async def replace() -> str:
        await pair.send(buyer, "review", {"review": review(buyer.key, given)})
        await pair.deliver(buyer)
        newest = max(
            (m for m in await pair.vendor_box.incoming(buyer.order) if m.kind == "review"), key=lambda m: m.seq
        )
        return newest.applied

    assert (await replace()).startswith("rejected: a review may be replaced once an hour")
    for _ in range(5):
        w.clock.t += 3600
        assert await replace() == "applied"
    w.clock.t += 3600
    assert (await replace()).startswith("rejected: this order's review was replaced 5 times already")


async def test_messages_are_boxed_end_to_end_and_sealed_at_rest_and_a_dispute(pair: Pair, tmp_path: Path) -> None:
    w, p, nodes = pair.w, pair.p, pair.nodes
    buyer, _ = await pair.place()
    await paid(pair, buyer)
    secret = "where are my socks? ring twice"
    await pair.send(buyer, "message", {"text": boxes.box(buyer.key, pair.store, secret)})
    await pair.deliver(buyer)
    order = await p.order(buyer.order)
    assert order.messages[-1].sender is Party.BUYER and secret not in order.messages[-1].sealed
    _, opened = await p.reveal(order)
    assert opened[-1][1] == secret
    (msg,) = [m for m in await pair.vendor_box.incoming(buyer.order) if m.kind == "message"]
    await nodes.apply(msg)  # applied again (a crash before the mailbox's mark): nothing added
    assert len((await p.order(buyer.order)).messages) == 1
    for path in tmp_path.rglob("*.sqlite*"):
        assert secret.encode() not in path.read_bytes(), path

    await p.vendor_message(buyer.order, "posted on Monday")
    told = await pair.fetch(buyer)
    assert told[-1].kind == "message" and "posted" not in str(told[-1].body["text"])
    assert boxes.unbox(buyer.key, pair.store, str(told[-1].body["text"])) == "posted on Monday"

    await pair.send(buyer, "dispute", {"statement": boxes.box(buyer.key, pair.store, "nothing came")})
    await pair.deliver(buyer)
    order = await p.order(buyer.order)
    assert order.state is S.DISPUTED and order.dispute is not None
    assert order.dispute.statements == ((Party.BUYER, "nothing came"),) and order.dispute.sent_at is not None
    (case,) = await w.moderator.disputes()
    assert [s for _, s in case.statements] == ["nothing came"]
    assert states(await pair.fetch(buyer))[-1] == "disputed"


async def test_sync_repairs_a_change_nobody_was_told_of_and_is_idempotent(pair: Pair) -> None:
    p = pair.p
    buyer, _ = await pair.place()
    before = await pair.vendor_box.outgoing(buyer.order)
    p.on_change = None  # the node dies between the order's write and its message
    await p.vendor_message(buyer.order, "we ship on Mondays")
    pair.w.clock.t += 1  # told in the order things happened (by time)
    await p.refund(buyer.order, "out of wool")  # cancelled before payment: expired (final)
    assert await pair.vendor_box.outgoing(buyer.order) == before
    pair.restart()
    await pair.nodes.sync_all()  # at start
    after = await pair.vendor_box.outgoing(buyer.order)
    assert [m.kind for m in after] == ["escrow", "state", "message", "state"]
    assert [m.seq for m in after] == [1, 2, 3, 4]
    await pair.nodes.sync_all()
    await pair.nodes.sync(await p.order(buyer.order))
    pair.restart()
    await pair.nodes.sync_all()
    assert await pair.vendor_box.outgoing(buyer.order) == after
    assert states(await pair.fetch(buyer)) == ["awaiting_payment", "expired"]


async def test_run_applies_what_waits_and_polls_need_the_buyer_key(pair: Pair) -> None:
    w, p, nodes = pair.w, pair.p, pair.nodes
    w.http.offline = True
    buyer, _ = await pair.place()
    w.http.offline = False
    task = asyncio.create_task(nodes.run())
    try:
        deadline = time.monotonic() + 30
        while len(await pair.vendor_box.outgoing(buyer.order)) < 2 and time.monotonic() < deadline:
            nodes.wake()
            await asyncio.sleep(0.05)  # polling a condition, bounded by the deadline
        assert (await p.order(buyer.order)).extra["peer"] == buyer.address
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    stranger = wire.seal_poll(StoreKey.generate(), order=buyer.order, store=pair.store, now=w.clock())
    with pytest.raises(Unauthorized):
        await nodes.answer(pair.store, stranger, w.clock())
    other_store = wire.seal_poll(buyer.key, order=buyer.order, store=StoreKey.generate().onion, now=w.clock())
    with pytest.raises(ValidationError):
        await nodes.answer(pair.store, other_store, w.clock())
    assert [m.delivery for m in await pair.vendor_box.outgoing(buyer.order)] == [Delivery.QUEUED] * 2
    assert kinds(await pair.fetch(buyer)) == ["escrow", "state"]


async def test_an_order_id_the_moderator_keyed_before_a_crash_is_refused_at_once(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = pair.p.ctx.store

    async def crash(*_: object, **__: object) -> Order:
        raise StorageError("the node died before the order was stored")

    monkeypatch.setattr(store, "insert", crash)  # after the moderator's key and the escrow import
    buyer, _ = await pair.place()
    assert [m.applied for m in await pair.vendor_box.incoming(buyer.order)] == [""]  # waits
    monkeypatch.undo()
    assert await pair.nodes.retry_once() == 1  # new vendor keys: the moderator refuses the id
    body = await refusal(pair, buyer)
    assert "already gave order" in str(body["reason"]) and "place the order again" in str(body["reason"])


async def test_the_retry_loop_leaves_this_nodes_own_purchases_alone(pair: Pair) -> None:
    """The node is also a buyer: a store's message on its purchase waits in the same mailbox (the courier's)."""
    now = pair.w.clock()
    shop, mine = StoreKey.generate(), StoreKey.generate()
    order = wire.new_order_id()
    await pair.vendor_box.send(mine, peer=shop.onion, order=order, kind="order", fields={}, to=shop.onion)
    body = wire.message_body(wire.new_message_id(), order, "state", mine.onion, {"state": "funded"})
    env = envelope.seal(shop, wire.MSG_TYPE, body, seq=1, issued_at=now, expires_at=now + 600)

    async def anyone(order: str, sender: str) -> str | None:
        return None

    got = await pair.vendor_box.receive([env], me=lambda to: mine if to == mine.onion else None, party=anyone, now=now)
    assert len(got.new) == 1
    assert await pair.nodes.retry_once() == 0
    assert [m.applied for m in await pair.vendor_box.incoming(order)] == [""]


async def test_a_hostile_buyer_node_cannot_grow_the_order_without_bound(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_orders_apply, "MAX_MESSAGES", 2)
    buyer, _ = await pair.place()
    for text in ("one", "two", "three"):
        await pair.send(buyer, "message", {"text": boxes.box(buyer.key, pair.store, text)})
    for kind in ("teapot", "kettle", "teapot"):  # kinds a store does not take: one note for all
        await pair.send(buyer, kind, {})
    for _ in range(3):  # signed payouts when none waits: noted once
        await pair.send(buyer, "psbt", {"payout": "release", "psbt": "cHNidP8="})
    await pair.deliver(buyer)
    held = sorted((m for m in await pair.vendor_box.incoming(buyer.order) if m.kind == "message"), key=lambda m: m.seq)
    assert [m.applied for m in held][:2] == ["applied", "applied"]
    assert held[2].applied.startswith("rejected: this order holds 2 messages")
    order = await pair.p.order(buyer.order)
    assert len(order.messages) == 2
    notes = [h.note for h in order.history if h.note.startswith("the buyer's")]
    assert notes == [
        "the buyer's message message was refused: this order holds 2 messages, the most it takes:"
        " write to the store another way",
        "the buyer's other message was refused (3 times; last: a store does not take 'teapot' messages)",
        "the buyer's node sent a signed payout, but none waits for the buyer's signature: ignored",
    ]
