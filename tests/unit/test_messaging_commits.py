"""Group commit on a real SQLite file: concurrent writes share a transaction; one's error is only its own."""

from __future__ import annotations

import asyncio

import pytest

from node.adapters import messages_schema
from node.core.crypto import StoreKey
from node.core.errors import ValidationError
from node.messaging import wire
from node.messaging.commits import GroupCommit
from tests.unit.test_messaging_kit import Clock, anyone, open_side, order_fields


class CountingDb:
    """The real database, counting the write transactions that reach it."""

    def __init__(self, db) -> None:
        self.db = db
        self.writes = 0

    async def execute_write_fn(self, fn):
        self.writes += 1
        return await self.db.execute_write_fn(fn)

    async def execute_fn(self, fn):
        return await self.db.execute_fn(fn)

    async def execute(self, sql, params=()):
        return await self.db.execute(sql, params)


@pytest.fixture
async def db(tmp_path):
    db = await messages_schema.open_messages_db(tmp_path / "m.sqlite")
    yield CountingDb(db)
    await db.close()


def insert(n: int):
    def fn(conn):
        conn.execute("INSERT INTO cursors (order_id, sender, applied_seq) VALUES (?, 's', ?)", (f"o{n}", n))
        return n

    return fn


def boom(conn):
    conn.execute("INSERT INTO cursors (order_id, sender, applied_seq) VALUES ('bad', 's', 1)")
    raise ValidationError({"x": "refused"})


async def test_concurrent_writes_share_commits_and_errors_stay_their_own(db):
    commits = GroupCommit(db)
    results = await asyncio.gather(
        *(commits.write(insert(n)) for n in range(20)), commits.write(boom), return_exceptions=True
    )
    assert results[:20] == list(range(20)) and isinstance(results[20], ValidationError)
    rows = await db.execute("SELECT order_id FROM cursors ORDER BY applied_seq")
    assert [r[0] for r in rows] == [f"o{n}" for n in range(20)]  # the failed write left nothing
    assert db.writes <= 22  # the first alone, the rest together, then each again alone after the failed one
    before = db.writes
    await asyncio.gather(*(commits.write(insert(n)) for n in range(100, 150)))
    assert db.writes - before <= 3  # one in flight, the rest queued behind it together


async def test_the_same_batch_received_twice_at_once_is_stored_once(tmp_path):
    clock = Clock()
    buyer = await open_side(tmp_path / "b.sqlite", clock)
    vendor = await open_side(tmp_path / "v.sqlite", clock)
    try:
        key, store = StoreKey.generate(), StoreKey.generate()
        vendor.add(store)
        order = wire.new_order_id()
        sent = [
            await buyer.mailbox.send(
                key, peer=store.onion, order=order, kind="order", fields=order_fields(store.onion), to=store.onion
            )
        ]
        for i in range(9):
            sent.append(
                await buyer.mailbox.send(
                    key, peer=store.onion, order=order, kind="message", fields={"n": i}, to=store.onion
                )
            )
        raws = [m.raw for m in sent]  # bytes are parsed by the mailbox
        a, b = await asyncio.gather(
            *(vendor.mailbox.receive(raws, me=vendor.me, party=anyone, now=clock.now) for _ in range(2))
        )
        assert len(a.new) + len(b.new) == 10 and len(a.acks) == len(b.acks) == 10
        assert len(await vendor.mailbox.incoming(order)) == 10
    finally:
        await buyer.db.close()
        await vendor.db.close()
