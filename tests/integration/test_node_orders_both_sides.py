"""Both real sides of a node order in one process, on the regtest bitcoind: the buyer's ``Purchases`` and the
store's ``Payments`` + ``NodeOrders``, messages carried between their mailboxes (node_orders_vendor_kit.py).

What this checks is that the two sides agree on the wire: the buyer's node verifies the store's escrow
answer (keys, descriptor, the moderator's signed answer, the amount) and pays it, checks and signs the
store's release, and the store completes the order from the buyer's signed PSBT.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.adapters.bitcoin import BitcoinCore
from node.adapters.purchases_schema import open_purchase_db
from node.payments.models import OrderState
from node.purchases.models import PurchaseRequest
from node.purchases.service import Purchases
from tests.conftest import watch_name
from tests.integration.node_orders_vendor_kit import Buyer, Pair, open_pair
from tests.regtest import Regtest

S = OrderState


class Catalogs:
    """The buyer's directory: the store's signed catalog as its market publishes it."""

    def __init__(self, pair: Pair) -> None:
        self.pair = pair

    async def mirror(self, store: str) -> bytes | None:
        if store != self.pair.store:
            return None
        return (await self.pair.w.market.snapshot(store)).envelope_bytes


@pytest.fixture
async def both(
    regtest: Regtest, vendor_core: BitcoinCore, moderator_core: BitcoinCore, tmp_path: Path
) -> AsyncIterator[tuple[Pair, Purchases]]:
    buyer_core = regtest.adapter("buyer", watch_name("buyer"))
    await buyer_core.ensure_wallets()
    db = await open_purchase_db(tmp_path / "purchases.sqlite")
    try:
        async with open_pair(regtest, vendor_core, moderator_core, tmp_path, timeout_blocks=144) as pair:
            purchases = Purchases(db, pair.buyer_box, buyer_core, Catalogs(pair), pair.w.settings, clock=pair.w.clock)

            async def publish(raw: bytes) -> None:
                return None

            purchases.attach(wake=lambda: None, publish_review=publish)
            yield pair, purchases
    finally:
        await db.close()
        regtest.cli("unloadwallet", buyer_core.watch_wallet, False)
        buyer_core.close()


async def exchange(pair: Pair, purchases: Purchases, order: str) -> str:
    """The buyer's messages to the store, the store's back (applied by the buyer); the purchase's state."""
    buyer = Buyer(await purchases.key(order) or pytest.fail("no order key"), order)
    await pair.deliver(buyer)
    await pair.fetch(buyer)
    await pair.buyer_box.apply_ready(order, pair.store, purchases.apply)
    return (await purchases.get(order)).state


async def test_a_buyer_node_and_the_store_node_agree_from_order_to_release(both: tuple[Pair, Purchases]) -> None:
    pair, purchases = both
    w, p = pair.w, pair.p
    placed = await purchases.place(
        PurchaseRequest(
            store=pair.store, listing=w.listing_id, qty=1, shipping="post", moderator=w.moderator.onion, ship_to="Jo"
        )
    )
    assert await exchange(pair, purchases, placed.id) == "awaiting_payment"
    order = await p.order(placed.id)
    bought = await purchases.get(placed.id)
    assert bought.escrow is not None and bought.escrow.address == order.escrow.address

    await purchases.pay(placed.id)
    w.regtest.mine(1)
    await p.watch_once()
    assert (await p.order(placed.id)).state is S.CONFIRMED
    await w.moderator.watch_once()
    await p.accept(placed.id)
    await p.fulfill(placed.id, "posted")
    assert await exchange(pair, purchases, placed.id) == "fulfilled"
    assert (await purchases.get(placed.id)).pending is not None

    await purchases.release(placed.id)
    await exchange(pair, purchases, placed.id)
    sent = await p.order(placed.id)
    assert sent.pending is not None and sent.pending.txid is not None, sent.history
    assert not any("refused" in h.note for h in sent.history), sent.history
    w.regtest.mine(1)
    await p.watch_once()
    assert (await p.order(placed.id)).state is S.COMPLETED
    assert await exchange(pair, purchases, placed.id) == "completed"
