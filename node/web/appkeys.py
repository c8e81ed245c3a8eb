"""Typed application keys, declared in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jinja2
from aiohttp import web

if TYPE_CHECKING:
    from ..core.config import Config
    from ..hosting.publisher import Publisher
    from ..market.market import Market
    from .auth import AdminAuth
    from .pagecache import PageCache

CONFIG: web.AppKey[Config] = web.AppKey("config")
MARKET: web.AppKey[Market] = web.AppKey("market")
STORE: web.AppKey[str] = web.AppKey("store_onion")
PAGES: web.AppKey[PageCache] = web.AppKey("page_cache")
AUTH: web.AppKey[AdminAuth] = web.AppKey("admin_auth")
JINJA: web.AppKey[jinja2.Environment] = web.AppKey("jinja")
CSS: web.AppKey[bytes] = web.AppKey("css")
# Host header values a store listener answers to (its onion name, its loopback address).
HOSTS: web.AppKey[set[str]] = web.AppKey("allowed_hosts")
# onion -> "http://127.0.0.1:PORT" (or "unix:/path") of the store's running listener.
LISTENERS: web.AppKey[dict[str, str]] = web.AppKey("listeners")
# onion -> "local" (no tor) | "starting" | "published" | "error: ...".
STATUS: web.AppKey[dict[str, str]] = web.AppKey("store_status")
# onion -> where tor sends the onion's port 80: "unix:/path" or "127.0.0.1:PORT".
TARGETS: web.AppKey[dict[str, str]] = web.AppKey("onion_targets")
UNIX_TARGETS: web.AppKey[bool] = web.AppKey("unix_targets")
# Present only when the node runs with tor.
PUBLISHER: web.AppKey[Publisher] = web.AppKey("publisher")
