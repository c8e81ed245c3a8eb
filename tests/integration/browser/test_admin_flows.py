"""A merchant's first ten minutes through the admin's forms, in Chromium with JavaScript off."""

from __future__ import annotations

import io
import re
import socket
from collections.abc import Callable

from PIL import Image
from playwright.sync_api import FilePayload

from tests.unit.test_images import jpeg_with_exif

from ..conftest import Node
from .harness import Tab, fetch


def create_store(admin: Tab, name: str) -> str:
    """Create a store through the dashboard's form; its onion (from the page URL)."""
    admin.goto("/")
    admin.page.get_by_label("Store name").fill(name)
    admin.page.get_by_label("Description").fill(f"{name}: things made by hand.")
    admin.submit("Create store")
    assert admin.page.get_by_role("status").inner_text() == "Store created."
    match = re.search(r"/stores/([a-z2-7]{56})$", admin.page.url.split("?")[0])
    assert match, admin.page.url
    return match.group(1)


def local_url(admin: Tab) -> str:
    """The store's own listener, as the store page links it."""
    href = admin.page.locator(".admin-meta a.mono").get_attribute("href")
    assert href and re.fullmatch(r"http://127\.0\.0\.1:\d+", href), href
    return href


def test_create_a_store_and_edit_its_profile(admin: Tab, buyer: Callable[[str], Tab]) -> None:
    create_store(admin, "Heron Prints")
    shop = buyer(local_url(admin))
    page = admin.page
    page.get_by_label("Store name", exact=True).fill("Heron & Crane Prints")
    page.get_by_label("Shipping", exact=True).fill("Ships in 3 days, tracked.")
    page.get_by_label("Returns", exact=True).fill("Return within 30 days.")
    page.get_by_label("Vacation mode (browsing works, orders are paused)").check()
    page.get_by_label("Show prices in").select_option("BTC")
    admin.submit("Save profile")
    assert page.get_by_role("status").inner_text() == "Profile saved."
    assert page.get_by_role("heading", level=1).inner_text() == "Heron & Crane Prints"
    shop.goto("/policies")
    assert shop.page.locator("#shipping").inner_text().endswith("Ships in 3 days, tracked.")
    assert "Return within 30 days." in shop.page.locator("#returns").inner_text()
    assert "on vacation" in shop.page.get_by_role("status").inner_text()
    assert shop.page.locator(".brand").inner_text() == "Heron & Crane Prints"


def _fill_listing(page: Tab, **fields: str) -> None:
    labels = {
        "title": "Title",
        "price": "Price (satoshis)",
        "category": "Category",
        "shipping": "Shipping options",
        "variants": "Variants",
        "coupons": "Coupons",
    }
    for key, value in fields.items():
        page.page.get_by_label(labels[key], exact=True).fill(value)


