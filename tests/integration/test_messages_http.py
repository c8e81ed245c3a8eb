"""Order messages over real HTTP on loopback: the buyer's Courier against the store's endpoint.

The store side is a real aiohttp app with ``node.web.messages.exchange`` and a
real Mailbox on SQLite; the vendor's ``NodeOrders`` is a small stand-in that
answers an order with an escrow message (helper B's real one is tested with
the payments flows). The buyer side is a real Mailbox and Courier over
``LoopbackHttp`` (an onion name mapped to 127.0.0.1; no entry = offline).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from node.adapters import messages_schema
from node.adapters.loophttp import LoopbackHttp
from node.adapters.sqlite import SQLiteDatabase
from node.core.crypto import StoreKey
from node.core.errors import Unauthorized, Unreachable
from node.messaging import boxes, wire
from node.messaging.courier import Courier
from node.messaging.mailbox import Mailbox
from node.messaging.models import InMessage
from node.web import appkeys, checkout, middlewares
from node.web import messages as endpoint


class StandInMarket:
    def __init__(self, key: StoreKey) -> None:
        self._key = key

    async def key(self, onion: str) -> StoreKey:
        assert onion == self._key.onion
        return self._key


@dataclass
class StandInOrders:
    """The vendor's side as the endpoint uses it: party, apply (answers an order with an escrow), answer."""

    mailbox: Mailbox
    key: StoreKey
    applied: list[InMessage] = field(default_factory=list)
    refuse: str | None = None
    gate: asyncio.Event | None = None  # set: an order waits for it (the moderator is slow)

    async def party(self, order: str, sender: str) -> str | None:
        if self.refuse:
            return self.refuse
        buyer = await self.mailbox.opener(order)
        return None if buyer in (None, sender) else "another key placed this order"

    async def apply(self, msg: InMessage) -> None:
        if msg.kind == "order" and self.gate is not None:
            await self.gate.wait()
        self.applied.append(msg)
        if msg.kind == "order":
            mid = hashlib.sha256(f"{msg.order}:escrow".encode()).hexdigest()[:32]
            fields = {"amount_sat": 10_000, "note": boxes.box(self.key, msg.sender, "thanks")}
            await self.mailbox.send(
                self.key, peer=msg.sender, order=msg.order, kind="escrow", fields=fields, to=msg.sender, message_id=mid
            )

    async def answer(self, store: str, poll: object, now: int) -> list[bytes]:
        asked = wire.open_poll(poll, now=now)
        if asked.to != store or await self.mailbox.opener(asked.order) != asked.signer:
            raise Unauthorized("this poll is not signed by the key that placed the order")
        pending = await self.mailbox.pending_for(asked.signer, asked.order, limit=wire.MAX_BATCH)
        await self.mailbox.mark_sent([m.id for m in pending], now)
        return [m.raw for m in pending]


def mailbox(db: SQLiteDatabase) -> Mailbox:
    return Mailbox(db, retry_first=15.0, retry_cap=3600.0, give_up=14 * 86400, rng=random.Random(3))


