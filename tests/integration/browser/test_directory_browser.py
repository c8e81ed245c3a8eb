"""The directory in real browsers with JavaScript off: search, filter, paginate, open a result, report, block.

A real ``pasar run --no-tor`` node with ``directory_public = true``: its public directory listener
(``directory_url`` in the data dir's lock) and its admin's own directory pages. Before the node
starts, three real signed catalogs (``market.catalog.build``), verified with ``verify_catalog``, are
indexed into its ``directory.sqlite`` with the real Directory, with thumbnails for the listings that
have a photo; one store is indexed from a peer's mirror, so it shows as "merchant offline".
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from node.adapters import directory_schema
from node.adapters.sqlite import SQLiteDatabase
from node.core.config import Config
from node.core.crypto import StoreKey
from node.discovery.catalogs import verify_catalog
from node.discovery.directory import Directory, DirectoryLimits
from node.discovery.models import Source
from node.market import catalog, listings, profile

from ..conftest import PASSWORD, Node, make_node
from ..pages import check_html
from .conftest import PAGE_SIZE
from .firefox import Firefox
from .harness import Tab, check_render

# (title, category, price, description, with a photo)
HERONS = [
    ("Blue heron print", "Prints", 1000, "A giclee print of a blue heron at the estuary.", True),
    ("Heron at dawn print", "Prints", 2500, "Grey heron standing in morning mist, signed.", True),
    ("Grey heron poster", "Prints", 4000, "Large poster of a grey heron in flight.", False),
    ("Heron field guide", "Books", 1500, "Pocket guide to herons and egrets of Europe.", False),
    ("Egret print", "Prints", 1200, "Little egret on a mudflat.", False),
]
WADERS = [
    ("Heron poems", "Books", 800, "Poems about herons, tides and the shore.", False),
    ("Tide tables 2027", "Books", 300, "Tide tables for the whole coast.", False),
]
JUNK = [("Brass lamp", "Home", 9000, "A brass lamp, barely used.", False)]
HERON_TITLES = {"Blue heron print", "Heron at dawn print", "Grey heron poster", "Heron field guide", "Heron poems"}


@dataclass
class Seeded:
    stores: dict[str, str]  # name -> onion
    ids: dict[str, str]  # listing title -> id


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (96, 96), (40, 110, 160)).save(out, "JPEG")
    return out.getvalue()


def _catalog(key: StoreKey, name: str, items: list[tuple[str, str, int, str, bool]], now: int) -> bytes:
    made = listings.validate_new(
        [
            {
                "title": title,
                "description": description,
                "kind": "physical",
                "price_sat": price,
                "category": category,
                "images": [hashlib.sha256(title.encode()).hexdigest()] if photo else [],
                "shipping": [{"name": "Post", "regions": ["WORLDWIDE"], "price_sat": 500}],
            }
            for title, category, price, description, photo in items
        ],
        max_images=8,
        now=now,
    )
    prof = profile.validate({"name": name, "description": f"{name}: things for bird lovers"})
    return catalog.build(key, prof, made, seq=now, now=now, ttl=7 * 86400).envelope_bytes


async def _seed(data_dir: Path) -> Seeded:
    now = int(time.time())
    db = SQLiteDatabase(data_dir / "directory.sqlite", directory_schema.MIGRATIONS, synchronous="NORMAL")
    await db.open()
    try:
        directory = Directory(db, limits=DirectoryLimits.from_config(Config(data_dir=data_dir)))
        await directory.open()
        seeded = Seeded({}, {})
        for name, items, source in (
            ("Heron Prints", HERONS, Source.DIRECT),
            ("Wader Books", WADERS, Source.MIRROR),
            ("Junk Shop", JUNK, Source.DIRECT),
        ):
            key = StoreKey.generate()
            verified = verify_catalog(_catalog(key, name, items, now), store=key.onion, now=now)
            assert await directory.index(verified, source=source, etag=None) == len(items)
            if source is Source.DIRECT:
                await directory.seen(key.onion)
            seeded.stores[name] = key.onion
            for item in verified.listings:
                seeded.ids[item.title] = item.id
                if item.thumb:
                    await directory.put_thumb(key.onion, item.thumb, jpeg())
        return seeded
    finally:
        await db.close()


@pytest.fixture(scope="module")
def seeded_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, Seeded]]:
    node = make_node(tmp_path_factory.mktemp("dirnode"))
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API owns this thread's event loop
        seeded = pool.submit(lambda: asyncio.run(_seed(node.data_dir))).result(timeout=60)
    with open(node.data_dir / "pasar.toml", "a") as toml:
        toml.write("\ndirectory_public = true\n")
    node.run_args = ["--no-tor", "--page-size", str(PAGE_SIZE)]
    node.start()
    try:
        yield node, seeded
    finally:
        node.stop()


@pytest.fixture(scope="module")
def node(seeded_node: tuple[Node, Seeded]) -> Node:
    """The browser conftest's ``admin`` fixture logs in to this node."""
    return seeded_node[0]


