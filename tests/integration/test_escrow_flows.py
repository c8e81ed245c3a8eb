"""Whole escrow flows on a real regtest bitcoind: a buyer with only a wallet, the vendor's Payments, a moderator.

Three separate wallets sign: the vendor's (through Pasar's ``BitcoinCore``), the
moderator's (through the real ``ModeratorService``, reached by the real
``ModeratorClient`` over an in-process ``ports.Http``), and the buyer's
("buyer" wallet, ``walletprocesspsbt`` outside Pasar, uploaded as base64).
No sleeps: each step mines blocks and then runs one ``watch_once``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from node.adapters.bitcoin import BitcoinCore
from node.core.errors import Conflict, PasarError, PsbtRefused, Unavailable, WalletError
from node.core.models import Sats
from node.payments.models import OrderState, Party, PayoutKind
from tests.integration.escrow_world import AMOUNT, TIMEOUT, World, confirmed, funded, upload_buyer
from tests.regtest import btc

S = OrderState


# -- the flows -------------------------------------------------------------------------------------
async def test_release_after_fulfillment(world: World) -> None:
    w, p = world, world.payments()
    assert await p.paused() is None
    options = await p.checkout_options(w.store_onion)
    assert [m.onion for m in options.moderators] == [w.moderator.onion]
    order, token = await p.checkout(w.store_onion, w.form())
    assert order.state is S.AWAITING_PAYMENT and order.amount_sat == AMOUNT
    assert await p.available(w.store_onion, w.listing_id) == {None: 4}
    assert (await p.by_token(w.store_onion, token)).id == order.id
    ship_to, _ = await p.reveal(order)
    assert ship_to.startswith("Jane Doe")
    await p.watch_once()
    assert (await p.order(order.id)).missing_sat == AMOUNT
    order, token2 = await funded(w, p)
    order = await p.fulfill(order.id, "sent by post, tracking 123")
    assert order.state is S.FULFILLED and order.pending is not None
    assert order.pending.kind is PayoutKind.RELEASE and order.pending.signed_by == (Party.VENDOR,)
    sent = await upload_buyer(w, p, order, token2)
    # Broadcast, not final: the order waits for a confirmation with its payout stored (review finding 11).
    assert sent.state is S.FULFILLED and sent.pending is not None and sent.pending.txid is not None
    assert sent.pending.txid == sent.pending.expected_txid  # known before it was signed
    assert p.psbt_for_buyer(sent) is None
    with pytest.raises(Conflict, match="wait for its confirmation"):
        await p.dispute(order.id, "changed my mind")
    await p.watch_once()  # still unconfirmed: broadcast again, nothing else
    assert (await p.order(order.id)).state is S.FULFILLED
    done = await confirmed(w, p, sent)
    assert done.state is S.COMPLETED and done.pending is None
    txid = done.payouts[-1].txid
    assert txid is not None and txid == sent.pending.txid
    outs = w.tx_outputs(txid)
    assert outs == {done.vendor_address: AMOUNT - done.payouts[-1].fee_sat}
    await p.watch_once()
    assert (await p.order(order.id)).state is S.COMPLETED


async def test_refund_after_decline_gives_stock_back(world: World) -> None:
    w, p = world, world.payments()
    order, token = await funded(w, p, accept=False)
    assert await p.available(w.store_onion, w.listing_id) == {None: 4}
    order = await p.decline(order.id, "out of wool")
    assert order.state is S.DECLINED and order.pending is not None and order.pending.kind is PayoutKind.REFUND
    assert await p.available(w.store_onion, w.listing_id) == {None: 5}  # declined: it will not ship
    done = await confirmed(w, p, await upload_buyer(w, p, order, token))
    assert done.state is S.REFUNDED
    txid = done.payouts[-1].txid
    assert txid is not None
    assert w.tx_outputs(txid) == {order.refund_address: AMOUNT - done.payouts[-1].fee_sat}
    assert await p.available(w.store_onion, w.listing_id) == {None: 5}


async def test_refund_through_the_moderator_when_the_vendor_never_accepts(world: World) -> None:
    w, p = world, world.payments()
    order, token = await funded(w, p, accept=False)
    assert order.accept_by is not None
    await p.watch_once()
    assert (await p.order(order.id)).state is S.CONFIRMED  # the window is still open
    w.clock.t = order.accept_by + 1
    await p.watch_once()
    order = await p.order(order.id)
    assert order.state is S.REFUNDING and order.pending is not None
    assert order.pending.signed_by == (Party.MODERATOR,)
    with pytest.raises(Conflict, match="cannot dispute an order that is refunding"):  # review finding 7
        await p.buyer_dispute(w.store_onion, token, "I want the refund and a split")
    done = await confirmed(w, p, await upload_buyer(w, p, order, token))
    assert done.state is S.REFUNDED
    txid = done.payouts[-1].txid
    assert txid is not None and set(w.tx_outputs(txid)) == {order.refund_address}


async def test_dispute_split_with_the_moderator_fee(world: World) -> None:
    w, p = world, world.payments()
    order, token = await funded(w, p)
    order = await p.buyer_dispute(w.store_onion, token, "the socks never came")
    assert order.state is S.DISPUTED and order.dispute is not None and order.dispute.sent_at is not None
    order = await p.dispute(order.id, "they were sent on time")
    (case,) = await w.moderator.disputes()
    assert [s for _, s in case.statements] == ["the socks never came", "they were sent on time"]
    fee = 1000 + AMOUNT * 2 // 100
    await p.watch_once()
    assert (await p.order(order.id)).state is S.DISPUTED  # not decided yet
    await w.moderator.decide(case.id, 60_000, AMOUNT - 60_000 - fee)
    await p.watch_once()
    order = await p.order(order.id)
    assert order.state is S.DECIDED and order.pending is not None and order.pending.kind is PayoutKind.SPLIT
    assert p.psbt_for_buyer(order) is not None  # either side may co-sign
    done = await confirmed(w, p, await p.release(order.id))
    assert done.state is S.RESOLVED
    txid = done.payouts[-1].txid
    assert txid is not None
    outs = w.tx_outputs(txid)
    assert len(outs) == 3 and fee in outs.values() and order.dispute is not None
    assert outs[order.refund_address] + outs[order.dispute.vendor_address] == AMOUNT - fee - done.payouts[-1].fee_sat


async def test_timeout_claim_refused_too_early_with_the_height(world: World) -> None:
    w, p = world, world.payments()
    order, _ = await funded(w, p)
    base = order.funding.first_seen_height
    assert base is not None
    with pytest.raises(Conflict, match=f"possible from block {base + TIMEOUT}"):
        await p.claim(order.id)
    w.regtest.mine(base + TIMEOUT - 1 - w.regtest.height())
    done = await confirmed(w, p, await p.claim(order.id))
    assert done.state is S.CLAIMED
    txid = done.payouts[-1].txid
    assert txid is not None


async def test_underpayment_then_top_up(world: World) -> None:
    w, p = world, world.payments()
    order, token = await p.checkout(w.store_onion, w.form())
    w.pay(order.escrow.address, 40_000)
    await p.watch_once()
    order = await p.order(order.id)
    assert order.state is S.AWAITING_PAYMENT and order.missing_sat == AMOUNT - 40_000
    w.pay(order.escrow.address, AMOUNT - 40_000)
    w.regtest.mine(1)
    await p.watch_once()
    order = await p.order(order.id)
    assert order.state is S.CONFIRMED and len(order.funding.outpoints) == 2
    await p.accept(order.id)
    order = await p.fulfill(order.id, "")
    done = await confirmed(w, p, await upload_buyer(w, p, order, token))
    assert done.state is S.COMPLETED


async def test_overpayment_goes_back_to_the_buyer_in_the_release(world: World) -> None:
    w, p = world, world.payments()
    order, token = await funded(w, p, sat=AMOUNT + 50_000)
    order = await p.fulfill(order.id, "shipped")
    assert order.pending is not None
    done = await confirmed(w, p, await upload_buyer(w, p, order, token))
    txid = done.payouts[-1].txid
    assert txid is not None
    outs = w.tx_outputs(txid)
    assert outs[order.refund_address] == 50_000  # the surplus, whole: the vendor pays the fee
    assert outs[order.vendor_address] == AMOUNT - done.payouts[-1].fee_sat


async def test_a_payment_after_fulfillment_remakes_the_release(world: World) -> None:
    w, p = world, world.payments()
    order, token = await funded(w, p)
    order = await p.fulfill(order.id, "shipped")
    old = order.pending
    w.pay(order.escrow.address, 30_000)  # the buyer sends more after all
    await p.watch_once()
    order = await p.order(order.id)
    assert order.pending is not None and order.pending != old and len(order.pending.inputs) == 2
    assert order.history[-1].note.startswith(f"the escrow now holds {AMOUNT + 30_000} sat")
    assert old is not None
    with pytest.raises(PsbtRefused):  # the old release, signed late, no longer matches
        await p.upload_psbt(w.store_onion, token, w.buyer_sign(old.psbt))
    done = await confirmed(w, p, await upload_buyer(w, p, order, token))
    txid = done.payouts[-1].txid
    assert done.state is S.COMPLETED and txid is not None
    assert w.tx_outputs(txid)[order.refund_address] == 30_000


async def test_unpaid_order_expires_and_a_late_payment_is_refunded(world: World) -> None:
    w, p = world, world.payments()
    order, token = await p.checkout(w.store_onion, w.form())
    assert await p.available(w.store_onion, w.listing_id) == {None: 4}
    w.clock.t = order.pay_by + 1
    await p.watch_once()
    assert (await p.order(order.id)).state is S.EXPIRED
    assert await p.available(w.store_onion, w.listing_id) == {None: 5}
    w.pay(order.escrow.address, AMOUNT)
    await p.watch_once()
    order = await p.order(order.id)
    assert order.state is S.EXPIRED and order.funding.paid_sat == AMOUNT
    assert "paid after the order expired" in order.history[-1].note
    order = await p.refund(order.id, "too late")
    assert order.state is S.DECLINED
    assert (await confirmed(w, p, await upload_buyer(w, p, order, token))).state is S.REFUNDED
    assert await p.available(w.store_onion, w.listing_id) == {None: 5}


# -- hostile uploads -------------------------------------------------------------------------------
def _tampered(
    w: World,
    order: Any,
    outputs: list[dict[str, str]],
    extra_input: bool = False,
    sighash: str = "ALL",
    sequence: int = 0xFFFFFFFE,
) -> str:
    """The pending payout rebuilt by the "buyer" with other outputs (or a foreign input), then signed."""
    inputs: list[dict[str, Any]] = [{"txid": t, "vout": v, "sequence": sequence} for t, v, _ in order.funding.outpoints]
    if extra_input:
        coin = w.regtest.cli("listunspent", 1, 9999999, wallet="buyer")[0]
        inputs.append({"txid": coin["txid"], "vout": coin["vout"]})
    psbt = w.regtest.cli("createpsbt", inputs, outputs)
    psbt = w.regtest.cli("utxoupdatepsbt", psbt, [order.escrow.descriptor])
    return str(w.regtest.cli("walletprocesspsbt", psbt, True, sighash, True, False, wallet="buyer")["psbt"])


async def test_tampered_uploads_are_refused_before_combining(world: World) -> None:
    w, p = world, world.payments()
    order, token = await funded(w, p)
    order = await p.fulfill(order.id, "shipped")
    pending = order.pending
    assert pending is not None
    vendor_out = pending.outputs[0]
    thief = w.regtest.address("buyer")
    cases = {
        "extra output": (
            [{vendor_out.address: btc(vendor_out.amount_sat - 20_000)}, {thief: btc(19_000)}],
            "not in the agreed payout",
        ),
        "changed amount": ([{vendor_out.address: btc(vendor_out.amount_sat - 30_000)}], "the agreed amount is"),
        "huge fee": ([{vendor_out.address: btc(1_000)}], "the agreed amount is"),
        "other address": ([{thief: btc(vendor_out.amount_sat)}], "not in the agreed payout"),
    }
    for name, (outputs, reason) in cases.items():
        with pytest.raises(PsbtRefused, match=reason):
            await p.upload_psbt(w.store_onion, token, _tampered(w, order, outputs))
        assert (await p.order(order.id)).state is S.FULFILLED, name
    foreign = _tampered(w, order, [{vendor_out.address: btc(vendor_out.amount_sat)}], extra_input=True)
    with pytest.raises(PsbtRefused, match="not an escrow output"):
        await p.upload_psbt(w.store_onion, token, foreign)
    same = [{o.address: btc(o.amount_sat)} for o in pending.outputs]
    with pytest.raises(PsbtRefused, match="sighash"):  # the very payout, signed with SIGHASH_NONE
        await p.upload_psbt(w.store_onion, token, _tampered(w, order, same, sighash="NONE"))
    with pytest.raises(PsbtRefused, match="has sequence 0xffff"):  # finding 3: a relative lock slipped in
        await p.upload_psbt(w.store_onion, token, _tampered(w, order, same, sequence=0xFFFF))
    with pytest.raises(PsbtRefused):  # unsigned by the buyer: nothing new to combine
        await p.upload_psbt(w.store_onion, token, pending.psbt)
    assert (await p.order(order.id)).state is S.FULFILLED
    done = await confirmed(w, p, await upload_buyer(w, p, order, token))
    assert done.state is S.COMPLETED


# -- restarts and crashes ----------------------------------------------------------------------------
class NoBroadcast:
    """The vendor's Core, except that the node "crashes" right before ``sendrawtransaction``."""

    def __init__(self, core: BitcoinCore) -> None:
        self._core = core

    def __getattr__(self, name: str) -> Any:
        return getattr(self._core, name)

    async def broadcast(self, tx_hex: str) -> str:
        raise RuntimeError("crash before broadcasting")


