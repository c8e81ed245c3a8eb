"""A payout from complete signatures to a confirmed transaction, and escrows spent elsewhere.

``settle`` stores a complete payout with its txid BEFORE ``sendrawtransaction``
(a crash in between is finished by the watcher), broadcasts it and leaves the
order in its state: an order is finished only once its payout has a
confirmation (``follow``, each watcher round, which broadcasts it again while
it is unconfirmed: Core answers a transaction it already knows with its txid).

A payout's txid is known from its unsigned transaction (``Payout.expected_txid``:
segwit signatures are not part of it), so a payout the buyer broadcast with
their own wallet (``finalizepsbt`` + ``sendrawtransaction``) is recognised
(``outside_broadcast``). Escrow outputs gone with no known payout explaining
them (spent with keys used outside Pasar, or a stored payout that lost to a
conflicting spend) move the order to ``spent`` with a history note, instead
of retrying forever.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ..core.errors import Conflict, PsbtRefused, WalletError
from ..core.ports import Utxo
from . import orders, psbt_raw
from .models import HistoryEntry, Order, OrderState, Payout, PayoutKind

if TYPE_CHECKING:
    from .flows import Ctx

log = logging.getLogger(__name__)

S = OrderState
FINAL_OF: dict[PayoutKind, OrderState] = {
    PayoutKind.RELEASE: S.COMPLETED,
    PayoutKind.REFUND: S.REFUNDED,
    PayoutKind.SPLIT: S.RESOLVED,
    PayoutKind.CLAIM: S.CLAIMED,
}


# testmempoolaccept's reasons for a transaction Core already holds: the payout is out (the buyer's own node may
# have broadcast it first), so it is recorded as broadcast like any other.
IN_MEMPOOL = ("txn-already-known", "txn-already-in-mempool", "txn-same-nonwitness-data-in-mempool")


def _varint(raw: bytes, pos: int) -> tuple[int, int]:
    first = raw[pos]
    if first < 0xFD:
        return first, pos + 1
    size = {0xFD: 2, 0xFE: 4, 0xFF: 8}[first]
    return int.from_bytes(raw[pos + 1 : pos + 1 + size], "little"), pos + 1 + size


def txid_of(tx_hex: str) -> str:
    """The txid of a network-serialised transaction (the hash of its serialisation without witnesses)."""
    raw = bytes.fromhex(tx_hex)
    segwit = raw[4] == 0 and raw[5] == 1
    pos = 6 if segwit else 4
    n_in, pos = _varint(raw, pos)
    for _ in range(n_in):
        script_len, pos = _varint(raw, pos + 36)
        pos += script_len + 4
    n_out, pos = _varint(raw, pos)
    for _ in range(n_out):
        script_len, pos = _varint(raw, pos + 8)
        pos += script_len
    stripped = raw[:4] + raw[6 if segwit else 4 : pos] + raw[-4:]
    return hashlib.sha256(hashlib.sha256(stripped).digest()).digest()[::-1].hex()


def expected_txid(payout: Payout) -> str | None:
    """The txid ``payout`` will have once signed (stored when built; read from its PSBT otherwise)."""
    if payout.expected_txid is not None:
        return payout.expected_txid
    try:
        return psbt_raw.unsigned_txid(payout.psbt)
    except psbt_raw.PsbtFormatError:
        return None


def gone(points: Iterable[tuple[str, int] | tuple[str, int, int]], utxos: Sequence[Utxo]) -> list[tuple[str, int]]:
    """The outpoints of ``points`` no longer unspent at the escrow (spent, in the mempool or a block)."""
    unspent = {(u.txid, u.vout) for u in utxos}
    return [(p[0], p[1]) for p in points if (p[0], p[1]) not in unspent]


def _noted(order: Order, note: str, now: int) -> Order:
    entry = HistoryEntry(at=now, state=order.state, note=note)
    return dataclasses.replace(order, history=(*order.history, entry), updated_at=now)


async def settle(ctx: Ctx, order: Order, payout: Payout) -> Order:
    """Finalize ``payout`` (all signatures present), store it with its txid, broadcast it; the order is finished
    by the watcher once the payout has a confirmation."""
    btc = ctx.wallet()
    final = await btc.finalize(payout.psbt)
    if not final.complete or final.hex is None:
        raise PsbtRefused(
            f"the {payout.kind.value} payout still lacks a signature: sign it in your wallet and upload it"
        )
    reason = await btc.test_accept(final.hex)
    if reason is not None and not reason.startswith(IN_MEMPOOL):  # already there (e.g. the buyer's node sent it)
        raise Conflict(f"Bitcoin Core refuses the {payout.kind.value} payout ({reason}); nothing was broadcast")
    txid = txid_of(final.hex)
    sent = dataclasses.replace(payout, txid=txid)
    now = ctx.now()
    note = f"{payout.kind.value} payout broadcast, txid {txid}, waiting for a confirmation"
    order = await ctx.store.update(_noted(orders.with_pending(order, sent, now=now), note, now), expect=order)
    await _broadcast(ctx, order, final.hex)
    return order


async def _broadcast(ctx: Ctx, order: Order, tx_hex: str) -> int | None:
    """Broadcast the order's stored payout; its confirmations if Core already knew it (None: unknown)."""
    pending = order.pending
    assert pending is not None and pending.txid is not None
    btc = ctx.wallet()
    try:
        await btc.broadcast(tx_hex)
    except WalletError:
        known = await btc.tx_confirmations(pending.txid)
        if known is None:
            raise
        log.info("order %s: payout %s was already known to Bitcoin Core", order.id, pending.txid)
        return known
    return None


