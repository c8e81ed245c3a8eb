"""A buyer browsing a store (Chromium), and every storefront and admin page in both browsers."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.unit.test_images import jpeg_with_exif

from ..conftest import PASSWORD, Node
from .conftest import PAGE_SIZE
from .firefox import Firefox
from .harness import Tab, api, check_render

PRINTS = ["Blue heron print", "Crane at dusk print", "Kingfisher print", "Egret print"]
BOOKS = ["Field guide to waders", "Estuary poems", "Tide tables 2027"]


@dataclass
class Shop:
    onion: str
    url: str
    listing_ids: dict[str, str]


@pytest.fixture(scope="module")
def shop(node: Node) -> Shop:
    store = api(node, "POST", "/api/v1/stores", {"name": "Estuary Goods", "description": "Prints and books."})
    onion = store["onion"]
    policies = {"shipping": "Ships on Mondays.", "returns": "30 days.", "terms": "", "privacy": "No logs."}
    api(node, "PATCH", f"/api/v1/stores/{onion}", {"policies": policies})
    image = api(node, "POST", f"/api/v1/stores/{onion}/images", raw=jpeg_with_exif((320, 240)))["id"]
    items = [
        {
            "title": t,
            "price_sat": 1000 + i,
            "kind": "digital",
            "category": "Prints",
            "images": [image] if i == 0 else [],
        }
        for i, t in enumerate(PRINTS)
    ] + [{"title": t, "price_sat": 2000 + i, "kind": "digital", "category": "Books"} for i, t in enumerate(BOOKS)]
    created = api(node, "POST", f"/api/v1/stores/{onion}/listings", {"listings": items})
    url = api(node, "GET", f"/api/v1/stores/{onion}")["local_url"]
    return Shop(onion, url, {item["title"]: item["id"] for item in created})


def cards(tab: Tab) -> list[str]:
    return tab.page.locator(".card-title").all_inner_texts()


def test_home_pages_through_all_items(shop: Shop, buyer: Callable[[str], Tab]) -> None:
    tab = buyer(shop.url)
    tab.goto("/")
    assert tab.page.get_by_text("Prints and books.").is_visible()
    assert tab.page.locator(".page-head .muted").inner_text() == "7 items"
    seen = []
    for number in (1, 2, 3):
        assert tab.page.locator(".pager-status").inner_text() == f"Page {number} of 3"
        assert len(cards(tab)) == (PAGE_SIZE if number < 3 else 1)
        seen += cards(tab)
        if number < 3:
            tab.page.get_by_role("link", name="Next →").click()
    assert sorted(seen) == sorted(PRINTS + BOOKS)
    tab.page.get_by_role("link", name="← Previous").click()
    assert tab.page.locator(".pager-status").inner_text() == "Page 2 of 3"


def test_category_filter(shop: Shop, buyer: Callable[[str], Tab]) -> None:
    tab = buyer(shop.url)
    tab.goto("/")
    tab.page.get_by_role("navigation", name="Categories").get_by_role("link", name=re.compile("^Books")).click()
    assert tab.page.get_by_role("heading", level=1).inner_text() == "Books"
    assert sorted(cards(tab)) == sorted(BOOKS)
    current = tab.page.locator('.cat-nav a[aria-current="page"]').inner_text()
    assert current.startswith("Books")


def test_search_finds_and_says_when_nothing_matches(shop: Shop, buyer: Callable[[str], Tab]) -> None:
    tab = buyer(shop.url)
    tab.goto("/")
    tab.page.get_by_label("Search this store").fill("heron")
    with tab.page.expect_navigation():
        tab.page.get_by_label("Search this store").press("Enter")
    assert tab.page.get_by_role("heading", level=1).inner_text() == "Results for “heron”"
    assert cards(tab) == ["Blue heron print"]
    tab.page.get_by_label("Search this store").fill("flamingo")
    tab.submit("Search")
    assert tab.page.get_by_text("Nothing matches “flamingo”.").is_visible()


def test_listing_page_and_policies(shop: Shop, buyer: Callable[[str], Tab]) -> None:
    tab = buyer(shop.url)
    tab.goto("/search?q=heron")
    tab.page.get_by_role("link", name=re.compile("Blue heron print")).click()
    assert tab.page.url == f"{shop.url}/listing/{shop.listing_ids['Blue heron print']}"
    assert tab.page.get_by_role("heading", level=1).inner_text() == "Blue heron print"
    assert tab.page.locator(".price-lg").inner_text().startswith("1,000")
    photo = tab.page.locator(".item-main-image img")
    box = photo.bounding_box()
    assert box and box["width"] > 50
    tab.page.get_by_role("link", name="Prints").first.click()
    assert tab.page.url == f"{shop.url}/c/prints"
    tab.page.get_by_role("link", name="Store policies").click()
    assert tab.page.locator("#shipping").inner_text().endswith("Ships on Mondays.")
    assert tab.page.locator("#terms").count() == 0  # an empty section is not shown


def storefront_paths(shop: Shop) -> list[str]:
    first = shop.listing_ids["Blue heron print"]
    return ["/", "/?page=2", "/c/prints", "/c/books?page=1", "/search?q=print", f"/listing/{first}", "/policies"]


def admin_paths(node: Node, shop: Shop) -> list[str]:
    item = shop.listing_ids["Blue heron print"]
    s = f"/stores/{shop.onion}"
    return ["/", s, f"{s}/listings/new", f"{s}/listings/{item}", f"{s}/inventory", f"{s}/delete"]


def test_every_page_in_chromium(shop: Shop, node: Node, admin: Tab, buyer: Callable[[str], Tab]) -> None:
    tab = buyer(shop.url)
    for path in storefront_paths(shop):
        tab.goto(path)
        tab.page.wait_for_load_state("load")
    for path in admin_paths(node, shop):
        admin.goto(path)
        admin.page.wait_for_load_state("load")
    # Problems (other hosts, console errors, failed resources) fail the test when it ends.


def test_every_page_renders_in_firefox(shop: Shop, node: Node, firefox_page: Firefox) -> None:
    fx = firefox_page
    not_found = fx.goto(f"{shop.url}/listing/{'0' * 64}")
    assert not_found == 404
    references = {"the 404 page": fx.screenshot()}
    for path in storefront_paths(shop):
        assert fx.goto(shop.url + path) == 200, path
        check_render(fx.screenshot(), path, unlike=references)

    # Log in through the form (Firefox sends its own Origin / Sec-Fetch-Site).
    assert fx.goto(f"{node.admin_url}/login") == 200
    references["the login page"] = fx.screenshot()
    fx.type_into("#f-password", "wrong password")
    assert fx.submit("form.admin-form button[type=submit]") == 401
    fx.type_into("#f-password", PASSWORD)
    assert fx.submit("form.admin-form button[type=submit]") == 200
    assert fx.last_document[0] == f"{node.admin_url}/"
    for path in admin_paths(node, shop):
        assert fx.goto(node.admin_url + path) == 200, path
        assert fx.last_document[0] == node.admin_url + path, "redirected: the session was lost"
        check_render(fx.screenshot(), path, unlike=references)