async def test_crash_between_storing_and_broadcasting_is_finished_by_the_watcher(world: World) -> None:
    w, p = world, world.payments()
    order, token = await funded(w, p)
    order = await p.fulfill(order.id, "shipped")
    crashing = w.payments(bitcoin=NoBroadcast(w.vendor))
    psbt = crashing.psbt_for_buyer(order)
    assert psbt is not None
    with pytest.raises(RuntimeError):
        await crashing.upload_psbt(w.store_onion, token, w.buyer_sign(psbt))
    stored = await p.order(order.id)
    assert stored.state is S.FULFILLED and stored.pending is not None and stored.pending.txid is not None
    restarted = w.payments()
    await restarted.watch_once()  # broadcast by the watcher; final once confirmed
    assert w.regtest.in_mempool(stored.pending.txid)
    assert (await restarted.order(order.id)).state is S.FULFILLED
    done = await confirmed(w, restarted, await restarted.order(order.id))
    assert done.state is S.COMPLETED and done.payouts[-1].txid == stored.pending.txid
    await restarted.watch_once()  # again: nothing changes, nothing is sent twice
    assert (await restarted.order(order.id)).payouts == done.payouts


async def test_restart_of_payments_and_bitcoind_in_every_state(world: World) -> None:
    w = world
    p = w.payments()
    order, token = await p.checkout(w.store_onion, w.form())
    w.regtest.restart()  # Core restarts while the order awaits payment
    w.pay(order.escrow.address, AMOUNT)
    p = w.payments()
    await p.watch_once()
    assert (await p.order(order.id)).state is S.FUNDED
    w.regtest.mine(1)
    w.regtest.restart()
    p = w.payments()
    await p.watch_once()
    assert (await p.order(order.id)).state is S.CONFIRMED
    await p.accept(order.id)
    p = w.payments()
    order = await p.fulfill(order.id, "shipped")
    w.regtest.restart()
    p = w.payments()
    current = await p.by_token(w.store_onion, token)
    assert current.pending == order.pending and p.psbt_for_buyer(current) is not None
    sent = await upload_buyer(w, p, current, token)
    w.regtest.restart()  # Core restarts while the payout waits for a confirmation
    p = w.payments()
    await p.watch_once()  # broadcast again if the mempool was lost
    done = await confirmed(w, p, sent)
    assert done.state is S.COMPLETED


