"""In-store search: the FTS5 index against the old scan, hostile text, unicode, filters, pages, rebuilds."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.adapters import dbfiles, textindex
from node.adapters.store import Storage
from node.adapters.textindex import Fts5Index, fts5_index, match_expression
from node.core.config import Config
from node.core.crypto import StoreKey
from node.core.errors import StorageError
from node.core.models import PublicListing
from node.core.ports import TextDoc
from node.market import catalog, textsearch
from node.market import listings as L
from node.market import profile as P
from node.market.catalog import Snapshot
from node.market.market import Limits, Market

NOW = 1_800_000_000
ADJECTIVES = ["Complete", "Practical", "Minimal", "Handmade", "Vintage", "Deluxe"]
TOPICS = ["Bitcoin", "sourdough", "Linux", "watercolor", "chess", "Python"]
NOUNS = {"E-books": ["guide", "handbook"], "Software": ["plugin", "toolkit"], "Art": ["print", "icon pack"]}
HOSTILE = [
    '"', '""', '"bitcoin', 'bitcoin"', "*", "bit*", "**", "NEAR(", "NEAR(a b", "near(bitcoin, 2)", "-", "-bitcoin",
    "AND", "OR", "NOT", "bitcoin AND", "OR linux", "NOT NOT", "(", ")", "((linux", "^", "^linux", ":", "body:",
    "body : x", "cat:k0", "{body}", "'", "';--", "\\", "\x00", "a\x00b", "%", "_", "+", "linux+guide", "#12", "1e9",
    "\u200b", "\ufeff", "\ue000", "😀", "guide 😀", "x" * 100, "k0", "k1",
]  # fmt: skip


def corpus() -> list[dict[str, object]]:
    """A fixed catalog: numbered titles (prefixes like 1 -> 1, 10..19, 100..), categories, tags, unicode."""
    out: list[dict[str, object]] = []
    for n in range(60):
        category = list(NOUNS)[n % 3]
        noun = NOUNS[category][n % 2]
        title = f"{ADJECTIVES[n % 6]} {TOPICS[(n // 6) % 6]} {noun} #{n + 1}"
        out.append({
            "title": title, "price_sat": 1000 + n, "kind": "digital", "category": category,
            "tags": [TOPICS[(n // 6) % 6].lower(), "sale"] if n % 4 == 0 else [],
            "description": f"{title}. Delivered as a download; fair-trade & open-source friendly.",
        })  # fmt: skip
    out += [
        {"title": "Café crème guide", "price_sat": 5, "kind": "digital", "category": "Art", "description": "Paris"},
        {"title": "Straße map", "price_sat": 5, "kind": "digital", "category": "", "description": "Berlin"},
        {"title": "Москва print", "price_sat": 5, "kind": "digital", "category": "Art", "description": "Кремль"},
        {"title": "東京 poster", "price_sat": 5, "kind": "digital", "category": "Art", "description": "ポスター"},
        {"title": 'The "quoted" AND NOT-so NEAR(odd) one', "price_sat": 5, "kind": "digital", "description": "x*y"},
    ]
    return out


def snapshot(text_index=textsearch.scan_index, listings=None) -> Snapshot:
    if listings is None:
        listings = L.validate_new(corpus(), max_images=10, now=NOW)
    return catalog.build(
        StoreKey.generate(), P.validate({"name": "Shop"}), listings, seq=1, now=NOW, ttl=1000, text_index=text_index
    )


@pytest.fixture(scope="module")
def snaps() -> tuple[Snapshot, Snapshot]:
    """The same catalog twice: indexed with FTS5, and scanned (the old behaviour)."""
    listings = L.validate_new(corpus(), max_images=10, now=NOW)
    return snapshot(fts5_index, listings), snapshot(textsearch.scan_index, listings)


def old_browse(snap: Snapshot, *, query: str = "", category: str = "", page: int = 1, size: int = 24) -> catalog.Page:
    """The storefront's search before the index, verbatim: a substring scan of every listing."""

    def text(v: PublicListing) -> str:
        return " ".join([v["title"], v["category"], " ".join(v["tags"]), v["description"]]).casefold()

    cat = next((c for c in snap.categories if c.slug == category), None) if category else None
    items = snap.listings
    if cat is not None:
        items = [v for v in items if v["category"] == cat.name]
    elif category:
        items = []
    words = query.casefold().split()[:10]
    if words:
        items = [v for v in items if all(w in text(v) for w in words)]
    pages = max(1, math.ceil(len(items) / size))
    number = min(max(1, page), pages)
    start = (number - 1) * size
    return catalog.Page(items[start : start + size], len(items), number, pages, query, cat)


