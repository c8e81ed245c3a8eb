"""The node's backups: the service the admin page and the API call, and scheduled backups into ``backup_dir``.

Scheduled: every ``backup_interval`` seconds (counted from this node's newest scheduled file, so a restart
does not write one more), ``pasar-backup-<node tag>-<UTC time>.pasarbak`` is written into ``backup_dir``
(temp file + rename) and only this node's newest ``backup_keep`` are kept (the tag is the node onion's
first 16 characters: nodes sharing a folder leave each other's files alone). The passphrase comes from
``PASAR_BACKUP_PASSPHRASE`` in the node's environment; without it each interval logs one error and
records it as the last backup's outcome (the admin backup page and ``pasar doctor`` show it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from aiohttp import web

from ..adapters import backup as files
from ..adapters.store import Storage
from ..core.backupfile import MODERATE, BackupStatus, KdfLimits, Manifest
from ..core.config import Config
from ..core.errors import ConfigError, PasarError
from ..core.tasks import supervised
from ..operations import backup as ops_backup
from ..web import appkeys
from ..web.api import WebContext
from ..web.backup import BACKUPS

__all__ = ["NodeBackups", "backups_ctx", "last_backup"]
log = logging.getLogger(__name__)
last_backup = files.last_backup  # for ``pasar doctor``: ``await last_backup(data_dir)``


class NodeBackups:
    """Backups of the running node's data directory (satisfies ``operations.backup.BackupService``)."""

    def __init__(self, app: web.Application, storage: Storage, limits: KdfLimits = MODERATE) -> None:
        self._app, self._storage, self.limits = app, storage, limits
        self._one_at_a_time = asyncio.Lock()
        self._recording = asyncio.Lock()  # one status write at a time (they share one temp file name)

    async def _snapshot(
        self, out: Path, passphrase: str, *, extra: Mapping[str, bytes], with_directory: bool
    ) -> Manifest:
        return await files.write_backup(
            self._storage, out, passphrase, extra=extra, limits=self.limits, with_directory=with_directory
        )

    async def write(self, out: Path, passphrase: str, *, with_directory: bool = False, record: bool = True) -> Manifest:
        ops_backup.check_with_directory(with_directory, self._app[appkeys.CONFIG].directory_dsn)
        async with self._one_at_a_time:
            try:
                manifest = await ops_backup.write_backup(
                    WebContext(self._app), self._snapshot, out, passphrase, with_directory=with_directory
                )
            except (PasarError, OSError) as exc:
                await self.record(False, f"backup failed: {getattr(exc, 'message', None) or exc}")
                raise
            if record:
                await self.record(True, f"{out.name}: {ops_backup.summary(manifest)}")
            return manifest

    async def record(self, ok: bool, detail: str) -> None:
        status = BackupStatus(at=int(time.time()), ok=ok, detail=detail)
        async with self._recording:
            await asyncio.to_thread(files.record_status, self._storage.data_dir, status)

    async def last(self) -> BackupStatus | None:
        return await files.last_backup(self._storage.data_dir)

    def scratch(self) -> Path:
        return self._storage.data_dir / f".download-{secrets.token_hex(8)}.pasarbak"

    async def scheduled(self, config: Config) -> None:
        """Forever: wait until the next backup is due, write it, prune this node's old ones."""
        folder = Path(config.backup_dir).expanduser()
        tag = await asyncio.to_thread(files.node_tag, self._storage.data_dir)
        while True:
            due = await asyncio.to_thread(files.due_in, folder, config.backup_interval, tag, time.time())
            await asyncio.sleep(max(due, 0))
            passphrase = os.environ.get(ops_backup.BACKUP_ENV, "")
            if not passphrase:
                error = ConfigError(
                    f"no scheduled backup: set {ops_backup.BACKUP_ENV} in the node's environment (or clear backup_dir)"
                )
                log.error("%s", error.message)
                await self.record(False, error.message)
                await asyncio.sleep(config.backup_interval)
                continue
            await asyncio.to_thread(folder.mkdir, 0o700, True, True)
            out = folder / files.scheduled_name(time.time(), tag)
            await self.write(out, passphrase)
            gone = await asyncio.to_thread(files.keep_newest, folder, config.backup_keep, tag, time.time())
            log.info("scheduled backup written to %s (%d old one(s) removed)", out, len(gone))


async def backups_ctx(app: web.Application) -> AsyncIterator[None]:
    """The backup service (admin page, API) and, with ``backup_dir`` set, the scheduled backups."""
    from . import STORAGE  # the package imports this module while it loads

    config = app[appkeys.CONFIG]
    service = app[BACKUPS] = NodeBackups(app, app[STORAGE])
    for path in await asyncio.to_thread(files.remove_leftovers, config.data_dir):
        log.info("removed %s, left by a backup that was cut off", path.name)
    task = None
    if config.backup_dir:
        task = asyncio.create_task(
            supervised("scheduled backups", lambda: service.scheduled(config)), name="scheduled backups"
        )
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
