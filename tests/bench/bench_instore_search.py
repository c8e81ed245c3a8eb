"""In-store search benchmark: /search?q= on a real node with 10,000 listings in one store.

Run from the repository root::

    .venv/bin/python tests/bench/bench_instore_search.py               # about a minute
    .venv/bin/python tests/bench/bench_instore_search.py --seconds 5 --listings 2000   # quick look

It writes a CSV of generated listings, imports it with ``pasar listing import``
into a fresh data directory, starts ``pasar run --no-tor`` and loads the
store's ``/search?q=<two words + a number>`` with 8 concurrent keep-alive
clients, every request a different query (``wrk`` with a Lua script when it
is installed, else an aiohttp client in its own process). It prints the
requests per second, the node's CPU per request, and, in the same run, the
same queries against a bare in-memory SQLite FTS5 table (one thread), the
store's own index called directly, and the old scan, beside the anchor:
71 req/s and about 14 ms of CPU per query before the index (issue 9).
Target: >= 2,000 req/s.

The node searches with SQLite FTS5 when the app passes ``text_index`` to
``Market``. Until it does, ``--wiring auto`` starts the node through this
script with the FTS5 factory set as ``Market``'s default (``shim``), and says so.

This is a benchmark, not a test: it asserts nothing about timing and exits 0
unless something broke. Every process it starts is stopped by PID, every wait
is bounded, all traffic goes to 127.0.0.1, and the data directory is a
temporary one removed afterwards. pytest does not collect this file.

Internal modes (each in its own process):
    bench_instore_search.py _node ARGS...     the node, with FTS5 as Market's default
    bench_instore_search.py _client BASE PATHS --seconds S --concurrency C
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import procs
from bench_storefront import host_cpu, http, make_listings, proc_cpu
from procs import BenchError, pasar

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]
ANCHOR_RPS, ANCHOR_CPU_MS, TARGET_RPS = 71, 14.0, 2000
START_TIMEOUT = 60.0
PAGE_SIZE = 24
LUA = """
local paths, n = {}, 0
init = function(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  n = math.random(#paths)
end
request = function()
  n = n % #paths + 1
  return wrk.format("GET", paths[n])
end
"""


# -- data ------------------------------------------------------------------------
def write_csv(path: Path, listings: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["title", "price_sat", "kind", "category", "tags", "description"])
        for x in listings:
            out.writerow([x["title"], x["price_sat"], x["kind"], x["category"], ", ".join(x["tags"]), x["description"]])


def make_queries(listings: list[dict[str, Any]], count: int, seed: int = 9) -> list[str]:
    """Distinct "<two words + a number>" queries: an adjective and a topic of one title, and a number.

    Half take the listing's own number (a hit or a few), half a random one (mostly none).
    """
    rng, seen = random.Random(seed), set()
    while len(seen) < count:
        n = rng.randrange(len(listings))
        words = listings[n]["title"].split()
        number = n + 1 if rng.random() < 0.5 else rng.randrange(1, len(listings) + 1)
        seen.add(f"{words[0].lower()} {words[1].lower()} {number}")
    out = sorted(seen)
    rng.shuffle(out)
    return out


def search_text(x: dict[str, Any]) -> str:
    """What the store indexes for a listing (node.market.textsearch.doc)."""
    return " ".join([x["title"], x["category"], " ".join(x["tags"]), x["description"]]).casefold()


# -- in-process figures: bare FTS5, the store's index, the old scan --------------
def bare_fts5(texts: list[str], queries: list[str]) -> dict[str, float]:
    """The same queries on a plain FTS5 table: each word a quoted prefix, all ANDed, a page and a count."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(body, tokenize='unicode61 remove_diacritics 2')")
    conn.executemany("INSERT INTO t(rowid, body) VALUES (?, ?)", enumerate(texts))
    conn.execute("INSERT INTO t(t) VALUES ('optimize')")
    exprs = [" AND ".join('"' + w.replace('"', '""') + '"*' for w in q.casefold().split()) for q in queries]
    started, cpu = time.perf_counter(), time.process_time()
    for expr in exprs:
        conn.execute("SELECT rowid FROM t WHERE t MATCH ? ORDER BY rowid LIMIT ?", (expr, PAGE_SIZE)).fetchall()
        conn.execute("SELECT count(*) FROM t WHERE t MATCH ?", (expr,)).fetchone()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"qps": len(exprs) / wall, "cpu_us": 1e6 * cpu / len(exprs)}