async def test_restarts_through_a_dispute_and_a_silent_vendor_refund(world: World) -> None:
    w = world
    p = w.payments()
    disputed, token = await funded(w, p)
    silent, token2 = await funded(w, p, accept=False)
    await p.buyer_dispute(w.store_onion, token, "wrong colour")
    w.regtest.restart()
    w.restart_moderator()
    p = w.payments()
    (case,) = await w.moderator.disputes()
    fee = case.moderator_sat
    await w.moderator.decide(case.id, AMOUNT - fee, 0)  # all to the buyer, less the moderator's fee
    w.restart_moderator()
    assert silent.accept_by is not None
    w.clock.t = silent.accept_by + 1
    await w.payments().watch_once()
    w.regtest.restart()
    p = w.payments()
    await p.watch_once()  # nothing moves twice
    decided, refunding = await p.order(disputed.id), await p.order(silent.id)
    assert decided.state is S.DECIDED and refunding.state is S.REFUNDING
    assert decided.pending is not None
    assert [o.role for o in decided.pending.outputs] == [Party.BUYER, Party.MODERATOR]
    assert (await confirmed(w, p, await upload_buyer(w, p, decided, token))).state is S.RESOLVED
    p = w.payments()
    assert (await confirmed(w, p, await upload_buyer(w, p, refunding, token2))).state is S.REFUNDED


