"""Storefront benchmarks: throughput of a store's home page, and node memory.

Run from the repository root::

    .venv/bin/python tests/bench/bench_storefront.py                  # both parts
    .venv/bin/python tests/bench/bench_storefront.py --only rps       # part A only
    .venv/bin/python tests/bench/bench_storefront.py --only rss       # part B only
    .venv/bin/python tests/bench/bench_storefront.py --seconds 10 --concurrency 32

Part A (rps): a fresh node with one store of 100 listings; GET <local_url>/
with a keep-alive load client, compared with a bare aiohttp "hello" server
measured by the very same client in the same run. Target: ratio >= 50%.

Part B (rss): a fresh node with 3 stores x 1,000 listings (added through the
admin API); every store's pages are fetched once to warm the caches, then the
node's resident memory (VmRSS) is read. Target: <= 100 MB.

This is a benchmark, not a test: it asserts nothing about timing and exits 0
unless something broke. Every process it starts is stopped by PID, every wait
is bounded, and all traffic goes to 127.0.0.1. pytest does not collect this
file (norecursedirs in pyproject.toml; the name does not start with test_).

Internal modes (used by the script itself, each in its own process):
    bench_storefront.py _client URL --seconds S --warmup W --concurrency C --max-requests N
    bench_storefront.py _hello PORT
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from procs import BenchError, free_port, node_env, pasar, port_open, stop_process

START_TIMEOUT = 30.0
MAX_REQUESTS = 2_000_000
RPS_TARGET = 0.50
RSS_TARGET_MB = 100.0
BATCH = 200
HERE = Path(__file__).resolve()
REPO = HERE.parents[2]


# -- helpers -----------------------------------------------------------------


_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 120) -> Any:
    """One request to 127.0.0.1; returns (status, bytes). Raises BenchError on anything else."""
    if not url.startswith("http://127.0.0.1:"):
        raise BenchError(f"refusing non-loopback URL {url}")
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with _HTTP.open(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        raise BenchError(f"{method} {url} -> {exc.code}: {exc.read()[:500]!r}") from None
    except OSError as exc:
        raise BenchError(f"{method} {url} failed: {exc}") from None


# -- realistic listings ------------------------------------------------------
CATEGORIES = {
    "E-books": ["guide", "handbook", "novel", "cookbook", "manual", "workbook"],
    "Software": ["license", "plugin", "theme", "script pack", "toolkit", "template"],
    "Music": ["album", "EP", "sample pack", "single", "loop kit", "soundtrack"],
    "Courses": ["video course", "workshop", "masterclass", "lesson set", "bootcamp", "tutorial series"],
    "Art": ["print file", "wallpaper set", "icon pack", "brush set", "font", "illustration"],
}
ADJECTIVES = [
    "Complete", "Practical", "Minimal", "Advanced", "Handmade", "Vintage", "Modern", "Essential",
    "Deluxe", "Pocket", "Illustrated", "Annotated", "Portable", "Classic", "Open", "Quiet",
]  # fmt: skip
TOPICS = [
    "Bitcoin", "sourdough", "Linux", "watercolor", "Rust", "privacy", "gardening", "chess",
    "photography", "jazz guitar", "woodworking", "Python", "astronomy", "typography", "yoga", "mushrooms",
]  # fmt: skip
SENTENCES = [
    "This item is delivered as a download link right after payment confirms.",
    "Includes lifetime updates and a plain-text changelog.",
    "Written for beginners but useful to experienced readers too.",
    "No account, no tracking, no DRM: the files are yours.",
    "Every purchase comes with a short setup note and a checksum file.",
    "Tested on current versions; older ones may need small changes.",
    "Questions are answered through the store's contact channel within a day.",
    "The sample in the listing shows the style and quality you get.",
    "Made by an independent creator and sold directly, without a middleman.",
    "A portion of each sale supports free and open-source projects.",
]


def make_listings(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    names = list(CATEGORIES)
    out = []
    for n in range(count):
        category = names[n % len(names)]
        noun = rng.choice(CATEGORIES[category])
        topic = rng.choice(TOPICS)
        title = f"{rng.choice(ADJECTIVES)} {topic} {noun} #{n + 1}"
        text = f"{title}. "
        while len(text) < 200:
            text += rng.choice(SENTENCES) + " "
        tags = sorted({topic.lower(), noun.lower(), category.lower()})
        out.append(
            {
                "title": title,
                "price_sat": rng.randrange(1_000, 5_000_000),
                "kind": "digital",
                "description": text[:220].strip(),
                "category": category,
                "tags": tags,
            }
        )
    return out


# -- the node ----------------------------------------------------------------
class Node:
    """A ``pasar run --no-tor`` process on a fresh data dir under ``root``."""

    def __init__(self, root: Path) -> None:
        self.data_dir = root / "data"
        self.admin_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}/api/v1"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": "Bearer " + (self.data_dir / "admin.token").read_text().strip()}

    def log_tail(self) -> str:
        path = self.data_dir / "node.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"

    def init(self) -> None:
        pasar(self.data_dir, "init")

    def start(self) -> None:
        self._log = open(self.data_dir / "node.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node", "run", "--no-tor", "--admin-port", str(self.admin_port)],
            env=node_env(self.data_dir, PASAR_STORE_PORT_BASE="0", PASAR_LOG_LEVEL="warning"),
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )
        deadline = time.monotonic() + START_TIMEOUT
        for _ in range(1000):
            if self.proc.poll() is not None:
                raise BenchError(f"node exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            if self._lock_pid() == self.proc.pid and port_open(self.admin_port):
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        raise BenchError(f"node did not start within {START_TIMEOUT:.0f}s:\n{self.log_tail()}")

    def _lock_pid(self) -> object:
        try:
            return json.loads((self.data_dir / "node.lock").read_text() or "{}").get("pid")
        except (OSError, ValueError, AttributeError):
            return None

    def stop(self) -> None:
        try:
            stop_process(self.proc)
        finally:
            self.proc = None
            if self._log is not None:
                self._log.close()
                self._log = None

    def create_store(self, name: str) -> dict[str, Any]:
        status, body = http("POST", f"{self.api}/stores", {"name": name, "description": f"{name}: a bench store"},
                            self.auth)  # fmt: skip
        if status != 201:
            raise BenchError(f"POST /stores -> {status}")
        store = json.loads(body)
        if not store.get("local_url"):
            raise BenchError(f"store {store.get('onion')} has no local listener: {store.get('status')}")
        return dict(store)

    def add_listings(self, onion: str, listings: list[dict[str, Any]]) -> None:
        for start in range(0, len(listings), BATCH):
            chunk = listings[start : start + BATCH]
            status, body = http("POST", f"{self.api}/stores/{onion}/listings", {"listings": chunk}, self.auth)
            if status != 201 or len(json.loads(body)) != len(chunk):
                raise BenchError(f"adding listings to {onion}: status {status}")

    def rss_kb(self, field: str = "VmRSS") -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise BenchError(f"no {field} in /proc/{self.proc.pid}/status")


@contextlib.contextmanager
def fresh_node(prefix: str) -> Iterator[Node]:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    node = Node(root)
    try:
        node.init()
        node.start()
        yield node
    finally:
        try:
            node.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


# -- bare aiohttp server (own process) ---------------------------------------
def hello_main(port: int) -> int:
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def serve() -> None:
        app = web.Application()
        app.router.add_get("/", hello)
        # No access log, like the node's store listeners.
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(serve())
    return 0


@contextlib.contextmanager
def hello_server() -> Iterator[tuple[str, int]]:
    """The bare aiohttp server in its own process; yields (url, pid)."""
    port = free_port()
    with tempfile.TemporaryFile() as errlog:
        proc = subprocess.Popen(
            [sys.executable, str(HERE), "_hello", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errlog,
            cwd=REPO,
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            for _ in range(1000):
                if proc.poll() is not None:
                    errlog.seek(0)
                    err = errlog.read().decode(errors="replace")
                    raise BenchError(f"hello server exited with {proc.returncode}: {err[-2000:]}")
                if port_open(port):
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"hello server did not start within {START_TIMEOUT:.0f}s")
                time.sleep(0.05)
            else:
                raise BenchError("hello server did not start")
            yield f"http://127.0.0.1:{port}/", proc.pid
        finally:
            stop_process(proc)


# -- load client (own process) -------------------------------------------------
BUCKET_US = 10  # latency histogram resolution


async def _load(url: str, seconds: float, warmup: float, concurrency: int, max_requests: int) -> dict[str, Any]:
    import aiohttp

    hist: dict[int, int] = {}  # latency bucket (BUCKET_US) -> count, measured window only
    ok = errors = started = done_total = 0
    error_samples: list[str] = []
    clock = time.perf_counter
    t0 = clock()
    measure_from = t0 + warmup
    deadline = measure_from + seconds
    last_done = measure_from
    cpu_at: dict[str, float] = {}

    async def cpu_marks() -> None:
        """This client's own CPU time over the measured window (is the client the bottleneck?)."""
        await asyncio.sleep(max(0.0, measure_from - clock()))
        cpu_at["start"] = time.process_time()
        await asyncio.sleep(max(0.0, deadline - clock()))
        cpu_at["end"] = time.process_time()

    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal ok, errors, started, done_total, last_done
            while started < max_requests:
                begin = clock()
                if begin >= deadline:
                    return
                started += 1
                good, problem = False, ""
                try:
                    async with session.get(url) as resp:
                        await resp.read()
                        good, problem = resp.status == 200, f"status {resp.status}"
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                end = clock()
                done_total += 1
                if not good:  # counted during the warm-up too
                    errors += 1
                    if len(error_samples) < 5:
                        error_samples.append(problem)
                    await asyncio.sleep(0.01)  # a dead server must not turn this into a busy loop
                    continue
                if begin >= measure_from:
                    ok += 1
                    last_done = max(last_done, end)
                    bucket = int((end - begin) * 1e6) // BUCKET_US
                    hist[bucket] = hist.get(bucket, 0) + 1

        marks = asyncio.create_task(cpu_marks())
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        marks.cancel()

    elapsed = max(last_done - measure_from, 1e-9)
    client_cpu = cpu_at.get("end", time.process_time()) - cpu_at.get("start", 0.0)
    return {
        "ok": ok,
        "errors": errors,
        "error_samples": error_samples,
        "elapsed": elapsed,
        "done_total": done_total,
        "capped": started >= max_requests,
        "client_cpu": client_cpu,
        "hist": {str(k): v for k, v in hist.items()},
    }


