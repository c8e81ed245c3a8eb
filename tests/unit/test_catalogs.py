"""verify_catalog: real signed catalogs, every rejection rule, and hostile input that raises only our errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.core import envelope
from node.core.crypto import StoreKey, canonical_json
from node.core.errors import SignatureError, ValidationError
from node.discovery import catalogs
from node.discovery.catalogs import catalog_hash, verify_catalog
from node.discovery.models import CatalogListing
from node.market.catalog import CATALOG_TYPE

from .test_crawler_kit import NOW, snapshot

KEY = StoreKey.generate()
OTHER = StoreKey.generate()
SNAP = snapshot(KEY, 5)


def resigned(key: StoreKey, body: object, *, type_: str = CATALOG_TYPE, now: int = NOW, ttl: int = 3600) -> bytes:
    """A correctly signed envelope around any body (hostile catalogs are signed by their own store)."""
    return canonical_json(envelope.seal(key, type_, body, seq=now, issued_at=now, expires_at=now + ttl))


def body() -> dict:
    return json.loads(SNAP.envelope_bytes)["body"]


def test_a_real_catalog_verifies_into_typed_listings():
    got = verify_catalog(SNAP.envelope_bytes, store=KEY.onion, now=NOW + 10)
    assert got.store == KEY.onion and got.seq == SNAP.seq and got.name == "Shop" and got.description == "Good things"
    assert got.raw is SNAP.envelope_bytes and got.hash == catalog_hash(SNAP.envelope_bytes)
    assert [x.id for x in got.listings] == [v["id"] for v in SNAP.listings]
    first, view = got.listings[0], SNAP.listings[0]
    assert isinstance(first, CatalogListing)
    assert (first.title, first.price_sat, first.category, first.created_at) == (
        view["title"],
        view["price_sat"],
        view["category"],
        view["created_at"],
    )
    assert first.tags == tuple(view["tags"]) and first.thumb == view["images"][0]["id"]
    assert set(first.ships_to) == {r for s in view["shipping"] for r in s["regions"]}


def test_expected_hash_must_match():
    good = catalog_hash(SNAP.envelope_bytes)
    assert verify_catalog(SNAP.envelope_bytes, store=KEY.onion, now=NOW, expected_hash=good).hash == good
    with pytest.raises(ValidationError, match="hash"):
        verify_catalog(SNAP.envelope_bytes, store=KEY.onion, now=NOW, expected_hash="sha256:" + "0" * 64)


def test_wrong_signer_and_tampering_are_signature_errors():
    with pytest.raises(SignatureError, match="not by"):
        verify_catalog(SNAP.envelope_bytes, store=OTHER.onion, now=NOW)
    tampered = SNAP.envelope_bytes.replace(b'"price_sat":1000', b'"price_sat":1001', 1)
    assert tampered != SNAP.envelope_bytes
    with pytest.raises(SignatureError):
        verify_catalog(tampered, store=KEY.onion, now=NOW)
    env = json.loads(SNAP.envelope_bytes)
    env["sig"] = env["sig"][:-2] + ("AA" if env["sig"][-2:] != "AA" else "AQ")
    with pytest.raises(SignatureError):
        verify_catalog(canonical_json(env), store=KEY.onion, now=NOW)


def test_freshness_and_type():
    with pytest.raises(SignatureError, match="expired"):
        verify_catalog(SNAP.envelope_bytes, store=KEY.onion, now=NOW + 86400)
    with pytest.raises(SignatureError, match="future"):
        verify_catalog(SNAP.envelope_bytes, store=KEY.onion, now=NOW - 1000)
    with pytest.raises(ValidationError, match=r"pasar\.catalog"):
        verify_catalog(resigned(KEY, body(), type_="pasar.announce"), store=KEY.onion, now=NOW)


def test_non_canonical_but_valid_bytes_take_the_strict_path_with_the_same_answer():
    pretty = json.dumps(json.loads(SNAP.envelope_bytes), indent=2).encode()
    strict = verify_catalog(pretty, store=KEY.onion, now=NOW)
    fast = verify_catalog(SNAP.envelope_bytes, store=KEY.onion, now=NOW)
    assert strict.listings == fast.listings and strict.raw == pretty and strict.hash == catalog_hash(pretty)


def test_repeated_keys_floats_and_constants_are_refused():
    raw = SNAP.envelope_bytes
    repeated = raw.replace(b'"seq":', b'"seq":1,"seq":', 1)
    for bad in (repeated, raw.replace(b'"price_sat":1000', b'"price_sat":1000.0', 1), raw.replace(b"1000", b"NaN", 1)):
        with pytest.raises(ValidationError):
            verify_catalog(bad, store=KEY.onion, now=NOW)
    for junk in (b"", b"[]", b"null", b"\xff\xfe", b"{" * 100_000, b'{"type":1}'):
        with pytest.raises(ValidationError):
            verify_catalog(junk, store=KEY.onion, now=NOW)


def nested(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize("levels", [30, 31, 32, 40])
def test_depth_limit_matches_the_envelope_rule(levels):
    doc = body()
    doc["profile"]["extra"] = nested(levels)
    doc["profile"]["note"] = '[[[[{{{{ \\" ' * 20  # brackets and escaped quotes inside strings don't count
    raw = resigned(KEY, doc)
    strict_ok = envelope._json_problem(doc, 0) is None
    if strict_ok:
        assert verify_catalog(raw, store=KEY.onion, now=NOW).listings
    else:
        with pytest.raises(ValidationError, match="nested"):
            verify_catalog(raw, store=KEY.onion, now=NOW)
    assert strict_ok == (levels < 31)  # profile (1) + extra (2) + the lists


BAD_LISTINGS = [
    ("price_sat", 0),
    ("price_sat", True),
    ("price_sat", "5"),
    ("title", ""),
    ("title", "x" * 201),
    ("id", "../etc"),
    ("description", ["x"]),
    ("tags", "a,b"),
    ("tags", ["x" * 65]),
    ("images", [{"id": "nothex"}]),
    ("images", {"id": "a" * 64}),
    ("shipping", [{"regions": ["Germany"]}]),
    ("shipping", [{"regions": "DE"}]),
    ("shipping", ["DE"]),
    ("created_at", -1),
]


@pytest.mark.parametrize(("field", "value"), BAD_LISTINGS)
def test_bad_listing_fields_name_the_listing_and_field(field, value):
    doc = body()
    doc["listings"][1][field] = value
    with pytest.raises(ValidationError) as exc:
        verify_catalog(resigned(KEY, doc), store=KEY.onion, now=NOW)
    assert any(k.startswith("listings[1].") for k in exc.value.fields)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(listings={}),
        lambda d: d.update(listings=[1]),
        lambda d: d.pop("profile"),
        lambda d: d["profile"].update(name=""),
        lambda d: d["profile"].update(name=7),
        lambda d: d["profile"].update(description="x" * 20_001),
        lambda d: d["listings"].append(dict(d["listings"][0])),  # a repeated id
    ],
)
def test_bad_bodies_are_validation_errors(change):
    doc = body()
    change(doc)
    with pytest.raises(ValidationError):
        verify_catalog(resigned(KEY, doc), store=KEY.onion, now=NOW)


def test_listing_count_is_bounded(monkeypatch):
    monkeypatch.setattr(catalogs, "MAX_LISTINGS", 4)
    with pytest.raises(ValidationError, match="at most 4"):
        verify_catalog(SNAP.envelope_bytes, store=KEY.onion, now=NOW)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8) | st.floats(allow_nan=True),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(junk=JSON, where=st.sampled_from(["body", "listing", "profile", "root"]))
def test_hostile_signed_bodies_raise_only_our_errors(junk, where):
    doc = body()
    if where == "body":
        doc = {"profile": doc["profile"], "listings": junk}
    elif where == "listing":
        doc["listings"][0] = junk
    elif where == "profile":
        doc["profile"] = junk
    else:
        doc = junk if isinstance(junk, dict) else {"x": junk}
    try:
        verify_catalog(resigned(KEY, doc), store=KEY.onion, now=NOW)
    except (ValidationError, SignatureError):
        pass


@settings(max_examples=150, deadline=None)
@given(at=st.integers(0, len(SNAP.envelope_bytes) - 1), byte=st.integers(0, 255))
def test_any_flipped_byte_is_refused_cleanly(at, byte):
    raw = bytearray(SNAP.envelope_bytes)
    if raw[at] == byte:
        return
    raw[at] = byte
    with pytest.raises((ValidationError, SignatureError)):
        verify_catalog(bytes(raw), store=KEY.onion, now=NOW)
