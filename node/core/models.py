"""Typed domain records.

Stored and published records are JSON objects, so they are ``TypedDict``s:
mypy checks every key and value type while the data stays plain JSON on disk
and on the wire. Money is ``Sats`` (integer satoshis) everywhere outside the
Bitcoin RPC adapter; networks are ``Chain`` values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import NewType, NotRequired, TypedDict

Sats = NewType("Sats", int)
"""An amount in satoshis; never a float, never BTC."""

MAX_SATS = Sats(21_000_000 * 100_000_000)


class Chain(StrEnum):
    """A Bitcoin network, named as Bitcoin Core's ``getblockchaininfo`` ``chain`` field does."""

    MAIN = "main"
    TEST = "test"
    SIGNET = "signet"
    REGTEST = "regtest"


# -- stores ------------------------------------------------------------------
class Policies(TypedDict):
    shipping: str
    returns: str
    terms: str
    privacy: str


class ModeratorTermsRecord(TypedDict):
    """One accepted moderator as its signed offer named it (published in the store's catalog)."""

    onion: str  # the moderator's node onion, no ".onion"
    fee_percent: int  # 0..50, of the order amount
    fee_sat: Sats  # a fixed fee, on top of the percentage
    terms: str


class Profile(TypedDict):
    name: str
    description: str
    policies: Policies
    moderators: list[str]  # onion addresses
    vacation: bool
    display_unit: str  # "sat" | "BTC" | "mBTC"
    # Absent or None: the node's setting (``escrow_timeout_blocks`` / ``accept_window``); profiles stored
    # before these keys existed load unchanged.
    escrow_timeout_blocks: NotRequired[int | None]  # N of the vendor's timeout path, 144..65535 blocks
    accept_window: NotRequired[int | None]  # seconds the vendor has to accept a paid order, 1 h .. 30 days
    moderator_terms: NotRequired[list[ModeratorTermsRecord]]  # the moderators' fee and terms, from their offers


class Client(TypedDict):
    """One client-authorization key of an invite-only store."""

    id: str
    name: str
    public: str  # base32 x25519
    private: str  # base32 x25519; given to the invited buyer, never published
    created_at: int


class PublicClient(TypedDict):
    id: str
    name: str
    public: str
    created_at: int


class OnionOptions(TypedDict):
    invite_only: bool
    max_streams: int  # per rendezvous circuit; 0 = unlimited
    pow: bool
    clients: list[Client]
    announce: bool  # gossip a signed announcement of the store (never while invite-only)


class StoreRecord(TypedDict):
    onion: str  # 56 characters, no ".onion"
    seq: int  # the catalog's sequence number
    port: int | None  # the saved listener port; None = a free port at each start
    created_at: int | None
    profile: Profile
    onion_service: OnionOptions | None  # None = defaults


# -- listings ----------------------------------------------------------------
class RefPrice(TypedDict):
    currency: str  # ISO 4217
    minor: int  # in the currency's minor unit


class ShippingOption(TypedDict):
    name: str
    regions: list[str]  # two-letter codes or "WORLDWIDE"
    price_sat: Sats


class Variant(TypedDict):
    sku: str
    label: str
    price_sat: Sats | None  # None = the listing's price
    inventory: int | None  # None = unlimited


class Coupon(TypedDict):
    code: str
    percent: int | None
    amount_sat: Sats | None


class ListingFields(TypedDict):
    """A listing as the merchant entered it, validated."""

    title: str
    description: str
    description_format: str  # "text" | "markdown"
    kind: str  # "physical" | "digital" | "service"
    price_sat: Sats
    ref_price: RefPrice | None
    category: str
    tags: list[str]
    images: list[str]  # image ids (sha256 hex)
    shipping: list[ShippingOption]
    variants: list[Variant]
    inventory: int | None  # None = unlimited (or per variant)
    min_qty: int
    max_qty: int | None
    expires_at: int | None
    coupons: list[Coupon]
    active: bool