def client_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench_storefront.py _client")
    p.add_argument("url")
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--warmup", type=float, required=True)
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--max-requests", type=int, required=True)
    a = p.parse_args(argv)
    if not a.url.startswith("http://127.0.0.1:"):
        print("the load client only talks to 127.0.0.1", file=sys.stderr)
        return 2
    result = asyncio.run(_load(a.url, a.seconds, a.warmup, a.concurrency, a.max_requests))
    print(json.dumps(result))
    return 0


def proc_cpu(pid: int) -> float:
    """user+system CPU seconds of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def host_cpu() -> list[int]:
    """The aggregate "cpu" line of /proc/stat (user nice system idle iowait irq softirq steal ...)."""
    return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]


def run_client(url: str, server_pid: int, seconds: float, args: argparse.Namespace) -> dict[str, Any]:
    """Run the load client in its own process (the same code for every target)."""
    cmd = [
        sys.executable, str(HERE), "_client", url,
        "--seconds", str(seconds), "--warmup", str(args.warmup),
        "--concurrency", str(args.concurrency), "--max-requests", str(args.max_requests),
    ]  # fmt: skip
    cpu0, host0 = proc_cpu(server_pid), host_cpu()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        out, err = proc.communicate(timeout=args.warmup + seconds + 60)
    except subprocess.TimeoutExpired:
        raise BenchError(f"load client for {url} did not finish in time") from None
    finally:
        stop_process(proc)
    if proc.returncode != 0:
        raise BenchError(f"load client for {url} failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    result = dict(json.loads(out))
    host1 = host_cpu()
    delta = [b - a for a, b in zip(host0, host1, strict=False)]
    result["server_cpu"] = proc_cpu(server_pid) - cpu0  # over warm-up + measurement, like done_total
    result["steal"] = delta[7] / max(1, sum(delta[:8])) if len(delta) > 7 else 0.0
    return result


def merge(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine the rounds of one target: throughput over the summed windows, percentiles over all samples."""
    hist: dict[int, int] = {}
    for r in rounds:
        for k, v in r["hist"].items():
            hist[int(k)] = hist.get(int(k), 0) + v
    ok = sum(r["ok"] for r in rounds)
    elapsed = sum(r["elapsed"] for r in rounds)
    done_total = sum(r["done_total"] for r in rounds)

    def pct(p: float) -> float:
        if not ok:
            return float("nan")
        rank, seen = max(1, math.ceil(p * ok)), 0
        for bucket in sorted(hist):
            seen += hist[bucket]
            if seen >= rank:
                return (bucket + 0.5) * BUCKET_US / 1000
        return float("nan")

    server_us = 1e6 * sum(r["server_cpu"] for r in rounds) / max(1, done_total)
    return {
        "ok": ok,
        "errors": sum(r["errors"] for r in rounds),
        "error_samples": [s for r in rounds for s in r["error_samples"]][:5],
        "elapsed": elapsed,
        "rps": ok / elapsed if elapsed else 0.0,
        "round_rps": [r["ok"] / r["elapsed"] for r in rounds],
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "capped": any(r["capped"] for r in rounds),
        "server_us_per_req": server_us,
        # CPU per request x requests per second = share of one core the server used under load.
        "server_cpu_share": server_us * 1e-6 * (ok / elapsed if elapsed else 0.0),
        "client_cpu_share": sum(r["client_cpu"] for r in rounds) / max(1e-9, elapsed),
        "steal": statistics.fmean(r["steal"] for r in rounds),
    }