def store_index(texts: list[str], queries: list[str], scan_sample: int) -> dict[str, float]:
    """The node's own index (node/adapters/textindex.py) and the old scan, called directly (one thread)."""
    sys.path.insert(0, str(REPO))
    from node.adapters.textindex import fts5_index
    from node.core.ports import TextDoc
    from node.market import textsearch

    docs = [TextDoc(t, "") for t in texts]
    t0 = time.perf_counter()
    index = fts5_index(docs)
    build_s = time.perf_counter() - t0
    words = [textsearch.words(q) for q in queries]
    started, cpu = time.perf_counter(), time.process_time()
    for w in words:
        index.search(w, category=None, offset=0, limit=PAGE_SIZE)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    scan = textsearch.ScanIndex(docs)
    sample = words[:scan_sample]
    s0 = time.perf_counter()
    for w in sample:
        scan.search(w, category=None, offset=0, limit=PAGE_SIZE)
    scan_s = time.perf_counter() - s0
    return {
        "qps": len(words) / wall,
        "cpu_us": 1e6 * cpu / len(words),
        "build_s": build_s,
        "scan_qps": len(sample) / scan_s if scan_s else float("nan"),
    }


# -- the node ------------------------------------------------------------------------
def app_wires_fts5() -> bool:
    """Whether node/app passes a text index to Market (else the node would scan)."""
    app = REPO / "node" / "app"
    sources = [p.read_text() for p in (app.rglob("*.py") if app.is_dir() else [REPO / "node" / "app.py"])]
    return any("text_index=" in s for s in sources)


def node_main(argv: list[str]) -> int:
    """``pasar ARGS`` with SQLite FTS5 as Market's default index factory (bench only)."""
    sys.path.insert(0, str(REPO))
    from node.adapters.textindex import fts5_index
    from node.cli import main
    from node.market.market import Market

    defaults = Market.__init__.__kwdefaults__
    if defaults is None or "text_index" not in defaults:
        print("Market has no text_index argument: nothing to wire", file=sys.stderr)
        return 2
    defaults["text_index"] = fts5_index
    return main(argv)


def running_node(data_dir: Path, shim: bool) -> contextlib.AbstractContextManager[tuple[subprocess.Popen[bytes], int]]:
    head = [sys.executable, str(HERE), "_node"] if shim else [sys.executable, "-m", "node"]
    return procs.running_node(data_dir, head, start_timeout=START_TIMEOUT)


def store_url(data_dir: Path, admin_port: int) -> str:
    token = (data_dir / "admin.token").read_text().strip()
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        _, body = http(
            "GET", f"http://127.0.0.1:{admin_port}/api/v1/stores", headers={"Authorization": f"Bearer {token}"}
        )
        stores = json.loads(body)
        if stores and stores[0].get("local_url"):
            return str(stores[0]["local_url"]).rstrip("/")
        if time.monotonic() > deadline:
            raise BenchError(f"the store has no local listener: {stores}")
        time.sleep(0.1)


