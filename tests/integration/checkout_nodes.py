"""Two real Pasar nodes in process for the checkout tests: a vendor's and a moderator's, on one regtest bitcoind.

Each is the real app (``create_app``) with every cleanup context (storage, market, store listeners,
discovery, payments) on a temp data dir, talking to the session's regtest bitcoind with its own wallet
("vendor", "moderator"). The vendor's node reaches the moderator's node onion through ``LoopbackHttp``
(the moderator's node-onion listener on 127.0.0.1); the buyer is a plain HTTP client or a browser on the
store's own listener. The payment watcher's own loop is slowed down (``payment_poll_interval``) so a test
moves an order on by calling ``watch_once`` at the moment it wants.

``LoopThread`` runs the nodes on an event loop of their own, for Playwright's sync API (which owns the
test thread's loop).
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from node.adapters import dbfiles
from node.adapters.loophttp import LoopbackHttp
from node.app import create_app
from node.core import config as cfg
from node.payments.models import Order
from node.payments.service import Payments
from node.web import appkeys
from tests.regtest import Regtest, free_port

T = TypeVar("T")
TIMEOUT_BLOCKS = 150
PRICE = 40_000
SHIPPING = 2_500
TERMS = "I decide within 7 days from both statements and the order record."


@dataclass
class Shop:
    """A vendor's store with a moderator that answers, and the listings a buyer can order."""

    vendor: web.Application
    moderator: web.Application
    store: str  # the store's onion
    url: str  # the store's own listener (what Tor Browser reaches through the onion)
    moderator_onion: str
    listings: dict[str, str] = field(default_factory=dict)  # title -> id
    offline: set[str] = field(default_factory=set)  # node onions the vendor's node cannot reach now

    @property
    def payments(self) -> Payments:
        return self.vendor[appkeys.PAYMENTS]

    async def orders(self) -> list[Order]:
        return await self.payments.orders(self.store)


def _config(root: Path, regtest: Regtest, wallet: str, **flags: str) -> cfg.Config:
    dbfiles.initialise(root)
    (root / "admin.token").write_text(secrets.token_urlsafe(32))
    values = {k: str(v) for k, v in regtest.config_overrides(wallet).items()}
    values.update(
        store_port_base="0",
        escrow_timeout_blocks=str(TIMEOUT_BLOCKS),
        payment_poll_interval="3600",
        **flags,
    )
    return cfg.load(root, flags=values, env={})


async def _start(stack: AsyncExitStack, app: web.Application) -> web.Application:
    runner = web.AppRunner(app)
    await runner.setup()  # enters every cleanup context
    stack.push_async_callback(runner.cleanup)
    return app


@asynccontextmanager
async def open_shop(root: Path, regtest: Regtest, *, vendor_flags: dict[str, str] | None = None) -> AsyncIterator[Shop]:
    async with AsyncExitStack() as stack:
        mod_config = _config(root / "moderator", regtest, "moderator", gossip="true", node_port="0")
        moderator = await _start(stack, create_app(mod_config))
        await moderator[appkeys.MODERATION].set_offer({"enabled": True, "fee_percent": 2, "fee_sat": 0, "terms": TERMS})
        mod_onion = moderator[appkeys.DISCOVERY].node_onion
        mod_url = moderator[appkeys.DISCOVERY_URLS]["node"]
        offline: set[str] = set()
        http = LoopbackHttp(lambda onion: mod_url if onion == mod_onion and onion not in offline else None)
        stack.push_async_callback(http.close)
        vendor_config = _config(root / "vendor", regtest, "vendor", gossip="false", **(vendor_flags or {}))
        vendor = await _start(stack, create_app(vendor_config, http=http))
        market = vendor[appkeys.MARKET]
        store = (await market.create_store({"name": "Heron Prints", "description": "Prints of water birds"}))["onion"]
        await market.update_profile(store, {"moderators": [mod_onion]})
        shop = Shop(vendor, moderator, store, vendor[appkeys.LISTENERS][store], mod_onion, offline=offline)
        made = await market.add_listings(
            store,
            [
                {
                    "title": "Blue heron print",
                    "price_sat": PRICE,
                    "kind": "physical",
                    "inventory": 5,
                    "max_qty": 3,
                    "shipping": [{"name": "Post", "regions": ["WORLDWIDE"], "price_sat": SHIPPING}],
                },
                {
                    "title": "Egret poster",
                    "price_sat": 60_000,
                    "kind": "physical",
                    "variants": [
                        {"sku": "A3", "label": "A3 size", "inventory": 0},
                        {"sku": "A2", "label": "A2 size", "price_sat": 90_000, "inventory": 2},
                    ],
                    "shipping": [{"name": "Post", "regions": ["WORLDWIDE"], "price_sat": SHIPPING}],
                },
            ],
        )
        shop.listings = {item["title"]: item["id"] for item in made}
        yield shop


def buyer_fields(regtest: Regtest, shop: Shop, **overrides: str) -> dict[str, str]:
    """The checkout form's fields as a buyer fills them (key and refund address from the "buyer" wallet)."""
    fields = {
        "listing": shop.listings["Blue heron print"],
        "qty": "1",
        "shipping": "Post",
        "moderator": shop.moderator_onion,
        "buyer_pubkey": regtest.key("buyer"),
        "refund_address": regtest.address("buyer"),
        "ship_to": "R. Heron, 1 Estuary Lane, Mudflat",
    }
    fields.update(overrides)
    return fields


class LoopThread:
    """An event loop on a thread of its own; ``run`` waits for a coroutine on it (bounded)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="checkout-nodes", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T] | Awaitable[T], timeout: float = 120) -> T:
        async def wrap() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()


__all__ = [
    "PRICE",
    "SHIPPING",
    "TERMS",
    "TIMEOUT_BLOCKS",
    "LoopThread",
    "Shop",
    "buyer_fields",
    "free_port",
    "open_shop",
]
