"""Flood benchmark: 100,000 valid announcements (real signatures, 100,000 keys) pushed at one node.

Run from the repository root::

    .venv/bin/python tests/bench/bench_flood.py                     # about 2-4 minutes (first run: + key generation)
    .venv/bin/python tests/bench/bench_flood.py --announcements 20000   # quick look

The node side runs in this process: a real ``Gossip`` on a real
``SQLiteDatabase`` (``gossip.sqlite`` in a temporary directory) behind a real
aiohttp server on 127.0.0.1 that serves ``POST /.well-known/pasar/gossip``
(calling ``Gossip.handle``) and, on the same event loop, ``GET /``: a
storefront page built from a real catalog snapshot (100 listings,
``catalog.browse``, 24 per page). Two client processes: the flooder POSTs
full gossip messages (200 announcements each, 4 at a time), the prober GETs
``/`` every 20 ms and records the latency.

Two runs, each on a fresh node:

- ``default limits``: GossipLimits() as a node runs (push budget 400 per
  gossip interval): past the budget, pushed announcements are refused before
  any signature check.
- ``no push budget``: every announcement is verified and stored; the table
  stays at max_announcements (20,000) by evicting the soonest-expiring
  (the flood's announcements are issued one second apart, so each newcomer
  outlives the oldest held).

Printed per run: announcements accepted / refused / rejected and per
second, the table size, RSS before/after (VmRSS, and VmHWM the peak), and
storefront latency p50/p99/max during the flood beside the same page's
latency without a flood.

The announcements are generated once with all cores and cached in
``--cache`` (default: the system temp dir; reused while they are valid).
This is a benchmark: it asserts nothing about timing and exits non-zero with
a one-line reason only if something broke. All traffic is on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from procs import BenchError

from node.adapters.gossip_schema import MIGRATIONS
from node.adapters.sqlite import SQLiteDatabase
from node.core import crypto, envelope
from node.core.crypto import StoreKey
from node.core.errors import PasarError
from node.discovery.gossip import Gossip, GossipLimits
from node.discovery.models import ANNOUNCE_TYPE, AnnounceBody
from node.market import catalog, listings, profile

PER_MESSAGE = 200
TTL = 7 * 86400
PATH = "/.well-known/pasar/gossip"


# -- announcements (generated once, cached) -------------------------------------------
def _make(args: tuple[int, int]) -> bytes:
    i, issued = args
    key = StoreKey(i.to_bytes(4, "big") + b"flood-store".ljust(28, b"."))
    body = AnnounceBody(
        name=f"Junk store {i}",
        description="Nothing to see here, only a valid signature. " * 2,
        tags=sorted({"junk", f"t{i % 97}"}),
        ships_to=["WORLDWIDE"],
        listings=1,
        catalog_seq=issued,
        catalog_hash="sha256:" + f"{i:064x}",
    )
    env = envelope.seal(key, ANNOUNCE_TYPE, body, seq=issued, issued_at=issued, expires_at=issued + TTL)
    return crypto.canonical_json(env)


def read_cache(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()[1:]


def announcements(n: int, cache: Path) -> Path:
    """The cache file of ``n`` announcements (first line: when they were made), made if missing or stale."""
    path = cache / f"pasar-bench-flood-{n}.txt"
    if path.exists():
        lines = path.read_bytes().splitlines()
        if len(lines) == n + 1 and int(lines[0]) + TTL - 2 * n > time.time() + 86400:
            return path
    t0 = int(time.time())
    started = time.monotonic()
    with mp.get_context("spawn").Pool(os.cpu_count() or 2) as pool:
        raws = pool.map(_make, [(i, t0 - n + i) for i in range(n)], chunksize=500)
    print(f"generated {n} signed announcements in {time.monotonic() - started:.1f} s (cached in {path})")
    path.write_bytes(b"\n".join([str(t0).encode(), *raws]))
    return path


# -- the node side (this process) -----------------------------------------------------
def rss_kb() -> tuple[int, int]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def storefront_app(gossip: Gossip) -> web.Application:
    items = listings.validate_new(
        [
            {"title": f"Walnut bowl number {i}", "description": "Turned by hand. " * 12, "kind": "physical",
             "price_sat": 10_000 + i, "category": ["Home", "Kitchen", "Garden"][i % 3], "tags": ["wood", "bowl"],
             "shipping": [{"name": "Post", "regions": ["WORLDWIDE"], "price_sat": 500}]}
            for i in range(100)
        ],
        max_images=8, now=int(time.time()),
    )  # fmt: skip
    snap = catalog.build(
        StoreKey.generate(), profile.validate({"name": "Shop", "description": "x"}), items,
        seq=1, now=int(time.time()), ttl=86400,
    )  # fmt: skip

    async def home(request: web.Request) -> web.Response:
        page = catalog.browse(snap, page=int(request.query.get("page", "1")))
        rows = "".join(f"<li>{x['title']} {x['price_sat']} sat</li>" for x in page.items)
        return web.Response(text=f"<html><body><h1>Shop</h1><ul>{rows}</ul></body></html>", content_type="text/html")

    async def exchange(request: web.Request) -> web.Response:
        try:
            answer = await gossip.handle(await request.read())
        except PasarError as exc:
            return web.json_response(exc.to_json(), status=exc.status)
        return web.Response(body=answer, content_type="application/json")

    app = web.Application(client_max_size=300 * 1024)
    app.router.add_get("/", home)
    app.router.add_post(PATH, exchange)
    return app


# -- the client processes ---------------------------------------------------------------
def flooder(url: str, cache: Path, concurrency: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    raws = read_cache(cache)

    async def run() -> None:
        messages = [
            b'{"v":1,"from":null,"cursor":"head","peers":[],"push":[' + b",".join(raws[i : i + PER_MESSAGE]) + b"]}"
            for i in range(0, len(raws), PER_MESSAGE)
        ]
        errors = 0
        queue = list(reversed(messages))
        async with aiohttp.ClientSession(trust_env=False) as session:

            async def worker() -> None:
                nonlocal errors
                while queue:
                    body = queue.pop()
                    async with session.post(url + PATH, data=body, headers={"Content-Type": "application/json"}) as r:
                        await r.read()
                        errors += r.status != 200

            started = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            out.put(("flood", time.monotonic() - started, len(messages), errors))

    asyncio.run(run())


def prober(url: str, stop: mp.Event, out: mp.Queue) -> None:  # type: ignore[type-arg]
    async def run() -> None:
        latencies: list[float] = []
        errors = 0
        async with aiohttp.ClientSession(trust_env=False) as session:
            while not stop.is_set():
                started = time.perf_counter()
                async with session.get(url + "/") as r:
                    await r.read()
                    errors += r.status != 200
                latencies.append(time.perf_counter() - started)
                await asyncio.sleep(0.02)
        out.put(("probe", latencies, errors))

    asyncio.run(run())


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def probe_only(url: str, seconds: float) -> list[float]:
    latencies: list[float] = []
    async with aiohttp.ClientSession(trust_env=False) as session:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.perf_counter()
            async with session.get(url + "/") as r:
                await r.read()
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.02)
    return latencies


async def run_once(label: str, limits: GossipLimits, cache: Path, n: int, workdir: Path, concurrency: int) -> None:
    db = SQLiteDatabase(workdir / f"{label.replace(' ', '-')}.sqlite", MIGRATIONS, synchronous="NORMAL")
    await db.open()
    gossip = Gossip(db, Link(), me=None, limits=limits)
    await gossip.open()
    runner = web.AppRunner(storefront_app(gossip), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}"
    try:
        baseline = await probe_only(url, 3.0)
        rss_before, _ = rss_kb()
        ctx = mp.get_context("spawn")
        out, stop = ctx.Queue(), ctx.Event()
        procs = [
            ctx.Process(target=prober, args=(url, stop, out)),
            ctx.Process(target=flooder, args=(url, cache, concurrency, out)),
        ]
        for p in procs:
            p.start()
        results = {}
        while "flood" not in results:
            item = await asyncio.to_thread(out.get, True, 900)
            results[item[0]] = item
        stop.set()
        item = await asyncio.to_thread(out.get, True, 60)
        results[item[0]] = item
        for p in procs:
            await asyncio.to_thread(p.join, 30)
        rss_after, hwm = rss_kb()
        _, seconds, messages, errors = results["flood"]
        _, during, probe_errors = results["probe"]
        s = gossip.served
        rows = (await db.execute("SELECT count(*) FROM announcements"))[0][0]
        print(f"\n== {label}: {n} announcements in {messages} messages, {seconds:.1f} s, HTTP errors {errors}")
        print(
            f"  accepted {s.accepted} ({s.accepted / seconds:,.0f}/s)"
            f"  refused {s.refused} ({s.refused / seconds:,.0f}/s)  rejected {s.rejected}"
            f"  duplicates {s.duplicates}  handled {n / seconds:,.0f} announcements/s"
        )
        print(f"  table: {rows} announcements held (max_announcements {limits.max_announcements})")
        print(
            f"  RSS before {rss_before / 1024:.1f} MiB, after {rss_after / 1024:.1f} MiB,"
            f" peak (VmHWM) {hwm / 1024:.1f} MiB"
        )
        print(f"  storefront GET / during the flood: p50 {pct(during, 0.5):.1f} ms, p99 {pct(during, 0.99):.1f} ms, "
              f"max {max(during) * 1000:.1f} ms ({len(during)} requests, {probe_errors} errors)"
              f"   without a flood: p50 {pct(baseline, 0.5):.1f} ms, p99 {pct(baseline, 0.99):.1f} ms")  # fmt: skip
    finally:
        await runner.cleanup()
        await db.close()


class Link:
    async def exchange(self, peer: str, message: bytes, *, alone: bool = False) -> bytes:
        raise BenchError("the flooded node does not gossip out in this bench")


async def main(args: argparse.Namespace) -> None:
    cache = announcements(args.announcements, Path(args.cache))
    with cache.open("rb") as f:  # a sample: the flooder reads the file itself, this process holds none of it
        size = statistics.median(len(line.rstrip(b"\n")) for line in itertools.islice(f, 1, 1001))
    print(f"announcement size: median {size} bytes; "
          f"message: {PER_MESSAGE} per POST; node: real Gossip + SQLiteDatabase + aiohttp on 127.0.0.1")  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="pasar-flood-"))
    try:
        n = args.announcements
        await run_once("default limits", GossipLimits(), cache, n, workdir, args.concurrency)
        await run_once("no push budget", GossipLimits(push_budget=10**9), cache, n, workdir, args.concurrency)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--announcements", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--cache", default=tempfile.gettempdir())
    try:
        asyncio.run(main(parser.parse_args()))
    except BenchError as exc:
        print(f"bench_flood: {exc}", file=sys.stderr)
        sys.exit(1)
