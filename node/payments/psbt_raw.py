"""The few facts the checks read from a PSBT's own bytes (BIP174 version 0): each signature's sighash byte,
and the txid of its transaction (``unsigned_txid``).

``decodepsbt`` shows the PSBT's sighash *field*, but a wallet may sign with
SIGHASH_NONE without writing that field (Bitcoin Core before 29 did); the byte
at the end of each signature is the truth, in partial signatures and in a
finalized input's witness alike.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

MAGIC = b"psbt\xff"
SIGHASH_ALL = 0x01
IN_PARTIAL_SIG, IN_SIGHASH_TYPE, IN_FINAL_SCRIPTWITNESS = 0x02, 0x03, 0x08
MAX_PSBT = 4_000_000


class PsbtFormatError(ValueError):
    """Bytes that are not a version-0 PSBT."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise PsbtFormatError("it ends too early")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def varint(self) -> int:
        first = self.take(1)[0]
        if first < 0xFD:
            return first
        size = {0xFD: 2, 0xFE: 4, 0xFF: 8}[first]
        return int.from_bytes(self.take(size), "little")

    def blob(self) -> bytes:
        return self.take(self.varint())


def _map(reader: _Reader) -> list[tuple[bytes, bytes]]:
    pairs: list[tuple[bytes, bytes]] = []
    while True:
        key = reader.blob()
        if not key:
            return pairs
        pairs.append((key, reader.blob()))


def _tx_counts(tx: bytes) -> tuple[int, int]:
    """(inputs, outputs) of a non-witness serialized transaction."""
    reader = _Reader(tx)
    reader.take(4)
    n_in = reader.varint()
    for _ in range(n_in):
        reader.take(36)
        reader.blob()
        reader.take(4)
    n_out = reader.varint()
    for _ in range(n_out):
        reader.take(8)
        reader.blob()
    reader.take(4)
    if reader.pos != len(tx) or n_in == 0:
        raise PsbtFormatError("its unsigned transaction is malformed")
    return n_in, n_out


def _unsigned_tx(text: str) -> tuple[_Reader, bytes]:
    """The reader after the global map, and the PSBT's unsigned transaction (non-witness serialization)."""
    try:
        data = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PsbtFormatError("it is not base64") from exc
    if len(data) > MAX_PSBT or not data.startswith(MAGIC):
        raise PsbtFormatError("it does not start with the PSBT magic bytes")
    reader = _Reader(data)
    reader.take(len(MAGIC))
    tx = dict(_map(reader)).get(b"\x00")
    if tx is None:
        raise PsbtFormatError("it has no unsigned transaction (only PSBT version 0 is read)")
    return reader, tx


def unsigned_txid(text: str) -> str:
    """The txid the PSBT's transaction will have once signed: signatures of segwit inputs live in the witness,
    which the txid does not cover (double SHA-256 of the non-witness serialization, byte-reversed hex)."""
    _reader, tx = _unsigned_tx(text)
    _tx_counts(tx)
    return hashlib.sha256(hashlib.sha256(tx).digest()).digest()[::-1].hex()


def decode(text: str) -> tuple[list[list[tuple[bytes, bytes]]], int]:
    """(the key-value pairs of each input's map, the number of outputs) of a base64 PSBT."""
    reader, tx = _unsigned_tx(text)
    n_in, n_out = _tx_counts(tx)
    inputs = [_map(reader) for _ in range(n_in)]
    for _ in range(n_out):
        _map(reader)
    if reader.pos != len(reader.data):
        raise PsbtFormatError("it has bytes after its last output")
    return inputs, n_out


def _looks_like_signature(item: bytes) -> bool:
    return len(item) >= 9 and item[0] == 0x30 and item[1] == len(item) - 3


def _witness_items(value: bytes) -> list[bytes]:
    reader = _Reader(value)
    return [reader.blob() for _ in range(reader.varint())]


def signature_sighashes(text: str) -> list[set[int]]:
    """Per input, every sighash type found: the PSBT field, each partial signature's, each final witness signature's."""
    found: list[set[int]] = []
    for pairs in decode(text)[0]:
        flags: set[int] = set()
        for key, value in pairs:
            if key[0] == IN_PARTIAL_SIG and value:
                flags.add(value[-1])
            elif key[0] == IN_SIGHASH_TYPE and len(value) == 4:
                flags.add(int.from_bytes(value, "little"))
            elif key[0] == IN_FINAL_SCRIPTWITNESS:
                flags.update(item[-1] for item in _witness_items(value) if _looks_like_signature(item))
        found.append(flags)
    return found
