"""Typed records of orders, escrows, payouts and moderation (docs/design.md, "Escrow").

Money is ``Sats`` (integer satoshis). Records are frozen dataclasses; the
order store keeps them as canonical JSON (``node/payments/codec.py``), the
API shows their ``view``s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from ..core.models import Sats

NO_SATS = Sats(0)


class OrderState(StrEnum):
    """Where an order is; the value is what the API, the pages and the CLI show."""

    AWAITING_PAYMENT = "awaiting_payment"  # escrow address shown, less than the amount seen
    FUNDED = "funded"  # the whole amount seen, fewer confirmations than the store asks
    CONFIRMED = "confirmed"  # paid and confirmed: the vendor accepts or declines
    ACCEPTED = "accepted"
    DECLINED = "declined"  # a refund payout waits for the buyer's signature
    FULFILLED = "fulfilled"  # shipped; a release payout (vendor-signed) waits for the buyer's signature
    COMPLETED = "completed"  # released to the vendor (confirmed)
    REFUNDING = "refunding"  # not accepted in time: the moderator-signed refund waits for the buyer
    REFUNDED = "refunded"  # refund confirmed
    DISPUTED = "disputed"  # statements sent to the moderator
    DECIDED = "decided"  # the moderator signed a split; the winning side co-signs
    RESOLVED = "resolved"  # split confirmed
    CLAIMED = "claimed"  # the vendor's timeout claim confirmed
    EXPIRED = "expired"  # not (fully) paid within the window: stock released; what was paid can be refunded
    SPENT = "spent"  # the escrow was spent by a transaction Pasar did not build (said in the history)

    @property
    def final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset(
    {
        OrderState.COMPLETED,
        OrderState.REFUNDED,
        OrderState.RESOLVED,
        OrderState.CLAIMED,
        OrderState.EXPIRED,
        OrderState.SPENT,
    }
)


class Party(StrEnum):
    BUYER = "buyer"
    VENDOR = "vendor"
    MODERATOR = "moderator"


class PayoutKind(StrEnum):
    RELEASE = "release"  # vendor + buyer: the price to the vendor, any surplus back to the buyer
    REFUND = "refund"  # vendor + buyer, or moderator + buyer: everything back to the buyer
    SPLIT = "split"  # moderator + the winning side: buyer / vendor / moderator fee as decided
    CLAIM = "claim"  # the vendor alone with its timeout key, N blocks after funding


@dataclass(frozen=True)
class KeyRef:
    """A public key in the escrow: 66 hex characters, and its origin ``[fingerprint/path]`` or ""."""

    pubkey: str
    origin: str = ""

    def descriptor_key(self) -> str:
        return f"{self.origin}{self.pubkey}"


@dataclass(frozen=True)
class Escrow:
    """The 2-of-3 output: ``wsh(or_d(multi(2,B,V,M),and_v(v:pk(V2),older(N))))``."""

    buyer: KeyRef
    vendor: KeyRef
    moderator: KeyRef
    vendor_timeout: KeyRef  # V2: spends alone after ``timeout_blocks``
    timeout_blocks: int
    descriptor: str  # with its "#checksum"
    address: str


@dataclass(frozen=True)
class ModeratorOffer:
    """What a moderator's node offers (signed by its node key as ``pasar.moderation``)."""

    onion: str  # the moderator's node onion
    enabled: bool
    fee_percent: int  # 0..50, of the order amount
    fee_sat: Sats
    terms: str

    def fee_for(self, amount: Sats) -> Sats:
        return Sats(self.fee_sat + amount * self.fee_percent // 100)


@dataclass(frozen=True)
class ModeratorTerms:
    """The moderator of one order, as its signed key answer named it."""

    onion: str
    pubkey: KeyRef
    fee_percent: int
    fee_sat: Sats
    terms_hash: str  # "sha256:..." of the terms text

    def fee_for(self, amount: Sats) -> Sats:
        """The moderator's agreed fee for an order of ``amount``: ``fee_sat`` + ``amount * fee_percent // 100``."""
        return Sats(self.fee_sat + amount * self.fee_percent // 100)


@dataclass(frozen=True)
class SignedTerms:
    """A moderator's key answer: the terms read from it and the signed envelope itself (canonical JSON), which
    a buyer's node checks on its own (it names the order, the store, the moderator's key and the escrow)."""

    terms: ModeratorTerms
    answer: str


@dataclass(frozen=True)
class OrderItem:
    """What was bought, priced exactly as the listing said at checkout."""

    listing_id: str
    listing_hash: str
    title: str
    sku: str | None
    qty: int
    unit_price_sat: Sats
    shipping: str | None  # option name; None for items without shipping
    shipping_sat: Sats
    coupon: str | None
    discount_sat: Sats

    @property
    def total_sat(self) -> Sats:
        return Sats(self.unit_price_sat * self.qty + self.shipping_sat - self.discount_sat)


@dataclass(frozen=True)
class Funding:
    """What the watch-only wallet sees at the escrow address (every UTXO, summed)."""

    paid_sat: Sats = NO_SATS
    outpoints: tuple[tuple[str, int, int], ...] = ()  # (txid, vout, amount_sat)
    confirmations: int = 0  # of the least-confirmed UTXO
    first_seen_height: int | None = None  # the height of the oldest confirmed escrow UTXO (timeout base)
    heights: tuple[tuple[str, int, int], ...] = ()  # (txid, vout, confirmation height) of each confirmed UTXO


@dataclass(frozen=True)
class PayoutOutput:
    address: str
    amount_sat: Sats
    role: Party


@dataclass(frozen=True)
class Payout:
    """A spend of the escrow and the signatures it holds so far."""

    kind: PayoutKind
    outputs: tuple[PayoutOutput, ...]
    fee_sat: Sats
    dust_sat: Sats  # outputs under the dust limit, dropped to the fee (said in ``note``)
    psbt: str  # base64, with every signature gathered so far
    signed_by: tuple[Party, ...]
    created_at: int
    note: str = ""
    txid: str | None = None  # once broadcast (the order is finished once it has a confirmation)
    inputs: tuple[tuple[str, int], ...] = ()  # the escrow outpoints (txid, vout) it spends
    expected_txid: str | None = None  # its txid, known from the unsigned transaction (seen even if broadcast elsewhere)


@dataclass(frozen=True)
class HistoryEntry:
    at: int
    state: OrderState
    note: str = ""


@dataclass(frozen=True)
class Message:
    """A message on an order; ``sealed`` is the text encrypted to the store's key (NaCl sealed box, b64url)."""

    at: int
    sender: Party
    sealed: str


@dataclass(frozen=True)
class Dispute:
    opened_by: Party
    opened_at: int
    statements: tuple[tuple[Party, str], ...]  # plain statements (also sent to the moderator)
    buyer_sat: Sats | None = None  # the moderator's decision, once made
    vendor_sat: Sats | None = None
    moderator_sat: Sats | None = None
    sent_at: int | None = None  # when the moderator's node acknowledged the statements (None: retried by the watcher)
    vendor_address: str = ""  # where the vendor's share of a split goes (sent to the moderator with the dispute)


@dataclass(frozen=True)
class Order:
    """An order on the vendor's node (a Tor-Browser buyer has no node: this is the only copy)."""

    id: str  # short, for the admin and API
    store: str  # the store's onion
    token_hash: str  # sha256 hex of the buyer's secret URL token (the token itself is never stored)
    state: OrderState
    created_at: int
    updated_at: int
    item: OrderItem
    amount_sat: Sats  # what the buyer pays into the escrow
    refund_address: str
    ship_to_sealed: str  # shipping address / contact, sealed to the store's key
    escrow: Escrow
    moderator: ModeratorTerms
    pay_by: int  # unpaid after this: EXPIRED, stock released
    accept_by: int | None = None  # set when funded: not accepted by then -> refund through the moderator
    funding: Funding = Funding()
    pending: Payout | None = None  # the payout waiting for a signature
    payouts: tuple[Payout, ...] = ()  # broadcast payouts
    history: tuple[HistoryEntry, ...] = ()
    messages: tuple[Message, ...] = ()
    dispute: Dispute | None = None
    fulfillment_note: str = ""
    vendor_address: str = ""  # the vendor's payout address (its wallet's, taken at checkout with key V)
    stock_epoch: int = 0  # the stock epoch its reservation counts against (node/payments/order_store.py)
    extra: dict[str, str] = field(default_factory=dict)  # forward-compatible notes (e.g. buyer node onion)

    @property
    def missing_sat(self) -> Sats:
        return Sats(max(0, self.amount_sat - self.funding.paid_sat))
