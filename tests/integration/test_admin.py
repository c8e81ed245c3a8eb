"""Admin listener: API token, login session, CSRF, Host/Origin checks, uploads."""

from __future__ import annotations

import io
import re

import aiohttp
import pytest
from PIL import Image

from tests.unit.test_images import jpeg_with_exif

from .conftest import PASSWORD
from .pages import check_headers, check_html


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "form without csrf token"
    return match.group(1)


@pytest.fixture
async def browser(running_node):
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(running_node.admin_url, cookie_jar=jar) as s:
        yield s


async def login(s: aiohttp.ClientSession) -> str:
    async with s.post("/login", data={"password": PASSWORD}, allow_redirects=False) as r:
        assert r.status == 303, await r.text()
        cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    async with s.get("/") as r:
        assert r.status == 200
        return csrf_of(await r.text())


async def test_api_rejects_missing_and_wrong_tokens(running_node):
    async with aiohttp.ClientSession(running_node.admin_url) as s:
        for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": running_node.token}):
            async with s.get("/api/v1/stores", headers=headers) as r:
                assert r.status == 401
                body = await r.json()
                assert body["code"] == "unauthorized" and "token" in body["error"]
        async with s.get("/api/v1/stores", headers=running_node.auth) as r:
            assert r.status == 200 and await r.json() == []


