"""Verify another store's signed catalog and turn it into typed listings for the directory.

The catalog comes from a stranger (the store itself or a peer's mirror): every
failure is a ``ValidationError`` or a ``SignatureError`` that says what was
wrong, never another exception.

Speed (the crawler indexes tens of thousands of listings a second): stores
serve their catalog as canonical JSON (docs/protocol.md), so the fast path
parses with the C parser (``json.loads`` without ``object_pairs_hook``) and
then checks that re-encoding the result canonically gives back exactly the
bytes received. Equal bytes prove there was no repeated key (a repeated key
is dropped by the parser, so the re-encoding would be shorter), no float, no
NaN, and no other spelling than the canonical one; the signed bytes are then
those same bytes without the ``"sig"`` member, so no second encoding is
needed. Anything else (a non-canonical but valid envelope) goes through the
strict ``envelope.loads`` + ``envelope.open_`` path, which gives the same
answer more slowly.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Mapping
from typing import Any

from ..core import addresses, crypto, envelope, reviews
from ..core.errors import SignatureError, ValidationError
from ..core.models import Sats
from ..market.catalog import CATALOG_TYPE
from .models import CatalogListing, VerifiedCatalog

MAX_LISTINGS = 100_000
MAX_REVIEWS = 1000  # reviews read from one catalog; more are skipped (and counted)
MAX_NAME = 200
MAX_DESCRIPTION = 20_000
MAX_TITLE = 200
MAX_CATEGORY = 100
MAX_TAGS = 32
MAX_TAG = 64
MAX_SHIPPING = 64
MAX_REGIONS = 300
MAX_SAT = 21_000_000 * 100_000_000
MAX_TIME = 2**40
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_IMAGE_ID = re.compile(r"[0-9a-f]{64}")
_REGIONS = frozenset({"WORLDWIDE", *(a + b for a in string.ascii_uppercase for b in string.ascii_uppercase)})
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_ONE_BRACKET = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKET = bytes(b for b in range(256) if b not in b'[]{}"')
_ENVELOPE_FIELDS = frozenset({"type", "v", "store", "seq", "issued_at", "expires_at", "body", "sig"})


def catalog_hash(raw: bytes) -> str:
    """``sha256:<hex>`` of a catalog's bytes exactly as served (what announcements carry)."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def verify_catalog(raw: bytes, *, store: str, now: int, expected_hash: str | None = None) -> VerifiedCatalog:
    """Verify ``raw`` as ``store``'s current catalog; raises ValidationError / SignatureError."""
    digest = catalog_hash(raw)
    if expected_hash is not None and digest != expected_hash:
        raise ValidationError({"catalog": "its hash differs from the announced one"}, "catalog hash mismatch")
    env = _open(raw, now)
    if env["store"] != store:
        raise SignatureError(f"the catalog is signed by {env['store']}, not by {store}")
    body = env["body"]
    name, description = _profile(body.get("profile"))
    kept, bad = _reviews(body.get("reviews"), store, now)
    return VerifiedCatalog(
        store=store,
        seq=env["seq"],
        issued_at=env["issued_at"],
        expires_at=env["expires_at"],
        name=name,
        description=description,
        listings=_listings(body.get("listings")),
        raw=raw,
        hash=digest,
        reviews=kept,
        bad_reviews=bad,
    )


def _reviews(items: object, store: str, now: int) -> tuple[tuple[reviews.Review, ...], int]:
    """The catalog's buyer reviews that verify (receipt included) and are about ``store`` (one per signer,
    highest seq; one per order, the first signer read wins), and how many entries were skipped: a bad review
    never fails the catalog."""
    if items is None:
        return (), 0
    if not isinstance(items, list):
        return (), 1
    kept: dict[str, reviews.Review] = {}
    orders: dict[str, str] = {}  # order -> its signer
    bad = max(0, len(items) - MAX_REVIEWS)
    for item in items[:MAX_REVIEWS]:
        try:
            review = reviews.verify(item, now=now)
        except (ValidationError, SignatureError):
            bad += 1
            continue
        held = kept.get(review.signer)
        taken = orders.get(review.order, review.signer) != review.signer
        if review.store != store or taken or (held is not None and held.seq >= review.seq):
            bad += 1
            continue
        bad += held is not None
        if held is not None:
            orders.pop(held.order, None)
        kept[review.signer] = review
        orders[review.order] = review.signer
    return tuple(kept.values()), bad


# -- envelope ------------------------------------------------------------------------
def _reject_float(text: str) -> Any:
    raise ValidationError({"catalog": f"{text} is a float: catalogs hold integers only"})


