"""The JSON shapes of orders, cases and the moderation offer (docs/api.md), one function each.

``order_view`` is the one view of an order for the admin API, the CLI's
``--json`` and the admin pages; the buyer's ``/order/<token>.json`` shows a
subset of it.
"""

from __future__ import annotations

from typing import TypedDict

from ..core.models import Sats
from ..messaging.models import InMessage, OutMessage
from ..payments.models import Dispute, Message, ModeratorOffer, Order, Payout
from ..payments.moderation_store import Case


class HistoryView(TypedDict):
    at: int
    state: str
    note: str


class ItemView(TypedDict):
    listing_id: str
    title: str
    sku: str | None
    qty: int
    unit_price_sat: Sats
    shipping: str | None
    shipping_sat: Sats
    coupon: str | None
    discount_sat: Sats
    total_sat: Sats


class OutputView(TypedDict):
    address: str
    amount_sat: Sats
    role: str


class PendingView(TypedDict):
    action: str  # release | refund | split | claim
    psbt: str  # base64, with the signatures gathered so far
    signed_by: list[str]
    outputs: list[OutputView]
    fee_sat: Sats
    note: str
    txid: str | None  # set once broadcast (the order finishes at its first confirmation)


class PayoutView(TypedDict):
    kind: str
    txid: str | None
    outputs: list[OutputView]
    fee_sat: Sats
    dust_sat: Sats
    signed_by: list[str]
    created_at: int
    note: str


class StatementView(TypedDict):
    party: str
    text: str


class DisputeView(TypedDict):
    opened_by: str
    opened_at: int
    statements: list[StatementView]
    buyer_sat: Sats | None
    vendor_sat: Sats | None
    moderator_sat: Sats | None


class MessageView(TypedDict):
    at: int
    sender: str
    text: str


class OrderView(TypedDict):
    id: str
    state: str
    store: str
    created_at: int
    updated_at: int
    escrow_address: str
    amount_sat: Sats
    paid_sat: Sats
    missing_sat: Sats
    confirmations: int
    descriptor: str
    timeout_blocks: int
    item: ItemView
    refund_address: str
    moderator: str  # the moderator's node onion
    moderator_fee_sat: Sats
    pay_by: int
    accept_by: int | None
    fulfillment_note: str
    history: list[HistoryView]
    pending: PendingView | None
    payouts: list[PayoutView]
    dispute: DisputeView | None
    channel: str  # "browser" (the storefront's checkout) | "node" (a buyer's node, over signed messages)


class NodeMessageView(TypedDict):
    """One signed message of a node order (docs/protocol.md "Order messages") and where it is."""

    id: str
    kind: str
    direction: str  # "out" (this node sent it) | "in"
    at: int
    delivery: str  # out: queued | sent | delivered | failed: <reason>; in: delivered
    applied: str  # in: "" (waits for an earlier one) | "applied" | "rejected: <reason>"; out: ""


class OrderDetail(OrderView):
    ship_to: str  # decrypted with the store's key (the vendor's view only)
    messages: list[MessageView]
    node_messages: list[NodeMessageView]  # node orders only (empty for a Tor-Browser order)


class ModerationView(TypedDict):
    onion: str  # this node's onion, where vendors' nodes ask for keys
    enabled: bool
    fee_percent: int
    fee_sat: Sats
    terms: str


class CaseView(TypedDict):
    """A case this node moderates (``GET /disputes``)."""

    id: str
    store: str  # the vendor's store onion
    order_id: str
    state: str  # open | refund_signed | disputed | decided
    created_at: int
    amount_sat: Sats
    paid_sat: Sats | None  # from the order record the vendor sent with the dispute
    moderator_sat: Sats  # this node's fee
    escrow_address: str
    refund_address: str
    opened_by: str | None
    disputed_at: int | None
    statements: list[StatementView]
    buyer_sat: Sats | None
    vendor_sat: Sats | None
    decided_at: int | None
    psbt: str | None  # the refund or split, signed by this node
    note: str


def _outputs(payout: Payout) -> list[OutputView]:
    return [OutputView(address=o.address, amount_sat=o.amount_sat, role=o.role.value) for o in payout.outputs]


def _pending(payout: Payout | None) -> PendingView | None:
    if payout is None:
        return None
    return PendingView(
        action=payout.kind.value,
        psbt=payout.psbt,
        signed_by=[p.value for p in payout.signed_by],
        outputs=_outputs(payout),
        fee_sat=payout.fee_sat,
        note=payout.note,
        txid=payout.txid,
    )


