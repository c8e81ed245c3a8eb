"""``pasar backup FILE`` and ``pasar restore FILE --data-dir DIR`` (docs/backup.md).

With the node running (it holds ``node.lock``), ``pasar backup`` asks it through the admin API
(``POST /api/v1/backup``) and saves what it sends; with the node stopped it holds the data dir's lock
and makes the snapshot itself. The passphrase comes from ``PASAR_BACKUP_PASSPHRASE``, else it is asked
on the terminal (twice for a backup); with neither the command refuses.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import signal
import sys
import time
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp

from ..adapters import backup as files
from ..adapters import purchases_schema
from ..adapters.datadir import read_lock_info
from ..adapters.store import Storage
from ..app import port_probe, read_token
from ..app.messaging import open_messaging
from ..app.payments import open_payments
from ..core import config as cfg
from ..core.backupfile import MODERATE, BackupStatus, Manifest
from ..core.errors import ConfigError, NodeBusy, PasarError, StorageError
from ..market.limits import Limits
from ..market.market import Market
from ..operations import backup as ops_backup
from ..payments.settings import PaymentSettings
from ..purchases.service import Purchases
from .backends import LocalContext, RemoteError
from .output import out

BLOCK = 1 << 20


def _ask_secret(prompt: str) -> str:
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C stops at once
    try:
        return getpass.getpass(prompt)
    except EOFError:
        return ""
    finally:
        signal.signal(signal.SIGINT, previous)


def read_passphrase(*, twice: bool) -> str:
    """``PASAR_BACKUP_PASSPHRASE``, else asked on the terminal; ConfigError with neither."""
    given = os.environ.get(ops_backup.BACKUP_ENV)
    if given:
        return given
    if not sys.stdin.isatty():
        raise ConfigError(f"no passphrase: set {ops_backup.BACKUP_ENV} or run the command on a terminal")
    first = _ask_secret("Backup passphrase: ")
    if len(first) < 8:
        raise ConfigError("the passphrase is shorter than 8 characters: nothing was written")
    if twice and _ask_secret("The same passphrase again: ") != first:
        raise ConfigError("the two passphrases differ: nothing was written")
    return first


class _NoCatalogs:
    """The purchases a backup reads are not placed: no directory (nor PostgreSQL) is opened for them."""

    async def mirror(self, store: str) -> bytes | None:
        return None


class _SheetContext(LocalContext):
    """A stopped node's parts the recovery sheet reads: orders, moderation cases and purchases; no directory."""

    sheet_purchases: Purchases | None = None

    @property
    def purchases(self) -> Purchases:
        if self.sheet_purchases is None:
            raise RuntimeError("the backup opens purchases before the recovery sheet reads them")
        return self.sheet_purchases


async def _local_backup(storage: Storage, config: cfg.Config, dest: Path, passphrase: str, full: bool) -> Manifest:
    """The stopped node's data dir: only the databases the recovery sheet reads are opened (the rest are copied)."""
    async with AsyncExitStack() as stack:
        market = Market(storage, Limits.from_config(config), port_free=port_probe(config.store_host))
        ctx = _SheetContext(market, config)
        ctx.paying = await open_payments(config, stack, market=market, http=None)
        messaging = await open_messaging(config, stack, ctx.paying.payments)
        db = purchases_schema.purchase_database(config.data_dir / "purchases.sqlite")
        await db.open()
        stack.push_async_callback(db.close)
        settings = PaymentSettings.from_config(config)
        ctx.sheet_purchases = Purchases(db, messaging.mailbox, ctx.paying.bitcoin, _NoCatalogs(), settings)
        snapshot = partial(files.write_backup, storage, limits=MODERATE)
        return await ops_backup.write_backup(ctx, snapshot, dest, passphrase, with_directory=full)


async def _record(data_dir: Path, ok: bool, detail: str) -> None:
    """The outcome as the last backup (the admin page, ``pasar doctor``); a data dir we cannot write only warns."""
    try:
        await asyncio.to_thread(files.record_status, data_dir, BackupStatus(int(time.time()), ok, detail))
    except OSError as exc:
        out(f"warning: could not record the backup in {data_dir / files.STATUS_FILE} ({exc.strerror})")


