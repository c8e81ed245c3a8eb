"""Typed domain records.

Stored and published records are JSON objects, so they are ``TypedDict``s:
mypy checks every key and value type while the data stays plain JSON on disk
and on the wire. Money is ``Sats`` (integer satoshis) everywhere outside the
Bitcoin RPC adapter; networks are ``Chain`` values.
"""

from __future__ import annotations

from enum import Enum
from typing import NewType, NotRequired, TypedDict

Sats = NewType("Sats", int)
"""An amount in satoshis; never a float, never BTC."""

MAX_SATS = Sats(21_000_000 * 100_000_000)


class Chain(str, Enum):
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


class Profile(TypedDict):
    name: str
    description: str
    policies: Policies
    moderators: list[str]  # onion addresses
    vacation: bool
    display_unit: str  # "sat" | "BTC" | "mBTC"


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
