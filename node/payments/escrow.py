"""The 2-of-3 escrow: keys, descriptor, witness script and address, computed here and checked against Core.

Descriptor ``wsh(or_d(multi(2,B,V,M),and_v(v:pk(V2),older(N))))``: any two of
buyer / vendor / moderator, or the vendor alone with a second key V2 once the
escrow output is N blocks deep (BIP68). Its miniscript compiles to::

    OP_2 <B> <V> <M> OP_3 OP_CHECKMULTISIG OP_IFDUP OP_NOTIF
        <V2> OP_CHECKSIGVERIFY <N> OP_CHECKSEQUENCEVERIFY
    OP_ENDIF

The node computes the address itself and refuses an escrow whose address from
Bitcoin Core differs (a wrong network, a bug, a tampered Core answer).
"""

from __future__ import annotations

import hashlib
import re

from ..core.errors import ValidationError, WalletError
from . import address_codec
from .address_codec import AddressError
from .models import Escrow, KeyRef

MAX_TIMEOUT = 0xFFFF  # BIP68 block-based relative lock: 16 bits
_P = 2**256 - 2**32 - 977  # secp256k1 field
_ORIGIN = re.compile(r"\[([0-9a-fA-F]{8})((?:/[0-9]{1,10}['hH]?)*)\]")
_KEY = r"(\[[0-9a-f]{8}(?:/[0-9]+h?)*\])?(0[23][0-9a-f]{64})"
_DESCRIPTOR = re.compile(
    rf"wsh\(or_d\(multi\(2,{_KEY},{_KEY},{_KEY}\),and_v\(v:pk\({_KEY}\),older\(([0-9]+)\)\)\)\)(?:#([a-z0-9]{{8}}))?"
)
_DESC_CHARSET = "0123456789()[],'/*abcdefgh@:$%{}IJKLMNOPQRSTUVWXYZ&+-.;<=>?!^_|~ijklmnopqrstuvwxyzABCDEFGH`#\"\\ "
_DESC_GEN = (0xF5DEE51989, 0xA9FDCA3312, 0x1BAB10E32D, 0x3706B1677A, 0x644D626FFD)
OP_CHECKMULTISIG, OP_IFDUP, OP_NOTIF, OP_ENDIF = 0xAE, 0x73, 0x64, 0x68
OP_CHECKSIGVERIFY, OP_CHECKSEQUENCEVERIFY = 0xAD, 0xB2

# ---- keys and addresses (what a buyer pastes) ------------------------------------------------


