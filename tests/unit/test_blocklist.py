"""The signed blocklist: seal/verify round trip, signer, freshness, bounds and entry rules."""

from __future__ import annotations

import json

import pytest

from node.core import envelope
from node.core.crypto import StoreKey, canonical_json
from node.core.errors import SignatureError, ValidationError
from node.discovery import blocklist
from node.discovery.models import BLOCKLIST_TYPE

NOW = 1_800_000_000
KEY = StoreKey.generate()
A, B = StoreKey.generate().onion, StoreKey.generate().onion


def signed(body: object, key: StoreKey = KEY, type_: str = BLOCKLIST_TYPE) -> bytes:
    return canonical_json(envelope.seal(key, type_, body, seq=7, issued_at=NOW, expires_at=NOW + 3600))


def test_round_trip_sorted_and_unique():
    raw = blocklist.seal(KEY, [B, A, B], ["weapons", "drugs", "hand made", "für"], seq=3, now=NOW, ttl=3600)
    assert raw == canonical_json(json.loads(raw))
    assert blocklist.verify(raw, signer=KEY.onion, now=NOW + 1) == (
        sorted([A, B]),
        ["drugs", "für", "hand made", "weapons"],
        3,
    )
    assert json.loads(raw)["type"] == BLOCKLIST_TYPE and json.loads(raw)["store"] == KEY.onion


def test_signer_freshness_and_tampering():
    raw = blocklist.seal(KEY, [A], [], seq=3, now=NOW, ttl=3600)
    with pytest.raises(SignatureError, match="not by"):
        blocklist.verify(raw, signer=B, now=NOW)
    with pytest.raises(SignatureError, match="expired"):
        blocklist.verify(raw, signer=KEY.onion, now=NOW + 3600)
    with pytest.raises(SignatureError):
        blocklist.verify(raw.replace(A.encode(), B.encode()), signer=KEY.onion, now=NOW)
    with pytest.raises(ValidationError):
        blocklist.verify(signed({"stores": [], "tags": []}, type_="pasar.catalog"), signer=KEY.onion, now=NOW)


@pytest.mark.parametrize(
    "body",
    [
        {"stores": []},
        {"stores": [], "tags": [], "extra": 1},
        {"stores": "x", "tags": []},
        {"stores": [A.upper()], "tags": []},
        {"stores": [A + ".onion"], "tags": []},
        {"stores": [A[:-1] + ("a" if A[-1] != "a" else "b")], "tags": []},  # checksum
        {"stores": [7], "tags": []},
        {"stores": [], "tags": ["Weapons"]},
        {"stores": [], "tags": ["x" * 33]},
        {"stores": [], "tags": [""]},
        {"stores": [], "tags": [" padded"]},
        {"stores": [], "tags": [["nested"]]},
        {"stores": [], "tags": ["tab\there"]},
    ],
)
def test_bad_bodies_are_refused(body):
    with pytest.raises(ValidationError):
        blocklist.verify(signed(body), signer=KEY.onion, now=NOW)


def test_bounds(monkeypatch):
    with pytest.raises(ValidationError, match="at most"):
        blocklist.seal(KEY, [], [f"t{i}" for i in range(blocklist.MAX_ENTRIES + 1)], seq=1, now=NOW, ttl=60)
    raw = blocklist.seal(KEY, [A, B], [], seq=1, now=NOW, ttl=60)
    monkeypatch.setattr(blocklist, "MAX_ENTRIES", 1)
    with pytest.raises(ValidationError, match="at most 1"):
        blocklist.verify(raw, signer=KEY.onion, now=NOW)
    with pytest.raises(ValidationError, match="too large"):
        blocklist.verify(b" " * (blocklist.MAX_BYTES + 1), signer=KEY.onion, now=NOW)
    for junk in (b"", b"{", b"[]", b'{"a":1,"a":2}'):
        with pytest.raises(ValidationError):
            blocklist.verify(junk, signer=KEY.onion, now=NOW)
