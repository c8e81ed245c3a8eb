"""Scheduled backups (node/app/backups.py): written into backup_dir, the newest backup_keep kept; no passphrase
is an error shown as the last backup's outcome (what the admin page and ``pasar doctor`` read)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from node.adapters import backup as files
from node.app import create_app
from node.app.backups import last_backup
from node.core import config as cfg
from node.core.backupfile import BackupStatus, Decryptor

from .test_orders_api import prepare

PASSPHRASE = "scheduled backups passphrase"
DEADLINE = 60.0


@asynccontextmanager
async def running(config: cfg.Config) -> AsyncIterator[web.Application]:
    runner = web.AppRunner(create_app(config))
    await runner.setup()
    try:
        yield runner.app
    finally:
        await runner.cleanup()


async def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.05)


def _scheduled(folder: Path, tag: str) -> list[str]:
    return [p.name for _at, p in files.scheduled_backups(folder, tag, time.time())]


OTHER_TAG = "abcdefghijklmnop"  # another node's backups in the same folder


async def test_scheduled_backups_keep_the_newest_k(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    settings = {"payments": False, "backup_dir": str(folder), "backup_keep": 2, "backup_interval": 3600}
    config = prepare(tmp_path / "data", settings)
    tag = files.node_tag(config.data_dir)  # the node onion's first 16 characters (node.key made here if missing)
    old = [files.scheduled_name(time.time() - days * 86400, tag) for days in (3, 2, 1)]
    others = [files.scheduled_name(time.time() - days * 3600, OTHER_TAG) for days in (3, 2, 1)]
    odd = [
        f"pasar-backup-{tag}-20261399T000000Z.pasarbak",  # no date: ignored, never crashes the schedule
        files.scheduled_name(time.time() + 30 * 86400, tag),  # dated in the future: ignored
        "pasar-download-20260101T000000Z.pasarbak",  # an admin download saved here
        "notes.txt",
    ]
    for name in old + others + odd:
        (folder / name).write_bytes(b"an older backup")
    monkeypatch.setenv("PASAR_BACKUP_PASSPHRASE", PASSPHRASE)
    async with running(config):
        await _until(
            lambda: len(set(_scheduled(folder, tag)) - set(old)) == 1 and len(_scheduled(folder, tag)) == 2, "one new"
        )
    kept = _scheduled(folder, tag)
    assert kept[0] == old[-1] and kept[1] not in old  # the newest old one and the new one
    assert all((folder / name).exists() for name in others + odd)  # other nodes' and other files: left alone
    with (folder / kept[1]).open("rb") as fh:
        assert Decryptor(fh, PASSPHRASE).read(8)  # a real backup, under the node's passphrase
    status = await last_backup(config.data_dir)
    assert isinstance(status, BackupStatus) and status.ok and kept[1] in status.detail


def test_rotation_and_due_time_count_only_this_nodes_dated_backups(tmp_path: Path) -> None:
    now = 1_800_000_000.0
    tag = "qrstuvwxyz234567"
    mine = [files.scheduled_name(now - hours * 3600, tag) for hours in (5, 4, 3)]
    theirs = [files.scheduled_name(now - 60, OTHER_TAG), files.scheduled_name(now - 7200, OTHER_TAG)]
    odd = [f"pasar-backup-{tag}-20261399T000000Z.pasarbak", files.scheduled_name(now + 86400, tag)]
    for name in mine + theirs + odd + ["pasar-download-20260101T000000Z.pasarbak"]:
        (tmp_path / name).write_bytes(b"x")
    # The newest of this node's is 3 h old: due in 1 h (not "just made" by the other node's file a minute ago,
    # not in a day by the future-dated one, no crash on the name that is no date).
    assert files.due_in(tmp_path, 4 * 3600, tag, now) == 3600
    assert files.due_in(tmp_path, 3600, "nonodehasthistag", now) == 0
    gone = files.keep_newest(tmp_path, 1, tag, now)
    assert sorted(p.name for p in gone) == sorted(mine[:2])
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {mine[2], *theirs, *odd, "pasar-download-20260101T000000Z.pasarbak"}


async def test_no_passphrase_is_an_error_shown_as_the_last_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "backups"
    monkeypatch.delenv("PASAR_BACKUP_PASSPHRASE", raising=False)
    config = prepare(tmp_path / "data", {"payments": False, "backup_dir": str(folder), "backup_interval": 60})
    async with running(config):
        await _until(lambda: (config.data_dir / files.STATUS_FILE).exists(), "an outcome recorded")
    status = await last_backup(config.data_dir)
    assert status is not None and not status.ok
    assert "PASAR_BACKUP_PASSPHRASE" in status.detail
    assert not folder.exists() or list(folder.iterdir()) == []
