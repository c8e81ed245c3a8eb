"""Search pages rendered from parts are byte for byte the page home.html renders whole."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from yarl import URL

from node.adapters.textindex import fts5_index
from node.core.config import Config
from node.core.crypto import StoreKey
from node.market import catalog
from node.market import listings as L
from node.market import profile as P
from node.market.catalog import Snapshot
from node.web import appkeys, render, storefront
from node.web.pagecache import PageCache

NOW = 1_800_000_000
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def items() -> list[dict[str, object]]:
    out: list[dict[str, object]] = [
        {
            "title": f"Widget {n} <b>bold</b> & “quotes”",
            "price_sat": 1000 + n * 777,
            "kind": "digital",
            "category": ["Widgets", "Hats & Caps", "Hats Caps"][n % 3],
            "inventory": 0 if n % 5 == 0 else None,
            "ref_price": {"currency": "EUR", "minor": 1234} if n % 2 else None,
        }
        for n in range(40)
    ]
    out.append({"title": "Café crème", "price_sat": 1, "kind": "digital"})
    return out


class Market:
    """The one market call the search handler makes."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    async def snapshot(self, onion: str) -> Snapshot:
        return self.snap


def build(profile: dict[str, object], seq: int = 1) -> Snapshot:
    listings = L.validate_new(items(), max_images=10, now=NOW)
    return catalog.build(
        StoreKey.generate(), P.validate(profile), listings, seq=seq, now=NOW, ttl=1000, text_index=fts5_index
    )


@pytest.fixture
def store() -> web.Application:
    snap = build({"name": "Shop <i>", "description": "We sell widgets.", "display_unit": "BTC"})
    parent = web.Application()
    parent[appkeys.CONFIG] = Config(data_dir=Path("/nonexistent"), page_size=7)
    parent[appkeys.MARKET] = Market(snap)
    parent[appkeys.PAGES] = PageCache()
    parent[appkeys.CSS] = b""
    parent[appkeys.JINJA] = render.make_env(TEMPLATES)
    return storefront.create_store_app(parent, snap.onion)


def whole(app: web.Application, query: str, page: catalog.Page) -> str:
    """home.html rendered whole, as the search handler did before."""
    snap: Snapshot = app[appkeys.MARKET].snap
    request = make_mocked_request("GET", "/search", app=app)
    ctx = {"profile": snap.profile, "categories": snap.categories, "unit": snap.profile["display_unit"]}
    return render.render(request, "home.html", {**ctx, "query": query, "page": page})


QUERIES = ["", "   ", "widget", "widget 1", "WIDGET 3", "bold", "hats", "café", "cafe", "nothing", '"', "<script>",
           "a & b", "“quotes”", "x" * 100, "\ue000query\ue000", "{{ 7 * 7 }}", "{% raw %}"]  # fmt: skip


@pytest.mark.parametrize("query", QUERIES)
async def test_search_pages_are_the_pages_home_html_renders(store, query):
    snap = store[appkeys.MARKET].snap
    for number in (0, 1, 2, 3, 7, 999):
        url = URL("/search").with_query({"q": query, "page": str(number)})
        response = await storefront.search(make_mocked_request("GET", str(url), app=store))
        page = catalog.browse(snap, query=query, page=number, size=7)
        assert response.body == whole(store, query, page).encode(), (query, number)
        assert response.content_type == "text/html"


async def test_a_new_catalog_version_renders_anew(store):
    first = await storefront.search(make_mocked_request("GET", "/search?q=widget", app=store))
    snap = build({"name": "Renamed", "vacation": True}, seq=2)
    store[appkeys.MARKET].snap = snap
    second = await storefront.search(make_mocked_request("GET", "/search?q=widget", app=store))
    assert b"Renamed" in second.body and b"Shop &lt;i&gt;" not in second.body and b"on vacation" in second.body
    assert second.body == whole(store, "widget", catalog.browse(snap, query="widget", size=7)).encode()
    assert first.body != second.body
