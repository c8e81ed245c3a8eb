"""The order state machine and small pure changes to an order (each returns a new ``Order``).

``ALLOWED`` says which state may follow which; ``transition`` is the only way
to change ``state``, and it logs every move in ``history`` with its time and
note. The moves follow docs/design.md "Escrow":

- paying: awaiting_payment -> funded (0-conf) -> confirmed; a payment that
  vanishes (evicted, reorganised) goes back; not fully paid past ``pay_by`` -> expired
  (what was paid is refunded by declining: expired -> declined).
- the vendor: confirmed -> accepted -> fulfilled (a release waits for the
  buyer) -> completed; or declined (a refund waits for the buyer) -> refunded.
  A refund is possible in any funded state before completion.
- nobody accepts in time: funded/confirmed -> refunding (the moderator signed
  a refund) -> refunded. No dispute from refunding: the buyer already holds a
  moderator-signed refund (a dispute would let them take both).
- disputes: any funded state before completion -> disputed -> decided (the
  moderator signed a split) -> resolved; while disputed the parties may still
  settle by a release or a refund.
- the vendor's timeout key: every funded, unfinished state -> claimed (the
  script allows it after N blocks; the chain decides).
- a payment seen after expiry can still be refunded (expired -> declined).
- a payout is final once it has a confirmation (until then the order keeps its
  state with the payout stored, txid set); an escrow spent by a transaction
  Pasar did not build -> spent.
"""

from __future__ import annotations

import dataclasses

from ..core.errors import Conflict
from .models import Dispute, Funding, HistoryEntry, Message, Order, OrderState, Payout

S = OrderState

# Funded, not yet finished: the escrow holds the buyer's money.
_HOLDING = {S.FUNDED, S.CONFIRMED, S.ACCEPTED, S.DECLINED, S.FULFILLED, S.REFUNDING, S.DISPUTED, S.DECIDED}

ALLOWED: dict[OrderState, set[OrderState]] = {
    S.AWAITING_PAYMENT: {S.FUNDED, S.CONFIRMED, S.EXPIRED, S.DECLINED},
    S.FUNDED: {S.CONFIRMED, S.AWAITING_PAYMENT, S.DECLINED, S.REFUNDING, S.DISPUTED, S.CLAIMED, S.SPENT},
    S.CONFIRMED: {S.ACCEPTED, S.FUNDED, S.DECLINED, S.REFUNDING, S.DISPUTED, S.CLAIMED, S.SPENT},
    S.ACCEPTED: {S.FULFILLED, S.DECLINED, S.DISPUTED, S.CLAIMED, S.SPENT},
    S.DECLINED: {S.REFUNDED, S.DISPUTED, S.CLAIMED, S.SPENT},
    S.FULFILLED: {S.COMPLETED, S.DECLINED, S.DISPUTED, S.CLAIMED, S.SPENT},
    S.REFUNDING: {S.REFUNDED, S.DECLINED, S.CLAIMED, S.SPENT},
    S.DISPUTED: {S.DECIDED, S.COMPLETED, S.DECLINED, S.REFUNDED, S.CLAIMED, S.SPENT},
    S.DECIDED: {S.RESOLVED, S.CLAIMED, S.SPENT},
    S.COMPLETED: set(),
    S.REFUNDED: set(),
    S.RESOLVED: set(),
    S.CLAIMED: set(),
    S.EXPIRED: {S.DECLINED, S.SPENT},
    S.SPENT: set(),
}

# What moving to a state is called in "cannot <verb> an order that is <state>".
VERBS: dict[OrderState, str] = {
    S.AWAITING_PAYMENT: "wait for payment on",
    S.FUNDED: "mark as paid",
    S.CONFIRMED: "confirm",
    S.ACCEPTED: "accept",
    S.DECLINED: "decline or refund",
    S.FULFILLED: "fulfill",
    S.COMPLETED: "complete",
    S.REFUNDING: "start a refund of",
    S.REFUNDED: "refund",
    S.DISPUTED: "dispute",
    S.DECIDED: "decide",
    S.RESOLVED: "resolve",
    S.CLAIMED: "claim",
    S.EXPIRED: "expire",
    S.SPENT: "mark as spent elsewhere",
}


