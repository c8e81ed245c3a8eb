"""Bitcoin address encodings: bech32 / bech32m (BIP173, BIP350) and base58check, and their scriptPubKeys.

Pure and dependency-free (the node must not trust a third-party library with
the address a buyer's money goes to). Networks: "main" (hrp ``bc``, base58
versions 0x00/0x05), "test" and "signet" (``tb``, 0x6f/0xc4), "regtest"
(``bcrt``, testnet's base58 versions).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from ..core.errors import ValidationError

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
BECH32 = 1
BECH32M = 0x2BC830A3
_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


@dataclass(frozen=True)
class Network:
    name: str
    hrp: str
    p2pkh: int  # base58 version byte
    p2sh: int


NETWORKS: dict[str, Network] = {
    "main": Network("main", "bc", 0x00, 0x05),
    "test": Network("test", "tb", 0x6F, 0xC4),
    "signet": Network("signet", "tb", 0x6F, 0xC4),
    "regtest": Network("regtest", "bcrt", 0x6F, 0xC4),
}


def network(name: str) -> Network:
    """The network named by the ``bitcoin_network`` setting (``testnet4`` counts as "test")."""
    found = NETWORKS.get("test" if name == "testnet4" else name)
    if found is None:
        raise ValidationError({"network": f"unknown Bitcoin network {name!r}: use main, test, signet or regtest"})
    return found


class AddressError(ValueError):
    """An address that does not decode; the message says why (callers turn it into a ValidationError)."""


# ---- bech32 / bech32m ------------------------------------------------------------------------


def _polymod(values: Sequence[int]) -> int:
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i, gen in enumerate(_GEN):
            if (top >> i) & 1:
                chk ^= gen
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def bech32_encode(hrp: str, data: Sequence[int], const: int) -> str:
    values = _hrp_expand(hrp) + list(data)
    mod = _polymod([*values, 0, 0, 0, 0, 0, 0]) ^ const
    checksum = [(mod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(CHARSET[d] for d in [*data, *checksum])


def bech32_decode(text: str) -> tuple[str, list[int], int]:
    """(hrp, data without checksum, BECH32 or BECH32M); AddressError on any defect."""
    if any(ord(c) < 33 or ord(c) > 126 for c in text):
        raise AddressError("it contains characters outside printable ASCII")
    if text.lower() != text and text.upper() != text:
        raise AddressError("it mixes upper and lower case")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1 or pos + 7 > len(text) or len(text) > 90:
        raise AddressError("it is not bech32 (wrong length or separator)")
    if any(c not in CHARSET for c in text[pos + 1 :]):
        raise AddressError("it contains a character bech32 does not use")
    hrp, data = text[:pos], [CHARSET.index(c) for c in text[pos + 1 :]]
    const = _polymod(_hrp_expand(hrp) + data)
    if const not in (BECH32, BECH32M):
        raise AddressError("its checksum is wrong (a typo?)")
    return hrp, data[:-6], const


def convertbits(data: Sequence[int], frombits: int, tobits: int, pad: bool) -> list[int]:
    acc, bits, out = 0, 0, []
    maxv = (1 << tobits) - 1
    for value in data:
        if value < 0 or value >> frombits:
            raise AddressError("it holds a value out of range")
        acc = (acc << frombits) | value
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            out.append((acc >> bits) & maxv)
    if pad and bits:
        out.append((acc << (tobits - bits)) & maxv)
    elif not pad and (bits >= frombits or (acc << (tobits - bits)) & maxv):
        raise AddressError("its padding is invalid")
    return out


def segwit_decode(hrp: str, text: str) -> tuple[int, bytes]:
    """(witness version, program) of a segwit address for ``hrp``; AddressError otherwise."""
    got_hrp, data, const = bech32_decode(text)
    if got_hrp != hrp:
        raise AddressError(f"it is for another network (prefix {got_hrp!r}, expected {hrp!r})")
    if not data or data[0] > 16:
        raise AddressError("it has no valid witness version")
    program = bytes(convertbits(data[1:], 5, 8, False))
    if not 2 <= len(program) <= 40 or (data[0] == 0 and len(program) not in (20, 32)):
        raise AddressError("its witness program has an invalid length")
    if const != (BECH32 if data[0] == 0 else BECH32M):
        raise AddressError("it uses the wrong checksum variant (bech32 vs bech32m)")
    return data[0], program


def segwit_encode(hrp: str, version: int, program: bytes) -> str:
    const = BECH32 if version == 0 else BECH32M
    text = bech32_encode(hrp, [version, *convertbits(program, 8, 5, True)], const)
    segwit_decode(hrp, text)  # the encoder's own output must decode (catches bad lengths)
    return text


# ---- base58check -----------------------------------------------------------------------------


def _sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def base58check_encode(payload: bytes) -> str:
    data = payload + _sha256d(payload)[:4]
    num = int.from_bytes(data, "big")
    out = ""
    while num:
        num, rem = divmod(num, 58)
        out = B58[rem] + out
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + out


def base58check_decode(text: str) -> bytes:
    """The payload (version byte first) of a base58check string; AddressError when it is not one."""
    if not text or any(c not in B58 for c in text):
        raise AddressError("it is not base58 (a character base58 does not use)")
    num = 0
    for c in text:
        num = num * 58 + B58.index(c)
    body = num.to_bytes((num.bit_length() + 7) // 8, "big")
    data = b"\0" * (len(text) - len(text.lstrip("1"))) + body
    if len(data) < 4 or _sha256d(data[:-4])[:4] != data[-4:]:
        raise AddressError("its checksum is wrong (a typo?)")
    return data[:-4]


# ---- scripts ---------------------------------------------------------------------------------


def segwit_script(version: int, program: bytes) -> bytes:
    return bytes([0x50 + version if version else 0, len(program)]) + program


def _legacy_script(payload: bytes, net: Network) -> bytes:
    if len(payload) != 21:
        raise AddressError("it is not a 20-byte hash (wrong length)")
    if payload[0] == net.p2pkh:
        return b"\x76\xa9\x14" + payload[1:] + b"\x88\xac"
    if payload[0] == net.p2sh:
        return b"\xa9\x14" + payload[1:] + b"\x87"
    raise AddressError("it is for another network (base58 version byte)")


def decode(text: str, net: Network) -> tuple[str, bytes]:
    """(canonical address, scriptPubKey) of an address of ``net``; AddressError when it is not one.

    Segwit v0 (P2WPKH, P2WSH) and v1 (P2TR, 32-byte program) only: later witness
    versions are not spendable yet and would lose the money.
    """
    if text[:1] in "13mn2":
        return text, _legacy_script(base58check_decode(text), net)
    version, program = segwit_decode(net.hrp, text)
    if version > 1 or (version == 1 and len(program) != 32):
        raise AddressError(f"witness version {version} with {len(program)} bytes is not a spendable output type")
    return text.lower(), segwit_script(version, program)


def network_of(address: str) -> Network:
    """The network an address is for, from its prefix (signet and test share one); AddressError if none."""
    lower = address.lower()
    for net in (NETWORKS["regtest"], NETWORKS["main"], NETWORKS["test"]):
        if lower.startswith(net.hrp + "1"):
            return net
    version = base58check_decode(address)[0]
    for net in (NETWORKS["main"], NETWORKS["test"]):
        if version in (net.p2pkh, net.p2sh):
            return net
    raise AddressError("it is for no known network (base58 version byte)")


def script_for(address: str) -> bytes:
    """The scriptPubKey of an address of any known network; AddressError when it does not decode."""
    return decode(address, network_of(address))[1]
