"""The buyer side's sender: carries a purchase's messages to the store's onion and brings its answers back.

The buyer's node is the only one that opens connections (it needs no
reachable address, and no reply address links two purchases). One exchange
is a ``POST http://<store>.onion/api/v1/messages`` with the order's waiting
messages (oldest first), the acks it owes the store, and a poll signed by
the order key; the answer carries acks, permanent refusals and the store's
messages, which are stored, applied (``apply``, the purchases' callback)
and acked in the next POST of the same exchange. A failed POST backs the
messages off (``Mailbox.retry_later``). Nothing here is state a restart
would need: unsent acks are owed again when the store re-sends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..core import ports
from ..core.crypto import StoreKey
from ..core.errors import PasarError, Unavailable, Unreachable, ValidationError
from ..core.models import Envelope
from . import wire
from .mailbox import Applier, Mailbox
from .models import OutMessage

log = logging.getLogger(__name__)
Keys = Callable[[str], Awaitable[StoreKey | None]]
OpenOrders = Callable[[], Awaitable[list[tuple[str, str]]]]
ROUNDS = 4  # POSTs in one exchange at most (deliver, then ack what came back, ...)
REQUEST_BUDGET = 900 * 1024  # bytes of messages in one POST (the store takes at most 1 MiB)
ACTIVE_POLL = 5.0  # seconds before the next poll of an order that just had news
STORES_AT_ONCE = 8
MIN_SLEEP = 0.2
GIVE_UP_EVERY = 3600.0


def _now() -> int:
    return int(time.time())


@dataclass(frozen=True)
class Reply:
    """The store's answer to one POST, its shape checked (the envelopes are verified by the mailbox)."""

    acks: list[object]
    refused: list[tuple[str, str]]
    messages: list[object]


def parse_reply(body: bytes) -> Reply:
    """The answer's lists; ValidationError when it is not the documented shape."""
    try:
        value: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError({"answer": "not JSON"}) from exc
    if not isinstance(value, dict):
        raise ValidationError({"answer": "must be a JSON object"})
    acks, refused, messages = value.get("acks", []), value.get("refused", []), value.get("messages", [])
    if not (isinstance(acks, list) and isinstance(refused, list) and isinstance(messages, list)):
        raise ValidationError({"answer": "acks, refused and messages must be lists"})
    pairs = [
        (str(r["id"]), str(r["reason"])[:500])
        for r in refused
        if isinstance(r, dict) and isinstance(r.get("id"), str) and isinstance(r.get("reason"), str)
    ]
    return Reply(acks=acks[: 2 * wire.MAX_BATCH], refused=pairs, messages=messages[: wire.MAX_BATCH])


def pack(pending: Sequence[OutMessage], budget: int = REQUEST_BUDGET) -> list[OutMessage]:
    """The leading messages that fit in one request (at least one, the store refuses an oversized one)."""
    packed: list[OutMessage] = []
    size = 0
    for msg in pending[: wire.MAX_BATCH]:
        size += len(msg.raw) + 1
        if packed and size > budget:
            break
        packed.append(msg)
    return packed


