"""Shipping addresses and order messages encrypted at rest to the store's key.

A NaCl sealed box to the curve25519 form of the store's ed25519 onion key:
anyone (the checkout handler) can seal with the store's onion address alone;
only the holder of the store's seed opens it. The database alone reveals
nothing: the seed lives in the store's key file, not in ``orders.sqlite``.
"""

from __future__ import annotations

import nacl.exceptions
import nacl.public
import nacl.signing

from ..core import addresses
from ..core.crypto import StoreKey, b64url_decode, b64url_encode
from ..core.errors import StorageError


def seal_to_store(onion_pubkey: bytes, text: str) -> str:
    """``text`` sealed to the store whose ed25519 public key is ``onion_pubkey``; unpadded base64url."""
    public = nacl.signing.VerifyKey(onion_pubkey).to_curve25519_public_key()
    return b64url_encode(nacl.public.SealedBox(public).encrypt(text.encode("utf-8")))


def seal_to_onion(onion: str, text: str) -> str:
    return seal_to_store(addresses.pubkey_from_address(onion), text)


def open_for_store(key: StoreKey, sealed: str) -> str:
    """The text ``seal_to_store`` sealed to ``key``'s store; ``StorageError`` if it was sealed to another key."""
    private = nacl.signing.SigningKey(key.seed).to_curve25519_private_key()
    try:
        return nacl.public.SealedBox(private).decrypt(b64url_decode(sealed)).decode("utf-8")
    except (ValueError, nacl.exceptions.CryptoError) as exc:
        raise StorageError(
            f"store {key.onion}: a sealed order field does not open with this store's key; "
            "was the key file replaced? restore it from backup"
        ) from exc
