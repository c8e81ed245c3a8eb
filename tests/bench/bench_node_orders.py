"""Node-to-node orders over the private Tor network: time from "place order" to "delivered".

Run from the repository root::

    .venv/bin/python tests/bench/bench_node_orders.py               # about 2 minutes
    .venv/bin/python tests/bench/bench_node_orders.py --orders 5

1. Brings up the private Tor network (node/testnet/), a regtest bitcoind (tests/regtest.py, wallets
   miner/buyer/vendor/moderator) and the three nodes of tests/integration/node_orders_world.py: vendor
   (one store, one listing), buyer (no store; its directory crawls the vendor) and a moderator, each on
   its own client tor.
2. ``--orders`` times, one after another: the buyer's node places an order (``POST /api/v1/purchases``);
   the clock starts when the POST returns and stops when the order message is ``delivered`` (the
   vendor's signed ack verified, read from the buyer's outbox every 20 ms). Also timed: until the
   vendor's escrow answer is verified at the buyer (state ``awaiting_payment``). The next order starts
   after that, so each one starts from a quiet pair of nodes.
3. The anchor (the issue names none): one plain HTTP round trip over the same onion through the
   buyer's tor (``GET /`` of the store, keep-alive, after a first request that builds the circuit),
   ``--orders`` times in the same run.

A benchmark, not a test: it prints figures and asserts nothing about timing. Every process it starts
is stopped by PID, every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from node.adapters.net import TorHttp  # noqa: E402
from node.core.errors import Unreachable  # noqa: E402
from node.testnet import TestNet  # noqa: E402
from tests.integration import node_orders_world as w  # noqa: E402
from tests.regtest import Regtest  # noqa: E402

DELIVER_TIMEOUT = 300.0
ESCROW_TIMEOUT = 300.0
POLL = 0.02
BUYER = ["--purchase-poll-interval", "2"]  # asks for the escrow answer every 2 s (default 60)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(label: str, seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (
        f"{label}: n={len(ms)} p50 {pct(ms, 50):.0f} ms, p95 {pct(ms, 95):.0f} ms, "
        f"mean {statistics.mean(ms):.0f} ms, min {min(ms):.0f} ms, max {max(ms):.0f} ms"
    )


def delivery(world: w.World, order: str) -> str:
    rows = [r for r in w.message_rows(world.buyer, "outbox") if r["order_id"] == order and r["kind"] == "order"]
    return str(rows[0]["delivery"]) if rows else ""


def one_order(world: w.World, i: int) -> tuple[float, float]:
    """Seconds from the POST returning to ``delivered``, and to the escrow verified at the buyer."""
    placed = world.place(f"Bench Street {i}")
    t0 = time.monotonic()
    order = placed["id"]
    delivered = escrow = 0.0
    deadline = t0 + DELIVER_TIMEOUT
    while time.monotonic() < deadline:
        if delivery(world, order) == w.DELIVERED:
            delivered = time.monotonic() - t0
            break
        time.sleep(POLL)
    else:
        raise SystemExit(f"order {order} not delivered within {DELIVER_TIMEOUT:.0f}s:\n{w.logs(world.nodes)}")
    view = w.wait_for(
        "the escrow at the buyer",
        lambda: (p := world.purchase(order))["state"] != "placed" and p["state"] != "queued" and p,
        world.nodes,
        ESCROW_TIMEOUT,
        pause=0.1,
    )
    escrow = time.monotonic() - t0
    if view["state"] != "awaiting_payment":
        raise SystemExit(f"order {order} ended {view['state']}: {view}")
    return delivered, escrow


async def anchor(world: w.World, requests: int) -> tuple[float, list[float]]:
    """The first GET (circuit built) and ``requests`` keep-alive GETs of the store's home page over its onion."""
    http = TorHttp(("127.0.0.1", world.tors["buyer"].socks_port))
    url = f"http://{world.store}.onion/"
    try:
        t0 = time.perf_counter()
        try:
            reply = await http.get(url, deadline=120, attempts=50)
        except Unreachable as exc:
            raise SystemExit(f"{url} not reachable: {exc.message}") from exc
        first = time.perf_counter() - t0
        if reply.status != 200:
            raise SystemExit(f"GET {url}: {reply.status}")
        times = []
        session = http.session(url)
        for _ in range(requests):
            t0 = time.perf_counter()
            async with session.get(url) as resp:
                await resp.read()
                if resp.status != 200:
                    raise SystemExit(f"GET {url}: {resp.status}")
            times.append(time.perf_counter() - t0)
        return first, times
    finally:
        await http.close()


def regtest(root: Path) -> Regtest:
    node = Regtest(root)
    node.start()
    for name in ("miner", "buyer", "vendor", "moderator"):
        node.create_wallet(name)
    node.mine(101, to_wallet="miner")
    return node


def measure(args: argparse.Namespace, world: w.World) -> None:
    fast = time.monotonic()
    w.start(world)
    print(f"three nodes up, moderator accepted, catalog crawled by the buyer in {time.monotonic() - fast:.1f}s")
    delivered, escrow = [], []
    for i in range(args.orders):
        d, e = one_order(world, i)
        delivered.append(d)
        escrow.append(e)
        print(f"order {i + 1:2d}: delivered {d * 1000:6.0f} ms, escrow verified at the buyer {e * 1000:6.0f} ms")
    first, plain = asyncio.run(anchor(world, args.orders))
    print()
    print(summary("place order -> delivered (order message acked)", delivered))
    print(summary("place order -> escrow verified at the buyer  ", escrow))
    print(summary("anchor: one plain HTTP GET over the same onion", plain))
    print(f"anchor's first GET (new circuit to the onion): {first * 1000:.0f} ms")
    print(f"ratio p50 delivered / p50 plain round trip: {pct(delivered, 50) / pct(plain, 50):.1f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=20)
    args = parser.parse_args()
    if args.orders < 1:
        parser.error("--orders must be at least 1")
    os.environ.setdefault("MALLOC_ARENA_MAX", "1")
    with tempfile.TemporaryDirectory(prefix="pasar-bench-orders-") as tmp:
        work = Path(tmp)
        net = TestNet(work / "net")
        core: Regtest | None = None
        world: w.World | None = None
        t0 = time.monotonic()
        try:
            net.up()
            core = regtest(work / "bitcoind")
            print(f"private network and regtest bitcoind up in {time.monotonic() - t0:.1f}s")
            world = w.build(net, core, work / "nodes", "bench", extra={"buyer": BUYER})
            measure(args, world)
        finally:
            if world is not None:
                w.stop(world)
            if core is not None:
                core.stop()
            net.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
