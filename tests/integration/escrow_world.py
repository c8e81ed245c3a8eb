"""The escrow world of the payment tests and benchmarks: a store, a moderator, three wallets, one clock.

``open_world`` builds, over a running ``Regtest``: a real ``Market`` with one store
(accepting one moderator) and one physical listing, the vendor's ``orders.sqlite``,
the moderator's real ``ModeratorService`` (own SQLite, own Bitcoin Core wallet) reached
by the real ``ModeratorClient`` through ``InProcessHttp`` (a ``ports.Http`` handing the
node-onion requests straight to the service), and one controllable clock for all.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from node.adapters import dbfiles, payments_schema
from node.adapters.bitcoin import BitcoinCore
from node.adapters.moderation_schema import MIGRATIONS as MODERATION_MIGRATIONS
from node.adapters.sqlite import SQLiteDatabase
from node.adapters.store import Storage
from node.core.config import Config
from node.core.crypto import StoreKey
from node.core.errors import PasarError, Unreachable
from node.core.models import HttpReply
from node.market.market import Limits, Market
from node.payments import moderation_wire as wire
from node.payments.models import Order, OrderState
from node.payments.moderation import ModeratorService
from node.payments.moderator_client import ModeratorClient
from node.payments.order_store import OrderStore
from node.payments.pricing import CheckoutForm
from node.payments.service import Payments
from node.payments.settings import PaymentSettings
from tests.regtest import Regtest, sats

S = OrderState
PRICE = 100_000
SHIPPING = 5_000
AMOUNT = PRICE + SHIPPING
TIMEOUT = 20  # blocks of the vendor's timeout path in these tests


class Clock:
    def __init__(self) -> None:
        self.t = int(time.time())

    def __call__(self) -> int:
        return self.t


class InProcessHttp:
    """``ports.Http`` that hands the moderator's node-onion requests straight to its ``ModeratorService``."""

    def __init__(self, service: ModeratorService) -> None:
        self.service = service
        self.offline = False

    def _reply(self, status: int, body: object) -> HttpReply:
        return HttpReply(status=status, body=json.dumps(body).encode(), headers={})

    async def _serve(self, path: str, body: bytes | None) -> HttpReply:
        if self.offline:
            raise Unreachable("the moderator's onion did not answer (offline in this test)")
        try:
            if path == wire.OFFER_PATH:
                return self._reply(200, await self.service.signed_offer())
            raw = json.loads(body or b"null")
            if path == wire.KEY_PATH:
                return self._reply(200, await self.service.key_request(raw))
            if path == wire.CASE_PATH:
                return self._reply(200, await self.service.case_message(raw))
        except PasarError as exc:
            return self._reply(exc.status, exc.to_json())
        return self._reply(404, {"error": "no such path", "code": "not_found"})

    async def get(self, url: str, **_: Any) -> HttpReply:
        return await self._serve(urlsplit(url).path, None)

    async def post(self, url: str, body: bytes, **_: Any) -> HttpReply:
        return await self._serve(urlsplit(url).path, body)

    async def close(self) -> None:
        return None


@dataclasses.dataclass
class World:
    regtest: Regtest
    market: Market
    store_onion: str
    listing_id: str
    orders_db: SQLiteDatabase
    vendor: BitcoinCore
    moderator: ModeratorService
    http: InProcessHttp
    clock: Clock
    settings: PaymentSettings
    moderation_db: SQLiteDatabase
    moderator_key: StoreKey
    moderator_core: BitcoinCore

    def restart_moderator(self) -> ModeratorService:
        """A new ModeratorService over the moderator's same database and key (its node restarted)."""
        self.moderator = ModeratorService(
            self.moderation_db, self.moderator_core, self.moderator_key, self.clock, network="regtest"
        )
        self.http.service = self.moderator
        return self.moderator

    def payments(self, bitcoin: Any = None) -> Payments:
        """A fresh Payments over the same database (what a node restart gives)."""
        client = ModeratorClient(self.http, self.market, self.clock)
        return Payments(
            store=OrderStore(self.orders_db, clock=self.clock),
            market=self.market,
            bitcoin=bitcoin or self.vendor,
            moderation=client,
            settings=self.settings,
            clock=self.clock,
        )

    def form(self, **changes: str) -> CheckoutForm:
        base = CheckoutForm(
            listing=self.listing_id,
            qty="1",
            shipping="post",
            moderator=self.moderator.onion,
            buyer_pubkey=self.regtest.key("buyer"),
            refund_address=self.regtest.address("buyer"),
            ship_to="Jane Doe, 1 Main St, Springfield",
        )
        return dataclasses.replace(base, **changes)

    def pay(self, address: str, sat: int) -> str:
        return self.regtest.fund("buyer", address, sat)

    def buyer_sign(self, psbt: str) -> str:
        return self.regtest.sign("buyer", psbt)

    def tx_outputs(self, txid: str) -> dict[str, int]:
        """The outputs of ``txid``, in the mempool or in one of the last 20 blocks (no -txindex)."""
        if self.regtest.in_mempool(txid):
            tx = self.regtest.cli("getrawtransaction", txid, True)
        else:
            tip = self.regtest.height()
            hashes = [self.regtest.cli("getblockhash", h) for h in range(tip, max(0, tip - 20), -1)]
            found = (self.regtest.cli("getrawtransaction", txid, True, h) for h in hashes if self._in_block(txid, h))
            tx = next(found)
        return {o["scriptPubKey"]["address"]: sats(o["value"]) for o in tx["vout"]}

    def _in_block(self, txid: str, block_hash: str) -> bool:
        return txid in self.regtest.cli("getblock", block_hash, 1)["tx"]


