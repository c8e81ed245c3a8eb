"""A buyer with nothing but a browser (JavaScript off) checks out, pays, signs the release and messages.

Chromium (Playwright, JavaScript off) fills the listing's checkout form, lands on the order page and
sees the QR code load (a PNG from the same origin: Tor Browser at "Safest" draws no SVG). After paying
from the "buyer" wallet and the vendor's fulfilment, it copies the PSBT from the read-only text box,
signs it in the "buyer" wallet (``walletprocesspsbt``, outside Pasar) and pastes it back. The checkout
POST goes out with ``Origin: null`` as Tor Browser's safest mode sends it. firefox-esr (Tor Browser's
base) checks out through the same form and renders the listing and order pages.

The nodes (tests/integration/checkout_nodes.py) run in process on an event loop of their own thread:
Playwright's sync API owns this thread's loop.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import Route

from tests.regtest import Regtest

from ..checkout_nodes import LoopThread, Shop, buyer_fields, open_shop
from .firefox import Firefox
from .harness import VIEWPORT, Tab, check_render

ORDER_URL = re.compile(r".*/order/[A-Za-z0-9_-]{32}$")


@dataclass
class Running:
    shop: Shop
    loop: LoopThread


@pytest.fixture(scope="module")
def running(bitcoind: Regtest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    bitcoind.start()  # no-op when it runs
    loop = LoopThread()
    opened = open_shop(tmp_path_factory.mktemp("checkout"), bitcoind)
    try:
        shop = loop.run(opened.__aenter__())
        try:
            yield Running(shop, loop)
        finally:
            loop.run(opened.__aexit__(None, None, None))
    finally:
        loop.close()


def _origin_null(route: Route) -> None:
    """Send the checkout POST as Tor Browser in its safest mode does: ``Origin: null``."""
    headers = {**route.request.headers, "origin": "null"}
    route.continue_(headers=headers)


def fill_checkout(tab: Tab, fields: dict[str, str]) -> None:
    page = tab.page
    page.get_by_label("Quantity").fill(fields["qty"])
    page.get_by_label("Your public key").fill(fields["buyer_pubkey"])
    page.get_by_label("Your refund address").fill(fields["refund_address"])
    page.get_by_label("Shipping address").fill(fields["ship_to"])


def test_checkout_pay_and_release_in_chromium(
    running: Running, bitcoind: Regtest, new_tab: Callable[[str], Tab]
) -> None:
    shop, loop = running.shop, running.loop
    tab = new_tab(shop.url)
    page = tab.page
    tab.goto(f"/listing/{shop.listings['Blue heron print']}")
    assert page.get_by_role("heading", name="Order with Bitcoin escrow").is_visible()
    assert page.get_by_text("Which wallets can sign this escrow?").is_visible()
    page.get_by_text("How to get a key and a refund address from Bitcoin Core").click()  # <details>, no script
    assert page.get_by_text('getnewaddress "" bech32', exact=False).first.is_visible()
    assert page.get_by_label("Post: 2,500 sats").is_checked()  # the only shipping option
    assert page.locator('input[name="moderator"]').is_checked()  # the only moderator

    fields = buyer_fields(bitcoind, shop)
    fill_checkout(tab, {**fields, "buyer_pubkey": "my key"})
    tab.submit("Place order", status=422)
    assert page.locator("#e-buyer_pubkey").is_visible()
    assert page.get_by_label("Shipping address").input_value().startswith("R. Heron")  # kept

    page.route("**/checkout", _origin_null)
    page.get_by_label("Your public key").fill(fields["buyer_pubkey"])
    page.get_by_label("Quantity").fill("2")
    tab.submit("Place order")
    assert ORDER_URL.match(page.url), page.url
    assert page.locator(".order-state").inner_text() == "Awaiting payment"
    qr = page.get_by_role("img", name=re.compile("QR code of the payment request"))
    box = qr.bounding_box()
    assert box and box["width"] >= 150  # the PNG loaded (a failed image would fail the test when it ends)
    address = page.locator("#escrow-address").inner_text()
    assert "82,500 sats" in page.locator(".pay-info").inner_text()  # 2 x 40,000 + 2,500 shipping

    bitcoind.fund("buyer", address, 82_500)
    bitcoind.mine(1)
    loop.run(shop.payments.watch_once())
    page.get_by_role("link", name="reload it").click()
    assert page.locator(".order-state").inner_text().startswith("Paid and confirmed")

    page.get_by_label("Message to the vendor").fill("Please wrap it in paper.")
    tab.submit("Send message")
    assert page.get_by_role("status").first.inner_text() == "Message sent."
    assert page.get_by_text("Please wrap it in paper.").is_visible()

    order = loop.run(shop.orders())[0]
    loop.run(shop.payments.accept(order.id))
    loop.run(shop.payments.fulfill(order.id, "posted"))
    tab.goto(page.url.split("?")[0])
    assert page.get_by_role("heading", name=re.compile("Your signature is needed")).is_visible()
    psbt = page.get_by_label("PSBT to sign (base64)").input_value()
    page.get_by_label("or paste the signed PSBT (base64)").fill(bitcoind.sign("buyer", psbt))
    tab.submit("Upload signed PSBT")
    assert page.get_by_role("status").first.inner_text() == "Your signed PSBT was accepted."
    assert page.locator(".order-state").inner_text().startswith("Payout sent (release)")  # in the mempool
    bitcoind.mine(1)
    loop.run(shop.payments.watch_once())
    page.get_by_role("link", name="reload it").click()
    assert page.locator(".order-state").inner_text().startswith("Completed")  # at its first confirmation


def _viewport(fx: Firefox, height: int) -> None:
    """A taller window, so every field of the long checkout form can be clicked without scrolling."""
    fx.call("browsingContext.setViewport", {"context": fx.context, "viewport": {"width": 1280, "height": height}})


def test_checkout_and_order_pages_in_firefox(running: Running, bitcoind: Regtest, firefox_page: Firefox) -> None:
    shop, fx = running.shop, firefox_page
    listing = f"{shop.url}/listing/{shop.listings['Blue heron print']}"
    assert fx.goto(listing) == 200
    check_render(fx.screenshot(), "the listing with its checkout form")
    fields = buyer_fields(bitcoind, shop)
    _viewport(fx, 3000)
    try:
        fx.type_into("#f-ship_to", fields["ship_to"])
        fx.type_into("#f-buyer_pubkey", fields["buyer_pubkey"])
        fx.type_into("#f-refund_address", fields["refund_address"])
        assert fx.submit("form.checkout-form button[type=submit]") == 200
    finally:
        _viewport(fx, VIEWPORT["height"])
    url = fx.last_document[0]
    assert ORDER_URL.match(url), url
    check_render(fx.screenshot(), "the order page")