def label(state: OrderState) -> str:
    """``state`` as people read it: "awaiting payment"."""
    return state.value.replace("_", " ")


def holds_funds(state: OrderState) -> bool:
    """Whether the escrow holds the buyer's money in this state (paid, not yet paid out)."""
    return state in _HOLDING


def can(order: Order, to: OrderState) -> bool:
    """Whether ``check`` lets ``order`` move to ``to``."""
    sent = order.pending is not None and order.pending.txid is not None
    return to in ALLOWED[order.state] and (to.final or not sent)


def check(order: Order, to: OrderState) -> None:
    """``Conflict("cannot accept an order that is declined")`` unless ``order`` may move to ``to``."""
    if to not in ALLOWED[order.state]:
        raise Conflict(f"cannot {VERBS[to]} an order that is {label(order.state)}")
    sent = order.pending
    if sent is not None and sent.txid is not None and not to.final:
        raise Conflict(
            f"cannot {VERBS[to]} the order: its {sent.kind.value} payout {sent.txid} is broadcast; "
            "wait for its confirmation"
        )


def transition(order: Order, to: OrderState, *, now: int, note: str = "") -> Order:
    """``order`` in state ``to``, the move logged in its history; ``Conflict`` for a forbidden move."""
    check(order, to)
    entry = HistoryEntry(at=now, state=to, note=note)
    return dataclasses.replace(order, state=to, updated_at=now, history=(*order.history, entry))


def with_funding(order: Order, funding: Funding, *, now: int) -> Order:
    """``order`` with what the escrow address holds now (its state unchanged)."""
    if funding == order.funding:
        return order
    return dataclasses.replace(order, funding=funding, updated_at=now)


def with_pending(order: Order, payout: Payout | None, *, now: int) -> Order:
    """``order`` with ``payout`` waiting for signatures (None: nothing waits)."""
    return dataclasses.replace(order, pending=payout, updated_at=now)


def with_payout(order: Order, payout: Payout, *, now: int) -> Order:
    """``order`` with ``payout`` broadcast: added to ``payouts``; the pending payout it completes is cleared."""
    return dataclasses.replace(order, pending=None, payouts=(*order.payouts, payout), updated_at=now)


def with_message(order: Order, message: Message, *, now: int) -> Order:
    return dataclasses.replace(order, messages=(*order.messages, message), updated_at=now)


def with_dispute(order: Order, dispute: Dispute, *, now: int) -> Order:
    return dataclasses.replace(order, dispute=dispute, updated_at=now)


def with_accept_by(order: Order, accept_by: int | None, *, now: int) -> Order:
    return dataclasses.replace(order, accept_by=accept_by, updated_at=now)


def with_fulfillment(order: Order, note: str, *, now: int) -> Order:
    return dataclasses.replace(order, fulfillment_note=note, updated_at=now)


def with_extra(order: Order, key: str, value: str, *, now: int) -> Order:
    return dataclasses.replace(order, extra={**order.extra, key: value}, updated_at=now)


_WILL_NOT_SHIP = {S.DECLINED, S.REFUNDING, S.REFUNDED, S.CLAIMED, S.SPENT}


def gives_back_stock(order: Order) -> bool:
    """Whether ``order``'s units go back to the store: it expired (unpaid or not fully paid), or it will not
    ship (declined, refunding, refunded, claimed or spent elsewhere) and never shipped."""
    if order.state is S.EXPIRED:
        return True
    shipped = any(entry.state is S.FULFILLED for entry in order.history)
    return order.state in _WILL_NOT_SHIP and not shipped
