"""The payment watcher: one round over every open order (``Payments.watch_once``).

A round asks the watch-only wallet once for the UTXOs of every open escrow
(``listunspent`` sees the mempool), then for each order: follows a payout
stored with its txid (finishes the order once it has a confirmation, else
broadcasts it again: a crash or Core outage between storing and broadcasting
is caught up), recognises a payout broadcast outside Pasar by its txid and an
escrow spent by a transaction no known payout explains (``settlement.py``),
records what was paid and moves the state (funded at 0-conf, confirmed after
``confirmations``), expires orders not fully paid past ``pay_by``,
asks the moderator to sign a refund for orders not accepted by
``accept_by``, and sends or polls disputes. Every change is one
compare-and-set write (``expect``: the stored order must still be the one
the change was made from), so a concurrent vendor action or a second
watcher loses cleanly and the next round starts from what is stored.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from ..core.errors import Conflict, PasarError, WalletError
from ..core.models import Sats
from ..core.ports import Utxo
from . import flows, orders, settlement
from .checkout import ACCEPT_WINDOW
from .flows import Ctx
from .models import Funding, HistoryEntry, Order, OrderState, Party, PayoutKind
from .order_store import OrderStore

log = logging.getLogger(__name__)

S = OrderState
_REFUND_WHEN_SILENT = {S.FUNDED, S.CONFIRMED}
LATE_WINDOW = 30 * 86400  # seconds after ``pay_by`` an expired order's address is still watched
LATE_ORDERS = 500  # expired orders watched at most (the newest)


def funding_of(utxos: Sequence[Utxo], tip: int | None, before: Funding) -> Funding:
    """Every UTXO at the escrow summed, each confirmed one with its height; the timeout base is the height of
    the OLDEST confirmed one (a later payment, dust from anyone, must not push the vendor's claim back)."""
    if not utxos:
        return Funding()
    confirmations = min(u.confirmations for u in utxos)
    heights = tuple(
        sorted((u.txid, u.vout, tip - u.confirmations + 1) for u in utxos if tip is not None and u.confirmations > 0)
    )
    base = min((h for _t, _v, h in heights), default=None)
    points = tuple(sorted((u.txid, u.vout, int(u.amount_sat)) for u in utxos))
    return Funding(
        paid_sat=Sats(sum(u.amount_sat for u in utxos)),
        outpoints=points,
        confirmations=confirmations,
        first_seen_height=base,
        heights=heights,
    )


def accept_window(ctx: Ctx, order: Order) -> int:
    """Seconds the vendor has to accept once paid: the store's window taken at checkout, else the node's."""
    stored = order.extra.get(ACCEPT_WINDOW, "")
    return int(stored) if stored.isascii() and stored.isdigit() else ctx.settings.accept_window


async def watched_orders(store: OrderStore, now: int) -> list[Order]:
    """The orders a round reads: every open one, and the newest ``LATE_ORDERS`` expired ones within
    ``LATE_WINDOW`` (a payment after expiry is refunded, not lost). The start-up re-watch imports these."""
    expired = await store.list(state=S.EXPIRED.value, limit=LATE_ORDERS)
    late = [o for o in expired if now - o.pay_by < LATE_WINDOW]
    return [*await store.open_orders(), *late]


async def watch_once(ctx: Ctx) -> None:
    """One round over every open order; Core down (``WalletError``) ends the round, other errors skip one order."""
    open_orders = await watched_orders(ctx.store, ctx.now())
    if not open_orders:
        return
    btc = ctx.wallet()
    utxos = await btc.unspent(sorted({o.escrow.address for o in open_orders}))
    tip = await btc.height() if any(u.confirmations > 0 for u in utxos) else None
    by_address: dict[str, list[Utxo]] = {}
    for utxo in utxos:
        by_address.setdefault(utxo.address, []).append(utxo)
    for listed in open_orders:
        try:
            async with ctx.locked(listed.id) as order:
                await watch_order(ctx, order, by_address.get(order.escrow.address, []), tip)
        except WalletError as exc:
            await btc.height()  # Core down: this raises too and ends the round; else only this order failed
            log.warning("order %s: %s", listed.id, exc.message)
        except Conflict as exc:  # changed meanwhile (another process): the next round sees the new state
            log.info("order %s: %s; next round", listed.id, exc.message)
        except PasarError as exc:
            log.warning("order %s: %s", listed.id, exc.message)


async def watch_order(ctx: Ctx, order: Order, utxos: Sequence[Utxo], tip: int | None) -> Order:
    pending = order.pending
    if pending is not None and pending.txid is not None:
        return await settlement.follow(ctx, order, utxos)
    if pending is not None and settlement.gone(pending.inputs, utxos):
        seen = await settlement.outside_broadcast(ctx, order)
        if seen is not None:
            return seen
    spent = settlement.gone(order.funding.heights, utxos)  # confirmed escrow outputs no longer unspent
    if spent and (orders.holds_funds(order.state) or order.state is S.EXPIRED):
        return await settlement.spent_outside(ctx, order, spent)
    order = await _record_funding(ctx, order, funding_of(utxos, tip, order.funding))
    if flows.stale(order) and order.funding.paid_sat > 0:
        return await flows.rebuild(ctx, order)
    now = ctx.now()
    if order.state is S.AWAITING_PAYMENT and now > order.pay_by:
        return await _expire(ctx, order, now)
    silent = order.state in _REFUND_WHEN_SILENT and order.accept_by is not None and now > order.accept_by
    if silent and order.pending is None:
        return await _moderator_refund(ctx, order)
    if order.state is S.DISPUTED and order.dispute is not None:
        return await _dispute_round(ctx, order)
    return order


async def _expire(ctx: Ctx, order: Order, now: int) -> Order:
    """Not (fully) paid by ``pay_by``: cancelled, its stock given back; what was paid waits for a refund."""
    paid = order.funding.paid_sat
    note = "not paid in time: the order is cancelled and its stock given back"
    if paid > 0:
        note = (
            f"not fully paid in time ({paid} of {order.amount_sat} sat): the order is cancelled and its stock "
            f"given back; the {paid} sat paid stay in the escrow until the vendor refunds them (decline the order)"
        )
    return await ctx.store.update(orders.transition(order, S.EXPIRED, now=now, note=note), expect=order)


async def _record_funding(ctx: Ctx, order: Order, funding: Funding) -> Order:
    if funding == order.funding and order.state not in (S.AWAITING_PAYMENT, S.FUNDED):
        return order
    now = ctx.now()
    changed = orders.with_funding(order, funding, now=now)
    paid, amount = funding.paid_sat, order.amount_sat
    if changed.state is S.AWAITING_PAYMENT and paid >= amount:
        note = f"{paid} sat seen at the escrow address ({funding.confirmations} confirmations)"
        changed = orders.transition(changed, S.FUNDED, now=now, note=note)
        changed = orders.with_accept_by(changed, now + accept_window(ctx, order), now=now)
    if changed.state is S.FUNDED and paid < amount:
        note = f"the payment is no longer seen: {amount - paid} sat missing"
        changed = orders.transition(changed, S.AWAITING_PAYMENT, now=now, note=note)
    elif changed.state is S.FUNDED and funding.confirmations >= ctx.settings.confirmations:
        note = f"payment confirmed ({funding.confirmations} confirmations): accept or decline the order"
        changed = orders.transition(changed, S.CONFIRMED, now=now, note=note)
    if changed.state is S.EXPIRED and paid > 0 and order.funding.paid_sat == 0:
        note = f"{paid} sat paid after the order expired: refund them (decline the order)"
        changed = dataclasses.replace(changed, history=(*changed.history, HistoryEntry(now, S.EXPIRED, note)))
    if changed == order:
        return order
    return await ctx.store.update(changed, expect=order)


async def _moderator_refund(ctx: Ctx, order: Order) -> Order:
    """Not accepted in time: the moderator signs a refund to the buyer; the buyer co-signs it."""
    unsigned = await flows.build(ctx, order, PayoutKind.REFUND, sign=False)
    answer = await ctx.moderation.refund(order, unsigned.psbt)
    if answer.psbt is None:
        log.info("order %s: the moderator has not signed the refund yet (%s)", order.id, answer.note or answer.state)
        return order
    await flows.check_signed(ctx, order, answer.psbt, unsigned)
    payout = dataclasses.replace(unsigned, psbt=answer.psbt, signed_by=(Party.MODERATOR,))
    now = ctx.now()
    note = "not accepted in time: the moderator signed a refund; the buyer signs it to get the money back"
    moved = orders.transition(orders.with_pending(order, payout, now=now), S.REFUNDING, now=now, note=note)
    return await ctx.store.update(moved, expect=order)


async def send_dispute(ctx: Ctx, order: Order) -> Order:
    """The statements (and the order record) to the moderator's node; ``sent_at`` marks them delivered."""
    dispute = order.dispute
    assert dispute is not None
    await ctx.moderation.dispute(order, dispute.vendor_address or order.vendor_address)
    now = ctx.now()
    sent = orders.with_dispute(order, dataclasses.replace(dispute, sent_at=now), now=now)
    return await ctx.store.update(sent, expect=order)


async def _dispute_round(ctx: Ctx, order: Order) -> Order:
    dispute = order.dispute
    assert dispute is not None
    now = ctx.now()
    if dispute.sent_at is None:
        return await send_dispute(ctx, order)
    answer = await ctx.moderation.poll(order)
    if answer.psbt is None or answer.buyer_sat is None or answer.vendor_sat is None:
        return order
    split = (int(answer.buyer_sat), int(answer.vendor_sat), int(answer.moderator_sat or 0))
    payout = await flows.decided_split(ctx, order, answer.psbt, split)
    decided = dataclasses.replace(
        dispute, buyer_sat=Sats(split[0]), vendor_sat=Sats(split[1]), moderator_sat=Sats(split[2])
    )
    note = f"the moderator decided: buyer {split[0]} sat, vendor {split[1]} sat, moderator fee {split[2]} sat"
    moved = orders.with_pending(orders.with_dispute(order, decided, now=now), payout, now=now)
    moved = orders.transition(moved, S.DECIDED, now=now, note=note)
    return await ctx.store.update(moved, expect=order)
