"""App factory: the admin application owns every resource as a cleanup context.

``create_app`` returns the admin app (loopback). Its cleanup contexts open the
storage, build the market, and start one listener per store, each serving its
own storefront application. ``serve`` binds the admin listener and runs until
told to stop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from .adapters.store import Storage
from .adapters.tor import OnionSpec, Tor, TorSettings
from .core.config import Config
from .core.errors import ConfigError, TorError
from .hosting import client_auth
from .hosting.publisher import Publisher
from .market.market import Limits, Market
from .web import admin, api, appkeys, bodies, middlewares, render
from .web.auth import AdminAuth, make_guard
from .web.pagecache import PageCache
from .web.storefront import create_store_app, loopback_hosts

log = logging.getLogger(__name__)


def templates_dir() -> Path:
    """``templates/`` beside the package (checkout), else the installed copy."""
    for candidate in (
        Path(__file__).resolve().parent.parent / "templates",
        Path(sys.prefix) / "share" / "pasar" / "templates",
    ):
        if (candidate / "base.html").is_file():
            return candidate
    raise ConfigError("cannot find Pasar's templates directory; reinstall Pasar")


def url_for_host(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def read_token(config: Config) -> str:
    try:
        token = config.admin_token_path.read_text().strip()
    except OSError:
        raise ConfigError(f"{config.admin_token_path} is missing: run `pasar init` first") from None
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


def limits_from(config: Config) -> Limits:
    return Limits(
        catalog_ttl=config.catalog_ttl,
        max_images=config.max_images,
        max_image_bytes=config.max_image_bytes,
        max_image_side=config.max_image_side,
        store_port_base=config.store_port_base,
        reserved_ports=frozenset({config.admin_port}),
    )


def tor_settings(config: Config) -> TorSettings:
    return TorSettings(
        data_dir=config.data_dir / "tor",
        control=config.tor_control,
        socks=config.tor_socks,
        password=config.tor_password,
        binary=config.tor_binary,
        extra_torrc=config.tor_extra_torrc,
    )


def _socket_path(config: Config, onion: str) -> Path | None:
    """Where the embedded tor reaches a store; None when the path is too long for a unix socket."""
    path = config.data_dir / "run" / f"{onion[:16]}.sock"
    return path if len(str(path)) <= 100 else None


async def _start_unix(app: web.Application, runner: web.AppRunner, onion: str) -> None:
    path = _socket_path(app[appkeys.CONFIG], onion)
    if path is None:
        return
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        await web.UnixSite(runner, str(path)).start()
    except OSError as exc:
        log.warning("store %s: no unix socket %s (%s); tor reaches it on its loopback port", onion, path, exc)
        return
    app[appkeys.TARGETS][onion] = f"unix:{path}"


async def _start_listener(app: web.Application, record: dict[str, Any], runners: dict[str, web.AppRunner]) -> None:
    """Serve one store on its own loopback port; a failure marks only that store."""
    config, onion = app[appkeys.CONFIG], record["onion"]
    runner = web.AppRunner(
        create_store_app(app, onion), access_log=None, handle_signals=False, logger=middlewares.STORE_SERVER_LOG
    )
    await runner.setup()
    port = record["port"] or 0
    try:
        await web.TCPSite(runner, config.store_host, port, reuse_address=True).start()
    except OSError as exc:
        await runner.cleanup()
        app[appkeys.STATUS][onion] = (
            f"error: cannot listen on port {port} ({exc.strerror}); free it or change the store's port"
        )
        log.error("store %s: %s", onion, app[appkeys.STATUS][onion])
        return
    bound = runner.addresses[0]
    runner.app[appkeys.HOSTS].update(loopback_hosts(bound[1]))
    runners[onion] = runner
    app[appkeys.LISTENERS][onion] = url_for_host(bound[0], bound[1])
    app[appkeys.TARGETS][onion] = f"[{bound[0]}]:{bound[1]}" if ":" in bound[0] else f"{bound[0]}:{bound[1]}"
    app[appkeys.STATUS][onion] = "local"
    if app[appkeys.UNIX_TARGETS]:
        await _start_unix(app, runner, onion)
    log.info("store %s serving on %s", onion, app[appkeys.LISTENERS][onion])


async def _stop_listener(app: web.Application, onion: str, runners: dict[str, web.AppRunner]) -> None:
    """Stop one store's listener (a deleted store, or before it moves to another port)."""
    runner = runners.pop(onion, None)
    app[appkeys.LISTENERS].pop(onion, None)
    target = app[appkeys.TARGETS].pop(onion, None)
    if runner is not None:
        await runner.cleanup()
    if target is not None and target.startswith("unix:"):
        Path(target.removeprefix("unix:")).unlink(missing_ok=True)


async def _onion_spec(app: web.Application, record: dict[str, Any]) -> OnionSpec | str:
    """What tor should publish for this store, or why it must not be published."""
    onion, market = record["onion"], app[appkeys.MARKET]
    target = app[appkeys.TARGETS].get(onion)
    if target is None:
        return app[appkeys.STATUS].get(onion, "error: the store's listener is not running")
    options = market.access_options(record)
    problem = client_auth.problem(options)
    if problem:
        return f"error: {problem}"
    return OnionSpec(
        key_blob=(await market.key(onion)).add_onion_blob(),
        target=target,
        client_keys=tuple(c["public"] for c in options["clients"]) if options["invite_only"] else (),
        max_streams=options["max_streams"],
        pow=options["pow"],
    )


