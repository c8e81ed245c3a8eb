"""Gossip convergence benchmark: 1,000 simulated nodes running the real gossip code in one process.

Run from the repository root::

    .venv/bin/python tests/bench/bench_gossip.py                 # 1,000 nodes, about 1-2 minutes
    .venv/bin/python tests/bench/bench_gossip.py --nodes 200     # quick look

Every node is a real ``node.discovery.gossip.Gossip`` with its real
``handle``; the transport hands each request's bytes to the peer's
``handle`` in the same process (no Tor, no sockets). Each node's
``gossip.sqlite`` is a SQLite database in memory behind a small synchronous
``ports.Database`` (the real adapter runs one writer and one reader thread
per database: 2,000 threads for 1,000 nodes would measure the threads).

Setup: each node starts knowing 3 others (a ring plus 2 random) and learns
more from gossip; ``--background`` announcements are spread first and
``--warmup`` rounds let peer tables and cursors settle. Then one node
receives a new announcement and all nodes run rounds (the clock moves one
interval per round) until every node holds it.

Printed: rounds until 50%, 99% and 100% of nodes hold it (target: 99% in
<= 13 rounds) beside the epidemic bound log2 N + ln ln N; bytes each node
sent per round (its requests plus its answers) during those rounds, mean
and max (target <= 64 KiB); and a steady-state round with nothing new.

This is a benchmark, not a test: it asserts nothing about timing; it exits
non-zero with a one-line reason only if something broke (the announcement
never reaches everyone within --max-rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from procs import BenchError

from node.adapters.gossip_schema import MIGRATIONS
from node.adapters.sqlite_schema import migrate
from node.core.crypto import StoreKey
from node.core.errors import PayloadTooLarge, Unreachable, ValidationError
from node.discovery import announce
from node.discovery.gossip import Gossip, GossipLimits
from node.discovery.models import AnnounceBody

T = TypeVar("T")
NOW = 1_800_000_000
INTERVAL = 300


class MemoryDatabase:
    """``ports.Database`` over one in-memory SQLite connection, run inline (bench only)."""

    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:", isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        migrate(self.conn, MIGRATIONS, Path("gossip.sqlite"))

    async def execute_write_fn(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(self.conn)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return result

    async def execute_fn(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return fn(self.conn)

    async def execute(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, params).fetchall()


class Net:
    def __init__(self) -> None:
        self.nodes: dict[str, Gossip] = {}

    def link(self) -> Link:
        return Link(self)


class Link:
    def __init__(self, net: Net) -> None:
        self.net = net

    async def exchange(self, peer: str, message: bytes, *, alone: bool = False) -> bytes:
        node = self.net.nodes.get(peer)
        if node is None:
            raise Unreachable(f"{peer} is down")
        try:
            return await node.handle(message)
        except (ValidationError, PayloadTooLarge) as exc:
            raise Unreachable(f"HTTP {exc.status}") from exc


def make_ann(i: int, now: int) -> bytes:
    key = StoreKey(i.to_bytes(4, "big") + b"bench-store".ljust(28, b"."))
    body = AnnounceBody(
        name=f"Store {i}",
        description="Hand-made things, shipped worldwide. " * 3,
        tags=sorted({"wool", "linen", f"tag{i % 50}"}),
        ships_to=["DE", "FR", "WORLDWIDE"],
        listings=40,
        catalog_seq=now,
        catalog_hash="sha256:" + f"{i:064x}",
    )
    return announce.build(key, body, seq=now, now=now, ttl=7 * 86400).raw


def push(raw: bytes) -> bytes:
    return b'{"v":1,"from":null,"cursor":null,"peers":[],"push":[' + raw + b"]}"


class Sim:
    def __init__(self, n: int, seed: int) -> None:
        self.clock = float(NOW)
        self.net = Net()
        self.rng = random.Random(seed)
        self.nodes: list[Gossip] = []
        self.n = n
        self._sent: dict[str, int] = {}

    async def build(self) -> None:
        limits = GossipLimits(gossip_interval=INTERVAL)
        for i in range(self.n):
            me = StoreKey(i.to_bytes(4, "big") + b"bench-node".ljust(28, b"-")).onion
            node = Gossip(
                MemoryDatabase(), self.net.link(), me=me, limits=limits, clock=lambda: self.clock,
                rng=random.Random(self.rng.getrandbits(64)),
            )  # fmt: skip
            await node.open()
            self.net.nodes[me] = node
            self.nodes.append(node)
        for i, node in enumerate(self.nodes):
            for j in {(i + 1) % self.n, *self.rng.sample(range(self.n), 2)} - {i}:
                await node.add_peer(self.nodes[j].me, "seed")

    def sent_so_far(self) -> list[int]:
        return [self._sent.get(node.me, 0) + node.served.sent_bytes for node in self.nodes]

    async def round(self) -> None:
        self.clock += INTERVAL
        stats = await asyncio.gather(*(node.round() for node in self.nodes))
        self._sent = {
            node.me: self._sent.get(node.me, 0) + s.sent_bytes for node, s in zip(self.nodes, stats, strict=True)
        }


def percent(sim: Sim, store: str) -> float:
    return 100.0 * sum(store in node.held for node in sim.nodes) / sim.n


async def main(args: argparse.Namespace) -> None:
    sim = Sim(args.nodes, args.seed)
    started = time.monotonic()
    await sim.build()
    for i in range(args.background):
        await sim.nodes[sim.rng.randrange(sim.n)].handle(push(make_ann(1000 + i, NOW)))
    for _ in range(args.warmup):
        await sim.round()
    peers = sorted(len(node.peer_table) for node in sim.nodes)
    held = sorted(len(node.held) for node in sim.nodes)
    print(
        f"nodes {sim.n}, background announcements {args.background}, warm-up rounds {args.warmup}"
        f" ({time.monotonic() - started:.1f} s): peers per node min/median/max"
        f" {peers[0]}/{peers[sim.n // 2]}/{peers[-1]}, announcements held min {held[0]}"
    )

    # steady state: a round with nothing new
    before = sim.sent_so_far()
    await sim.round()
    idle = [b - a for a, b in zip(before, sim.sent_so_far(), strict=True)]

    raw = make_ann(1, int(sim.clock))
    store = json.loads(raw)["store"]
    await sim.nodes[0].handle(push(raw))
    reached: dict[int, int] = {}
    per_round: list[list[int]] = []
    for r in range(1, args.max_rounds + 1):
        before = sim.sent_so_far()
        await sim.round()
        per_round.append([b - a for a, b in zip(before, sim.sent_so_far(), strict=True)])
        share = percent(sim, store)
        print(f"  round {r:2}: {share:5.1f}% hold it")
        for target in (50, 99, 100):
            if share >= target and target not in reached:
                reached[target] = r
        if 100 in reached:
            break
    else:
        share = percent(sim, store)
        raise BenchError(f"after {args.max_rounds} rounds only {share:.1f}% of nodes hold the announcement")
    bound = math.log2(sim.n) + math.log(math.log(sim.n))
    flat = [x for row in per_round for x in row]
    print()
    print(f"rounds until 50% / 99% / 100% hold a new announcement: {reached[50]} / {reached[99]} / {reached[100]}"
          f"   (target: 99% in <= 13; epidemic bound log2 N + ln ln N = {bound:.1f})")  # fmt: skip
    print(f"bytes sent per node per round while it spread: mean {sum(flat) / len(flat) / 1024:.1f} KiB, "
          f"max {max(flat) / 1024:.1f} KiB   (target <= 64 KiB)")  # fmt: skip
    print(f"bytes sent per node in a round with nothing new: mean {sum(idle) / len(idle) / 1024:.2f} KiB, "
          f"max {max(idle) / 1024:.2f} KiB")  # fmt: skip
    print(f"wall time {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--background", type=int, default=200, help="announcements spread before the measure")
    parser.add_argument("--warmup", type=int, default=15, help="rounds before the measure")
    parser.add_argument("--max-rounds", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    try:
        asyncio.run(main(parser.parse_args()))
    except BenchError as exc:
        print(f"bench_gossip: {exc}", file=sys.stderr)
        sys.exit(1)
