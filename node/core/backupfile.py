"""The encrypted backup file: a passphrase-derived key and a stream of authenticated chunks (docs/backup.md).

Layout (all integers big-endian)::

    magic      8 bytes  b"PASARBAK"
    version    1 byte   1
    opslimit   4 bytes  argon2id operations limit
    memlimit   8 bytes  argon2id memory limit (bytes)
    salt      16 bytes  argon2id salt
    check     16 bytes  BLAKE2b-128 of the key (personal b"pasar-bak-check"): tells a wrong passphrase
                        apart from a damaged file
    ss header 24 bytes  crypto_secretstream_xchacha20poly1305 header
    chunks              each CHUNK bytes of plaintext + 17 bytes (ABYTES); the last one carries TAG_FINAL

key = crypto_pwhash argon2id(passphrase, salt, opslimit, memlimit), 32 bytes. The header is bound to the
stream as the first chunk's additional data, so an altered header fails like an altered chunk. A stream
without a TAG_FINAL chunk is truncated; bytes after it are refused too. The plaintext is a tar archive.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from dataclasses import dataclass
from typing import BinaryIO

import nacl.bindings as sodium
import nacl.exceptions
import nacl.pwhash.argon2id as argon2id

from .errors import BadRequest

MAGIC = b"PASARBAK"
VERSION = 1
CHUNK = 64 * 1024
_ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
_SS_HEADER = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
_FIXED = struct.Struct(">8sBIQ16s16s")  # magic, version, opslimit, memlimit, salt, check
HEADER_BYTES = _FIXED.size + _SS_HEADER
_TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
_TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE


@dataclass(frozen=True)
class KdfLimits:
    """argon2id costs; written into the file's header, so a restore uses what the backup used."""

    ops: int
    mem: int


# The default: libsodium's MODERATE (3 passes over 256 MiB, ~0.6 s on a small server).
MODERATE = KdfLimits(argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE)
INTERACTIVE = KdfLimits(argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE)
# Only for tests: no protection against guessing at all.
WEAKEST = KdfLimits(argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN)
# The only limits a file may name: those Pasar writes. The header is read before anything is authenticated,
# so any other pair (a crafted or bit-flipped header) is refused before argon2id runs: no 1 GiB key costs.
ACCEPTED = frozenset({MODERATE, INTERACTIVE, WEAKEST})


class WrongPassphrase(BadRequest):
    code = "wrong_passphrase"


class DamagedBackup(BadRequest):
    code = "damaged_backup"


def _derive(passphrase: str, salt: bytes, limits: KdfLimits) -> tuple[bytes, bytes]:
    """(key, check) for ``passphrase``."""
    if not passphrase:
        raise BadRequest("the backup passphrase is empty: choose one (keep it apart from the backup file)")
    key = argon2id.kdf(32, passphrase.encode(), salt, opslimit=limits.ops, memlimit=limits.mem)
    check = hashlib.blake2b(key, digest_size=16, person=b"pasar-bak-check").digest()
    return key, check


class Encryptor:
    """A write-only file object: what is written is encrypted into ``dst``; ``close()`` writes the final chunk."""

    def __init__(
        self, dst: BinaryIO, passphrase: str, limits: KdfLimits = MODERATE, *, salt: bytes | None = None
    ) -> None:
        salt = salt if salt is not None else sodium.randombytes(argon2id.SALTBYTES)
        key, check = _derive(passphrase, salt, limits)
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        ss_header = sodium.crypto_secretstream_xchacha20poly1305_init_push(self._state, key)
        self._header = _FIXED.pack(MAGIC, VERSION, limits.ops, limits.mem, salt, check) + ss_header
        self._dst = dst
        self._dst.write(self._header)
        self._buffer = bytearray()
        self._first = True
        self.closed = False

    def write(self, data: bytes) -> int:
        if self.closed:
            raise ValueError("write to a closed backup file")
        self._buffer += data
        while len(self._buffer) > CHUNK:  # keep at least one byte back: the final chunk is never empty-by-accident
            self._push(bytes(self._buffer[:CHUNK]), _TAG_MESSAGE)
            del self._buffer[:CHUNK]
        return len(data)

    def _push(self, plain: bytes, tag: int) -> None:
        ad = self._header if self._first else None
        self._first = False
        self._dst.write(sodium.crypto_secretstream_xchacha20poly1305_push(self._state, plain, ad, tag))

    def flush(self) -> None:
        self._dst.flush()

    # The rest of a file object's methods (tarfile's stream mode asks for them, never calls them).
    def read(self, size: int, /) -> bytes:
        raise io.UnsupportedOperation("a backup being written cannot be read")

    def tell(self) -> int:
        raise io.UnsupportedOperation("a backup stream has no position")

    def seek(self, pos: int, /) -> int:
        raise io.UnsupportedOperation("a backup stream cannot seek")

    def close(self) -> None:
        if not self.closed:
            self._push(bytes(self._buffer), _TAG_FINAL)
            self._buffer.clear()
            self.closed = True
            self._dst.flush()


