"""The JSON shape of a purchase (``GET /api/v1/purchases[/<id>]``, the admin pages, ``pasar purchases``)."""

from __future__ import annotations

import json
from typing import TypedDict

from ..messaging.models import InMessage, OutMessage
from .checks import in_dispute
from .models import Purchase
from .service import PurchaseDetail

REFUSED_PAYOUT = "refused the store's payout: "


class EventView(TypedDict):
    at: int
    state: str
    note: str


class MessageView(TypedDict, total=False):
    id: str
    kind: str
    delivery: str  # queued | sent | delivered | failed: <reason> (a received message: delivered)
    direction: str  # "out" | "in"
    at: int
    text: str  # messages, disputes and refusals: the plain text
    applied: str  # received messages: "" waiting | "applied" | "rejected: <reason>"
    attempts: int  # sent messages: delivery attempts that failed so far
    reason: str  # sent messages: the last attempt's failure ("" before any)


class OutputView(TypedDict):
    address: str
    amount_sat: int
    role: str


class PayoutView(TypedDict):
    kind: str
    outputs: list[OutputView]
    fee_sat: int
    signed: bool
    txid: str | None
    received_at: int
    waiting: str  # why it is not signed yet ("" when nothing holds it)


class ReviewView(TypedDict):
    rating: int
    text: str
    seq: int


class PurchaseView(TypedDict):
    id: str
    state: str
    reason: str  # why refused ("" otherwise)
    store: str
    listing: str
    listing_hash: str
    title: str
    sku: str | None
    qty: int
    shipping: str | None
    coupon: str | None
    moderator: str
    priced_sat: int  # what this node priced from the signed catalog
    amount_sat: int  # what the store asks into the escrow (the priced amount until it answers)
    escrow_address: str | None
    descriptor: str | None
    timeout_blocks: int | None
    vendor_address: str
    refund_address: str
    pay_by: int | None
    paying: bool  # the payment is signed and stored, not yet accepted by Core (re-broadcast, never re-funded)
    paid_txid: str | None
    paid_sat: int
    confirmations: int
    created_at: int
    updated_at: int
    history: list[EventView]
    messages: list[MessageView]
    pending_payout: PayoutView | None
    payout_refused: str  # why the store's last payout was refused ("" when none was)
    disputed: bool  # a dispute was opened (by you, or reported by the store)
    review: ReviewView | None


def _texts(p: Purchase) -> dict[str, str]:
    return {n.id: n.text for n in p.notes}


def _out(m: OutMessage, texts: dict[str, str]) -> MessageView:
    view = MessageView(
        id=m.id,
        kind=m.kind,
        delivery=m.delivery_text(),
        direction="out",
        at=m.created_at,
        attempts=m.attempts,
        reason=m.reason,
    )
    if m.id in texts:
        view["text"] = texts[m.id]
    return view


def _in(m: InMessage, texts: dict[str, str]) -> MessageView:
    view = MessageView(id=m.id, kind=m.kind, delivery="delivered", direction="in", at=m.received_at, applied=m.applied)
    if m.id in texts:
        view["text"] = texts[m.id]
    return view


def _payout(p: Purchase) -> PayoutView | None:
    pending = p.pending
    if pending is None:
        return None
    outputs = [OutputView(address=o.address, amount_sat=o.amount_sat, role=o.role.value) for o in pending.outputs]
    return PayoutView(
        kind=pending.kind.value,
        outputs=outputs,
        fee_sat=pending.fee_sat,
        signed=pending.signed,
        txid=pending.txid,
        received_at=pending.received_at,
        waiting=pending.waiting,
    )


def _payout_refused(p: Purchase) -> str:
    for e in reversed(p.history):
        if e.note.startswith(REFUSED_PAYOUT):
            return e.note[len(REFUSED_PAYOUT) :]
        if e.note.startswith(("a release waits", "a refund waits", "a split waits", "you signed the")):
            return ""  # a later payout stands
    return ""


def _review(p: Purchase) -> ReviewView | None:
    if p.review is None:
        return None
    body = json.loads(p.review)["body"]
    return ReviewView(rating=int(body["rating"]), text=str(body["text"]), seq=p.review_seq)


def purchase_view(d: PurchaseDetail) -> PurchaseView:
    p, texts = d.purchase, _texts(d.purchase)
    messages = sorted(
        [*(_out(m, texts) for m in d.outgoing), *(_in(m, texts) for m in d.incoming)], key=lambda m: m["at"]
    )
    e = p.escrow
    return PurchaseView(
        id=p.id,
        state=p.state,
        reason=p.reason,
        store=p.store,
        listing=p.listing_id,
        listing_hash=p.listing_hash,
        title=p.item.title if p.item is not None and p.item.title else p.title,
        sku=p.sku,
        qty=p.qty,
        shipping=p.shipping,
        coupon=p.coupon,
        moderator=p.moderator,
        priced_sat=p.amount_sat,
        amount_sat=p.escrow_amount_sat if p.escrow_amount_sat is not None else p.amount_sat,
        escrow_address=None if e is None else e.address,
        descriptor=None if e is None else e.descriptor,
        timeout_blocks=None if e is None else e.timeout_blocks,
        vendor_address=p.vendor_address,
        refund_address=p.refund_address,
        pay_by=p.pay_by,
        paying=p.paid_txid is not None and not p.paid_sent,
        paid_txid=p.paid_txid,
        paid_sat=p.paid_sat,
        confirmations=p.confirmations,
        created_at=p.created_at,
        updated_at=p.updated_at,
        history=[EventView(at=h.at, state=h.state, note=h.note) for h in p.history],
        messages=messages,
        pending_payout=_payout(p),
        payout_refused=_payout_refused(p),
        disputed=in_dispute(p),
        review=_review(p),
    )
