"""Payments' cleanup context: the order and moderation databases, Bitcoin Core, the watcher loop.

``open_payments`` builds the parts (also used by the CLI on a stopped node's
data directory): ``orders.sqlite`` (``synchronous=FULL``: an order state the
node confirmed must not come undone), ``moderation.sqlite``, the operator's
Bitcoin Core (``node/adapters/bitcoin.py``; tests pass their own through
``create_app(bitcoin=...)``), the moderator service and the vendor side's
moderator client, and the ``Payments`` facade.

At start the node asks Core which chain it runs: a chain other than
``bitcoin_network`` is a startup error naming both. Core down is not: the
node starts, checkout says payments are paused, and a reconnect task loads
the wallets once Core answers (the watcher catches up by itself: it reads
the escrow addresses' UTXOs, not a stream of events).

Before the payment and moderation watchers' first round, the re-watch pass
(``node/payments/rewatch.py``) makes sure the watch-only wallet holds every open
escrow's descriptor (after ``pasar restore``, or a new watch-only wallet) and that
Core's rescan for them is over: a watcher reading a wallet without them would
take funded escrows for empty ones (expired, or spent outside Pasar). With
nothing open it asks Core nothing; while Core is down or rescanning the watchers'
escrow rounds wait (``refresh``: checkout's status, moderators' offers and terms,
goes on; pages refresh checkout's status on their own too). The buyer's
purchases are re-watched next (their watcher keeps what it saw when the wallet
shows nothing, so it need not wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass

from aiohttp import web

from ..adapters import keyfiles, moderation_schema, payments_schema
from ..adapters.bitcoin import BitcoinCore, BitcoinSettings
from ..adapters.sqlite import SQLiteDatabase
from ..adapters.sqlite_schema import Migration
from ..core.config import Config
from ..core.crypto import StoreKey
from ..core.errors import ConfigError, Unavailable, WalletError
from ..core.ports import Bitcoin, Http
from ..core.tasks import supervised
from ..market.market import Market
from ..payments import rewatch, watcher
from ..payments.moderation import ModeratorService
from ..payments.moderator_client import ModeratorClient
from ..payments.order_store import OrderStore
from ..payments.service import Payments
from ..payments.settings import PaymentSettings
from ..web import appkeys

log = logging.getLogger(__name__)
# An adapter a test (or another embedding) gives ``create_app``; absent: built from the settings.
BITCOIN: web.AppKey[Bitcoin] = web.AppKey("bitcoin")
# bitcoin_network -> the chain names Core's getblockchaininfo may answer for it.
CHAINS = {"main": ("main",), "test": ("test", "testnet4"), "signet": ("signet",), "regtest": ("regtest",)}
RECONNECT_FIRST, RECONNECT_CAP = 2.0, 60.0
PAGE = 200  # records read at once by the re-watch pass


@dataclass(frozen=True)
class PaymentParts:
    payments: Payments
    moderation: ModeratorService
    orders: OrderStore
    bitcoin: Bitcoin | None  # None with ``payments = false``
    client: ModeratorClient  # the vendor side's link to moderators (outbound HTTP attached later)


PARTS: web.AppKey[PaymentParts] = web.AppKey("payment_parts")


def watch_wallet_name(node_onion: str) -> str:
    """The node's own watch-only wallet in Core (one per node, so two nodes can share one Core)."""
    return f"pasar-watch-{node_onion[:16]}"


def build_bitcoin(config: Config, node_key: StoreKey) -> Bitcoin | None:
    """The operator's Bitcoin Core from the settings; None when payments are off."""
    if not config.payments:
        return None
    return BitcoinCore(BitcoinSettings.from_config(config), watch_wallet=watch_wallet_name(node_key.onion))


async def _database(
    config: Config, stack: AsyncExitStack, name: str, migrations: Sequence[Migration]
) -> SQLiteDatabase:
    db = SQLiteDatabase(config.data_dir / name, migrations)
    await db.open()
    stack.push_async_callback(db.close)
    return db