def ids(page: catalog.Page) -> list[str]:
    return [v["id"] for v in page.items]


# Queries made of whole words or word prefixes: here the old scan and the index agree exactly.
SAME = [
    "", "bitcoin", "BITCOIN", "bitc", "bitcoin guide", "guide bitcoin", "linux 13", "linux #13", "#13", "#5", "60",
    "handmade python", "deluxe chess handbook", "e-books", "icon pack", "icon", "pack", "sale", "print", "prin",
    "download", "fair-trade", "open-source", "nothing", "chess 999", "complete sourdough guide 1",
    "café", "CAFÉ", "crème", "москва", "моск", "кремль", "straße", "STRASSE", "東京", "quoted", '"quoted"',
    "near(odd)", "not-so",
]  # fmt: skip


@pytest.mark.parametrize("query", SAME)
@pytest.mark.parametrize("category", ["", "e-books", "art", "nope"])
def test_index_matches_the_old_scan_on_word_queries(snaps, query, category):
    fts, scan = snaps
    assert [v["id"] for v in fts.listings] == [v["id"] for v in scan.listings]
    for page in (1, 2, 99):
        want = old_browse(scan, query=query, category=category, page=page, size=5)
        for snap in (fts, scan):
            got = catalog.browse(snap, query=query, category=category, page=page, size=5)
            assert (ids(got), got.total, got.number, got.pages) == (ids(want), want.total, want.number, want.pages)
            assert got.category == want.category and got.query == query


async def test_async_search_is_browse_off_the_loop(snaps):
    fts, scan = snaps
    for snap in (fts, scan):
        for query, category, page in [("bitcoin", "", 1), ("guide", "e-books", 2), ("linux 1", "", 7), ("", "art", 1)]:
            got = await catalog.search(snap, query=query, category=category, page=page, size=3)
            want = catalog.browse(snap, query=query, category=category, page=page, size=3)
            assert (ids(got), got.total, got.number, got.pages) == (ids(want), want.total, want.number, want.pages)


def test_what_changes_from_the_scan(snaps):
    """Token prefixes, not substrings; accents ignored; punctuation-only words left out."""
    fts, scan = snaps
    assert catalog.browse(scan, query="itcoin").total > 0 and catalog.browse(fts, query="itcoin").total == 0
    # "1" was in "#21" to the scan; to the index it is the start of 1, 10..19 (and "widget 1" still finds "Widget 12")
    assert catalog.browse(scan, query="1").total == 15 and catalog.browse(fts, query="1").total == 11
    assert catalog.browse(scan, query="cafe").total == 0 and ids(catalog.browse(fts, query="cafe")) == ids(
        catalog.browse(fts, query="café")
    )
    assert catalog.browse(fts, query="creme").total == 1
    # "&" (in every description) counted as a word to the scan; the index can't look it up, so it drops it.
    assert catalog.browse(fts, query="bitcoin &").total == catalog.browse(fts, query="bitcoin").total
    assert catalog.browse(fts, query="& - *").total == 0


@pytest.mark.parametrize("query", HOSTILE)
async def test_hostile_queries_never_raise(snaps, query):
    fts, _ = snaps
    for category in ("", "art"):
        page = catalog.browse(fts, query=query, category=category, page=3, size=5)
        assert page.total >= 0 and page.number >= 1
        found = await catalog.search(fts, query=query, category=category, page=1, size=5)
        assert found.total == page.total


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=12), max_size=12))
def test_any_words_never_raise(snaps, words):
    fts, _ = snaps
    query = " ".join(words)
    page = catalog.browse(fts, query=query, size=100)
    assert len(page.items) == page.total <= len(fts.listings)
    expr = match_expression(textsearch.words(query))
    assert expr is None or expr.startswith("body : (")


