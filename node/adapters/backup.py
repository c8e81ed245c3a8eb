"""A consistent snapshot of a data directory into one encrypted file, and the restore writer (docs/backup.md).

Snapshot: the TinyDB files and keys are linked (or copied) on the storage thread, so no store write lands
meanwhile (every write there replaces its file by a rename: a link is the file as it was); each SQLite
database is copied with SQLite's backup API on its own writer thread when it is open in this process (the
node running), else from a connection of ours (the caller holds the data dir's lock: nobody writes it).
The copies are staged in a private folder of the data dir, archived (tar) into the encrypted stream of
``core.backupfile`` and the file is renamed into place when complete.

Restore: the passphrase is checked first (nothing is created before), then everything is written into a
temp folder, checked against the manifest (sizes, sha256, each store's key gives its folder's onion) and
moved into place at the end: a wrong passphrase, a truncated or altered file writes nothing. An existing
(empty) target is kept as it is (a mount point, a symlink, its owner and mode): the temp folder is made
inside it and its entries are moved up; an absent target is the temp folder made beside it and renamed.
Temp folders carry the restoring process's PID: those of a restore that was killed are removed by the
next restore into the same place and at the node's start.
"""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import io
import os
import re
import secrets
import shutil
import sqlite3
import tarfile
import time
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import IO

from .. import __version__
from ..core.backupfile import (
    MODERATE,
    BackupStatus,
    DamagedBackup,
    Decryptor,
    Encryptor,
    FileEntry,
    KdfLimits,
    Manifest,
)
from ..core.config import CONFIG_FILE
from ..core.crypto import StoreKey
from ..core.errors import ConfigError, StorageError
from .fsutil import atomic_write, fsync_dir, make_private_dir
from .jsonstore import TEMP_NAME
from .keyfiles import load_or_create
from .sqlite import SQLiteDatabase, copy_database
from .store import Storage

SQLITE_FILES = ("gossip.sqlite", "orders.sqlite", "moderation.sqlite", "messages.sqlite", "purchases.sqlite")
DIRECTORY_FILE = "directory.sqlite"  # left out by default: the crawler rebuilds it
PLAIN_FILES = ("node.json", "node.key", "directory.key", "admin.token", "metrics.token", CONFIG_FILE)
STATUS_FILE = "backup-status.json"
_STAMP = "%Y%m%dT%H%M%SZ"
# pasar-backup-<the node onion's first 16 characters>-<UTC time>.pasarbak: only this node's are rotated.
_SCHEDULED = re.compile(r"^pasar-backup-([a-z2-7]{16})-(\d{8}T\d{6}Z)\.pasarbak$")
FUTURE_SLACK = 300  # seconds: a scheduled name dated later than now + this is ignored (a clock once wrong)
_RESTORE_TEMP = re.compile(r"restore-(\d+)-[0-9a-f]+$")
_MAX_MEMBERS = 1_000_000


# -- snapshot --------------------------------------------------------------------------------------
def _link_or_copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:  # a file system without hard links
        shutil.copyfile(src, dest)


def _stage_files(data_dir: Path, stage: Path) -> list[str]:
    """Keys, node.json, pasar.toml and ``stores/**`` into ``stage`` (run on the storage thread); the store onions."""
    for name in PLAIN_FILES:  # copied: pasar.toml may be edited in place by the operator
        if (data_dir / name).is_file():
            shutil.copyfile(data_dir / name, stage / name)
    onions = []
    stores = data_dir / "stores"
    for store in sorted(stores.iterdir()) if stores.is_dir() else []:
        if store.name.startswith(".") or not (store / "key").is_file():
            continue  # a half-made store: not a store yet
        onions.append(store.name)
        for path in sorted(store.rglob("*")):
            if path.is_file() and not TEMP_NAME.match(path.name):
                _link_or_copy(path, stage / path.relative_to(data_dir))
    return onions


def _copy_closed(src: Path, dest: Path) -> None:
    try:
        conn = sqlite3.connect(src, timeout=5)
        try:
            copy_database(conn, dest)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StorageError(
            f"cannot copy {src.name} into the backup ({exc}): check the file (move a damaged one aside)"
        ) from exc


async def _snapshot_db(src: Path, dest: Path) -> None:
    db = SQLiteDatabase.opened(src)
    if db is not None:
        await db.snapshot(dest)
    elif src.is_file():
        await asyncio.to_thread(_copy_closed, src, dest)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _entries(stage: Path) -> tuple[FileEntry, ...]:
    files = sorted(p for p in stage.rglob("*") if p.is_file())
    return tuple(FileEntry(p.relative_to(stage).as_posix(), p.stat().st_size, _digest(p)) for p in files)


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, 0
    return info