def test_listing_with_image_variants_coupons_inventory_and_removal(admin: Tab, buyer: Callable[[str], Tab]) -> None:
    onion = create_store(admin, "Photo Shop")
    shop = buyer(local_url(admin))
    page = admin.page
    page.get_by_role("link", name="Add listing").click()
    _fill_listing(
        admin,
        title="Heron at dawn",
        price="5000",
        category="Prints",
        shipping="Post | DE, AT | 500",
        variants="SMALL | Small print | | 2\nBIG | Big print | 9000 |",
    )
    photo_file: FilePayload = {"name": "heron.jpg", "mimeType": "image/jpeg", "buffer": jpeg_with_exif((400, 300))}
    page.get_by_label("Add images").set_input_files(files=[photo_file])
    admin.submit("Create listing")
    assert page.get_by_role("status").inner_text() == "Listing saved."
    row = page.locator("tbody tr", has_text="Heron at dawn")
    assert "2 options" in row.inner_text()

    # The buyer sees the listing with its photo, and the photo's bytes carry no EXIF.
    shop.goto("/")
    shop.page.get_by_role("link", name=re.compile("Heron at dawn")).click()
    photo = shop.page.locator(".item-main-image img")
    src = photo.get_attribute("src")
    assert src and re.fullmatch(r"/images/[0-9a-f]{64}\.jpg", src), src
    blob = fetch(shop.page.url.split("/listing/")[0] + src)
    img = Image.open(io.BytesIO(blob))
    assert img.format == "JPEG" and not img.getexif() and b"SpyCam" not in blob and b"Exif" not in blob
    assert photo.bounding_box() is not None and photo.bounding_box()["width"] > 50  # type: ignore[index]
    assert "Small print" in shop.page.inner_text(".item-info") and "Coupons accepted" not in shop.page.content()
    listing_url = shop.page.url

    # Edit: variants and coupons through the text boxes.
    page.locator("tbody tr", has_text="Heron at dawn").get_by_role("link", name="Edit").click()
    assert page.get_by_label("Variants", exact=True).input_value().startswith("SMALL | Small print")
    _fill_listing(
        admin,
        variants="SMALL | Small print | | 2\nBIG | Big print | 9000 |\nHUGE | Huge print | 20000 | 1",
        coupons="DAWN | 10%",
    )
    admin.submit("Save changes")
    assert page.get_by_role("status").inner_text() == "Listing saved."
    shop.goto(listing_url)
    info = shop.page.inner_text(".item-info")
    assert "Huge print" in info and "Coupons accepted" in info

    # Inventory: the small print is down to 7.
    page.get_by_role("link", name="Inventory").click()
    page.get_by_label("Small print").fill("7")
    admin.submit("Save inventory")
    assert page.get_by_role("status").inner_text() == "Inventory saved."
    assert page.get_by_label("Small print").input_value() == "7"
    shop.goto(listing_url)
    assert "7 in stock" in shop.page.locator("tr", has_text="Small print").inner_text()

    # Removal: gone from the admin and from the storefront, and so is its photo.
    page.get_by_role("link", name="Back to store").click()
    admin.submit("Remove")
    assert page.get_by_role("status").inner_text() == "Listing removed."
    assert page.get_by_text("No listings yet.").is_visible()
    shop.goto(listing_url, status=404)
    shop.goto("/")
    assert shop.page.get_by_text("No items for sale yet.").is_visible()
    assert onion in page.url


def test_invite_only_with_a_client_key_shown_on_the_page(admin: Tab, node: Node) -> None:
    onion = create_store(admin, "Members Club")
    page = admin.page
    page.get_by_label("Invite-only: only buyers holding a client key can reach this store").check()
    admin.submit("Save and republish")
    assert page.get_by_role("status").inner_text().startswith("Onion service settings saved")
    assert page.locator(".admin-meta .admin-pill", has_text="invite-only").is_visible()
    page.get_by_label("New key for (a name only you see)").fill("alice")
    admin.submit("Add client key")
    assert page.get_by_role("status").inner_text().startswith("Client key added")
    row = page.locator("tbody tr", has_text="alice")
    key_line = row.get_by_text(re.compile(rf"^{onion}:descriptor:x25519:[A-Z2-7]{{52}}$"))
    assert not key_line.is_visible()  # folded until asked for
    row.get_by_text("Show key").click()  # <details>: no script needed
    assert key_line.is_visible()
    # Turning invite-only off keeps the keys but says they are unused.
    page.get_by_label("Invite-only: only buyers holding a client key can reach this store").uncheck()
    admin.submit("Save and republish")
    assert page.get_by_text("(used only while invite-only is on)").is_visible()
    assert page.locator("tbody tr", has_text="alice").count() == 1


def test_move_a_store_to_another_port_then_delete_it(admin: Tab, buyer: Callable[[str], Tab], node: Node) -> None:
    onion = create_store(admin, "Short Lived")
    page = admin.page
    page.get_by_label("Port", exact=True).fill("80")
    admin.submit("Save port", status=422)
    assert "1024" in page.locator("#port-title").locator("..").inner_text()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    page.get_by_label("Port", exact=True).fill(str(port))
    admin.submit("Save port")
    assert page.get_by_role("status").inner_text().startswith("Port saved")
    assert local_url(admin) == f"http://127.0.0.1:{port}"
    buyer(f"http://127.0.0.1:{port}").goto("/")

    page.get_by_role("link", name="Delete store…").click()
    assert "deleted/" in page.locator("main").inner_text()
    admin.submit("Delete store")
    assert page.get_by_role("status").inner_text().startswith("Store deleted")
    assert onion not in page.content()
    assert list((node.data_dir / "deleted").glob(f"{onion}-*/key")), "the key is kept in deleted/"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the store's listener still answers"
