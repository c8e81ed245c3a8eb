"""Node-to-node orders' cleanup contexts: the mailbox, the vendor's side, the buyer's purchases, the courier.

``messaging_open_ctx`` opens ``messages.sqlite`` (outbox, inbox; ``synchronous=FULL``) and builds the
vendor's side of node orders before any listener starts, because every store onion answers
``POST /api/v1/messages`` with them. ``purchases_ctx`` runs once discovery (the buyer prices from its
directory's signed catalogs) and outbound HTTP exist: it opens ``purchases.sqlite``, builds the buyer's
``Purchases`` and the ``Courier`` that carries the buyer's messages to stores and collects theirs, and runs
the loops: the courier, the vendor's retry-and-sync loop, the buyer's escrow watcher, and the directory's
on-chain check of reviews. They stop first at
shutdown, before the databases they write close.

``open_messaging`` and ``open_purchases`` also serve the CLI on a stopped node's data directory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

from aiohttp import web

from ..adapters import messages_schema, purchases_schema
from ..core.config import Config
from ..core.errors import PasarError, WalletError
from ..core.ports import Bitcoin, Http
from ..core.tasks import supervised
from ..discovery.review_checks import ReviewChecks
from ..discovery.service import Discovery
from ..messaging.courier import Courier
from ..messaging.mailbox import Mailbox
from ..payments.node_orders import NodeOrders
from ..payments.review_check import ChainReviewChecker
from ..payments.service import Payments
from ..payments.settings import PaymentSettings
from ..purchases.service import Purchases
from ..web import appkeys, messages
from .payments import PARTS, stop_tasks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Messaging:
    mailbox: Mailbox
    node_orders: NodeOrders


@dataclass(frozen=True)
class Purchasing:
    purchases: Purchases
    courier: Courier


async def open_messaging(config: Config, stack: AsyncExitStack, payments: Payments) -> Messaging:
    """``messages.sqlite`` and the vendor's side of node orders; closed by ``stack``."""
    db = messages_schema.messages_database(config.data_dir / "messages.sqlite")
    await db.open()
    stack.push_async_callback(db.close)
    mailbox = Mailbox(
        db,
        retry_first=config.message_retry_first,
        retry_cap=config.message_retry_cap,
        give_up=config.message_give_up,
    )
    return Messaging(mailbox=mailbox, node_orders=NodeOrders(payments, mailbox))


async def open_purchases(
    config: Config,
    stack: AsyncExitStack,
    *,
    mailbox: Mailbox,
    bitcoin: Bitcoin | None,
    discovery: Discovery,
    http: Http | None,
) -> Purchasing:
    """``purchases.sqlite``, the buyer's purchases and the courier (idle without ``http``); closed by ``stack``."""
    db = purchases_schema.purchase_database(config.data_dir / "purchases.sqlite")
    await db.open()
    stack.push_async_callback(db.close)
    purchases = Purchases(db, mailbox, bitcoin, discovery.directory, PaymentSettings.from_config(config))
    courier = Courier(
        mailbox,
        http,
        keys=purchases.key,
        apply=purchases.apply,
        poll_interval=config.purchase_poll_interval,
        poll_cap=config.message_retry_cap,
    )
    purchases.attach(wake=courier.wake, publish_review=discovery.publish_review)
    return Purchasing(purchases=purchases, courier=courier)


async def messaging_open_ctx(app: web.Application) -> AsyncIterator[None]:
    """The mailbox and the vendor's side, before the listeners (store onions answer node orders)."""
    async with AsyncExitStack() as stack:
        parts = await open_messaging(app[appkeys.CONFIG], stack, app[appkeys.PAYMENTS])
        app[appkeys.MESSAGES], app[appkeys.NODE_ORDERS] = parts.mailbox, parts.node_orders
        applying: set[asyncio.Task[None]] = set()
        app[appkeys.APPLYING] = applying
        yield
        await messages.drain(applying)  # the listeners have stopped: applies that outlived their exchange end first


async def _watch_purchases(purchases: Purchases, every: float) -> None:
    """The buyer's escrow watcher: funding outpoints and blocks, payouts left unsigned; Core down skips rounds."""
    down = False
    while True:
        try:
            await purchases.watch_once()
            down = False
        except WalletError as exc:
            if not down:
                log.warning("purchase watching paused: %s", exc.message)
            down = True
        await asyncio.sleep(every)


async def purchases_ctx(app: web.Application) -> AsyncIterator[None]:
    """The buyer's purchases and the loops of both sides, once discovery and outbound HTTP exist."""
    config = app[appkeys.CONFIG]
    async with AsyncExitStack() as stack:
        buying = await open_purchases(
            config,
            stack,
            mailbox=app[appkeys.MESSAGES],
            bitcoin=app[PARTS].bitcoin,
            discovery=app[appkeys.DISCOVERY],
            http=app.get(appkeys.HTTP),
        )
        app[appkeys.PURCHASES] = buying.purchases
        node_orders = app[appkeys.NODE_ORDERS]
        checks = ReviewChecks(  # the directory's on-chain check of reviews' escrow outpoints (Core: "checked")
            app[appkeys.DISCOVERY].directory,
            ChainReviewChecker(app[PARTS].bitcoin, config.bitcoin_network),
            interval=min(60.0, float(config.crawl_interval)),
        )
        try:
            await node_orders.sync_all()  # what a crash left untold
        except PasarError as exc:
            log.warning("node orders: the buyers are not told everything yet (%s); retried", exc.message)
        loops = [
            ("the courier", lambda: buying.courier.run(buying.purchases.open_orders)),
            ("the node-order loop", node_orders.run),
            ("the purchase watcher", lambda: _watch_purchases(buying.purchases, config.payment_poll_interval)),
            ("the review checks", checks.run),
        ]
        tasks = [asyncio.create_task(supervised(name, run), name=name) for name, run in loops]
        try:
            yield
        finally:
            await stop_tasks(tasks)