@dataclass
class World:
    store_key: StoreKey
    vendor_box: Mailbox
    orders: StandInOrders
    server: TestServer | None
    buyer_box: Mailbox
    courier: Courier
    http: LoopbackHttp
    online: dict[str, str]
    purchases: dict[str, StoreKey] = field(default_factory=dict)  # order -> order key
    got: list[InMessage] = field(default_factory=list)
    applying: set[asyncio.Task[None]] = field(default_factory=set)  # the app's applies in flight

    @property
    def store(self) -> str:
        return self.store_key.onion

    async def start_store(self, *, in_parent: bool = False) -> None:
        app = web.Application(middlewares=[middlewares.errors], client_max_size=64 * 1024)
        home = app
        if in_parent:  # as the node runs it: the mailbox lives on the node app the store app was made from
            home = web.Application()
            app[checkout.ADMIN_APP] = home
        home[appkeys.MESSAGES] = self.vendor_box
        home[appkeys.NODE_ORDERS] = self.orders  # a stand-in of NodeOrders
        home[appkeys.APPLYING] = self.applying
        app[appkeys.MARKET] = StandInMarket(self.store_key)  # only .key() is used
        app[appkeys.STORE] = self.store
        app.router.add_post(wire.EXCHANGE_PATH, endpoint.exchange, name="messages")
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        self.online[self.store] = str(self.server.make_url("/")).rstrip("/")

    async def stop_store(self) -> None:
        self.online.pop(self.store, None)
        if self.server is not None:
            await self.server.close()
            self.server = None

    async def place(self, *texts: str) -> str:
        key, order = StoreKey.generate(), wire.new_order_id()
        self.purchases[order] = key
        fields = {"store": self.store, "qty": 1, "ship_to": boxes.box(key, self.store, "1 Main St")}
        await self.buyer_box.send(key, peer=self.store, order=order, kind="order", fields=fields, to=self.store)
        for text in texts:
            await self.buyer_box.send(
                key,
                peer=self.store,
                order=order,
                kind="message",
                fields={"text": boxes.box(key, self.store, text)},
                to=self.store,
            )
        return order

    def url(self) -> str:
        return self.online[self.store] + wire.EXCHANGE_PATH


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    vendor_db = await messages_schema.open_messages_db(tmp_path / "vendor-messages.sqlite")
    buyer_db = await messages_schema.open_messages_db(tmp_path / "buyer-messages.sqlite")
    store_key = StoreKey.generate()
    vendor_box, buyer_box = mailbox(vendor_db), mailbox(buyer_db)
    online: dict[str, str] = {}
    http = LoopbackHttp(online.get)
    w = World(store_key, vendor_box, StandInOrders(vendor_box, store_key), None, buyer_box, None, http, online)

    async def keys(order: str) -> StoreKey | None:
        return w.purchases.get(order)

    async def apply(msg: InMessage) -> None:
        w.got.append(msg)

    w.courier = Courier(buyer_box, http, keys=keys, apply=apply, poll_interval=0.5)
    await w.start_store()
    yield w
    await w.stop_store()
    await http.close()
    await vendor_db.close()
    await buyer_db.close()


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def deliveries(box: Mailbox, order: str) -> list[str]:
    return [m.delivery_text() for m in await box.outgoing(order)]


async def test_order_delivered_answered_and_acked_in_one_exchange(world: World) -> None:
    order = await world.place("hello", "are you there?")
    await world.courier.exchange(world.store, order)
    assert await deliveries(world.buyer_box, order) == ["delivered"] * 3
    assert [m.kind for m in world.orders.applied] == ["order", "message", "message"]
    assert boxes.unbox(world.store_key, world.orders.applied[1].sender, world.orders.applied[1].body["text"]) == "hello"
    # The store's escrow came back in the answer, was applied on the buyer's side and acked by a second POST.
    assert [(m.kind, m.sender) for m in world.got] == [("escrow", world.store)]
    assert await deliveries(world.vendor_box, order) == ["delivered"]
    assert world.http.requests == 2
    await world.courier.exchange(world.store, order)  # nothing new: one poll, nothing changes
    assert len(world.got) == 1 and world.http.requests == 3


async def test_offline_store_gets_everything_in_order_when_back(world: World) -> None:
    await world.stop_store()
    order = await world.place("one", "two")
    with pytest.raises(Unreachable):
        await world.courier.exchange(world.store, order)
    held = await world.buyer_box.outgoing(order)
    assert [m.delivery_text() for m in held] == ["queued"] * 3
    assert all(m.attempts == 1 and m.next_try > int(time.time()) for m in held)
    await world.start_store(in_parent=True)
    await world.courier.exchange(world.store, order)
    assert await deliveries(world.buyer_box, order) == ["delivered"] * 3
    assert [m.seq for m in world.orders.applied] == [1, 2, 3]


async def test_run_delivers_after_wake_and_polls_for_news(world: World) -> None:
    orders: list[tuple[str, str]] = []

    async def open_orders() -> list[tuple[str, str]]:
        return list(orders)

    task = asyncio.create_task(world.courier.run(open_orders))
    try:
        order = await world.place("x")
        orders.append((world.store, order))
        world.courier.wake()
        await until(lambda: _all(world.buyer_box, order, "delivered", 2))
        await until(lambda: _all(world.vendor_box, order, "delivered", 1))
        # The store tells the buyer something later: the next poll brings it.
        key = world.purchases[order]
        await world.vendor_box.send(
            world.store_key, peer=key.onion, order=order, kind="state", fields={"state": "funded"}, to=key.onion
        )
        await until(lambda: _has(world, "state"))
        await until(lambda: _all(world.vendor_box, order, "delivered", 2))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _all(box: Mailbox, order: str, text: str, count: int) -> bool:
    found = await deliveries(box, order)
    return len(found) == count and set(found) == {text}


