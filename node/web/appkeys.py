"""Typed application keys, declared in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jinja2
from aiohttp import web

if TYPE_CHECKING:
    import asyncio

    from ..core.config import Config
    from ..core.models import StoreStatus
    from ..core.ports import Http, Tor
    from ..discovery.crawler import Crawler
    from ..discovery.directory import Directory
    from ..discovery.gossip import Gossip
    from ..discovery.service import Announcer, BlocklistPublisher, Discovery
    from ..hosting.publisher import Publisher
    from ..market.market import Market
    from ..messaging.mailbox import Mailbox
    from ..payments.moderation import ModeratorService
    from ..payments.node_orders import NodeOrders
    from ..payments.service import Payments
    from ..purchases.service import Purchases
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
# onion -> local (no tor) | starting | published | an error and its reason; str() is the API's text.
STATUS: web.AppKey[dict[str, StoreStatus]] = web.AppKey("store_status")
# onion -> where tor sends the onion's port 80: "unix:/path" or "127.0.0.1:PORT".
TARGETS: web.AppKey[dict[str, str]] = web.AppKey("onion_targets")
UNIX_TARGETS: web.AppKey[bool] = web.AppKey("unix_targets")
# onion -> the running store listener (present once the listeners context started).
RUNNERS: web.AppKey[dict[str, web.AppRunner]] = web.AppKey("store_runners")
# The parts of the node that take store events now ("listeners", "tor"): added when a context has
# started, removed when its teardown begins (the app's keys cannot change once it runs).
RUNNING: web.AppKey[set[str]] = web.AppKey("running_parts")
# The tor adapter; None when the node runs without tor (loopback only).
TOR: web.AppKey[Tor | None] = web.AppKey("tor")
# Present only when the node runs with tor.
PUBLISHER: web.AppKey[Publisher] = web.AppKey("publisher")
# Outbound HTTP to other nodes' onions; present only when the node runs with tor (or a test gives one).
HTTP: web.AppKey[Http] = web.AppKey("http")
# Discovery (present once its context started): gossip of announcements, the directory index, the crawler.
GOSSIP: web.AppKey[Gossip] = web.AppKey("gossip")
DIRECTORY: web.AppKey[Directory] = web.AppKey("directory")
CRAWLER: web.AppKey[Crawler] = web.AppKey("crawler")
DISCOVERY: web.AppKey[Discovery] = web.AppKey("discovery")
ANNOUNCER: web.AppKey[Announcer] = web.AppKey("announcer")
# The directory's signed blocklist (``await app[BLOCKLIST].current()`` -> the envelope's bytes).
BLOCKLIST: web.AppKey[BlocklistPublisher] = web.AppKey("blocklist")
# The node onion's and the public directory onion's listeners: name -> runner ("node", "directory").
DISCOVERY_RUNNERS: web.AppKey[dict[str, web.AppRunner]] = web.AppKey("discovery_runners")
# name -> the loopback URL of that listener ("node", "directory").
DISCOVERY_URLS: web.AppKey[dict[str, str]] = web.AppKey("discovery_urls")
# Payments (present once its context started): orders, escrow payouts, the payment watcher.
PAYMENTS: web.AppKey[Payments] = web.AppKey("payments")
# This node's moderation service (offers, key requests, cases, disputes to decide).
MODERATION: web.AppKey[ModeratorService] = web.AppKey("moderation")
# Node-to-node orders (present from the messaging context on): the signed store-and-forward mailbox, the
# vendor's side of node orders (store onions answer ``POST /api/v1/messages`` with them), the buyer's purchases.
MESSAGES: web.AppKey[Mailbox] = web.AppKey("messages")
NODE_ORDERS: web.AppKey[NodeOrders] = web.AppKey("node_orders")
PURCHASES: web.AppKey[Purchases] = web.AppKey("purchases")
# Applies of received order messages that outlived their exchange (``web.messages``); drained at shutdown.
APPLYING: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("message_applies")
