"""The checkout form shows the store's own escrow terms; its catalog names the moderators' fee and terms."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from node.web import appkeys
from tests.regtest import Regtest

from .checkout_nodes import TERMS, TIMEOUT_BLOCKS, Shop, open_shop
from .pages import check_html


@pytest.fixture
async def shop(tmp_path: Path, regtest: Regtest) -> AsyncIterator[Shop]:
    async with open_shop(tmp_path, regtest) as opened:
        yield opened


async def get(url: str) -> str:
    async with aiohttp.ClientSession() as s, s.get(url, allow_redirects=False) as r:
        assert r.status == 200
        return await r.text()


async def test_the_checkout_form_shows_the_stores_timeout_and_window(shop: Shop) -> None:
    url = f"{shop.url}/listing/{shop.listings['Blue heron print']}"
    html = await get(url)
    assert f"{TIMEOUT_BLOCKS} blocks" in html and "within <strong>3 days</strong>" in html  # the node's settings
    market = shop.vendor[appkeys.MARKET]
    await market.update_profile(shop.store, {"escrow_timeout_blocks": 4321, "accept_window": 7200})
    html = await get(url)
    check_html(html, url)
    assert "<strong>4321 blocks</strong>" in html and "within <strong>2 hours</strong>" in html
    await shop.payments.refresh(terms=True)  # what the payment loop does every offer_ttl
    catalog = await get(f"{shop.url}/.well-known/pasar/catalog.json")
    assert '"escrow_timeout_blocks":4321' in catalog.replace(" ", "")
    assert TERMS in catalog and shop.moderator_onion in catalog  # published by the payment loop's refresh