def _seal(stage: Path, out: Path, manifest: Manifest, passphrase: str, limits: KdfLimits) -> None:
    """The encrypted archive of ``stage`` at ``out``: a temp file beside it, fsynced, renamed."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb", opener=lambda p, f: os.open(p, f, 0o600)) as fh:
            enc = Encryptor(fh, passphrase, limits)
            with tarfile.open(fileobj=enc, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                raw = manifest.to_json()
                tar.addfile(_tar_info("manifest.json", len(raw)), io.BytesIO(raw))
                for entry in manifest.files:
                    with (stage / entry.path).open("rb") as src:
                        tar.addfile(_tar_info(entry.path, entry.size), src)
            enc.close()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
        fsync_dir(out.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _store_onions_ok(stage: Path, onions: list[str]) -> None:
    for onion in onions:
        key = (stage / "stores" / onion / "key").read_bytes()
        if StoreKey(key).onion != onion:
            raise ConfigError(f"stores/{onion}/key is not that store's key: the data directory is damaged")


async def write_backup(
    storage: Storage,
    out: Path,
    passphrase: str,
    *,
    extra: Mapping[str, bytes],
    limits: KdfLimits = MODERATE,
    with_directory: bool = False,
) -> Manifest:
    """A consistent snapshot of ``storage``'s data dir, plus ``extra`` files, encrypted into ``out``."""
    data_dir = storage.data_dir
    stage = data_dir / f".backup-{secrets.token_hex(8)}"
    make_private_dir(stage)
    try:
        onions = await storage.snapshot(lambda d: _stage_files(d, stage))
        for name in SQLITE_FILES + ((DIRECTORY_FILE,) if with_directory else ()):
            await _snapshot_db(data_dir / name, stage / name)
        for name, data in extra.items():
            (stage / name).write_bytes(data)
        node_key = stage / "node.key"
        node_onion = StoreKey(node_key.read_bytes()).onion if node_key.is_file() else ""
        await asyncio.to_thread(_store_onions_ok, stage, onions)
        files = await asyncio.to_thread(_entries, stage)
        manifest = Manifest(__version__, int(time.time()), node_onion, tuple(onions), files, with_directory)
        await asyncio.to_thread(_seal, stage, out, manifest, passphrase, limits)
    finally:
        await asyncio.to_thread(shutil.rmtree, stage, True)
    return manifest


# -- restore ---------------------------------------------------------------------------------------
def _member_path(name: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts or name != path.as_posix():
        raise DamagedBackup(f"the backup holds a file with a bad name ({name!r}): it was not made by Pasar")
    return name


def _extract(dec: Decryptor, dest: Path) -> Manifest:
    """Every member into ``dest``, each checked against the manifest (the first member)."""
    with tarfile.open(fileobj=dec, mode="r|") as tar:
        members = iter(tar)
        first = next(members, None)
        src = tar.extractfile(first) if first is not None and first.name == "manifest.json" else None
        if src is None:
            raise DamagedBackup("the backup has no manifest first: it was not made by Pasar")
        manifest = Manifest.from_json(src.read())
        expected = {f.path: f for f in manifest.files}
        for count, member in enumerate(members):
            entry = expected.pop(_member_path(member.name), None)
            data = tar.extractfile(member) if member.isfile() else None
            if entry is None or data is None or count > _MAX_MEMBERS:
                raise DamagedBackup(f"the backup holds {member.name!r}, which its manifest does not list")
            _write_checked(data, dest / entry.path, entry)
    if expected:
        raise DamagedBackup(f"the backup lacks {sorted(expected)[0]!r}, which its manifest lists: use another copy")
    return manifest


def _write_checked(src: IO[bytes], dest: Path, entry: FileEntry) -> None:
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    h, size = hashlib.sha256(), 0
    with open(dest, "xb", opener=lambda p, f: os.open(p, f, 0o600)) as fh:
        while block := src.read(1 << 20):
            h.update(block)
            size += len(block)
            fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())
    if size != entry.size or h.hexdigest() != entry.sha256:
        raise DamagedBackup(f"{entry.path} in the backup does not match its manifest: the file was altered")


def _check_target(data_dir: Path, *, but: Path | None = None) -> None:
    """``data_dir`` is absent or an empty folder (``but``, our own temp folder inside it, aside)."""
    if data_dir.exists() and (not data_dir.is_dir() or any(p != but for p in data_dir.iterdir())):
        raise ConfigError(f"{data_dir} is not empty: restore into a new (or empty) data directory")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _listing(folder: Path) -> list[Path]:
    """``folder``'s entries; none when it is absent or not ours to list (a parent like /var/lib/private)."""
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def _restore_leftovers(data_dir: Path) -> list[Path]:
    """Temp folders of restores into ``data_dir`` that were killed (their PID is gone): inside it and beside it."""
    inside = [p for p in _listing(data_dir) if p.name.startswith(".restore-")]
    beside = [p for p in _listing(data_dir.parent) if p.name.startswith(f".{data_dir.name}.restore-")]
    found = []
    for path in inside + beside:
        match = _RESTORE_TEMP.search(path.name)
        if match and path.is_dir() and not path.is_symlink() and not _alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            found.append(path)
    return found