@pytest.fixture(scope="module")
def seeded(seeded_node: tuple[Node, Seeded]) -> Seeded:
    return seeded_node[1]


@pytest.fixture(scope="module")
def public_url(node: Node) -> str:
    url = node.lock_info().get("directory_url")
    assert isinstance(url, str) and url.startswith("http://127.0.0.1:"), node.lock_info()
    return url


def titles(tab: Tab) -> list[str]:
    return tab.page.locator(".dir-title").all_inner_texts()


def search(tab: Tab, **fields: str) -> None:
    page = tab.page
    page.get_by_label("Search listings").fill(fields.get("q", ""))
    page.get_by_label("Category").select_option(fields.get("category", ""))
    page.get_by_label("Min price (sat)").fill(fields.get("min_price", ""))
    page.get_by_label("Max price (sat)").fill(fields.get("max_price", ""))
    tab.submit("Search")


def test_search_paginate_and_filter(public_url: str, new_tab: Callable[[str], Tab]) -> None:
    tab = new_tab(public_url)
    tab.goto("/directory")
    search(tab, q="heron")
    assert tab.page.get_by_role("heading", level=1).inner_text() == "Results for “heron”"
    assert tab.page.locator(".page-head .muted").inner_text().startswith("5 listings")
    seen = titles(tab)
    assert len(seen) == PAGE_SIZE and tab.page.locator(".pager-status").inner_text() == "Page 1 of 2"
    assert tab.page.locator(".dir-snippet mark").count() >= 1  # matched words highlighted
    tab.page.get_by_role("link", name="Next →").click()
    assert tab.page.locator(".pager-status").inner_text() == "Page 2 of 2"
    seen += titles(tab)
    assert sorted(seen) == sorted(HERON_TITLES)
    assert tab.page.get_by_label("Search listings").input_value() == "heron"  # the form keeps the query
    tab.page.get_by_role("link", name="← Previous").click()
    assert tab.page.locator(".pager-status").inner_text() == "Page 1 of 2"

    search(tab, q="heron", category="Books")
    assert sorted(titles(tab)) == ["Heron field guide", "Heron poems"]
    assert tab.page.get_by_label("Category").input_value() == "Books"
    search(tab, q="heron", max_price="1500")
    assert sorted(titles(tab)) == ["Blue heron print", "Heron field guide", "Heron poems"]
    search(tab, q="heron", min_price="2000", max_price="5000")
    assert sorted(titles(tab)) == ["Grey heron poster", "Heron at dawn print"]
    search(tab, q='"heron NEAR( * -')  # FTS5 syntax typed by a buyer is just text
    assert tab.page.get_by_role("heading", level=1).is_visible()


