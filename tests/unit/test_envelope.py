"""Canonical JSON and the signed envelope: good, forged, stale, malformed."""

import copy
import json

import pytest

from node.core import envelope
from node.core.crypto import StoreKey, b64url_decode, b64url_encode, canonical_json
from node.core.errors import SignatureError, ValidationError

NOW = 1_800_000_000


def test_canonical_json_is_sorted_compact_utf8():
    assert canonical_json({"b": 1, "a": [1, {"d": "é", "c": None}]}) == '{"a":[1,{"c":null,"d":"é"}],"b":1}'.encode()


def test_b64url_round_trip_without_padding():
    for n in range(0, 70):
        data = bytes(range(n))
        text = b64url_encode(data)
        assert "=" not in text and "+" not in text and "/" not in text
        assert b64url_decode(text) == data
    with pytest.raises(ValueError):
        b64url_decode("AA==")


@pytest.fixture
def key():
    return StoreKey.generate()


@pytest.fixture
def env(key):
    return envelope.seal(key, "pasar.catalog", {"x": "ü"}, seq=7, issued_at=NOW, expires_at=NOW + 3600)


def test_sealed_envelope_has_exact_fields_and_verifies(key, env):
    assert set(env) == {"type", "v", "store", "seq", "issued_at", "expires_at", "body", "sig"}
    assert env["store"] == key.onion and env["v"] == 1
    assert envelope.open_(env, now=NOW + 10, expected_type="pasar.catalog") == env


def test_signature_covers_canonical_bytes_of_envelope_without_sig(key, env):
    unsigned = {k: v for k, v in env.items() if k != "sig"}
    import nacl.signing

    nacl.signing.VerifyKey(key.public_key).verify(canonical_json(unsigned), b64url_decode(env["sig"]))


def test_survives_json_round_trip(env):
    assert envelope.open_(json.loads(json.dumps(env)), now=NOW)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda e: e["body"].update(x="tampered"),
        lambda e: e.update(seq=8),
        lambda e: e.update(expires_at=e["expires_at"] + 1),
        lambda e: e.update(store=StoreKey.generate().onion),
        lambda e: e.update(sig=b64url_encode(b"\0" * 64)),
    ],
)
def test_forged_envelopes_are_rejected(env, mutate):
    forged = copy.deepcopy(env)
    mutate(forged)
    with pytest.raises(SignatureError):
        envelope.open_(forged, now=NOW)


def test_unsigned_and_malformed_envelopes_are_rejected(env):
    unsigned = {k: v for k, v in env.items() if k != "sig"}
    with pytest.raises(ValidationError) as exc:
        envelope.open_(unsigned, now=NOW)
    assert exc.value.fields == {"sig": "missing"}
    with pytest.raises(ValidationError):
        envelope.open_({**env, "extra": 1}, now=NOW)
    with pytest.raises(ValidationError):
        envelope.open_({**env, "seq": "7"}, now=NOW)
    with pytest.raises(ValidationError):
        envelope.open_({**env, "seq": True}, now=NOW)
    with pytest.raises(ValidationError):
        envelope.open_([], now=NOW)
    with pytest.raises(SignatureError):
        envelope.open_({**env, "sig": "not base64!"}, now=NOW)


def test_stale_and_future_envelopes_are_rejected(env):
    with pytest.raises(SignatureError, match="expired"):
        envelope.open_(env, now=NOW + 3600)
    with pytest.raises(SignatureError, match="future"):
        envelope.open_(env, now=NOW - envelope.MAX_SKEW - 1)


def test_wrong_type_is_rejected(env):
    with pytest.raises(ValidationError):
        envelope.open_(env, now=NOW, expected_type="pasar.announce")


def test_signature_encoding_must_be_canonical(env):
    for bad in (env["sig"][:10] + "!!!!" + env["sig"][10:], env["sig"] + "A", env["sig"][:-1]):
        with pytest.raises(SignatureError):
            envelope.open_({**env, "sig": bad}, now=NOW)
    # Same bytes, other spelling: the last character's unused bits set.
    last = env["sig"][-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = env["sig"][:-1] + alphabet[alphabet.index(last) ^ 1]
    with pytest.raises(SignatureError):
        envelope.open_({**env, "sig": twin}, now=NOW)


def test_store_must_be_the_exact_lower_case_address(env):
    for spelling in (env["store"].upper(), env["store"] + ".onion", " " + env["store"]):
        with pytest.raises(ValidationError):
            envelope.open_({**env, "store": spelling}, now=NOW)


def test_bodies_hold_no_floats(key):
    for body in ({"price": 1.5}, {"a": [{"b": float("nan")}]}):
        env = envelope.seal(key, "pasar.catalog", body, seq=1, issued_at=NOW, expires_at=NOW + 10)
        with pytest.raises(ValidationError, match="float"):
            envelope.open_(env, now=NOW)


def test_strict_loads_rejects_repeated_keys_and_nan(env):
    text = json.dumps(env)
    assert envelope.loads(text) == env
    with pytest.raises(ValidationError, match="repeats"):
        envelope.loads(text[:-1] + ', "seq": 99}')
    with pytest.raises(ValidationError):
        envelope.loads('{"a": NaN}')
    with pytest.raises(ValidationError):
        envelope.loads(b"\xff")
