"""One loopback listener per store, each serving that store's storefront app.

The app's listeners context starts them at startup and stops them at
shutdown; its store observer starts, stops and moves them as stores are
created, deleted and given another port. A listener that cannot bind marks
only its own store (``StoreStatus`` error); the others keep running.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiohttp import web

from ..core.config import Config
from ..core.models import PublishState, StoreRecord, StoreStatus
from . import appkeys, middlewares
from .storefront import create_store_app, loopback_hosts

log = logging.getLogger(__name__)
UNIX_PATH_MAX = 100  # a unix socket path longer than this does not bind on every system


def url_for_host(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def tcp_target(host: str, port: int) -> str:
    """Where tor sends an onion's port 80: ``HOST:PORT`` (IPv6 in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def socket_path(config: Config, onion: str) -> Path | None:
    """Where the embedded tor reaches a store; None when the path is too long for a unix socket."""
    path = config.data_dir / "run" / f"{onion[:16]}.sock"
    return path if len(str(path)) <= UNIX_PATH_MAX else None


async def start(app: web.Application, record: StoreRecord) -> None:
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
        status = app[appkeys.STATUS][onion] = StoreStatus.error(
            f"cannot listen on port {port} ({exc.strerror}); free it or change the store's port"
        )
        log.error("store %s: %s", onion, status)
        return
    host, bound = runner.addresses[0][:2]
    runner.app[appkeys.HOSTS].update(loopback_hosts(bound))
    app[appkeys.RUNNERS][onion] = runner
    app[appkeys.LISTENERS][onion] = url_for_host(host, bound)
    app[appkeys.TARGETS][onion] = tcp_target(host, bound)
    app[appkeys.STATUS][onion] = StoreStatus(PublishState.LOCAL)
    if app[appkeys.UNIX_TARGETS]:
        await _start_unix(app, runner, onion)
    log.info("store %s serving on %s", onion, app[appkeys.LISTENERS][onion])


async def _start_unix(app: web.Application, runner: web.AppRunner, onion: str) -> None:
    target = await unix_target(app, runner, onion)
    if target is not None:
        app[appkeys.TARGETS][onion] = target


async def unix_target(app: web.Application, runner: web.AppRunner, onion: str) -> str | None:
    """Also serve ``runner`` on a unix socket for the embedded tor: ``"unix:<path>"``, or None (TCP only)."""
    path = socket_path(app[appkeys.CONFIG], onion)
    if path is None:
        return None
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        await web.UnixSite(runner, str(path)).start()
    except OSError as exc:
        log.warning("%s: no unix socket %s (%s); tor reaches it on its loopback port", onion, path, exc)
        return None
    return f"unix:{path}"


async def stop(app: web.Application, onion: str) -> None:
    """Stop one store's listener (a deleted store, or before it moves to another port)."""
    runner = app[appkeys.RUNNERS].pop(onion, None)
    app[appkeys.LISTENERS].pop(onion, None)
    target = app[appkeys.TARGETS].pop(onion, None)
    if runner is not None:
        await runner.cleanup()
    _remove_socket(target)


async def stop_all(app: web.Application) -> None:
    runners = app[appkeys.RUNNERS]
    await asyncio.gather(*(r.cleanup() for r in runners.values()))
    runners.clear()
    for target in app[appkeys.TARGETS].values():
        _remove_socket(target)
    app[appkeys.LISTENERS].clear()
    app[appkeys.TARGETS].clear()


def _remove_socket(target: str | None) -> None:
    if target is not None and target.startswith("unix:"):
        Path(target.removeprefix("unix:")).unlink(missing_ok=True)