def _reject_constant(text: str) -> Any:
    raise ValidationError({"catalog": f"{text} is not JSON"})


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_float=_reject_float, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ValidationError({"catalog": "not valid JSON (UTF-8)"}, "catalog is not JSON") from None


def _open(raw: bytes, now: int) -> dict[str, Any]:
    """The verified envelope as a dict (its body a dict); fast path for canonical bytes."""
    obj = _parse(raw)
    unsigned = _canonical_unsigned(obj, raw)
    if unsigned is None:  # not canonical: the strict, slower path decides
        return dict(envelope.open_(envelope.loads(raw), now=now, expected_type=CATALOG_TYPE))
    env: dict[str, Any] = obj
    _check_fields(env)
    if _too_deep(raw):
        raise ValidationError({"body": f"nested deeper than {envelope.MAX_DEPTH} levels"})
    envelope.check_signed(env, unsigned, now=now, what="catalog")
    return env


def _canonical_unsigned(obj: Any, raw: bytes) -> bytes | None:
    """The signed bytes (``raw`` without its ``sig`` member) when ``raw`` is canonical JSON, else None."""
    if not isinstance(obj, dict) or obj.keys() != _ENVELOPE_FIELDS:
        return None
    sig = obj["sig"]
    if not isinstance(sig, str) or not _B64URL.fullmatch(sig) or crypto.canonical_json(obj) != raw:
        return None
    # Keys are sorted (body, expires_at, issued_at, seq, sig, store, type, v): the top-level member
    # is the last occurrence (store, type and v after it are plain values).
    member = b',"sig":"' + sig.encode("ascii") + b'"'
    at = raw.rfind(member)
    return raw[:at] + raw[at + len(member) :]


def _too_deep(raw: bytes) -> bool:
    """True when objects/arrays nest deeper than the envelope rules allow (brackets inside strings don't count).

    All in C over bytes: drop escaped backslashes and quotes, keep only quotes and brackets (one
    kind), drop what is between quotes, then peel the innermost pairs once per allowed level.
    """
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    kept = raw.translate(_ONE_BRACKET, _NOT_BRACKET)
    if b'"' in kept:  # quotes alternate open/close: drop adjacent pairs (empty strings), then the rest
        kept = kept.replace(b'""', b"")
        kept = b"".join(kept.split(b'"')[::2]) if b'"' in kept else kept
    for _ in range(envelope.MAX_DEPTH + 1):  # the envelope + body + (MAX_DEPTH - 1) levels of values
        if not kept:
            return False
        kept = kept.replace(b"[]", b"")
    return bool(kept)


def _check_fields(env: dict[str, Any]) -> None:
    """The envelope rules of ``envelope.open_`` for a dict with exactly the envelope's fields."""
    problems: dict[str, str] = {}
    for name in ("v", "seq", "issued_at", "expires_at"):
        value = env[name]
        if type(value) is not int or value < 0:
            problems[name] = "must be a non-negative integer"
    for name in ("type", "store"):
        if not isinstance(env[name], str):
            problems[name] = "must be a string"
    if not isinstance(env["body"], dict):
        problems["body"] = "must be an object"
    if problems:
        raise ValidationError(problems, "malformed catalog envelope")
    if env["v"] != envelope.VERSION:
        raise ValidationError({"v": f"unsupported envelope version {env['v']}"})
    if env["type"] != CATALOG_TYPE:
        raise ValidationError({"type": f"expected {CATALOG_TYPE!r}, got {env['type']!r}"})
    if not addresses.is_address(env["store"]):
        raise ValidationError({"store": "must be a v3 onion address: 56 lower-case characters, no .onion"})


# -- body ------------------------------------------------------------------------------
def _text(value: object, field: str, limit: int, *, required: bool = False) -> str:
    if not isinstance(value, str) or len(value) > limit or (required and not value):
        need = f"1-{limit}" if required else f"at most {limit}"
        raise ValidationError({field: f"must be a string of {need} characters"}, "catalog body is malformed")
    return value


def _profile(profile: object) -> tuple[str, str]:
    if not isinstance(profile, dict):
        raise ValidationError({"profile": "must be an object"}, "catalog body is malformed")
    name = _text(profile.get("name"), "profile.name", MAX_NAME, required=True)
    return name, _text(profile.get("description", ""), "profile.description", MAX_DESCRIPTION)