async def _remote_backup(config: cfg.Config, dest: Path, passphrase: str, full: bool) -> str:
    """Ask the running node; its answer is saved beside ``dest`` and renamed when complete."""
    url = read_lock_info(config.data_dir).get("admin_url")
    if not url:
        raise StorageError("a node is starting or stopping on this data directory; try again in a moment")
    headers = {"Authorization": f"Bearer {read_token(config)}"}
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    try:
        async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
            body = {"passphrase": passphrase, "with_directory": full}
            async with session.post(f"{url.rstrip('/')}/api/v1/backup", json=body) as resp:
                if resp.status != 200:
                    answer: Any = await resp.json(content_type=None)
                    error = answer.get("error") if isinstance(answer, dict) else None
                    raise RemoteError(f"the running node made no backup: {error or f'HTTP {resp.status}'}")
                with open(tmp, "wb", opener=lambda p, f: os.open(p, f, 0o600)) as fh:
                    async for block in resp.content.iter_chunked(BLOCK):
                        fh.write(block)
                    os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except (aiohttp.ClientError, ValueError) as exc:
        raise RemoteError(f"cannot get the backup from the running node at {url}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return f"made by the running node at {url}"


async def _backup_stopped(storage: Storage, config: cfg.Config, dest: Path, passphrase: str, full: bool) -> Manifest:
    try:
        await asyncio.to_thread(files.remove_leftovers, config.data_dir)
        manifest = await _local_backup(storage, config, dest, passphrase, full)
    except (PasarError, OSError) as exc:
        await _record(config.data_dir, False, f"pasar backup failed: {getattr(exc, 'message', None) or exc}")
        raise
    await _record(config.data_dir, True, f"made by pasar backup: {ops_backup.summary(manifest)}")
    return manifest


async def cmd_backup(args: argparse.Namespace, config: cfg.Config) -> int:
    dest = Path(args.file).expanduser().absolute()
    if dest.exists():
        raise ConfigError(f"{dest} exists: choose another file name (a backup never overwrites a file)")
    if not dest.parent.is_dir():
        raise ConfigError(f"{dest.parent} is not a folder: create it first")
    ops_backup.check_with_directory(args.with_directory, config.directory_dsn)
    passphrase = read_passphrase(twice=True)
    storage = Storage(config.data_dir)
    try:
        await storage.open()
    except NodeBusy:
        out(await _remote_backup(config, dest, passphrase, args.with_directory))
        await _record(config.data_dir, True, "made by the running node for pasar backup, saved by it")
        out(f"backup written to {dest}")
        return 0
    try:
        manifest = await _backup_stopped(storage, config, dest, passphrase, args.with_directory)
    finally:
        await storage.close()
    out(f"backup written to {dest}: {ops_backup.summary(manifest)}")
    if not args.with_directory:
        out("the directory index (directory.sqlite) is left out: the crawler rebuilds it (--with-directory keeps it)")
    return 0


async def cmd_restore(args: argparse.Namespace, config: cfg.Config) -> int:
    source = Path(args.file).expanduser()
    if not source.is_file():
        raise ConfigError(f"{source} is not a file: give the path of a .pasarbak backup")
    passphrase = read_passphrase(twice=False)
    manifest = await asyncio.to_thread(files.restore, source, config.data_dir, passphrase)
    made = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(manifest.created_at))
    out(f"restored the backup of {made} into {config.data_dir}: {ops_backup.summary(manifest)}")
    if manifest.node_onion:
        out(f"node onion: {manifest.node_onion}.onion")
    for onion in manifest.store_onions:
        out(f"store: {onion}.onion")
    out(
        "stop the old node for good (and never start it again) before you start this copy: two nodes with the "
        "same keys publish the same onions and run diverging orders over the same escrows"
    )
    out(f"start it with: pasar run --data-dir {config.data_dir}")
    return 0


def add_backup_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """``pasar backup FILE [--with-directory]`` and ``pasar restore FILE --data-dir DIR``."""
    p = sub.add_parser(
        "backup", parents=[common], help="write the node (keys, stores, orders...) to one encrypted file"
    )
    p.add_argument("file", metavar="FILE", help="the backup file to write (must not exist)")
    p.add_argument(
        "--with-directory", action="store_true", help="include the directory index (left out: the crawler rebuilds it)"
    )
    p.set_defaults(func=cmd_backup)
    p = sub.add_parser("restore", parents=[common], help="restore a backup file into a new (empty) --data-dir")
    p.add_argument("file", metavar="FILE", help="the backup file (.pasarbak)")
    p.set_defaults(func=cmd_restore, needs_init=False)
