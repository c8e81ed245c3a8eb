"""The buyer's node on the real regtest bitcoind: place, check the escrow, pay, sign payouts, review.

The store's node is played by hand (tests/integration/purchase_world.py): its messages are signed
with the store key and go through the buyer's real mailbox; its PSBTs are built and signed by the
"vendor" wallet. The buyer's wallet ("buyer") gives the keys, pays, and signs.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from node.adapters.bitcoin import BitcoinCore
from node.adapters.messages_schema import open_messages_db
from node.adapters.purchases_schema import open_purchase_db
from node.core import reviews
from node.core.errors import Conflict, NotFound, ValidationError, WalletError
from node.messaging import boxes
from node.messaging.mailbox import Mailbox
from node.payments.settings import PaymentSettings
from node.purchases.models import Note
from node.purchases.service import Purchases
from tests.conftest import watch_name
from tests.integration.purchase_world import (
    AMOUNT,
    FEE,
    MODERATOR,
    MODERATOR_FEE,
    STORE,
    STORE_KEY,
    Directory,
    StoreSide,
    catalog,
    request,
)
from tests.regtest import Regtest


@dataclass
class World:
    purchases: Purchases
    store: StoreSide
    buyer: BitcoinCore
    regtest: Regtest
    published: list[bytes]
    woken: list[int]


@pytest.fixture
async def world(tmp_path, regtest, vendor_core, moderator_core) -> AsyncIterator[World]:
    buyer = regtest.adapter("buyer", watch_name("buyer"))
    await buyer.ensure_wallets()
    pdb, mdb = (
        await open_purchase_db(tmp_path / "purchases.sqlite"),
        await open_messages_db(tmp_path / "messages.sqlite"),
    )
    mailbox = Mailbox(mdb, retry_first=15, retry_cap=3600, give_up=14 * 86400)
    purchases = Purchases(pdb, mailbox, buyer, Directory(catalog(int(time.time()))), PaymentSettings(network="regtest"))
    published: list[bytes] = []
    woken: list[int] = []

    async def publish(raw: bytes) -> None:
        published.append(raw)

    purchases.attach(wake=lambda: woken.append(1), publish_review=publish)
    yield World(
        purchases, StoreSide(regtest, vendor_core, moderator_core, mailbox, purchases), buyer, regtest, published, woken
    )
    await pdb.close()
    await mdb.close()
    regtest.cli("unloadwallet", buyer.watch_wallet, False)
    buyer.close()


async def purchase_ops(w: World, order: str) -> dict:
    """The purchase as ``GET /api/v1/purchases/<id>`` shows it."""
    from types import SimpleNamespace

    from node.operations import purchases as P

    return dict(await P.purchases_show.call(SimpleNamespace(purchases=w.purchases), P.PurchaseRef(order)))


async def funded(w: World) -> str:
    """A purchase placed, its escrow answered and checked, paid from the buyer's wallet and mined."""
    p = await w.purchases.place(request())
    assert await w.store.send(p.id, "escrow", await w.store.escrow_fields(p.id)) == "applied"
    p = await w.purchases.get(p.id)
    assert p.state == "awaiting_payment" and p.escrow is not None
    p = await w.purchases.pay(p.id, address=p.escrow.address, amount_sat=AMOUNT)
    assert p.paid_txid is not None
    w.regtest.sync()
    w.regtest.mine(1)
    await w.purchases.watch_once()
    return p.id


async def test_place_queues_the_order_priced_from_the_signed_catalog(world: World):
    p = await world.purchases.place(request())
    assert (p.state, p.amount_sat, p.store, p.moderator, p.store_timeout) == ("queued", AMOUNT, STORE, MODERATOR, 144)
    assert world.woken and await world.purchases.open_orders() == [(STORE, p.id)]
    body = await world.store.order_message(p.id)
    assert (body["kind"], body["amount_sat"], body["qty"], body["shipping"], body["to"]) == (
        "order",
        AMOUNT,
        2,
        "post",
        STORE,
    )
    assert body["buyer_key"] == p.buyer_key.descriptor_key() and body["refund_address"] == p.refund_address
    assert world.store.unbox(p, body["ship_to"]) == "1 Tea Road"  # only the store's key opens it
    info = world.regtest.cli("getaddressinfo", p.refund_address, wallet="buyer")
    assert info["ismine"]
    [sent] = (await world.purchases.detail(p.id)).outgoing
    assert sent.delivery_text() == "queued" and sent.seq == 1


