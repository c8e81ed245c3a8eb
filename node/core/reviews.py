"""Buyer-signed reviews (``pasar.review`` envelopes, docs/protocol.md "Reviews").

A review is signed with the buyer's per-order key, so it verifies from the
envelope alone: the envelope's ``store`` field is the signer (the order key's
address), the body's ``store`` is the reviewed store. It names the order, the
listing and its content hash, and the escrow funding outpoint with the block
that confirmed it, so anyone with Bitcoin Core can check that the order was
paid into the escrow address the review names. Pure: no I/O.

A review embeds the store's **receipt** (a ``pasar.receipt`` envelope signed by
the store key, sent to the buyer in the order's ``escrow`` message): it binds
the order id, the buyer's order-key address, the escrow address and the
listing hash. Only the store can issue one, and only to the key that placed the
order, so nobody can forge reviews that move a store's rating.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import addresses, crypto, envelope
from .errors import SignatureError, ValidationError

REVIEW_TYPE = "pasar.review"
REVIEW_TTL = 365 * 86400
# A review may live a little longer than REVIEW_TTL (clocks differ); not more.
REVIEW_TTL_SLACK = 86400
MAX_TEXT = 2000
MAX_VOUT = 2**32 - 1
_ORDER = re.compile(r"[0-9a-f]{16,32}")
_LISTING = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HASH = re.compile(r"sha256:[0-9a-f]{64}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_OUTPOINT = re.compile(r"([0-9a-f]{64}):(0|[1-9][0-9]{0,9})")
_ADDRESS = re.compile(r"[A-Za-z0-9]{14,90}")
_BODY = frozenset(
    {"store", "order", "listing", "listing_hash", "outpoint", "block", "address", "rating", "text", "receipt"}
)
RECEIPT_TYPE = "pasar.receipt"
# Reviews may come long after the order (and be re-signed later): a receipt lives 10 years.
RECEIPT_TTL = 10 * 365 * 86400
_RECEIPT_BODY = frozenset({"order", "buyer", "address", "listing_hash"})


@dataclass(frozen=True)
class Receipt:
    """A verified store-signed receipt: the store took ``order`` from ``buyer``, paid into ``address``."""

    store: str  # the store's onion (the receipt's signer)
    order: str
    buyer: str  # the buyer's order-key address
    address: str  # the escrow address
    listing_hash: str
    raw: bytes  # canonical JSON of the envelope

    def envelope(self) -> dict[str, object]:
        obj: dict[str, object] = json.loads(self.raw)
        return obj


@dataclass(frozen=True)
class Review:
    """A verified review; ``raw`` is the envelope's canonical JSON (what is stored and relayed)."""

    signer: str  # the buyer's order-key address (the envelope's ``store``)
    seq: int
    issued_at: int
    expires_at: int
    store: str  # the reviewed store's onion
    order: str
    listing: str
    listing_hash: str
    outpoint: str  # "txid:vout" of the escrow funding output
    block: str  # hash of the block that confirmed the funding
    address: str  # the escrow address
    rating: int  # 1..5
    text: str
    raw: bytes
    receipt: Receipt  # the store's receipt for the order (checked: same store, order, signer, address, hash)

    @property
    def txid(self) -> str:
        return outpoint_parts(self.outpoint)[0]

    @property
    def vout(self) -> int:
        return outpoint_parts(self.outpoint)[1]

    def envelope(self) -> dict[str, Any]:
        """The envelope as a JSON object (to embed in a catalog or a message)."""
        obj: dict[str, Any] = json.loads(self.raw)
        return obj


def outpoint_parts(outpoint: object) -> tuple[str, int]:
    """``(txid, vout)`` of a ``"txid:vout"`` text; ValidationError when it is not one."""
    match = _OUTPOINT.fullmatch(outpoint) if isinstance(outpoint, str) else None
    if match is None or int(match.group(2)) > MAX_VOUT:
        raise ValidationError({"outpoint": 'must be "txid:vout": 64 lower-case hex characters, a colon, a number'})
    return match.group(1), int(match.group(2))


