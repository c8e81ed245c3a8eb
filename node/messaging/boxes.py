"""End-to-end encrypted fields: a NaCl box between two per-order ed25519 keys.

Both sides convert their ed25519 keys to curve25519 (libsodium's
``crypto_sign_ed25519_*_to_curve25519``), so the box needs no key of its own:
the buyer's order key and the store key, both already known from the
envelopes, open it. The text is ``b64url(nonce + ciphertext)``.
"""

from __future__ import annotations

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.signing

from ..core import addresses, crypto
from ..core.crypto import StoreKey
from ..core.errors import ValidationError

MAX_BOXED = 256 * 1024  # characters of one boxed field


def _box(own: StoreKey, peer_address: str) -> nacl.public.Box:
    try:
        peer_ed = addresses.pubkey_from_address(peer_address)
        peer_curve = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(peer_ed)
    except (ValueError, nacl.exceptions.CryptoError) as exc:
        raise ValidationError({"peer": f"not a key address ({exc})"}) from exc
    signing = nacl.signing.SigningKey(own.seed)
    own_curve = signing.to_curve25519_private_key()
    return nacl.public.Box(own_curve, nacl.public.PublicKey(peer_curve))


def box(own: StoreKey, peer_address: str, text: str) -> str:
    """``text`` sealed from ``own`` to the key at ``peer_address`` (b64url of nonce + ciphertext)."""
    return crypto.b64url_encode(bytes(_box(own, peer_address).encrypt(text.encode("utf-8"))))


def unbox(own: StoreKey, peer_address: str, boxed: str) -> str:
    """The text of a box from ``peer_address`` to ``own``; ValidationError when it does not open."""
    if not isinstance(boxed, str) or len(boxed) > MAX_BOXED:
        raise ValidationError({"box": "must be base64url text of at most 256 KiB"})
    try:
        data = crypto.b64url_decode(boxed)
        plain = _box(own, peer_address).decrypt(data)
        return plain.decode("utf-8")
    except (ValueError, nacl.exceptions.CryptoError) as exc:
        raise ValidationError({"box": "does not open with this order's keys (damaged or not for us)"}) from exc