def _listings(items: object) -> tuple[CatalogListing, ...]:
    if not isinstance(items, list) or len(items) > MAX_LISTINGS:
        raise ValidationError({"listings": f"must be a list of at most {MAX_LISTINGS} listings"})
    out: list[CatalogListing] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValidationError({f"listings[{i}]": "must be an object"}, "catalog body is malformed")
        try:
            listing = _listing(item)
        except _Bad as exc:
            raise ValidationError({f"listings[{i}].{exc.field}": exc.problem}, "catalog body is malformed") from None
        if listing.id in seen:
            raise ValidationError({f"listings[{i}].id": "repeats an earlier listing's id"})
        seen.add(listing.id)
        out.append(listing)
    return tuple(out)


class _Bad(Exception):
    """One listing field is wrong (turned into a ValidationError naming the listing)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(field)
        self.field, self.problem = field, problem


def _str(item: Mapping[str, object], field: str, limit: int, required: bool = False) -> str:
    value = item.get(field, "")
    if type(value) is not str or len(value) > limit or (required and not value):
        raise _Bad(field, f"must be a string of {'1-' if required else 'at most '}{limit} characters")
    return value


def _int(item: Mapping[str, object], field: str, low: int, high: int) -> int:
    value = item.get(field)
    if type(value) is not int or not low <= value <= high:
        raise _Bad(field, f"must be an integer from {low} to {high}")
    return value


def _tags(value: object) -> tuple[str, ...]:
    if type(value) is not list or len(value) > MAX_TAGS:
        raise _Bad("tags", f"must be a list of at most {MAX_TAGS} tags")
    for tag in value:
        if type(tag) is not str or not 0 < len(tag) <= MAX_TAG:
            raise _Bad("tags", f"each tag is a string of 1-{MAX_TAG} characters")
    return tuple(value)


def _regions(value: object) -> tuple[str, ...]:
    if type(value) is not list or len(value) > MAX_SHIPPING:
        raise _Bad("shipping", f"must be a list of at most {MAX_SHIPPING} options")
    regions: set[object] = set()
    for option in value:
        got = option.get("regions") if type(option) is dict else None
        if type(got) is not list or len(got) > MAX_REGIONS:
            raise _Bad("shipping", f"each option has regions: a list of at most {MAX_REGIONS}")
        try:
            regions.update(got)
        except TypeError:  # an object or a list among the regions
            raise _Bad("shipping", "regions are two-letter country codes or WORLDWIDE") from None
    if not regions <= _REGIONS:  # one set operation instead of a regex per region
        raise _Bad("shipping", "regions are two-letter country codes or WORLDWIDE")
    return tuple(sorted(str(r) for r in regions))


def _thumb(value: object) -> str | None:
    if type(value) is not list:
        raise _Bad("images", "must be a list")
    if not value:
        return None
    first = value[0]
    image = first.get("id") if type(first) is dict else None
    if type(image) is not str or not _IMAGE_ID.fullmatch(image):
        raise _Bad("images", "images[0].id must be 64 lower-case hex characters")
    return image


def _listing(item: Mapping[str, object]) -> CatalogListing:
    """One listing; the common all-valid case is checked in one expression, the slow path names the problem."""
    get = item.get
    ident, title, description, category = get("id"), get("title"), get("description", ""), get("category", "")
    price, created = get("price_sat"), get("created_at")
    if (
        type(ident) is str
        and _ID.fullmatch(ident)
        and type(title) is str
        and 0 < len(title) <= MAX_TITLE
        and type(description) is str
        and len(description) <= MAX_DESCRIPTION
        and type(category) is str
        and len(category) <= MAX_CATEGORY
        and type(price) is int
        and 1 <= price <= MAX_SAT
        and type(created) is int
        and 0 <= created <= MAX_TIME
    ):
        return CatalogListing(
            ident,
            title,
            description,
            category,
            _tags(get("tags", [])),
            Sats(price),
            _regions(get("shipping", [])),
            created,
            _thumb(get("images", [])),
        )
    return _listing_slowly(item)


def _listing_slowly(item: Mapping[str, object]) -> CatalogListing:
    ident = _str(item, "id", 64, required=True)
    if not _ID.fullmatch(ident):
        raise _Bad("id", "must be 1-64 letters, digits, dash or underscore")
    return CatalogListing(
        id=ident,
        title=_str(item, "title", MAX_TITLE, required=True),
        description=_str(item, "description", MAX_DESCRIPTION),
        category=_str(item, "category", MAX_CATEGORY),
        tags=_tags(item.get("tags", [])),
        price_sat=Sats(_int(item, "price_sat", 1, MAX_SAT)),
        ships_to=_regions(item.get("shipping", [])),
        created_at=_int(item, "created_at", 0, MAX_TIME),
        thumb=_thumb(item.get("images", [])),
    )
