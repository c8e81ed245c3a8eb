"""What a user or an attacker can send never makes a 500, a traceback or a log line with buyer data.

Each case here was a 500 (or a lost login) before it was fixed; the node's log
is checked after every test for tracebacks.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import aiohttp
import pytest

from node.adapters.store import Storage

from .conftest import PASSWORD

FORM = "application/x-www-form-urlencoded"


def assert_clean_log(node) -> None:
    text = node.read_log()
    assert "Traceback" not in text and " ERROR " not in text, text


@pytest.fixture
async def api(running_node):
    async with aiohttp.ClientSession(running_node.admin_url, headers=running_node.auth) as s:
        yield s
    assert_clean_log(running_node)


@pytest.fixture
async def store(api):
    async with api.post("/api/v1/stores", json={"name": "Hostile"}) as r:
        assert r.status == 201
        return (await r.json())["onion"]


@pytest.fixture
async def listing(api, store):
    body = {"title": "Mug", "price_sat": 1000, "kind": "digital"}
    async with api.post(f"/api/v1/stores/{store}/listings", json=body) as r:
        assert r.status == 201, await r.text()
        return (await r.json())["id"]


@pytest.fixture
async def admin(running_node):
    """A logged-in admin session and its CSRF token."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(running_node.admin_url, cookie_jar=jar) as s:
        async with s.post("/login", data={"password": PASSWORD}, allow_redirects=False) as r:
            assert r.status == 303
        async with s.get("/") as r:
            csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text())
        assert csrf
        yield s, csrf.group(1)
    assert_clean_log(running_node)


def json_endpoints(store: str, listing: str) -> list[tuple[str, str]]:
    s = f"/api/v1/stores/{store}"
    return [
        ("POST", "/api/v1/stores"),
        ("PATCH", s),
        ("PATCH", f"{s}/access"),
        ("POST", f"{s}/clients"),
        ("POST", f"{s}/listings"),
        ("PUT", f"{s}/listings/{listing}"),
        ("PUT", f"{s}/listings/{listing}/inventory"),
    ]


async def test_deeply_nested_json_is_a_400_on_every_json_endpoint(api, store, listing):
    for depth in (1000, 100_000):
        for method, path in json_endpoints(store, listing):
            body = ("[" * depth).encode()
            async with api.request(method, path, data=body, headers={"Content-Type": "application/json"}) as r:
                reply = await r.json()
                assert r.status == 400, (method, path, reply)
                assert reply["code"] == "bad_request"
    # Valid JSON that nests too deeply is refused as well, before any domain code sees it.
    nested = json.dumps({"name": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]})
    async with api.post("/api/v1/stores", data=nested, headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400 and "nested" in (await r.json())["error"]


async def test_json_needs_the_json_content_type_and_utf8(api, store, listing):
    cases = [
        ({"Content-Type": "application/json; charset=bogus"}, b'{"name": "x"}', 415),
        ({"Content-Type": "application/json; charset=latin-1"}, b'{"name": "x"}', 415),
        ({"Content-Type": "text/plain"}, b'{"name": "x"}', 415),
        ({"Content-Type": "application/x-www-form-urlencoded"}, b'{"name": "x"}', 415),
        ({"Content-Type": "application/json"}, b'{"name": "\xff"}', 400),
        ({"Content-Type": "application/json"}, b"", 400),
        ({"Content-Type": "application/json"}, b'{"name": NaN}', 422),
    ]
    for method, path in json_endpoints(store, listing):
        for headers, body, status in cases:
            async with api.request(method, path, data=body, headers=headers) as r:
                reply = await r.json()
                assert r.status in (status, 400, 422) and r.status < 500, (method, path, headers, reply)
                if status == 415:
                    assert r.status == 415 and reply["code"] == "unsupported_media_type", reply
                    assert (
                        "application/json" in reply["error"] or "charset" in reply["error"] or "UTF-8" in reply["error"]
                    )
    async with api.post(
        "/api/v1/stores", data=b'{"name": "Ok"}', headers={"Content-Type": "application/json; charset=UTF-8"}
    ) as r:
        assert r.status == 201


async def test_multipart_without_boundary_is_a_400(api, admin, store):
    async with api.post(
        f"/api/v1/stores/{store}/images", data=b"xx", headers={"Content-Type": "multipart/form-data"}
    ) as r:
        assert r.status == 400 and "multipart" in (await r.json())["error"]
    session, _csrf = admin
    for path in (f"/stores/{store}/listings", "/stores", "/login"):
        async with session.post(path, data=b"xx", headers={"Content-Type": "multipart/form-data"}) as r:
            assert r.status == 400, (path, r.status)
            assert "multipart" in await r.text()


async def test_form_posts_with_bad_charset_or_bytes_are_4xx(admin, store):
    session, csrf = admin
    token = csrf.encode()
    cases = [
        (f"{FORM}; charset=bogus", b"csrf=" + token + b"&name=x", 415),
        (FORM, b"csrf=" + token + b"&name=\xff\xfe", 400),
    ]
    for ctype, body, status in cases:
        for path in ("/stores", f"/stores/{store}/profile", "/login"):
            async with session.post(path, data=body, headers={"Content-Type": ctype}, allow_redirects=False) as r:
                assert r.status == status, (path, ctype, body, r.status, await r.text())
    multipart = (
        b'--XyZ\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n' + token + b"\r\n"
        b'--XyZ\r\nContent-Disposition: form-data; name="title"\r\n\r\n\xff\xfe\xfd\r\n--XyZ--\r\n'
    )
    async with session.post(
        f"/stores/{store}/listings", data=multipart, headers={"Content-Type": "multipart/form-data; boundary=XyZ"}
    ) as r:
        assert r.status == 400 and "UTF-8" in await r.text()


async def test_a_logged_in_form_post_works_with_null_origin(admin, running_node, api):
    """The CSRF-guarded forms, not only the login, as Chromium and Firefox send them."""
    session, csrf = admin
    for headers in ({"Origin": "null", "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate"}, {}):
        name = f"Shop {len(headers)}"
        async with session.post("/stores", data={"name": name, "csrf": csrf}, headers=headers) as r:
            assert r.status == 200 and name in await r.text()
    async with api.get("/api/v1/stores") as r:
        assert sorted(s["name"] for s in await r.json()) == ["Shop 0", "Shop 3"]


async def test_a_part_with_an_unknown_transfer_encoding_is_a_400_everywhere(running_node, store, api):
    async with api.get(f"/api/v1/stores/{store}") as r:
        local = (await r.json())["local_url"]
    secret = "buyerpayload"
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="q"\r\n'
        b"Content-Transfer-Encoding: " + secret.encode() + b"\r\n\r\nx\r\n--XyZ--\r\n"
    )
    headers = {"Content-Type": "multipart/form-data; boundary=XyZ"}
    async with aiohttp.ClientSession() as s:
        for url in (f"{local}/", f"{local}/search", f"{running_node.admin_url}/login"):
            async with s.post(url, data=body, headers=headers) as r:
                assert r.status == 400, (url, r.status)
    assert secret not in running_node.read_log()


