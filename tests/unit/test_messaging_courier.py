"""The Courier against a real aiohttp server on 127.0.0.1 standing in for a store onion that misbehaves."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from node.adapters.loophttp import LoopbackHttp
from node.core.crypto import StoreKey
from node.core.errors import Unavailable, Unreachable, ValidationError
from node.messaging import wire
from node.messaging.courier import Courier, pack, parse_reply
from node.messaging.models import Delivery, InMessage, OutMessage
from tests.unit.test_messaging_kit import Side, open_side


@dataclass
class FakeStore:
    """Answers each POST with the next scripted (status, body); records the requests."""

    key: StoreKey
    answers: list[tuple[int, object]] = field(default_factory=list)
    requests: list[dict] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(await request.json())
        status, body = self.answers.pop(0) if self.answers else (200, {"acks": [], "refused": [], "messages": []})
        text = body if isinstance(body, str) else json.dumps(body)
        return web.Response(status=status, text=text, content_type="application/json")


@dataclass
class Rig:
    store: FakeStore
    side: Side
    courier: Courier
    http: LoopbackHttp
    purchases: dict[str, StoreKey]
    got: list[InMessage]
    fail_next: list[bool]
    crash_on: set[str] = field(default_factory=set)  # orders whose apply raises a non-PasarError (a bug)

    async def place(self) -> tuple[str, StoreKey, OutMessage]:
        key, order = StoreKey.generate(), wire.new_order_id()
        self.purchases[order] = key
        msg = await self.side.mailbox.send(
            key, peer=self.store.key.onion, order=order, kind="order", fields={"qty": 1}, to=self.store.key.onion
        )
        return order, key, msg


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = FakeStore(StoreKey.generate())
    app = web.Application()
    app.router.add_post(wire.EXCHANGE_PATH, store.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("/")).rstrip("/")
    http = LoopbackHttp(lambda onion: base if onion == store.key.onion else None)
    side = await open_side(tmp_path / "buyer.sqlite", lambda: int(time.time()))
    purchases: dict[str, StoreKey] = {}
    got: list[InMessage] = []
    fail_next: list[bool] = []

    async def keys(order: str) -> StoreKey | None:
        return purchases.get(order)

    async def apply(msg: InMessage) -> None:
        if msg.order in rig_.crash_on:
            raise RuntimeError("a bug in the purchases' apply")
        if fail_next and fail_next.pop():
            raise Unavailable("the wallet is down")
        got.append(msg)

    courier = Courier(side.mailbox, http, keys=keys, apply=apply, poll_interval=30.0)
    rig_ = Rig(store, side, courier, http, purchases, got, fail_next)
    yield rig_
    await http.close()
    await server.close()
    await side.db.close()


def store_message(rig: Rig, order: str, buyer: StoreKey, seq: int, kind: str = "state", signer=None) -> dict:
    from node.core import envelope

    signer = signer or rig.store.key
    body = wire.message_body(wire.new_message_id(), order, kind, buyer.onion, {"state": "funded"})
    now = int(time.time())
    return dict(envelope.seal(signer, wire.MSG_TYPE, body, seq=seq, issued_at=now, expires_at=now + 99))


async def test_http_error_backs_off_and_keeps_the_acks_owed(rig: Rig) -> None:
    order, _, msg = await rig.place()
    rig.store.answers = [(503, {"error": "not ready"})]
    with pytest.raises(Unreachable, match="HTTP 503"):
        await rig.courier.exchange(rig.store.key.onion, order)
    (held,) = await rig.side.mailbox.outgoing(order)
    assert held.delivery is Delivery.QUEUED and held.attempts == 1 and held.next_try > int(time.time())
    request = rig.store.requests[0]
    assert request["order"] == order and [m["body"]["id"] for m in request["deliver"]] == [msg.id]
    poll = wire.open_poll(request["poll"], now=int(time.time()))
    assert poll.order == order and poll.to == rig.store.key.onion and poll.signer == rig.purchases[order].onion


async def test_malformed_answer_is_unreachable(rig: Rig) -> None:
    order, _, _ = await rig.place()
    for answer in ("{", "[]", json.dumps({"acks": {}})):
        rig.store.answers = [(200, answer)]
        with pytest.raises(Unreachable, match="malformed"):
            await rig.courier.exchange(rig.store.key.onion, order)
    (held,) = await rig.side.mailbox.outgoing(order)
    assert held.attempts == 3 and held.delivery is Delivery.QUEUED


async def test_no_ack_means_sent_then_retried(rig: Rig) -> None:
    order, _, _ = await rig.place()
    await rig.courier.exchange(rig.store.key.onion, order)
    (held,) = await rig.side.mailbox.outgoing(order)
    assert held.delivery_text() == "sent" and held.attempts == 1
    assert len(rig.store.requests) == 1


async def test_store_messages_from_another_key_are_refused(rig: Rig) -> None:
    order, buyer, _ = await rig.place()
    forged = store_message(rig, order, buyer, 1, signer=StoreKey.generate())
    genuine = store_message(rig, order, buyer, 1)
    rig.store.answers = [(200, {"acks": [], "refused": [], "messages": [forged, genuine]})]
    await rig.courier.exchange(rig.store.key.onion, order)
    assert [m.sender for m in rig.got] == [rig.store.key.onion]
    second = rig.store.requests[1]  # the acks owed go out in a second POST of the same exchange
    assert [a["body"]["id"] for a in second["acks"]] == [genuine["body"]["id"]]
    assert second["deliver"] == []  # the unacked order is not re-sent in the same exchange


async def test_transient_apply_failure_is_retried_by_the_round(rig: Rig) -> None:
    order, buyer, _ = await rig.place()
    rig.fail_next.append(True)
    rig.store.answers = [(200, {"acks": [], "refused": [], "messages": [store_message(rig, order, buyer, 1)]})]
    await rig.courier.exchange(rig.store.key.onion, order)
    assert rig.got == [] and await rig.side.mailbox.unapplied() == [(order, rig.store.key.onion)]

    async def none() -> list[tuple[str, str]]:
        return []

    await rig.courier.round(none)
    assert [m.kind for m in rig.got] == ["state"]


async def test_vendor_side_messages_on_the_same_mailbox_are_not_carried(rig: Rig) -> None:
    # This node also runs a store: its messages to a buyer wait for that buyer's poll, never posted by us.
    store_key, buyer = StoreKey.generate(), StoreKey.generate()
    await rig.side.mailbox.send(
        store_key, peer=buyer.onion, order=wire.new_order_id(), kind="escrow", fields={}, to=buyer.onion
    )

    async def none() -> list[tuple[str, str]]:
        return []

    wait = await rig.courier.round(none)
    assert rig.http.requests == 0 and wait > 1


async def test_round_exchanges_due_purchases_and_sleeps_until_the_next(rig: Rig) -> None:
    order, _, _msg = await rig.place()

    async def opened() -> list[tuple[str, str]]:
        return [(rig.store.key.onion, order)]

    rig.store.answers = [(503, "{}")]
    wait = await rig.courier.round(opened)
    assert len(rig.store.requests) == 1
    (held,) = await rig.side.mailbox.outgoing(order)
    assert 0 < wait <= held.next_try - int(time.time()) + 1


def test_pack_and_parse_reply() -> None:
    def out(size: int) -> OutMessage:
        return OutMessage("a" * 32, "b" * 32, "c" * 56, "message", 1, 0, Delivery.QUEUED, "", 0, 0, b"x" * size)

    assert len(pack([out(600_000), out(600_000)])) == 1
    assert len(pack([out(2_000_000)])) == 1  # alone, even when too big (the store refuses it: failed)
    assert len(pack([out(10)] * 80)) == wire.MAX_BATCH
    reply = parse_reply(json.dumps({"acks": [1], "refused": [{"id": "x", "reason": "no"}, {"id": 5}]}).encode())
    assert reply.acks == [1] and reply.refused == [("x", "no")] and reply.messages == []
    with pytest.raises(ValidationError):
        parse_reply(b"[]")


async def test_without_tor_exchange_is_unavailable(rig: Rig) -> None:
    order, _, _ = await rig.place()
    rig.courier.attach(None)
    with pytest.raises(Unavailable):
        await rig.courier.exchange(rig.store.key.onion, order)

    async def none() -> list[tuple[str, str]]:
        return []

    assert await rig.courier.round(none) == 30.0  # no tor: nothing to do until the poll interval


async def test_transient_refusals_are_retried_final_ones_fail(rig: Rig) -> None:
    (order, _, late), (other, _, bad) = await rig.place(), await rig.place()
    busy = wire.RETRY_LATER + "this store takes at most 120 new orders an hour"
    rig.store.answers = [(200, {"acks": [], "refused": [{"id": late.id, "reason": busy}], "messages": []})]
    await rig.courier.exchange(rig.store.key.onion, order)
    (held,) = await rig.side.mailbox.outgoing(order)
    assert held.delivery is Delivery.SENT and held.attempts == 1 and held.delivery_text() == "sent"
    rig.store.answers = [(200, {"acks": [], "refused": [{"id": bad.id, "reason": "malformed"}], "messages": []})]
    await rig.courier.exchange(rig.store.key.onion, other)
    (held,) = await rig.side.mailbox.outgoing(other)
    assert held.delivery_text() == "failed: malformed"


async def test_a_huge_seq_from_the_store_is_refused_not_a_crash(rig: Rig) -> None:
    order, buyer, _ = await rig.place()
    huge = store_message(rig, order, buyer, 2**63)
    rig.store.answers = [(200, {"acks": [], "refused": [], "messages": [huge]})]
    await rig.courier.exchange(rig.store.key.onion, order)  # was OverflowError out of SQLite
    assert rig.got == [] and await rig.side.mailbox.incoming(order) == []


async def test_an_unexpected_error_in_one_exchange_does_not_stop_the_round(rig: Rig) -> None:
    (first, buyer, _), (second, buyer2, _) = await rig.place(), await rig.place()
    rig.crash_on.add(first)
    rig.store.answers = [
        (200, {"acks": [], "refused": [], "messages": [store_message(rig, first, buyer, 1)]}),
        (200, {"acks": [], "refused": [], "messages": [store_message(rig, second, buyer2, 1)]}),
    ]

    async def opened() -> list[tuple[str, str]]:
        return [(rig.store.key.onion, first), (rig.store.key.onion, second)]

    await rig.courier.round(opened)  # logged with its traceback; the other purchase is still served
    assert [m.order for m in rig.got] == [second]


async def test_polls_of_an_unreachable_store_back_off_to_the_cap(rig: Rig) -> None:
    """A store that stays offline is asked less and less often (doubling up to ``poll_cap``), not every
    ``poll_interval`` for days."""
    now = [1_000_000]
    courier = Courier(
        rig.side.mailbox, rig.http, keys=rig.courier._keys, apply=rig.courier._apply, clock=lambda: now[0],
        poll_interval=10.0, poll_cap=100.0,
    )  # fmt: skip
    offline = StoreKey.generate().onion  # nothing answers for it on loopback: Unreachable
    pauses = []
    for _ in range(6):
        await courier._serve(offline, ["0123456789abcdef"], asyncio.Semaphore(1))
        pauses.append(courier._next_poll["0123456789abcdef"] - now[0])
    assert pauses == [20.0, 40.0, 80.0, 100.0, 100.0, 100.0]
