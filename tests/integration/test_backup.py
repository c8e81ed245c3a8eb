"""Backup and restore on real nodes (docs/backup.md): a backup taken during a bulk import, restored.

The vendor's node runs in this process (``checkout_nodes.open_shop``: the real app on the session's
regtest bitcoind); listings are imported in batches and orders are placed through the store's checkout
form while the node's backup service writes the file. The restored data directory must hold every
listing and order the node had acknowledged when the backup began (and nothing it never stored), the
same onion addresses, and catalogs that verify with the same keys; a node started on it shows them.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from node.adapters import backup as files
from node.adapters.sqlite import SQLiteDatabase
from node.adapters.sqlite_schema import Migration
from node.app import create_app, port_probe
from node.app.backups import NodeBackups
from node.core import config as cfg
from node.core.backupfile import WEAKEST, DamagedBackup, WrongPassphrase
from node.core.crypto import StoreKey
from node.core.errors import ConfigError
from node.discovery.catalogs import verify_catalog
from node.payments.models import OrderState
from node.web import appkeys
from node.web import backup as web_backup
from node.web.backup import BACKUPS
from tests.regtest import Regtest

from .checkout_nodes import SHIPPING, TIMEOUT_BLOCKS, Shop, open_shop
from .test_checkout_web import place
from .test_orders_api import prepare

PASSPHRASE = "a long and private passphrase"
DEADLINE = 60.0
BATCH = 25
MAX_BATCHES = 400


def _batch(start: int) -> list[object]:
    shipping = [{"name": "Post", "regions": ["WORLDWIDE"], "price_sat": SHIPPING}]
    return [
        {"title": f"Imported print {n}", "price_sat": 10_000 + n, "kind": "physical", "inventory": 2,
         "import_key": f"bulk-{n}", "shipping": shipping}
        for n in range(start, start + BATCH)
    ]  # fmt: skip


async def _wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.01)


class Importer:
    """Adds listings in batches until stopped (at most MAX_BATCHES: far more than a backup takes)."""

    def __init__(self, shop: Shop) -> None:
        self.shop, self.batches = shop, 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        market = self.shop.vendor[appkeys.MARKET]
        while not self.stop.is_set() and self.batches < MAX_BATCHES:
            await market.add_listings(self.shop.store, _batch(self.batches * BATCH))
            self.batches += 1


@dataclass
class Seen:
    """What the live node had acknowledged when the backup began, and what it held at the end."""

    listed: set[str]
    orders: dict[str, OrderState]
    everything: set[str]
    node_onion: str


async def _backup_during_import(shop: Shop, regtest: Regtest, out: Path) -> Seen:
    service = shop.vendor[BACKUPS]
    assert isinstance(service, NodeBackups)
    service.limits = WEAKEST  # the node's default is MODERATE; the format is the same
    market = shop.vendor[appkeys.MARKET]
    importer = Importer(shop)
    task = asyncio.create_task(importer.run())
    try:
        await _wait_for(lambda: importer.batches >= 3, "three batches imported")
        for _ in range(2):
            await place(shop, regtest)
        listed = {x["id"] for x in await market.listings(shop.store)}
        orders = {o.id: o.state for o in await shop.orders()}
        placing = asyncio.create_task(place(shop, regtest))  # an order in flight during the backup
        await service.write(out, PASSPHRASE)
        await placing
        after = importer.batches
        assert after < MAX_BATCHES, "the import ended before the backup did: not a backup during an import"
        await _wait_for(lambda: importer.batches >= after + 2, "the import went on after the backup")
    finally:
        importer.stop.set()
        await task
    everything = {x["id"] for x in await market.listings(shop.store)}
    return Seen(listed, orders, everything, shop.vendor[appkeys.DISCOVERY].node_onion)


async def _start_restored(data_dir: Path, regtest: Regtest) -> web.AppRunner:
    values = {k: str(v) for k, v in regtest.config_overrides("vendor").items()}
    values.update(store_port_base="0", escrow_timeout_blocks=str(TIMEOUT_BLOCKS), payment_poll_interval="3600")
    values.update(gossip="false")
    runner = web.AppRunner(create_app(cfg.load(data_dir, flags=values, env={})))
    await runner.setup()
    return runner


async def test_a_backup_during_a_bulk_import_restores_every_acknowledged_listing_and_order(
    tmp_path: Path, regtest: Regtest
) -> None:
    out = tmp_path / "node.pasarbak"
    async with open_shop(tmp_path / "live", regtest) as shop:
        seen = await _backup_during_import(shop, regtest, out)
        store = shop.store
    restored = tmp_path / "restored"
    manifest = await asyncio.to_thread(files.restore, out, restored, PASSPHRASE)
    assert manifest.store_onions == (store,) and manifest.node_onion == seen.node_onion
    assert (restored / "recovery.json").is_file() and not (restored / "directory.sqlite").exists()
    runner = await _start_restored(restored, regtest)
    try:
        app = runner.app
        market = app[appkeys.MARKET]
        assert [r["onion"] for r in await market.stores()] == [store]
        assert StoreKey((restored / "stores" / store / "key").read_bytes()).onion == store
        assert app[appkeys.DISCOVERY].node_onion == seen.node_onion
        ids = {x["id"] for x in await market.listings(store)}
        assert seen.listed <= ids <= seen.everything
        assert len(seen.listed) >= 3 * BATCH
        orders = {o.id: o.state for o in await app[appkeys.PAYMENTS].orders(store)}
        assert len(seen.orders) == 2 and seen.orders.items() <= orders.items()
        snap = await market.snapshot(store)
        verified = verify_catalog(snap.envelope_bytes, store=store, now=int(time.time()))
        assert verified.store == store
    finally:
        await runner.cleanup()


@pytest.fixture
def small_backup(tmp_path: Path) -> Path:
    """A backup of a data dir with one store (no node running, no Core)."""
    return asyncio.run(_small_backup(tmp_path))


async def _small_backup(tmp_path: Path) -> Path:
    from node.adapters.store import Storage
    from node.market.limits import Limits
    from node.market.market import Market

    config = prepare(tmp_path / "small", {"payments": False})
    storage = Storage(config.data_dir)
    await storage.open()
    try:
        market = Market(storage, Limits.from_config(config), port_free=port_probe("127.0.0.1"))
        store = await market.create_store({"name": "Small shop", "description": ""})
        await market.add_listings(store["onion"], _batch(0))
        out = tmp_path / "small.pasarbak"
        await files.write_backup(storage, out, PASSPHRASE, extra={"recovery.json": b"{}"}, limits=WEAKEST)
    finally:
        await storage.close()
    return out


def _nothing_written(target: Path) -> None:
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}")] == []


def test_a_wrong_passphrase_writes_nothing(small_backup: Path, tmp_path: Path) -> None:
    target = tmp_path / "restored"
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        files.restore(small_backup, target, "not the passphrase")
    _nothing_written(target)


@pytest.mark.parametrize("cut", [1, 100, 5000])
def test_a_truncated_file_writes_nothing(small_backup: Path, tmp_path: Path, cut: int) -> None:
    damaged = tmp_path / "cut.pasarbak"
    damaged.write_bytes(small_backup.read_bytes()[:-cut])
    target = tmp_path / "restored"
    with pytest.raises(DamagedBackup, match=r"truncated|damaged"):
        files.restore(damaged, target, PASSPHRASE)
    _nothing_written(target)


def test_an_altered_file_writes_nothing(small_backup: Path, tmp_path: Path) -> None:
    raw = bytearray(small_backup.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    altered = tmp_path / "altered.pasarbak"
    altered.write_bytes(bytes(raw))
    target = tmp_path / "restored"
    with pytest.raises(DamagedBackup, match="altered"):
        files.restore(altered, target, PASSPHRASE)
    _nothing_written(target)


def test_restore_refuses_a_data_dir_in_use_and_keeps_it(small_backup: Path, tmp_path: Path) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "node.json").write_text("{}")
    with pytest.raises(ConfigError, match="not empty"):
        files.restore(small_backup, target, PASSPHRASE)
    assert [p.name for p in target.iterdir()] == ["node.json"]


def test_restore_into_an_empty_folder_keeps_that_folder(small_backup: Path, tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    target.chmod(0o750)  # as the operator prepared it (a compose volume, a StateDirectory): kept as it is
    inode = target.stat().st_ino
    manifest = files.restore(small_backup, target, PASSPHRASE)
    assert (target / "stores" / manifest.store_onions[0] / "store.json").is_file()
    assert (target / "node.json").is_file() and (target / "admin.token").is_file()
    assert oct((target / "stores" / manifest.store_onions[0] / "key").stat().st_mode & 0o777) == "0o600"
    assert target.stat().st_ino == inode and target.stat().st_mode & 0o777 == 0o750
    assert not [p for p in target.iterdir() if p.name.startswith(".restore-")]


def test_restore_into_an_empty_symlinked_folder(small_backup: Path, tmp_path: Path) -> None:
    """systemd's DynamicUser StateDirectory: /var/lib/pasar is a symlink to /var/lib/private/pasar."""
    real = tmp_path / "private" / "pasar"
    real.mkdir(parents=True)
    link = tmp_path / "pasar"
    link.symlink_to(real)
    before = sorted(p.name for p in tmp_path.iterdir())
    manifest = files.restore(small_backup, link, PASSPHRASE)
    assert link.is_symlink() and (real / "stores" / manifest.store_onions[0] / "key").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing made beside it: the temp was inside