# -- load ----------------------------------------------------------------------------
def run_wrk(base: str, paths: Path, seconds: float, concurrency: int, work: Path) -> dict[str, Any]:
    script = work / "queries.lua"
    script.write_text(LUA)
    cmd = ["wrk", f"-t{min(2, concurrency)}", f"-c{concurrency}", f"-d{seconds:g}s", "-s", str(script),
           base, "--", str(paths)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise BenchError(f"wrk failed: {out.stderr.strip()[-500:]}")
    done = re.search(r"(\d+) requests in ([\d.]+)s", out.stdout)
    if done is None:
        raise BenchError(f"unexpected wrk output:\n{out.stdout}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out.stdout)
    errors = re.search(r"Socket errors: (.*)", out.stdout)
    latency = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", out.stdout)
    return {
        "requests": int(done.group(1)),
        "seconds": float(done.group(2)),
        "bad": int(bad.group(1)) if bad else 0,
        "errors": errors.group(1) if errors else "",
        "latency": f"avg {latency.group(1)}, max {latency.group(3)}" if latency else "",
    }


async def _client(base: str, paths: list[str], seconds: float, concurrency: int) -> dict[str, Any]:
    import aiohttp

    done = bad = 0
    n = random.randrange(len(paths))
    started = time.perf_counter()
    end = started + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            nonlocal done, bad, n
            while time.perf_counter() < end:
                n = (n + 1) % len(paths)
                async with session.get(base + paths[n]) as response:
                    await response.read()
                done, bad = done + 1, bad + (response.status != 200)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"requests": done, "seconds": time.perf_counter() - started, "bad": bad, "errors": "", "latency": ""}


def client_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench_instore_search.py _client")
    p.add_argument("base")
    p.add_argument("paths", type=Path)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--concurrency", type=int, required=True)
    a = p.parse_args(argv)
    if not a.base.startswith("http://127.0.0.1:"):
        raise SystemExit("the load client only talks to 127.0.0.1")
    paths = a.paths.read_text().splitlines()
    print(json.dumps(asyncio.run(_client(a.base, paths, a.seconds, a.concurrency))))
    return 0


def load(base: str, paths: Path, seconds: float, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    if args.client == "wrk":
        return run_wrk(base, paths, seconds, args.concurrency, work)
    cmd = [sys.executable, str(HERE), "_client", base, str(paths), "--seconds", str(seconds),
           "--concurrency", str(args.concurrency)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise BenchError(f"load client failed: {out.stderr.strip()[-500:]}")
    return dict(json.loads(out.stdout))


# -- the run -------------------------------------------------------------------------
def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    listings = make_listings(args.listings, seed=1)
    queries = make_queries(listings, args.queries)
    paths = work / "paths.txt"
    paths.write_text("".join(f"/search?q={q.replace(' ', '+')}\n" for q in queries))
    write_csv(work / "listings.csv", listings)
    data_dir = work / "data"
    env = {"PASAR_STORE_PORT_BASE": "0", "PASAR_LOG_LEVEL": "warning"}
    pasar(data_dir, "init", **env)
    pasar(data_dir, "store", "create", "Bench", **env)
    t0 = time.perf_counter()
    pasar(data_dir, "listing", "import", "--store", "Bench", str(work / "listings.csv"), **env)
    print(f"  imported {args.listings} listings in {time.perf_counter() - t0:.1f} s", flush=True)
    shim = args.wiring == "shim" or (args.wiring == "auto" and not app_wires_fts5())
    with running_node(data_dir, shim) as (proc, admin_port):
        base = store_url(data_dir, admin_port)
        t1 = time.perf_counter()
        status, body = http("GET", f"{base}/search?q={queries[0].replace(' ', '+')}")
        first_s = time.perf_counter() - t1
        if status != 200 or b"Results for" not in body:
            raise BenchError(f"{base}/search answered {status}")
        load(base, paths, args.warmup, args, work)  # warm-up: cards rendered, thread started
        cpu0, host0 = proc_cpu(proc.pid), host_cpu()
        result = load(base, paths, args.seconds, args, work)
        cpu = proc_cpu(proc.pid) - cpu0
        host = [b - a for a, b in zip(host0, host_cpu(), strict=False)]
        home = work / "home.txt"  # the floor: the same node's cached home page, same client, same moment
        home.write_text("/\n")
        cpu1 = proc_cpu(proc.pid)
        floor = load(base, home, min(5.0, args.seconds), args, work)
        floor["cpu_ms"] = 1e3 * (proc_cpu(proc.pid) - cpu1) / max(1, floor["requests"])
        if proc.poll() is not None:
            raise BenchError("the node died during the benchmark")
    texts = [search_text(x) for x in listings]
    return {
        **result,
        "rps": result["requests"] / result["seconds"],
        "cpu_ms": 1e3 * cpu / max(1, result["requests"]),
        "cpu_share": cpu / result["seconds"],
        "host_busy": 1 - (host[3] + host[4]) / max(1, sum(host[:8])),
        "first_s": first_s,
        "shim": shim,
        "floor": floor,
        "bare": bare_fts5(texts, queries[: args.inprocess]),
        "index": store_index(texts, queries[: args.inprocess], scan_sample=50),
    }


def row(label: str, rate: float, cpu_ms: float, note: str) -> str:
    return f"{label:34}{rate:>10.0f}{cpu_ms:>11.3f} ms  ({note})"


def summary(args: argparse.Namespace, r: dict[str, Any]) -> list[str]:
    bare, index = r["bare"], r["index"]
    verdict = "meets" if r["rps"] >= TARGET_RPS else "MISSES"
    wiring = (
        "FTS5 (wired by this script: node/app does not pass text_index yet)" if r["shim"] else "as the app wires it"
    )
    return [
        "",
        "=" * 78,
        f"Pasar in-store search: 1 store x {args.listings} listings, distinct /search?q=<two words + a number>",
        f"{'':34}{'req/s':>10}{'CPU/query':>14}",
        f"{'before (issue 9 anchor)':34}{ANCHOR_RPS:>10}{ANCHOR_CPU_MS:>11.2f} ms",
        row(f"node /search now ({args.concurrency} clients)", r["rps"], r["cpu_ms"], "node process, HTTP"),
        row(
            "cached home page (same node)",
            r["floor"]["requests"] / r["floor"]["seconds"],
            r["floor"]["cpu_ms"],
            "HTTP floor, no search",
        ),
        row("bare SQLite FTS5 (same queries)", bare["qps"], bare["cpu_us"] / 1e3, "1 thread, no HTTP"),
        row("store index direct (same queries)", index["qps"], index["cpu_us"] / 1e3, "1 thread, no HTTP"),
        f"{'old scan direct (50 queries)':34}{index['scan_qps']:>10.0f}",
        f"target >= {TARGET_RPS} req/s: {verdict} ({r['rps'] / ANCHOR_RPS:.0f}x the anchor)",
        "-" * 78,
        f"  search index: {wiring}; built in {index['build_s']:.2f} s; first search (snapshot + index "
        f"build) {r['first_s']:.2f} s",
        f"  load: {args.client}, {args.seconds:g} s after a {args.warmup:g} s warm-up; {r['requests']} requests, "
        f"{r['bad']} not 200 {r['errors']} {r['latency']}",
        f"  node CPU {r['cpu_share']:.0%} of one core; whole machine busy {r['host_busy']:.0%} "
        "(the load client and anything else running share the 2 cores)",
        "=" * 78,
    ]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_node"]:
        return node_main(argv[1:])
    if argv[:1] == ["_client"]:
        return client_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listings", type=int, default=10_000, help="listings in the store (default 10,000)")
    p.add_argument("--seconds", type=float, default=15.0, help="measured seconds (default 15)")
    p.add_argument("--warmup", type=float, default=3.0, help="unmeasured warm-up seconds (default 3)")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent keep-alive clients (default 8)")
    p.add_argument("--queries", type=int, default=50_000, help="distinct queries cycled through (default 50,000)")
    p.add_argument("--inprocess", type=int, default=5_000, help="queries for the in-process figures (default 5,000)")
    p.add_argument("--client", choices=("wrk", "aiohttp"), default="wrk" if shutil.which("wrk") else "aiohttp")
    p.add_argument("--wiring", choices=("auto", "app", "shim"), default="auto", help="see the module docstring")
    args = p.parse_args(argv)
    if not (100 <= args.listings <= 100_000 and 0 < args.seconds <= 600 and 1 <= args.concurrency <= 256):
        p.error("--listings 100-100000, --seconds (0, 600], --concurrency 1-256")
    args.queries = min(args.queries, args.listings * 20)
    args.inprocess = min(args.inprocess, args.queries)
    work = Path(tempfile.mkdtemp(prefix="pasar-bench-instore-"))
    try:
        result = measure(args, work)
    except BenchError as exc:
        print(f"bench_instore_search: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(summary(args, result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