async def test_bitcoind_down_pauses_checkout_and_the_watcher_catches_up(world: World) -> None:
    w, p = world, world.payments()
    order, _ = await p.checkout(w.store_onion, w.form())
    w.pay(order.escrow.address, AMOUNT)
    w.regtest.mine(1)
    form = w.form()
    w.regtest.stop()
    try:
        p2 = w.payments()
        assert "paused" in (await p2.paused() or "")
        with pytest.raises(WalletError):
            await p2.watch_once()
        with pytest.raises(WalletError):
            await p2.checkout(w.store_onion, form)
    finally:
        w.regtest.start()
    p3 = w.payments()
    assert await p3.paused() is None
    await p3.watch_once()
    assert (await p3.order(order.id)).state is S.CONFIRMED


async def test_unreachable_moderator_places_nothing(world: World) -> None:
    w, p = world, world.payments()
    w.http.offline = True
    before = await p.available(w.store_onion, w.listing_id)
    with pytest.raises(PasarError, match=r"did not answer|could not answer|cannot be reached"):
        await p.checkout(w.store_onion, w.form())
    assert await p.orders() == [] and await p.available(w.store_onion, w.listing_id) == before


async def test_a_store_holds_at_most_max_unpaid_orders(world: World) -> None:
    """Unpaid orders each hold stock and keys: beyond the cap checkout waits, and paying frees a place."""
    w = world
    w.settings = dataclasses.replace(w.settings, max_unpaid=2)
    p = w.payments()
    first, _ = await p.checkout(w.store_onion, w.form())
    await p.checkout(w.store_onion, w.form())
    placed = len(await p.orders())
    with pytest.raises(Unavailable, match="too many unpaid orders"):
        await p.checkout(w.store_onion, w.form())
    assert len(await p.orders()) == placed  # nothing was half created
    w.pay(first.escrow.address, first.amount_sat)
    await p.watch_once()
    assert (await p.order(first.id)).state is not S.AWAITING_PAYMENT
    await p.checkout(w.store_onion, w.form())  # a paid order no longer counts


