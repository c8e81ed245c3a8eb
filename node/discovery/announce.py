"""Store announcements: the signed ``pasar.announce`` envelope that gossip carries (pure).

An announcement says "this store exists, here is what it sells, its catalog is
at seq N with hash H". It is signed by the store key, so anyone verifies it
from the store address alone. :func:`verify` checks everything a received
announcement must satisfy before anything is stored (docs/protocol.md,
"Store announcements"); it never stores anything.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..core import crypto, envelope
from ..core.errors import ValidationError
from ..market.catalog import Snapshot
from .models import ANNOUNCE_TYPE, AnnounceBody, Announcement

MAX_BYTES = 4096
"""Largest announcement: the whole envelope as canonical JSON."""
MAX_TTL = 30 * 86400
"""Longest lifetime (expires_at - issued_at) accepted: an announcement cannot camp in tables for months."""
MAX_NAME = 80
MAX_DESCRIPTION = 280
MAX_TAGS = 16
MAX_TAG = 32
MAX_REGIONS = 64
MAX_INT = 2**53
WORLDWIDE = "WORLDWIDE"
_FIELDS = frozenset(AnnounceBody.__annotations__)
_REGION = re.compile(r"[A-Z]{2}")
_HASH = re.compile(r"sha256:[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def build(key: crypto.StoreKey, body: AnnounceBody, *, seq: int, now: int, ttl: int) -> Announcement:
    """Sign ``body`` as ``key``'s store: issued now, expiring ``ttl`` seconds later."""
    if not 0 < ttl <= MAX_TTL:
        raise ValueError(f"an announcement lives 1..{MAX_TTL} seconds")
    env = envelope.seal(key, ANNOUNCE_TYPE, body, seq=seq, issued_at=now, expires_at=now + ttl)
    return verify(json.loads(crypto.canonical_json(env)), now=now)


def next_seq(previous: int | None, now: int) -> int:
    """An announcement's seq: ``max(previous + 1, now)`` (its own counter, not the catalog's)."""
    return now if previous is None else max(previous + 1, now)


def body_of(snapshot: Snapshot, *, description_limit: int = MAX_DESCRIPTION) -> AnnounceBody:
    """What a store announces about itself, from the snapshot its storefront serves."""
    limit = min(description_limit, MAX_DESCRIPTION)
    counts: Counter[str] = Counter()
    regions: set[str] = set()
    for listing in snapshot.listings:
        counts.update(t for t in set(listing["tags"]) if _tag_ok(t))
        for option in listing["shipping"]:
            regions.update(r for r in option["regions"] if r == WORLDWIDE or _REGION.fullmatch(r))
    common = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_TAGS]
    ships = sorted(regions)
    if len(ships) > MAX_REGIONS:
        ships = [WORLDWIDE] if WORLDWIDE in regions else ships[:MAX_REGIONS]
    return AnnounceBody(
        name=_clean(snapshot.profile["name"], MAX_NAME) or snapshot.onion[:16],
        description=_clean(snapshot.profile["description"], limit),
        tags=sorted(tag for tag, _ in common),
        ships_to=ships,
        listings=len(snapshot.listings),
        catalog_seq=snapshot.seq,
        catalog_hash="sha256:" + hashlib.sha256(snapshot.envelope_bytes).hexdigest(),
    )


