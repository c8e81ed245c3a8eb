"""Storefronts over real HTTP: pages, images, signed catalog, isolation, headers."""

from __future__ import annotations

import io
import json
import re

import aiohttp
import pytest
from PIL import Image

from node.core import envelope
from node.market.catalog import CATALOG_TYPE

from .pages import check_headers, check_html


def png(colour: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
async def shop(running_node):
    """Two stores on one running node; store A has 30 listings, one with an image."""
    node = running_node
    async with aiohttp.ClientSession(node.admin_url, headers=node.auth) as s:
        stores = {}
        for name in ("Alpha Goods", "Beta Books"):
            async with s.post(
                "/api/v1/stores", json={"name": name, "policies": {"returns": "30 days, no questions"}}
            ) as r:
                assert r.status == 201, await r.text()
                stores[name] = await r.json()
        a, b = stores["Alpha Goods"], stores["Beta Books"]
        async with s.post(f"/api/v1/stores/{a['onion']}/images", data=png("red")) as r:
            assert r.status == 201
            img = await r.json()
        items = [
            {
                "title": f"Widget {i}",
                "price_sat": 1000 + i,
                "kind": "digital",
                "category": "Widgets" if i % 2 else "Gadgets",
                "description": f"**Bold** widget number {i} <script>alert(1)</script>",
                "description_format": "markdown",
            }
            for i in range(29)
        ] + [
            {
                "title": "Red poster",
                "price_sat": 50_000,
                "images": [img["id"]],
                "shipping": [{"name": "Post", "regions": ["DE"], "price_sat": 900}],
                "variants": [
                    {"sku": "A3", "label": "A3 size", "inventory": 0},
                    {"sku": "A2", "label": "A2 size", "price_sat": 70000},
                ],
            }
        ]
        async with s.post(f"/api/v1/stores/{a['onion']}/listings", json={"listings": items}) as r:
            assert r.status == 201, await r.text()
            created = await r.json()
        async with s.post(
            f"/api/v1/stores/{b['onion']}/listings", json={"title": "Beta only book", "price_sat": 7, "kind": "digital"}
        ) as r:
            b_item = await r.json()
    return {"node": node, "a": a, "b": b, "img": img, "items": created, "b_item": b_item}


async def get(url: str, **kw):
    async with aiohttp.ClientSession() as s, s.get(url, **kw) as r:
        return r, await r.read()


async def test_every_page_works_without_javascript(shop):
    base = shop["a"]["local_url"]
    poster = shop["items"][-1]
    paths = [
        "/",
        "/?page=2",
        "/search?q=widget+1",
        "/search?q=nothing-matches",
        "/c/widgets",
        f"/listing/{poster['id']}",
        f"/listing/{shop['items'][0]['id']}",
        "/policies",
        "/no-such-page",
        "/listing/nope",
        "/c/nope",
        "/?page=%C2%B2",  # a digit to str.isdigit, not to int()
        "/?page=99999999999",
        "/?page=0",
        "/search?q=" + "x" * 5000 + "&page=-1",
        "/listing/nope?page=5&q=junk",
    ]
    async with aiohttp.ClientSession() as s:
        for path in paths:
            async with s.get(base + path) as r:
                html = await r.text()
                assert r.status == (404 if "no" in path and "nothing" not in path else 200), (path, r.status)
                assert r.content_type == "text/html"
                check_headers(r)
                check_html(html, path)
                if r.status == 200:
                    assert "Alpha Goods" in html


async def test_pages_show_the_content(shop):
    base = shop["a"]["local_url"]
    _, home = await get(base + "/")
    assert b"Widget 28" in home and b"Red poster" in home and b"50,000 sats" in home
    _, page2 = await get(base + "/?page=2")
    assert b"Widget 0" in page2 and b"Widget 28" not in page2
    _, found = await get(base + "/search?q=widget+1")
    assert b"Widget 1" in found and b"Widget 12" in found and b"Widget 2<" not in found and b"Red poster" not in found
    _, cat = await get(base + "/c/widgets")
    assert b"Widget 1" in cat and b"Widget 2<" not in cat
    _, item = await get(base + f"/listing/{shop['items'][0]['id']}")
    assert b"<strong>Bold</strong>" in item and b"&lt;script&gt;" in item
    _, poster = await get(base + f"/listing/{shop['items'][-1]['id']}")
    assert b"A3 size" in poster and b"A2 size" in poster and b"70,000 sats" in poster
    _, pol = await get(base + "/policies")
    assert b"30 days, no questions" in pol


async def test_css_and_images_are_served_locally(shop):
    base, img = shop["a"]["local_url"], shop["img"]
    r, css = await get(base + "/static/style.css")
    assert (
        r.status == 200
        and r.content_type == "text/css"
        and b"//" not in re.sub(rb"/\*.*?\*/", b"", css, flags=re.S).replace(b"://", b"")
    )
    r, full = await get(base + img["path"])
    assert r.status == 200 and r.content_type == "image/jpeg" and "immutable" in r.headers["Cache-Control"]
    assert Image.open(io.BytesIO(full)).size == (40, 30)
    r, _thumb = await get(base + f"/images/{img['id']}.thumb.jpg")
    assert r.status == 200
    r, _ = await get(base + "/images/..%2Fkey")
    assert r.status == 404


async def test_catalog_verifies_from_the_address_alone_and_supports_etag(shop):
    a = shop["a"]
    r, body = await get(a["local_url"] + "/.well-known/pasar/catalog.json")
    assert r.status == 200 and r.content_type == "application/json"
    env = envelope.open_(json.loads(body), now=int(__import__("time").time()), expected_type=CATALOG_TYPE)
    assert env["store"] == a["onion"]
    listings = env["body"]["listings"]
    assert len(listings) == 30 and all(x["hash"].startswith("sha256:") for x in listings)
    assert env["body"]["profile"]["policies"]["returns"] == "30 days, no questions"
    etag = r.headers["ETag"]
    r2, body2 = await get(a["local_url"] + "/.well-known/pasar/catalog.json", headers={"If-None-Match": etag})
    assert r2.status == 304 and body2 == b"" and r2.headers["ETag"] == etag
    node = shop["node"]
    async with aiohttp.ClientSession(node.admin_url, headers=node.auth) as s:
        async with s.delete(f"/api/v1/stores/{a['onion']}/listings/{listings[0]['id']}") as d:
            assert d.status == 204
    r3, body3 = await get(a["local_url"] + "/.well-known/pasar/catalog.json", headers={"If-None-Match": etag})
    assert r3.status == 200 and r3.headers["ETag"] != etag
    assert json.loads(body3)["seq"] > env["seq"]


async def test_stores_are_not_linkable_through_each_other(shop):
    a, b, img = shop["a"], shop["b"], shop["img"]
    assert a["local_url"] != b["local_url"]
    for path in (f"/listing/{shop['b_item']['id']}",):
        r, _ = await get(a["local_url"] + path)
        assert r.status == 404
    r, _ = await get(b["local_url"] + img["path"])
    assert r.status == 404
    r, body = await get(b["local_url"] + "/.well-known/pasar/catalog.json")
    assert json.loads(body)["store"] == b["onion"] and a["onion"].encode() not in body
    _, home_b = await get(b["local_url"] + "/")
    assert b"Alpha" not in home_b and a["onion"].encode() not in home_b
    # The Host header selects nothing: a store listener answers only to its own names.
    r, _ = await get(b["local_url"] + "/", headers={"Host": f"{a['onion']}.onion"})
    assert r.status == 421
    r, home = await get(b["local_url"] + "/", headers={"Host": f"{b['onion']}.onion"})
    assert r.status == 200 and b"Beta Books" in home


async def test_foreign_host_names_are_refused(shop):
    """A DNS-rebinding page (evil.example -> 127.0.0.1) must not read the store."""
    base = shop["a"]["local_url"]
    port = base.rsplit(":", 1)[1]
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.2:" + port, ""):
        r, body = await get(base + "/.well-known/pasar/catalog.json", headers={"Host": host})
        assert r.status == 421 and shop["a"]["onion"].encode() not in body, host
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"{shop['a']['onion']}.onion"):
        r, _ = await get(base + "/", headers={"Host": host})
        assert r.status == 200, host


async def test_admin_and_api_are_not_served_by_store_listeners(shop):
    base = shop["a"]["local_url"]
    node = shop["node"]
    for path in ("/api/v1/stores", "/login", "/stores", "/admin", f"/stores/{shop['a']['onion']}"):
        r, _ = await get(base + path, headers=node.auth)
        assert r.status == 404, path
    async with aiohttp.ClientSession() as s, s.post(base + "/", data={"x": "1"}) as r:
        assert r.status == 405
