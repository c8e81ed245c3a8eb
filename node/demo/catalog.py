"""What the demo's merchants sell: three stores of three listings, each with a picture drawn by Pillow."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageDraw

SHIPPING = "Post"


@dataclass(frozen=True)
class Item:
    title: str
    price_sat: int
    category: str
    tags: str
    colour: tuple[int, int, int]
    shape: str  # circle | square | triangle


@dataclass(frozen=True)
class Shop:
    node: str
    name: str
    description: str
    items: tuple[Item, ...]


SHOPS = (
    Shop("merchant1", "Heron Prints", "Linocut prints of river birds, printed by hand.", (
        Item("Heron at dawn", 40_000, "art", "print,linocut,birds", (70, 110, 160), "triangle"),
        Item("Kingfisher", 35_000, "art", "print,linocut,birds", (30, 140, 170), "circle"),
        Item("Estuary map", 55_000, "art", "print,map", (120, 150, 90), "square"),
    )),
    Shop("merchant2", "Marsh Pottery", "Stoneware mugs and bowls, glazed with local ash.", (
        Item("Ash-glaze mug", 25_000, "home", "pottery,mug", (150, 120, 80), "square"),
        Item("Tea bowl", 30_000, "home", "pottery,bowl", (110, 90, 70), "circle"),
        Item("Salt pig", 28_000, "home", "pottery,kitchen", (170, 160, 140), "triangle"),
    )),
    Shop("merchant3", "Reed Books", "Second-hand field guides and nature writing.", (
        Item("Birds of the estuary", 18_000, "books", "books,birds,field guide", (60, 90, 60), "square"),
        Item("Wild flowers, 1962", 22_000, "books", "books,flowers", (180, 90, 120), "circle"),
        Item("The tide tables", 9_000, "books", "books,sea", (40, 60, 120), "triangle"),
    )),
)  # fmt: skip


def picture(item: Item, size: int = 480) -> bytes:
    """A PNG: a plain background, one shape in the item's colour, a lighter border."""
    bg = tuple(min(255, c + 90) for c in item.colour)
    img = Image.new("RGB", (size, size), (bg[0], bg[1], bg[2]))
    draw = ImageDraw.Draw(img)
    m = size // 5
    box = (m, m, size - m, size - m)
    if item.shape == "circle":
        draw.ellipse(box, fill=item.colour)
    elif item.shape == "square":
        draw.rectangle(box, fill=item.colour)
    else:
        draw.polygon([(size // 2, m), (size - m, size - m), (m, size - m)], fill=item.colour)
    draw.rectangle((4, 4, size - 5, size - 5), outline=(255, 255, 255), width=6)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def listing_body(item: Item, image_id: str) -> dict[str, object]:
    """The admin API's listing fields (``POST /api/v1/stores/<store>/listings``)."""
    return {
        "title": item.title,
        "description": f"{item.title}: made or found by the demo market's merchants. Not a real offer.",
        "price_sat": item.price_sat,
        "category": item.category,
        "tags": item.tags,
        "kind": "physical",
        "inventory": 20,
        "shipping": [{"name": SHIPPING, "regions": "WORLDWIDE", "price_sat": 2_000}],
        "images": [image_id],
    }