def test_a_wrong_passphrase_makes_no_folder(small_backup: Path, tmp_path: Path) -> None:
    with pytest.raises(WrongPassphrase):
        files.restore(small_backup, tmp_path / "new" / "deeper" / "data", "not the passphrase")
    assert not (tmp_path / "new").exists()


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_the_temp_folders_of_a_killed_restore_are_removed(small_backup: Path, tmp_path: Path) -> None:
    dead = _dead_pid()
    target = tmp_path / "target"
    target.mkdir()
    inside = target / f".restore-{dead}-00aa"
    inside.mkdir()
    (inside / "node.key").write_bytes(b"k" * 32)
    beside = tmp_path / f".target.restore-{dead}-00bb"
    beside.mkdir()
    running = tmp_path / f".target.restore-{os.getpid()}-00cc"  # a restore still running: left alone
    running.mkdir()
    files.restore(small_backup, target, PASSPHRASE)  # the next restore removes them first
    assert not inside.exists() and not beside.exists() and running.exists()
    data = tmp_path / "data"
    data.mkdir()
    (data / f".restore-{dead}-11").mkdir()
    (tmp_path / f".data.restore-{dead}-22").mkdir()
    assert len(files.remove_leftovers(data)) == 2  # and the node's start (backups_ctx) too
    assert list(data.iterdir()) == [] and not (tmp_path / f".data.restore-{dead}-22").exists()


