"""core.reviews: build and verify buyer-signed reviews; every field checked, forgeries refused."""

import copy
import json

import pytest

from node.core import envelope, reviews
from node.core.crypto import StoreKey, canonical_json
from node.core.errors import SignatureError, ValidationError
from tests.unit.review_helpers import ADDRESS, BLOCK, HASH, NOW, ORDER, TXID, make, receipt

STORE_KEY = StoreKey(bytes(range(32)))  # fixed: parametrize ids must match in every xdist worker
STORE = STORE_KEY.onion


def test_build_then_verify_round_trips_every_field():
    key = StoreKey.generate()
    r = make(STORE_KEY, key=key, order=ORDER, rating=4, text="fast, as described", seq=2, vout=3)
    assert r.signer == key.onion and r.store == STORE and r.seq == 2
    assert (r.order, r.listing, r.listing_hash, r.block, r.address) == (
        "0123456789abcdef",
        "abc123",
        HASH,
        BLOCK,
        ADDRESS,
    )
    assert r.outpoint == f"{TXID}:3" and (r.txid, r.vout) == (TXID, 3)
    assert (r.rating, r.text) == (4, "fast, as described")
    assert r.issued_at == NOW and r.expires_at == NOW + reviews.REVIEW_TTL
    assert r.raw == canonical_json(json.loads(r.raw))
    again = reviews.verify(r.raw, now=NOW + 10)
    assert again == r
    assert reviews.verify(r.raw.decode(), now=NOW) == r
    assert reviews.verify(r.envelope(), now=NOW) == r


def _resigned(key, body_change=None, **env_change):
    r = make(STORE_KEY, key=key)
    env = r.envelope()
    body = dict(env["body"])
    if body_change:
        body_change(body)
    type_ = env_change.pop("type_", reviews.REVIEW_TYPE)
    fields = {"seq": env["seq"], "issued_at": env["issued_at"], "expires_at": env["expires_at"], **env_change}
    return envelope.seal(key, type_, body, **fields)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rating", 0),
        ("rating", 6),
        ("rating", True),
        ("rating", "5"),
        ("text", "x" * 2001),
        ("text", None),
        ("outpoint", TXID),
        ("outpoint", f"{TXID}:-1"),
        ("outpoint", f"{TXID}:01"),
        ("outpoint", f"{TXID}:{2**32}"),
        ("outpoint", f"{TXID.upper()}:0"),
        ("block", "ab" * 31),
        ("block", "AB" * 32),
        ("store", "notanonion"),
        ("store", STORE + ".onion"),
        ("order", "0123456789abcde"),
        ("order", "0" * 33),
        ("order", "0123456789ABCDEF"),
        ("listing", ""),
        ("listing", "a/b"),
        ("listing_hash", "ef" * 32),
        ("address", "bc1 space"),
    ],
)
def test_each_bad_field_is_named(field, value):
    key = StoreKey.generate()

    def change(body):
        body[field] = value

    with pytest.raises(ValidationError) as info:
        reviews.verify(_resigned(key, change), now=NOW)
    assert field in info.value.fields


def test_text_of_2000_characters_and_every_rating_are_accepted():
    for rating in range(1, 6):
        assert make(STORE_KEY, rating=rating, text="é" * 2000).rating == rating


def test_missing_outpoint_is_refused_with_a_reason():
    key = StoreKey.generate()
    with pytest.raises(ValidationError) as info:
        reviews.verify(_resigned(key, lambda b: b.pop("outpoint")), now=NOW)
    assert "outpoint" in info.value.fields and "escrow outpoint" in info.value.fields["outpoint"]


def test_unknown_body_field_is_refused():
    key = StoreKey.generate()
    with pytest.raises(ValidationError) as info:
        reviews.verify(_resigned(key, lambda b: b.update(extra=1)), now=NOW)
    assert info.value.fields == {"extra": "unknown field"}


def test_build_refuses_bad_input_before_signing():
    with pytest.raises(ValidationError):
        make(STORE_KEY, rating=9)
    with pytest.raises(ValidationError):
        make(STORE_KEY, seq=0)


def test_forged_signature_and_changed_body_are_refused():
    r = make(STORE_KEY)
    env = r.envelope()
    env["body"]["rating"] = 1
    with pytest.raises(SignatureError):
        reviews.verify(env, now=NOW)
    other = copy.deepcopy(r.envelope())
    other["store"] = StoreKey.generate().onion  # claims another signer
    with pytest.raises(SignatureError):
        reviews.verify(other, now=NOW)


def test_wrong_type_expired_future_and_too_long_lived_are_refused():
    key = StoreKey.generate()
    with pytest.raises(ValidationError):
        reviews.verify(_resigned(key, type_="pasar.announce"), now=NOW)
    r = make(STORE_KEY)
    with pytest.raises(SignatureError):
        reviews.verify(r.raw, now=r.expires_at)
    with pytest.raises(SignatureError):
        reviews.verify(r.raw, now=NOW - envelope.MAX_SKEW - 10)
    long_lived = _resigned(key, expires_at=NOW + reviews.REVIEW_TTL + reviews.REVIEW_TTL_SLACK + 1)
    with pytest.raises(ValidationError) as info:
        reviews.verify(long_lived, now=NOW)
    assert "expires_at" in info.value.fields
    assert reviews.verify(_resigned(key, expires_at=NOW + reviews.REVIEW_TTL + 60), now=NOW).seq == 1


def test_seq_zero_not_json_and_not_an_object_are_refused():
    key = StoreKey.generate()
    with pytest.raises(ValidationError):
        reviews.verify(_resigned(key, seq=0), now=NOW)
    for bad in (b"{", b"[]", 5, None, '{"a":1,"a":2}'):
        with pytest.raises(ValidationError):
            reviews.verify(bad, now=NOW)