# -- review findings (issue 10 money review) ---------------------------------------------------------
async def test_a_partial_payment_expires_gives_the_stock_back_and_can_be_refunded(world: World) -> None:
    """Finding 1: a dust or partial payment used to keep the order awaiting payment (and its stock) forever."""
    w, p = world, world.payments()
    order, token = await p.checkout(w.store_onion, w.form())
    assert await p.available(w.store_onion, w.listing_id) == {None: 4}
    w.pay(order.escrow.address, 40_000)
    w.regtest.mine(1)
    w.clock.t = order.pay_by + 1
    await p.watch_once()
    order = await p.order(order.id)
    assert order.state is S.EXPIRED and order.funding.paid_sat == 40_000
    assert f"40000 of {AMOUNT} sat" in order.history[-1].note and "refunds them" in order.history[-1].note
    assert await p.available(w.store_onion, w.listing_id) == {None: 5}
    order = await p.decline(order.id, "not paid in full")
    assert order.state is S.DECLINED and order.pending is not None
    done = await confirmed(w, p, await upload_buyer(w, p, order, token))
    assert done.state is S.REFUNDED and await p.available(w.store_onion, w.listing_id) == {None: 5}


async def _outside_spend(w: World, order: Any, to: str) -> str:
    """Buyer and vendor spend the escrow with their own wallets, outside Pasar; the txid (mined)."""
    ins = [(t, v, 0xFFFFFFFE) for t, v, _ in order.funding.outpoints]
    psbt = await w.vendor.create_psbt(ins, [(to, order.funding.paid_sat - 2_000)], order.escrow.descriptor)
    signed = w.regtest.sign("vendor", w.regtest.sign("buyer", psbt))
    final = w.regtest.cli("finalizepsbt", signed)
    assert final["complete"], w.regtest.cli("analyzepsbt", signed)
    txid = str(w.regtest.cli("sendrawtransaction", final["hex"]))
    w.regtest.mine(1)
    return txid