async def test_a_cancelled_download_lets_the_backup_end_then_deletes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request cancelled while the file is written: the write goes on (one backup at a time), then its file
    is deleted, and nothing is recorded as the last backup (nothing reached the operator)."""
    config = prepare(tmp_path / "data", {"payments": False})
    sealing, release, sealed = threading.Event(), threading.Event(), threading.Event()
    seal = files._seal

    def slow_seal(*args: Any) -> None:
        sealing.set()
        release.wait(DEADLINE)
        try:
            seal(*args)
        finally:
            sealed.set()

    monkeypatch.setattr(files, "_seal", slow_seal)
    runner = web.AppRunner(create_app(config))
    await runner.setup()
    try:
        service = runner.app[BACKUPS]
        assert isinstance(service, NodeBackups)
        service.limits = WEAKEST
        request = make_mocked_request("POST", "/backup", app=runner.app)
        task = asyncio.create_task(web_backup._send(request, PASSPHRASE, False, "downloaded"))
        await _wait_for(sealing.is_set, "the backup being sealed")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert list(config.data_dir.glob(".backup-*")), "the write was cut off with its request"
        release.set()

        def cleaned() -> bool:
            return sealed.is_set() and not list(config.data_dir.glob(".backup-*")) + list(
                config.data_dir.glob(".download-*")
            )

        await _wait_for(cleaned, "the backup ended and its file was deleted")
        assert await service.last() is None
    finally:
        release.set()
        await runner.cleanup()


async def test_a_sqlite_snapshot_holds_every_write_queued_before_it_and_none_after(tmp_path: Path) -> None:
    pairs = Migration(1, "pairs", "CREATE TABLE pairs (n INTEGER PRIMARY KEY, twin INTEGER NOT NULL);")
    db = SQLiteDatabase(tmp_path / "live.sqlite", (pairs,))
    await db.open()
    try:
        assert SQLiteDatabase.opened(tmp_path / "live.sqlite") is db

        def write(n: int) -> Callable[[sqlite3.Connection], None]:
            def run(conn: sqlite3.Connection) -> None:  # two statements in one transaction: never half in a copy
                conn.execute("INSERT INTO pairs (n, twin) VALUES (?, 0)", (n,))
                conn.execute("UPDATE pairs SET twin = ? WHERE n = ?", (n, n))

            return run

        writes = [asyncio.create_task(db.execute_write_fn(write(n))) for n in range(200)]
        await asyncio.sleep(0)
        snapshot = asyncio.create_task(db.snapshot(tmp_path / "copy.sqlite"))
        later = [asyncio.create_task(db.execute_write_fn(write(n))) for n in range(200, 300)]
        await asyncio.gather(*writes, snapshot, *later)
    finally:
        await db.close()
    assert SQLiteDatabase.opened(tmp_path / "live.sqlite") is None
    conn = sqlite3.connect(tmp_path / "copy.sqlite")
    try:
        rows = conn.execute("SELECT n, twin FROM pairs ORDER BY n").fetchall()
    finally:
        conn.close()
    assert rows == [(n, n) for n in range(200)]


def test_leftovers_of_a_backup_cut_off_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".backup-0123").mkdir()
    (tmp_path / ".backup-0123" / "node.key").write_bytes(b"k" * 32)
    (tmp_path / ".download-abcd.pasarbak").write_bytes(b"partial")
    (tmp_path / "node.json").write_text("{}")
    assert len(files.remove_leftovers(tmp_path)) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["node.json"]