async def test_place_refuses_what_the_catalog_does_not_say(world: World, tmp_path):
    with pytest.raises(NotFound, match="crawl it"):
        await world.purchases.place(request(store=MODERATOR))
    with pytest.raises(ValidationError, match="onion address"):
        await world.purchases.place(request(store="a" * 56))
    with pytest.raises(ValidationError, match="moderator"):
        await world.purchases.place(request(moderator="b" * 56))
    with pytest.raises(ValidationError, match="at most 10"):
        await world.purchases.place(request(qty=11))
    with pytest.raises(ValidationError, match="choose one of: post"):
        await world.purchases.place(request(shipping="drone"))
    with pytest.raises(NotFound, match="no listing"):
        await world.purchases.place(request(listing="nope"))
    assert await world.purchases.list() == []


async def test_release_flow_pays_the_escrow_and_the_buyer_signs_and_broadcasts(world: World):
    order = await funded(world)
    built, pay_to = world.store.escrows[order]
    coins = await world.store.vendor.unspent([built.address])
    assert [c.amount_sat for c in coins] == [AMOUNT] and coins[0].confirmations == 1  # the money really arrived
    p = await world.purchases.get(order)
    assert p.funding == ((coins[0].txid, coins[0].vout, AMOUNT),) and p.funding_block is not None
    with pytest.raises(Conflict, match="paid already"):
        await world.purchases.pay(order)
    for index, state in enumerate(("funded", "confirmed", "accepted", "fulfilled"), start=1):
        assert await world.store.state(order, state, index) == "applied"
    with pytest.raises(Conflict, match="no release waiting"):
        await world.purchases.release(order)
    psbt = await world.store.payout_psbt(order, [(pay_to, AMOUNT - FEE)])
    assert await world.store.payout(order, "release", psbt, [(pay_to, AMOUNT - FEE, "vendor")]) == "applied"
    p = await world.purchases.get(order)
    assert p.state == "fulfilled" and p.pending is not None and not p.pending.signed  # a release waits for the buyer
    p = await world.purchases.release(order)
    assert p.pending is not None and p.pending.signed and p.pending.txid is not None
    assert world.regtest.in_mempool(p.pending.txid)
    sent = [m for m in (await world.purchases.detail(order)).outgoing if m.kind == "psbt"]
    assert len(sent) == 1 and json.loads(sent[0].raw)["body"]["payout"] == "release"
    world.regtest.mine(1)
    assert await world.store.state(order, "completed", 5, txid=p.pending.txid) == "applied"
    p = await world.purchases.review(order, 5, "Lovely socks")
    review = reviews.verify(p.review, now=p.updated_at)
    assert (review.store, review.order, review.rating, review.address) == (STORE, order, 5, built.address)
    assert review.outpoint == f"{p.funding[0][0]}:{p.funding[0][1]}" and review.block == p.funding_block
    assert world.published == [review.raw]
    assert [m.kind for m in (await world.purchases.detail(order)).outgoing][-1] == "review"
    assert await world.purchases.open_orders() == []


async def test_a_refund_is_signed_at_once(world: World):
    order = await funded(world)
    refund = (await world.purchases.get(order)).refund_address
    assert await world.store.state(order, "declined", 1) == "applied"
    psbt = await world.store.payout_psbt(order, [(refund, AMOUNT - FEE)])
    before = world.regtest.balance("buyer")
    assert await world.store.payout(order, "refund", psbt, [(refund, AMOUNT - FEE, "buyer")]) == "applied"
    p = await world.purchases.get(order)
    assert p.pending is not None and p.pending.signed and p.pending.txid is not None
    world.regtest.mine(1)
    assert world.regtest.balance("buyer") == before + AMOUNT - FEE


def split_shares(world: World, order: str, refund: str, fee: int = MODERATOR_FEE) -> list[tuple[str, int, str]]:
    _, pay_to = world.store.escrows[order]
    fee_to = world.regtest.address("moderator")
    return [(refund, 60_000, "buyer"), (pay_to, AMOUNT - 60_000 - fee - FEE, "vendor"), (fee_to, fee, "moderator")]


