"""The encrypted backup file format (node/core/backupfile.py): round trip, wrong passphrase, damage, truncation."""

from __future__ import annotations

import io
import os
import re
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import nacl.pwhash.argon2id as argon2id
import pytest

from node.core.backupfile import (
    ACCEPTED,
    CHUNK,
    HEADER_BYTES,
    INTERACTIVE,
    MODERATE,
    WEAKEST,
    BackupStatus,
    DamagedBackup,
    Decryptor,
    Encryptor,
    FileEntry,
    Manifest,
    WrongPassphrase,
    read_header,
)
from node.core.errors import BadRequest


def _seal(plain: bytes, passphrase: str = "correct horse") -> bytes:
    out = io.BytesIO()
    enc = Encryptor(out, passphrase, WEAKEST)
    for i in range(0, len(plain), 1000):  # written in uneven pieces, as tarfile does
        enc.write(plain[i : i + 1000])
    enc.close()
    return out.getvalue()


def _open(sealed: bytes, passphrase: str = "correct horse") -> bytes:
    dec = Decryptor(io.BytesIO(sealed), passphrase)
    return dec.read()


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17])
def test_round_trip_of_any_size(size: int) -> None:
    plain = os.urandom(size)
    sealed = _seal(plain)
    assert _open(sealed) == plain
    assert size < 16 or plain[:64] not in sealed


def test_small_reads_give_the_same_bytes() -> None:
    plain = os.urandom(2 * CHUNK + 5)
    dec = Decryptor(io.BytesIO(_seal(plain)), "correct horse")
    got = b"".join(iter(lambda: dec.read(777), b""))
    assert got == plain and dec.finished


def test_the_header_names_the_limits_it_was_made_with() -> None:
    _key, _header, limits = read_header(io.BytesIO(_seal(b"x")), "correct horse")
    assert limits == WEAKEST
    assert MODERATE.ops >= 3 and MODERATE.mem >= 256 * 1024 * 1024  # the default is a real cost


def test_a_wrong_passphrase_says_so() -> None:
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        _open(_seal(b"secret"), "not it")


def test_an_empty_passphrase_is_refused() -> None:
    with pytest.raises(BadRequest, match="passphrase is empty"):
        Encryptor(io.BytesIO(), "", WEAKEST)


@pytest.mark.parametrize("cut", [1, 17, CHUNK // 2])
def test_a_truncated_file_is_refused(cut: int) -> None:
    sealed = _seal(os.urandom(2 * CHUNK))
    with pytest.raises(DamagedBackup, match=r"truncated|damaged"):
        _open(sealed[:-cut])


def test_a_file_cut_at_a_chunk_boundary_is_truncated() -> None:
    sealed = _seal(os.urandom(3 * CHUNK))
    whole_chunks = HEADER_BYTES + 2 * (CHUNK + 17)
    with pytest.raises(DamagedBackup, match="truncated"):
        _open(sealed[:whole_chunks])


def test_a_flipped_bit_anywhere_is_refused() -> None:
    sealed = bytearray(_seal(os.urandom(2 * CHUNK)))
    for at in (HEADER_BYTES - 5, HEADER_BYTES + 3, len(sealed) // 2, len(sealed) - 1):
        altered = bytearray(sealed)
        altered[at] ^= 0x01
        with pytest.raises(DamagedBackup):
            _open(bytes(altered))


def test_an_altered_header_field_is_refused() -> None:
    sealed = bytearray(_seal(b"data"))
    sealed[8] = 9  # the format version
    with pytest.raises(DamagedBackup, match="format 9"):
        _open(bytes(sealed))
    with pytest.raises(DamagedBackup, match="not a Pasar backup"):
        _open(b"PK\x03\x04" + bytes(sealed[4:]))


def test_bytes_after_the_end_are_refused() -> None:
    with pytest.raises(DamagedBackup, match="altered"):
        _open(_seal(b"data") + b"\x00")


def test_manifest_and_status_round_trip() -> None:
    manifest = Manifest("0.1.0", 1700000000, "a" * 56, ("b" * 56,), (FileEntry("node.key", 32, "0" * 64),), False)
    assert Manifest.from_json(manifest.to_json()) == manifest
    with pytest.raises(DamagedBackup):
        Manifest.from_json(b"{}")
    status = BackupStatus(at=5, ok=False, detail="no passphrase")
    assert BackupStatus.from_json(status.to_json()) == status
    assert BackupStatus.from_json(b"garbage") is None


def test_the_decryption_recipe_of_docs_backup_md_works(tmp_path: Path) -> None:
    """The few lines of pynacl in docs/backup.md decrypt a real file (run as a script, as an operator would)."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "backup.md").read_text()
    recipe = re.search(r"```python\n(.*?)```", doc, re.S)
    assert recipe
    (tmp_path / "decrypt.py").write_text(recipe.group(1))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = os.urandom(CHUNK * 2 + 99)
        info = tarfile.TarInfo("recovery.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (tmp_path / "b.pasarbak").write_bytes(_seal(buf.getvalue(), "the passphrase"))
    run = [sys.executable, "decrypt.py", "b.pasarbak", "the passphrase"]
    subprocess.run(run, cwd=tmp_path, check=True, capture_output=True, timeout=60)
    with tarfile.open(tmp_path / "backup.tar") as tar:
        member = tar.extractfile("recovery.json")
        assert member is not None and member.read() == data


@pytest.mark.parametrize(
    "ops, mem",
    [
        (argon2id.OPSLIMIT_MIN + 1, argon2id.MEMLIMIT_MIN),  # cheap, but not a pair Pasar writes
        (argon2id.OPSLIMIT_SENSITIVE, argon2id.MEMLIMIT_SENSITIVE),  # 1 GiB before anything is authenticated
        (MODERATE.ops, MODERATE.mem + 1),
    ],
)
def test_only_the_key_costs_pasar_writes_are_accepted(ops: int, mem: int) -> None:
    """The header is unauthenticated until the key is derived: other costs are refused before argon2id runs."""
    sealed = bytearray(_seal(b"data"))
    sealed[9:21] = struct.pack(">IQ", ops, mem)
    with pytest.raises(DamagedBackup, match="key costs Pasar never writes"):
        _open(bytes(sealed))


def test_the_limits_pasar_writes_are_accepted() -> None:
    assert {MODERATE, INTERACTIVE, WEAKEST} == ACCEPTED


def test_a_manifest_of_another_format_is_refused() -> None:
    manifest = Manifest("9.0.0", 1700000000, "a" * 56, (), (), False, format=2)
    with pytest.raises(DamagedBackup, match="manifest has format 2"):
        Manifest.from_json(manifest.to_json())