async def _has(world: World, kind: str) -> bool:
    return any(m.kind == kind for m in world.got)


async def test_refused_messages_fail_with_the_reason(world: World) -> None:
    world.orders.refuse = "this store takes no orders from buyers' nodes"
    order = await world.place()
    await world.courier.exchange(world.store, order)
    assert await deliveries(world.buyer_box, order) == ["failed: this store takes no orders from buyers' nodes"]


async def test_forged_and_foreign_messages_are_refused_over_http(world: World) -> None:
    order = await world.place()
    await world.courier.exchange(world.store, order)
    (held,) = await world.buyer_box.outgoing(order)
    forged = json.loads(held.raw)
    forged["body"]["qty"] = 5
    thief = StoreKey.generate()
    other = await world.buyer_box.send(thief, peer=world.store, order=order, kind="message", fields={}, to=world.store)
    body = {"order": order, "deliver": [forged, json.loads(other.raw), json.loads(held.raw)], "acks": [], "poll": None}
    async with ClientSession() as session, session.post(world.url(), json=body) as resp:
        assert resp.status == 200
        answer = await resp.json()
    reasons = {r["id"]: r["reason"] for r in answer["refused"]}
    assert "signature" in reasons[held.id] and "another key" in reasons[other.id]
    assert [a["body"]["id"] for a in answer["acks"]] == [held.id]  # the genuine one is acked again
    assert len(world.orders.applied) == 1


async def test_a_bad_poll_still_acks_the_deliveries(world: World) -> None:
    order = await world.place()
    (msg,) = await world.buyer_box.outgoing(order)
    poll = wire.seal_poll(StoreKey.generate(), order=order, store=world.store, now=int(time.time()))
    body = {"order": order, "deliver": [json.loads(msg.raw)], "acks": [], "poll": poll}
    async with ClientSession() as session, session.post(world.url(), json=body) as resp:
        answer = await resp.json()
    assert resp.status == 200 and len(answer["acks"]) == 1 and answer["messages"] == []
    assert "not signed by the key" in answer["poll_refused"]


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        (b"{}", "text/plain", 415),
        (b"{", "application/json", 400),
        (b"[]", "application/json", 422),
        (b'{"order": "zz"}', "application/json", 422),
        (json.dumps({"order": "ab" * 8, "deliver": [{}] * 51}).encode(), "application/json", 422),
        (b'{"order": "' + b"a" * (1024 * 1024) + b'"}', "application/json", 413),
    ],
)
async def test_malformed_bodies_are_4xx_json(world: World, data: bytes, content_type: str, status: int) -> None:
    async with (
        ClientSession() as session,
        session.post(world.url(), data=io.BytesIO(data), headers={"Content-Type": content_type}) as resp,
    ):
        assert resp.status == status
        assert "error" in await resp.json()


async def test_a_big_exchange_under_one_mib_is_read(world: World) -> None:
    order = await world.place(*["x" * 12_000] * 49)  # ~1 MiB of deliveries in 1..2 POSTs (64 KiB app limit)
    await world.courier.exchange(world.store, order)
    assert await deliveries(world.buyer_box, order) == ["delivered"] * 50


async def test_not_ready_is_503() -> None:
    app = web.Application(middlewares=[middlewares.errors])
    app.router.add_post(wire.EXCHANGE_PATH, endpoint.exchange)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession() as session, session.post(server.make_url(wire.EXCHANGE_PATH), json={}) as resp:
            assert resp.status == 503
            assert "not ready" in (await resp.json())["error"]
    finally:
        await server.close()


async def test_a_slow_apply_does_not_hold_the_acks(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(endpoint, "APPLY_BUDGET", 0.2)
    world.orders.gate = asyncio.Event()
    order = await world.place()
    await world.courier.exchange(world.store, order)  # answered after the budget: acked, no escrow yet
    assert await deliveries(world.buyer_box, order) == ["delivered"] and world.got == []
    assert len(world.applying) == 1  # held by the app (drained at shutdown), not by the module
    world.orders.gate.set()
    await endpoint.drain(world.applying)
    assert world.applying == set()
    assert [m.kind for m in world.orders.applied] == ["order"]
    await world.courier.exchange(world.store, order)  # the next poll brings the escrow
    assert [m.kind for m in world.got] == ["escrow"]
