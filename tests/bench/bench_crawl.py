"""Crawl benchmark: 1,000 stores x 50 listings, fetched, verified and indexed into a real Directory.

Run from the repository root::

    .venv/bin/python tests/bench/bench_crawl.py                 # about 1-2 minutes
    .venv/bin/python tests/bench/bench_crawl.py --stores 200 --listings 50   # quick look
    .venv/bin/python tests/bench/bench_crawl.py --profile       # + the crawler's top functions (cProfile)

What runs:

- The store side is a separate process (this script's ``_serve`` mode): one
  real aiohttp listener on 127.0.0.1 serving every store's real signed
  catalog (built with ``node.market.catalog.build`` from ``StoreKey`` keys,
  as a store serves it: canonical bytes, strong ``ETag``, ``If-None-Match`` ->
  304) at ``/<onion>/.well-known/pasar/catalog.json``. One listener with a
  path prefix per store stands in for 1,000 store listeners: the crawler's
  work per store is the same, and it keeps the server's CPU out of the
  crawler's process.
- The crawler side (this process): ``node.discovery.crawler.Crawler`` with
  its default limits (8 at once), ``node.adapters.loophttp.LoopbackHttp``
  mapping ``http://<onion>.onion/...`` to that listener, a real
  ``Directory`` on a fresh ``directory.sqlite`` (``synchronous=NORMAL``, as
  the app opens it), and the 1,000 real signed announcements handed out by a
  tiny stand-in for gossip (the crawler only calls ``announcements()``).

Figures: listings indexed per second for the full crawl (target >= 20,000/s),
then each stage alone over the same catalogs so the bottleneck shows: fetch
only (8 at once), verify only (split into hash, JSON parse, canonical
re-encoding, depth check, ed25519, body checks), and index only (Directory.index
of already verified catalogs), plus the crawler's CPU time and the server's.
A second pass (every store answers 304) is timed too.

This is a benchmark, not a test: it asserts nothing about timing and exits 0
unless something broke (then non-zero with a one-line reason). All traffic is
to 127.0.0.1; the server process is stopped by PID in a ``finally``; the
temporary directory is removed. pytest does not collect this file.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import io
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from procs import BenchError, free_port, port_open, stop_process

from node.adapters.directory_schema import _V1, MIGRATIONS
from node.adapters.loophttp import LoopbackHttp
from node.adapters.sqlite import SQLiteDatabase
from node.adapters.sqlite_schema import Migration
from node.core import crypto, envelope
from node.core.crypto import StoreKey
from node.discovery import announce, catalogs
from node.discovery import directory_index as ix
from node.discovery.crawler import Crawler, CrawlLimits
from node.discovery.directory import Directory, DirectoryLimits
from node.discovery.models import Announcement, Source, VerifiedCatalog
from node.market import catalog, listings, profile

NOW = int(time.time())
WORDS = (
    "wool linen oak brass clay honey tea cedar salt amber slate moss copper felt birch walnut candle "
    "soap basket scarf mug bowl lamp ring print card jar kettle"
).split()
TARGET = 20_000
_REPLACE_LISTINGS = ix.replace_listings


# -- the store side ---------------------------------------------------------------------
def _listing(store: int, i: int) -> dict[str, object]:
    n = store * 1000 + i
    words = " ".join(WORDS[(n * 7 + j * 3) % len(WORDS)] for j in range(35))
    return {
        "title": f"{WORDS[n % len(WORDS)]} {WORDS[(n // 7) % len(WORDS)]} {i}",
        "description": f"{words}. Handmade item {n}.",
        "kind": "physical",
        "price_sat": 1000 + n % 50_000,
        "category": WORDS[n % 9].title(),
        "tags": sorted({WORDS[n % len(WORDS)], WORDS[(n + 5) % len(WORDS)]}),
        "images": [hashlib.sha256(f"img {n}".encode()).hexdigest()],
        "shipping": [{"name": "Post", "regions": ["DE", "FR", "NL"] if n % 2 else ["WORLDWIDE"], "price_sat": 500}],
    }


def make_stores(count: int, per_store: int, out: Path) -> tuple[list[Announcement], int]:
    """Sign ``count`` catalogs into ``out/<onion>.json``; returns their announcements and total bytes."""
    anns, total = [], 0
    for s in range(count):
        key = StoreKey.generate()
        items = listings.validate_new([_listing(s, i) for i in range(per_store)], max_images=8, now=NOW)
        prof = profile.validate({"name": f"Store {s}", "description": "Things made by hand."})
        snap = catalog.build(key, prof, items, seq=NOW, now=NOW, ttl=7 * 86400)
        (out / f"{key.onion}.json").write_bytes(snap.envelope_bytes)
        total += len(snap.envelope_bytes)
        anns.append(announce.build(key, announce.body_of(snap), seq=NOW, now=NOW, ttl=7 * 86400))
    return anns, total


def serve(folder: Path, port: int) -> None:
    """The ``_serve`` mode: every ``<onion>.json`` of ``folder`` at ``/<onion>/.well-known/pasar/catalog.json``."""
    from aiohttp import web

    bodies = {p.stem: p.read_bytes() for p in folder.glob("*.json")}
    etags = {k: '"' + hashlib.sha256(v).hexdigest()[:32] + '"' for k, v in bodies.items()}

    async def catalog_json(request: web.Request) -> web.Response:
        onion = request.match_info["onion"]
        if onion not in bodies:
            raise web.HTTPNotFound()
        if request.headers.get("If-None-Match") == etags[onion]:
            return web.Response(status=304, headers={"ETag": etags[onion]})
        return web.Response(body=bodies[onion], content_type="application/json", headers={"ETag": etags[onion]})

    app = web.Application()
    app.router.add_get("/{onion}/.well-known/pasar/catalog.json", catalog_json)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# -- the crawler side ---------------------------------------------------------------------
class Announced:
    """Stands in for gossip: the crawler calls only ``announcements()`` (and ``sample_peers`` on failure)."""

    def __init__(self, anns: list[Announcement]) -> None:
        self.anns = anns

    async def announcements(self) -> list[Announcement]:
        return list(self.anns)

    async def sample_peers(self, k: int) -> list[str]:
        return []


async def open_directory(
    path: Path, migrations: tuple[Migration, ...] = MIGRATIONS
) -> tuple[SQLiteDatabase, Directory]:
    db = SQLiteDatabase(path, migrations, synchronous="NORMAL")
    await db.open()
    directory = Directory(db, limits=DirectoryLimits())
    await directory.open()
    return db, directory


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def full_crawl(
    base: str, anns: list[Announcement], work: Path, server_pid: int, prof: bool, name: str = "directory.sqlite"
) -> None:
    db, directory = await open_directory(work / name, WHAT_IF_MIGRATIONS if name.startswith("what-if") else MIGRATIONS)
    http = LoopbackHttp(lambda onion: f"{base}/{onion}")
    crawler = Crawler(http, directory, Announced(anns), limits=CrawlLimits())
    try:
        profiler = cProfile.Profile() if prof else None
        cpu0, srv0, t0 = time.process_time(), cpu_of(server_pid), time.perf_counter()
        if profiler:
            profiler.enable()
        progress = await crawler.crawl_once()
        if profiler:
            profiler.disable()
        wall = time.perf_counter() - t0
        cpu, srv = time.process_time() - cpu0, cpu_of(server_pid) - srv0
        if progress.failed or progress.done != len(anns):
            raise BenchError(f"crawl failed: {progress}")
        _, indexed = await directory.counts()
        print(f"full crawl: {progress.indexed:,} listings of {progress.done:,} stores in {wall:.2f} s")
        print(f"  listings indexed per second: {progress.indexed / wall:,.0f}/s   (target >= {TARGET:,}/s)")
        print(
            f"  crawler CPU {cpu:.2f} s ({cpu / wall:.0%} of one core, incl. the SQLite writer thread): "
            f"{cpu / progress.indexed * 1e6:.0f} us CPU/listing, {progress.indexed / cpu:,.0f} listings per CPU second"
        )
        print(f"  server CPU {srv:.2f} s (separate process)   directory now holds {indexed:,} listings")
        if profiler:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(18)
            print("\n".join(out.getvalue().splitlines()[:40]))
        for a in anns:  # make every store due again: the second pass is all 304s
            await db.execute_write_fn(
                lambda conn, s=a.store: conn.execute(
                    "UPDATE stores SET last_attempt = 0, last_seen = 0 WHERE onion = ?", (s,)
                )
            )
        t0 = time.perf_counter()
        again = await crawler.crawl_once()
        print(f"second pass: {again.unchanged:,} stores answered 304 in {time.perf_counter() - t0:.2f} s")
        held = await directory.held(anns[0].store)
        if held is None or held.source is not Source.DIRECT:
            raise BenchError("the first store is not held after the crawl")
    finally:
        await crawler.close()
        await http.close()
        await db.close()


# -- each stage alone ----------------------------------------------------------------------
async def fetch_only(base: str, anns: list[Announcement], per_store: int) -> None:
    http = LoopbackHttp(lambda onion: f"{base}/{onion}")
    todo = iter(anns)
    size = 0

    async def worker() -> None:
        nonlocal size
        for a in todo:
            reply = await http.get(f"http://{a.store}.onion/.well-known/pasar/catalog.json", deadline=60)
            size += len(reply.body)

    try:
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CrawlLimits().concurrency)))
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        await http.close()
    n = len(anns) * per_store
    print(
        f"  fetch only (8 at once): {wall:.2f} s, {n / wall:,.0f} listings/s, {size / wall / 2**20:.0f} MiB/s, "
        f"client CPU {cpu / n * 1e6:.1f} us/listing"
    )


def _per_listing(label: str, fn, raws: list[bytes], listings_total: int) -> float:
    t0 = time.perf_counter()
    for raw in raws:
        fn(raw)
    us = (time.perf_counter() - t0) / listings_total * 1e6
    print(f"    {label:<44} {us:6.1f} us/listing")
    return us


def verify_only(raws: list[bytes], stores: list[str]) -> list[VerifiedCatalog]:
    n = sum(len(json.loads(r)["body"]["listings"]) for r in raws[:1]) * len(raws)
    t0 = time.perf_counter()
    verified = [catalogs.verify_catalog(r, store=s, now=NOW) for r, s in zip(raws, stores, strict=True)]
    wall = time.perf_counter() - t0
    print(f"  verify only (verify_catalog): {wall:.2f} s, {n / wall:,.0f} listings/s, {wall / n * 1e6:.1f} us/listing")
    parsed = [json.loads(r) for r in raws]
    unsigned = [catalogs._canonical_unsigned(o, r) or b"" for o, r in zip(parsed, raws, strict=True)]
    it = iter(range(len(raws)))
    _per_listing("sha256 of the bytes", catalogs.catalog_hash, raws, n)
    _per_listing("JSON parse (json.loads, C)", catalogs._parse, raws, n)
    _per_listing(
        "canonical re-encoding (the duplicate-key check)", lambda r: crypto.canonical_json(parsed[next(it)]), raws, n
    )
    _per_listing("depth check (bytes ops)", catalogs._too_deep, raws, n)
    it2 = iter(range(len(raws)))

    def sig(r: bytes) -> None:
        i = next(it2)
        env = parsed[i]
        crypto.verify(env["store"], unsigned[i], crypto.b64url_decode(env["sig"]))

    _per_listing("ed25519 verify (+ address decode)", sig, raws, n)
    it3 = iter(range(len(raws)))
    _per_listing(
        "body checks -> CatalogListing records",
        lambda r: catalogs._listings(parsed[next(it3)]["body"]["listings"]),
        raws,
        n,
    )
    _per_listing(
        "for comparison: strict envelope.loads + open_",
        lambda r: envelope.open_(envelope.loads(r), now=NOW, expected_type=catalog.CATALOG_TYPE),
        raws,
        n,
    )
    return verified


async def index_only(verified: list[VerifiedCatalog], work: Path) -> None:
    db, directory = await open_directory(work / "index-only.sqlite")
    try:
        n = sum(len(v.listings) for v in verified)
        t0, cpu0 = time.perf_counter(), time.process_time()
        for v in verified:
            await directory.index(v, source=Source.DIRECT, etag=None)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        print(
            f"  index only (Directory.index, one at a time): {wall:.2f} s, {n / wall:,.0f} listings/s, "
            f"CPU {cpu / n * 1e6:.1f} us/listing"
        )
        size = sum(p.stat().st_size for p in work.glob("index-only.sqlite*"))
        print(f"    directory.sqlite after {n:,} listings: {size / 2**20:.0f} MiB (raw catalogs kept for mirrors)")
    finally:
        await db.close()


# What if directory_index fed FTS5 itself instead of through the AFTER INSERT trigger? (the proposed change;
# monkeypatched here only, for the "what if" crawl; directory_index.py and directory_schema.py are not changed)
_AI_TRIGGER = "CREATE TRIGGER listings_ai" + _V1.split("CREATE TRIGGER listings_ai")[1].split("END;")[0] + "END;"
WHAT_IF_MIGRATIONS = (Migration(1, "directory", _V1.replace(_AI_TRIGGER, "")),)


def what_if_replace_listings(conn, store, kept, now):
    top = conn.execute("SELECT coalesce(max(rowid), 0) FROM listings").fetchone()[0]
    _REPLACE_LISTINGS(conn, store, kept, now)
    conn.execute(
        "INSERT INTO listings_fts (rowid, title, description, category, tags) "
        "SELECT rowid, title, description, category, tags FROM listings WHERE rowid > ? AND store = ?",
        (top, store),
    )


def fts_probe(verified: list[VerifiedCatalog]) -> None:
    """The same listings into directory.sqlite's listings + FTS5 tables: through the schema's AFTER INSERT
    trigger (as Directory.index does) vs one ``INSERT INTO listings_fts ... SELECT`` per catalog."""
    import sqlite3

    trigger = _V1.split("CREATE TRIGGER listings_ai")[1].split("END;")[0]
    for label, schema, explicit in (
        ("through the AFTER INSERT trigger", _V1, False),
        ("explicit INSERT ... SELECT, no trigger", _V1.replace(f"CREATE TRIGGER listings_ai{trigger}END;", ""), True),
    ):
        conn = sqlite3.connect(":memory:", isolation_level=None)
        conn.executescript(schema)
        n, c0 = 0, time.process_time()
        for v in verified:
            conn.execute("BEGIN")
            top = conn.execute("SELECT coalesce(max(rowid), 0) FROM listings").fetchone()[0]
            conn.executemany(
                "INSERT INTO listings (store, id, title, description, category, tags, price_sat, ships_to, created_at, "
                "listed_at) VALUES (?, ?, ?, ?, ?, ?, ?, '', ?, ?)",
                [
                    (
                        v.store,
                        x.id,
                        x.title,
                        x.description,
                        x.category,
                        " ".join(x.tags),
                        x.price_sat,
                        x.created_at,
                        NOW,
                    )
                    for x in v.listings
                ],
            )
            if explicit:
                conn.execute(
                    "INSERT INTO listings_fts (rowid, title, description, category, tags) "
                    "SELECT rowid, title, description, category, tags FROM listings WHERE rowid > ?",
                    (top,),
                )
            conn.execute("COMMIT")
            n += len(v.listings)
        print(f"    FTS5 {label:<40} {(time.process_time() - c0) / n * 1e6:6.1f} us CPU/listing (in memory)")
        conn.close()


# -- main ------------------------------------------------------------------------------------
def start_server(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "_serve", str(folder), str(port)])
    deadline = time.monotonic() + 60
    while not port_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise BenchError("the catalog server did not start")
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_serve"]:
        serve(Path(argv[1]), int(argv[2]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stores", type=int, default=1000)
    p.add_argument("--listings", type=int, default=50)
    p.add_argument("--profile", action="store_true", help="print the crawler's top functions (cProfile)")
    a = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="pasar-bench-crawl-"))
    server = None
    try:
        t0 = time.perf_counter()
        anns, total = make_stores(
            a.stores, a.listings, work / "catalogs" if (work / "catalogs").mkdir() is None else work
        )
        print(
            f"{a.stores:,} stores x {a.listings} listings signed in {time.perf_counter() - t0:.1f} s; "
            f"{total / 2**20:.1f} MiB of catalogs ({total // a.stores:,} bytes each)"
        )
        print(f"load average at the start: {os.getloadavg()[0]:.1f} (2 cores)")
        server, base = start_server(work / "catalogs")
        asyncio.run(full_crawl(base, anns, work, server.pid, a.profile))
        print("each stage alone, same catalogs:")
        asyncio.run(fetch_only(base, anns, a.listings))
        raws = [(work / "catalogs" / f"{x.store}.json").read_bytes() for x in anns]
        verified = verify_only(raws, [x.store for x in anns])
        asyncio.run(index_only(verified, work))
        fts_probe(verified[:200])
        print("what if directory_index inserted into FTS5 itself (no AFTER INSERT trigger; patched in this script):")
        ix.replace_listings = what_if_replace_listings
        asyncio.run(full_crawl(base, anns, work, server.pid, False, "what-if.sqlite"))
        print(f"load average at the end: {os.getloadavg()[0]:.1f} (2 cores)")
    except BenchError as exc:
        print(f"bench_crawl: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_process(server)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
