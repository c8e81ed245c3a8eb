"""Backup and restore of a data directory: time, file size, and how long writes wait while a backup runs.

    .venv/bin/python tests/bench/bench_backup.py                       # 3 stores x 2,000 listings, 20 images
    .venv/bin/python tests/bench/bench_backup.py --stores 1 --listings 500 --orders 2000

In this process, on a temp data dir (removed at the end): stores with listings and images through the
market, an orders-like SQLite database filled through the real ``SQLiteDatabase``; then
``adapters.backup.write_backup`` (MODERATE, the node's default) while a writer keeps adding listings and
SQLite rows, and ``restore`` into a fresh dir. Anchors printed beside the figures: the key derivation
alone (MODERATE), and the longest write wait with no backup running. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

from PIL import Image

from node.adapters import backup as files
from node.adapters import dbfiles
from node.adapters.sqlite import SQLiteDatabase
from node.adapters.sqlite_schema import Migration
from node.adapters.store import Storage
from node.app import port_probe
from node.core import config as cfg
from node.core.backupfile import MODERATE, Encryptor
from node.market.limits import Limits
from node.market.market import Market

PASSPHRASE = "benchmark passphrase"
_LIVE = itertools.count(10_000_000)  # ids of the rows written while measuring
ROWS = Migration(1, "rows", "CREATE TABLE rows (n INTEGER PRIMARY KEY, body TEXT NOT NULL);")


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((400, 300), 40 + seed % 50).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


async def _fill(market: Market, db: SQLiteDatabase, args: argparse.Namespace) -> list[str]:
    stores = []
    for s in range(args.stores):
        onion = (await market.create_store({"name": f"Bench shop {s}", "description": ""}))["onion"]
        stores.append(onion)
        images = [(await market.add_image(onion, _png(s * 100 + i)))["id"] for i in range(args.images)]
        for start in range(0, args.listings, 500):
            batch = [
                {"title": f"Item {n} of shop {s}", "price_sat": 1000 + n, "kind": "digital",
                 "description": "word " * 40, "images": images[n % len(images):][:1] if images else []}
                for n in range(start, min(start + 500, args.listings))
            ]  # fmt: skip
            await market.add_listings(onion, batch)
    for start in range(0, args.orders, 1000):
        rows = [(n, "x" * 400) for n in range(start, min(start + 1000, args.orders))]
        await db.execute_write_fn(lambda c, rows=rows: c.executemany("INSERT INTO rows VALUES (?, ?)", rows))
    return stores


async def _writer(market: Market, db: SQLiteDatabase, onion: str, stop: asyncio.Event, waits: list[float]) -> None:
    while not stop.is_set():
        n = next(_LIVE)
        started = time.perf_counter()
        await market.add_listings(onion, [{"title": f"Live {n}", "price_sat": 5000, "kind": "digital"}])
        await db.execute_write_fn(lambda c, n=n: c.execute("INSERT INTO rows VALUES (?, ?)", (n, "live")))
        waits.append(time.perf_counter() - started)


async def _stall(market: Market, db: SQLiteDatabase, onion: str, during: Awaitable[object]) -> tuple[float, float, int]:
    """(max, p50) seconds of one listing write + one SQLite write, while ``during`` runs; and how many."""
    stop, waits = asyncio.Event(), list[float]()
    task = asyncio.create_task(_writer(market, db, onion, stop, waits))
    try:
        await during
    finally:
        stop.set()
        await task
    waits.sort()
    return waits[-1], waits[len(waits) // 2], len(waits)


def _prepare(data_dir: Path) -> cfg.Config:
    dbfiles.initialise(data_dir)
    (data_dir / "admin.token").write_text("t" * 43)
    return cfg.load(data_dir, env={}, flags={"payments": "false"})


async def run(args: argparse.Namespace, root: Path) -> None:
    config = _prepare(root / "data")
    storage = Storage(config.data_dir)
    await storage.open()
    db = SQLiteDatabase(config.data_dir / "orders.sqlite", (ROWS,))
    await db.open()
    try:
        market = Market(storage, Limits.from_config(config), port_free=port_probe("127.0.0.1"))
        t0 = time.perf_counter()
        stores = await _fill(market, db, args)
        print(f"data: {args.stores} stores x {args.listings} listings, {args.images} images each, "
              f"{args.orders} SQLite rows; filled in {time.perf_counter() - t0:.1f} s")  # fmt: skip
        size = sum(p.stat().st_size for p in config.data_dir.rglob("*") if p.is_file())
        t0 = time.perf_counter()
        Encryptor(io.BytesIO(), PASSPHRASE, MODERATE)
        kdf = time.perf_counter() - t0
        idle = await _stall(market, db, stores[0], asyncio.sleep(2))
        out = root / "node.pasarbak"
        t0 = time.perf_counter()
        busy = await _stall(market, db, stores[0], files.write_backup(storage, out, PASSPHRASE, extra={}))
        took = time.perf_counter() - t0
    finally:
        await db.close()
        await storage.close()
    t0 = time.perf_counter()
    await asyncio.to_thread(files.restore, out, root / "restored", PASSPHRASE)
    restore = time.perf_counter() - t0
    print(f"data dir            {size / 1e6:8.1f} MB    backup file {out.stat().st_size / 1e6:8.1f} MB")
    print(f"backup (MODERATE)   {took:8.2f} s     anchor: key derivation alone {kdf:.2f} s")
    print(f"restore (MODERATE)  {restore:8.2f} s")
    print(f"write wait, backup  max {busy[0] * 1000:7.1f} ms  p50 {busy[1] * 1000:6.1f} ms  ({busy[2]} writes)")
    print(f"write wait, idle    max {idle[0] * 1000:7.1f} ms  p50 {idle[1] * 1000:6.1f} ms  ({idle[2]} writes)  anchor")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", type=int, default=3)
    parser.add_argument("--listings", type=int, default=2000)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--orders", type=int, default=20_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pasar-bench-backup-"))
    try:
        asyncio.run(run(args, root))
    except Exception as exc:  # a benchmark reports what broke in one line
        print(f"bench_backup failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
