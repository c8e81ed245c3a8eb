"""The wire of order messages (docs/protocol.md "Order messages"): types, ids, body checks, acks, polls.

Every message is a ``core.envelope`` signed by the sender's key for the
order (the buyer's fresh per-order key, or the store key), so
``envelope.open_`` verifies it unchanged. The body always holds ``id``,
``order``, ``kind`` and ``to``; the kinds' own fields are the owning
feature's business.
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nacl.signing

from ..core import addresses, crypto, envelope
from ..core.crypto import StoreKey
from ..core.errors import ValidationError
from ..core.models import Envelope

MSG_TYPE = "pasar.msg"
ACK_TYPE = "pasar.ack"
POLL_TYPE = "pasar.poll"
EXCHANGE_PATH = "/api/v1/messages"
MSG_TTL = 365 * 86400  # a message is offered until it is acked or this old (never dropped before)
TTL_SLACK = 3600  # a received message may live at most MSG_TTL + this (the sender's clock may run ahead)
ACK_TTL = 30 * 86400
POLL_TTL = 600
MAX_BATCH = 50  # messages (and acks) in one exchange, each way
MAX_EXCHANGE_BYTES = 1024 * 1024  # a request or answer body
KINDS = frozenset({"order", "message", "psbt", "dispute", "review", "escrow", "refused", "state", "payout"})
BASE_FIELDS = ("id", "order", "kind", "to")
MAX_SEQ = 2**31  # a sender's per-order seq (a bigger one is refused: SQLite stores 64-bit integers)
SEQ_AHEAD = 256  # a received seq at most this far past the last applied one (waits meanwhile)
ORDER_ROWS = 2000  # received messages held per order, all senders
NEW_ORDERS_PER_HOUR = 120  # new orders from keys a store never saw, per store
_KIB = 1024
MAX_BYTES = {  # one signed message (canonical JSON) by kind; a text of 4,000 characters fits a box in 24 KiB
    "order": 32 * _KIB,
    "message": 24 * _KIB,
    "dispute": 24 * _KIB,
    "psbt": 256 * _KIB,
    "review": 32 * _KIB,
    "escrow": 64 * _KIB,
    "refused": 24 * _KIB,
    "state": 24 * _KIB,
    "payout": 272 * _KIB,
}
OTHER_BYTES = 16 * _KIB  # a kind not listed
RETRY_LATER = "retry later: "  # a refusal starting so is transient: the sender backs off and sends it again


def max_bytes(kind: str) -> int:
    """The largest signed message of ``kind`` a receiver stores."""
    return MAX_BYTES.get(kind, OTHER_BYTES)


def is_transient(reason: str) -> bool:
    """A refusal the sender retries (the receiver is busy, behind, or its clock disagrees) rather than a final one."""
    return reason.startswith(RETRY_LATER)


_MESSAGE_ID = re.compile(r"[0-9a-f]{32}")
_ORDER_ID = re.compile(r"[0-9a-f]{16,32}")
_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}")


def key_address(key: StoreKey) -> str:
    """The 56-character address of a key (the onion encoding of its public key; for an order key no onion runs)."""
    return key.onion


def new_order_id() -> str:
    """A random order id (32 lower-hex characters), chosen by the buyer's node."""
    return secrets.token_hex(16)


def new_message_id() -> str:
    """A random message id (32 lower-hex characters)."""
    return secrets.token_hex(16)


def is_message_id(value: object) -> bool:
    return isinstance(value, str) and _MESSAGE_ID.fullmatch(value) is not None


def is_order_id(value: object) -> bool:
    return isinstance(value, str) and _ORDER_ID.fullmatch(value) is not None


def is_address(value: object) -> bool:
    return isinstance(value, str) and len(value) == 56 and _is_address(value)


@functools.lru_cache(maxsize=4096)
def _is_address(value: str) -> bool:
    return addresses.is_address(value)


def message_body(message_id: str, order: str, kind: str, to: str, fields: Mapping[str, object]) -> dict[str, object]:
    """The body of a message; ValidationError for a bad id, order, kind or recipient, or a clash of fields."""
    problems: dict[str, str] = {}
    if not is_message_id(message_id):
        problems["id"] = "must be 32 lower-case hex characters"
    if not is_order_id(order):
        problems["order"] = "must be 16 to 32 lower-case hex characters"
    if not _KIND.fullmatch(kind):
        problems["kind"] = "must be a lower-case word"
    if not is_address(to):
        problems["to"] = "must be a 56-character key address"
    clash = sorted(set(fields) & set(BASE_FIELDS))
    if clash:
        problems["fields"] = f"may not set {', '.join(clash)}"
    if problems:
        raise ValidationError(problems, "cannot send this order message")
    return {**fields, "id": message_id, "order": order, "kind": kind, "to": to}


