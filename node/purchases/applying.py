"""Applying what the store's node sends on a purchase (the buyer's ``Applier`` for the mailbox).

``escrow`` is checked completely (``checks.escrow_answer``, then Core's
checksum and address) before the purchase becomes payable; a failing one
refuses the purchase for good. ``refused``, ``state`` and ``message`` are
recorded; a ``payout`` is checked (roles, then the PSBT), stored, and signed at
once when it is a refund or a split (a release waits for the buyer).
A permanent problem raises ``ApplyError`` (the message is marked rejected with
the reason); Core or storage trouble raises other ``PasarError``s (retried).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping

from ..core.errors import BadRequest, WalletError
from ..core.models import Sats
from ..messaging import boxes, wire
from ..messaging.models import ApplyError, InMessage
from ..payments import escrow as E
from ..payments.models import OrderState, PayoutKind
from . import checks, signing
from .context import MAX_NOTES, Ctx, event, sign_pending
from .models import Note, Purchase, PurchaseState
from .sending import order_key

log = logging.getLogger(__name__)
_BEFORE_ESCROW = {PurchaseState.QUEUED.value, PurchaseState.PLACED.value}
_VENDOR_STATES = frozenset(s.value for s in OrderState)
MAX_FIELDS = 50  # field problems kept from a refusal


async def _refuse(ctx: Ctx, p: Purchase, reason: str) -> ApplyError:
    """Mark the purchase refused (never payable) and return the error that rejects the message."""
    log.warning("purchase %s: refused the store's escrow: %s", p.id, reason)
    now = ctx.clock()

    def change(current: Purchase) -> Purchase:
        refused = dataclasses.replace(current, reason=reason)
        return event(refused, f"the escrow failed this node's checks: {reason}", now=now, state=PurchaseState.REFUSED)

    await ctx.store.update(p.id, change)
    return ApplyError(reason)


async def _core_agrees(ctx: Ctx, ans: checks.EscrowAnswer) -> None:
    btc, e = ctx.wallet(), ans.escrow
    try:
        checksum = await btc.checksum(ans.bare_descriptor)
    except BadRequest as exc:  # Core refused the descriptor itself
        raise checks.refuse(f"Bitcoin Core refuses the escrow descriptor ({exc.message})") from exc
    core_address = await btc.derive_address(f"{ans.bare_descriptor}#{checksum}")
    try:
        E.build_escrow(
            e.buyer,
            e.vendor,
            e.moderator,
            e.vendor_timeout,
            e.timeout_blocks,
            checksum,
            ctx.settings.network,
            core_address,
        )
    except WalletError as exc:  # raised for a mismatch only: the RPCs ran above
        raise checks.refuse(exc.message) from exc


async def on_escrow(ctx: Ctx, p: Purchase, msg: InMessage) -> None:
    if p.escrow is not None or p.state not in _BEFORE_ESCROW:
        return  # answered already (or refused): the first answer stands
    try:
        buyer = wire.key_address(order_key(p))
        ans = checks.escrow_answer(p, msg.body, network=ctx.settings.network, buyer=buyer, now=ctx.clock())
        await _core_agrees(ctx, ans)
    except BadRequest as exc:
        raise await _refuse(ctx, p, exc.message) from exc
    await ctx.wallet().watch(ans.escrow.descriptor)
    now = ctx.clock()
    note = f"escrow checked: pay {ans.amount_sat} sat to {ans.escrow.address}"

    def change(current: Purchase) -> Purchase:
        if current.escrow is not None or current.state not in _BEFORE_ESCROW:
            return current
        answered = dataclasses.replace(
            current,
            escrow=ans.escrow,
            escrow_amount_sat=ans.amount_sat,
            moderator_fee_sat=ans.moderator_fee_sat,
            receipt=ans.receipt,
            item=ans.item,
            vendor_address=ans.vendor_address,
            pay_by=ans.pay_by,
            accept_window=ans.accept_window,
        )
        return event(answered, note, now=now, state=PurchaseState.AWAITING_PAYMENT)

    await ctx.store.update(p.id, change)


def _text(body: Mapping[str, object], name: str, limit: int = 2000) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise ApplyError(f"the message has no text field {name!r}")
    return value[:limit]


def _number(body: Mapping[str, object], name: str) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ApplyError(f"the message has no whole number {name!r}")
    return value


async def on_refused(ctx: Ctx, p: Purchase, msg: InMessage) -> None:
    reason = _text(msg.body, "reason") or "the store refused the order"
    raw_fields = msg.body.get("fields")
    items = list(raw_fields.items())[:MAX_FIELDS] if isinstance(raw_fields, dict) else []
    fields = {str(k)[:100]: str(v)[:500] for k, v in items}
    now = ctx.clock()

    def change(current: Purchase) -> Purchase:
        if current.escrow is not None or current.state == PurchaseState.REFUSED:
            return current  # an escrow stands (the store refunds through it), or refused already
        note = Note(id=msg.id, at=now, direction="in", kind="refused", text=reason)
        refused = dataclasses.replace(current, reason=reason, refused_fields=fields, notes=(*current.notes, note))
        return event(refused, f"the store refused the order: {reason}", now=now, state=PurchaseState.REFUSED)

    await ctx.store.update(p.id, change)


async def on_state(ctx: Ctx, p: Purchase, msg: InMessage) -> None:
    body = msg.body
    state = body.get("state")
    if state not in _VENDOR_STATES:
        raise ApplyError(f"unknown order state {state!r}")
    index, at = _number(body, "index"), _number(body, "at")
    paid, confirmations = _number(body, "paid_sat"), _number(body, "confirmations")
    note = _text(body, "note") if body.get("note") is not None else ""
    raw_txid = body.get("txid")
    txid = raw_txid if isinstance(raw_txid, str) else None

    def change(current: Purchase) -> Purchase:
        if index <= current.vendor_index:
            return current  # told already
        keep = current.escrow is None and current.state == PurchaseState.REFUSED  # refused here: stays refused
        new_state = current.state if keep else str(state)
        pending = None if PurchaseState(new_state).final else current.pending
        told = dataclasses.replace(
            current,
            vendor_index=index,
            paid_sat=Sats(paid),
            confirmations=confirmations,
            last_txid=txid,
            pending=pending,
        )
        return event(told, note or f"the store says: {state}", now=at, state=new_state)

    await ctx.store.update(p.id, change)


async def on_message(ctx: Ctx, p: Purchase, msg: InMessage) -> None:
    try:
        text = boxes.unbox(order_key(p), p.store, _text(msg.body, "text", limit=boxes.MAX_BOXED))
    except BadRequest as exc:
        raise ApplyError(f"the store's message does not open ({exc.message})") from exc
    now = ctx.clock()

    def change(current: Purchase) -> Purchase:
        if any(n.id == msg.id for n in current.notes):
            return current
        held = sum(n.direction == "in" for n in current.notes)
        if held >= MAX_NOTES:  # a store flooding the record: later messages are dropped, said once
            return current if held > MAX_NOTES else _full(current, now)
        note = Note(id=msg.id, at=now, direction="in", kind="message", text=text)
        return dataclasses.replace(current, notes=(*current.notes, note), updated_at=now)

    await ctx.store.update(p.id, change)


async def on_payout(ctx: Ctx, p: Purchase, msg: InMessage) -> None:
    if p.escrow is None:
        raise ApplyError("a payout for a purchase whose escrow this node has not checked")
    now = ctx.clock()
    try:
        pending = checks.payout(p, msg.body, now=now)
        if p.pending is not None and p.pending.signed and p.pending.kind is pending.kind:
            return  # signed already: the store sent it again
        if pending.kind is PayoutKind.SPLIT:
            pending = dataclasses.replace(pending, waiting=checks.split_waits(p))
        candidate = dataclasses.replace(p, pending=pending)
        await signing.check(ctx.wallet(), candidate, max_fee_rate=ctx.settings.max_fee_rate)
    except BadRequest as exc:
        said = f"refused the store's payout: {exc.message}"
        await ctx.store.update(p.id, lambda current: _once(current, said, now))
        raise ApplyError(exc.message) from exc

    def store_pending(current: Purchase) -> Purchase:
        if current.pending is not None and current.pending.psbt == pending.psbt:
            return current  # applied again after a crash: stored already
        said = f"a {pending.kind.value} waits" + (f": {pending.waiting}" if pending.waiting else "")
        return event(dataclasses.replace(current, pending=pending), said, now=now)

    stored = await ctx.store.update(p.id, store_pending)
    if pending.kind in (PayoutKind.REFUND, PayoutKind.SPLIT) and not pending.waiting:
        try:
            await sign_pending(ctx, stored)
        except BadRequest as exc:
            raise ApplyError(exc.message) from exc


def _full(p: Purchase, now: int) -> Purchase:
    said = f"the store sent more than {MAX_NOTES} messages: later ones are not kept"
    note = Note(id="", at=now, direction="in", kind="refused", text=said)
    return event(dataclasses.replace(p, notes=(*p.notes, note)), said, now=now)


def _once(p: Purchase, note: str, now: int) -> Purchase:
    """``p`` with a history line, unless the last line says the same (a message applied again)."""
    if p.history and p.history[-1].note == note:
        return p
    return event(p, note, now=now)


Handler = Callable[[Ctx, Purchase, InMessage], Awaitable[None]]
HANDLERS: dict[str, Handler] = {
    "escrow": on_escrow,
    "refused": on_refused,
    "state": on_state,
    "message": on_message,
    "payout": on_payout,
}


async def apply(ctx: Ctx, msg: InMessage) -> None:
    p = await ctx.store.find(msg.order)
    if p is None:
        raise ApplyError(f"this node has no purchase {msg.order}")
    if msg.sender != p.store:
        raise ApplyError("the message is not from the purchase's store")
    handler = HANDLERS.get(msg.kind)
    if handler is None:
        raise ApplyError(f"a buyer's node takes no {msg.kind!r} message")
    await handler(ctx, p, msg)