async def open_payments(
    config: Config,
    stack: AsyncExitStack,
    *,
    market: Market,
    http: Http | None,
    bitcoin: Bitcoin | None = None,
) -> PaymentParts:
    """Open both databases and build the services; closed by ``stack``. Does not talk to Core."""
    orders_db = await _database(config, stack, "orders.sqlite", payments_schema.MIGRATIONS)
    moderation_db = await _database(config, stack, "moderation.sqlite", moderation_schema.MIGRATIONS)
    node_key = await asyncio.to_thread(keyfiles.load_or_create, config.data_dir / "node.key")
    if bitcoin is None:
        bitcoin = build_bitcoin(config, node_key)
        if isinstance(bitcoin, BitcoinCore):
            stack.callback(bitcoin.close)
    orders = OrderStore(orders_db)
    client = ModeratorClient(http, market)
    moderation = ModeratorService(
        moderation_db, bitcoin, node_key, network=config.bitcoin_network, max_fee_rate=config.max_fee_rate
    )
    payments = Payments(
        store=orders,
        market=market,
        bitcoin=bitcoin,
        moderation=client,
        settings=PaymentSettings.from_config(config),
    )
    return PaymentParts(payments=payments, moderation=moderation, orders=orders, bitcoin=bitcoin, client=client)


def wrong_chain(network: str, chain: str) -> ConfigError:
    return ConfigError(
        f"bitcoin_network is {network!r} but the Bitcoin Core at bitcoin_rpc_url runs the {chain!r} chain: "
        f"point bitcoin_rpc_url at a {network} node or set bitcoin_network to match it"
    )


async def check_chain(bitcoin: Bitcoin, network: str) -> bool:
    """True when Core answers on the configured chain; False when it does not answer (not fatal).

    A Core on another chain raises ``ConfigError`` naming both chains: addresses would be wrong.
    """
    try:
        chain = await bitcoin.chain()
    except WalletError as exc:
        log.warning("Bitcoin Core does not answer (%s); checkout is paused until it does", exc.message)
        return False
    if chain not in CHAINS.get(network, (network,)):
        raise wrong_chain(network, chain)
    await _load_wallets(bitcoin)
    return True


async def _load_wallets(bitcoin: Bitcoin) -> None:
    if isinstance(bitcoin, BitcoinCore):
        await bitcoin.ensure_wallets()


async def reconnect(bitcoin: Bitcoin, network: str, *, first: float = RECONNECT_FIRST) -> None:
    """Until Core answers: check its chain and load the wallets, then return (a wrong chain is logged)."""
    delay = first
    while True:
        await asyncio.sleep(delay)
        try:
            if await check_chain(bitcoin, network):
                log.info("Bitcoin Core answers again; payments resume")
                return
        except WalletError as exc:  # answered the chain, then failed loading a wallet
            log.warning("Bitcoin Core: %s", exc.message)
        except ConfigError as exc:
            log.error("%s; checkout stays paused", exc.message)
            return
        delay = min(delay * 2, RECONNECT_CAP)


async def stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def payments_loop(payments: Payments, gate: asyncio.Event) -> None:
    """``refresh`` (Core's status for checkout, moderators' offers and terms: no escrow read) every
    ``poll_interval`` until ``gate`` opens (the re-watch is done), then ``payments.run`` (refresh + watch)."""
    told = False
    while not gate.is_set():
        try:
            await payments.refresh()
        except WalletError as exc:
            if not told:
                log.info("moderator offers not refreshed while Bitcoin Core does not answer (%s)", exc.message)
            told = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gate.wait(), payments.settings.poll_interval)
    await payments.run()