async def test_a_payout_broadcast_outside_pasar_finishes_the_order(world: World) -> None:
    """Finding 2: the buyer finalizes and broadcasts the release with their own wallet; the order completes."""
    w, p = world, world.payments()
    order, _ = await funded(w, p)
    order = await p.fulfill(order.id, "sent")
    psbt = p.psbt_for_buyer(order)
    assert psbt is not None and order.pending is not None
    final = w.regtest.cli("finalizepsbt", w.buyer_sign(psbt))
    txid = str(w.regtest.cli("sendrawtransaction", final["hex"]))
    assert txid == order.pending.expected_txid
    await p.watch_once()  # in the mempool: stored as broadcast, waiting for a confirmation
    seen = await p.order(order.id)
    assert seen.state is S.FULFILLED and seen.pending is not None and seen.pending.txid == txid
    assert "broadcast outside Pasar" in seen.history[-1].note
    done = await confirmed(w, p, seen)
    assert done.state is S.COMPLETED and done.payouts[-1].txid == txid


async def test_an_upload_of_a_payout_already_in_the_mempool_is_taken_as_broadcast(world: World) -> None:
    """A buyer's node broadcasts the release itself and then sends the signed PSBT: Core answers
    txn-already-known, which is no refusal; the order records the payout and completes."""
    w, p = world, world.payments()
    order, token = await funded(w, p)
    order = await p.fulfill(order.id, "sent")
    psbt = p.psbt_for_buyer(order)
    assert psbt is not None and order.pending is not None
    signed = w.buyer_sign(psbt)
    txid = str(w.regtest.cli("sendrawtransaction", w.regtest.cli("finalizepsbt", signed)["hex"]))
    sent = await p.upload_psbt(w.store_onion, token, signed)  # before any watcher round saw it
    assert sent.pending is not None and sent.pending.txid == txid
    done = await confirmed(w, p, sent)
    assert done.state is S.COMPLETED and done.payouts[-1].txid == txid


async def test_an_escrow_spent_outside_pasar_ends_the_order(world: World) -> None:
    """Finding 2: a stored payout that lost to a conflicting spend is no longer retried forever, and an
    escrow spent with no known payout is said so."""
    w, p = world, world.payments()
    plain, _ = await funded(w, p, accept=False)
    lost, token = await funded(w, p)
    lost = await p.fulfill(lost.id, "sent")
    crashing = w.payments(bitcoin=NoBroadcast(w.vendor))
    psbt = crashing.psbt_for_buyer(lost)
    assert psbt is not None
    with pytest.raises(RuntimeError):
        await crashing.upload_psbt(w.store_onion, token, w.buyer_sign(psbt))
    lost = await p.order(lost.id)
    assert lost.pending is not None and lost.pending.txid is not None  # stored, never broadcast
    spent = {o.id: await _outside_spend(w, o, w.regtest.address("buyer")) for o in (lost, plain)}
    await p.watch_once()
    for o in (lost, plain):
        after = await p.order(o.id)
        assert after.state is S.SPENT and after.pending is None, after.history
        assert after.history[-1].note.startswith("escrow spent outside Pasar")
        assert w.regtest.cli("gettransaction", spent[o.id], wallet="buyer")["confirmations"] >= 1
    assert "lost to a conflicting transaction" in (await p.order(lost.id)).history[-1].note
    await p.watch_once()  # final: nothing retried


