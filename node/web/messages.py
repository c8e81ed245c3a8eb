"""``POST /api/v1/messages`` on a store onion: the vendor side of order messages (docs/protocol.md).

The buyer's node is the only one that connects: each exchange delivers its
messages of one order, acks the store's messages it received, and polls for
the store's messages it has not acked. This handler stores and acks what
came (``Mailbox.receive``: signatures, freshness, recipient, dedupe, the
order's parties), applies it in seq order through the vendor's
``NodeOrders`` (so the store's answer to a new order, its escrow, usually
rides back on the same exchange; an apply that takes longer than
``APPLY_BUDGET`` goes on after the answer, and ``drain`` waits for it at
shutdown), records the buyer's acks, and answers the poll. A malformed body
is a 4xx; a node that is not ready is a 503 (the buyer's node retries).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..core import envelope
from ..core.crypto import StoreKey
from ..core.errors import (
    BadRequest,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    ValidationError,
)
from ..messaging import wire
from . import appkeys, checkout

if TYPE_CHECKING:
    from ..messaging.mailbox import Mailbox
    from ..payments.node_orders import NodeOrders

log = logging.getLogger(__name__)
APPLY_BUDGET = 10.0  # seconds an exchange waits for what it delivered to be applied


async def _read_body(request: web.Request) -> Any:
    """The JSON body, at most ``wire.MAX_EXCHANGE_BYTES`` (the storefront's own body limit is smaller)."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType("send order messages as JSON with 'Content-Type: application/json'")
    limit = wire.MAX_EXCHANGE_BYTES
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"an exchange of order messages is at most {limit} bytes: send fewer at once")
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"an exchange of order messages is at most {limit} bytes: send fewer at once")
        chunks.append(chunk)
    try:
        return envelope.loads(b"".join(chunks))
    except RecursionError:
        raise BadRequest("the body nests too deeply") from None
    except ValidationError as exc:
        raise BadRequest(f"the body must be JSON ({exc.message})") from exc


def _check(body: Any) -> tuple[str, list[object], list[object], object]:
    """(order, deliver, acks, poll) of a well-formed exchange; ValidationError names what is wrong."""
    if not isinstance(body, dict):
        raise ValidationError({"body": "must be a JSON object"})
    problems: dict[str, str] = {}
    order, deliver, acks, poll = body.get("order"), body.get("deliver", []), body.get("acks", []), body.get("poll")
    if not wire.is_order_id(order):
        problems["order"] = "must be 16 to 32 lower-case hex characters"
    if not isinstance(deliver, list) or len(deliver) > wire.MAX_BATCH:
        problems["deliver"] = f"must be a list of at most {wire.MAX_BATCH} messages"
    if not isinstance(acks, list) or len(acks) > 2 * wire.MAX_BATCH:
        problems["acks"] = f"must be a list of at most {2 * wire.MAX_BATCH} acks"
    if poll is not None and not isinstance(poll, dict):
        problems["poll"] = "must be a poll envelope or null"
    if problems:
        raise ValidationError(problems, "malformed exchange of order messages")
    return str(order), deliver, acks, poll


def _home(app: web.Application) -> web.Application:
    """The app holding the mailbox: the store app itself, or the node app it was made from (where the
    messaging context puts it, as the checkout finds the payments service)."""
    if appkeys.MESSAGES in app:
        return app
    return app.get(checkout.ADMIN_APP, app)


async def _apply(mailbox: Mailbox, orders: NodeOrders, pairs: list[tuple[str, str]]) -> None:
    for order, sender in pairs:
        await mailbox.apply_ready(order, sender, orders.apply)


def _applied(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("applying received order messages failed; the node-order loop retries", exc_info=task.exception())


async def _apply_within_budget(
    applying: set[asyncio.Task[None]], mailbox: Mailbox, orders: NodeOrders, pairs: list[tuple[str, str]]
) -> None:
    """Apply what came, so the store's answer (an escrow) can ride back on this exchange; past ``APPLY_BUDGET``
    the answer goes without it (the acks must not wait on the moderator or Core) and applying goes on, held in
    ``applying`` (the app's ``appkeys.APPLYING``) until it ends."""
    task = asyncio.create_task(_apply(mailbox, orders, pairs), name="apply order messages")
    applying.add(task)
    task.add_done_callback(applying.discard)
    task.add_done_callback(_applied)
    await asyncio.wait([task], timeout=APPLY_BUDGET)


async def drain(applying: set[asyncio.Task[None]], timeout: float = 30.0) -> None:
    """Wait for the applies in ``applying`` still running after their exchange answered (call at shutdown,
    before the mailbox closes); past ``timeout`` they are cancelled: what they had not applied stays stored and
    is applied again by the next run (a message is applied at least once, its effects once)."""
    if not applying:
        return
    _done, late = await asyncio.wait(list(applying), timeout=timeout)
    for task in late:
        task.cancel()
    if late:
        await asyncio.wait(late)


async def exchange(request: web.Request) -> web.Response:
    """Receive, apply and ack the buyer's messages; record its acks; answer its poll."""
    app = request.app
    home = _home(app)
    if not all(k in home for k in (appkeys.MESSAGES, appkeys.NODE_ORDERS, appkeys.APPLYING)):
        raise Unavailable("this store's node is not ready for order messages: try again shortly")
    mailbox, orders, store = home[appkeys.MESSAGES], home[appkeys.NODE_ORDERS], app[appkeys.STORE]
    order, deliver, acks, poll = _check(await _read_body(request))
    key = await app[appkeys.MARKET].key(store)
    now = int(time.time())

    def me(to: str) -> StoreKey | None:
        return key if to == store else None

    async def party(msg_order: str, sender: str) -> str | None:
        if msg_order != order:
            return "a message of another order than the exchange's"
        return await orders.party(msg_order, sender)

    received = await mailbox.receive(deliver, me=me, party=party, now=now)
    pairs = list(dict.fromkeys((m.order, m.sender) for m in received.new))
    if pairs:
        await _apply_within_budget(home[appkeys.APPLYING], mailbox, orders, pairs)
    if acks:
        await mailbox.mark_delivered(acks)
    answer: dict[str, object] = {
        "acks": received.acks,
        "refused": [{"id": mid, "reason": reason} for mid, reason in received.refused],
        "messages": [],
    }
    if poll is not None:
        try:
            answer["messages"] = [envelope.loads(raw) for raw in await orders.answer(store, poll, now)]
        except (BadRequest, Unauthorized) as exc:  # the deliveries above stand: their acks go back
            answer["poll_refused"] = exc.message
    return web.json_response(answer)
