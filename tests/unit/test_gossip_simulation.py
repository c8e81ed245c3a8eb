"""Gossip simulation: many real nodes (Gossip + a real SQLiteDatabase each) in one process.

The transport hands each request's bytes to the peer node's real ``handle``
(tests/unit/test_gossip_kit.py). Every node starts knowing 3 others (a ring
plus 2 random ones) and learns more from gossip. Rounds are run for all
nodes at once; the clock moves one gossip interval per round.

- convergence: a new announcement given to one node reaches every node in
  at most ROUNDS rounds (push-pull reaches N nodes in about log3 N rounds);
- flood: an attacker pushes thousands of valid announcements (real
  signatures, many keys) at one node: every table stays within
  max_announcements, and an honest announcement made after the flood still
  reaches every node.

NODES is 100 real SQLite databases (each has a writer and a reader thread):
enough for several epidemic generations, small enough for a shared 2-core
machine (tests/bench/bench_gossip.py runs 1,000 nodes).
"""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from node.discovery.gossip import GossipLimits

from .test_gossip_kit import NOW, Clock, Net, make_ann, open_node, push_message

NODES = 100
ROUNDS = 12  # log2(100) + ln ln(100) = 8.2; push-pull needs fewer
CAPACITY = 80
BUDGET = 50  # pushed announcements checked per interval
FLOOD = 2000


@pytest.fixture
async def network(tmp_path):
    net, clock, opened = Net(record=False), Clock(), []
    limits = GossipLimits(gossip_interval=60, max_announcements=CAPACITY, max_peers=8, push_budget=BUDGET)
    nodes = [await open_node(tmp_path, net, i, clock=clock, limits=limits, opened=opened) for i in range(NODES)]
    rng = random.Random(7)
    for i, node in enumerate(nodes):
        for j in {(i + 1) % NODES, *rng.sample(range(NODES), 2)} - {i}:
            await node.add_peer(nodes[j].me, "seed")
        node.rng.seed(1000 + i)
    yield net, clock, nodes
    await asyncio.gather(*(db.close() for db in opened))


async def rounds_until(clock: Clock, nodes, store: str, most: int) -> int:
    for n in range(1, most + 1):
        clock.t += 60
        await asyncio.gather(*(node.round() for node in nodes))
        if all(store in node.held for node in nodes):
            return n
    holders = sum(store in node.held for node in nodes)
    raise AssertionError(f"after {most} rounds only {holders} of {len(nodes)} nodes hold the announcement")


async def test_a_new_announcement_reaches_every_node_then_a_flood_stays_bounded(network):
    net, clock, nodes = network
    first = make_ann(1, now=NOW)
    await nodes[17].handle(push_message([json.loads(first.raw)]))
    took = await rounds_until(clock, nodes, first.store, ROUNDS)
    assert took <= ROUNDS
    # steady state: a round with nothing new costs a few hundred bytes per node
    net.bytes_sent = 0
    clock.t += 60
    await asyncio.gather(*(node.round() for node in nodes))
    assert net.bytes_sent / NODES < 2048

    # the flood: valid junk from FLOOD keys, pushed at one node in full messages, over two intervals
    victim = nodes[3]
    for start in range(0, FLOOD, 200):
        if start == FLOOD // 2:  # the second half is fresher: it evicts the first
            clock.t += 60
            await asyncio.gather(*(node.round() for node in nodes))
        junk = [json.loads(make_ann(10_000 + i, now=int(clock.t)).raw) for i in range(start, start + 200)]
        await victim.handle(push_message(junk))
    assert victim.served.refused >= FLOOD - 2 * BUDGET - 10  # refused before any signature check
    assert CAPACITY < victim.served.accepted and len(victim.held) == CAPACITY  # evicting, and no fuller
    honest = make_ann(2, now=int(clock.t) + 60)
    await nodes[60].handle(push_message([json.loads(honest.raw)]))
    await rounds_until(clock, nodes, honest.store, ROUNDS)
    assert all(len(node.held) <= CAPACITY for node in nodes)
    rows = await victim.db.execute("SELECT count(*) FROM announcements")
    assert rows[0][0] == len(victim.held) <= CAPACITY