def _unpack(dec: Decryptor, tmp: Path) -> Manifest:
    try:
        manifest = _extract(dec, tmp)
    except tarfile.TarError as exc:
        raise DamagedBackup("the backup's archive is unreadable: it was not made by Pasar") from exc
    dec.drain()
    _store_onions_ok(tmp, list(manifest.store_onions))
    return manifest


def _move_up(tmp: Path, data_dir: Path) -> None:
    """Each entry of ``tmp`` (inside ``data_dir``) into ``data_dir``: renames on one file system."""
    _check_target(data_dir, but=tmp)
    for entry in sorted(tmp.iterdir()):
        os.rename(entry, data_dir / entry.name)
    tmp.rmdir()
    fsync_dir(data_dir)


def restore(backup: Path, data_dir: Path, passphrase: str) -> Manifest:
    """Decrypt ``backup`` into ``data_dir`` (absent or empty); nothing is written unless all of it checks out.

    Blocking: run it in a thread (``pasar restore`` has nothing else to do meanwhile).
    """
    _restore_leftovers(data_dir)
    _check_target(data_dir)
    try:
        src = backup.open("rb")
    except OSError as exc:
        raise ConfigError(f"cannot read {backup} ({exc.strerror}): check the path") from exc
    with src:
        dec = Decryptor(src, passphrase)  # the passphrase and the header are checked before anything is made
        inside = data_dir.is_dir()
        if not inside:
            data_dir.parent.mkdir(parents=True, exist_ok=True)
        temp = f"restore-{os.getpid()}-{secrets.token_hex(6)}"
        tmp = data_dir / f".{temp}" if inside else data_dir.parent / f".{data_dir.name}.{temp}"
        make_private_dir(tmp)
        try:
            manifest = _unpack(dec, tmp)
            if inside:
                _move_up(tmp, data_dir)
            else:
                _check_target(data_dir)
                os.rename(tmp, data_dir)
                fsync_dir(data_dir.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return manifest


def remove_leftovers(data_dir: Path) -> list[Path]:
    """Staging folders, downloads and restore temp folders left by a backup or restore cut off (kill -9).

    Call while holding the data dir's lock.
    """
    found = [p for p in data_dir.glob(".backup-*") if p.is_dir()] + list(data_dir.glob(".download-*.pasarbak"))
    for path in found:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return found + _restore_leftovers(data_dir)


# -- scheduled backups and the last one's status -------------------------------------------------------
def node_tag(data_dir: Path) -> str:
    """The node onion's first 16 characters: names this node's scheduled backups apart from other nodes'."""
    return load_or_create(data_dir / "node.key").onion[:16]


def scheduled_name(now: float, tag: str) -> str:
    return f"pasar-backup-{tag}-{time.strftime(_STAMP, time.gmtime(now))}.pasarbak"


def scheduled_backups(folder: Path, tag: str, now: float) -> list[tuple[int, Path]]:
    """(UTC time, path) of the scheduled backups of the node ``tag`` in ``folder``, oldest first.

    Other nodes' files, downloads, names that are no date and names dated in the future (a clock that
    was wrong once) are left out: never counted, never deleted.
    """
    found = []
    for path in folder.iterdir() if folder.is_dir() else ():
        match = _SCHEDULED.match(path.name)
        if match is None or match.group(1) != tag:
            continue
        try:
            at = calendar.timegm(time.strptime(match.group(2), _STAMP))
        except ValueError:
            continue
        if at <= now + FUTURE_SLACK:
            found.append((at, path))
    return sorted(found)


def keep_newest(folder: Path, keep: int, tag: str, now: float) -> list[Path]:
    """Delete all but the newest ``keep`` scheduled backups of the node ``tag`` in ``folder``; the deleted."""
    found = scheduled_backups(folder, tag, now)
    gone = [path for _at, path in found[: max(len(found) - keep, 0)]]
    for path in gone:
        path.unlink(missing_ok=True)
    return gone


def due_in(folder: Path, interval: int, tag: str, now: float) -> float:
    """Seconds until the node ``tag``'s next scheduled backup: <= 0 when none was made in the last ``interval``."""
    found = scheduled_backups(folder, tag, now)
    return found[-1][0] + interval - now if found else 0.0


def record_status(data_dir: Path, status: BackupStatus) -> None:
    atomic_write(data_dir / STATUS_FILE, status.to_json())


def read_status(data_dir: Path) -> BackupStatus | None:
    try:
        return BackupStatus.from_json((data_dir / STATUS_FILE).read_bytes())
    except OSError:
        return None


async def last_backup(data_dir: Path) -> BackupStatus | None:
    """The last backup made of ``data_dir`` (scheduled or ``pasar backup``), or None."""
    return await asyncio.to_thread(read_status, data_dir)