@dataclass(frozen=True)
class Header:
    """The routing part of a received message body, checked."""

    id: str
    order: str
    kind: str
    to: str


def header(body: Mapping[str, Any]) -> Header:
    """The checked ``id``/``order``/``kind``/``to`` of a message body; ValidationError names what is wrong."""
    problems: dict[str, str] = {}
    if not is_message_id(body.get("id")):
        problems["id"] = "must be 32 lower-case hex characters"
    if not is_order_id(body.get("order")):
        problems["order"] = "must be 16 to 32 lower-case hex characters"
    kind = body.get("kind")
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        problems["kind"] = "must be a lower-case word"
    if not is_address(body.get("to")):
        problems["to"] = "must be a 56-character key address"
    if problems:
        raise ValidationError(problems, "malformed order message")
    return Header(id=body["id"], order=body["order"], kind=body["kind"], to=body["to"])


@dataclass(frozen=True)
class _HeldKey(StoreKey):
    """A StoreKey that derives its signing key and address once (a batch of acks signs with one key)."""

    @functools.cached_property
    def _signing(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    @functools.cached_property
    def onion(self) -> str:
        return addresses.address_from_pubkey(self.public_key)


def held_key(key: StoreKey) -> StoreKey:
    """``key``, deriving its public key and address once instead of at every use (for batches)."""
    return key if isinstance(key, _HeldKey) else _HeldKey(key.seed)


# -- acks ------------------------------------------------------------------------
def seal_ack(key: StoreKey, *, message_id: str, order: str, sender: str, seq: int, now: int) -> Envelope:
    """The receiver's signed ack of one message (``to`` = the acked message's sender)."""
    body = {"id": message_id, "order": order, "to": sender}
    return envelope.seal(key, ACK_TYPE, body, seq=seq, issued_at=now, expires_at=now + ACK_TTL)


@dataclass(frozen=True)
class Ack:
    id: str
    order: str
    to: str  # the acked message's sender
    signer: str  # the receiver that acked


def open_ack(raw: object, *, now: int) -> Ack:
    """A verified ack (signature, freshness, shape); ValidationError/SignatureError."""
    env = envelope.open_(raw, now=now, expected_type=ACK_TYPE)
    body = env["body"]
    if not (is_message_id(body.get("id")) and is_order_id(body.get("order")) and is_address(body.get("to"))):
        raise ValidationError({"ack": "body must hold id, order and to"})
    return Ack(id=str(body["id"]), order=str(body["order"]), to=str(body["to"]), signer=env["store"])


# -- polls -----------------------------------------------------------------------
def seal_poll(key: StoreKey, *, order: str, store: str, now: int) -> Envelope:
    """The buyer's ask for the store's messages on ``order`` (signed by the order key, short-lived)."""
    return envelope.seal(key, POLL_TYPE, {"order": order, "to": store}, seq=1, issued_at=now, expires_at=now + POLL_TTL)


@dataclass(frozen=True)
class Poll:
    order: str
    to: str  # the store onion asked
    signer: str  # the buyer's order-key address


def open_poll(raw: object, *, now: int) -> Poll:
    """A verified poll; the caller checks ``signer`` is the order's buyer and ``to`` is its store."""
    env = envelope.open_(raw, now=now, expected_type=POLL_TYPE)
    body = env["body"]
    if not (is_order_id(body.get("order")) and is_address(body.get("to"))):
        raise ValidationError({"poll": "body must hold order and to"})
    if env["expires_at"] - env["issued_at"] > POLL_TTL:
        raise ValidationError({"poll": f"a poll lives at most {POLL_TTL} seconds"})
    return Poll(order=str(body["order"]), to=str(body["to"]), signer=env["store"])


def canonical(env: Mapping[str, object]) -> bytes:
    return crypto.canonical_json(env)


def check_json(body: Mapping[str, object]) -> None:
    """ValidationError unless ``body`` holds only objects, arrays, strings, integers, booleans and null."""
    stack: list[object] = [body]
    while stack:
        value = stack.pop()
        if isinstance(value, Mapping):
            if not all(isinstance(k, str) for k in value):
                raise ValidationError({"fields": "object keys must be strings"})
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
        elif not (value is None or isinstance(value, str | int | bool)):
            raise ValidationError({"fields": f"{type(value).__name__} values are not allowed (money is integer sats)"})