def test_non_canonical_bytes_verify_and_raw_is_canonical():
    r = make(STORE_KEY)
    spaced = json.dumps(r.envelope(), indent=2).encode()
    assert reviews.verify(spaced, now=NOW).raw == r.raw


def test_outpoint_parts():
    assert reviews.outpoint_parts(f"{TXID}:4294967295") == (TXID, 2**32 - 1)
    for bad in ("x:1", f"{TXID}:", f"{TXID}:1:2", 5):
        with pytest.raises(ValidationError):
            reviews.outpoint_parts(bad)


# -- receipts: only the store can issue one, only to the key that placed the order -----------------


def test_receipt_round_trips_and_is_bound_to_the_review():
    key = StoreKey.generate()
    r = make(STORE_KEY, key=key, order=ORDER)
    assert (r.receipt.store, r.receipt.order, r.receipt.buyer) == (STORE, ORDER, key.onion)
    assert (r.receipt.address, r.receipt.listing_hash) == (ADDRESS, HASH)
    assert r.envelope()["body"]["receipt"] == r.receipt.envelope()
    sealed = receipt(STORE_KEY, key)
    assert sealed["type"] == reviews.RECEIPT_TYPE and sealed["store"] == STORE
    assert sealed["expires_at"] - sealed["issued_at"] == reviews.RECEIPT_TTL
    assert reviews.verify_receipt(sealed, store=STORE, now=NOW) == r.receipt
    assert reviews.verify_receipt(canonical_json(sealed), store=STORE, now=NOW + 5 * 365 * 86400) == r.receipt


@pytest.mark.parametrize(
    ("what", "kw"),
    [
        ("order", {"order": "fedcba9876543210"}),
        ("address", {"address": "bcrt1qother0000000000000000000000000000"}),
        ("listing_hash", {"listing_hash": "sha256:" + "00" * 32}),
    ],
)
def test_a_receipt_for_another_order_address_or_listing_is_refused(what, kw):
    key = StoreKey.generate()
    with pytest.raises(ValidationError) as info:
        make(STORE_KEY, key=key, order=ORDER, receipt_of=receipt(STORE_KEY, key, **kw))
    assert "receipt" in info.value.fields and what in info.value.fields["receipt"]


def test_a_receipt_given_to_another_buyer_key_cannot_be_reused():
    buyer, thief = StoreKey.generate(), StoreKey.generate()
    stolen = receipt(STORE_KEY, buyer)
    with pytest.raises(ValidationError) as info:
        make(STORE_KEY, key=thief, order=ORDER, receipt_of=stolen)
    assert "buyer" in info.value.fields["receipt"]


def test_a_receipt_not_signed_by_the_reviewed_store_is_refused():
    key, forger = StoreKey.generate(), StoreKey.generate()
    with pytest.raises(ValidationError) as info:
        make(STORE_KEY, key=key, order=ORDER, receipt_of=receipt(forger, key))
    assert "receipt" in info.value.fields
    honest = receipt(STORE_KEY, key)
    tampered = copy.deepcopy(honest)
    tampered["body"]["order"] = "fedcba9876543210"
    with pytest.raises(ValidationError):
        make(STORE_KEY, key=key, order="fedcba9876543210", receipt_of=tampered)
    with pytest.raises(SignatureError):
        reviews.verify_receipt(tampered, store=STORE, now=NOW)
    with pytest.raises(SignatureError):
        reviews.verify_receipt(honest, store=forger.onion, now=NOW)


def test_a_review_without_a_receipt_is_refused():
    key = StoreKey.generate()
    with pytest.raises(ValidationError) as info:
        reviews.verify(_resigned(key, lambda b: b.pop("receipt")), now=NOW)
    assert "store's receipt" in info.value.fields["receipt"]
    with pytest.raises(ValidationError):
        reviews.verify(_resigned(key, lambda b: b.update(receipt="x")), now=NOW)


def test_receipt_freshness_and_shape():
    key = StoreKey.generate()
    future = receipt(STORE_KEY, key, now=NOW + envelope.MAX_SKEW + 60)
    with pytest.raises(SignatureError):
        reviews.verify_receipt(future, store=STORE, now=NOW)
    with pytest.raises(ValidationError):
        make(STORE_KEY, key=key, order=ORDER, receipt_of=future)
    env = receipt(STORE_KEY, key)
    with pytest.raises(SignatureError):
        reviews.verify_receipt(env, store=STORE, now=int(env["expires_at"]))
    for bad in (
        {"order": ORDER, "buyer": key.onion, "address": ADDRESS},
        {"order": ORDER, "buyer": "x", "address": ADDRESS, "listing_hash": HASH},
        {"order": ORDER, "buyer": key.onion, "address": ADDRESS, "listing_hash": HASH, "extra": 1},
    ):
        sealed = envelope.seal(STORE_KEY, reviews.RECEIPT_TYPE, bad, seq=1, issued_at=NOW, expires_at=NOW + 60)
        with pytest.raises(ValidationError):
            reviews.verify_receipt(dict(sealed), store=STORE, now=NOW)
    with pytest.raises(ValidationError):
        reviews.seal_receipt(STORE_KEY, order="x", buyer=key.onion, address=ADDRESS, listing_hash=HASH, now=NOW)
    review_typed = envelope.seal(STORE_KEY, reviews.REVIEW_TYPE, {}, seq=1, issued_at=NOW, expires_at=NOW + 60)
    with pytest.raises(ValidationError):
        reviews.verify_receipt(dict(review_typed), store=STORE, now=NOW)