def build(
    key: crypto.StoreKey,
    *,
    store: str,
    order: str,
    listing: str,
    listing_hash: str,
    outpoint: str,
    block: str,
    address: str,
    rating: int,
    text: str,
    receipt: Mapping[str, object],
    seq: int = 1,
    now: int,
) -> Review:
    """Sign a review with the buyer's order key; the same checks as ``verify`` run first.

    ``receipt`` is the store's ``pasar.receipt`` envelope (as a JSON object) from the order's escrow message.
    """
    body: dict[str, object] = {
        "store": store,
        "order": order,
        "listing": listing,
        "listing_hash": listing_hash,
        "outpoint": outpoint,
        "block": block,
        "address": address,
        "rating": rating,
        "text": text,
        "receipt": dict(receipt),
    }
    _check_body(body)
    if type(seq) is not int or seq < 1:
        raise ValidationError({"seq": "must be a whole number from 1"})
    env = envelope.seal(key, REVIEW_TYPE, body, seq=seq, issued_at=now, expires_at=now + REVIEW_TTL)
    return verify(env, now=now)


def verify(raw: object, *, now: int) -> Review:
    """A review from its envelope (bytes, text or a parsed object); ValidationError / SignatureError."""
    obj: Any = envelope.loads(raw) if isinstance(raw, bytes | str) else raw
    if isinstance(obj, Mapping) and not isinstance(obj, dict):
        obj = dict(obj)
    env = envelope.open_(obj, now=now, expected_type=REVIEW_TYPE)
    if env["seq"] < 1:
        raise ValidationError({"seq": "a review's seq starts at 1"})
    if env["expires_at"] - env["issued_at"] > REVIEW_TTL + REVIEW_TTL_SLACK:
        raise ValidationError({"expires_at": f"a review is valid for at most {REVIEW_TTL // 86400} days"})
    body = dict(env["body"])
    _check_body(body)
    receipt = _bound_receipt(body, signer=env["store"], now=now)
    return Review(
        signer=env["store"],
        seq=env["seq"],
        issued_at=env["issued_at"],
        expires_at=env["expires_at"],
        store=str(body["store"]),
        order=str(body["order"]),
        listing=str(body["listing"]),
        listing_hash=str(body["listing_hash"]),
        outpoint=str(body["outpoint"]),
        block=str(body["block"]),
        address=str(body["address"]),
        rating=int(str(body["rating"])),
        text=str(body["text"]),
        raw=crypto.canonical_json(dict(env)),
        receipt=receipt,
    )


def _bound_receipt(body: Mapping[str, object], *, signer: str, now: int) -> Receipt:
    """The review's receipt, verified and bound to the review (store, order, signer, address, listing hash)."""
    try:
        receipt = verify_receipt(body["receipt"], store=str(body["store"]), now=now)
    except (ValidationError, SignatureError) as exc:
        raise ValidationError(
            {"receipt": f"not the store's receipt for this order: {exc.message}"}, "review refused"
        ) from exc
    wanted = {
        "order": (receipt.order, body["order"]),
        "buyer": (receipt.buyer, signer),
        "address": (receipt.address, body["address"]),
        "listing_hash": (receipt.listing_hash, body["listing_hash"]),
    }
    wrong = [name for name, (got, want) in wanted.items() if got != want]
    if wrong:
        names = ", ".join(wrong)
        problem = f"the store's receipt names another {names}: only the order's buyer can review it"
        raise ValidationError({"receipt": problem}, "review refused")
    return receipt


def seal_receipt(
    key: crypto.StoreKey, *, order: str, buyer: str, address: str, listing_hash: str, now: int
) -> dict[str, object]:
    """The store's receipt for an order (a ``pasar.receipt`` envelope as a JSON object), valid 10 years."""
    body: dict[str, object] = {"order": order, "buyer": buyer, "address": address, "listing_hash": listing_hash}
    _check_receipt_body(body)
    env = envelope.seal(key, RECEIPT_TYPE, body, seq=1, issued_at=now, expires_at=now + RECEIPT_TTL)
    return dict(env)


