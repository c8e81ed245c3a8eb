"""One backup of the node: its data directory's snapshot plus the recovery sheet (docs/backup.md).

The snapshot itself is the adapter's (``node.adapters.backup``); the app and the CLI hand it in as a
``Snapshot``. What goes into every backup besides the data directory is decided here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Protocol

from ..core.backupfile import BackupStatus, Manifest
from ..core.errors import BadRequest
from .base import Context
from .recovery import recovery_sheet

RECOVERY_FILE = "recovery.json"
BACKUP_ENV = "PASAR_BACKUP_PASSPHRASE"


class Snapshot(Protocol):
    """Writes the encrypted snapshot of the data directory, with ``extra`` files, to ``out``."""

    def __call__(
        self, out: Path, passphrase: str, *, extra: Mapping[str, bytes], with_directory: bool
    ) -> Awaitable[Manifest]: ...


async def write_backup(
    ctx: Context, snapshot: Snapshot, out: Path, passphrase: str, *, with_directory: bool = False
) -> Manifest:
    """``out`` = the encrypted backup: the data directory and ``recovery.json`` (the escrows, for Core alone)."""
    sheet = await recovery_sheet(ctx)
    return await snapshot(out, passphrase, extra={RECOVERY_FILE: sheet}, with_directory=with_directory)


def check_with_directory(with_directory: bool, directory_dsn: str) -> None:
    """A backup with the directory index is refused when that index lives in PostgreSQL (not in the data dir)."""
    if with_directory and directory_dsn:
        raise BadRequest(
            "the directory index is in PostgreSQL (directory_dsn), not in the data directory: back it up with "
            "pg_dump, and make this backup without the directory index (drop --with-directory)"
        )


def summary(manifest: Manifest) -> str:
    """One line for the operator: what the backup holds."""
    stores = len(manifest.store_onions)
    size = sum(f.size for f in manifest.files)
    directory = ", with the directory index" if manifest.with_directory else ""
    return f"{len(manifest.files)} files ({size / 1e6:.1f} MB), {stores} store(s){directory}"


class BackupService(Protocol):
    """The running node's backups, as the admin pages and the API use them."""

    async def write(self, out: Path, passphrase: str, *, with_directory: bool = False, record: bool = True) -> Manifest:
        """A backup at ``out`` (one at a time). A failure is recorded as the last backup; a success only with
        ``record`` (a scheduled backup: the file stays where it is). A download is recorded by the caller
        (``record``) once it reached the operator."""
        ...

    async def record(self, ok: bool, detail: str) -> None:
        """Record the last backup's outcome (what the admin page and ``pasar doctor`` show)."""
        ...

    async def last(self) -> BackupStatus | None:
        """The last backup made of this data directory (scheduled, downloaded or ``pasar backup``)."""
        ...

    def scratch(self) -> Path:
        """A fresh path in the data directory for a backup being downloaded (the caller deletes it)."""
        ...