@asynccontextmanager
async def open_world(
    regtest: Regtest,
    vendor_core: BitcoinCore,
    moderator_core: BitcoinCore,
    tmp_path: Path,
    *,
    inventory: int = 5,
    **settings: Any,
) -> AsyncIterator[World]:
    """The world over ``regtest``; ``settings`` change ``PaymentSettings`` (timeout 20 blocks, 1 confirmation)."""
    clock = Clock()
    data = tmp_path / "vendor"
    data.mkdir(parents=True)
    dbfiles.initialise(data)
    storage = Storage(data)
    await storage.open()
    limits = dataclasses.replace(Limits.from_config(Config(data_dir=data)), store_port_base=0)
    market = Market(storage, limits, clock=clock)
    orders_db = await payments_schema.open_order_db(data / payments_schema.FILE_NAME)
    mod_db = SQLiteDatabase(tmp_path / "moderation.sqlite", MODERATION_MIGRATIONS)
    await mod_db.open()
    moderator_key = StoreKey.generate()
    moderator = ModeratorService(mod_db, moderator_core, moderator_key, clock, network="regtest")
    await moderator.set_offer({"enabled": True, "fee_percent": 2, "fee_sat": 1000, "terms": "I read both sides."})
    record = await market.create_store({"name": "Socks", "description": "Warm", "moderators": [moderator.onion]})
    listing = await market.add_listing(
        record["onion"],
        {
            "title": "Wool socks",
            "price_sat": PRICE,
            "kind": "physical",
            "inventory": inventory,
            "shipping": [{"name": "post", "regions": ["WORLDWIDE"], "price_sat": SHIPPING}],
        },
    )
    chosen = PaymentSettings(network="regtest", timeout_blocks=TIMEOUT, confirmations=1, accept_window=3600)
    chosen = dataclasses.replace(chosen, **settings)
    try:
        yield World(
            regtest,
            market,
            record["onion"],
            listing["id"],
            orders_db,
            vendor_core,
            moderator,
            InProcessHttp(moderator),
            clock,
            chosen,
            mod_db,
            moderator_key,
            moderator_core,
        )
    finally:
        await mod_db.close()
        await orders_db.close()
        await storage.close()


async def funded(w: World, p: Payments, *, sat: int = AMOUNT, accept: bool = True) -> tuple[Order, str]:
    """A placed order paid with ``sat``, confirmed (and accepted when ``accept``); (order, token)."""
    order, token = await p.checkout(w.store_onion, w.form())
    w.pay(order.escrow.address, sat)
    await p.watch_once()
    assert (await p.order(order.id)).state is S.FUNDED
    w.regtest.mine(1)
    await p.watch_once()
    order = await p.order(order.id)
    assert order.state is S.CONFIRMED, order.history
    await w.moderator.watch_once()  # the moderator's own sighting of the funded escrow (its refund window)
    if accept:
        order = await p.accept(order.id)
    return order, token


async def upload_buyer(w: World, p: Payments, order: Order, token: str) -> Order:
    psbt = p.psbt_for_buyer(order)
    assert psbt is not None
    return await p.upload_psbt(w.store_onion, token, w.buyer_sign(psbt))


async def confirmed(w: World, p: Payments, order: Order) -> Order:
    """``order`` once its broadcast payout has a confirmation: one block mined, one watcher round."""
    pending = order.pending
    assert pending is not None and pending.txid is not None, order.history
    assert w.regtest.in_mempool(pending.txid)
    assert order.history[-1].note.endswith("waiting for a confirmation")
    w.regtest.mine(1)
    await p.watch_once()
    return await p.order(order.id)