def _payout(payout: Payout) -> PayoutView:
    return PayoutView(
        kind=payout.kind.value,
        txid=payout.txid,
        outputs=_outputs(payout),
        fee_sat=payout.fee_sat,
        dust_sat=payout.dust_sat,
        signed_by=[p.value for p in payout.signed_by],
        created_at=payout.created_at,
        note=payout.note,
    )


def _dispute(dispute: Dispute | None) -> DisputeView | None:
    if dispute is None:
        return None
    return DisputeView(
        opened_by=dispute.opened_by.value,
        opened_at=dispute.opened_at,
        statements=[StatementView(party=p.value, text=t) for p, t in dispute.statements],
        buyer_sat=dispute.buyer_sat,
        vendor_sat=dispute.vendor_sat,
        moderator_sat=dispute.moderator_sat,
    )


def _item(order: Order) -> ItemView:
    i = order.item
    return ItemView(
        listing_id=i.listing_id,
        title=i.title,
        sku=i.sku,
        qty=i.qty,
        unit_price_sat=i.unit_price_sat,
        shipping=i.shipping,
        shipping_sat=i.shipping_sat,
        coupon=i.coupon,
        discount_sat=i.discount_sat,
        total_sat=i.total_sat,
    )


def moderator_fee(order: Order) -> Sats:
    m = order.moderator
    return Sats(m.fee_sat + order.amount_sat * m.fee_percent // 100)


def order_view(order: Order) -> OrderView:
    """The order as the admin API, the CLI's ``--json`` and the admin pages show it."""
    return OrderView(
        id=order.id,
        state=order.state.value,
        store=order.store,
        created_at=order.created_at,
        updated_at=order.updated_at,
        escrow_address=order.escrow.address,
        amount_sat=order.amount_sat,
        paid_sat=order.funding.paid_sat,
        missing_sat=order.missing_sat,
        confirmations=order.funding.confirmations,
        descriptor=order.escrow.descriptor,
        timeout_blocks=order.escrow.timeout_blocks,
        item=_item(order),
        refund_address=order.refund_address,
        moderator=order.moderator.onion,
        moderator_fee_sat=moderator_fee(order),
        pay_by=order.pay_by,
        accept_by=order.accept_by,
        fulfillment_note=order.fulfillment_note,
        history=[HistoryView(at=h.at, state=h.state.value, note=h.note) for h in order.history],
        pending=_pending(order.pending),
        payouts=[_payout(p) for p in order.payouts],
        dispute=_dispute(order.dispute),
        channel=order.extra.get("channel", "browser"),
    )


def node_message_views(sent: list[OutMessage], received: list[InMessage]) -> list[NodeMessageView]:
    out = [
        NodeMessageView(id=m.id, kind=m.kind, direction="out", at=m.created_at, delivery=m.delivery_text(), applied="")
        for m in sent
    ]
    into = [
        NodeMessageView(id=m.id, kind=m.kind, direction="in", at=m.received_at, delivery="delivered", applied=m.applied)
        for m in received
    ]
    return sorted([*out, *into], key=lambda v: v["at"])


def order_detail(
    order: Order,
    ship_to: str,
    messages: list[tuple[Message, str]],
    node_messages: list[NodeMessageView] | None = None,
) -> OrderDetail:
    shown = [MessageView(at=m.at, sender=m.sender.value, text=text) for m, text in messages]
    return OrderDetail(**order_view(order), ship_to=ship_to, messages=shown, node_messages=node_messages or [])


def moderation_view(offer: ModeratorOffer) -> ModerationView:
    return ModerationView(
        onion=offer.onion,
        enabled=offer.enabled,
        fee_percent=offer.fee_percent,
        fee_sat=offer.fee_sat,
        terms=offer.terms,
    )


def case_view(case: Case) -> CaseView:
    return CaseView(
        id=case.id,
        store=case.store,
        order_id=case.order_id,
        state=case.state.value,
        created_at=case.created_at,
        amount_sat=case.amount_sat,
        paid_sat=case.paid_sat,
        moderator_sat=case.moderator_sat,
        escrow_address=case.escrow.address,
        refund_address=case.refund_address,
        opened_by=case.opened_by.value if case.opened_by else None,
        disputed_at=case.disputed_at,
        statements=[StatementView(party=p.value, text=t) for p, t in case.statements],
        buyer_sat=case.buyer_sat,
        vendor_sat=case.vendor_sat,
        decided_at=case.decided_at,
        psbt=case.psbt,
        note=case.note,
    )
