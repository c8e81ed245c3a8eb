"""A directory operator's signed blocklist (``pasar.blocklist``), published and subscribed to.

Body: ``{"stores": [onion...], "tags": [tag...]}``, each sorted and unique, at
most ``MAX_ENTRIES`` entries each, signed by the directory onion's key (the
envelope's ``store`` field is the directory onion). Subscribers fetch it from
``http://<directory>.onion/.well-known/pasar/blocklist.json``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from ..core import addresses, crypto, envelope
from ..core.errors import SignatureError, ValidationError
from .models import BLOCKLIST_TYPE

MAX_ENTRIES = 10_000
MAX_TAG = 32
MAX_BYTES = 2 * 1024 * 1024  # 10,000 onions (59 bytes each) + 10,000 tags (35 bytes each) fit well below


def _clean(values: Iterable[object], field: str, valid: str) -> list[str]:
    items = list(values)
    if len(items) > MAX_ENTRIES:
        raise ValidationError({field: f"at most {MAX_ENTRIES} entries"})
    out: set[str] = set()
    for value in items:
        if not isinstance(value, str) or not _valid(field, value):
            raise ValidationError({field: f"{value!r:.80} is not {valid}"})
        out.add(value)
    return sorted(out)


def _valid(field: str, value: str) -> bool:
    if field == "stores":
        return len(value) == addresses.ADDRESS_LEN and value == value.lower() and addresses.is_address(value)
    return (
        0 < len(value) <= MAX_TAG
        and value == value.lower() == value.strip()
        and not any(unicodedata.category(c)[0] == "C" for c in value)
    )


def stores_of(values: Iterable[object]) -> list[str]:
    """Valid onion addresses (56 lower-case characters, no ``.onion``), sorted and unique."""
    return _clean(values, "stores", "a v3 onion address (56 lower-case characters, no .onion)")


def tags_of(values: Iterable[object]) -> list[str]:
    """Valid tags (lower-case, 1-32 characters, no control characters or outer spaces), sorted and unique."""
    return _clean(values, "tags", f"a lower-case tag of 1-{MAX_TAG} characters")


def seal(key: crypto.StoreKey, stores: Iterable[str], tags: Iterable[str], *, seq: int, now: int, ttl: int) -> bytes:
    """The signed blocklist as served: canonical JSON of a ``pasar.blocklist`` envelope by ``key``."""
    body = {"stores": stores_of(stores), "tags": tags_of(tags)}
    env = envelope.seal(key, BLOCKLIST_TYPE, body, seq=seq, issued_at=now, expires_at=now + ttl)
    return crypto.canonical_json(env)


def verify(raw: bytes, *, signer: str, now: int) -> tuple[list[str], list[str], int]:
    """``(stores, tags, seq)`` of a blocklist signed by ``signer``; ValidationError / SignatureError otherwise."""
    if len(raw) > MAX_BYTES:
        raise ValidationError({"blocklist": f"over {MAX_BYTES} bytes"}, "blocklist too large")
    env = envelope.open_(envelope.loads(raw), now=now, expected_type=BLOCKLIST_TYPE)
    if env["store"] != signer:
        raise SignatureError(f"the blocklist is signed by {env['store']}, not by {signer}")
    body = env["body"]
    if set(body) != {"stores", "tags"}:
        raise ValidationError({"body": "must have exactly the fields stores and tags"}, "blocklist is malformed")
    stores, tags = body["stores"], body["tags"]
    if not isinstance(stores, list) or not isinstance(tags, list):
        raise ValidationError({"body": "stores and tags must be lists"}, "blocklist is malformed")
    return stores_of(stores), tags_of(tags), env["seq"]