def test_open_a_result_goes_to_the_store_onion(public_url: str, seeded: Seeded, new_tab: Callable[[str], Tab]) -> None:
    tab = new_tab(public_url)
    tab.goto("/directory?q=blue+heron")
    link = tab.page.get_by_role("link", name="Blue heron print")
    store = seeded.stores["Heron Prints"]
    assert link.get_attribute("href") == f"http://{store}.onion/listing/{seeded.ids['Blue heron print']}"
    assert link.get_attribute("rel") == "noreferrer"
    photo = tab.page.locator(".dir-result", has_text="Blue heron print").locator(".dir-thumb img")
    box = photo.bounding_box()
    assert box and box["width"] > 50  # the thumbnail loaded from this listener
    # The store's page in the directory: reachability, catalog, its listings.
    tab.page.get_by_role("link", name="Heron Prints").first.click()
    assert tab.page.get_by_role("heading", level=1).inner_text() == "Heron Prints"
    assert tab.page.locator(".dir-facts").inner_text().count("Yes") == 1
    assert len(titles(tab)) == PAGE_SIZE and tab.page.locator(".pager-status").inner_text() == "Page 1 of 2"


def test_a_mirrored_store_is_marked_offline(public_url: str, new_tab: Callable[[str], Tab]) -> None:
    tab = new_tab(public_url)
    tab.goto("/directory?q=poems")
    result = tab.page.locator(".dir-result", has_text="Heron poems")
    marking = result.locator(".dir-offline").inner_text()
    assert re.fullmatch(r"Merchant offline, catalog as of \d{4}-\d\d-\d\d \d\d:\d\d UTC", marking), marking
    assert tab.page.locator(".dir-result", has_text="Blue heron").count() == 0
    tab.goto("/directory/new")
    assert "Tide tables 2027" in titles(tab)


def test_report_a_listing_then_the_admin_sees_it(
    public_url: str, seeded: Seeded, new_tab: Callable[[str], Tab], admin: Tab
) -> None:
    tab = new_tab(public_url)
    tab.goto("/directory?q=egret+print")
    tab.page.locator(".dir-result", has_text="Egret print").get_by_role("link", name="Report this listing").click()
    assert tab.page.get_by_role("heading", level=1).inner_text() == "Report a listing"
    tab.page.get_by_label("What is wrong with it?").fill("Photo copied from my website")
    response = tab.submit("Send report")
    assert response.request.redirected_from is not None  # POST, 303, GET
    assert response.request.redirected_from.method == "POST"
    assert tab.page.get_by_role("heading", level=1).inner_text() == "Report sent"
    admin.goto("/directory/reports")
    row = admin.page.locator("tbody tr", has_text="Photo copied from my website")
    assert row.count() == 1 and seeded.ids["Egret print"] in row.inner_text()


def test_admin_blocks_a_store_from_a_result(
    admin: Tab, public_url: str, seeded: Seeded, new_tab: Callable[[str], Tab]
) -> None:
    admin.goto("/directory?q=lamp")
    assert titles(admin) == ["Brass lamp"]
    admin.page.locator(".dir-result", has_text="Brass lamp").get_by_role("button", name="Block store").click()
    admin.page.wait_for_url(re.compile(r"/directory/reports\?done=blocked$"))
    assert admin.page.get_by_role("status").inner_text().startswith("Blocked")
    assert admin.page.locator("tbody tr", has_text=seeded.stores["Junk Shop"]).count() == 1
    buyer = new_tab(public_url)
    buyer.goto("/directory?q=lamp")
    assert titles(buyer) == []
    assert buyer.page.get_by_text("Nothing matches “lamp”.").is_visible()


def public_paths(seeded: Seeded) -> list[str]:
    heron = seeded.stores["Heron Prints"]
    return [
        "/directory",
        "/directory?q=heron",
        "/directory?q=heron&page=2",
        "/directory?q=heron&category=Books&max_price=1500",
        "/directory/new",
        f"/directory/stores/{heron}",
        f"/directory/stores/{seeded.stores['Wader Books']}",
        f"/directory/report?store={heron}&listing={seeded.ids['Egret print']}",
        f"/directory/reported?store={heron}",
    ]


# The one kind of absolute URL a directory page may carry: a listed store's own onion.
_STORE_LINK = re.compile(r'href="http://[a-z2-7]{56}\.onion/(?:listing/[A-Za-z0-9_-]{1,64})?"')