async def test_a_split_signed_by_the_moderators_wallet_is_signed_at_once(world: World):
    order = await funded(world)
    shares = split_shares(world, order, (await world.purchases.get(order)).refund_address)
    psbt = await world.store.payout_psbt(order, [(a, n) for a, n, _ in shares], signer=world.store.moderator)
    assert await world.store.state(order, "decided", 1) == "applied"
    assert await world.store.payout(order, "split", psbt, shares) == "applied"
    p = await world.purchases.get(order)
    assert p.pending is not None and p.pending.signed and p.pending.txid is not None  # moderator + buyer: complete
    assert world.regtest.in_mempool(p.pending.txid)


async def test_a_split_without_the_moderators_signature_or_over_its_fee_is_never_signed(world: World):
    order = await funded(world)
    refund = (await world.purchases.get(order)).refund_address
    assert await world.store.state(order, "disputed", 1) == "applied"
    shares = split_shares(world, order, refund)
    vendor_only = await world.store.payout_psbt(order, [(a, n) for a, n, _ in shares])  # no moderator signature
    said = await world.store.payout(order, "split", vendor_only, shares)
    assert said.startswith("rejected: ") and "moderator's signature" in said
    # the vendor's own address marked "moderator", taking nearly everything (signed by the vendor and moderator)
    greedy = [(refund, 1_000, "buyer"), (world.regtest.address("vendor"), AMOUNT - 1_000 - FEE, "moderator")]
    psbt = await world.store.payout_psbt(order, [(a, n) for a, n, _ in greedy], signer=world.store.moderator)
    said = await world.store.payout(order, "split", psbt, greedy)
    assert said.startswith("rejected: ") and "agreed fee" in said
    p = await world.purchases.get(order)
    assert p.pending is None and not [m for m in (await world.purchases.detail(order)).outgoing if m.kind == "psbt"]
    view = await purchase_ops(world, order)
    assert "agreed fee" in view["payout_refused"]


async def test_a_split_outside_a_dispute_waits_and_is_signed_once_the_store_reports_one(world: World):
    order = await funded(world)
    shares = split_shares(world, order, (await world.purchases.get(order)).refund_address)
    psbt = await world.store.payout_psbt(order, [(a, n) for a, n, _ in shares], signer=world.store.moderator)
    assert await world.store.payout(order, "split", psbt, shares) == "applied"
    p = await world.purchases.get(order)
    assert p.pending is not None and not p.pending.signed and "only in a dispute" in p.pending.waiting
    await world.purchases.watch_once()
    assert not (await world.purchases.get(order)).pending.signed
    view = await purchase_ops(world, order)
    assert "only in a dispute" in view["pending_payout"]["waiting"] and not view["disputed"]
    assert await world.store.state(order, "decided", 1) == "applied"
    await world.purchases.watch_once()  # the watcher's retry: in dispute now
    p = await world.purchases.get(order)
    assert p.pending.signed and p.pending.waiting == "" and world.regtest.in_mempool(p.pending.txid)


async def test_tampered_payouts_are_refused_and_nothing_is_signed(world: World):
    order = await funded(world)
    _, pay_to = world.store.escrows[order]
    stranger = world.regtest.address("miner")
    extra = await world.store.payout_psbt(order, [(pay_to, AMOUNT - FEE - 20_000), (stranger, 20_000)])
    said = await world.store.payout(order, "release", extra, [(pay_to, AMOUNT - FEE - 20_000, "vendor")])
    assert said.startswith("rejected: ") and "not in the agreed payout" in said
    elsewhere = await world.store.payout_psbt(order, [(stranger, AMOUNT - FEE)])
    said = await world.store.payout(order, "release", elsewhere, [(stranger, AMOUNT - FEE, "vendor")])
    assert "not to its escrow-time address" in said
    # more than the order's amount to the vendor: the escrow holds more (a second payment), the vendor takes it
    built, _ = world.store.escrows[order]
    world.regtest.fund("miner", built.address, 50_000)
    world.regtest.mine(1)
    greedy = await world.store.payout_psbt(order, [(pay_to, AMOUNT + 50_000 - FEE)])
    said = await world.store.payout(order, "release", greedy, [(pay_to, AMOUNT + 50_000 - FEE, "vendor")])
    assert "more than the order's" in said
    p = await world.purchases.get(order)
    assert p.pending is None and sum("refused the store's payout" in e.note for e in p.history) == 3
    assert not [m for m in (await world.purchases.detail(order)).outgoing if m.kind == "psbt"]


