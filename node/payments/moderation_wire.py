"""The moderation messages on the wire (docs/protocol.md, "Moderation"): types, bodies, their typed forms.

Shared by the moderator's service (``moderation.py``) and the vendor's client
(``moderator_client.py``). Every body is checked field by field here before
anything acts on it; a problem is a ``ValidationError`` naming every bad field.
Envelopes live one hour (``TTL``); a receiver refuses a longer life so that
its replay memory covers every envelope still fresh.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..core import addresses, crypto, envelope
from ..core.crypto import StoreKey
from ..core.errors import SignatureError, ValidationError
from ..core.models import MAX_SATS, Envelope, Sats
from . import escrow
from .models import KeyRef, ModeratorOffer, ModeratorTerms, Party

OFFER_TYPE = "pasar.moderation"
KEY_REQUEST_TYPE = "pasar.moderation.key-request"
KEY_TYPE = "pasar.moderation.key"
CASE_TYPE = "pasar.moderation.case"
ANSWER_TYPE = "pasar.moderation.answer"

OFFER_PATH = "/.well-known/pasar/moderation"
KEY_PATH = "/.well-known/pasar/moderation/key"
CASE_PATH = "/.well-known/pasar/moderation/case"

TTL = 3600  # seconds an envelope of these types lives
OFFER_TTL = 86400  # a signed offer may be cached for a day
MAX_LIFETIME = 2 * 3600  # a receiver refuses an envelope living longer (its replay memory covers this)
MAX_BYTES = 256 * 1024  # a message or an answer
MAX_TERMS = 4000
MAX_STATEMENT = 4000
MAX_STATEMENTS = 20
CASE_KINDS = ("escrow", "refund", "dispute", "poll")
_HEX_ID = re.compile(r"[0-9a-f]{8,64}")
_ORIGIN = re.compile(r"(\[[0-9a-f]{8}(/[0-9]+h?)*\])?")


def terms_hash(terms: str) -> str:
    return "sha256:" + hashlib.sha256(terms.encode("utf-8")).hexdigest()


def sealed(key: StoreKey, type_: str, body: Mapping[str, object], *, now: int, seq: int, ttl: int = TTL) -> Envelope:
    return envelope.seal(key, type_, body, seq=seq, issued_at=now, expires_at=now + ttl)


_LAST_SEQ = 0  # the last seq any SeqSource of this process gave


class SeqSource:
    """``seq`` = clock in milliseconds, strictly increasing within this process (docs/protocol.md)."""

    def __init__(self, clock: Callable[[], int]) -> None:
        self._clock = clock
        self._last = 0

    def __call__(self) -> int:
        # The clock has whole seconds: a random millisecond keeps two processes apart within one second,
        # and every source of this process shares the last seq given (two clients made in one second,
        # after a restart of the service, never reuse one).
        global _LAST_SEQ
        _LAST_SEQ = self._last = max(self._last + 1, _LAST_SEQ + 1, self._clock() * 1000 + secrets.randbelow(1000))
        return self._last


def opened(raw: object, *, now: int, expected_type: str) -> Envelope:
    """Shape, type, signature, freshness (``envelope.open_``), then the lifetime bound."""
    env = envelope.open_(raw, now=now, expected_type=expected_type)
    if env["expires_at"] - env["issued_at"] > MAX_LIFETIME:
        raise SignatureError(f"a {expected_type} envelope may live at most {MAX_LIFETIME} seconds")
    return env


def digest(env: Envelope) -> str:
    return hashlib.sha256(crypto.canonical_json(env)).hexdigest()


# -- field checks -----------------------------------------------------------------------------------
class Fields:
    """Reads a body field by field, collecting every problem; ``done()`` raises them all at once."""

    def __init__(self, body: Mapping[str, object], what: str) -> None:
        self.body = body
        self.what = what
        self.problems: dict[str, str] = {}

    def text(self, name: str, *, limit: int = 200, pattern: re.Pattern[str] | None = None, empty: bool = False) -> str:
        value = self.body.get(name)
        if not isinstance(value, str):
            self.problems[name] = "must be a string"
        elif len(value) > limit:
            self.problems[name] = f"at most {limit} characters"
        elif not empty and not value:
            self.problems[name] = "must not be empty"
        elif pattern is not None and not pattern.fullmatch(value):
            self.problems[name] = "is not in the expected format"
        else:
            return value
        return ""

    def sats(self, name: str, *, positive: bool = False) -> Sats:
        value = self.body.get(name)
        low = 1 if positive else 0
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= MAX_SATS:
            return Sats(value)
        self.problems[name] = f"must be a whole number of satoshis from {low} to {MAX_SATS}"
        return Sats(0)

    def number(self, name: str, low: int, high: int) -> int:
        value = self.body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return value
        self.problems[name] = f"must be a whole number from {low} to {high}"
        return low

    def key(self, name: str) -> KeyRef:
        text = self.text(name, limit=200)
        if not text:
            return KeyRef("")
        try:
            return escrow.parse_key(text, field=name)
        except ValidationError as exc:
            self.problems.update(exc.fields)
            return KeyRef("")

    def onion(self, name: str) -> str:
        value = self.text(name, limit=56)
        if value and not addresses.is_address(value):
            self.problems[name] = "must be a v3 onion address (56 characters, no .onion)"
        return value

    def exact(self, allowed: set[str]) -> None:
        for extra in sorted(set(self.body) - allowed):
            self.problems[extra] = "unknown field"

    def done(self) -> None:
        if self.problems:
            raise ValidationError(self.problems, f"malformed {self.what}")


# -- the offer ------------------------------------------------------------------------------------
def offer_body(offer: ModeratorOffer) -> dict[str, object]:
    return {
        "enabled": offer.enabled,
        "fee_percent": offer.fee_percent,
        "fee_sat": offer.fee_sat,
        "terms": offer.terms,
        "terms_hash": terms_hash(offer.terms),
    }


def read_offer(env: Envelope) -> ModeratorOffer:
    f = Fields(env["body"], "moderation offer")
    enabled = f.body.get("enabled") is True
    if not isinstance(f.body.get("enabled"), bool):
        f.problems["enabled"] = "must be true or false"
    offer = ModeratorOffer(
        onion=env["store"],
        enabled=enabled,
        fee_percent=f.number("fee_percent", 0, 50),
        fee_sat=f.sats("fee_sat"),
        terms=f.text("terms", limit=MAX_TERMS, empty=True),
    )
    if f.body.get("terms_hash") != terms_hash(offer.terms):
        f.problems["terms_hash"] = "does not match the terms"
    f.exact({"enabled", "fee_percent", "fee_sat", "terms", "terms_hash"})
    f.done()
    return offer


# -- key request and answer -------------------------------------------------------------------------
@dataclass(frozen=True)
class KeyRequest:
    """What the vendor's node tells the moderator when it asks for a key for one order.

    The vendor draws its keys V and V2 first, so the moderator can build the escrow itself,
    check it with its own Bitcoin Core and watch it before the buyer sees the address.
    """

    amount_sat: Sats
    refund_address: str  # the buyer's
    buyer: KeyRef
    vendor: KeyRef
    vendor_timeout: KeyRef
    timeout_blocks: int
    network: str  # "main" | "test" | "signet" | "regtest"
    accept_window: int | None = None  # seconds the vendor has to accept once paid (optional: the refund rule)


MAX_ACCEPT_WINDOW = 90 * 86400


def key_request_body(moderator: str, order_id: str, req: KeyRequest) -> dict[str, object]:
    body: dict[str, object] = {
        "moderator": moderator,
        "order_id": order_id,
        "amount_sat": req.amount_sat,
        "refund_address": req.refund_address,
        "buyer": req.buyer.descriptor_key(),
        "vendor": req.vendor.descriptor_key(),
        "vendor_timeout": req.vendor_timeout.descriptor_key(),
        "timeout_blocks": req.timeout_blocks,
        "network": req.network,
    }
    if req.accept_window is not None:
        body["accept_window"] = req.accept_window
    return body


def read_key_request(body: Mapping[str, object]) -> tuple[str, str, KeyRequest]:
    """``(moderator onion, order id, request)`` of a key-request body."""
    f = Fields(body, "key request")
    moderator, order_id = f.onion("moderator"), f.text("order_id", limit=64, pattern=_HEX_ID)
    req = KeyRequest(
        amount_sat=f.sats("amount_sat", positive=True),
        refund_address=f.text("refund_address", limit=100),
        buyer=f.key("buyer"),
        vendor=f.key("vendor"),
        vendor_timeout=f.key("vendor_timeout"),
        timeout_blocks=f.number("timeout_blocks", 1, 65535),
        network=f.text("network", limit=10, pattern=re.compile(r"main|test|signet|regtest")),
        accept_window=None if body.get("accept_window") is None else f.number("accept_window", 0, MAX_ACCEPT_WINDOW),
    )
    f.exact(set(key_request_body("", "", req)) | {"accept_window"})
    f.done()
    return moderator, order_id, req


@dataclass(frozen=True)
class KeyAnswer:
    """The moderator's signed answer: its key for the order, its fee, and the escrow it computed."""

    terms: ModeratorTerms
    order_id: str
    store: str
    descriptor: str  # with checksum, as the moderator's Core computed it
    address: str