# -- part A: throughput ------------------------------------------------------
def part_rps(args: argparse.Namespace) -> dict[str, Any]:
    print(f"[rps] starting a node with 1 store x {args.listings} listings and a bare aiohttp server ...", flush=True)
    with fresh_node("pasar-bench-rps-") as node, hello_server() as (hello_url, hello_pid):
        assert node.proc is not None
        store = node.create_store("Bench Store")
        node.add_listings(store["onion"], make_listings(args.listings, seed=1))
        home = store["local_url"].rstrip("/") + "/"
        status, body = http("GET", home)
        if status != 200 or f"{args.listings} items" not in body.decode("utf-8", errors="replace"):
            raise BenchError(f"storefront home page at {home} does not show {args.listings} items")
        store_bytes = len(body)
        status, body = http("GET", hello_url)
        if status != 200 or body != b"hello":
            raise BenchError(f"bare aiohttp server at {hello_url} answered {status} {body[:100]!r}")

        targets = {"store": (home, node.proc.pid), "hello": (hello_url, hello_pid)}
        # ABBA order (store, hello, hello, store, ...) so slow drift in the machine's speed hits both alike.
        order = [("store", "hello") if n % 2 == 0 else ("hello", "store") for n in range(args.rounds)]
        per_round = args.seconds / args.rounds
        results: dict[str, list[dict[str, Any]]] = {"store": [], "hello": []}
        print(f"[rps] storefront home {home} ({store_bytes} bytes) vs {hello_url}: {args.rounds} round(s) of "
              f"{per_round:g}s per target, concurrency {args.concurrency}", flush=True)  # fmt: skip
        for n, pair in enumerate(order, 1):
            for name in pair:
                url, pid = targets[name]
                r = run_client(url, pid, per_round, args)
                results[name].append(r)
                print(
                    f"[rps]   round {n} {name:5}: {r['ok'] / r['elapsed']:7.0f} req/s  errors {r['errors']}", flush=True
                )
                if node.proc.poll() is not None:
                    raise BenchError(f"the node died during the benchmark:\n{node.log_tail()}")
    return {"store": merge(results["store"]), "hello": merge(results["hello"]), "store_bytes": store_bytes}