async def finish(ctx: Ctx, order: Order, *, expect: Order | None = None) -> Order:
    """The order in the final state of its confirmed pending payout; stock given back where due."""
    pending = order.pending
    assert pending is not None and pending.txid is not None
    now = ctx.now()
    note = f"{pending.kind.value} payout confirmed: {pending.txid}"
    done = orders.transition(orders.with_payout(order, pending, now=now), FINAL_OF[pending.kind], now=now, note=note)
    return await ctx.store.update(done, expect=expect or order)  # gives the stock back where due


async def follow(ctx: Ctx, order: Order, utxos: Sequence[Utxo]) -> Order:
    """A stored (broadcast) payout: finish the order once it has a confirmation, else broadcast it again; one
    that lost to a conflicting spend of the escrow ends in ``spent``."""
    pending = order.pending
    assert pending is not None and pending.txid is not None
    btc = ctx.wallet()
    confirmations = await btc.tx_confirmations(pending.txid)
    if confirmations is not None and confirmations >= 1:
        return await finish(ctx, order)
    final = await btc.finalize(pending.psbt)
    if not final.complete or final.hex is None:
        raise WalletError(f"order {order.id}: the stored {pending.kind.value} payout no longer finalizes")
    try:
        known = await _broadcast(ctx, order, final.hex)
    except WalletError:
        if not gone(pending.inputs, utxos):
            raise  # Core down or refusing for another reason: the next round tries again
        lost = f"the {pending.kind.value} payout {pending.txid} lost to a conflicting transaction"
        return await spent_outside(ctx, order, gone(pending.inputs, utxos), lost)
    if known is not None and known >= 1:
        return await finish(ctx, order)
    return order


async def outside_broadcast(ctx: Ctx, order: Order) -> Order | None:
    """The pending payout's inputs are spent: if by the payout itself (broadcast outside Pasar), the order
    stores its txid (and is finished if it is confirmed); None when the payout is not what spent them."""
    pending = order.pending
    assert pending is not None
    txid = expected_txid(pending)
    if txid is None:
        return None
    confirmations = await ctx.wallet().tx_confirmations(txid)
    if confirmations is None:
        return None
    now = ctx.now()
    note = f"{pending.kind.value} payout broadcast outside Pasar, txid {txid}, waiting for a confirmation"
    seen = _noted(orders.with_pending(order, dataclasses.replace(pending, txid=txid), now=now), note, now)
    if confirmations >= 1:
        return await finish(ctx, seen, expect=order)
    return await ctx.store.update(seen, expect=order)


async def spent_outside(ctx: Ctx, order: Order, points: Sequence[tuple[str, int]], why: str = "") -> Order:
    """The escrow's outputs ``points`` were spent by a transaction Pasar did not build: the order ends ``spent``."""
    now = ctx.now()
    names = ", ".join(f"{txid}:{vout}" for txid, vout in points)
    note = (
        f"escrow spent outside Pasar (txid:vout {names} spent by a transaction this node did not build"
        f"{'; ' + why if why else ''}): see the watch-only wallet's listtransactions"
    )
    log.warning("order %s: %s", order.id, note)
    moved = orders.transition(orders.with_pending(order, None, now=now), S.SPENT, now=now, note=note)
    return await ctx.store.update(moved, expect=order)