def test_the_query_becomes_quoted_phrases_only():
    assert match_expression(['"', "*", "-"]) is None
    assert match_expression(['a"b', "near(x"]) == 'body : ("a""b"* AND "near(x"*)'
    assert match_expression(["x"], "k3") == 'body : ("x"*) AND cat : k3'
    index = Fts5Index([TextDoc("guide guides guided bitcoin", "E"), TextDoc("linux", "")])
    assert index.expression(["guid"], None) == 'body : (("guide" OR "guided" OR "guides"))'
    assert index.expression(["bitcoin", "x"], None) is None  # "x" starts no term: nothing can match
    assert index.expression(["bitcoin"], "E") == 'body : ("bitcoin") AND cat : k0'
    assert index.expression(["guide"], "Nope") is None
    many = Fts5Index([TextDoc(" ".join(f"w{n}" for n in range(40)), "")])
    assert many.expression(["w"], None) == 'body : ("w"*)'  # too many terms: FTS5's own prefix query


def test_pages_and_totals(snaps):
    fts, _ = snaps
    everything = catalog.browse(fts, query="download", size=7)
    assert everything.total == 60 and everything.pages == 9 and len(everything.items) == 7
    seen = [i for n in range(1, 10) for i in ids(catalog.browse(fts, query="download", page=n, size=7))]
    assert seen == [v["id"] for v in fts.listings if "download" in v["description"].casefold()]
    last = catalog.browse(fts, query="download", page=500, size=7)
    assert last.number == 9 and len(last.items) == 4 and last.total == 60
    for limit, offset in [(0, 0), (0, 5), (5, 1000), (7, 56)]:
        hits = fts.index.search(["download"], category=None, offset=offset, limit=limit)
        assert hits.total == 60 and len(hits.positions) == max(0, min(limit, 60 - offset))


def test_an_empty_store_and_an_empty_query():
    snap = snapshot(fts5_index, listings=[])
    assert catalog.browse(snap, query="anything").total == 0
    assert catalog.browse(snap).total == 0


@pytest.fixture
async def market(tmp_path):
    dbfiles.initialise(tmp_path)
    storage = Storage(tmp_path)
    await storage.open()
    limits = dataclasses.replace(Limits.from_config(Config(data_dir=tmp_path)), store_port_base=0)
    yield Market(storage, limits, clock=lambda: NOW, text_index=fts5_index)
    await storage.close()


async def test_the_index_is_rebuilt_when_the_catalog_changes(market):
    onion = (await market.create_store({"name": "Shop"}))["onion"]
    base = {"price_sat": 1000, "kind": "digital"}
    first = await market.add_listing(onion, {"title": "Blue heron print", "category": "Prints", **base})
    snap = await market.snapshot(onion)
    assert isinstance(snap.index, Fts5Index) and ids(await catalog.search(snap, query="heron")) == [first["id"]]
    assert await market.snapshot(onion) is snap  # built once per change
    second = await market.add_listing(onion, {"title": "Grey heron card", "category": "Cards", **base})
    snap = await market.snapshot(onion)
    assert ids(await catalog.search(snap, query="heron")) == [second["id"], first["id"]]  # newest first
    assert ids(await catalog.search(snap, query="heron", category="cards")) == [second["id"]]
    await market.update_listing(onion, first["id"], {"title": "Blue egret print", "category": "Prints", **base})
    snap = await market.snapshot(onion)
    assert ids(await catalog.search(snap, query="heron")) == [second["id"]]
    assert ids(await catalog.search(snap, query="egret")) == [first["id"]]
    await market.remove_listing(onion, second["id"])
    snap = await market.snapshot(onion)
    assert (await catalog.search(snap, query="heron")).total == 0


async def test_searches_from_many_tasks_share_one_thread_that_leaves_when_idle(snaps, monkeypatch):
    fts, _ = snaps
    monkeypatch.setattr(textindex, "IDLE_SECONDS", 0.05)
    pages = await asyncio.gather(*(catalog.search(fts, query=q, size=5) for q in ["bitcoin", "linux 1", "x"] * 20))
    assert [p.total for p in pages[:3]] == [catalog.browse(fts, query=q).total for q in ["bitcoin", "linux 1", "x"]]
    deadline = time.monotonic() + 10
    while any(t.name == "pasar-search" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the search thread did not leave when idle"
        await asyncio.sleep(0.01)
    assert (await catalog.search(fts, query="bitcoin")).total == pages[0].total  # and comes back on demand


async def test_a_failing_search_reports_its_error(snaps, monkeypatch):
    fts, _ = snaps
    index = fts.index
    assert isinstance(index, Fts5Index)
    monkeypatch.setattr(index, "expression", lambda words, category: "body : (")  # what quoting prevents
    with pytest.raises(StorageError, match="search index failed"):
        await index.find(["x"], category=None, offset=0, limit=5)