def after(event: asyncio.Event, run: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """``run``, started once ``event`` is set."""

    async def gated() -> None:
        await event.wait()
        await run()

    return gated


async def _purchase_escrows(app: web.Application) -> list[rewatch.Watched]:
    """The buyer's open purchases' escrows; ``Unavailable`` until the purchases are open (a later context)."""
    purchases = app.get(appkeys.PURCHASES)
    if purchases is None:
        raise Unavailable("the purchases are not open yet")
    found: list[rewatch.Watched] = []
    offset = 0
    while page := await purchases.list(limit=PAGE, offset=offset):
        found += [w for p in page if not p.final for w in rewatch.watched(p.escrow, p.created_at)]
        offset += len(page)
    return found


async def vendor_escrows(orders: OrderStore, now: Callable[[], int]) -> list[rewatch.Watched]:
    """The escrows of exactly the orders the payment watcher reads (``watcher.watched_orders``)."""
    return rewatch.of_orders(await watcher.watched_orders(orders, now()))


async def moderator_escrows(moderation: ModeratorService) -> list[rewatch.Watched]:
    """The escrows of every case not decided yet (no cap): those this node may still act on."""
    return rewatch.of_cases(await moderation.active_cases())


async def _rewatch(app: web.Application, done: asyncio.Event) -> None:
    """Vendor orders' and moderation cases' escrows (then ``done``: the watchers start), then the purchases';
    then idle until shutdown (``supervised`` would start a loop that returns again)."""
    parts = app[PARTS]
    if parts.bitcoin is not None:
        vendor_side = functools.partial(vendor_escrows, parts.orders, parts.payments.ctx.now)
        moderator_side = functools.partial(moderator_escrows, parts.moderation)
        await rewatch.rewatch_until_done(parts.bitcoin, [vendor_side, moderator_side])
        done.set()
        await rewatch.rewatch_until_done(parts.bitcoin, [lambda: _purchase_escrows(app)])
    done.set()
    await asyncio.Event().wait()


async def payments_open_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the databases and build the services, before any listener serves a page that reads them; they
    close after every listener stopped (this context is entered before the listeners, so it exits after)."""
    async with AsyncExitStack() as stack:
        config, market = app[appkeys.CONFIG], app[appkeys.MARKET]
        parts = await open_payments(config, stack, market=market, http=None, bitcoin=app.get(BITCOIN))
        app[PARTS] = parts
        app[appkeys.PAYMENTS], app[appkeys.MODERATION] = parts.payments, parts.moderation
        yield


async def payments_run_ctx(app: web.Application) -> AsyncIterator[None]:
    """Once outbound HTTP exists: check Core's chain (wrong: startup error; down: paused), re-watch the open
    escrows, then run the watchers; they stop first at shutdown, before anything they use."""
    config, parts = app[appkeys.CONFIG], app[PARTS]
    parts.client.attach(app.get(appkeys.HTTP))
    tasks: list[asyncio.Task[None]] = []
    if parts.bitcoin is not None:
        try:
            reachable = await check_chain(parts.bitcoin, config.bitcoin_network)
        except WalletError as exc:  # the chain is right, a wallet could not be loaded
            log.warning("Bitcoin Core: %s; checkout is paused until it is fixed", exc.message)
            reachable = False
        if not reachable:
            tasks.append(asyncio.create_task(reconnect(parts.bitcoin, config.bitcoin_network), name="core"))
    rewatched = asyncio.Event()  # the watchers wait: without its descriptors the wallet shows funded escrows empty
    tasks.append(asyncio.create_task(supervised("the escrow re-watch", lambda: _rewatch(app, rewatched)), name="rw"))
    payments_run = functools.partial(payments_loop, parts.payments, rewatched)  # refreshes before the gate opens
    tasks.append(asyncio.create_task(supervised("the payment watcher", payments_run), name="payments"))
    if parts.bitcoin is not None:  # the moderator's own sighting of funded escrows (its refund window)
        cases_run = after(rewatched, parts.moderation.run)
        tasks.append(asyncio.create_task(supervised("the moderation watcher", cases_run), name="cases"))
    try:
        yield
    finally:
        await stop_tasks(tasks)
        parts.payments.ready.close()