async def test_a_tampered_escrow_refuses_the_purchase_and_it_is_never_payable(world: World):
    p = await world.purchases.place(request())
    wrong_b = await world.store.escrow_fields(p.id)
    wrong_b["escrow"] = wrong_b["escrow"] | {"buyer": (await world.store.vendor.new_key()).pubkey}
    said = await world.store.send(p.id, "escrow", wrong_b)
    assert said.startswith("rejected: ") and "buyer key" in said
    p = await world.purchases.get(p.id)
    assert p.state == "refused" and p.escrow is None and "buyer key" in p.reason
    with pytest.raises(Conflict, match="refused"):
        await world.purchases.pay(p.id)
    assert await world.store.send(p.id, "escrow", await world.store.escrow_fields(p.id)) == "applied"
    assert (await world.purchases.get(p.id)).state == "refused"  # the first answer stands


async def test_messages_both_ways_and_a_dispute(world: World):
    order = await funded(world)
    p = await world.purchases.message(order, "When does it ship?")
    [note] = p.notes
    sent = {m.id: m for m in (await world.purchases.detail(order)).outgoing}
    body = json.loads(sent[note.id].raw)["body"]
    assert body["kind"] == "message" and world.store.unbox(p, body["text"]) == "When does it ship?"
    answer = boxes.box(STORE_KEY, await world.store.buyer(order), "Tomorrow")  # boxed to the buyer's order key
    assert await world.store.send(order, "message", {"text": answer}) == "applied"
    assert [(n.direction, n.text) for n in (await world.purchases.get(order)).notes] == [
        ("out", "When does it ship?"),
        ("in", "Tomorrow"),
    ]
    assert (await world.store.send(order, "message", {"text": "garbage"})).startswith("rejected: ")
    p = await world.purchases.dispute(order, "It never came")
    last = (await world.purchases.detail(order)).outgoing[-1]
    assert p.disputed and last.kind == "dispute"
    assert world.store.unbox(p, json.loads(last.raw)["body"]["statement"]) == "It never came"


async def test_what_a_crash_left_unsent_is_queued_by_the_watcher(world: World):
    p = await world.purchases.place(request())
    store = world.purchases._ctx.store
    lost = dataclasses.replace(p, id="ab" * 16)  # stored, then the node died before queuing its order
    note = Note(id="cd" * 16, at=p.created_at, direction="out", kind="message", text="hello")
    await store.insert(dataclasses.replace(lost, notes=(note,)))
    await world.purchases.watch_once()
    await world.purchases.watch_once()  # twice: nothing is queued twice
    assert [m.kind for m in (await world.purchases.detail(lost.id)).outgoing] == ["order", "message"]
    assert [m.kind for m in (await world.purchases.detail(p.id)).outgoing] == ["order"]


async def test_a_message_from_another_key_is_refused_by_the_mailbox(world: World):
    p = await world.purchases.place(request())
    assert await world.purchases.party(p.id, STORE) is None
    assert await world.purchases.party(p.id, MODERATOR) == "only the purchase's store may send on it"
    assert await world.purchases.party("ef" * 16, STORE) == "this node has no such purchase"


async def test_the_operations_over_the_service(world: World):
    from types import SimpleNamespace

    from node.operations import purchases as P

    ctx = SimpleNamespace(purchases=world.purchases)
    body = {"store": STORE, "listing": "lst000000001", "qty": 2, "shipping": "post", "moderator": MODERATOR}
    placed = await P.purchases_place.call(ctx, P.NewPurchase(body | {"ship_to": "1 Tea Road"}))
    assert P.purchases_place.status == 201 and placed["state"] == "queued" and placed["amount_sat"] == AMOUNT
    assert [(m["kind"], m["delivery"], m["direction"]) for m in placed["messages"]] == [("order", "queued", "out")]
    assert [p["id"] for p in await P.purchases_list.call(ctx, P.PurchaseQuery())] == [placed["id"]]
    await world.store.send(placed["id"], "escrow", await world.store.escrow_fields(placed["id"]))
    shown = await P.purchases_show.call(ctx, P.PurchaseRef(placed["id"]))
    assert shown["state"] == "awaiting_payment" and shown["escrow_address"] and shown["descriptor"]
    with pytest.raises(Conflict, match="not what was confirmed"):
        await P.purchases_pay.call(
            ctx, P.PurchaseBody(placed["id"], {"address": shown["escrow_address"], "amount_sat": 1})
        )
    paid = await P.purchases_pay.call(
        ctx, P.PurchaseBody(placed["id"], {"address": shown["escrow_address"], "amount_sat": AMOUNT})
    )
    assert paid["paid_txid"] and world.regtest.in_mempool(paid["paid_txid"])
    with pytest.raises(ValidationError, match="rating"):
        await P.purchases_review.call(ctx, P.PurchaseBody(placed["id"], {"rating": 6}))
    with pytest.raises(Conflict, match="completed"):
        await P.purchases_review.call(ctx, P.PurchaseBody(placed["id"], {"rating": 5, "text": "ok"}))
    said = await P.purchases_message.call(ctx, P.PurchaseBody(placed["id"], {"text": "hello"}))
    [message] = [m for m in said["messages"] if m["kind"] == "message"]
    assert (message["text"], message["delivery"], message["direction"]) == ("hello", "queued", "out")


