"""Onion address math and Tor's ADD_ONION key blob against known vectors.

Vectors: RFC 8032 test 1 (seed 9d61…, public key d75a…). The address and the
expanded key blob are the ones Tor itself reports/accepts for this key.
"""

import base64
import hashlib

import pytest

from node.core import addresses
from node.core.crypto import StoreKey
from node.core.errors import ValidationError

RFC_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUB = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC_ADDR = "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkenl5sid"
RFC_BLOB = "MHyDhk8oM8tCei7xwAoBPP3/J2jZgMCjpSDwBpBN6U+bTwr+KAt0aneGhOdUQlAgV7dHOgPwj5b1o46Sh+Afjw=="


def test_address_from_pubkey_matches_tor_vector():
    assert addresses.address_from_pubkey(RFC_PUB) == RFC_ADDR


def test_pubkey_from_address_round_trips():
    assert addresses.pubkey_from_address(RFC_ADDR) == RFC_PUB
    assert addresses.pubkey_from_address(RFC_ADDR.upper() + ".onion") == RFC_PUB


def test_store_key_from_seed_has_vector_address_and_blob():
    key = StoreKey(RFC_SEED)
    assert key.public_key == RFC_PUB
    assert key.onion == RFC_ADDR
    assert key.add_onion_blob() == RFC_BLOB


def test_blob_is_clamped_scalar_then_prf_secret():
    key = StoreKey.generate()
    raw = base64.b64decode(key.add_onion_blob())
    digest = hashlib.sha512(key.seed).digest()
    assert len(raw) == 64
    assert raw[32:] == digest[32:]
    assert raw[0] & 7 == 0 and raw[31] & 0x80 == 0 and raw[31] & 0x40


def test_random_keys_round_trip():
    for _ in range(20):
        key = StoreKey.generate()
        assert addresses.pubkey_from_address(key.onion) == key.public_key
        assert len(key.onion) == 56


@pytest.mark.parametrize(
    "bad, why",
    [
        (RFC_ADDR[:10] + ("a" if RFC_ADDR[10] != "a" else "b") + RFC_ADDR[11:], "checksum"),
        (RFC_ADDR[:-2], "56 characters"),
        ("1" * 56, "base32"),
        (addresses.base64.b32encode(RFC_PUB + b"\0\0\x02").decode().lower(), "v3"),
    ],
)
def test_bad_addresses_are_rejected_with_reason(bad, why):
    with pytest.raises(ValidationError) as exc:
        addresses.pubkey_from_address(bad)
    assert why in exc.value.message
    assert not addresses.is_address(bad)
