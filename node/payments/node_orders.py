"""The vendor's side of orders from buyers' nodes (docs/protocol.md "Order messages").

A buyer's node sends signed messages on an order (``node.messaging``); the
store's node verifies, stores and acks them in its ``Mailbox``, then hands
them here in sequence order (``apply``): an ``order`` is placed through the
same checkout as a Tor-Browser buyer's (``Payments.checkout`` with a
``NodeBuyer``), a ``message``, ``psbt`` or ``dispute`` takes the same path as
the buyer's order page, a ``review`` goes into the store's catalog. Refusals
of an ``order`` are answered with a ``refused`` message; a transient failure
(Core or the moderator down) leaves the message waiting and ``run`` retries
it until ``payment_window`` has passed.

``sync`` tells the buyer's node everything about an order it was not told yet
(``node_orders_tell.plan``: deterministic message ids, so it is idempotent):
after every vendor action (``Payments.on_change``), after every watcher round
(``Payments.on_round``) and at start, which also repairs a crash between an
order change and its message.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Mapping, Sequence

from ..core.crypto import StoreKey
from ..core.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PasarError,
    Unauthorized,
    ValidationError,
)
from ..core.models import Sats
from ..core.reviews import verify as verify_review
from ..messaging import boxes
from ..messaging import wire as mwire
from ..messaging.mailbox import Mailbox
from ..messaging.models import ApplyError, InMessage, OutMessage
from . import node_orders_apply as apply
from . import node_orders_tell as tell
from .checkout import CHANNEL, NODE_CHANNEL, NodeBuyer
from .models import FINAL_STATES, Order
from .node_orders_read import order_fields, review_problem
from .sealing import open_for_store
from .service import Payments
from .watcher import accept_window

log = logging.getLogger(__name__)

_REFUSE = (ValidationError, BadRequest, Conflict, NotFound)  # an order the store will not take as asked
FINAL_LISTED = 200  # final orders per state looked at in each ``sync_all`` (the newest)
RETRY_EVERY = 15.0  # seconds between ``run``'s rounds


def is_node_order(order: Order) -> bool:
    return order.extra.get(CHANNEL) == NODE_CHANNEL


class NodeOrders:
    """The vendor's side of node orders: ``party``/``apply`` for the mailbox, ``answer`` for polls, ``sync``.

    Built once per node over its ``Payments`` and ``Mailbox``; it sets ``Payments.on_change`` and
    ``on_round`` so every vendor action and watcher round tells the buyers' nodes."""

    def __init__(self, payments: Payments, mailbox: Mailbox, *, every: float = RETRY_EVERY) -> None:
        self.payments = payments
        self.mailbox = mailbox
        self._every = every
        self._told: dict[str, tuple[object, ...]] = {}  # order id -> ``tell.fingerprint`` once fully synced
        self._locks: dict[str, asyncio.Lock] = {}
        self._wake = asyncio.Event()
        payments.on_change = self.sync
        payments.on_round = self.sync_all
        payments.node_messages = self.messages

    async def key(self, store: str) -> StoreKey:
        """The store's key (it signs, boxes and acks the store's side of its orders)."""
        return await self.payments.ctx.market.key(store)

    def wake(self) -> None:
        """A message waits: ``run`` starts a round now."""
        self._wake.set()

    # -- who may speak -------------------------------------------------------------------------------
    async def _stored(self, order_id: str) -> Order | None:
        try:
            return await self.payments.store.get(order_id)
        except NotFound:
            return None

    async def buyer(self, order_id: str) -> str | None:
        """The order's buyer key address: from the stored order, else from its held ``order`` message."""
        order = await self._stored(order_id)
        if order is not None:
            return tell.peer(order) or None
        return await self.mailbox.opener(order_id)

    async def party(self, order: str, sender: str) -> str | None:
        """None when ``sender`` may speak on ``order`` (for ``Mailbox.receive``); else the refusal."""
        stored = await self._stored(order)
        if stored is not None:
            if not is_node_order(stored):
                return "this order id is taken on this store: choose another"
            return None if tell.peer(stored) == sender else "another key placed this order"
        opener = await self.mailbox.opener(order)
        return None if opener in (None, sender) else "another key placed this order"

    # -- applying the buyer's messages ---------------------------------------------------------------
    async def apply(self, msg: InMessage) -> None:
        """The vendor's ``Applier``: ``ApplyError`` refuses for good, any other ``PasarError`` is retried."""
        if msg.kind == "order":
            await self._order(msg)
            return
        order = await self._stored(msg.order)
        if order is None or tell.peer(order) != msg.sender:
            raise ApplyError("no such order on this store (it was refused or never placed)")
        if msg.body.get("to") != order.store:
            raise ApplyError("the message is addressed to another store than the order's")
        try:
            await self._on_order(order, msg)
        except _REFUSE as exc:
            await self._note_refusal(order.id, msg.kind, exc.message)
            raise ApplyError(exc.message) from exc
        except ApplyError as exc:
            await self._note_refusal(order.id, msg.kind, exc.message)
            raise

    async def _note_refusal(self, order_id: str, kind: str, reason: str) -> None:
        """The refusal in the order's history, one entry per kind with a counter (``apply.refusal_noted``): the
        buyer's node is told the first (a ``state`` message)."""

        async def noted(order: Order) -> Order:
            changed = apply.refusal_noted(order, kind, reason, self.payments.ctx.now())
            return await self.payments.store.update(changed, expect=order)

        try:
            await self.payments.act(order_id, noted)
        except PasarError as exc:
            log.warning("order %s: buyer's %s refused: %s (not noted: %s)", order_id, kind, reason, exc.message)

    async def _on_order(self, order: Order, msg: InMessage) -> None:
        body, p = msg.body, self.payments
        if msg.kind == "message":
            await apply.message(p, order.id, await self._unbox(order.store, msg.sender, body.get("text")), msg.seq)
        elif msg.kind == "dispute":
            statement = await self._unbox(order.store, msg.sender, body.get("statement"))
            await apply.dispute(p, order.id, statement, msg.seq)
        elif msg.kind == "psbt":
            psbt = body.get("psbt")
            if not isinstance(psbt, str) or not psbt.strip():
                raise ApplyError("psbt: must be the signed PSBT (base64)")
            await apply.psbt(p, order.id, psbt, msg.seq)
        elif msg.kind == "review":
            await self._review(order, body.get("review"), msg.seq)
        else:
            raise ApplyError(f"a store does not take {msg.kind!r} messages")

    async def _unbox(self, store: str, sender: str, boxed: object) -> str:
        if not isinstance(boxed, str):
            raise ApplyError("the text must be a box")
        return boxes.unbox(await self.key(store), sender, boxed)

    async def _review(self, order: Order, raw: object, seq: int) -> None:
        """Verified and checked against the order, then into the catalog (which re-signs it): at most
        ``apply.MAX_REVIEWS`` per order, ``apply.REVIEW_GAP`` apart."""
        if apply.applied(order, seq):
            return
        now = self.payments.ctx.now()
        try:
            review = verify_review(raw, now=now)
        except BadRequest as exc:
            raise ApplyError(f"the review does not verify: {exc.message}") from exc
        problem = review_problem(order, review) or apply.review_limit(order, now)
        if problem is not None:
            raise ApplyError(problem)
        await self.payments.ctx.market.add_review(order.store, review.envelope())
        await apply.reviewed(self.payments, order.id, seq)

    async def _order(self, msg: InMessage) -> None:
        """Places the order; the store's refusal (or a transient failure past the payment window) is answered
        with a ``refused`` message."""
        held = await self._stored(msg.order)
        if held is not None:  # placed before a crash left the message unapplied: tell the buyer again
            if tell.peer(held) != msg.sender or msg.seq != 1:
                raise ApplyError("this order is placed already")
            await self.sync(held)
            return
        try:
            order = await self._place(msg)
        except _REFUSE as exc:
            fields = getattr(exc, "fields", {})
            await self._refuse(msg, exc.message, fields if isinstance(fields, Mapping) else {})
            return
        except PasarError as exc:
            late = self.payments.ctx.now() - msg.received_at > self.payments.settings.payment_window
            if not late:
                raise
            log.warning("order %s: refused after retrying since it arrived (%s)", msg.order, exc.message)
            await self._refuse(msg, "the store could not take the order in time; order again later", {})
            return
        await self.sync(order)

    async def _place(self, msg: InMessage) -> Order:
        read = order_fields(msg.body)
        if read.store != msg.body.get("to"):
            raise ValidationError({"store": "names another store than the one the order was sent to"})
        if not self.payments.settings.enabled:
            raise Conflict("payments are turned off on this node: this store takes no orders")
        ship_to = boxes.unbox(await self.key(read.store), msg.sender, read.ship_to_boxed)
        form = dataclasses.replace(read.form, ship_to=ship_to)
        node = NodeBuyer(msg.order, msg.sender, Sats(read.amount_sat), read.listing_hash)
        order, _token = await self.payments.checkout(read.store, form, node=node)
        log.info("order %s placed by a buyer's node", order.id)
        return order

    async def _refuse(self, msg: InMessage, reason: str, fields: Mapping[str, object]) -> None:
        store = msg.body.get("to")
        if not isinstance(store, str):
            raise ApplyError("the order names no store")
        try:
            key = await self.key(store)
        except NotFound as exc:
            raise ApplyError(f"no store {store} on this node") from exc
        await self.mailbox.send(
            key,
            peer=msg.sender,
            order=msg.order,
            kind="refused",
            fields={"reason": reason, "fields": {str(k): str(v) for k, v in fields.items()}},
            to=msg.sender,
            message_id=tell.message_id(msg.order, "refused"),
        )

    async def messages(self, order_id: str) -> tuple[list[OutMessage], list[InMessage]]:
        """The order's messages both ways: sent (each with its delivery state) and received (applied or not)."""
        return await self.mailbox.outgoing(order_id), await self.mailbox.incoming(order_id)

    # -- the buyer's polls ------------------------------------------------------------------------------
    async def answer(self, store: str, poll: object, now: int) -> list[bytes]:
        """The vendor messages of the polled order not yet delivered (oldest first), now marked ``sent``.

        The poll must be signed by the order's buyer key and name this store (``SignatureError`` /
        ``ValidationError`` / ``Unauthorized`` otherwise)."""
        asked = mwire.open_poll(poll, now=now)
        if asked.to != store:
            raise ValidationError({"poll": "asks another store"})
        if await self.buyer(asked.order) != asked.signer:
            raise Unauthorized("this poll is not signed by the key that placed the order")
        pending = (await self.mailbox.pending_for(asked.signer, asked.order))[: mwire.MAX_BATCH]
        if pending:
            await self.mailbox.mark_sent([m.id for m in pending], now)
        return [m.raw for m in pending]

    # -- telling the buyer's node ------------------------------------------------------------------------
    def _lock(self, order_id: str) -> asyncio.Lock:
        if len(self._locks) > 1000:
            self._locks = {k: v for k, v in self._locks.items() if v.locked()}
        return self._locks.setdefault(order_id, asyncio.Lock())

    async def sync(self, order: Order) -> None:
        """Queue every message ``order`` calls for that the buyer's node was not sent yet (idempotent)."""
        if not is_node_order(order) or not tell.peer(order):
            return
        async with self._lock(order.id):
            order = await self.payments.store.get(order.id)  # the newest (a concurrent sync may have run)
            key = await self.key(order.store)  # signs the escrow message's receipt (reviews bind to it)
            planned = tell.plan(order, accept_window(self.payments.ctx, order), self.payments.psbt_for_buyer, key=key)
            held = {m.id for m in await self.mailbox.outgoing(order.id)}
            missing = [p for p in planned if p.id not in held]
            if missing:
                await self._send(order, missing)
            self._told[order.id] = tell.fingerprint(order)

    async def _send(self, order: Order, planned: Sequence[tell.Planned]) -> None:
        key, buyer = await self.key(order.store), tell.peer(order)
        for p in planned:
            fields = p.fields
            if p.kind == "message":
                fields = {"text": boxes.box(key, buyer, open_for_store(key, p.sealed))}
            await self.mailbox.send(
                key, peer=buyer, order=order.id, kind=p.kind, fields=fields, to=buyer, message_id=p.id
            )

    async def _candidates(self) -> list[Order]:
        found = list(await self.payments.store.open_orders())
        for state in FINAL_STATES:
            found.extend(await self.payments.store.list(state=state, limit=FINAL_LISTED))
        return [o for o in found if is_node_order(o)]

    async def sync_all(self) -> None:
        """``sync`` every node order changed since it was last told (each at start); one failing is logged."""
        candidates = await self._candidates()
        listed = {o.id for o in candidates}
        self._told = {k: v for k, v in self._told.items() if k in listed}  # only orders still looked at
        for order in candidates:
            if self._told.get(order.id) == tell.fingerprint(order):
                continue
            try:
                await self.sync(order)
            except PasarError as exc:
                log.warning("order %s: the buyer's node is not told yet (%s); next round", order.id, exc.message)

    # -- the loop ------------------------------------------------------------------------------------------
    async def retry_once(self) -> int:
        """Applies what waits (buyers' messages a transient failure left unapplied); how many were applied.

        Only orders a buyer opened on this node's stores: the node's own purchases share the mailbox (the
        courier applies the stores' messages on them)."""
        done = 0
        for order, sender in await self.mailbox.unapplied():
            if await self.mailbox.opener(order) != sender:  # not a buyer's order on our store (a purchase of ours)
                continue
            try:
                done += await self.mailbox.apply_ready(order, sender, self.apply)
            except PasarError as exc:
                log.info("order %s: a message waits (%s); retried", order, exc.message)
        return done

    async def run(self) -> None:
        """Forever: apply what waits, tell buyers' nodes what changed, mark ``not delivered in N days`` the
        messages no poll took in ``message_give_up`` (still offered to polls: never a gap); every ``every``
        seconds or when woken. Start it once Payments is open."""
        while True:
            await self.retry_once()
            await self.sync_all()
            await self.mailbox.give_up_old(self.payments.ctx.now())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._every)