class Courier:
    """Exchanges the buyer's order messages with stores: on demand (``wake``) and on a poll schedule (``run``)."""

    def __init__(
        self,
        mailbox: Mailbox,
        http: ports.Http | None,
        *,
        keys: Keys,
        apply: Applier,
        clock: Callable[[], int] = _now,
        poll_interval: float,
        deadline: float = 90.0,
        fresh_circuit: bool = False,
        poll_cap: float = 3600.0,
    ) -> None:
        self._mailbox = mailbox
        self._http = http
        self._keys = keys
        self._apply = apply
        self._clock = clock
        self._poll_interval = poll_interval
        self._deadline = deadline
        self._fresh_circuit = fresh_circuit
        self._owed: dict[str, list[Envelope]] = {}  # order -> acks for the store not posted yet
        self._next_poll: dict[str, float] = {}  # order -> clock time of its next poll
        # order -> exchanges failed in a row: its polls back off (doubling up to ``poll_cap``), so a store that is
        # offline for days is not asked every ``poll_interval``; ``wake`` (something new to send) still tries at once.
        self._failed: dict[str, int] = {}
        self._poll_cap = max(poll_cap, poll_interval)
        self._store_locks: dict[str, asyncio.Lock] = {}
        self._foreign: set[str] = set()  # orders with waiting messages that are not purchases (the vendor side)
        self._woken = asyncio.Event()
        self._last_give_up = -math.inf

    def attach(self, http: ports.Http | None) -> None:
        """Use ``http`` from now on (tor came up, or went away: None)."""
        self._http = http
        self.wake()

    def wake(self) -> None:
        """Something was queued: run a round now."""
        self._woken.set()

    # -- one exchange --------------------------------------------------------------
    async def exchange(self, store: str, order: str) -> None:
        """POST the order's waiting messages, owed acks and a poll; record what comes back (a few POSTs at most).

        ``Unreachable`` when the store did not answer (the messages are backed off first); ``Unavailable``
        without tor.
        """
        await self._exchange(store, order)

    async def _exchange(self, store: str, order: str) -> bool:
        """One exchange; True when anything moved (delivered, refused or received)."""
        if self._http is None:
            raise Unavailable("tor is not running: order messages wait in the outbox until it is")
        lock = self._store_locks.setdefault(store, asyncio.Lock())
        async with lock:
            posted: set[str] = set()
            active = False
            for _ in range(ROUNDS):
                more, moved = await self._round(store, order, posted)
                active = active or moved
                if not more:
                    break
            return active

    async def _round(self, store: str, order: str, posted: set[str]) -> tuple[bool, bool]:
        """One POST; (another POST is needed, anything moved)."""
        key = await self._keys(order)
        pending = [m for m in await self._mailbox.pending_for(store, order, limit=wire.MAX_BATCH) if m.id not in posted]
        deliver = pack(pending)
        posted.update(m.id for m in deliver)
        owed = self._owed.pop(order, [])
        now = self._clock()
        request: dict[str, object] = {
            "order": order,
            "deliver": [json.loads(m.raw) for m in deliver],
            "acks": owed,
            "poll": None if key is None else wire.seal_poll(key, order=order, store=store, now=now),
        }
        try:
            reply = await self._post(store, request)
        except (Unreachable, Unavailable) as exc:
            self._owed.setdefault(order, [])[:0] = owed
            await self._mailbox.retry_later([m.id for m in deliver], now, exc.message)
            raise
        moved = await self._record(deliver, reply, now)
        received = await self._take(store, order, key, reply.messages)
        more = bool(self._owed.get(order)) or len(reply.messages) >= wire.MAX_BATCH or len(pending) > len(deliver)
        return more, moved or received

    async def _post(self, store: str, request: dict[str, object]) -> Reply:
        """One exchange, on circuits of the purchase's own (``isolation``): the store cannot link two purchases of
        this node by the circuits they arrive on, nor a purchase to this node's crawls of it."""
        http = self._http
        if http is None:
            raise Unavailable("tor is not running: order messages wait in the outbox until it is")
        url = f"http://{store}.onion{wire.EXCHANGE_PATH}"
        body = json.dumps(request, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        reply = await http.post(
            url,
            body,
            deadline=self._deadline,
            attempts=2,
            max_bytes=wire.MAX_EXCHANGE_BYTES + 64 * 1024,
            fresh_circuit=self._fresh_circuit,
            isolation=f"order-{request.get('order', '')}",
        )
        if reply.status != 200:
            text = reply.body[:300].decode("utf-8", "replace")
            raise Unreachable(f"{store}.onion answered order messages with HTTP {reply.status}: {text}")
        try:
            return parse_reply(reply.body)
        except ValidationError as exc:
            raise Unreachable(f"{store}.onion sent a malformed answer to order messages ({exc.message})") from exc

    async def _record(self, deliver: list[OutMessage], reply: Reply, now: int) -> bool:
        """Sent, delivered (verified acks), failed (refusals), or backed off (neither); True if any was decided."""
        ids = [m.id for m in deliver]
        await self._mailbox.mark_sent(ids, now)
        delivered = set(await self._mailbox.mark_delivered(reply.acks))
        refused = {i: r for i, r in reply.refused if i in ids and i not in delivered}
        later = {i: r for i, r in refused.items() if wire.is_transient(r)}  # busy, behind, clocks apart
        final = {i: r for i, r in refused.items() if i not in later}
        for reason in sorted(set(final.values())):
            await self._mailbox.fail([i for i, r in final.items() if r == reason], reason)
        for reason in sorted(set(later.values())):
            await self._mailbox.retry_later([i for i, r in later.items() if r == reason], now, reason)
        rest = [i for i in ids if i not in delivered and i not in refused]
        await self._mailbox.retry_later(rest, now, "the store did not acknowledge it")
        return bool(delivered or final)

    async def _take(self, store: str, order: str, key: StoreKey | None, messages: list[object]) -> bool:
        """Store the store's messages on ``order`` (owing their acks), then apply what is ready."""
        if key is None or not messages:
            return False

        def me(to: str) -> StoreKey | None:
            return key if to == key.onion else None

        async def party(msg_order: str, sender: str) -> str | None:
            if msg_order != order:
                return "a message of another order in this exchange"
            return None if sender == store else "only the store may send messages on this purchase"

        received = await self._mailbox.receive(messages, me=me, party=party, now=self._clock())
        for mid, reason in received.refused:
            log.warning("order %s: a message from %s.onion was refused (%s): %s", order, store, mid or "no id", reason)
        if received.acks:
            self._owed.setdefault(order, []).extend(received.acks)
        await self._mailbox.apply_ready(order, store, self._apply)
        return bool(received.new)

    # -- the loop ------------------------------------------------------------------------
    async def run(self, open_orders: OpenOrders) -> None:
        """Forever: exchange for every purchase with messages due or a poll due; sleep until the next one."""
        while True:
            self._woken.clear()
            wait = await self.round(open_orders)
            try:
                async with asyncio.timeout(wait):
                    await self._woken.wait()
            except TimeoutError:
                pass

    async def round(self, open_orders: OpenOrders) -> float:
        """One pass over the due purchases; the seconds until the next one is due."""
        now = self._clock()
        if self._http is None:
            return self._poll_interval
        schedule = await self._schedule(open_orders)
        due = [(store, order) for (store, order), at in schedule.items() if at <= now]
        by_store: dict[str, list[str]] = {}
        for store, order in due:
            by_store.setdefault(store, []).append(order)
        gate = asyncio.Semaphore(STORES_AT_ONCE)
        await asyncio.gather(*(self._serve(store, orders, gate) for store, orders in by_store.items()))
        await self._retry_unapplied()
        await self._give_up_old(now)
        later = await self._schedule(open_orders)
        soonest = min(later.values(), default=now + self._poll_interval)
        return max(MIN_SLEEP, min(self._poll_interval, soonest - self._clock()))

    async def _schedule(self, open_orders: OpenOrders) -> dict[tuple[str, str], float]:
        """(store, order) -> when it is next due: its earliest waiting message, or its next poll."""
        schedule: dict[tuple[str, str], float] = {}
        for store, order in await open_orders():
            schedule[(store, order)] = self._next_poll.get(order, -math.inf)
        for (peer, order), next_try in (await self._mailbox.next_tries()).items():
            if (peer, order) not in schedule and not await self._is_purchase(peer, order):
                continue
            schedule[(peer, order)] = min(schedule.get((peer, order), math.inf), next_try)
        return schedule

    async def _is_purchase(self, peer: str, order: str) -> bool:
        if order in self._foreign:
            return False
        key = await self._keys(order)
        if key is None or key.onion == peer:  # the vendor side's message to a buyer, not ours to carry
            if len(self._foreign) > 100_000:
                self._foreign.clear()
            self._foreign.add(order)
            return False
        return True

    async def _serve(self, store: str, orders: list[str], gate: asyncio.Semaphore) -> None:
        async with gate:
            for order in orders:
                active, answered = False, False
                try:
                    active, answered = await self._exchange(store, order), True
                except (Unreachable, Unavailable) as exc:
                    log.info("order %s: %s.onion not reached; will retry (%s)", order, store, exc.message)
                except PasarError as exc:
                    log.warning("order %s: exchange with %s.onion failed: %s", order, store, exc.message)
                except Exception:  # a bug or a hostile answer: logged with its traceback, backed off, the loop goes on
                    log.exception("order %s: exchange with %s.onion failed unexpectedly; will retry", order, store)
                if answered:
                    self._failed.pop(order, None)
                else:
                    self._failed[order] = self._failed.get(order, 0) + 1
                self._next_poll[order] = self._clock() + self._pause(order, active)

    def _pause(self, order: str, active: bool) -> float:
        """Seconds until ``order``'s next poll: soon while the store is talking, the poll interval when quiet,
        doubling after each failed exchange in a row (up to ``poll_cap``)."""
        if active:
            return min(ACTIVE_POLL, self._poll_interval)
        return min(self._poll_interval * (1 << min(self._failed.get(order, 0), 30)), self._poll_cap)

    async def _retry_unapplied(self) -> None:
        """Apply store messages a transient failure left waiting (only purchases: the vendor side is not ours)."""
        for order, sender in await self._mailbox.unapplied():
            key = await self._keys(order)
            if key is None or sender == key.onion:
                continue
            try:
                await self._mailbox.apply_ready(order, sender, self._apply)
            except Exception:  # one purchase's bug must not stop the others' messages
                log.exception("order %s: applying the store's messages failed unexpectedly; will retry", order)

    async def _give_up_old(self, now: int) -> None:
        if now - self._last_give_up >= GIVE_UP_EVERY:
            self._last_give_up = now
            late = await self._mailbox.give_up_old(now)
            if late:
                log.warning("%d order message(s) not delivered in time (still sent at the retry cap)", len(late))
