"""Storage benchmark: small records written one write each, TinyDB store adapter vs SQLite adapter.

Run from the repository root::

    .venv/bin/python tests/bench/bench_storage.py                  # about 2-3 minutes
    .venv/bin/python tests/bench/bench_storage.py --records 2000 --seconds 20   # quick look

Each run starts on a fresh temporary directory and writes ``--records``
small records (a listing of about 300 bytes JSON) one awaited write each,
then reads them back:

- ``tinydb store (anchor)``: ``node.adapters.store.Storage.put_listings``
  with one listing per call on a fresh store. Each write rewrites the whole
  store file, so a write costs more as the store grows; the run stops at
  ``--seconds`` and the script extrapolates its total (quadratic).
- ``sqlite synchronous=FULL``: ``node.adapters.sqlite.SQLiteDatabase``
  (the default, one fsync per commit), one ``execute_write_fn`` per record.
- ``sqlite synchronous=NORMAL``: the same with ``synchronous=NORMAL``
  (for data that can be rebuilt, such as the search index).

For each run it prints the writes done, their total time, per-write latency
p50/p95/max, the latency of the last 100 writes (the cost at the final
size), the time to read every record in one call, and the latency of reading
one record (by id for SQLite; TinyDB has no such read, so one read is a
``listings()`` call, sampled ``--read-samples`` times).

This is a benchmark, not a test: it asserts nothing about timing and exits 0
unless something broke (then non-zero with a one-line reason). It does no
networking and starts no process; every loop is bounded by ``--records``
and ``--seconds``; the temporary directories are removed afterwards. pytest
does not collect this file (norecursedirs in pyproject.toml; no test_ prefix).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from procs import BenchError

from node.adapters import dbfiles
from node.adapters.sqlite import SQLiteDatabase
from node.adapters.sqlite_schema import Migration
from node.adapters.store import Storage
from node.core.crypto import StoreKey

WORDS = "wool linen oak brass clay honey tea cedar salt amber slate moss copper felt birch".split()
RECORDS = Migration(1, "records", "CREATE TABLE records (id TEXT PRIMARY KEY, body TEXT NOT NULL);")


@dataclass
class Result:
    label: str
    wanted: int
    latencies: list[float] = field(default_factory=list)  # seconds per write
    read_all: float = 0.0
    read_one: list[float] = field(default_factory=list)
    capped: bool = False


def record(i: int, rng: random.Random) -> dict[str, Any]:
    return {
        "id": f"{i:08x}{rng.getrandbits(32):08x}",
        "title": f"Item {i} {rng.choice(WORDS)}",
        "price_sat": rng.randint(1000, 10**7),
        "kind": "digital",
        "category": rng.choice(WORDS),
        "tags": [rng.choice(WORDS), rng.choice(WORDS)],
        "description": " ".join(rng.choice(WORDS) for _ in range(32)),
    }


async def timed_writes(result: Result, write: Callable[[int], Awaitable[object]], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for i in range(result.wanted):
        started = time.perf_counter()
        await write(i)
        result.latencies.append(time.perf_counter() - started)
        if time.monotonic() > deadline and i + 1 < result.wanted:
            result.capped = True
            return


# -- the runs --------------------------------------------------------------------
async def run_tinydb(root: Path, records: list[dict[str, Any]], seconds: float, samples: int) -> Result:
    dbfiles.initialise(root)
    storage = Storage(root)
    await storage.open()
    try:
        key = StoreKey.generate()
        await storage.create_store(key.onion, key.seed, {"name": "Bench"}, lambda used: None, now=int(time.time()))
        result = Result("tinydb store (anchor)", len(records))

        async def write(i: int) -> object:
            return await storage.put_listings(key.onion, [records[i]], lambda seq: seq + 1)

        await timed_writes(result, write, seconds)
        started = time.perf_counter()
        stored = await storage.listings(key.onion)
        result.read_all = time.perf_counter() - started
        if len(stored) != len(result.latencies):
            raise BenchError(f"tinydb: {len(stored)} records stored, {len(result.latencies)} written")
        for _ in range(min(samples, len(stored))):
            started = time.perf_counter()
            await storage.listings(key.onion)
            result.read_one.append(time.perf_counter() - started)
        return result
    finally:
        await storage.close()


async def run_sqlite(
    root: Path, records: list[dict[str, Any]], seconds: float, sync: Literal["FULL", "NORMAL"]
) -> Result:
    db = SQLiteDatabase(root / "bench.db", (RECORDS,), synchronous=sync)
    await db.open()
    try:
        result = Result(f"sqlite synchronous={sync}", len(records))
        rows = [(r["id"], json.dumps(r, ensure_ascii=False)) for r in records]

        async def write(i: int) -> object:
            return await db.execute_write_fn(lambda c: c.execute("INSERT INTO records VALUES (?, ?)", rows[i]).rowcount)

        await timed_writes(result, write, seconds)
        started = time.perf_counter()
        stored = await db.execute("SELECT id, body FROM records")
        result.read_all = time.perf_counter() - started
        if len(stored) != len(result.latencies):
            raise BenchError(f"sqlite: {len(stored)} records stored, {len(result.latencies)} written")
        for rid, _body in rows[: len(result.latencies)]:
            started = time.perf_counter()
            (_row,) = await db.execute("SELECT body FROM records WHERE id = ?", (rid,))
            result.read_one.append(time.perf_counter() - started)
        return result
    finally:
        await db.close()


# -- report ----------------------------------------------------------------------
def ms(values: list[float], q: float) -> str:
    if not values:
        return "n/a"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.2f}"


def report(results: list[Result]) -> list[str]:
    head = (
        f"{'run':<26} {'writes':>7} {'total s':>8} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>8} "
        f"{'last100 p50':>11} {'read all ms':>11} {'read 1 p50/p95 ms':>17}"
    )
    lines = [head]
    for r in results:
        lat = r.latencies
        lines.append(
            f"{r.label:<26} {len(lat):>7} {sum(lat):>8.1f} {ms(lat, 0.5):>7} {ms(lat, 0.95):>7} "
            f"{max(lat) * 1000:>8.1f} {ms(lat[-100:], 0.5):>11} {r.read_all * 1000:>11.1f} "
            f"{ms(r.read_one, 0.5) + '/' + ms(r.read_one, 0.95):>17}"
        )
    for r in results:
        if r.capped:
            n, wanted = len(r.latencies), r.wanted
            scaled = sum(r.latencies) * (wanted / n) ** 2
            lines.append(
                f"{r.label}: stopped at the time cap after {n} of {wanted} writes; "
                f"about {scaled:.0f} s for all {wanted} (quadratic: each write rewrites the whole file)"
            )
    anchor = next((r for r in results if r.label.startswith("tinydb")), None)
    if anchor:
        for r in results:
            if r is not anchor and r.latencies:
                mine, theirs = statistics.median(r.latencies[-100:]), statistics.median(anchor.latencies[-100:])
                lines.append(
                    f"{r.label}: median of the last 100 writes {mine * 1000:.2f} ms at {len(r.latencies)} records, "
                    f"the anchor's {theirs * 1000:.2f} ms at {len(anchor.latencies)} records ({theirs / mine:.0f}x)"
                )
    lines.append("issue 8 reported for TinyDB: about 110 ms per write at 10,000 listings")
    return lines


async def bench(args: argparse.Namespace) -> list[Result]:
    rng = random.Random(8)
    records = [record(i, rng) for i in range(args.records)]
    results = []
    runs: list[tuple[str, Callable[[Path], Awaitable[Result]]]] = []
    if not args.skip_anchor:
        runs.append(("tinydb", lambda root: run_tinydb(root, records, args.seconds, args.read_samples)))
    runs.append(("sqlite FULL", lambda root: run_sqlite(root, records, args.seconds, "FULL")))
    runs.append(("sqlite NORMAL", lambda root: run_sqlite(root, records, args.seconds, "NORMAL")))
    for name, run in runs:
        root = Path(tempfile.mkdtemp(prefix="pasar-bench-storage-", dir=args.dir))
        try:
            results.append(await run(root))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(f"  measured {name}: {len(results[-1].latencies)} writes", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000, help="records to write in each run")
    parser.add_argument("--seconds", type=float, default=60.0, help="time cap on the writes of each run")
    parser.add_argument("--read-samples", type=int, default=100, help="TinyDB single reads to time")
    parser.add_argument("--dir", help="where to make the temporary directories (default: the system's temp dir)")
    parser.add_argument("--skip-anchor", action="store_true", help="measure SQLite only")
    args = parser.parse_args(argv)
    if not 1 <= args.records <= 1_000_000 or args.seconds <= 0:
        parser.error("--records must be from 1 to 1000000 and --seconds positive")
    try:
        results = asyncio.run(bench(args))
    except BenchError as exc:
        print(f"bench_storage: {exc}", file=sys.stderr)
        return 1
    print()
    print("\n".join(report(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