# -- part B: memory ------------------------------------------------------------
def part_rss(args: argparse.Namespace) -> dict[str, Any]:
    stores, per_store = 3, args.rss_listings
    print(f"[rss] starting a node with {stores} stores x {per_store} listings ...", flush=True)
    with fresh_node("pasar-bench-rss-") as node:
        rss_start = node.rss_kb()
        created = [node.create_store(f"Bench Store {n + 1}") for n in range(stores)]
        t0 = time.perf_counter()
        for n, store in enumerate(created):
            node.add_listings(store["onion"], make_listings(per_store, seed=100 + n))
        insert_s = time.perf_counter() - t0
        rss_after_insert = node.rss_kb()
        paths = ["/", *(f"/?page={p}" for p in range(1, 6)), "/search?q=item", "/.well-known/pasar/catalog.json"]
        fetched = 0
        t1 = time.perf_counter()
        for store in created:
            base = store["local_url"].rstrip("/")
            for path in paths:
                status, body = http("GET", base + path)
                if status != 200 or not body:
                    raise BenchError(f"GET {base}{path} -> {status}")
                fetched += 1
        warm_s = time.perf_counter() - t1
        rss = node.rss_kb()
        hwm = node.rss_kb("VmHWM")
    return {
        "stores": stores,
        "per_store": per_store,
        "insert_s": insert_s,
        "warm_s": warm_s,
        "fetched": fetched,
        "rss_start_mb": rss_start / 1024,
        "rss_after_insert_mb": rss_after_insert / 1024,
        "rss_mb": rss / 1024,
        "hwm_mb": hwm / 1024,
    }


# -- summary -----------------------------------------------------------------
def _line(label: str, r: dict[str, Any]) -> str:
    capped = "  (request cap reached)" if r["capped"] else ""
    return (
        f"{label:<32}{r['rps']:6.0f} req/s  p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms  "
        f"errors {r['errors']}{capped}"
    )


