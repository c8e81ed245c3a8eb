"""Tor v3 onion address math (rend-spec-v3, "Encoding onion addresses").

onion_address = base32(PUBKEY | CHECKSUM | VERSION), lower case, 56 chars
CHECKSUM = SHA3-256(".onion checksum" | PUBKEY | VERSION)[:2], VERSION = 0x03
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from .errors import ValidationError

VERSION = b"\x03"
ADDRESS_LEN = 56
_CHECKSUM_PREFIX = b".onion checksum"


def _checksum(pubkey: bytes) -> bytes:
    return hashlib.sha3_256(_CHECKSUM_PREFIX + pubkey + VERSION).digest()[:2]


def address_from_pubkey(pubkey: bytes) -> str:
    """The 56-character onion address (without ``.onion``) of an ed25519 key."""
    if len(pubkey) != 32:
        raise ValueError("an ed25519 public key is 32 bytes")
    return base64.b32encode(pubkey + _checksum(pubkey) + VERSION).decode().lower()


def normalize(address: str) -> str:
    """Lower-case, strip ``.onion`` and a trailing dot; does not validate."""
    addr = address.strip().lower().rstrip(".")
    return addr[: -len(".onion")] if addr.endswith(".onion") else addr


def pubkey_from_address(address: str) -> bytes:
    """The ed25519 public key encoded in an onion address; checks the checksum."""
    addr = normalize(address)
    if len(addr) != ADDRESS_LEN:
        raise ValidationError({"store": f"an onion address has {ADDRESS_LEN} characters"})
    try:
        raw = base64.b32decode(addr.upper())
    except (binascii.Error, ValueError):
        raise ValidationError({"store": "not base32: not an onion address"}) from None
    pubkey, checksum, version = raw[:32], raw[32:34], raw[34:]
    if version != VERSION:
        raise ValidationError({"store": "not a v3 onion address"})
    if checksum != _checksum(pubkey):
        raise ValidationError({"store": "onion address checksum does not match (typo?)"})
    return pubkey


def is_address(address: str) -> bool:
    try:
        pubkey_from_address(address)
    except ValidationError:
        return False
    return True