def _on_curve(pubkey: bytes) -> bool:
    x = int.from_bytes(pubkey[1:], "big")
    return x < _P and pow((x * x * x + 7) % _P, (_P - 1) // 2, _P) == 1


def _origin(text: str, field: str) -> str:
    match = _ORIGIN.fullmatch(text)
    if match is None:
        raise ValidationError({field: "the key origin must look like [d34db33f/84h/1h/0h/0/7] (8 hex, then /steps)"})
    steps = [s for s in match.group(2).split("/") if s]
    if any(int(s.rstrip("'hH")) >= 2**31 for s in steps):
        raise ValidationError({field: "a step of the key origin is too large (at most 2147483647)"})
    normal = [s.rstrip("'hH") + ("h" if s[-1] in "'hH" else "") for s in steps]
    return "[" + "/".join([match.group(1).lower(), *normal]) + "]"


def parse_key(text: str, *, field: str = "buyer_pubkey") -> KeyRef:
    """A compressed public key (66 hex, 02/03) with an optional ``[fingerprint/path]`` origin.

    Hardened marks ``'``/``H`` become ``h``; hex becomes lower case. ValidationError names ``field``.
    """
    text = text.strip()
    origin = ""
    if text.startswith("["):
        end = text.find("]")
        origin, text = _origin(text[: end + 1], field), text[end + 1 :].strip()
    if len(text) != 66 or not re.fullmatch(r"0[23][0-9a-fA-F]{64}", text):
        raise ValidationError(
            {
                field: "paste a compressed public key: 66 hex characters starting with 02 or 03 "
                "(getaddressinfo's pubkey; an address, xpub or x-only key does not fit)"
            }
        )
    if not _on_curve(bytes.fromhex(text)):
        raise ValidationError({field: "this is not a valid public key (not a point of secp256k1)"})
    return KeyRef(pubkey=text.lower(), origin=origin)


def parse_address(text: str, network: str, *, field: str = "refund_address") -> str:
    """The canonical form of an address of ``network`` (segwit v0/v1 or base58 P2PKH/P2SH, checksum verified)."""
    net = address_codec.network(network)
    try:
        return address_codec.decode(text.strip(), net)[0]
    except AddressError as exc:
        raise ValidationError({field: f"not a valid {net.name} Bitcoin address: {exc}"}) from exc


def script_pubkey(address: str) -> bytes:
    """The scriptPubKey an address pays to (any known network); ValidationError when it does not decode."""
    try:
        return address_codec.script_for(address)
    except AddressError as exc:
        raise ValidationError({"address": f"not a valid Bitcoin address: {exc}"}) from exc


# ---- script ----------------------------------------------------------------------------------


def script_number(n: int) -> bytes:
    """Minimal push of a script number: OP_0, OP_1..OP_16, else the little-endian signed magnitude."""
    if n == 0:
        return b"\x00"
    if 1 <= n <= 16:
        return bytes([0x50 + n])
    body = abs(n).to_bytes((abs(n).bit_length() + 7) // 8, "little")
    if body[-1] & 0x80:
        body += b"\x00"
    if n < 0:
        body = body[:-1] + bytes([body[-1] | 0x80])
    return bytes([len(body)]) + body


def _push_key(key: KeyRef) -> bytes:
    return b"\x21" + bytes.fromhex(key.pubkey)


def _check_keys(keys: tuple[KeyRef, ...], timeout_blocks: int) -> None:
    if len({k.pubkey for k in keys}) != len(keys):
        raise ValidationError({"buyer_pubkey": "each escrow key must be different: this key is already in the escrow"})
    if not 1 <= timeout_blocks <= MAX_TIMEOUT:
        raise ValidationError({"timeout_blocks": f"the timeout must be 1..{MAX_TIMEOUT} blocks (BIP68)"})


def witness_script(b: KeyRef, v: KeyRef, m: KeyRef, v2: KeyRef, timeout_blocks: int) -> bytes:
    """The exact miniscript compilation of the escrow (see the module docstring)."""
    _check_keys((b, v, m, v2), timeout_blocks)
    multi = bytes([0x52]) + _push_key(b) + _push_key(v) + _push_key(m) + bytes([0x53, OP_CHECKMULTISIG])
    timeout = _push_key(v2) + bytes([OP_CHECKSIGVERIFY]) + script_number(timeout_blocks)
    return multi + bytes([OP_IFDUP, OP_NOTIF]) + timeout + bytes([OP_CHECKSEQUENCEVERIFY, OP_ENDIF])


def escrow_script(escrow: Escrow) -> bytes:
    """The witness script of a stored escrow, recompiled from its keys."""
    return witness_script(escrow.buyer, escrow.vendor, escrow.moderator, escrow.vendor_timeout, escrow.timeout_blocks)


def escrow_address(script: bytes, network: str) -> str:
    """The P2WSH address of a witness script (hrp bc / tb / bcrt)."""
    net = address_codec.network(network)
    return address_codec.segwit_encode(net.hrp, 0, hashlib.sha256(script).digest())


# ---- descriptor ------------------------------------------------------------------------------


def descriptor(b: KeyRef, v: KeyRef, m: KeyRef, v2: KeyRef, timeout_blocks: int) -> str:
    """``wsh(or_d(multi(2,B,V,M),and_v(v:pk(V2),older(N))))`` with key origins, without checksum."""
    _check_keys((b, v, m, v2), timeout_blocks)
    keys = [k.descriptor_key() for k in (b, v, m)]
    return f"wsh(or_d(multi(2,{','.join(keys)}),and_v(v:pk({v2.descriptor_key()}),older({timeout_blocks}))))"


def _desc_polymod(symbols: list[int]) -> int:
    chk = 1
    for value in symbols:
        top = chk >> 35
        chk = (chk & 0x7FFFFFFFF) << 5 ^ value
        for i, gen in enumerate(_DESC_GEN):
            if (top >> i) & 1:
                chk ^= gen
    return chk


def descriptor_checksum(desc: str) -> str:
    """The 8-character BIP380 checksum of a descriptor (given without ``#``)."""
    symbols: list[int] = []
    groups: list[int] = []
    for c in desc:
        pos = _DESC_CHARSET.find(c)
        if pos < 0:
            raise ValidationError({"descriptor": f"character {c!r} cannot appear in a descriptor"})
        symbols.append(pos & 31)
        groups.append(pos >> 5)
        if len(groups) == 3:
            symbols.append(groups[0] * 9 + groups[1] * 3 + groups[2])
            groups = []
    if groups:
        symbols.append(groups[0] * 3 + groups[1] if len(groups) == 2 else groups[0])
    chk = _desc_polymod([*symbols, 0, 0, 0, 0, 0, 0, 0, 0]) ^ 1
    return "".join(address_codec.CHARSET[(chk >> (5 * (7 - i))) & 31] for i in range(8))


def parse_descriptor(text: str) -> tuple[KeyRef, KeyRef, KeyRef, KeyRef, int]:
    """(B, V, M, V2, N) of an escrow descriptor in our exact form; its checksum, if any, verified."""
    match = _DESCRIPTOR.fullmatch(text.strip())
    if match is None:
        raise ValidationError(
            {"descriptor": "not an escrow descriptor wsh(or_d(multi(2,B,V,M),and_v(v:pk(V2),older(N))))"}
        )
    groups = match.groups()
    body = text.strip().split("#")[0]
    if groups[9] is not None and groups[9] != descriptor_checksum(body):
        raise ValidationError({"descriptor": "the descriptor checksum is wrong"})
    keys = tuple(KeyRef(pubkey=groups[i + 1], origin=groups[i] or "") for i in range(0, 8, 2))
    b, v, m, v2 = keys
    n = int(groups[8])
    if descriptor(b, v, m, v2, n) != body:
        raise ValidationError({"descriptor": "the descriptor is not in its canonical form"})
    return b, v, m, v2, n


def build_escrow(
    buyer: KeyRef,
    vendor: KeyRef,
    moderator: KeyRef,
    vendor_timeout: KeyRef,
    timeout_blocks: int,
    checksum: str,
    network: str,
    core_address: str,
) -> Escrow:
    """The escrow record, once Core's checksum and derived address match what the node computes itself."""
    desc = descriptor(buyer, vendor, moderator, vendor_timeout, timeout_blocks)
    ours = descriptor_checksum(desc)
    address = escrow_address(witness_script(buyer, vendor, moderator, vendor_timeout, timeout_blocks), network)
    if checksum != ours:
        raise WalletError(
            f"Bitcoin Core gave checksum {checksum!r} for the escrow, Pasar computes {ours!r}: no order was placed"
        )
    if core_address.lower() != address:
        raise WalletError(
            f"Bitcoin Core derived {core_address} for the escrow but Pasar computes {address}: no order was placed; "
            f"check that bitcoin_network ({network}) is the chain Bitcoin Core runs"
        )
    return Escrow(
        buyer=buyer,
        vendor=vendor,
        moderator=moderator,
        vendor_timeout=vendor_timeout,
        timeout_blocks=timeout_blocks,
        descriptor=f"{desc}#{ours}",
        address=address,
    )
