"""The buyer's purchases pages in Chromium with JavaScript off, on a real ``pasar run --no-tor`` node.

The node's directory holds a store's signed catalog (seeded before the node starts) whose node it cannot
reach (no tor): a purchase placed from the directory's "Buy with this node" link waits in the outbox and
its page says so. A second purchase, seeded with a checked escrow, shows the "confirm payment" form with
the exact amount and address. The node's wallet is the regtest "buyer" wallet (the escrow key and refund
address come from it when the order is placed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest

from node.adapters import directory_schema, purchases_schema
from node.adapters.sqlite import SQLiteDatabase
from node.core import crypto, reviews
from node.core.config import Config
from node.core.crypto import StoreKey
from node.core.models import Listing, Profile, Sats
from node.discovery.catalogs import verify_catalog
from node.discovery.directory import Directory, DirectoryLimits
from node.discovery.models import Source
from node.market import catalog as market_catalog
from node.messaging import wire
from node.payments.models import Escrow, KeyRef
from node.purchases.models import Event, Purchase
from node.purchases.store import PurchaseStore
from tests.regtest import Regtest

from ..conftest import Node, make_node
from .conftest import log_in
from .harness import Tab

MODERATOR = "b" * 56
PRICE, SHIPPING = 40_000, 2_500
PAID_ID = "feedc0de" * 4
PAY_ID = "0ddba11c" * 4  # its confirm form is submitted: the buyer wallet pays
SHIPPED_ID = "5111bbed" * 4  # paid and fulfilled: message and dispute forms
DONE_ID = "c0ffee00" * 4  # completed, funding confirmed, with the store's receipt: the review form
LISTING_HASH = "sha256:" + "0" * 64


@dataclass(frozen=True)
class Seeded:
    store: str
    escrow_address: str


def _listing(now: int) -> Listing:
    return cast(Listing, {
        "id": "mug", "created_at": now, "updated_at": now, "title": "Heron mug", "description": "A mug.",
        "description_format": "text", "kind": "physical", "price_sat": PRICE, "ref_price": None,
        "category": "Kitchen", "tags": ["mug"], "images": [], "inventory": None, "min_qty": 1, "max_qty": 5,
        "expires_at": None, "coupons": [], "active": True, "variants": [],
        "shipping": [{"name": "Post", "regions": ["WORLDWIDE"], "price_sat": SHIPPING}],
    })  # fmt: skip


PROFILE = cast(Profile, {
    "name": "Heron shop", "description": "Mugs.", "policies": {}, "vacation": False, "display_unit": "sat",
    "moderators": [MODERATOR], "escrow_timeout_blocks": 1000,
    "moderator_terms": [{"onion": MODERATOR, "fee_percent": 1, "fee_sat": 500, "terms": "I decide in a week."}],
})  # fmt: skip


def _paid_purchase(store: str, address: str, now: int, purchase_id: str = PAID_ID) -> Purchase:
    keys = [KeyRef("02" + secrets.token_hex(32)) for _ in range(4)]  # shown, never used to sign
    escrow = Escrow(keys[0], keys[1], keys[2], keys[3], 1000, "wsh(seeded)#00000000", address)
    return Purchase(
        id=purchase_id, store=store, listing_id="mug", listing_hash="sha256:" + "0" * 64, title="Heron mug",
        sku=None, qty=1, shipping="Post", coupon=None, moderator=MODERATOR, amount_sat=Sats(PRICE + SHIPPING),
        moderator_fee_sat=Sats(500 + (PRICE + SHIPPING) // 100),
        order_key=StoreKey.generate().seed.hex(), buyer_key=keys[0], refund_address=address,
        state="awaiting_payment", created_at=now, updated_at=now, escrow=escrow,
        escrow_amount_sat=Sats(PRICE + SHIPPING), pay_by=now + 3600,
        history=(Event(now, "queued"), Event(now, "awaiting_payment", "escrow checked")),
    )  # fmt: skip


def _later(store: StoreKey, address: str, now: int) -> list[Purchase]:
    """A purchase paid and fulfilled (to message and dispute), and one completed with its receipt (to review)."""
    shipped = _paid_purchase(store.onion, address, now, SHIPPED_ID)
    shipped = dataclasses.replace(shipped, state="fulfilled", paid_txid="ab" * 32, paid_sent=True, paid_sat=42_500)
    done = _paid_purchase(store.onion, address, now, DONE_ID)
    buyer = wire.key_address(StoreKey(bytes.fromhex(done.order_key)))
    receipt = reviews.seal_receipt(
        store, order=DONE_ID, buyer=buyer, address=address, listing_hash=LISTING_HASH, now=now
    )
    done = dataclasses.replace(
        done,
        state="completed",
        paid_txid="cd" * 32,
        paid_sent=True,
        funding=(("cd" * 32, 0, 42_500),),
        funding_block="ef" * 32,
        receipt=crypto.canonical_json(receipt).decode(),
    )
    return [_paid_purchase(store.onion, address, now, PAY_ID), shipped, done]


async def _seed(data_dir: Path, escrow_address: str) -> Seeded:
    now, key = int(time.time()), StoreKey.generate()
    snap = market_catalog.build(key, PROFILE, [_listing(now)], seq=1, now=now, ttl=86400)
    db = SQLiteDatabase(data_dir / "directory.sqlite", directory_schema.MIGRATIONS, synchronous="NORMAL")
    await db.open()
    try:
        held = Directory(db, limits=DirectoryLimits.from_config(Config(data_dir=data_dir)))
        await held.open()
        await held.index(verify_catalog(snap.envelope_bytes, store=key.onion, now=now), source=Source.DIRECT, etag=None)
    finally:
        await db.close()
    pdb = await purchases_schema.open_purchase_db(data_dir / purchases_schema.FILE_NAME)
    try:
        for p in [_paid_purchase(key.onion, escrow_address, now), *_later(key, escrow_address, now)]:
            await PurchaseStore(pdb).insert(p)
    finally:
        await pdb.close()
    return Seeded(key.onion, escrow_address)


def bitcoin_flags(regtest: Regtest, wallet: str) -> list[str]:
    return [
        f
        for name, value in regtest.config_overrides(wallet).items()
        for f in ("--" + name.replace("_", "-"), str(value))
    ]


@pytest.fixture(scope="module")
def shop(bitcoind: Regtest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, Seeded]]:
    bitcoind.start()
    node = make_node(tmp_path_factory.mktemp("buyer"))
    address = bitcoind.address("moderator")  # any regtest address: the page only shows it
    with ThreadPoolExecutor(1) as pool:
        seeded = pool.submit(lambda: asyncio.run(_seed(node.data_dir, address))).result(timeout=60)
    node.run_args = ["--no-tor", *bitcoin_flags(bitcoind, "buyer")]
    node.start()
    try:
        yield node, seeded
    finally:
        node.stop()


def _words(tab: Tab) -> str:
    return " ".join(tab.page.locator("main").inner_text().split())


def test_a_purchase_placed_while_the_store_is_unreachable_waits_and_says_so(
    shop: tuple[Node, Seeded], new_tab: Callable[[str], Tab]
) -> None:
    node, seeded = shop
    tab = new_tab(node.admin_url)
    log_in(tab)
    tab.goto("/directory?q=heron")
    with tab.page.expect_navigation():
        tab.page.get_by_role("link", name="Buy with this node").first.click()
    assert "Buy “Heron mug”" in _words(tab), _words(tab)
    assert "fee 1% + 500 sats" in _words(tab)
    tab.page.get_by_label("Quantity").fill("9")  # over the listing's max_qty: the browser itself refuses it
    tab.page.get_by_role("button", name="Place order").click()
    assert tab.page.get_by_label("Quantity").evaluate("e => !e.validity.valid")
    tab.page.get_by_label("Shipping address").fill("R. Heron, 1 Estuary Lane")
    tab.page.get_by_label(f"{MODERATOR}.onion", exact=False).check()
    tab.page.get_by_label("Quantity").fill("2")
    tab.submit("Place order")
    assert "/purchases/" in tab.page.url
    words = _words(tab)
    assert "This node runs without tor: the order waits until it runs with tor" in words, words
    assert "not reachable" not in words  # nothing was tried: it is not the store's fault
    assert "nothing is paid before the store answers" in words and "queued" in words
    assert tab.page.get_by_role("button", name="Pay", exact=False).count() == 0
    tab.goto("/purchases")
    listing = _words(tab)
    assert "Heron mug" in listing and "queued" in listing and seeded.store[:16] in listing


def test_a_checked_escrow_shows_the_exact_amount_and_address_to_confirm(
    shop: tuple[Node, Seeded], new_tab: Callable[[str], Tab]
) -> None:
    node, seeded = shop
    tab = new_tab(node.admin_url)
    log_in(tab)
    tab.goto(f"/purchases/{PAID_ID}")
    words = _words(tab)
    assert "Confirm payment" in words and seeded.escrow_address in words, words
    assert "42,500 sats" in words and "0.00042500 BTC" in words
    form = tab.page.locator(f'form[action="/purchases/{PAID_ID}/pay"]')
    assert form.locator('input[name="address"]').get_attribute("value") == seeded.escrow_address
    assert form.locator('input[name="amount_sat"]').get_attribute("value") == str(PRICE + SHIPPING)
    assert "not reachable" not in words


def test_the_confirm_form_pays_the_escrow_from_the_nodes_wallet(
    shop: tuple[Node, Seeded], new_tab: Callable[[str], Tab], bitcoind: Regtest
) -> None:
    node, _ = shop
    tab = new_tab(node.admin_url)
    log_in(tab)
    tab.goto(f"/purchases/{PAY_ID}")
    tab.submit(f"Pay {PRICE + SHIPPING:,} sats from my wallet")
    assert tab.page.url.endswith(f"/purchases/{PAY_ID}?done=pay")
    words = _words(tab)
    assert "Payment made from your wallet to the escrow address" in words, words
    txid = tab.page.locator("dd.mono").filter(has_text=re.compile("^[0-9a-f]{64}$")).first.inner_text()
    bitcoind.sync()
    assert bitcoind.in_mempool(txid)
    assert tab.page.get_by_role("button", name="Pay", exact=False).count() == 0  # once


def test_message_dispute_and_review_forms_work_without_javascript(
    shop: tuple[Node, Seeded], new_tab: Callable[[str], Tab]
) -> None:
    node, _ = shop
    tab = new_tab(node.admin_url)
    log_in(tab)
    tab.goto(f"/purchases/{SHIPPED_ID}")
    tab.page.get_by_label("Message to the store").fill("Is it on its way?")
    tab.submit("Send")
    assert tab.page.url.endswith("?done=message") and "Is it on its way?" in _words(tab)
    tab.page.get_by_label("Your statement to the moderator").fill("It arrived broken.")
    tab.submit("Open a dispute")
    words = _words(tab)
    assert tab.page.url.endswith("?done=dispute") and "you opened a dispute" in words, words
    assert tab.page.get_by_role("button", name="Open a dispute").count() == 0  # one dispute
    tab.goto(f"/purchases/{DONE_ID}")
    tab.page.get_by_label("4 of 5").check()
    tab.page.get_by_label("Your review").fill("Good mug, slow post.")
    tab.submit("Sign and send the review")
    words = _words(tab)
    assert tab.page.url.endswith("?done=review") and "Your review: 4 of 5" in words, words
    assert "Good mug, slow post." in words