class Listing(ListingFields):
    """A stored listing."""

    id: str
    created_at: int
    updated_at: int
    import_key: NotRequired[str]  # where an imported listing came from; never published


# -- the market's views ----------------------------------------------------------
class PublicOnionOptions(TypedDict):
    """Onion-service options without the clients' private keys (API answers)."""

    invite_only: bool
    max_streams: int
    pow: bool
    clients: list[PublicClient]
    announce: bool


class ImageRef(TypedDict):
    id: str  # sha256 hex of the full-size JPEG
    path: str  # "/images/<id>.jpg"


class UploadedImage(ImageRef):
    width: int
    height: int


class PublicListing(TypedDict):
    """A listing as published in the signed catalog: no coupon codes, no import key, with its hash."""

    id: str
    created_at: int
    updated_at: int
    title: str
    description: str
    description_format: str
    kind: str
    price_sat: Sats
    ref_price: RefPrice | None
    category: str
    tags: list[str]
    images: list[ImageRef]
    shipping: list[ShippingOption]
    variants: list[Variant]
    inventory: int | None
    min_qty: int
    max_qty: int | None
    expires_at: int | None
    accepts_coupons: bool
    hash: str  # "sha256:..." over the view without this field


class CatalogBody(TypedDict):
    """The body of a store's signed catalog envelope."""

    profile: Profile
    listings: list[PublicListing]
    # The buyers' signed ``pasar.review`` envelopes, newest first; absent when the store holds none.
    reviews: NotRequired[list[Envelope]]


class StoredReview(TypedDict):
    """A buyer's review as a store keeps it (its tinydb ``reviews`` table; one per signer)."""

    signer: str  # the buyer's order-key address
    seq: int
    issued_at: int
    expires_at: int
    envelope: Envelope  # as verified (canonical JSON of it is the review's raw bytes)


# -- onion publishing (node/hosting) -------------------------------------------


@dataclass(frozen=True)
class OnionSpec:
    """One onion service as tor should publish it: its key, where port 80 goes, and its options."""

    key_blob: str  # ADD_ONION ED25519-V3 blob
    target: str  # "unix:/path" or "127.0.0.1:PORT"
    client_keys: tuple[str, ...] = ()  # base32 x25519 public keys (invite-only when non-empty)
    max_streams: int = 0  # per rendezvous circuit; 0 = unlimited
    pow: bool = False  # proof-of-work DoS defence


class PublishState(Enum):
    """Where a store's onion service is; the value is what the API and the admin page show."""

    LOCAL = "local"  # its listener runs; the node runs without tor
    STARTING = "starting"  # sent to tor, no descriptor upload seen yet
    PUBLISHED = "published"  # a descriptor reached an HSDir
    STOPPED = "stopped"  # no listener (the node is not serving it)
    ERROR = "error"


@dataclass(frozen=True)
class StoreStatus:
    """A store's publishing state and, for an error, why (one line the operator can act on)."""

    state: PublishState
    reason: str = ""

    @classmethod
    def error(cls, reason: str) -> StoreStatus:
        return cls(PublishState.ERROR, reason)

    def __str__(self) -> str:
        """Exactly the API's ``status`` field: ``"published"``, ``"error: <reason>"``..."""
        return f"error: {self.reason}" if self.state is PublishState.ERROR else self.state.value


# -- outbound HTTP (node/adapters/net.py) --------------------------------------
@dataclass(frozen=True)
class HttpReply:
    """A whole response from another node's onion."""

    status: int
    body: bytes
    headers: dict[str, str]


# -- signed envelopes (docs/protocol.md) ---------------------------------------
class Envelope(TypedDict):
    """A signed object as sent and stored: the store's signature over every other field."""

    type: str  # e.g. "pasar.catalog"
    v: int
    store: str  # the signer's onion address (56 characters)
    seq: int
    issued_at: int
    expires_at: int
    body: Mapping[str, object]  # JSON without floats
    sig: str  # unpadded base64url ed25519 signature