def _tor_ctx(tor: Tor) -> Any:
    async def tor_ctx(app: web.Application) -> AsyncIterator[None]:
        publisher = Publisher(tor, status=app[appkeys.STATUS])
        app[appkeys.PUBLISHER] = publisher

        async def update(record: dict[str, Any]) -> None:
            spec = await _onion_spec(app, record)
            await publisher.publish(record["onion"], spec if isinstance(spec, OnionSpec) else None)
            if isinstance(spec, str):
                app[appkeys.STATUS][record["onion"]] = spec

        async def withdraw(record: dict[str, Any]) -> None:
            await publisher.publish(record["onion"], None)
            app[appkeys.STATUS].pop(record["onion"], None)

        market = app[appkeys.MARKET]
        for record in await market.stores():
            await update(record)
        try:
            await publisher.start()
        except TorError:
            await tor.close()
            raise
        market.on_store_created.append(update)
        market.on_access_changed.append(update)
        market.on_store_deleted.insert(0, withdraw)  # before its listener stops
        market.on_port_changed.append(update)  # after the listener moved: a new target republishes
        task = asyncio.create_task(publisher.run(), name="tor-publisher")
        yield
        market.on_store_created.remove(update)
        market.on_access_changed.remove(update)
        market.on_store_deleted.remove(withdraw)
        market.on_port_changed.remove(update)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await tor.close()

    return tor_ctx


def create_app(config: Config, *, storage: Storage | None = None, tor: Tor | None = None) -> web.Application:
    """The admin app; its cleanup contexts own the storage, market, store listeners and tor.

    Without ``tor`` stores are served on loopback only.
    """
    store = storage or Storage(config.data_dir)
    runners: dict[str, web.AppRunner] = {}
    auth = AdminAuth(password_hash=None, api_token=read_token(config))
    max_body = request_limit(config)
    app = web.Application(
        middlewares=[middlewares.errors, make_guard(auth), bodies.parse_forms], client_max_size=max_body
    )
    app.on_response_prepare.append(middlewares.admin_headers)
    app[appkeys.CONFIG] = config
    app[appkeys.AUTH] = auth
    app[appkeys.PAGES] = PageCache()
    app[appkeys.LISTENERS] = {}
    app[appkeys.STATUS] = {}
    app[appkeys.TARGETS] = {}
    # The embedded tor runs as this user, so it can reach unix sockets in the data dir.
    app[appkeys.UNIX_TARGETS] = tor is not None and tor.settings.embedded
    tdir = templates_dir()
    app[appkeys.CSS] = (tdir / "static" / "style.css").read_bytes()
    app[appkeys.JINJA] = render.make_env(tdir)
    render.attach(app, app[appkeys.JINJA])

    async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        yield
        await store.close()

    async def market_ctx(app: web.Application) -> AsyncIterator[None]:
        app[appkeys.MARKET] = Market(store, limits_from(config), port_free=port_probe(config.store_host))
        auth.password_hash = await store.admin_password_hash()
        yield

    async def listeners_ctx(app: web.Application) -> AsyncIterator[None]:
        market = app[appkeys.MARKET]
        for record in await market.stores():
            await _start_listener(app, record, runners)

        async def on_created(record: dict[str, Any]) -> None:
            await _start_listener(app, record, runners)

        async def on_deleted(record: dict[str, Any]) -> None:
            await _stop_listener(app, record["onion"], runners)
            app[appkeys.STATUS].pop(record["onion"], None)

        async def on_port_changed(record: dict[str, Any]) -> None:
            await _stop_listener(app, record["onion"], runners)
            await _start_listener(app, record, runners)

        market.on_store_created.append(on_created)
        market.on_store_deleted.append(on_deleted)
        market.on_port_changed.append(on_port_changed)
        yield
        market.on_store_created.remove(on_created)
        market.on_store_deleted.remove(on_deleted)
        market.on_port_changed.remove(on_port_changed)
        await asyncio.gather(*(r.cleanup() for r in runners.values()))
        runners.clear()
        for target in app[appkeys.TARGETS].values():
            if target.startswith("unix:"):
                Path(target.removeprefix("unix:")).unlink(missing_ok=True)
        app[appkeys.LISTENERS].clear()
        app[appkeys.TARGETS].clear()

    app.cleanup_ctx.extend([storage_ctx, market_ctx, listeners_ctx])
    if tor is not None:
        app.cleanup_ctx.append(_tor_ctx(tor))
    admin.add_routes(app)
    api.add_routes(app)
    return app


async def serve(config: Config, stop: asyncio.Event, *, use_tor: bool = True) -> None:
    """Run the node until ``stop`` is set."""
    storage = Storage(config.data_dir)
    app = create_app(config, storage=storage, tor=Tor(tor_settings(config)) if use_tor else None)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    try:
        await runner.setup()  # a failure here still runs the cleanup contexts already entered
        try:
            await web.TCPSite(runner, config.admin_host, config.admin_port, reuse_address=True).start()
        except OSError as exc:
            raise ConfigError(
                f"admin port {config.admin_port} on {config.admin_host} is unavailable ({exc.strerror}); "
                "is another node running? choose another with --admin-port"
            ) from None
        host, port = runner.addresses[0][:2]
        app[appkeys.AUTH].set_port(config.admin_host, port)
        admin_url = url_for_host(host, port)
        storage.lock.publish({"pid": os.getpid(), "admin_url": admin_url})
        log.info("admin on %s (loopback only)", admin_url)
        await stop.wait()
    finally:
        await runner.cleanup()