def _clean(text: str, limit: int) -> str:
    """One line of text, at most ``limit`` characters."""
    flat = " ".join(_CONTROL.sub(" ", text).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _tag_ok(tag: object) -> bool:
    return (
        isinstance(tag, str)
        and 1 <= len(tag) <= MAX_TAG
        and tag == tag.lower()
        and tag == tag.strip()
        and not _CONTROL.search(tag)
    )


def verify(obj: object, *, now: int) -> Announcement:
    """A received announcement (parsed JSON, or its bytes) checked completely; raises ValidationError/SignatureError.

    Cheap checks first (size, body fields), then the signature and the
    freshness window (``node.core.envelope.open_``), then the lifetime bound.
    """
    if isinstance(obj, bytes | str):
        if len(obj) > MAX_BYTES:
            raise ValidationError({"announcement": f"larger than {MAX_BYTES} bytes"})
        obj = envelope.loads(obj)
    try:
        raw = crypto.canonical_json(obj)
    except (TypeError, ValueError) as exc:
        raise ValidationError({"announcement": "not JSON"}) from exc
    if len(raw) > MAX_BYTES:
        raise ValidationError({"announcement": f"larger than {MAX_BYTES} bytes"})
    body: AnnounceBody | None = None
    if isinstance(obj, dict) and obj.get("type") == ANNOUNCE_TYPE and "body" in obj:
        body = check_body(obj["body"])  # before the signature: junk costs no ed25519 work
    env = envelope.open_(obj, now=now, expected_type=ANNOUNCE_TYPE)
    if body is None:
        body = check_body(env["body"])
    if env["expires_at"] - env["issued_at"] > MAX_TTL:
        raise ValidationError({"expires_at": f"an announcement lives at most {MAX_TTL} seconds"})
    return Announcement(
        store=env["store"],
        seq=env["seq"],
        issued_at=env["issued_at"],
        expires_at=env["expires_at"],
        body=body,
        raw=raw,
    )


def from_stored(raw: bytes) -> Announcement:
    """An announcement this node verified before it stored it (no second signature check)."""
    env = json.loads(raw)
    return Announcement(
        store=env["store"],
        seq=env["seq"],
        issued_at=env["issued_at"],
        expires_at=env["expires_at"],
        body=check_body(env["body"]),
        raw=raw,
    )


def check_body(body: Any) -> AnnounceBody:
    """The strict body: exactly the AnnounceBody fields, each bounded; raises ValidationError."""
    if not isinstance(body, dict):
        raise ValidationError({"body": "must be an object"})
    problems = {k: "missing" for k in _FIELDS - body.keys()}
    problems.update({str(k): "unknown field" for k in body.keys() - _FIELDS})
    if problems:
        raise ValidationError(problems, "malformed announcement body")
    _text(body, "name", 1, MAX_NAME, problems)
    _text(body, "description", 0, MAX_DESCRIPTION, problems)
    _strings(body, "tags", MAX_TAGS, _tag_ok, problems)
    _strings(body, "ships_to", MAX_REGIONS, _region_ok, problems)
    for name in ("listings", "catalog_seq"):
        value = body[name]
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_INT:
            problems[name] = "must be a non-negative integer"
    if not isinstance(body["catalog_hash"], str) or not _HASH.fullmatch(body["catalog_hash"]):
        problems["catalog_hash"] = "must be sha256:<64 hex digits>"
    if problems:
        raise ValidationError(problems, "malformed announcement body")
    return AnnounceBody(
        name=body["name"],
        description=body["description"],
        tags=list(body["tags"]),
        ships_to=list(body["ships_to"]),
        listings=body["listings"],
        catalog_seq=body["catalog_seq"],
        catalog_hash=body["catalog_hash"],
    )


def _region_ok(region: object) -> bool:
    return isinstance(region, str) and (region == WORLDWIDE or bool(_REGION.fullmatch(region)))


def _text(body: dict[str, Any], name: str, low: int, high: int, problems: dict[str, str]) -> None:
    value = body[name]
    if not isinstance(value, str) or not low <= len(value) <= high or _CONTROL.search(value):
        problems[name] = f"must be {low}-{high} characters of one-line text"


def _strings(
    body: dict[str, Any], name: str, most: int, ok: Callable[[object], bool], problems: dict[str, str]
) -> None:
    value = body[name]
    if not isinstance(value, list) or len(value) > most:
        problems[name] = f"must be a list of at most {most}"
    elif not all(ok(v) for v in value):
        problems[name] = "has an item that is not allowed"
    elif value != sorted(set(value)):
        problems[name] = "must be sorted and unique"