def key_answer_body(answer: KeyAnswer, reply_to: str) -> dict[str, object]:
    t = answer.terms
    return {
        "order_id": answer.order_id,
        "store": answer.store,
        "pubkey": t.pubkey.pubkey,
        "origin": t.pubkey.origin,
        "fee_percent": t.fee_percent,
        "fee_sat": t.fee_sat,
        "terms_hash": t.terms_hash,
        "descriptor": answer.descriptor,
        "address": answer.address,
        "reply_to": reply_to,
    }


def _answers(env: Envelope, reply_to: str) -> None:
    if env["body"].get("reply_to") != reply_to:
        raise SignatureError(f"{env['store']} sent an answer to another message (replayed or misrouted)")


def read_key_answer(env: Envelope, reply_to: str) -> KeyAnswer:
    _answers(env, reply_to)
    f = Fields(env["body"], "key answer")
    key = f.key("pubkey")
    origin = f.text("origin", limit=150, pattern=_ORIGIN, empty=True)
    terms = ModeratorTerms(
        onion=env["store"],
        pubkey=KeyRef(key.pubkey, origin),
        fee_percent=f.number("fee_percent", 0, 50),
        fee_sat=f.sats("fee_sat"),
        terms_hash=f.text("terms_hash", limit=80, pattern=re.compile(r"sha256:[0-9a-f]{64}")),
    )
    answer = KeyAnswer(
        terms=terms,
        order_id=f.text("order_id", limit=64),
        store=f.onion("store"),
        descriptor=f.text("descriptor", limit=1000),
        address=f.text("address", limit=100),
    )
    f.exact(set(key_answer_body(answer, reply_to)))
    f.done()
    return answer