def verify_receipt(raw: object, *, store: str, now: int | None = None) -> Receipt:
    """A receipt signed by ``store``; ValidationError / SignatureError.

    Checked: the signature, the exact fields, issued no later than ``now`` + MAX_SKEW and not expired at
    ``now`` (the wall clock when ``now`` is None).
    """
    obj: Any = envelope.loads(raw) if isinstance(raw, bytes | str) else raw
    if isinstance(obj, Mapping) and not isinstance(obj, dict):
        obj = dict(obj)
    at = int(time.time()) if now is None else now
    env = envelope.open_(obj, now=at, expected_type=RECEIPT_TYPE)
    if env["store"] != store:
        raise SignatureError("the receipt is not signed by the store")
    if env["seq"] < 1:
        raise ValidationError({"seq": "a receipt's seq starts at 1"})
    if env["expires_at"] - env["issued_at"] > RECEIPT_TTL + REVIEW_TTL_SLACK:
        raise ValidationError({"expires_at": f"a receipt is valid for at most {RECEIPT_TTL // 86400} days"})
    body = dict(env["body"])
    _check_receipt_body(body)
    return Receipt(
        store=store,
        order=str(body["order"]),
        buyer=str(body["buyer"]),
        address=str(body["address"]),
        listing_hash=str(body["listing_hash"]),
        raw=crypto.canonical_json(dict(env)),
    )


def _check_receipt_body(body: Mapping[str, object]) -> None:
    problems = {name: "missing" for name in _RECEIPT_BODY - body.keys()}
    problems.update({name: "unknown field" for name in body.keys() - _RECEIPT_BODY})
    if not problems:
        if not _matches(_ORDER, body["order"]):
            problems["order"] = "must be the order id: 16-32 lower-case hex characters"
        buyer = body["buyer"]
        if not isinstance(buyer, str) or not _is_store(buyer):
            problems["buyer"] = "must be the buyer's order-key address: 56 lower-case characters"
        if not _matches(_ADDRESS, body["address"]):
            problems["address"] = "must be the escrow's bitcoin address"
        if not _matches(_HASH, body["listing_hash"]):
            problems["listing_hash"] = 'must be "sha256:" and 64 lower-case hex characters'
    if problems:
        raise ValidationError(problems, "malformed receipt")


def _check_body(body: Mapping[str, object]) -> None:
    problems = {name: "missing" for name in _BODY - body.keys()}
    problems.update({name: "unknown field" for name in body.keys() - _BODY})
    if problems:
        if problems.get("outpoint") == "missing":
            problems["outpoint"] = "missing: a review names the escrow outpoint of a paid order"
        if problems.get("receipt") == "missing":
            problems["receipt"] = "missing: a review carries the store's receipt for the order"
        raise ValidationError(problems, "malformed review")
    problems.update(_field_problems(body))
    if problems:
        raise ValidationError(problems, "malformed review")


@functools.lru_cache(maxsize=1024)
def _is_store(text: str) -> bool:
    """A store's onion address, as written in envelopes (cached: a catalog's reviews all name one store)."""
    return addresses.is_address(text) and addresses.normalize(text) == text


def _matches(pattern: re.Pattern[str], value: object) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def _field_problems(body: Mapping[str, object]) -> dict[str, str]:
    problems: dict[str, str] = {}
    store = body["store"]
    if not isinstance(store, str) or not _is_store(store):
        problems["store"] = "must be the store's onion address: 56 lower-case characters, no .onion"
    if not _matches(_ORDER, body["order"]):
        problems["order"] = "must be the order id: 16-32 lower-case hex characters"
    if not _matches(_LISTING, body["listing"]):
        problems["listing"] = "must be a listing id: 1-64 letters, digits, dash or underscore"
    if not _matches(_HASH, body["listing_hash"]):
        problems["listing_hash"] = 'must be "sha256:" and 64 lower-case hex characters'
    try:
        outpoint_parts(body["outpoint"])
    except ValidationError as exc:
        problems.update(exc.fields)
    if not _matches(_HEX64, body["block"]):
        problems["block"] = "must be a block hash: 64 lower-case hex characters"
    if not _matches(_ADDRESS, body["address"]):
        problems["address"] = "must be the escrow's bitcoin address"
    rating = body["rating"]
    if type(rating) is not int or not 1 <= rating <= 5:
        problems["rating"] = "must be a whole number from 1 to 5"
    text = body["text"]
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        problems["text"] = f"must be text of at most {MAX_TEXT} characters"
    if not isinstance(body["receipt"], dict):
        problems["receipt"] = "must be the store's receipt envelope (an object)"
    return problems