async def test_core_down_while_applying_the_escrow_leaves_it_waiting_then_it_applies(world: World, monkeypatch):
    p = await world.purchases.place(request())
    real = world.buyer.watch

    async def down(descriptor: str) -> None:
        raise WalletError("Bitcoin Core did not answer importdescriptors")

    monkeypatch.setattr(world.buyer, "watch", down)
    assert await world.store.send(p.id, "escrow", await world.store.escrow_fields(p.id)) == ""  # waits, retried
    assert (await world.purchases.get(p.id)).escrow is None
    monkeypatch.setattr(world.buyer, "watch", real)
    assert await world.store.mailbox.apply_ready(p.id, STORE, world.purchases.apply) == 1
    assert (await world.purchases.get(p.id)).state == "awaiting_payment"


class Crash(BaseException):
    """The node dies here (nothing after it runs)."""


def count_funding(world: World, monkeypatch) -> list[str]:
    funded: list[str] = []
    real = world.buyer.fund

    async def fund(address: str, amount_sat: int) -> tuple[str, str]:
        txid, tx_hex = await real(address, amount_sat)
        funded.append(txid)
        return txid, tx_hex

    monkeypatch.setattr(world.buyer, "fund", fund)
    return funded


async def test_a_crash_between_storing_and_broadcasting_never_funds_twice(world: World, monkeypatch):
    p = await world.purchases.place(request())
    await world.store.send(p.id, "escrow", await world.store.escrow_fields(p.id))
    funded = count_funding(world, monkeypatch)
    real_broadcast = world.buyer.broadcast

    async def crash(tx_hex: str) -> str:
        raise Crash()

    monkeypatch.setattr(world.buyer, "broadcast", crash)
    with pytest.raises(Crash):
        await world.purchases.pay(p.id)
    p = await world.purchases.get(p.id)
    assert p.paid_txid == funded[0] and p.paid_hex and not p.paid_sent  # stored before the broadcast
    assert not world.regtest.in_mempool(p.paid_txid)
    view = (await world.purchases.detail(p.id)).purchase
    assert view.paid_txid == funded[0]
    monkeypatch.setattr(world.buyer, "broadcast", real_broadcast)
    again = await world.purchases.pay(p.id)  # the buyer presses pay again: the same transaction
    assert again.paid_txid == funded[0] and again.paid_sent and len(funded) == 1
    world.regtest.sync()
    assert world.regtest.in_mempool(funded[0])
    with pytest.raises(Conflict, match="paid already"):
        await world.purchases.pay(p.id)
    assert len(funded) == 1


async def test_a_broadcast_error_after_storing_is_retried_by_the_watcher(world: World, monkeypatch):
    p = await world.purchases.place(request())
    await world.store.send(p.id, "escrow", await world.store.escrow_fields(p.id))
    funded = count_funding(world, monkeypatch)
    real_broadcast = world.buyer.broadcast

    async def timeout(tx_hex: str) -> str:
        raise WalletError("Bitcoin Core did not answer sendrawtransaction (timed out)")

    monkeypatch.setattr(world.buyer, "broadcast", timeout)
    p = await world.purchases.pay(p.id)  # the txid is shown at once; the error is noted
    assert p.paid_txid == funded[0] and not p.paid_sent
    assert "not broadcast yet" in p.history[-1].note
    await world.purchases.watch_once()  # still failing: one note, not one per round
    p = await world.purchases.get(p.id)
    assert sum("not broadcast yet" in e.note for e in p.history) == 1
    monkeypatch.setattr(world.buyer, "broadcast", real_broadcast)
    await world.purchases.watch_once()
    p = await world.purchases.get(p.id)
    assert p.paid_sent and len(funded) == 1
    world.regtest.sync()
    world.regtest.mine(1)
    await world.purchases.watch_once()
    p = await world.purchases.get(p.id)
    assert p.funding and p.funding[0][0] == funded[0] and p.funding_block is not None
    with pytest.raises(Conflict, match="paid already"):
        await world.purchases.pay(p.id)
    assert len(funded) == 1