# -- cases --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CaseAnswer:
    """The moderator's signed answer to a case message (``pasar.moderation.answer``)."""

    order_id: str
    kind: str  # the message kind answered: "escrow" | "refund" | "dispute" | "poll"
    state: str  # the case's state on the moderator's node (``CaseState`` values)
    psbt: str | None = None  # base64: the moderator-signed refund (kind "refund") or split (once decided)
    buyer_sat: Sats | None = None  # the decision, once made
    vendor_sat: Sats | None = None
    moderator_sat: Sats | None = None
    note: str = ""
    fee_rate: int | None = None  # sat/vB the split was planned with (``payouts.plan``), once decided
    moderator_address: str | None = None  # where the moderator's fee goes (None: no fee output)


def case_answer_body(answer: CaseAnswer, reply_to: str) -> dict[str, object]:
    return {
        "order_id": answer.order_id,
        "kind": answer.kind,
        "state": answer.state,
        "psbt": answer.psbt,
        "buyer_sat": answer.buyer_sat,
        "vendor_sat": answer.vendor_sat,
        "moderator_sat": answer.moderator_sat,
        "note": answer.note,
        "fee_rate": answer.fee_rate,
        "moderator_address": answer.moderator_address,
        "reply_to": reply_to,
    }


def _optional_sats(f: Fields, name: str) -> Sats | None:
    return None if f.body.get(name) is None else f.sats(name)


def read_case_answer(env: Envelope, reply_to: str) -> CaseAnswer:
    _answers(env, reply_to)
    f = Fields(env["body"], "case answer")
    psbt = None if f.body.get("psbt") is None else f.text("psbt", limit=MAX_BYTES)
    answer = CaseAnswer(
        order_id=f.text("order_id", limit=64),
        kind=f.text("kind", limit=10),
        state=f.text("state", limit=20),
        psbt=psbt,
        buyer_sat=_optional_sats(f, "buyer_sat"),
        vendor_sat=_optional_sats(f, "vendor_sat"),
        moderator_sat=_optional_sats(f, "moderator_sat"),
        note=f.text("note", limit=1000, empty=True),
        fee_rate=None if f.body.get("fee_rate") is None else f.number("fee_rate", 1, 1_000_000),
        moderator_address=None if f.body.get("moderator_address") is None else f.text("moderator_address", limit=100),
    )
    f.exact(set(case_answer_body(answer, reply_to)))
    f.done()
    return answer


def read_case_head(body: Mapping[str, object]) -> tuple[str, str, str]:
    """``(moderator, order_id, kind)`` of a case body (the rest is read by the kind's handler)."""
    f = Fields(body, "case message")
    moderator, order_id = f.onion("moderator"), f.text("order_id", limit=64, pattern=_HEX_ID)
    kind = f.text("kind", limit=10)
    if kind and kind not in CASE_KINDS:
        f.problems["kind"] = f"must be one of {', '.join(CASE_KINDS)}"
    f.done()
    return moderator, order_id, kind


def read_statements(raw: object, f: Fields) -> tuple[tuple[Party, str], ...]:
    """``[["buyer"|"vendor", text], ...]``: at most ``MAX_STATEMENTS``, each at most ``MAX_STATEMENT`` chars."""
    out: list[tuple[Party, str]] = []
    if not isinstance(raw, list) or len(raw) > MAX_STATEMENTS:
        f.problems["statements"] = f"must be a list of at most {MAX_STATEMENTS} [party, text] pairs"
        return ()
    for item in raw:
        ok = isinstance(item, list) and len(item) == 2 and item[0] in ("buyer", "vendor")
        if not ok or not isinstance(item[1], str) or not 0 < len(item[1]) <= MAX_STATEMENT:
            f.problems["statements"] = f'each must be ["buyer" or "vendor", text of 1-{MAX_STATEMENT} characters]'
            return ()
        out.append((Party(item[0]), item[1]))
    return tuple(out)


def as_object(raw: Any) -> Mapping[str, object]:
    if not isinstance(raw, dict):
        raise ValidationError({"body": "must be an object"})
    return raw