def test_pages_keep_the_no_javascript_contract(public_url: str, seeded: Seeded) -> None:
    for path in public_paths(seeded):
        with urllib.request.urlopen(public_url + path, timeout=30) as resp:
            html = resp.read().decode()
            headers = resp.headers
        assert headers["Content-Security-Policy"].startswith("default-src 'self'; script-src 'none'"), path
        assert headers["Referrer-Policy"] == "same-origin" and headers["X-Content-Type-Options"] == "nosniff"
        links = _STORE_LINK.findall(html)
        assert links or not re.search(r"q=|/stores/|/new", path), f"no link to a store's onion on {path}"
        check_html(_STORE_LINK.sub('href=""', html), path)


def _post(url: str, fields: dict[str, str], **headers: str) -> int:
    body = urllib.parse.urlencode(fields).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    opener = urllib.request.build_opener(_NoRedirect())
    try:
        with opener.open(request, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def test_report_form_token_and_rate_limit_with_origin_null(public_url: str, seeded: Seeded) -> None:
    """Tor Browser's safest mode posts with ``Origin: null``: the form token is what is checked."""
    store, listing = seeded.stores["Heron Prints"], seeded.ids["Heron at dawn print"]
    query = urllib.parse.urlencode({"store": store, "listing": listing})
    with urllib.request.urlopen(f"{public_url}/directory/report?{query}", timeout=30) as resp:
        token = re.search(r'name="token" value="([^"]+)"', resp.read().decode())
    assert token
    url, fields = f"{public_url}/directory/report", {"store": store, "listing": listing, "reason": "spam"}
    assert _post(url, {**fields, "token": token.group(1)}, Origin="null") == 303
    assert _post(url, fields, Origin="null") == 403  # no token
    assert _post(url, {**fields, "token": "1." + "0" * 64}, Origin="null") == 403  # expired and forged
    stamp, mac = token.group(1).split(".")
    assert _post(url, {**fields, "token": f"{int(stamp) + 1}.{mac}"}, Origin="null") == 403  # tampered
    other = {**fields, "listing": seeded.ids["Blue heron print"]}
    assert _post(url, {**other, "token": token.group(1)}, Origin="null") == 403  # another listing's token
    assert _post(url, {**fields, "token": token.group(1)}, Origin="http://evil.example") == 403
    codes = [_post(url, {**fields, "token": token.group(1)}, Origin=public_url) for _ in range(6)]  # own origin
    assert codes.count(303) == 4 and codes[-1] == 429, codes  # 5 reports per listing an hour


def test_every_directory_page_renders_in_firefox(
    public_url: str, node: Node, seeded: Seeded, firefox_page: Firefox
) -> None:
    fx = firefox_page
    assert fx.goto(f"{public_url}/directory/stores/{'a' * 56}") == 404
    references = {"the 404 page": fx.screenshot()}
    for path in public_paths(seeded):
        assert fx.goto(public_url + path) == 200, path
        check_render(fx.screenshot(), path, unlike=references)
    # A report from firefox-esr (Tor Browser's base), through the form.
    heron = seeded.stores["Heron Prints"]
    assert fx.goto(f"{public_url}/directory/report?store={heron}&listing={seeded.ids['Grey heron poster']}") == 200
    fx.type_into("#d-reason", "Wrong price")
    assert fx.submit(".dir-report button[type=submit]") == 200
    assert fx.last_document[0] == f"{public_url}/directory/reported?store={heron}"
    # The admin's own directory pages, logged in through the form.
    assert fx.goto(f"{node.admin_url}/login") == 200
    fx.type_into("#f-password", PASSWORD)
    assert fx.submit("form.admin-form button[type=submit]") == 200
    for path in ("/directory?q=heron", "/directory/new", f"/directory/stores/{heron}", "/directory/reports"):
        assert fx.goto(node.admin_url + path) == 200, path
        assert fx.last_document[0] == node.admin_url + path, "redirected: the session was lost"
        check_render(fx.screenshot(), path, unlike=references)