async def test_a_store_cannot_grow_the_purchase_record_without_end(world: World, monkeypatch):
    from node.purchases import applying, context

    monkeypatch.setattr(applying, "MAX_NOTES", 3)
    monkeypatch.setattr(context, "MAX_HISTORY", 6)
    p = await world.purchases.place(request())
    await world.store.send(p.id, "escrow", await world.store.escrow_fields(p.id))
    buyer = await world.store.buyer(p.id)
    for n in range(5):
        boxed = boxes.box(STORE_KEY, buyer, f"spam {n}")
        assert await world.store.send(p.id, "message", {"text": boxed}) == "applied"
    for index in range(1, 9):
        assert await world.store.state(p.id, "awaiting_payment", index, note=f"state {index}") == "applied"
    p = await world.purchases.get(p.id)
    assert [n.text for n in p.notes if n.kind == "message"] == ["spam 0", "spam 1", "spam 2"]
    assert sum("more than 3 messages" in n.text for n in p.notes) == 1
    assert len(p.history) == 7 and "later ones are not kept" in p.history[-1].note
    assert p.vendor_index == 8  # the state still follows the store


async def test_one_dispute_only_and_unknown_fields_are_refused_by_the_operations(world: World):
    from types import SimpleNamespace

    from node.operations import purchases as P

    ctx = SimpleNamespace(purchases=world.purchases)
    order = await funded(world)
    for op, body in [
        (P.purchases_pay, {"address": "x", "amount_sat": 1, "fee_rate": 50}),
        (P.purchases_review, {"rating": 5, "text": "ok", "stars": 5}),
        (P.purchases_dispute, {"statement": "x", "evidence": "y"}),
        (P.purchases_message, {"text": "x", "to": "y"}),
        (P.purchases_release, {"force": True}),
    ]:
        with pytest.raises(ValidationError) as refused:
            await op.call(ctx, P.PurchaseBody(order, body))
        assert "unknown field" in str(refused.value.fields.values())
    shown = await P.purchases_dispute.call(ctx, P.PurchaseBody(order, {"statement": "It never came"}))
    assert shown["disputed"]
    with pytest.raises(Conflict, match="in dispute already"):
        await world.purchases.dispute(order, "again")


async def test_a_store_reported_dispute_refunded_is_reviewable(world: World):
    order = await funded(world)
    assert await world.store.state(order, "disputed", 1) == "applied"
    with pytest.raises(Conflict, match="in dispute already"):
        await world.purchases.dispute(order, "me too")
    assert await world.store.state(order, "refunded", 2) == "applied"
    p = await world.purchases.review(order, 2, "Refunded after a dispute")
    assert p.review is not None


async def test_core_down_makes_the_watcher_raise_once_not_log_per_purchase(world: World, monkeypatch, caplog):
    for _ in range(2):
        await funded(world)

    async def down(addresses):
        raise WalletError("Bitcoin Core did not answer listunspent")

    monkeypatch.setattr(world.buyer, "unspent", down)
    with pytest.raises(WalletError, match="listunspent"):
        await world.purchases.watch_once()
    assert not [r for r in caplog.records if "listunspent" in r.getMessage()]


async def test_the_held_catalog_is_verified_off_the_event_loop(world: World, monkeypatch):
    import threading

    from node.discovery import catalogs

    threads: list[int] = []
    real = catalogs.verify_catalog

    def recording(raw, **kwargs):
        threads.append(threading.get_ident())
        return real(raw, **kwargs)

    monkeypatch.setattr(catalogs, "verify_catalog", recording)
    await world.purchases.place(request())
    assert threads and threading.get_ident() not in threads
