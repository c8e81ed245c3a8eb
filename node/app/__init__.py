"""App factory: the admin application owns every resource as a cleanup context.

``create_app`` returns the admin app (loopback). Its cleanup contexts, module
level functions below (and ``discovery.py``), open the storage, build the
market, start one listener per store (each serving its own storefront app),
keep the stores' onions published through tor, hold the outbound HTTP
client, run discovery (node onion, gossip, crawler, directory) and payments
(orders, escrow watcher, moderation; ``payments.py``). Each reads
what it needs from typed AppKeys, sets up, yields, and tears down in reverse.
The market tells the app about store changes through one observer
(``StoreEvents``), which says in code in which order the node reacts.
``serve`` binds the admin listener and runs until told to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from ..adapters.net import TorHttp
from ..adapters.store import Storage
from ..adapters.textindex import fts5_index
from ..adapters.tor import Tor as StemTor
from ..adapters.tor import TorSettings
from ..core.config import Config
from ..core.errors import ConfigError
from ..core.events import StoreChange, StoreChanged
from ..core.models import OnionSpec, StoreRecord, StoreStatus
from ..core.ports import Bitcoin, Http, Tor
from ..core.tasks import supervised
from ..hosting.publisher import Publisher
from ..hosting.spec import Unpublishable, onion_spec
from ..market.market import Limits, Market
from ..web import admin, admin_orders, api, appkeys, bodies, directory, listeners, middlewares, purchases, render
from ..web import backup as web_backup
from ..web import metrics as web_metrics
from ..web.auth import AdminAuth, make_guard
from ..web.listeners import url_for_host
from ..web.pagecache import PageCache
from .backups import backups_ctx
from .discovery import discovery_ctx
from .messaging import messaging_open_ctx, purchases_ctx
from .metrics import make_metrics
from .payments import BITCOIN, payments_open_ctx, payments_run_ctx

__all__ = ["create_app", "port_probe", "read_token", "request_limit", "serve", "url_for_host"]
log = logging.getLogger(__name__)
# The storage adapter itself (the app opens and closes it); web/ sees only the market.
STORAGE: web.AppKey[Storage] = web.AppKey("storage")


def templates_dir() -> Path:
    """``templates/`` beside the package (checkout), else the installed copy."""
    for candidate in (
        Path(__file__).resolve().parents[2] / "templates",
        Path(sys.prefix) / "share" / "pasar" / "templates",
    ):
        if (candidate / "base.html").is_file():
            return candidate
    raise ConfigError("cannot find Pasar's templates directory; reinstall Pasar")


def read_token(config: Config) -> str:
    try:
        token = config.admin_token_path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{config.admin_token_path} is missing: run `pasar init` first") from exc
    if len(token) < 32:
        raise ConfigError(f"{config.admin_token_path} is damaged: run `pasar init --new-token`")
    return token


def request_limit(config: Config) -> int:
    """The largest request body the admin listener accepts: a listing form with all its images."""
    return config.max_images * config.max_image_bytes + 1024 * 1024


def port_probe(host: str) -> Callable[[int], Awaitable[bool]]:
    """Whether a store listener could bind ``host:port`` now (checked before a store's port is changed)."""

    async def free(port: int) -> bool:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the listener binds
            try:
                probe.bind((host, port))
            except OSError:
                return False
        return True

    return free


class StoreEvents:
    """The app's one observer of the market: what the node does, in order, when a store changes.

    A part of the node that is not running (no tor, or before its context
    started) is skipped.
    """

    def __init__(self, app: web.Application) -> None:
        self.app = app

    async def __call__(self, event: StoreChanged) -> None:
        record, onion = event.record, event.record["onion"]
        if event.change is StoreChange.CREATED:
            await self._start_listener(record)
            await self._publish(record)
        elif event.change is StoreChange.DELETED:
            await self._withdraw(onion)  # before its listener stops: tor must not point at nothing
            await self._stop_listener(onion)
            self.app[appkeys.STATUS].pop(onion, None)
        elif event.change is StoreChange.PORT_CHANGED:
            await self._stop_listener(onion)
            await self._start_listener(record)
            await self._publish(record)  # the new target republishes
        elif event.change is StoreChange.ACCESS_CHANGED:
            await self._publish(record)
        # Every change may change what the store's announcement says (or whether it has one).
        announcer = self.app.get(appkeys.ANNOUNCER)
        if announcer is not None and "discovery" in self.app[appkeys.RUNNING]:
            announcer.wake()

    async def _start_listener(self, record: StoreRecord) -> None:
        if "listeners" in self.app[appkeys.RUNNING]:
            await listeners.start(self.app, record)

    async def _stop_listener(self, onion: str) -> None:
        if "listeners" in self.app[appkeys.RUNNING]:
            await listeners.stop(self.app, onion)

    async def _publish(self, record: StoreRecord) -> None:
        if "tor" in self.app[appkeys.RUNNING]:
            await publish(self.app, record)

    async def _withdraw(self, onion: str) -> None:
        if "tor" in self.app[appkeys.RUNNING]:
            await withdraw(self.app, onion)


async def publish(app: web.Application, record: StoreRecord) -> None:
    """Have tor publish the store as it is now, or withdraw it and say why not (no tor: nothing)."""
    publisher = app.get(appkeys.PUBLISHER)
    if publisher is None:
        return
    spec = await _spec(app, record)
    await publisher.publish(record["onion"], spec if isinstance(spec, OnionSpec) else None)
    if isinstance(spec, StoreStatus):
        app[appkeys.STATUS][record["onion"]] = spec


async def _spec(app: web.Application, record: StoreRecord) -> OnionSpec | StoreStatus:
    onion = record["onion"]
    target = app[appkeys.TARGETS].get(onion)
    if target is None:  # its listener failed (that status says why) or is not running
        return app[appkeys.STATUS].get(onion, StoreStatus.error("the store's listener is not running"))
    spec = onion_spec(record, (await app[appkeys.MARKET].key(onion)).add_onion_blob(), target)
    return StoreStatus.error(spec.reason) if isinstance(spec, Unpublishable) else spec


async def withdraw(app: web.Application, onion: str) -> None:
    publisher = app.get(appkeys.PUBLISHER)
    if publisher is not None:
        await publisher.publish(onion, None)


# -- cleanup contexts, in app.cleanup_ctx order (torn down in reverse) ---------
async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
    storage = app[STORAGE]
    await storage.open()
    yield
    await storage.close()


async def market_ctx(app: web.Application) -> AsyncIterator[None]:
    config, storage = app[appkeys.CONFIG], app[STORAGE]
    app[appkeys.MARKET] = Market(
        storage,
        Limits.from_config(config),
        port_free=port_probe(config.store_host),
        observer=StoreEvents(app),
        text_index=fts5_index,  # the storefront's search: FTS5 in memory, one index per catalog version
    )
    app[appkeys.AUTH].password_hash = await storage.admin_password_hash()
    yield


async def listeners_ctx(app: web.Application) -> AsyncIterator[None]:
    app[appkeys.RUNNERS] = {}
    for record in await app[appkeys.MARKET].stores():
        await listeners.start(app, record)
    app[appkeys.RUNNING].add("listeners")
    yield
    app[appkeys.RUNNING].discard("listeners")  # from now on store events start no listener
    await listeners.stop_all(app)


async def tor_ctx(app: web.Application) -> AsyncIterator[None]:
    """Publish every store's onion and keep them published (a supervised loop); without tor: nothing."""
    tor = app[appkeys.TOR]
    if tor is None:
        yield
        return
    publisher = app[appkeys.PUBLISHER] = Publisher(tor, status=app[appkeys.STATUS])
    for record in await app[appkeys.MARKET].stores():
        await publish(app, record)
    try:
        await publisher.start()
    except BaseException:  # a TorError names the fix; anything else is a bug: either way tor is closed
        del app[appkeys.PUBLISHER]
        await tor.close()
        raise
    task = asyncio.create_task(supervised("the tor publisher", publisher.run), name="tor-publisher")
    app[appkeys.RUNNING].add("tor")
    yield
    app[appkeys.RUNNING].discard("tor")  # store events during shutdown no longer reach tor
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await tor.close()


async def http_ctx(app: web.Application) -> AsyncIterator[None]:
    """Outbound HTTP through tor's SocksPort (wherever tor has it after each reconnect)."""
    tor = app[appkeys.TOR]
    if appkeys.HTTP not in app and tor is not None:
        app[appkeys.HTTP] = TorHttp(lambda: tor.socks)
    yield
    http = app.get(appkeys.HTTP)
    if http is not None:
        await http.close()


# storage < market (reads it) < payment databases and services (store pages and the node onion read
# them, so they open before any listener and close after the last one) < listeners (serve the market's
# stores) < tor (publishes the listeners' targets) < http (through tor) < discovery (gossips and
# crawls through http, publishes its onions through tor, serves moderation on the node onion) <
# the payment watcher (asks moderators' node onions through http) < the buyer's purchases (priced from
# the directory) and the loops carrying node-order messages. The mailbox and the vendor's side of node
# orders open with the payment databases: store onions answer node orders. Shutdown runs them backwards:
# the loops stop first, onions are withdrawn while their listeners still run, and the storage closes last.
CONTEXTS = (
    storage_ctx, market_ctx, payments_open_ctx, messaging_open_ctx, listeners_ctx, tor_ctx, http_ctx,
    discovery_ctx, payments_run_ctx, purchases_ctx, backups_ctx,
)  # fmt: skip


def create_app(
    config: Config,
    *,
    storage: Storage | None = None,
    tor: Tor | None = None,
    http: Http | None = None,
    bitcoin: Bitcoin | None = None,
) -> web.Application:
    """The admin app; its cleanup contexts own the storage, market, store listeners, tor, outbound HTTP, payments.

    Without ``tor`` stores are served on loopback only and there is no outbound HTTP (unless ``http`` is given).
    Without ``bitcoin`` the node talks to the Bitcoin Core its settings name (with ``payments`` on).
    """
    auth = AdminAuth(password_hash=None, api_token=read_token(config))
    app = web.Application(
        middlewares=[middlewares.errors, make_guard(auth), bodies.parse_forms], client_max_size=request_limit(config)
    )
    app.on_response_prepare.append(middlewares.admin_headers)
    app[appkeys.CONFIG], app[appkeys.AUTH], app[appkeys.PAGES] = config, auth, PageCache()
    app[STORAGE] = storage or Storage(config.data_dir)
    app[appkeys.TOR] = tor
    if http is not None:
        app[appkeys.HTTP] = http
    if bitcoin is not None:
        app[BITCOIN] = bitcoin
    app[appkeys.LISTENERS], app[appkeys.STATUS], app[appkeys.TARGETS] = {}, {}, {}
    app[appkeys.RUNNING] = set()
    app[appkeys.DISCOVERY_RUNNERS], app[appkeys.DISCOVERY_URLS] = {}, {}
    # The embedded tor runs as this user, so it can reach unix sockets in the data dir.
    app[appkeys.UNIX_TARGETS] = tor is not None and tor.embedded
    tdir = templates_dir()
    app[appkeys.CSS] = (tdir / "static" / "style.css").read_bytes()
    app[appkeys.JINJA] = render.make_env(tdir)
    render.attach(app, app[appkeys.JINJA])
    app.cleanup_ctx.extend(CONTEXTS)
    admin.add_routes(app)
    admin_orders.add_routes(app)
    purchases.add_routes(app)
    directory.add_admin_routes(app)
    web_backup.add_routes(app)
    api.add_routes(app)
    web_metrics.add_routes(app, make_metrics(app))  # GET /metrics: the admin listener only
    return app


def _discovery_urls(app: web.Application) -> dict[str, str]:
    """The node onion's (and public directory's) loopback URLs, for tests and local tools."""
    return {f"{name}_url": url for name, url in app[appkeys.DISCOVERY_URLS].items()}


async def serve(config: Config, stop: asyncio.Event, *, use_tor: bool = True) -> None:
    """Run the node until ``stop`` is set."""
    storage = Storage(config.data_dir)
    tor = StemTor(TorSettings.from_config(config)) if use_tor else None
    app = create_app(config, storage=storage, tor=tor)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    try:
        await runner.setup()  # a failure here still runs the cleanup contexts already entered
        try:
            await web.TCPSite(runner, config.admin_host, config.admin_port, reuse_address=True).start()
        except OSError as exc:
            raise ConfigError(
                f"admin port {config.admin_port} on {config.admin_host} is unavailable ({exc.strerror}); "
                "is another node running? choose another with --admin-port"
            ) from exc
        host, port = runner.addresses[0][:2]
        app[appkeys.AUTH].set_port(config.admin_host, port)
        admin_url = url_for_host(host, port)
        storage.lock.publish({"pid": os.getpid(), "admin_url": admin_url, **_discovery_urls(app)})
        log.info("admin on %s (loopback only)", admin_url)
        await stop.wait()
    finally:
        await runner.cleanup()
