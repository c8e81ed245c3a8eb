"""Node orders in one process: the escrow world's store as the vendor's node, a buyer's node beside it.

Two real ``Mailbox``es on their own ``messages.sqlite`` (the vendor's and the
buyer's); messages go from one to the other in-process through
``Mailbox.receive`` exactly as the store-onion endpoint would hand them over:
the buyer's due messages are delivered (``deliver``), the vendor's answered
to a signed poll (``fetch``), each side's acks handed back. The buyer is an
order key (``StoreKey.generate()``) and the "buyer" wallet of the bitcoind
fixture.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from node.adapters.bitcoin import BitcoinCore
from node.adapters.messages_schema import open_messages_db
from node.adapters.sqlite import SQLiteDatabase
from node.core.crypto import StoreKey
from node.market import listings as L
from node.messaging import boxes, wire
from node.messaging.mailbox import Mailbox
from node.messaging.models import InMessage, Received
from node.payments.node_orders import NodeOrders
from node.payments.service import Payments
from tests.integration.escrow_world import AMOUNT, World, open_world
from tests.regtest import Regtest

SHIP_TO = "Jane Doe, 1 Main St, Springfield"


@dataclasses.dataclass
class Buyer:
    """One purchase of the simulated buyer's node: its order key and order id."""

    key: StoreKey
    order: str

    @property
    def address(self) -> str:
        return wire.key_address(self.key)


@dataclasses.dataclass
class Pair:
    w: World
    p: Payments
    nodes: NodeOrders
    vendor_box: Mailbox
    buyer_box: Mailbox
    vendor_db: SQLiteDatabase
    buyer_db: SQLiteDatabase

    @property
    def store(self) -> str:
        return self.w.store_onion

    def mailbox(self, db: SQLiteDatabase) -> Mailbox:
        return Mailbox(db, clock=self.w.clock, retry_first=15, retry_cap=3600, give_up=14 * 86400)

    def restart(self) -> None:
        """The vendor's node again over the same files: a new Payments, Mailbox and NodeOrders."""
        self.p = self.w.payments()
        self.vendor_box = self.mailbox(self.vendor_db)
        self.nodes = NodeOrders(self.p, self.vendor_box)

    async def order_fields(self, buyer: Buyer, **changes: Any) -> dict[str, object]:
        listing = await self.w.market.listing(self.store, self.w.listing_id)
        fields: dict[str, object] = {
            "store": self.store,
            "listing": self.w.listing_id,
            "listing_hash": L.public_view(listing)["hash"],
            "sku": None,
            "qty": 1,
            "shipping": "post",
            "coupon": None,
            "moderator": self.w.moderator.onion,
            "buyer_key": self.w.regtest.key("buyer"),
            "refund_address": self.w.regtest.address("buyer"),
            "amount_sat": AMOUNT,
            "ship_to": boxes.box(buyer.key, self.store, SHIP_TO),
        }
        fields.update(changes)
        return fields

    async def send(self, buyer: Buyer, kind: str, fields: dict[str, object]) -> None:
        await self.buyer_box.send(
            buyer.key, peer=self.store, order=buyer.order, kind=kind, fields=fields, to=self.store
        )

    async def place(self, order: str | None = None, **changes: Any) -> tuple[Buyer, Received]:
        """A new buyer key sends an ``order`` (fields changed by ``changes``), delivered and applied."""
        buyer = Buyer(StoreKey.generate(), order or wire.new_order_id())
        await self.send(buyer, "order", await self.order_fields(buyer, **changes))
        return buyer, await self.deliver(buyer)

    async def deliver(self, buyer: Buyer) -> Received:
        """The buyer's due messages of the order to the vendor's mailbox; acks back; then applied."""
        due = [
            m for m in (await self.buyer_box.due(self.w.clock() + 10**6)).get(self.store, []) if m.order == buyer.order
        ]
        received = await self.vendor_box.receive(
            [m.raw for m in due],
            me=lambda to: None if to != self.store else self._store_key,
            party=self.nodes.party,
            now=self.w.clock(),
        )
        await self.buyer_box.mark_delivered(received.acks)
        await self.vendor_box.apply_ready(buyer.order, buyer.address, self.nodes.apply)
        return received

    async def fetch(self, buyer: Buyer) -> list[InMessage]:
        """Polls the vendor for the order (signed by the order key), stores and acks what comes; every vendor
        message the buyer holds on the order, by seq."""
        poll = wire.seal_poll(buyer.key, order=buyer.order, store=self.store, now=self.w.clock())
        raws = await self.nodes.answer(self.store, poll, self.w.clock())

        async def party(order: str, sender: str) -> str | None:
            return None if sender == self.store else "not this order's store"

        received = await self.buyer_box.receive(
            raws, me=lambda to: buyer.key if to == buyer.address else None, party=party, now=self.w.clock()
        )
        assert not received.refused, received.refused
        await self.vendor_box.mark_delivered(received.acks)
        return sorted(
            (m for m in await self.buyer_box.incoming(buyer.order) if m.sender == self.store), key=lambda m: m.seq
        )

    _store_key: StoreKey = dataclasses.field(init=False)


@asynccontextmanager
async def open_pair(
    regtest: Regtest, vendor_core: BitcoinCore, moderator_core: BitcoinCore, tmp_path: Path, **settings: Any
) -> AsyncIterator[Pair]:
    async with open_world(regtest, vendor_core, moderator_core, tmp_path, **settings) as w:
        vendor_db = await open_messages_db(tmp_path / "vendor-messages.sqlite")
        buyer_db = await open_messages_db(tmp_path / "buyer-messages.sqlite")
        try:
            p = w.payments()
            vendor_box = Mailbox(vendor_db, clock=w.clock, retry_first=15, retry_cap=3600, give_up=14 * 86400)
            buyer_box = Mailbox(buyer_db, clock=w.clock, retry_first=15, retry_cap=3600, give_up=14 * 86400)
            pair = Pair(w, p, NodeOrders(p, vendor_box), vendor_box, buyer_box, vendor_db, buyer_db)
            pair._store_key = await w.market.key(w.store_onion)
            yield pair
        finally:
            await buyer_db.close()
            await vendor_db.close()
