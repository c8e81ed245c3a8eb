"""Typed records of the buyer's purchases (``purchases.sqlite``; JSON through ``payments.codec``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from ..core.models import Sats
from ..payments.models import NO_SATS, Escrow, KeyRef, OrderState, PayoutKind, PayoutOutput


class PurchaseState(StrEnum):
    """Where a purchase is: the buyer node's own states, then the vendor's ``OrderState`` values as reported."""

    QUEUED = "queued"  # the order message is not acknowledged by the store's node yet
    PLACED = "placed"  # delivered; no escrow answer yet
    REFUSED = "refused"  # the store refused the order, or its escrow answer failed our checks
    AWAITING_PAYMENT = OrderState.AWAITING_PAYMENT.value
    FUNDED = OrderState.FUNDED.value
    CONFIRMED = OrderState.CONFIRMED.value
    ACCEPTED = OrderState.ACCEPTED.value
    DECLINED = OrderState.DECLINED.value
    FULFILLED = OrderState.FULFILLED.value
    COMPLETED = OrderState.COMPLETED.value
    REFUNDING = OrderState.REFUNDING.value
    REFUNDED = OrderState.REFUNDED.value
    DISPUTED = OrderState.DISPUTED.value
    DECIDED = OrderState.DECIDED.value
    RESOLVED = OrderState.RESOLVED.value
    CLAIMED = OrderState.CLAIMED.value
    EXPIRED = OrderState.EXPIRED.value
    SPENT = OrderState.SPENT.value

    @property
    def final(self) -> bool:
        return self is PurchaseState.REFUSED or self.value in {s.value for s in OrderState if s.final}


FINAL = frozenset(s.value for s in PurchaseState if s.final)
REVIEWABLE = frozenset({PurchaseState.COMPLETED.value, PurchaseState.RESOLVED.value})


@dataclass(frozen=True)
class PurchaseRequest:
    """What the buyer chose (``POST /purchases``), unchecked beyond types."""

    store: str
    listing: str
    sku: str | None = None
    qty: int = 1
    shipping: str | None = None
    moderator: str = ""
    ship_to: str = ""
    coupon: str | None = None


@dataclass(frozen=True)
class EscrowItem:
    """The item as the store's escrow answer priced it."""

    title: str
    unit_price_sat: Sats
    shipping_sat: Sats
    discount_sat: Sats


@dataclass(frozen=True)
class PendingPayout:
    """A payout the store's node sent for our signature (checked before it is stored)."""

    kind: PayoutKind
    psbt: str  # as received (base64), or with our signature once signed
    outputs: tuple[PayoutOutput, ...]
    fee_sat: Sats
    received_at: int
    signed: bool = False  # our wallet signed it (and the signed PSBT went back to the store)
    txid: str | None = None  # when we broadcast it ourselves
    waiting: str = ""  # why it is not signed yet (a split outside a dispute), shown with it


@dataclass(frozen=True)
class Event:
    """One line of the purchase's history (ours, or the store's ``state`` messages)."""

    at: int
    state: str
    note: str = ""


@dataclass(frozen=True)
class Note:
    """A plain-text message on the purchase (ours or the store's); ``id`` is the order message's id."""

    id: str
    at: int
    direction: str  # "out" | "in"
    kind: str  # "message" | "dispute" | "refused"
    text: str


@dataclass(frozen=True)
class Purchase:
    """One purchase on another store's node; ``order_key`` (hex seed) is never shown."""

    id: str
    store: str
    listing_id: str
    listing_hash: str
    title: str
    sku: str | None
    qty: int
    shipping: str | None
    coupon: str | None
    moderator: str
    amount_sat: Sats  # what this node priced from the signed catalog (before any coupon)
    order_key: str
    buyer_key: KeyRef
    refund_address: str
    state: str
    created_at: int
    updated_at: int
    ship_to: str = ""
    store_timeout: int | None = None  # the catalog's escrow_timeout_blocks when it publishes one
    escrow: Escrow | None = None  # set only once the escrow answer passed every check
    escrow_amount_sat: Sats | None = None  # what the store asks into the escrow (amount_sat of its answer)
    moderator_fee_sat: Sats = NO_SATS  # the most a split pays the moderator (its signed key answer's terms)
    receipt: str | None = None  # the store's signed receipt (canonical JSON), embedded in our review
    item: EscrowItem | None = None
    vendor_address: str = ""
    pay_by: int | None = None
    accept_window: int | None = None
    paid_txid: str | None = None  # stored with ``paid_hex`` BEFORE the payment is broadcast (see ``pay``)
    paid_hex: str | None = None  # the signed funding transaction: re-broadcast after a crash, never re-funded
    paid_sent: bool = False  # Core accepted the broadcast (or the wallet sees the coins)
    paid_sat: Sats = NO_SATS  # what the store reports seen in the escrow
    confirmations: int = 0
    funding: tuple[tuple[str, int, int], ...] = ()  # (txid, vout, sat) our watch-only wallet sees
    funding_block: str | None = None  # the block confirming funding[0]
    pending: PendingPayout | None = None
    last_txid: str | None = None  # the store's last payout txid
    history: tuple[Event, ...] = ()
    vendor_index: int = -1  # the store's history entries applied up to this index
    notes: tuple[Note, ...] = ()
    disputed: bool = False
    review: str | None = None  # the raw review envelope (canonical JSON)
    review_seq: int = 0
    reason: str = ""  # why refused
    refused_fields: dict[str, str] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.state in FINAL
