"""Discovery's cleanup context: its databases, the node onion, the public directory onion, its loops.

The node onion (own key, ``node.key``) serves gossip and mirrors on its own
loopback listener; the directory onion (``directory.key``, only with
``directory_public``) serves the search pages and the signed blocklist.
Both are published through the same publisher as the stores. The gossip,
announcer and crawler loops run under ``supervised`` while the node runs
with outbound HTTP (tor) and ``gossip`` on; the databases are open either
way, so the API answers about peers and the directory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

from aiohttp import web

from ..adapters import directory_pg_schema, directory_schema, gossip_schema, keyfiles
from ..adapters.pg import PgDatabase
from ..adapters.sqlite import SQLiteDatabase
from ..core.config import Config
from ..core.crypto import StoreKey
from ..core.errors import PasarError, Unreachable
from ..core.models import OnionSpec, PublishState, StoreStatus
from ..core.ports import Http
from ..core.tasks import supervised
from ..discovery.crawler import Crawler, CrawlLimits
from ..discovery.directory import Directory, DirectoryLimits
from ..discovery.directory_dialect import POSTGRES, SQLITE
from ..discovery.gossip import Gossip, GossipLimits, HttpTransport
from ..discovery.service import Announcer, BlocklistPublisher, Discovery
from ..web import appkeys, middlewares
from ..web.directory_app import create_directory_app
from ..web.listeners import socket_path, tcp_target, unix_target, url_for_host
from ..web.nodeonion import create_node_app

log = logging.getLogger(__name__)
BLOCKS_REFRESH = 30.0  # seconds: a block made by another frontend of a shared PostgreSQL directory applies here


class Offline:
    """The gossip transport of a node without outbound HTTP (``--no-tor``, or the CLI on a stopped node)."""

    async def exchange(self, peer: str, message: bytes, *, alone: bool = False) -> bytes:
        raise Unreachable("this node has no outbound connection (it runs without tor)")


async def open_parts(config: Config, stack: AsyncExitStack, http: Http | None) -> Discovery:
    """Open the two databases and build gossip, directory and (with ``http``) the crawler; closed by ``stack``."""
    gossip_db = SQLiteDatabase(config.data_dir / "gossip.sqlite", gossip_schema.MIGRATIONS, synchronous="NORMAL")
    await gossip_db.open()
    stack.push_async_callback(gossip_db.close)
    directory = await open_directory(config, stack)
    node_key = await asyncio.to_thread(keyfiles.load_or_create, config.data_dir / "node.key")
    transport = HttpTransport(http) if http is not None else Offline()
    gossip = Gossip(
        gossip_db, transport, me=node_key.onion, limits=GossipLimits.from_config(config), blocked=directory.is_blocked
    )
    await gossip.open()
    crawler = None
    if http is not None:
        crawler = Crawler(http, directory, gossip, limits=CrawlLimits.from_config(config), subscriptions=_subs(config))
        stack.push_async_callback(crawler.close)  # a pass or thumbnail fetch under way ends before the DBs close
    return Discovery(gossip=gossip, directory=directory, crawler=crawler, node_key=node_key)


async def open_directory(config: Config, stack: AsyncExitStack) -> Directory:
    """The directory on ``directory.sqlite``, or on the PostgreSQL database of ``directory_dsn`` (closed by stack)."""
    limits = DirectoryLimits.from_config(config)
    if config.directory_dsn:
        pg = PgDatabase(config.directory_dsn, directory_pg_schema.MIGRATIONS, component=directory_pg_schema.COMPONENT)
        await pg.open()
        stack.push_async_callback(pg.close)
        directory = Directory(pg, limits=limits, dialect=POSTGRES)
    else:
        path = config.data_dir / "directory.sqlite"
        lite = SQLiteDatabase(path, directory_schema.MIGRATIONS, synchronous="NORMAL")
        await lite.open()
        stack.push_async_callback(lite.close)
        directory = Directory(lite, limits=limits, dialect=SQLITE)
    await directory.open()
    return directory


async def _refresh_blocks(directory: Directory) -> None:
    """Re-read the block list every BLOCKS_REFRESH s (a shared PostgreSQL directory: other frontends block too)."""
    while True:
        await asyncio.sleep(BLOCKS_REFRESH)
        await directory.refresh_blocks()


def _subs(config: Config) -> Callable[[], Awaitable[list[str]]]:
    async def subscriptions() -> list[str]:
        return list(config.blocklist_subscriptions)

    return subscriptions


async def _add_seeds(config: Config, gossip: Gossip, me: str) -> None:
    for seed in config.seed_peers:
        if seed.removesuffix(".onion") == me:
            continue
        try:
            await gossip.add_peer(seed, source="seed")
        except PasarError as exc:
            log.error("seed peer %s: %s", seed, exc.message)


async def _serve(app: web.Application, name: str, sub: web.Application, port: int, key: StoreKey) -> None:
    """Run ``sub`` on its own loopback listener and have tor publish it under ``key``."""
    config = app[appkeys.CONFIG]
    runner = web.AppRunner(sub, access_log=None, handle_signals=False, logger=middlewares.STORE_SERVER_LOG)
    await runner.setup()
    app[appkeys.DISCOVERY_RUNNERS][name] = runner
    try:
        await web.TCPSite(runner, config.store_host, port, reuse_address=True).start()
    except OSError as exc:
        app[appkeys.STATUS][key.onion] = StoreStatus.error(
            f"cannot listen on port {port} ({exc.strerror}); free it or change the {name}_port setting"
        )
        log.error("the %s onion: %s", name, app[appkeys.STATUS][key.onion])
        return
    host, bound = runner.addresses[0][:2]
    app[appkeys.DISCOVERY_URLS][name] = url_for_host(host, bound)
    unix = await unix_target(app, runner, key.onion) if app[appkeys.UNIX_TARGETS] else None
    target = unix or tcp_target(host, bound)
    app[appkeys.STATUS][key.onion] = StoreStatus(PublishState.LOCAL)
    publisher = app.get(appkeys.PUBLISHER)
    if publisher is not None:
        await publisher.publish(key.onion, OnionSpec(key_blob=key.add_onion_blob(), target=target))
    log.info("%s onion %s.onion served on %s", name, key.onion, app[appkeys.DISCOVERY_URLS][name])


async def _stop_serving(app: web.Application) -> None:
    publisher = app.get(appkeys.PUBLISHER)
    discovery = app[appkeys.DISCOVERY]
    for onion in (discovery.node_onion, discovery.directory_onion):
        if onion is not None and publisher is not None and "tor" in app[appkeys.RUNNING]:
            await publisher.publish(onion, None)
    runners = app[appkeys.DISCOVERY_RUNNERS]
    await asyncio.gather(*(r.cleanup() for r in runners.values()))
    runners.clear()
    for onion in (discovery.node_onion, discovery.directory_onion):
        path = socket_path(app[appkeys.CONFIG], onion) if onion else None
        if path is not None:
            Path(path).unlink(missing_ok=True)


def _reachable(app: web.Application) -> Callable[[str], bool]:
    """A store is worth announcing once buyers can reach it: published (or served locally, without tor)."""
    statuses = app[appkeys.STATUS]

    def ready(onion: str) -> bool:
        status = statuses.get(onion)
        return status is not None and status.state in (PublishState.PUBLISHED, PublishState.LOCAL)

    return ready


def _loops(app: web.Application, discovery: Discovery, announcer: Announcer) -> list[asyncio.Task[None]]:
    loops: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("gossip", discovery.gossip.run),
        ("the announcer of own stores", announcer.run),
    ]
    if discovery.crawler is not None:
        loops.append(("the crawler", discovery.crawler.run))
    return [asyncio.create_task(supervised(name, factory), name=f"discovery {name}") for name, factory in loops]


async def discovery_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open discovery; serve and publish the node onion (and the public directory); run the loops."""
    config = app[appkeys.CONFIG]
    async with AsyncExitStack() as stack:
        discovery = await open_parts(config, stack, app.get(appkeys.HTTP))
        discovery.running, discovery.gossip_on = True, config.gossip
        app[appkeys.DISCOVERY], app[appkeys.GOSSIP], app[appkeys.DIRECTORY] = (
            discovery,
            discovery.gossip,
            discovery.directory,
        )
        if discovery.crawler is not None:
            app[appkeys.CRAWLER] = discovery.crawler
        dir_key = await asyncio.to_thread(keyfiles.load_or_create, config.data_dir / "directory.key")
        app[appkeys.BLOCKLIST] = BlocklistPublisher(discovery.directory, dir_key, ttl=config.announce_ttl)
        tasks: list[asyncio.Task[None]] = []
        if config.gossip:
            await _add_seeds(config, discovery.gossip, discovery.node_onion)
            node_key = discovery.node_key
            await _serve(app, "node", create_node_app(app, onion=node_key.onion), config.node_port, node_key)
            announcer = Announcer(
                app[appkeys.MARKET],
                discovery.gossip,
                ttl=config.announce_ttl,
                interval=min(config.gossip_interval, 3600),
                ready=_reachable(app),
            )
            app[appkeys.ANNOUNCER] = announcer
            if app.get(appkeys.HTTP) is not None:
                tasks = _loops(app, discovery, announcer)
        if config.directory_public:
            discovery.directory_onion = dir_key.onion
            directory_app = create_directory_app(app, onion=dir_key.onion)
            await _serve(app, "directory", directory_app, config.directory_port, dir_key)
        if config.directory_dsn:
            refresh = supervised("the block list refresh", lambda: _refresh_blocks(discovery.directory))
            tasks.append(asyncio.create_task(refresh, name="discovery block list refresh"))
        app[appkeys.RUNNING].add("discovery")
        try:
            yield
        finally:
            app[appkeys.RUNNING].discard("discovery")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await _stop_serving(app)
