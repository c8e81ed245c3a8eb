"""A buyer node's ``message``, ``dispute`` and ``psbt`` on its order: the buyer's order-page paths, applied once.

The mailbox applies at least once (a crash between the order's write and the
mailbox's mark applies that message again), so each change records the
message's seq in ``Order.extra["buyer_seq"]`` in the same write, and a seq
already recorded is done. A signed payout applied again finds it broadcast
already and does nothing. A buyer's node that broadcast the payout itself (it holds
every signature once it signs a release) is seen by its txid, as the watcher would.
"""

from __future__ import annotations

import dataclasses

from ..core.errors import Conflict
from ..messaging.models import ApplyError
from . import flows, orders, settlement
from .models import HistoryEntry, Message, Order, Party
from .sealing import seal_to_onion
from .service import Payments, clean_text

BUYER_SEQ = "buyer_seq"  # ``Order.extra``: the seq of the buyer node's last message applied to the order
MAX_MESSAGES = 200  # messages an order holds; later buyer messages are refused (a hostile node cannot grow it)
MAX_STATEMENTS = 20  # a buyer node's dispute statements on an order (each is sent to the moderator)
MAX_REVIEWS = 6  # a buyer node's review of an order, and at most 5 replacements (each re-signs the catalog)
REVIEW_GAP = 3600  # seconds between two reviews of one order
REVIEWS, REVIEW_AT = "reviews", "review_at"  # ``Order.extra``: reviews applied, when the last was
KNOWN_KINDS = frozenset({"order", "message", "psbt", "dispute", "review"})
_IGNORED_PSBT = "the buyer's node sent a signed payout, but none waits for the buyer's signature: ignored"


def applied(order: Order, seq: int) -> bool:
    held = order.extra.get(BUYER_SEQ, "0")
    return held.isdigit() and int(held) >= seq


def _seq(order: Order, seq: int) -> Order:
    return dataclasses.replace(order, extra={**order.extra, BUYER_SEQ: str(seq)})


async def message(p: Payments, order_id: str, text: str, seq: int) -> Order:
    said = clean_text(text, "message")

    async def add(order: Order) -> Order:
        if applied(order, seq):
            return order
        if len(order.messages) >= MAX_MESSAGES:
            raise ApplyError(
                f"this order holds {MAX_MESSAGES} messages, the most it takes: write to the store another way"
            )
        now = p.ctx.now()
        sealed = Message(at=now, sender=Party.BUYER, sealed=seal_to_onion(order.store, said))
        return await p.store.update(_seq(orders.with_message(order, sealed, now=now), seq), expect=order)

    return await p.act(order_id, add)


async def dispute(p: Payments, order_id: str, statement: str, seq: int) -> Order:
    said = clean_text(statement, "statement")

    async def open_(order: Order) -> Order:
        if applied(order, seq):
            return order
        said_before = [s for party, s in order.dispute.statements if party is Party.BUYER] if order.dispute else []
        if len(said_before) >= MAX_STATEMENTS:
            raise ApplyError(f"this dispute holds {MAX_STATEMENTS} statements of the buyer, the most it takes")
        return await p.disputed(order, _seq(await p.dispute_change(order, Party.BUYER, said), seq))

    return await p.act(order_id, open_)


def _settled(order: Order) -> bool:
    """A payout is broadcast or finished: a signed PSBT arriving now (again, or late) changes nothing."""
    return (order.pending is not None and order.pending.txid is not None) or bool(order.payouts)


async def psbt(p: Payments, order_id: str, signed: str, seq: int) -> Order:
    """The buyer node's signed PSBT combined with the pending payout and broadcast; nothing waiting: a note."""

    async def take(order: Order) -> Order:
        if p.psbt_for_buyer(order) is not None:
            try:
                return await flows.cosign(p.ctx, order, Party.BUYER, "".join(signed.split()))
            except Conflict:  # Core refuses it: already in its mempool when the buyer's node broadcast it
                seen = await settlement.outside_broadcast(p.ctx, order)
                if seen is None:
                    raise
                return seen
        if applied(order, seq) or _settled(order):
            return order
        if any(h.note == _IGNORED_PSBT for h in order.history):  # noted once: a node repeating it grows nothing
            return await p.store.update(_seq(order, seq), expect=order)
        entry = HistoryEntry(at=p.ctx.now(), state=order.state, note=_IGNORED_PSBT)
        noted = dataclasses.replace(order, history=(*order.history, entry), updated_at=entry.at)
        return await p.store.update(_seq(noted, seq), expect=order)

    return await p.act(order_id, take)


def _count(order: Order, name: str) -> int:
    held = order.extra.get(name, "0")
    return int(held) if held.isdigit() else 0


def refusal_noted(order: Order, kind: str, reason: str, now: int) -> Order:
    """``order`` with the refusal of the buyer's ``kind`` message in its history: one entry per kind, its note
    counting the refusals (a hostile node sending bad messages cannot grow the history without bound)."""
    kind = kind if kind in KNOWN_KINDS else "other"
    name = f"refused_{kind}"
    count = _count(order, name) + 1
    prefix = f"the buyer's {kind} message was refused"
    note = (f"{prefix}: {reason}" if count == 1 else f"{prefix} ({count} times; last: {reason})")[:500]
    extra = {**order.extra, name: str(count)}
    for i in range(len(order.history) - 1, -1, -1):
        if order.history[i].note.startswith(prefix):
            history = (*order.history[:i], dataclasses.replace(order.history[i], note=note), *order.history[i + 1 :])
            return dataclasses.replace(order, history=history, extra=extra, updated_at=now)
    entry = HistoryEntry(at=now, state=order.state, note=note)
    return dataclasses.replace(order, history=(*order.history, entry), extra=extra, updated_at=now)


def review_limit(order: Order, now: int) -> str | None:
    """Why another review of ``order`` is refused now (None: it may replace the last)."""
    count = _count(order, REVIEWS)
    if count >= MAX_REVIEWS:
        return f"this order's review was replaced {MAX_REVIEWS - 1} times already: it stays as it is"
    wait = _count(order, REVIEW_AT) + REVIEW_GAP - now
    if count and wait > 0:
        return f"a review may be replaced once an hour: send it again in {wait // 60 + 1} minutes"
    return None


async def reviewed(p: Payments, order_id: str, seq: int) -> Order:
    """Counts the review just added to the catalog (and records its seq)."""

    async def count(order: Order) -> Order:
        if applied(order, seq):
            return order
        now = p.ctx.now()
        extra = {**order.extra, REVIEWS: str(_count(order, REVIEWS) + 1), REVIEW_AT: str(now)}
        return await p.store.update(_seq(dataclasses.replace(order, extra=extra), seq), expect=order)

    return await p.act(order_id, count)
