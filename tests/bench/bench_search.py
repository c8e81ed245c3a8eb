"""Directory search benchmark: 1,000,000 indexed listings, Directory.search vs a bare FTS5 table.

Run from the repository root::

    .venv/bin/python tests/bench/bench_search.py                  # 1,000,000 rows: build ~minutes once, then cached
    .venv/bin/python tests/bench/bench_search.py --rows 50000     # quick look
    .venv/bin/python tests/bench/bench_search.py --rebuild        # ignore the cached databases

Build (once per ``--rows`` and schema version; cached in ``--cache-dir``,
default ``$TMPDIR/pasar-bench-search``): ``--rows`` listings in stores of 50,
indexed by the SQL of ``Directory.index`` (``directory_index.index_catalog``
through the real ``SQLiteDatabase`` writer, but ``--batch`` stores per write
transaction instead of one: one per store runs at a few thousand listings/s
on this machine, see the README), FTS5 kept in sync by the schema's
triggers, from generated text: a
vocabulary of 6,000 made-up words (plus a few hundred accented ones) drawn
with a Zipf-like law (weight 1/rank), titles of 2-6 words, descriptions of
15-60 words, 40 categories, 1-4 tags, prices and ships-to regions. The raw
catalogs are small placeholders (the mirror copy is not what this measures).
Then a bare FTS5 table (same columns, tokenizer, prefix indexes and bm25
weights, its own content) is filled from the same rows in another file.

Measure: 100 varied queries (one common / mid / rare word, two and three
words, a last word as prefix, an explicit ``*``, a phrase, words that match
nothing, a few second pages), each run through ``Directory.search`` (top 20
by bm25 with snippets and the total, capped at 10,000) and, alternately, on
the bare table (the same MATCH expression, top 20 by rank with snippet() and
the same capped count). ``--rounds`` rounds after one warm-up round; p50/p99
over all samples, and split by queries with at most / more than 10,000
matches (``Directory.search`` does not rank the latter: newest first; the
bare table ranks them all). Also: 20 queries with filters (category, price, ships-to)
through Directory.search only, the empty query (newest), the cost of an
exact (uncapped) count, the file sizes and the process's RSS.

A benchmark, not a test: it asserts nothing about timing and exits 0 unless
something broke (then non-zero with a one-line reason). No network, no
other process. pytest does not collect this file.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from itertools import accumulate
from pathlib import Path
from typing import TypeVar

from procs import BenchError

from node.adapters.directory_schema import MIGRATIONS, RANK
from node.adapters.sqlite import SQLiteDatabase
from node.core import ports
from node.core.addresses import address_from_pubkey
from node.core.models import Sats
from node.discovery import directory_index as ix
from node.discovery import directory_read as rd
from node.discovery.directory import COUNT_CAP, Directory, DirectoryLimits
from node.discovery.models import CatalogListing, SearchQuery, Source, VerifiedCatalog
from node.discovery.search import match_expression

T = TypeVar("T")
BUILD_VERSION = 1
PER_STORE = 50
NOW = 1_800_000_000
SYLLABLES = "ka lo mi nu pe ra si to vu be da fe gi ho ja ke li mo na pi qu re sa te va wo xi yo za".split()
ACCENTED = "crème brûlée café naïve jalapeño piñata façade fiancé résumé smörgåsbord über straße".split()
REGIONS = ["WORLDWIDE", "DE", "FR", "US", "GB", "IT", "ES", "NL", "BR", "JP"]


# -- text --------------------------------------------------------------------------------
class Text:
    """A Zipf-like word source: a shuffled vocabulary drawn with weight 1/rank from a pre-drawn pool."""

    def __init__(self, rng: random.Random, words: int = 6000, pool: int = 3_000_000) -> None:
        vocab: set[str] = set(ACCENTED)
        while len(vocab) < words:
            vocab.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
        self.vocab = sorted(vocab)
        rng.shuffle(self.vocab)
        weights = list(accumulate(1.0 / (r + 1) for r in range(len(self.vocab))))
        self.pool = rng.choices(self.vocab, cum_weights=weights, k=pool)
        self.rng = rng

    def words(self, n: int) -> str:
        start = self.rng.randrange(len(self.pool) - n)
        return " ".join(self.pool[start : start + n])


def make_catalog(text: Text, rng: random.Random, index: int) -> VerifiedCatalog:
    store = address_from_pubkey(hashlib.sha256(b"bench store %d" % index).digest())
    listings = tuple(
        CatalogListing(
            id=f"{index}-{i}",
            title=text.words(rng.randint(2, 6)).capitalize(),
            description=text.words(rng.randint(15, 60)) + ".",
            category=f"cat{rng.randrange(40)}",
            tags=tuple(sorted(set(text.words(rng.randint(1, 4)).split()))),
            price_sat=Sats(rng.randrange(1_000, 5_000_000)),
            ships_to=tuple(sorted(set(rng.sample(REGIONS, rng.randint(1, 3))))),
            created_at=NOW - rng.randrange(90 * 86400),
            thumb=None,
        )
        for i in range(PER_STORE)
    )
    raw = b'{"placeholder": %d}' % index
    return VerifiedCatalog(
        store=store,
        seq=1,
        issued_at=NOW - 60,
        expires_at=NOW + 7 * 86400,
        name=text.words(2).title(),
        description=text.words(8),
        listings=listings,
        raw=raw,
        hash="sha256:" + hashlib.sha256(raw).hexdigest(),
    )


# -- build (cached) ------------------------------------------------------------------------
def paths(cache: Path, rows: int) -> tuple[Path, Path, Path]:
    digest = hashlib.sha256(MIGRATIONS[-1].sql.encode()).hexdigest()[:10]
    stem = f"v{BUILD_VERSION}-{digest}-{rows}"
    return cache / f"directory-{stem}.sqlite", cache / f"bare-{stem}.sqlite", cache / f"{stem}.done"


def clock() -> float:
    return float(NOW)


async def build(directory_path: Path, bare_path: Path, rows: int, batch: int) -> None:
    rng = random.Random(7)
    started = time.perf_counter()
    text = Text(rng)
    print(f"build: vocabulary and word pool in {time.perf_counter() - started:.1f} s", flush=True)
    db = SQLiteDatabase(directory_path, MIGRATIONS, synchronous="NORMAL")
    await db.open()
    caps = DirectoryLimits().caps
    indexed, stores, gen_s, started = 0, rows // PER_STORE, 0.0, time.perf_counter()

    def index_batch(catalogs: list[VerifiedCatalog]) -> Callable[[ports.SqlConnection], int]:
        def run(conn: ports.SqlConnection) -> int:
            return sum(ix.index_catalog(conn, c, source=Source.DIRECT, etag=None, now=NOW, caps=caps) for c in catalogs)

        return run

    try:
        pending: asyncio.Future[int] | None = None
        for first in range(0, stores, batch):
            t = time.perf_counter()
            catalogs = [make_catalog(text, rng, i) for i in range(first, min(first + batch, stores))]
            gen_s += time.perf_counter() - t
            if pending is not None:
                indexed += await pending
            pending = asyncio.ensure_future(db.execute_write_fn(index_batch(catalogs)))
            if first and first % (20 * batch) == 0:
                print(f"  {indexed:,} listings indexed, {time.perf_counter() - started:.0f} s", flush=True)
        if pending is not None:
            indexed += await pending
    finally:
        await db.close()
    took = time.perf_counter() - started
    print(
        f"build: {indexed:,} listings in {took:.1f} s ({indexed / took:,.0f}/s; {batch} stores of {PER_STORE} "
        f"per write transaction through directory_index.index_catalog; {gen_s:.1f} s of it generating text, "
        "overlapped with the writes)",
        flush=True,
    )
    started = time.perf_counter()
    conn = sqlite3.connect(bare_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE VIRTUAL TABLE f USING fts5(title, description, category, tags, "
        "tokenize='unicode61 remove_diacritics 2', prefix='2 3')"
    )
    conn.execute(f"INSERT INTO f (f, rank) VALUES ('rank', '{RANK}')")
    conn.execute("ATTACH ? AS d", (str(directory_path),))
    conn.execute("BEGIN")
    conn.execute(
        "INSERT INTO f (rowid, title, description, category, tags) "
        "SELECT rowid, title, description, category, tags FROM d.listings"
    )
    conn.execute("COMMIT")
    conn.execute("DETACH d")
    conn.close()
    print(f"build: bare FTS5 table from the same rows in {time.perf_counter() - started:.1f} s", flush=True)


# -- queries -------------------------------------------------------------------------------
def queries(directory_path: Path, n: int) -> list[tuple[str, int]]:
    """(text, offset) pairs of varied shapes, picked from the indexed text by term frequency."""
    conn = sqlite3.connect(f"{directory_path.resolve().as_uri()}?mode=ro", uri=True)
    rng = random.Random(11)
    conn.execute("CREATE VIRTUAL TABLE temp.v USING fts5vocab(main, listings_fts, row)")
    terms = [str(r[0]) for r in conn.execute("SELECT term FROM temp.v ORDER BY doc DESC LIMIT 3000")]
    conn.close()
    common, mid, rare = terms[:50], terms[200:1000], terms[1500:]
    shapes: list[Callable[[], str]] = [
        lambda: rng.choice(common),
        lambda: rng.choice(mid),
        lambda: rng.choice(rare),
        lambda: f"{rng.choice(common)} {rng.choice(mid)}",
        lambda: f"{rng.choice(mid)} {rng.choice(rare)}",
        lambda: f"{rng.choice(common)} {rng.choice(common)} {rng.choice(mid)}",
        lambda: rng.choice(mid)[:3],  # a 3-letter last word: prefix
        lambda: rng.choice(common)[:2] + "*",
        lambda: f'"{rng.choice(mid)} {rng.choice(common)}"',
        lambda: f"{rng.choice(rare)} zzqxnothing",
    ]
    picked = [(shapes[i % len(shapes)](), 20 if i % 9 == 8 else 0) for i in range(n)]
    rng.shuffle(picked)
    return picked


def bare_search(conn: sqlite3.Connection, text: str, offset: int) -> int:
    expr = match_expression(text)
    if expr is None:
        return 0
    conn.execute("BEGIN")
    try:
        conn.execute(
            "SELECT rowid, title, snippet(f, 1, ?, ?, '…', 16), rank FROM f WHERE f MATCH ? "
            "ORDER BY rank LIMIT 20 OFFSET ?",
            ("\ue000", "\ue001", expr, offset),
        ).fetchall()
        total = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM f WHERE f MATCH ? LIMIT ?)", (expr, COUNT_CAP + 1)
        ).fetchone()[0]
    finally:
        conn.execute("ROLLBACK")
    return int(total)


def _timed(fn: Callable[..., T], *args: object) -> tuple[float, T]:
    t0 = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t0, result


async def _timed_async(awaitable: Awaitable[T]) -> tuple[float, T]:
    t0 = time.perf_counter()
    result = await awaitable
    return time.perf_counter() - t0, result


def sync_search(conn: sqlite3.Connection, text: str, offset: int) -> None:
    conn.execute("BEGIN")
    try:
        rd.search(conn, SearchQuery(q=text, offset=offset), match_expression(text), reachable_since=0)
    finally:
        conn.execute("ROLLBACK")


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def line(name: str, samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return f"{name:<34} p50 {pct(ms, 50):7.2f} ms   p99 {pct(ms, 99):7.2f} ms   mean {statistics.mean(ms):7.2f} ms"


async def measure(directory_path: Path, bare_path: Path, n: int, rounds: int) -> None:
    picked = queries(directory_path, n)
    db = SQLiteDatabase(directory_path, MIGRATIONS, readers=1, synchronous="NORMAL")
    await db.open()
    directory = Directory(db, limits=DirectoryLimits(), clock=clock)
    await directory.open()
    bare = sqlite3.connect(f"{bare_path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    mine = sqlite3.connect(f"{directory_path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    mine.row_factory = sqlite3.Row
    same_sql: list[float] = []
    ours: dict[bool, list[float]] = {False: [], True: []}
    theirs: dict[bool, list[float]] = {False: [], True: []}
    broad: dict[str, bool] = {}
    mismatched = 0
    try:
        for round_no in range(rounds + 1):  # round 0 warms the caches and is not counted
            for i, (text, offset) in enumerate(picked):
                # Alternate the order (ours first, then bare first) so that drift hits both alike.
                if (i + round_no) % 2:
                    took_bare, total = _timed(bare_search, bare, text, offset)
                    took_ours, page = await _timed_async(directory.search(SearchQuery(q=text, offset=offset)))
                else:
                    took_ours, page = await _timed_async(directory.search(SearchQuery(q=text, offset=offset)))
                    took_bare, total = _timed(bare_search, bare, text, offset)
                took_sync, _ = _timed(sync_search, mine, text, offset)
                if round_no:
                    ours[broad[text]].append(took_ours)
                    theirs[broad[text]].append(took_bare)
                    same_sql.append(took_sync)
                else:
                    broad[text] = total > COUNT_CAP
                    mismatched += page["total"] != total
        report(ours, theirs, n, rounds, mismatched)
        print(line("same SQL, no thread hop", same_sql) + "  (directory_read.search on a plain connection)")
        await extras(directory, db, picked, [t for t, b in broad.items() if b])
    finally:
        bare.close()
        mine.close()
        await db.close()


def report(
    ours: dict[bool, list[float]], theirs: dict[bool, list[float]], n: int, rounds: int, mismatched: int
) -> None:
    both_ours, both_theirs = ours[False] + ours[True], theirs[False] + theirs[True]
    print(f"\n{n} queries x {rounds} rounds (after 1 warm-up round), top 20 + total capped at {COUNT_CAP + 1:,}:")
    print(line("Directory.search", both_ours))
    print(line("bare FTS5 (same MATCH, rank, count)", both_theirs))
    print(
        f"ratio Directory/bare: p50 {pct(both_ours, 50) / pct(both_theirs, 50):.2f}x   "
        f"p99 {pct(both_ours, 99) / pct(both_theirs, 99):.2f}x   (targets: p50 <= 10 ms and <= 1.5x bare)"
    )
    for key, name in ((False, f"<= {COUNT_CAP:,} matches"), (True, f"> {COUNT_CAP:,} matches")):
        if ours[key]:
            print(f"  {len(ours[key]) // rounds} queries with {name}:")
            print(line("    Directory.search", ours[key]))
            print(line("    bare FTS5", theirs[key]))
    print(
        f"  (past {COUNT_CAP:,} matches Directory.search lists the matches newest first, unranked; bare ranks all)"
        f"\n  queries whose total differs from bare: {mismatched}"
    )


async def extras(directory: Directory, db: SQLiteDatabase, picked: list[tuple[str, int]], broad: list[str]) -> None:
    rng = random.Random(5)
    filtered: list[float] = []
    for text, _ in picked[:20]:
        query = SearchQuery(
            q=text,
            category=f"cat{rng.randrange(40)}" if rng.random() < 0.5 else "",
            max_price_sat=rng.choice([None, 100_000, 1_000_000]),
            ships_to=rng.choice(["", "DE", "JP"]),
        )
        for _ in range(3):
            t0 = time.perf_counter()
            await directory.search(query)
            filtered.append(time.perf_counter() - t0)
    print(line("Directory.search with filters", filtered))
    newest: list[float] = []
    for offset in (0, 20, 0, 40, 0):
        t0 = time.perf_counter()
        await directory.search(SearchQuery(offset=offset, ships_to="DE"))
        newest.append(time.perf_counter() - t0)
    print(line("empty query (newest, ships_to=DE)", newest))
    for text in broad[:3]:
        expr = match_expression(text)
        t0 = time.perf_counter()
        rows = await db.execute("SELECT count(*) FROM listings_fts WHERE listings_fts MATCH ?", (expr,))
        took = (time.perf_counter() - t0) * 1000
        print(f"exact count(*) of {text!r}: {rows[0][0]:,} matches in {took:.1f} ms (why the total is capped)")
    t0 = time.perf_counter()
    cats = await directory.categories()
    print(f"categories(): {len(cats)} in {(time.perf_counter() - t0) * 1000:.0f} ms (cached for 60 s after)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="listings to index (multiple of 50)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "pasar-bench-search"))
    parser.add_argument("--rebuild", action="store_true", help="build the databases again")
    parser.add_argument("--batch", type=int, default=200, help="stores per write transaction while building")
    args = parser.parse_args(argv)
    if not PER_STORE <= args.rows <= 5_000_000 or args.queries < 1 or args.rounds < 1:
        print("bench_search: --rows 50..5,000,000, --queries and --rounds >= 1", file=sys.stderr)
        return 2
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    directory_path, bare_path, done = paths(cache, args.rows)
    try:
        if args.rebuild or not done.exists():
            for stale in cache.glob(f"*{directory_path.stem.removeprefix('directory-')}*"):
                stale.unlink()
            asyncio.run(build(directory_path, bare_path, args.rows, max(1, args.batch)))
            done.touch()
        else:
            print(f"using the cached databases in {cache} (--rebuild to build again)")
        sizes = {p.name: p.stat().st_size for p in (directory_path, bare_path)}
        asyncio.run(measure(directory_path, bare_path, args.queries, args.rounds))
    except (BenchError, sqlite3.Error, OSError) as exc:
        print(f"bench_search: {exc}", file=sys.stderr)
        return 1
    for name, size in sizes.items():
        print(f"file size {name}: {size / 2**20:,.0f} MiB")
    print(f"RSS of this process: {rss_mib():,.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
