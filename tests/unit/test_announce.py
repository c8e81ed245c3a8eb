"""Store announcements: build, body_of, and every rejection rule of verify (unit + hypothesis)."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.core import crypto, envelope
from node.core.crypto import StoreKey, canonical_json
from node.core.errors import SignatureError, ValidationError
from node.discovery import announce
from node.discovery.models import ANNOUNCE_TYPE, AnnounceBody
from node.market import catalog, listings, profile

NOW = 1_800_000_000
KEY = StoreKey(bytes(range(32)))
OTHER = StoreKey(bytes(range(1, 33)))
PROPS = settings(max_examples=60, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def body(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "name": "Wool & Co",
        "description": "Socks and shirts",
        "tags": ["handmade", "wool"],
        "ships_to": ["DE", "FR"],
        "listings": 12,
        "catalog_seq": NOW,
        "catalog_hash": "sha256:" + "ab" * 32,
    }
    base.update(changes)
    return base


def signed(b: object = None, *, key: StoreKey = KEY, type_: str = ANNOUNCE_TYPE, seq: int = NOW, issued: int = NOW,
           expires: int = NOW + 7 * 86400) -> dict[str, object]:  # fmt: skip
    env = envelope.seal(key, type_, body() if b is None else b, seq=seq, issued_at=issued, expires_at=expires)
    return json.loads(canonical_json(env))


# -- the good path -----------------------------------------------------------------
def test_build_then_verify_round_trips():
    ann = announce.build(KEY, AnnounceBody(**body()), seq=NOW + 5, now=NOW, ttl=7 * 86400)
    assert (ann.store, ann.seq, ann.issued_at, ann.expires_at) == (KEY.onion, NOW + 5, NOW, NOW + 7 * 86400)
    assert ann.raw == canonical_json(json.loads(ann.raw)) and len(ann.raw) <= announce.MAX_BYTES
    again = announce.verify(json.loads(ann.raw), now=NOW + 10)
    assert again == ann
    assert announce.verify(ann.raw, now=NOW) == ann  # bytes are accepted too
    assert announce.from_stored(ann.raw) == ann


def test_next_seq_is_max_of_previous_plus_one_and_now():
    assert announce.next_seq(None, NOW) == NOW
    assert announce.next_seq(NOW - 50, NOW) == NOW
    assert announce.next_seq(NOW + 3, NOW) == NOW + 4


def test_build_refuses_a_lifetime_beyond_the_bound():
    with pytest.raises(ValueError):
        announce.build(KEY, AnnounceBody(**body()), seq=1, now=NOW, ttl=announce.MAX_TTL + 1)


def test_body_of_a_real_snapshot():
    items = [
        {"title": f"item {i}", "description": "d", "kind": "physical", "price_sat": 1000 + i, "category": "Home",
         "tags": ["wool", f"t{i % 20}"] + (["common"] if i % 2 else []),
         "shipping": [{"name": "Post", "regions": ["DE", "FR"] if i % 2 else ["WORLDWIDE"], "price_sat": 5}]}
        for i in range(40)
    ]  # fmt: skip
    valid = listings.validate_new(items, max_images=8, now=NOW)
    prof = profile.validate({"name": "  Wool\n shop  ", "description": "x" * 500})
    snap = catalog.build(KEY, prof, valid, seq=NOW + 9, now=NOW, ttl=86400)
    b = announce.body_of(snap)
    assert b["name"] == "Wool shop"
    assert len(b["description"]) == 280 and b["description"].endswith("…")
    assert len(b["tags"]) == 16 and b["tags"] == sorted(b["tags"]) and {"wool", "common"} <= set(b["tags"])
    assert b["ships_to"] == ["DE", "FR", "WORLDWIDE"]
    assert (b["listings"], b["catalog_seq"]) == (40, NOW + 9)
    assert b["catalog_hash"] == "sha256:" + hashlib.sha256(snap.envelope_bytes).hexdigest()
    assert announce.check_body(b) == b
    assert announce.body_of(snap, description_limit=20)["description"].endswith("…")


# -- rejection rules ---------------------------------------------------------------
def test_bad_signature():
    env = signed()
    env["body"]["name"] = "Forged"
    with pytest.raises(SignatureError):
        announce.verify(env, now=NOW)
    env = signed()
    env["sig"] = crypto.b64url_encode(OTHER.sign(b"x"))
    with pytest.raises(SignatureError):
        announce.verify(env, now=NOW)


def test_signed_by_another_key_than_the_store():
    env = signed()
    env["store"] = OTHER.onion
    with pytest.raises(SignatureError):
        announce.verify(env, now=NOW)


def test_wrong_type():
    with pytest.raises(ValidationError, match=r"pasar\.announce"):
        announce.verify(signed(type_="pasar.catalog"), now=NOW)


def test_wrong_version():
    env = signed()
    env["v"] = 2
    with pytest.raises(ValidationError, match="version"):
        announce.verify(env, now=NOW)


def test_expired():
    with pytest.raises(SignatureError, match="expired"):
        announce.verify(signed(expires=NOW + 100), now=NOW + 100)


def test_issued_in_the_future_beyond_the_skew_window():
    future = signed(issued=NOW + envelope.MAX_SKEW + 1)
    with pytest.raises(SignatureError, match="future"):
        announce.verify(future, now=NOW)
    assert announce.verify(signed(issued=NOW + envelope.MAX_SKEW), now=NOW).issued_at == NOW + envelope.MAX_SKEW


def test_lifetime_beyond_the_bound():
    with pytest.raises(ValidationError, match="at most"):
        announce.verify(signed(expires=NOW + announce.MAX_TTL + 1), now=NOW)


def test_oversized():
    env = signed()
    env["sig"] = "A" * announce.MAX_BYTES
    with pytest.raises(ValidationError, match="larger than"):
        announce.verify(env, now=NOW)
    with pytest.raises(ValidationError, match="larger than"):
        announce.verify(b" " * (announce.MAX_BYTES + 1), now=NOW)


@pytest.mark.parametrize(
    ("b", "field"),
    [
        ({k: v for k, v in body().items() if k != "tags"}, "tags"),
        (body(extra="x"), "extra"),
        (body(name=""), "name"),
        (body(name="n" * 81), "name"),
        (body(name=5), "name"),
        (body(name="two\nlines"), "name"),
        (body(description="d" * 281), "description"),
        (body(tags="wool"), "tags"),
        (body(tags=["wool", "handmade"]), "tags"),  # unsorted
        (body(tags=["wool", "wool"]), "tags"),  # duplicate
        (body(tags=[f"t{i:02}" for i in range(17)]), "tags"),  # too many
        (body(tags=["Wool"]), "tags"),  # upper case
        (body(tags=["x" * 33]), "tags"),
        (body(tags=[""]), "tags"),
        (body(tags=[5]), "tags"),
        (body(ships_to=["FR", "DE"]), "ships_to"),
        (body(ships_to=["DE", "DE"]), "ships_to"),
        (body(ships_to=["usa"]), "ships_to"),
        (body(ships_to=sorted(f"{a}{b}" for a in "ABCDEFGHI" for b in "ABCDEFGH")[:65]), "ships_to"),
        (body(listings=-1), "listings"),
        (body(listings=True), "listings"),
        (body(listings="3"), "listings"),
        (body(catalog_seq=1.5), "catalog_seq"),
        (body(catalog_hash="sha256:xyz"), "catalog_hash"),
        (body(catalog_hash=None), "catalog_hash"),
    ],
)
def test_strict_body(b, field):
    with pytest.raises(ValidationError) as info:
        announce.verify(signed(b), now=NOW)
    assert field in info.value.fields


def test_body_not_an_object_and_envelope_shape():
    with pytest.raises(ValidationError):
        announce.verify(signed(["not", "an", "object"]), now=NOW)
    for junk in (None, 5, "x", [], {}, {"type": ANNOUNCE_TYPE}, {"type": ANNOUNCE_TYPE, "body": body()}):
        with pytest.raises(ValidationError):
            announce.verify(junk, now=NOW)
    with pytest.raises(ValidationError):
        announce.verify(b"{not json", now=NOW)


# -- properties --------------------------------------------------------------------
_tag = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 -", min_size=1, max_size=32).map(str.strip).filter(bool)
_region = st.sampled_from(["WORLDWIDE", "DE", "FR", "US", "JP", "BR", "NZ"])
_text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=280)
bodies = st.fixed_dictionaries(
    {
        "name": st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=80),
        "description": _text,
        "tags": st.lists(_tag, max_size=16, unique=True).map(sorted),
        "ships_to": st.lists(_region, unique=True).map(sorted),
        "listings": st.integers(0, 10**6),
        "catalog_seq": st.integers(0, 2**40),
        "catalog_hash": st.binary(min_size=1).map(lambda b: "sha256:" + hashlib.sha256(b).hexdigest()),
    }
)


@PROPS
@given(bodies, st.integers(0, 2**40), st.integers(3600, announce.MAX_TTL))
def test_any_valid_body_round_trips(b, seq, ttl):
    ann = announce.build(KEY, b, seq=seq, now=NOW, ttl=ttl)
    assert announce.verify(json.loads(ann.raw), now=NOW + ttl - 1) == ann


FIELDS = ["type", "v", "store", "seq", "issued_at", "expires_at", "sig", "body"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@PROPS
@given(st.sampled_from(FIELDS + [f"body.{k}" for k in body()]), json_values)
def test_any_change_to_a_signed_announcement_is_rejected(where, value):
    env = signed()
    original = copy.deepcopy(env)
    target, _, name = where.partition(".")
    holder = env["body"] if name else env
    holder[name or target] = value
    if env == original:
        return
    with pytest.raises((ValidationError, SignatureError)):
        announce.verify(env, now=NOW)


@PROPS
@given(json_values)
def test_arbitrary_json_raises_only_validation_errors(value):
    with pytest.raises((ValidationError, SignatureError)):
        announce.verify(value, now=NOW)
