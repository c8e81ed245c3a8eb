"""Onion benchmarks on a private Tor network (127.0.0.1 only).

Run from the repository root::

    .venv/bin/python tests/bench/bench_onion.py
    .venv/bin/python tests/bench/bench_onion.py --stores 3 --requests 200 --concurrency 50

1. Starts the private network (node/testnet/: 3 authorities + 3 relays) and a
   buyer's tor, and reports how long that took.
2. With the network ready, starts ``pasar run`` (embedded tor joining the
   network) with ``--stores`` stores, and reports for each store the time from
   starting the process to its status ``published`` and to its onion answering
   a GET through the buyer's tor. Target: reachable <= 10 s after node start.
3. Latency of the storefront home page through the onion: ``--requests``
   sequential keep-alive requests, then the same number with ``--concurrency``
   in flight; p50/p95 and requests/s.

A benchmark, not a test: it prints figures and asserts nothing about timing.
Every process it starts is stopped by PID, every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from node.adapters.net import TorHttp, Unreachable  # noqa: E402
from node.testnet import TestNet  # noqa: E402
from tests.integration.conftest import Node, free_port, pasar  # noqa: E402

REACH_TIMEOUT = 60.0
REACH_ATTEMPTS = 1000


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def stores_status(node: Node) -> dict[str, str]:
    req = urllib.request.Request(node.admin_url + "/api/v1/stores", headers=node.auth)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return {s["onion"]: s["status"] for s in json.loads(resp.read())}
    except OSError:
        return {}


async def until_reachable(http: TorHttp, onion: str, started: float) -> float:
    url = f"http://{onion}.onion/"
    left = started + REACH_TIMEOUT - time.monotonic()
    try:  # retried every 0.2 s on new circuits until the deadline (more attempts than fit in it)
        reply = await http.get(url, deadline=left, attempts=REACH_ATTEMPTS, pauses=(0.2,), allow_redirects=True)
    except Unreachable as exc:
        raise SystemExit(f"{onion}.onion not reachable within {REACH_TIMEOUT:.0f}s: {exc.message}") from exc
    if reply.status != 200:
        raise SystemExit(f"{onion}.onion answered {reply.status}")
    return time.monotonic() - started


async def until_published(node: Node, onions: list[str], started: float) -> dict[str, float]:
    seen: dict[str, float] = {}
    while len(seen) < len(onions) and time.monotonic() < started + REACH_TIMEOUT:
        status = await asyncio.to_thread(stores_status, node)
        for onion in onions:
            if status.get(onion) == "published" and onion not in seen:
                seen[onion] = time.monotonic() - started
        await asyncio.sleep(0.1)
    return seen


async def latency(http: TorHttp, url: str, requests: int, concurrency: int) -> tuple[list[float], float]:
    times: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def worker() -> None:
        session = http.session(url)
        while not queue.empty():
            queue.get_nowait()
            t0 = time.perf_counter()
            async with session.get(url) as resp:
                await resp.read()
                if resp.status != 200:
                    raise SystemExit(f"GET {url}: {resp.status}")
            times.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout=300)
    return times, time.perf_counter() - start


def report(label: str, times: list[float], elapsed: float) -> None:
    ms = [t * 1000 for t in times]
    print(
        f"{label}: {len(ms)} requests, p50 {pct(ms, 50):.1f} ms, p95 {pct(ms, 95):.1f} ms, "
        f"mean {statistics.mean(ms):.1f} ms, {len(ms) / elapsed:.0f} req/s"
    )


async def measure(args: argparse.Namespace, net: TestNet, socks_port: int, work: Path) -> None:
    node = Node(work / "node", free_port())
    pasar(node.data_dir, "init")
    onions = [
        pasar(node.data_dir, "store", "create", f"Bench {i}").stdout.strip().removesuffix(".onion")
        for i in range(args.stores)
    ]
    node.run_args = ["--tor-extra-torrc", str(net.root / "member.torrc")]
    http = TorHttp(("127.0.0.1", socks_port), connections_per_store=args.concurrency)
    started = time.monotonic()
    node.start()
    try:
        print(f"node admin answering after {time.monotonic() - started:.2f}s")
        published = asyncio.create_task(until_published(node, onions, started))
        reach = await asyncio.gather(*(until_reachable(http, o, started) for o in onions))
        pub = await published
        for onion, seconds in zip(onions, reach, strict=True):
            shown = f"{pub[onion]:.2f}s" if onion in pub else "not seen"
            print(f"store {onion[:12]}…: published {shown}, first page through the onion {seconds:.2f}s")
        print(f"slowest store reachable {max(reach):.2f}s after `pasar run` (target <= 10 s)")
        url = f"http://{onions[0]}.onion/"
        await latency(http, url, args.concurrency * 2, args.concurrency)  # open the connections (streams) first
        report("sequential", *await latency(http, url, args.requests, 1))
        report(f"{args.concurrency} concurrent", *await latency(http, url, args.requests, args.concurrency))
        rss = Path(f"/proc/{node.proc.pid}/status").read_text() if node.proc else ""
        for line in rss.splitlines():
            if line.startswith("VmRSS"):
                print(f"node {line}")
    finally:
        await http.close()
        node.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", type=int, default=3)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    os.environ.setdefault("MALLOC_ARENA_MAX", "1")
    with tempfile.TemporaryDirectory(prefix="pasar-bench-onion-") as tmp:
        work = Path(tmp)
        net = TestNet(work / "net")
        t0 = time.monotonic()
        try:
            net.up()
            print(f"private network up (consensus with HSDirs) in {time.monotonic() - t0:.1f}s")
            t1 = time.monotonic()
            buyer = net.start_client("buyer")
            print(f"buyer tor bootstrapped in {time.monotonic() - t1:.1f}s")
            asyncio.run(measure(args, net, buyer.socks_port, work))
        finally:
            net.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