async def test_a_same_origin_form_post_works_with_real_null_or_no_origin(running_node):
    """Chromium and Firefox send ``Origin: null`` under Referrer-Policy: no-referrer."""
    variants = [
        {"Origin": running_node.admin_url, "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate"},
        {"Origin": "null", "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate"},
        {"Origin": "null"},
        {},
    ]
    for headers in variants:
        async with (
            aiohttp.ClientSession(running_node.admin_url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as s,
            s.post("/login", data={"password": PASSWORD}, headers=headers, allow_redirects=False) as r,
        ):
            assert r.status == 303, (headers, await r.text())


async def test_cross_site_requests_are_refused(admin, running_node):
    session, csrf = admin
    refused = [
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Origin": "null"},
        {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "navigate", "Origin": "http://127.0.0.1:1"},
        {"Origin": "http://evil.example"},
        {"Origin": "http://127.0.0.1:1"},
    ]
    for headers in refused:
        async with session.post("/stores", data={"name": "Evil", "csrf": csrf}, headers=headers) as r:
            assert r.status == 403 and "refused" in await r.text(), headers
        async with session.post("/login", data={"password": PASSWORD}, headers=headers) as r:
            assert r.status == 403, headers
    # A link from another site may open a page; it may not embed or fetch one.
    async with session.get("/", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}) as r:
        assert r.status == 200
    async with session.get(
        "/static/style.css", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}
    ) as r:
        assert r.status == 403
    async with aiohttp.ClientSession(running_node.admin_url, headers=running_node.auth) as api:
        async with api.get("/api/v1/stores") as r:
            assert [s["name"] for s in await r.json()] == []


async def test_out_of_range_expiry_is_refused(api, store):
    far = int(time.time()) + 11 * 366 * 86400
    for value in (2199023255552, 999999999999, far, 2**70):
        body = {"title": "T", "price_sat": 5, "kind": "digital", "expires_at": value}
        async with api.post(f"/api/v1/stores/{store}/listings", json=body) as r:
            reply = await r.json()
            assert r.status == 422 and "expires_at" in reply["fields"], reply


async def test_a_stored_expiry_no_calendar_can_show_still_renders(node_factory):
    node = node_factory()
    node.start()
    async with aiohttp.ClientSession(node.admin_url, headers=node.auth) as api:
        async with api.post("/api/v1/stores", json={"name": "Old"}) as r:
            onion = (await r.json())["onion"]
        body = {"title": "Forever", "price_sat": 5, "kind": "digital"}
        async with api.post(f"/api/v1/stores/{onion}/listings", json=body) as r:
            item = await r.json()
    node.stop()
    # Data written by an older version, before the range was checked.
    storage = Storage(node.data_dir)
    await storage.open()
    try:
        await storage.replace_listing(onion, {**item, "expires_at": 2199023255552}, lambda seq: seq + 1)
    finally:
        await storage.close()
    node.start()
    async with aiohttp.ClientSession(node.admin_url, headers=node.auth) as api:
        async with api.get(f"/api/v1/stores/{onion}") as r:
            local = (await r.json())["local_url"]
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(node.admin_url, cookie_jar=jar) as s:
        async with s.post("/login", data={"password": PASSWORD}) as r:
            assert r.status == 200
        for path in (f"/stores/{onion}", f"/stores/{onion}/listings/{item['id']}", f"/stores/{onion}/inventory"):
            async with s.get(path) as r:
                assert r.status == 200, path
    async with aiohttp.ClientSession(local) as s:
        for path in ("/", f"/listing/{item['id']}", "/search?q=Forever"):
            async with s.get(path) as r:
                assert r.status == 200, path
    assert_clean_log(node)


async def test_nothing_a_buyer_sends_reaches_the_log(api, store, running_node):
    async with api.get(f"/api/v1/stores/{store}") as r:
        local = (await r.json())["local_url"]
    secret = "buyersearch"
    async with aiohttp.ClientSession(local) as s:
        for path in (f"/search?q={secret}{'a' * 100_000}", f"/listing/{secret}", f"/{secret}" + "b" * 20_000):
            async with s.get(path) as r:
                assert 400 <= r.status < 500
        async with s.get("/", headers={"X-Long": secret * 2000}) as r:
            assert 400 <= r.status < 500
    # Give the server a moment to write whatever it would log, bounded.
    for _ in range(20):
        await asyncio.sleep(0.05)
    assert secret not in running_node.read_log()
