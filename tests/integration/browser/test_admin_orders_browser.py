"""The vendor's and the moderator's admin order pages in Chromium with JavaScript off, on regtest.

The two nodes (tests/integration/test_orders_api.py) run in-process on an
event loop of their own thread, so the synchronous browser drives them while
they serve; the buyer pays from the regtest "buyer" wallet outside Pasar.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.regtest import Regtest

from ..test_orders_api import Pair, close_pair, open_pair, pay, place
from .conftest import log_in
from .harness import Tab

T = TypeVar("T")
# The admin's session is stored under a str key (node/web/auth.py); aiohttp warns, and with the nodes
# in this process that warning would be an error (filterwarnings = error). Subprocess nodes never see it.


class LoopThread:
    """An asyncio loop on its own thread: the nodes serve there while the browser waits here."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="nodes", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 180) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def nodes(regtest: Regtest, tmp_path: Path) -> Iterator[tuple[LoopThread, Pair]]:
    lt = LoopThread()
    try:
        pair, http = lt.run(open_pair(regtest, tmp_path))
        try:
            yield lt, pair
        finally:
            lt.run(close_pair(pair, http, regtest))
    finally:
        lt.close()


def nav(tab: Tab, name: str) -> None:
    """Follow a link of the admin's navigation bar."""
    with tab.page.expect_navigation():
        tab.page.get_by_role("navigation", name="Admin").get_by_role("link", name=name, exact=True).click()


def status(tab: Tab) -> str:
    return tab.page.get_by_role("status").first.inner_text()


def test_the_vendor_accepts_fulfills_and_messages_from_the_order_page(
    nodes: tuple[LoopThread, Pair], regtest: Regtest, new_tab: Callable[[str], Tab]
) -> None:
    lt, pair = nodes
    order_id, _token = lt.run(place(pair, regtest))
    lt.run(pay(pair, regtest, order_id))
    tab = new_tab(pair.vendor.url)
    log_in(tab)
    assert tab.page.locator("svg.admin-chart rect").count() == 30  # the sales chart, drawn on the server
    assert order_id in tab.page.locator("table").last.inner_text()
    nav(tab, "Orders")
    tab.page.get_by_role("link", name=order_id).click()
    assert "confirmed" in tab.page.get_by_role("heading", level=1).inner_text()

    tab.submit("Claim after timeout", status=409)  # too early: the page says from which block
    assert re.search(r"block \d+", tab.page.get_by_role("alert").inner_text())
    tab.submit("Accept order")
    assert status(tab).startswith("Order accepted")
    tab.page.get_by_label("Tracking or delivery note").fill("tracking 7")
    tab.submit("Mark fulfilled")
    assert status(tab).startswith("Marked fulfilled")
    assert tab.page.get_by_role("heading", name="Pending release").is_visible()
    assert "Signed by: vendor" in tab.page.locator("section", has_text="Pending release").inner_text()
    tab.page.get_by_label("Message to the buyer").fill("Shipped today.")
    tab.submit("Send")
    assert status(tab) == "Message sent."
    assert "Shipped today." in tab.page.locator("section", has_text="Messages").inner_text()


def test_the_moderator_saves_an_offer_and_a_refused_fee_is_shown_on_the_form(
    nodes: tuple[LoopThread, Pair], new_tab: Callable[[str], Tab]
) -> None:
    _lt, pair = nodes
    tab = new_tab(pair.moderator.url)
    log_in(tab)
    nav(tab, "Moderation")
    assert pair.moderator_onion in tab.page.locator("main").inner_text()
    tab.page.get_by_label("Fee: fixed part, in satoshis").fill("200000000")  # over 1 BTC: the node refuses
    tab.submit("Save offer", status=422)
    assert tab.page.locator(".has-error", has_text="Fee: fixed part").count() == 1
    tab.page.get_by_label("Fee: fixed part, in satoshis").fill("0")
    tab.page.get_by_label("Fee: percent of the order amount (0 to 50)").fill("3")
    tab.page.get_by_label("Terms (shown to buyers at checkout)").fill("Decided within a week.")
    tab.submit("Save offer")
    assert status(tab) == "Moderation offer saved."
    assert tab.page.get_by_label("Fee: percent of the order amount (0 to 50)").input_value() == "3"
    nav(tab, "Disputes")
    assert "No cases yet." in tab.page.locator("main").inner_text()  # no order names this moderator yet


def test_the_moderator_decides_a_dispute_from_the_disputes_page(
    nodes: tuple[LoopThread, Pair], regtest: Regtest, new_tab: Callable[[str], Tab]
) -> None:
    lt, pair = nodes
    order_id, _token = lt.run(place(pair, regtest))
    paid = lt.run(pay(pair, regtest, order_id))
    lt.run(pair.vendor.api("POST", f"/orders/{order_id}/dispute", {"statement": "The buyer says it broke."}))
    tab = new_tab(pair.moderator.url)
    log_in(tab)
    nav(tab, "Disputes")
    case = tab.page.locator("section", has_text=order_id)
    assert "The buyer says it broke." in case.inner_text()
    fee = paid["amount_sat"] * 2 // 100
    case.get_by_label("To the buyer (sat)").fill("1")
    case.get_by_label("To the vendor (sat)").fill("1")
    tab.submit("Decide and sign", status=422)  # does not add up to what was paid: said on the page
    assert tab.page.locator(".field-error").count() >= 1
    case = tab.page.locator("section", has_text=order_id)
    case.get_by_label("To the buyer (sat)").fill(str(paid["paid_sat"] - fee - 40_000))
    case.get_by_label("To the vendor (sat)").fill("40000")
    tab.submit("Decide and sign")
    assert status(tab).startswith("Decision signed")
    assert "Decided" in tab.page.locator("section", has_text=order_id).inner_text()