def summary(args: argparse.Namespace, rps: dict[str, Any] | None, rss: dict[str, Any] | None) -> list[str]:
    """The headline figures first, then the details that say how far to trust them."""
    head: list[str] = []
    detail: list[str] = []
    if rps is not None:
        s, h = rps["store"], rps["hello"]
        ratio = s["rps"] / h["rps"] if h["rps"] else float("nan")
        cpu_ratio = h["server_us_per_req"] / s["server_us_per_req"] if s["server_us_per_req"] else float("nan")
        head += [
            _line(f"storefront home ({args.listings} listings):", s),
            _line("bare aiohttp hello:", h),
            f"ratio: {ratio:.0%} (target >= {RPS_TARGET:.0%})",
        ]
        per_round = ", ".join(f"{x:.0f}" for x in s["round_rps"]), ", ".join(f"{x:.0f}" for x in h["round_rps"])
        detail += [
            f"load: {args.seconds:g}s per target in {args.rounds} round(s) (ABBA), each after a {args.warmup:g}s "
            f"warm-up; concurrency {args.concurrency}, keep-alive; home page {rps['store_bytes']} bytes",
            f"req/s per round: storefront {per_round[0]}; hello {per_round[1]}",
            f"server CPU per request: storefront {s['server_us_per_req']:.0f} us, "
            f"hello {h['server_us_per_req']:.0f} us (CPU-cost ratio {cpu_ratio:.0%})",
            f"CPU busy, % of one core (storefront / hello): server {s['server_cpu_share']:.0%} / "
            f"{h['server_cpu_share']:.0%}, client {s['client_cpu_share']:.0%} / {h['client_cpu_share']:.0%}; "
            f"host steal {max(s['steal'], h['steal']):.1%}",
        ]
        for label, r in (("storefront", s), ("hello", h)):
            detail += [f"{label} error sample: {sample}" for sample in r["error_samples"]]
    if rss is not None:
        head.append(
            f"node RSS with {rss['stores']} stores x {rss['per_store']} listings: {rss['rss_mb']:.1f} MB "
            f"(target <= {RSS_TARGET_MB:.0f} MB)"
        )
        detail += [
            f"inserting {rss['stores'] * rss['per_store']} listings via the API (batches of {BATCH}): "
            f"{rss['insert_s']:.2f} s; warming {rss['fetched']} pages: {rss['warm_s']:.2f} s",
            f"node RSS at start {rss['rss_start_mb']:.1f} MB, after inserts {rss['rss_after_insert_mb']:.1f} MB, "
            f"peak (VmHWM) {rss['hwm_mb']:.1f} MB",
        ]
    rule = "=" * 78
    title = f"Pasar storefront benchmark (cpus: {os.cpu_count()}, python {sys.version.split()[0]})"
    return ["", rule, title, *head, "-" * 78, *(f"  {d}" for d in detail), rule]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_client"]:
        return client_main(argv[1:])
    if argv[:1] == ["_hello"]:
        return hello_main(int(argv[1]))

    p = argparse.ArgumentParser(description="Pasar storefront benchmarks (throughput and memory).")
    p.add_argument("--only", choices=("rps", "rss"), help="run only one part (default: both)")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per target (default 10)")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured warm-up seconds (default 1)")
    p.add_argument("--concurrency", type=int, default=32, help="client connections/workers (default 32)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per target, ABBA order (default 2)")
    p.add_argument("--max-requests", type=int, default=MAX_REQUESTS, help="cap on requests per client run")
    p.add_argument("--listings", type=int, default=100, help="listings in the throughput store (default 100)")
    p.add_argument("--rss-listings", type=int, default=1000, help="listings per store for the memory part")
    args = p.parse_args(argv)
    if not (0 < args.seconds <= 600 and 0 <= args.warmup <= 60 and 1 <= args.concurrency <= 1000):
        p.error("--seconds must be in (0, 600], --warmup in [0, 60], --concurrency in [1, 1000]")
    if not (1 <= args.rounds <= 20 and args.max_requests >= 1):
        p.error("--rounds must be 1-20 and --max-requests at least 1")

    rps = rss = None
    try:
        if args.only in (None, "rps"):
            rps = part_rps(args)
        if args.only in (None, "rss"):
            rss = part_rss(args)
    except BenchError as exc:
        print(f"bench_storefront: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_storefront: interrupted", file=sys.stderr)
        return 130
    print("\n".join(summary(args, rps, rss)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