def read_header(src: BinaryIO, passphrase: str) -> tuple[bytes, bytes, KdfLimits]:
    """(key, header bytes, limits) from the start of ``src``; WrongPassphrase / DamagedBackup otherwise."""
    header = src.read(HEADER_BYTES)
    if len(header) < HEADER_BYTES or not header.startswith(MAGIC):
        raise DamagedBackup("this is not a Pasar backup file (or its start is damaged): check the file name")
    _magic, version, ops, mem, salt, check = _FIXED.unpack(header[: _FIXED.size])
    if version != VERSION:
        raise DamagedBackup(
            f"this backup has format {version}, this Pasar reads format {VERSION}: restore it with a newer Pasar"
        )
    limits = KdfLimits(ops, mem)
    if limits not in ACCEPTED:
        raise DamagedBackup(
            f"the backup's header names key costs Pasar never writes ({ops}, {mem}): the file is damaged"
        )
    key, expected = _derive(passphrase, salt, limits)
    if expected != check:
        raise WrongPassphrase("wrong passphrase for this backup (or its header is damaged): try again")
    return key, header, limits


class Decryptor:
    """A read-only file object over ``src``'s plaintext; raises DamagedBackup on an altered or truncated stream."""

    def __init__(self, src: BinaryIO, passphrase: str) -> None:
        key, self._header, self.limits = read_header(src, passphrase)
        self._src = src
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        sodium.crypto_secretstream_xchacha20poly1305_init_pull(self._state, self._header[_FIXED.size :], key)
        self._buffer = bytearray()
        self._first = True
        self.finished = False

    def _pull(self) -> None:
        sealed = self._src.read(CHUNK + _ABYTES)
        if not sealed:
            raise DamagedBackup("the backup file is truncated (its end is missing): use a complete copy of the file")
        ad = self._header if self._first else None
        self._first = False
        try:
            plain, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(self._state, sealed, ad)
        except nacl.exceptions.CryptoError as exc:
            raise DamagedBackup("the backup file is damaged or was altered: use another copy of the file") from exc
        self._buffer += plain
        if tag == _TAG_FINAL:
            self.finished = True
            if self._src.read(1):
                raise DamagedBackup("the backup file has bytes after its end (it was altered): use another copy")

    def read(self, size: int = -1) -> bytes:
        while not self.finished and (size < 0 or len(self._buffer) < size):
            self._pull()
        n = len(self._buffer) if size < 0 else min(size, len(self._buffer))
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    def write(self, data: bytes, /) -> int:
        raise io.UnsupportedOperation("a backup being read cannot be written")

    def tell(self) -> int:
        raise io.UnsupportedOperation("a backup stream has no position")

    def seek(self, pos: int, /) -> int:
        raise io.UnsupportedOperation("a backup stream cannot seek")

    def close(self) -> None:
        """Nothing to release (the caller closes the source file)."""

    def drain(self) -> None:
        """Read to the end (checks the final tag and that nothing follows it)."""
        while not self.finished:
            self._pull()
            self._buffer.clear()


# -- what the archive and the data dir say about a backup ------------------------------------------
@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the data dir, "/"-separated
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``, the archive's first member: what the backup holds, and each file's digest."""

    pasar_version: str
    created_at: int
    node_onion: str
    store_onions: tuple[str, ...]
    files: tuple[FileEntry, ...]
    with_directory: bool
    format: int = VERSION

    def to_json(self) -> bytes:
        doc = {
            "format": self.format,
            "pasar_version": self.pasar_version,
            "created_at": self.created_at,
            "node_onion": self.node_onion,
            "store_onions": list(self.store_onions),
            "with_directory": self.with_directory,
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
        }
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        try:
            doc = json.loads(raw)
            manifest = cls(
                pasar_version=str(doc["pasar_version"]),
                created_at=int(doc["created_at"]),
                node_onion=str(doc["node_onion"]),
                store_onions=tuple(str(o) for o in doc["store_onions"]),
                files=tuple(FileEntry(str(f["path"]), int(f["size"]), str(f["sha256"])) for f in doc["files"]),
                with_directory=bool(doc["with_directory"]),
                format=int(doc["format"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DamagedBackup("the backup's manifest is unreadable: the file was not made by Pasar") from exc
        if manifest.format != VERSION:
            raise DamagedBackup(
                f"the backup's manifest has format {manifest.format}, this Pasar reads format {VERSION}: "
                "restore it with the Pasar version that made it (or a newer one)"
            )
        return manifest


@dataclass(frozen=True)
class BackupStatus:
    """The last backup the node (or ``pasar backup``) made: ``backup-status.json`` in the data dir."""

    at: int  # UTC seconds
    ok: bool
    detail: str  # the file written, or what went wrong and what to do

    def to_json(self) -> bytes:
        return json.dumps({"at": self.at, "ok": self.ok, "detail": self.detail}).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> BackupStatus | None:
        try:
            doc = json.loads(raw)
            return cls(at=int(doc["at"]), ok=bool(doc["ok"]), detail=str(doc["detail"]))
        except (ValueError, KeyError, TypeError):
            return None
