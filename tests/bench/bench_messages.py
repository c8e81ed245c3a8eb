"""Order messages benchmark: messages per second through one node's inbox, with signature checks.

Run from the repository root::

    .venv/bin/python tests/bench/bench_messages.py                    # 20,000 messages, about 25 s
    .venv/bin/python tests/bench/bench_messages.py --orders 10 --per-order 100   # a quick look

What runs: the store's real ``Mailbox`` on a real ``messages.sqlite``
(``synchronous=FULL``, one fsync per commit) in a temporary directory.
Before the clock starts, ``--orders`` buyers (each its own fresh order key)
sign ``--per-order`` messages each (one ``order`` of ~0.8 KB with a boxed
address, then ``message``s with a boxed text of ~300 bytes), as their nodes
would. Timed: what the store's endpoint does with them, in exchanges of
``--batch`` messages (50, the wire's maximum): ``Mailbox.receive`` (shape,
signature and freshness of every envelope on a worker thread, the order
rules and dedupe in one write transaction, a signed ack per message) and
``Mailbox.apply_ready`` (the messages handed in seq order to an applier that
records them; one write per batch). ``--parallel`` exchanges run at once (a
store serving several buyers). Every order's batches go in seq order except
``--shuffle`` of them, sent before their predecessor (they wait, then apply).

Figures: messages/s end to end (target >= 2,000/s on this machine, from the
issue), the process's CPU time per message (and messages per CPU-second:
the figure to compare when other work shares the cores), the load average,
acks signed; checks that every
message was applied once, in order, and that a second delivery of a batch
(lost acks) stores nothing and is acked again.

A benchmark, not a test: it asserts nothing about timing and exits non-zero
only when something broke (a message refused, lost or applied twice). The
temporary directory is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from node.adapters import messages_schema
from node.core import envelope
from node.core.crypto import StoreKey
from node.messaging import boxes, wire
from node.messaging.mailbox import Mailbox
from node.messaging.models import InMessage

TARGET = 2_000


@dataclass
class Buyer:
    key: StoreKey
    order: str
    batches: list[list[object]] = field(default_factory=list)


def sign_orders(store: StoreKey, orders: int, per_order: int, batch: int, now: int) -> list[Buyer]:
    buyers = []
    for _ in range(orders):
        b = Buyer(wire.held_key(StoreKey.generate()), wire.new_order_id())
        msgs: list[object] = []
        for seq in range(1, per_order + 1):
            kind = "order" if seq == 1 else "message"
            if kind == "order":
                fields: dict[str, object] = {
                    "store": store.onion,
                    "listing": "a1b2c3d4e5f6",
                    "listing_hash": "sha256:" + "ab" * 32,
                    "sku": None,
                    "qty": 1,
                    "shipping": "Standard",
                    "coupon": None,
                    "moderator": store.onion,
                    "buyer_key": "[d34db33f/48h/1h/0h/0/0]02" + "ab" * 32,
                    "refund_address": "bcrt1q" + "x" * 38,
                    "amount_sat": 125_000,
                    "ship_to": boxes.box(b.key, store.onion, "Jane Doe, 1 Main St, " * 6),
                }
            else:
                fields = {"text": boxes.box(b.key, store.onion, f"message {seq}: " + "when will it ship? " * 12)}
            body = wire.message_body(wire.new_message_id(), b.order, kind, store.onion, fields)
            env = envelope.seal(b.key, wire.MSG_TYPE, body, seq=seq, issued_at=now, expires_at=now + wire.MSG_TTL)
            msgs.append(envelope.loads(wire.canonical(env)))  # as the endpoint gets it: parsed JSON
        b.batches = [msgs[i : i + batch] for i in range(0, len(msgs), batch)]
        buyers.append(b)
    return buyers


@dataclass
class Tally:
    received: int = 0
    acks: int = 0
    refused: int = 0
    applied: dict[str, list[int]] = field(default_factory=dict)


async def serve(box: Mailbox, store: StoreKey, buyer: Buyer, tally: Tally, order_of: list[int]) -> None:
    """One buyer's exchanges, as the endpoint handles them (receive, then apply what is ready)."""

    onion = store.onion

    def me(to: str) -> StoreKey | None:
        return store if to == onion else None

    async def party(order: str, sender: str) -> str | None:
        opener = await box.opener(order)
        return None if opener in (None, sender) else "another key placed this order"

    async def apply(msg: InMessage) -> None:
        tally.applied.setdefault(msg.order, []).append(msg.seq)

    for index in order_of:
        got = await box.receive(buyer.batches[index], me=me, party=party, now=int(time.time()))
        tally.received += len(got.new)
        tally.acks += len(got.acks)
        tally.refused += len(got.refused)
        for reason in {r for _, r in got.refused}:
            print(f"  refused: {reason}", file=sys.stderr)
        await box.apply_ready(buyer.order, buyer.key.onion, apply)


