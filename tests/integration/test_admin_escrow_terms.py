"""The store form's escrow terms (timeout N, accept window in hours) on a running node, over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from .pages import check_html
from .test_admin import csrf_of, login


@pytest.fixture
async def admin(running_node: Any) -> AsyncIterator[aiohttp.ClientSession]:
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(running_node.admin_url, cookie_jar=jar) as s:
        yield s


async def profile_of(node: Any, onion: str) -> dict[str, Any]:
    async with aiohttp.ClientSession(node.admin_url, headers=node.auth) as s:
        async with s.get(f"/api/v1/stores/{onion}") as r:
            assert r.status == 200
            record = await r.json()
    profile: dict[str, Any] = record["profile"]
    return profile


async def test_the_store_form_sets_and_clears_the_stores_escrow_terms(
    admin: aiohttp.ClientSession, running_node: Any
) -> None:
    csrf = await login(admin)
    async with admin.post("/stores", data={"name": "Terms", "csrf": csrf}) as r:
        onion = str(r.url.path).rsplit("/", 1)[1]
        html = await r.text()
        assert 'name="escrow_timeout_blocks" value=""' in html and 'name="accept_window_hours" value=""' in html
    csrf = csrf_of(html)
    base = {"csrf": csrf, "name": "Terms", "display_unit": "sat"}
    bad = {**base, "escrow_timeout_blocks": "100", "accept_window_hours": "0.5"}
    async with admin.post(f"/stores/{onion}/profile", data=bad) as r:
        html = await r.text()
        assert r.status == 422 and "144 to 65535" in html and "1 hour to 30 days" in html
        assert 'value="100"' in html  # shown again as typed
    good = {**base, "escrow_timeout_blocks": "1000", "accept_window_hours": "36"}
    async with admin.post(f"/stores/{onion}/profile", data=good) as r:
        html = await r.text()
        check_html(html, r.url, allow_loopback=True)
        assert r.status == 200 and 'value="1000"' in html and 'name="accept_window_hours" value="36"' in html
    profile = await profile_of(running_node, onion)
    assert (profile["escrow_timeout_blocks"], profile["accept_window"]) == (1000, 36 * 3600)
    async with admin.post(f"/stores/{onion}/profile", data={**base, "escrow_timeout_blocks": ""}) as r:
        assert r.status == 200
    profile = await profile_of(running_node, onion)
    assert (profile["escrow_timeout_blocks"], profile["accept_window"]) == (None, None)  # the node's settings