async def test_dust_after_funding_does_not_push_the_claim_back(world: World) -> None:
    """Finding 4: the claim counts from the oldest UTXO and spends only the UTXOs old enough."""
    w, p = world, world.payments()
    order, _ = await funded(w, p)
    base = order.funding.first_seen_height
    assert base is not None
    w.regtest.mine(base + TIMEOUT - 2 - w.regtest.height())
    dust = w.pay(order.escrow.address, 400)  # anyone who knows the address
    w.regtest.mine(1)
    await p.watch_once()
    order = await p.order(order.id)
    assert order.funding.first_seen_height == base and len(order.funding.outpoints) == 2
    assert w.regtest.height() + 1 == base + TIMEOUT
    sent = await p.claim(order.id)
    assert sent.pending is not None and all(t != dust for t, _v in sent.pending.inputs)
    done = await confirmed(w, p, sent)
    assert done.state is S.CLAIMED


async def test_a_split_with_another_moderator_fee_is_refused(world: World) -> None:
    """Finding 5: the vendor's node checks the moderator's fee against the terms agreed at checkout."""
    w, p = world, world.payments()
    order, token = await funded(w, p)
    await p.buyer_dispute(w.store_onion, token, "never came")
    (case,) = await w.moderator.disputes()
    greedy = dataclasses.replace(case, moderator_sat=Sats(50_000))  # agreed: 1000 + 2%
    await w.moderator._store.update_case(greedy, expect=case.state)
    await w.moderator.decide(case.id, 30_000, AMOUNT - 30_000 - 50_000)
    await p.watch_once()
    order = await p.order(order.id)
    assert order.state is S.DISPUTED and order.pending is None
    with pytest.raises(Conflict):
        await p.release(order.id)


async def test_a_restock_keeps_the_units_of_open_orders(world: World) -> None:
    """Finding 6: a new inventory figure used to start from 0 committed, selling open orders' units again."""
    w, p = world, world.payments()
    order, _ = await p.checkout(w.store_onion, w.form())
    assert await p.available(w.store_onion, w.listing_id) == {None: 4}
    current = dict(await w.market.listing(w.store_onion, w.listing_id))
    w.clock.t += 5
    edit = {k: current[k] for k in ("title", "price_sat", "kind", "shipping")}
    await w.market.update_listing(w.store_onion, w.listing_id, {**edit, "inventory": 6})  # the shelf: 6
    assert await p.available(w.store_onion, w.listing_id) == {None: 5}  # 1 of the 6 leaves with the open order
    await p.checkout(w.store_onion, w.form())
    assert await p.available(w.store_onion, w.listing_id) == {None: 4}
    w.clock.t = order.pay_by + 1
    await p.watch_once()  # the first order expires: its unit goes back to the new count
    assert await p.available(w.store_onion, w.listing_id) == {None: 5}


async def test_concurrent_checkouts_pass_neither_the_unpaid_cap_nor_the_stock_together(world: World) -> None:
    """Checkouts under way count with the stored orders: the cap and the stock hold under concurrency, and
    those refused are refused before they draw wallet keys."""
    w = world
    w.settings = dataclasses.replace(w.settings, max_unpaid=3)
    p = w.payments()
    keys_before = w.vendor.calls["getnewaddress"]
    results = await asyncio.gather(*(p.checkout(w.store_onion, w.form()) for _ in range(8)), return_exceptions=True)
    placed = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(placed) == 3 and all(isinstance(r, (Unavailable, PasarError)) for r in refused)
    assert len(await p.orders(state="awaiting_payment")) == 3
    assert w.vendor.calls["getnewaddress"] - keys_before == 2 * 3  # only the placed orders drew keys
