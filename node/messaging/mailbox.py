"""The mailbox: every order message a node sends or receives, persisted in ``messages.sqlite``.

Both sides use one. Sending queues a signed message with the next seq of
its (order, sender) in one write transaction; delivery then moves it
``queued`` -> ``sent`` -> ``delivered`` (a verified ack) or ``failed:
<reason>`` (a final refusal, or expired); one waiting past the give-up
time reads ``failed: not delivered in N days`` but is still offered (a gap
would stop the peer for good). What a peer can make it hold is bounded
(``inbound.py``). Receiving verifies a batch off the event loop, stores it in one
write transaction (dedupe by id, order rules: ``inbound.py``) and signs acks;
applying hands the stored messages of one (order, sender) to the owning
feature in seq order, a message past a gap waiting for it. Every state
change is one write transaction: a restart loses nothing.

Applying is at least once: the feature's own state lives in another file,
so a crash between its commit and the mailbox's mark applies that message
again; appliers treat a message id they already applied as done.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence

from ..core import envelope
from ..core.crypto import StoreKey
from ..core.errors import PasarError, SignatureError, ValidationError
from ..core.models import Envelope
from ..core.ports import Database
from . import inbound, store, wire
from .commits import GroupCommit
from .models import ApplyError, InMessage, OutMessage, Received

log = logging.getLogger(__name__)
Applier = Callable[[InMessage], Awaitable[None]]
Me = Callable[[str], StoreKey | None]
Party = Callable[[str, str], Awaitable[str | None]]
APPLY_BATCH = 100  # messages applied between two marks (one write transaction)
_THREAD_BELOW = 4  # batches smaller than this are verified on the loop (a thread hop costs more)


def _now() -> int:
    return int(time.time())


class Mailbox:
    """One per node: the outbox and the inbox of every order, and the rules that move them."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], int] = _now,
        retry_first: float,
        retry_cap: float,
        give_up: int,
        rng: random.Random | None = None,
        new_orders_per_hour: int = wire.NEW_ORDERS_PER_HOUR,
    ) -> None:
        self._db = db
        self._writes = GroupCommit(db)
        self._clock = clock
        self._backoff = store.Backoff(first=retry_first, cap=retry_cap, give_up=give_up)
        self._rng = rng or random.Random()
        self._new_orders = inbound.NewOrderLimit(new_orders_per_hour)
        self._apply_locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()

    @property
    def give_up(self) -> int:
        return self._backoff.give_up

    # -- sending ---------------------------------------------------------------
    async def send(
        self,
        key: StoreKey,
        *,
        peer: str,
        order: str,
        kind: str,
        fields: Mapping[str, object],
        to: str,
        message_id: str | None = None,
    ) -> OutMessage:
        """Sign and queue a message with the next seq of (order, sender), in one write transaction.

        Idempotent by ``message_id``: an id already held returns the held message unchanged.
        """
        if not wire.is_address(peer):
            raise ValidationError({"peer": "must be a 56-character onion or key address"})
        key = wire.held_key(key)
        mid = message_id or wire.new_message_id()
        body = wire.message_body(mid, order, kind, to, fields)
        now = self._clock()

        def sign(seq: int) -> bytes:
            env = envelope.seal(key, wire.MSG_TYPE, body, seq=seq, issued_at=now, expires_at=now + wire.MSG_TTL)
            raw = wire.canonical(env)
            limit = wire.max_bytes(kind)  # what a receiver stores (docs/protocol.md): never queue what it refuses
            if len(raw) > limit:
                raise ValidationError({"fields": f"{kind} messages are at most {limit} bytes; this one is {len(raw)}"})
            return raw

        wire.check_json(body)
        new = store.NewOut(id=mid, order=order, sender=key.onion, peer=peer, kind=kind, now=now, sign=sign)
        return await self._writes.write(lambda conn: store.queue(conn, new))

    async def outgoing(self, order: str) -> list[OutMessage]:
        """Every message this node sent on ``order``, by seq."""
        return await self._db.execute_fn(lambda conn: store.outgoing(conn, order))

    async def due(self, now: int) -> dict[str, list[OutMessage]]:
        """peer -> its queued or sent messages whose next try has come, by (order, seq)."""
        by_peer: dict[str, list[OutMessage]] = {}
        for msg in await self._db.execute_fn(lambda conn: store.due(conn, now)):
            by_peer.setdefault(msg.peer, []).append(msg)
        return by_peer

    async def pending_for(self, peer: str, order: str, *, limit: int = 1000) -> list[OutMessage]:
        """The messages to ``peer`` on ``order`` not delivered yet (queued or sent), by seq."""
        return await self._db.execute_fn(lambda conn: store.pending_for(conn, peer, order, limit))

    async def next_tries(self) -> dict[tuple[str, str], int]:
        """(peer, order) -> the earliest next try of its queued or sent messages (when to wake up)."""
        return await self._db.execute_fn(store.next_tries)

    async def mark_sent(self, ids: Sequence[str], now: int) -> None:
        """Queued -> sent (handed to the peer); other states are left alone."""
        if ids:
            await self._writes.write(lambda conn: store.mark_sent(conn, list(ids), now))

    async def mark_delivered(self, acks: Sequence[object]) -> list[str]:
        """Verify each ack (signature, freshness, our message, from its peer); the ids now delivered."""
        now = self._clock()
        checked: list[store.AckCheck] = []
        for raw in acks:
            try:
                ack = wire.open_ack(raw, now=now)
            except (ValidationError, SignatureError) as exc:
                log.info("an ack was ignored: %s", exc.message)
                continue
            checked.append(store.AckCheck(ack.id, ack.order, ack.to, ack.signer))
        if not checked:
            return []
        return await self._writes.write(lambda conn: store.mark_delivered(conn, checked, now))

    async def retry_later(self, ids: Sequence[str], now: int, reason: str) -> None:
        """Back off (first, doubling, +-20 % jitter, capped). Past the give-up time the message reads ``failed: not
        delivered in N days`` yet stays waiting (retried at the cap, delivered if acked); past ``MSG_TTL`` it
        fails for good."""
        if not ids:
            return
        retries = [store.Retry(i, self._rng.uniform(0.8, 1.2)) for i in ids]
        await self._writes.write(lambda conn: store.retry_later(conn, retries, now, reason, self._backoff))

    async def fail(self, ids: Sequence[str], reason: str) -> None:
        """Mark failed (a permanent refusal by the peer); a delivered message stays delivered."""
        if ids:
            now = self._clock()
            await self._writes.write(lambda conn: store.fail(conn, list(ids), reason, now))

    async def give_up_old(self, now: int) -> list[str]:
        """Mark ``not delivered in N days`` the messages waiting longer than the give-up time (they are still
        offered: a gap would stop the peer for good) and fail those past ``MSG_TTL``; the ids marked now."""
        return await self._writes.write(lambda conn: store.give_up_old(conn, now, self._backoff))

    async def counts(self) -> dict[str, int]:
        """Sent messages by delivery state: every ``Delivery`` value, 0 included."""
        return await self._db.execute_fn(store.counts)

    async def inbox_counts(self) -> dict[str, int]:
        """Received messages: ``waiting`` (for their turn or a retry), ``applied``, ``rejected``."""
        return await self._db.execute_fn(store.inbox_counts)

    # -- receiving ---------------------------------------------------------------
    async def receive(self, raws: Sequence[object], *, me: Me, party: Party, now: int) -> Received:
        """Verify, dedupe, store and ack a batch; see ``inbound.py`` for the rules.

        Signatures are checked (and acks signed ahead) on a worker thread, so ``me`` (a plain lookup) runs
        there too; the batch is stored in one write transaction; the acks of the messages stored or held
        already are returned, the others dropped. ``party`` is asked once per (order, sender) of the batch;
        it returns None for an order it does not know (the mailbox's own rules decide who may open one).
        """
        raws = list(raws)
        if len(raws) < _THREAD_BELOW:
            results = inbound.check_batch(raws, now, me)
        else:
            results = await asyncio.to_thread(inbound.check_batch, raws, now, me)
        refused = [(r.id, r.reason) for r in results if isinstance(r, inbound.Refusal)]
        checked = [r for r in results if isinstance(r, inbound.Checked)]
        ok = await self._parties(checked, party, refused)
        if not ok:
            return Received(acks=[], refused=refused, new=[])
        stored = await self._writes.write(lambda conn: inbound.store(conn, ok, now, self._new_orders))
        refused.extend((r.id, r.reason) for r in stored.refused)
        ackable = {(m.id, m.sender, m.seq) for m in stored.new} | {(c.header.id, c.sender, c.seq) for c in stored.held}
        acks: list[Envelope] = []
        seen: set[str] = set()
        for c in ok:
            if (c.header.id, c.sender, c.seq) in ackable and c.header.id not in seen:
                seen.add(c.header.id)
                acks.append(c.ack)
        return Received(acks=acks, refused=refused, new=stored.new)

    async def _parties(
        self, checked: list[inbound.Checked], party: Party, refused: list[tuple[str, str]]
    ) -> list[inbound.Checked]:
        """Ask the owning feature whether each sender may speak on its order (held messages skip this)."""
        if not checked:
            return []
        ids = [c.header.id for c in checked]
        held = await self._db.execute_fn(lambda conn: store.held_ids(conn, ids))
        verdicts: dict[tuple[str, str], str | None] = {}
        ok: list[inbound.Checked] = []
        for c in checked:
            if held.get(c.header.id) == (c.header.order, c.sender, c.seq):
                ok.append(c)
                continue
            pair = (c.header.order, c.sender)
            if pair not in verdicts:
                verdicts[pair] = await party(*pair)
            problem = verdicts[pair]
            if problem is None:
                ok.append(c)
            else:
                refused.append((c.header.id, problem))
        return ok

    async def incoming(self, order: str) -> list[InMessage]:
        """Every message received on ``order``, by (sender, seq)."""
        return await self._db.execute_fn(lambda conn: store.incoming(conn, order))

    async def opener(self, order: str) -> str | None:
        """The key address that opened ``order`` with its ``order`` message (the vendor side's buyer), if held."""
        return await self._db.execute_fn(lambda conn: store.opener(conn, order))

    async def unapplied(self) -> list[tuple[str, str]]:
        """(order, sender) pairs with a message waiting (for its turn or after a transient failure)."""
        return await self._db.execute_fn(store.unapplied)

    # -- applying -------------------------------------------------------------------
    async def apply_ready(self, order: str, sender: str, apply: Applier) -> int:
        """Apply the messages of (order, sender) in seq order while the next one is held; how many were done.

        ``ApplyError``: marked ``rejected: <reason>`` and passed. Another ``PasarError``: left waiting (retried
        later, the order kept). Outcomes are written in one transaction per ``APPLY_BATCH`` messages.
        """
        pair = (order, sender)
        lock = self._apply_locks.get(pair)
        if lock is None:
            lock = self._apply_locks[pair] = asyncio.Lock()
        async with lock:
            done = 0
            while True:
                ready = await self._db.execute_fn(lambda conn: store.ready(conn, order, sender, APPLY_BATCH))
                outcomes: dict[str, tuple[int, str]] = {}
                try:
                    stopped = await self._apply_run(ready, apply, outcomes)
                finally:
                    await self._mark(order, sender, outcomes)
                done += len(outcomes)
                if stopped or len(ready) < APPLY_BATCH:
                    return done

    async def _mark(self, order: str, sender: str, outcomes: dict[str, tuple[int, str]]) -> None:
        if outcomes:
            await self._writes.write(lambda conn: store.mark_applied(conn, order, sender, outcomes))

    @staticmethod
    async def _apply_run(ready: list[InMessage], apply: Applier, outcomes: dict[str, tuple[int, str]]) -> bool:
        """Apply ``ready`` in order into ``outcomes``; True when a transient failure stopped the run."""
        for msg in ready:
            try:
                await apply(msg)
            except ApplyError as exc:
                log.warning("order %s: %s message %s rejected: %s", msg.order, msg.kind, msg.id, exc.message)
                outcomes[msg.id] = (msg.seq, f"rejected: {exc.message}")
            except PasarError as exc:
                log.info("order %s: %s message %s waits (%s)", msg.order, msg.kind, msg.id, exc.message)
                return True
            else:
                outcomes[msg.id] = (msg.seq, "applied")
        return False