async def test_api_reports_bad_bodies_clearly(running_node):
    async with aiohttp.ClientSession(running_node.admin_url, headers=running_node.auth) as s:
        async with s.post("/api/v1/stores", data=b"{not json", headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400 and (await r.json())["code"] == "bad_request"
        async with s.post("/api/v1/stores", json={"name": ""}) as r:
            body = await r.json()
            assert r.status == 422 and body["fields"] == {"name": "is required"}
        async with s.post("/api/v1/stores", json={"name": "S"}) as r:
            store = await r.json()
        async with s.post(f"/api/v1/stores/{store['onion']}/listings", json={"title": "T", "price_sat": 1.5}) as r:
            body = await r.json()
            assert r.status == 422 and "price_sat" in body["fields"] and "shipping" in body["fields"]
        async with s.get("/api/v1/stores/nosuchstore/listings") as r:
            assert r.status == 404 and (await r.json())["code"] == "not_found"
        async with s.post(f"/api/v1/stores/{store['onion']}/images", data=b"GIF89a-not-really") as r:
            assert r.status == 422 and "image" in (await r.json())["fields"]


async def test_api_store_list_has_onion_name_and_local_url(running_node):
    async with aiohttp.ClientSession(running_node.admin_url, headers=running_node.auth) as s:
        async with s.post("/api/v1/stores", json={"name": "Shop"}) as r:
            assert r.status == 201
        async with s.get("/api/v1/stores") as r:
            (store,) = await r.json()
    assert len(store["onion"]) == 56 and store["name"] == "Shop"
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", store["local_url"])


async def test_ui_requires_login_and_wrong_password_fails(browser):
    async with browser.get("/", allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/login"
    async with browser.get("/login") as r:
        check_headers(r)
        check_html(await r.text(), "/login")
    async with browser.post("/login", data={"password": "wrong password"}, allow_redirects=False) as r:
        assert r.status == 401 and "wrong password" in await r.text()
    async with browser.post("/stores", data={"name": "X"}, allow_redirects=False) as r:
        assert r.status == 403


async def test_ui_post_without_csrf_token_is_rejected(browser, running_node):
    csrf = await login(browser)
    async with browser.post("/stores", data={"name": "No token"}, allow_redirects=False) as r:
        assert r.status == 403 and "form token" in await r.text()
    async with browser.post("/stores", data={"name": "Bad token", "csrf": "x" * 43}, allow_redirects=False) as r:
        assert r.status == 403
    async with browser.post("/stores", data={"name": "With token", "csrf": csrf}, allow_redirects=False) as r:
        assert r.status == 303
    async with (
        aiohttp.ClientSession(running_node.admin_url, headers=running_node.auth) as s,
        s.get("/api/v1/stores") as r,
    ):
        assert [x["name"] for x in await r.json()] == ["With token"]


async def test_foreign_host_or_origin_is_refused(browser, running_node):
    csrf = await login(browser)
    async with browser.get("/", headers={"Host": "evil.example:80"}) as r:
        assert r.status == 403
    async with browser.post(
        "/stores", data={"name": "X", "csrf": csrf}, headers={"Origin": "http://evil.example"}
    ) as r:
        assert r.status == 403
    async with aiohttp.ClientSession(
        running_node.admin_url, headers={**running_node.auth, "Host": "attacker.test"}
    ) as s:
        async with s.get("/api/v1/stores") as r:
            assert r.status == 403


async def test_full_merchant_flow_through_forms(browser, running_node):
    csrf = await login(browser)
    async with browser.post("/stores", data={"name": "Form Shop", "csrf": csrf}) as r:
        html = await r.text()
        assert r.status == 200 and "Form Shop" in html
        store_url = str(r.url.path)
        check_html(html, store_url, allow_loopback=True)
    onion = store_url.rsplit("/", 1)[1]
    form = aiohttp.FormData()
    for k, v in {
        "csrf": csrf,
        "title": "Photo print",
        "price_sat": "abc",
        "kind": "physical",
        "shipping": "Post | DE, AT | 500",
        "variants": "SMALL | Small | | 2\nBIG | Big | 9000 |",
        "coupons": "TEN | 10%",
        "active": "on",
        "description": "kept text",
    }.items():
        form.add_field(k, v)
    form.add_field("images_upload", jpeg_with_exif(), filename="photo.jpg", content_type="image/jpeg")
    async with browser.post(f"/stores/{onion}/listings", data=form) as r:
        html = await r.text()
        assert r.status == 422 and "whole number" in html and "kept text" in html  # nothing typed is lost
        check_html(html, "listing form", allow_loopback=True)
        kept = re.findall(r'name="keep_image" value="([0-9a-f]{64})"', html)
        assert len(kept) == 1  # the uploaded image survives the failed submit
    data = {
        "csrf": csrf,
        "title": "Photo print",
        "price_sat": "5000",
        "kind": "physical",
        "shipping": "Post | DE, AT | 500",
        "variants": "SMALL | Small | | 2\nBIG | Big | 9000 |",
        "coupons": "TEN | 10%",
        "active": "on",
        "keep_image": kept[0],
    }
    async with browser.post(f"/stores/{onion}/listings", data=data, allow_redirects=False) as r:
        assert r.status == 303, await r.text()
    async with aiohttp.ClientSession(running_node.admin_url, headers=running_node.auth) as s:
        async with s.get(f"/api/v1/stores/{onion}/listings") as r:
            (item,) = await r.json()
        async with s.get(f"/api/v1/stores/{onion}") as r:
            local = (await r.json())["local_url"]
    assert item["images"] == kept and item["variants"][1]["price_sat"] == 9000 and item["coupons"][0]["percent"] == 10
    # The stored image, fetched as a buyer would, carries no EXIF.
    async with aiohttp.ClientSession() as s, s.get(f"{local}/images/{kept[0]}.jpg") as r:
        blob = await r.read()
    img = Image.open(io.BytesIO(blob))
    assert not img.getexif() and b"SpyCam" not in blob and b"Exif" not in blob
    # Edit page, inventory form and delete, all with the token.
    async with browser.get(f"/stores/{onion}/listings/{item['id']}") as r:
        assert r.status == 200 and "SMALL | Small" in await r.text()
    stock = {"csrf": csrf, f"stock:{item['id']}:SMALL": "7", f"stock:{item['id']}:BIG": ""}
    async with browser.post(f"/stores/{onion}/inventory", data=stock, allow_redirects=False) as r:
        assert r.status == 303
    async with browser.get(f"/stores/{onion}/inventory") as r:
        check_html(await r.text(), "inventory", allow_loopback=True)
    async with browser.post(
        f"/stores/{onion}/listings/{item['id']}/delete", data={"csrf": csrf}, allow_redirects=False
    ) as r:
        assert r.status == 303
    async with aiohttp.ClientSession(running_node.admin_url, headers=running_node.auth) as s:
        async with s.get(f"/api/v1/stores/{onion}/listings") as r:
            assert await r.json() == []


async def test_profile_form_errors_and_save(browser):
    csrf = await login(browser)
    async with browser.post("/stores", data={"name": "P", "csrf": csrf}) as r:
        onion = str(r.url.path).rsplit("/", 1)[1]
    bad = {"csrf": csrf, "name": "", "moderators": "not-an-onion", "display_unit": "sat"}
    async with browser.post(f"/stores/{onion}/profile", data=bad) as r:
        assert r.status == 422 and "is required" in await r.text()
    good = {"csrf": csrf, "name": "Renamed", "policy_returns": "Send it back", "display_unit": "BTC", "vacation": "on"}
    async with browser.post(f"/stores/{onion}/profile", data=good) as r:
        html = await r.text()
        assert r.status == 200 and "Renamed" in html and "Send it back" in html


async def test_invite_only_and_client_keys_through_forms(browser):
    csrf = await login(browser)
    async with browser.post("/stores", data={"name": "Club", "csrf": csrf}) as r:
        onion = str(r.url.path).rsplit("/", 1)[1]
        assert "Tor is off" in await r.text()
    async with browser.post(f"/stores/{onion}/access", data={"csrf": csrf, "max_streams": "lots"}) as r:
        assert r.status == 422 and "whole number" in await r.text()
    data = {"csrf": csrf, "invite_only": "on", "max_streams": "25"}
    async with browser.post(f"/stores/{onion}/access", data=data) as r:
        html = await r.text()
        check_html(html, r.url, allow_loopback=True)
        assert "invite-only" in html and "first invitation" in html and 'value="25"' in html
    async with browser.post(f"/stores/{onion}/clients", data={"csrf": csrf, "client_name": "alice"}) as r:
        html = await r.text()
        assert "Client key added" in html and "alice" in html
        keys = re.findall(rf"{onion}:descriptor:x25519:([A-Z2-7]{{52}})", html)
        assert len(keys) == 2
    async with browser.post(f"/stores/{onion}/clients", data={"csrf": csrf, "client_name": "Alice"}) as r:
        assert r.status == 422 and "another client key has this name" in await r.text()
    client_id = re.findall(rf"/stores/{onion}/clients/([0-9a-f]+)/delete", html)[1]
    async with browser.post(f"/stores/{onion}/clients/{client_id}/delete", data={"csrf": csrf}) as r:
        html = await r.text()
        assert "Client key removed" in html and "alice" not in html


async def test_access_api(running_node):
    async with aiohttp.ClientSession(running_node.admin_url, headers=running_node.auth) as s:
        async with s.post("/api/v1/stores", json={"name": "S"}) as r:
            onion = (await r.json())["onion"]
        async with s.get("/api/v1/tor") as r:
            assert (await r.json())["mode"] == "off"
        async with s.patch(f"/api/v1/stores/{onion}/access", json={"max_streams": 2000}) as r:
            assert r.status == 422 and "max_streams" in (await r.json())["fields"]
        async with s.post(f"/api/v1/stores/{onion}/clients", json={"name": "bob"}) as r:
            client = await r.json()
            assert r.status == 201 and client["auth_private"].endswith(client["private"])
        async with s.get(f"/api/v1/stores/{onion}/clients/{client['id']}") as r:
            assert (await r.json())["private"] == client["private"] and r.headers["Cache-Control"] == "no-store"
        async with s.get(f"/api/v1/stores/{onion}") as r:
            detail = await r.json()
            assert detail["onion_service"]["clients"][0]["name"] == "bob"
            assert "private" not in detail["onion_service"]["clients"][0] and detail["invite_only"] is False
        async with s.delete(f"/api/v1/stores/{onion}/clients/{client['id']}") as r:
            assert r.status == 204
        async with s.delete(f"/api/v1/stores/{onion}/clients/{client['id']}") as r:
            assert r.status == 404
