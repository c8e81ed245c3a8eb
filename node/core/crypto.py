"""Keys, canonical JSON, and signatures (pynacl ed25519)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing

from . import addresses
from .errors import SignatureError


def canonical_json(obj: Any) -> bytes:
    """The bytes every signature in Pasar covers (docs/protocol.md)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def content_hash(obj: Any) -> str:
    """``sha256:<hex>`` of an object's canonical JSON."""
    return "sha256:" + hashlib.sha256(canonical_json(obj)).hexdigest()


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url_decode(text: str) -> bytes:
    """Strict: only the alphabet, no padding, and the one canonical encoding."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("expected unpadded base64url text")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url_encode(data) != text:  # unused low bits set: another encoding of the same bytes
        raise ValueError("non-canonical base64url")
    return data


@dataclass(frozen=True)
class StoreKey:
    """A store's ed25519 identity. ``seed`` is the 32-byte private seed."""

    seed: bytes

    @classmethod
    def generate(cls) -> StoreKey:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def _signing(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    @property
    def public_key(self) -> bytes:
        return bytes(self._signing.verify_key)

    @property
    def onion(self) -> str:
        return addresses.address_from_pubkey(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self._signing.sign(message).signature

    def add_onion_blob(self) -> str:
        """Key blob for Tor's ``ADD_ONION ED25519-V3:<blob>``.

        Tor wants the expanded secret key: the clamped scalar (first half of
        SHA-512(seed)) followed by the PRF secret (second half), base64.
        """
        digest = bytearray(hashlib.sha512(self.seed).digest())
        digest[0] &= 248
        digest[31] &= 127
        digest[31] |= 64
        return base64.b64encode(bytes(digest)).decode("ascii")


def verify(store: str, message: bytes, signature: bytes) -> None:
    """Raise SignatureError unless ``signature`` by ``store``'s key covers ``message``."""
    pubkey = addresses.pubkey_from_address(store)
    try:
        nacl.signing.VerifyKey(pubkey).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        raise SignatureError("signature does not verify against the store address") from None


def hash_password(password: str) -> bytes:
    """Argon2id (libsodium) hash in modular crypt format."""
    import nacl.pwhash

    return nacl.pwhash.argon2id.str(
        password.encode("utf-8"),
        opslimit=nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
        memlimit=nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE,
    )


def check_password(password_hash: bytes, password: str) -> bool:
    import nacl.pwhash

    try:
        return bool(nacl.pwhash.verify(password_hash, password.encode("utf-8")))
    except nacl.exceptions.InvalidkeyError:
        return False


@dataclass(frozen=True)
class ClientAuthKey:
    """An x25519 key pair for Tor v3 client authorization (an invited buyer's key).

    ``public`` goes to tor (``ADD_ONION ... ClientAuthV3=<public>``); ``private``
    is what the buyer enters in Tor Browser. Both are unpadded upper-case base32.
    """

    public: str
    private: str

    @classmethod
    def generate(cls) -> ClientAuthKey:
        import nacl.public

        key = nacl.public.PrivateKey.generate()
        return cls(public=_b32(bytes(key.public_key)), private=_b32(bytes(key)))

    def auth_private_line(self, onion_name: str) -> str:
        """One line of a client tor's ``<name>.auth_private`` file (ClientOnionAuthDir)."""
        return f"{onion_name}:descriptor:x25519:{self.private}"


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=")