def batch_order(n: int, shuffle: bool, rng: random.Random) -> list[int]:
    order = list(range(n))
    if shuffle and n > 2:  # a later batch first: it waits for the gap (never the first: it holds the order)
        i = rng.randrange(1, n - 1)
        order[i], order[i + 1] = order[i + 1], order[i]
    return order


async def run(args: argparse.Namespace) -> int:
    store = wire.held_key(StoreKey.generate())
    now = int(time.time())
    t0 = time.perf_counter()
    buyers = sign_orders(store, args.orders, args.per_order, args.batch, now)
    total = args.orders * args.per_order
    print(f"signed {total} messages of {args.orders} orders in {time.perf_counter() - t0:.1f}s (not timed)")
    rng = random.Random(args.seed)
    plans = [batch_order(len(b.batches), i < args.shuffle, rng) for i, b in enumerate(buyers)]
    with tempfile.TemporaryDirectory(prefix="pasar-bench-messages-") as tmp:
        db = await messages_schema.open_messages_db(Path(tmp) / messages_schema.FILE_NAME)
        try:
            # Throughput, not the new-order flood limit (120 an hour per store): every buyer here is new.
            box = Mailbox(db, retry_first=15, retry_cap=3600, give_up=14 * 86400, new_orders_per_hour=10**9)
            tally = Tally()
            gate = asyncio.Semaphore(args.parallel)

            async def one(buyer: Buyer, plan: list[int]) -> None:
                async with gate:
                    await serve(box, store, buyer, tally, plan)

            started, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(one(b, p) for b, p in zip(buyers, plans, strict=True)))
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            again = await box.receive(buyers[0].batches[0], me=lambda to: store, party=_anyone, now=int(time.time()))
            problems = check(tally, buyers, args.per_order, again.new, len(again.acks), len(buyers[0].batches[0]))
        finally:
            await db.close()
    rate = total / seconds
    print(f"inbox, end to end (receive + apply, {args.parallel} exchanges at once, batches of {args.batch}):")
    print(
        f"  {total} messages in {seconds:.2f}s = {rate:,.0f} messages/s   target >= {TARGET:,}/s "
        f"({'met' if rate >= TARGET else 'NOT met'})"
    )
    print(
        f"  CPU time of this process: {cpu:.2f}s = {cpu / total * 1e6:,.0f} us per message "
        f"({total / cpu:,.0f} messages per CPU-second; {cpu / seconds:.2f} cores busy on average)"
    )
    load = os.getloadavg()[0]
    print(f"  load average after the run: {load:.2f} on {os.cpu_count()} cores (other work on the machine slows it)")
    print(f"  acks signed: {tally.acks}; orders with a batch sent before its turn: {min(args.shuffle, args.orders)}")
    for p in problems:
        print(f"BROKEN: {p}", file=sys.stderr)
    return 1 if problems else 0


async def _anyone(order: str, sender: str) -> str | None:
    return None


def check(
    tally: Tally, buyers: list[Buyer], per_order: int, again_new: list[InMessage], again_acks: int, batch_len: int
) -> list[str]:
    problems = []
    if tally.refused:
        problems.append(f"{tally.refused} messages refused")
    if tally.received != len(buyers) * per_order or tally.acks != tally.received:
        problems.append(f"stored {tally.received}, acked {tally.acks} of {len(buyers) * per_order}")
    wrong = [b.order for b in buyers if tally.applied.get(b.order) != list(range(1, per_order + 1))]
    if wrong:
        problems.append(f"{len(wrong)} orders not applied exactly once in seq order")
    if again_new or again_acks != batch_len:
        problems.append("a batch delivered twice was stored again or not acked again")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--per-order", type=int, default=100)
    parser.add_argument("--batch", type=int, default=wire.MAX_BATCH)
    parser.add_argument("--parallel", type=int, default=4, help="exchanges handled at once")
    parser.add_argument("--shuffle", type=int, default=20, help="orders with one batch sent before its turn")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    if args.per_order < 1 or args.orders < 1 or not 1 <= args.batch <= wire.MAX_BATCH:
        parser.error("--orders and --per-order must be >= 1, --batch 1..50")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
