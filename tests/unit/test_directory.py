"""Directory: index/replace, search (ranking, snippets, prefix, filters, pages), mirrors, thumbnails, expiry.

A real SQLiteDatabase on tmp_path with the real schema, real VerifiedCatalog records.
"""

import pytest

from node.core.errors import ValidationError
from node.discovery.directory import COUNT_CAP
from node.discovery.directory_read import MARK_CLOSE, MARK_OPEN
from node.discovery.models import SearchQuery, Source
from tests.unit import directory_helpers
from tests.unit.directory_helpers import DAY, NOW, catalog, listing, onion

opened = directory_helpers.opened  # every test of this file runs on SQLite and on PostgreSQL


async def search(directory, q="", **filters):
    return await directory.search(SearchQuery(q=q, **filters))


def ids(page):
    return [r["listing"] for r in page["results"]]


# -- index and replace ---------------------------------------------------------------
async def test_index_then_search_returns_the_listing_with_its_store_fields(directory):
    store = onion()
    cat = catalog(
        store, [listing("a", thumb="ab" * 32), listing("b", "Copper kettle", "A kettle for tea")], name="Wool Co"
    )
    assert await directory.index(cat, source=Source.DIRECT, etag='"e1"') == 2
    page = await search(directory, "socks")
    assert page["total"] == 1
    [hit] = page["results"]
    assert (hit["store"], hit["listing"], hit["title"], hit["price_sat"]) == (store, "a", "Wool socks", 10_000)
    assert (hit["source"], hit["as_of"], hit["store_name"], hit["category"]) == (
        "direct",
        cat.issued_at,
        "Wool Co",
        "clothing",
    )
    assert hit["thumb"] == "ab" * 32 and hit["reachable"] and hit["score"] > 0
    assert f"{MARK_OPEN}socks{MARK_CLOSE}" in hit["snippet"]
    held = await directory.held(store)
    assert held is not None
    assert (held.seq, held.hash, held.etag, held.source, held.failures) == (1, cat.hash, '"e1"', Source.DIRECT, 0)
    assert await directory.counts() == (1, 2)


async def test_reindex_replaces_the_stores_listings(directory):
    store = onion()
    await directory.index(
        catalog(store, [listing("a"), listing("b", "Copper kettle", "Tea")]), source=Source.DIRECT, etag=None
    )
    new = [listing("a", "Wool gloves", "Warm gloves"), listing("c", "Brass lamp", "Old lamp", price_sat=5)]
    assert await directory.index(catalog(store, new, seq=2), source=Source.DIRECT, etag=None) == 2
    assert (await search(directory, "kettle"))["total"] == 0
    assert (await search(directory, "socks"))["total"] == 0
    assert ids(await search(directory, "gloves")) == ["a"]
    assert ids(await search(directory, "lamp")) == ["c"]
    assert await directory.counts() == (1, 2)


async def test_a_price_only_change_is_applied(directory):
    store = onion()
    await directory.index(catalog(store, [listing("a")]), source=Source.DIRECT, etag=None)
    await directory.index(catalog(store, [listing("a", price_sat=77)], seq=2), source=Source.DIRECT, etag=None)
    [hit] = (await search(directory, "socks"))["results"]
    assert hit["price_sat"] == 77


async def test_an_older_catalog_than_the_held_one_is_ignored(directory):
    store = onion()
    await directory.index(catalog(store, [listing("a")], seq=5), source=Source.DIRECT, etag=None)
    stale = catalog(store, [listing("z", "Stale thing")], seq=4)
    assert await directory.index(stale, source=Source.MIRROR, etag=None) == 0
    assert ids(await search(directory, "socks")) == ["a"]
    assert (await directory.held(store)).seq == 5


async def test_duplicate_listing_ids_in_a_catalog_are_indexed_once(directory):
    store = onion()
    cat = catalog(store, [listing("a"), listing("a", "Other title")])
    assert await directory.index(cat, source=Source.DIRECT, etag=None) == 1


# -- ranking, snippets, prefix ---------------------------------------------------------
async def test_a_title_match_ranks_above_a_description_match(directory):
    store = onion()
    listings = [
        listing("desc", "Garden chair", "Sturdy chair, goes well with a lantern on the table"),
        listing("title", "Lantern", "Brass, for the garden"),
    ]
    await directory.index(catalog(store, listings), source=Source.DIRECT, etag=None)
    page = await search(directory, "lantern")
    assert ids(page) == ["title", "desc"]
    assert page["results"][0]["score"] > page["results"][1]["score"]


async def test_prefix_and_diacritics(directory):
    store = onion()
    listings = [
        listing("cam", "Camera bag", "Leather bag for a camera"),
        listing("cre", "Crème brûlée set", "Ramekins and a torch"),
        listing("ca", "Ca", "Short word"),
    ]
    await directory.index(catalog(store, listings), source=Source.DIRECT, etag=None)
    assert ids(await search(directory, "cam*")) == ["cam"]
    assert ids(await search(directory, "bag cam")) == ["cam"]  # the last word is a prefix
    assert ids(await search(directory, "cam bag")) == []  # earlier words are whole words
    assert ids(await search(directory, "creme brulee")) == ["cre"]
    assert ids(await search(directory, "CRÈME")) == ["cre"]
    assert set(ids(await search(directory, "ca"))) == {"ca"}  # 2 letters: not a prefix unless starred
    assert set(ids(await search(directory, "ca*"))) == {"cam", "ca"}


async def test_every_word_must_match(directory):
    store = onion()
    listings = [listing("a", "Red wool hat", "Hat"), listing("b", "Blue wool hat", "Hat")]
    await directory.index(catalog(store, listings), source=Source.DIRECT, etag=None)
    assert ids(await search(directory, "red hat")) == ["a"]
    assert ids(await search(directory, "red OR blue")) == []  # OR is a word, not an operator


# -- filters and pages -----------------------------------------------------------------
async def test_filters(directory):
    a, b = onion(), onion()
    await directory.index(
        catalog(
            a,
            [
                listing("de", "Lamp one", category="home", price_sat=100, ships_to=("DE",)),
                listing("ww", "Lamp two", category="home", price_sat=200, ships_to=("WORLDWIDE",)),
                listing("fr", "Lamp three", category="garden", price_sat=300, ships_to=("FR", "IT")),
            ],
        ),
        source=Source.DIRECT,
        etag=None,
    )
    await directory.index(catalog(b, [listing("b1", "Lamp four", price_sat=400)]), source=Source.DIRECT, etag=None)
    assert set(ids(await search(directory, "lamp", category="home"))) == {"de", "ww"}
    assert set(ids(await search(directory, "lamp", min_price_sat=200, max_price_sat=300))) == {"ww", "fr"}
    assert set(ids(await search(directory, "lamp", ships_to="de"))) == {"de", "ww", "b1"}
    assert set(ids(await search(directory, "lamp", ships_to="IT"))) == {"ww", "fr", "b1"}
    assert ids(await search(directory, "lamp", store=b)) == ["b1"]
    assert (await search(directory, "lamp", category="home"))["total"] == 2
    assert set(ids(await search(directory, "", category="garden"))) == {"fr"}


@pytest.mark.parametrize(
    "bad",
    [
        {"limit": 0},
        {"limit": 101},
        {"offset": -1},
        {"offset": 10_001},
        {"min_price_sat": -1},
        {"ships_to": "germany"},
        {"store": "nope"},
        {"category": "x" * 65},
    ],
)
async def test_bad_filters_are_validation_errors(directory, bad):
    with pytest.raises(ValidationError):
        await search(directory, "x", **bad)


async def test_pages_and_total(directory):
    store = onion()
    listings = [listing(f"l{i}", f"Candle {i}", "Beeswax candle", created_at=NOW - i) for i in range(25)]
    await directory.index(catalog(store, listings), source=Source.DIRECT, etag=None)
    first = await search(directory, "candle", limit=10)
    second = await search(directory, "candle", limit=10, offset=10)
    third = await search(directory, "candle", limit=10, offset=20)
    assert first["total"] == second["total"] == 25
    assert len(ids(first)) == 10 and len(ids(third)) == 5
    assert len(set(ids(first) + ids(second) + ids(third))) == 25
    past = await search(directory, "candle", limit=10, offset=30)  # past the end: no results, the same total
    assert (past["total"], ids(past)) == (25, [])
    filtered = {"category": "clothing", "max_price_sat": 10_000}
    assert (await search(directory, "candle", limit=10, offset=20, **filtered))["total"] == 25
    assert (await search(directory, "candle", limit=10, offset=30, **filtered))["total"] == 25
    assert (await search(directory, "candle", category="food"))["total"] == 0
    assert (await search(directory, "candle", offset=10, category="food"))["total"] == 0
    assert COUNT_CAP == 10_000


async def test_an_empty_query_lists_newest_first_and_a_future_date_does_not_stay_on_top(directory):
    store = onion()
    listings = [
        listing("old", created_at=NOW - 3 * DAY),
        listing("new", created_at=NOW - DAY),
        listing("future", created_at=NOW + 365 * DAY),
    ]
    await directory.index(catalog(store, listings), source=Source.DIRECT, etag=None)
    page = await search(directory, "")
    assert ids(page)[-1] == "old" and page["total"] == 3
    assert ids(page)[0] in {"new", "future"}
    assert [r["listing"] for r in await directory.newest(2)] == ids(page)[:2]
    assert ids(await search(directory, '" * - ( ) ^')) == ids(page)  # no word at all: filters only


HOSTILE = [
    '"',
    '""',
    '"unbalanced',
    "*",
    "**",
    "a*",
    "NEAR(",
    "NEAR(a b, 2)",
    "a AND",
    "OR",
    "NOT a",
    "-a",
    "title:socks",
    "{title description}: x",
    "^socks",
    "a + b",
    "(a",
    "a)",
    "\x00\x01\x1f",
    "\u202e\ufeff",
    "\ue000\ue001 socks",
    "\uf8ff",
    "😀 socks",
    "x" * 5000,
    " ".join(["w"] * 100),
]


@pytest.mark.parametrize("text", HOSTILE)
async def test_hostile_query_text_never_errors(directory, text):
    await directory.index(catalog(onion(), [listing()]), source=Source.DIRECT, etag=None)
    page = await search(directory, text)
    assert page["total"] >= 0


# -- crawl state -----------------------------------------------------------------------
async def test_failed_backs_off_and_seen_resets(directory, clock):
    store = onion()
    await directory.failed(store, "timeout")
    first = await directory.held(store)
    assert (first.seq, first.failures, first.next_try) == (None, 1, NOW + 60)
    await directory.failed(store, "timeout")  # backed off already (another frontend's failure): not counted
    assert (await directory.held(store)).failures == 1
    clock.now = first.next_try
    await directory.failed(store, "timeout")
    third = await directory.held(store)
    assert (third.failures, third.next_try) == (2, first.next_try + 120)
    for _ in range(30):
        clock.now = (await directory.held(store)).next_try
        await directory.failed(store, "timeout")
    assert (await directory.held(store)).next_try == clock.now + 6 * 3600
    await directory.seen(store)
    alive = await directory.held(store)
    assert (alive.failures, alive.next_try, alive.last_seen) == (0, 0, clock.now)
    assert await directory.held(onion()) is None


async def test_reachable_and_mirror_source(directory, clock):
    store = onion()
    await directory.index(catalog(store, [listing()]), source=Source.MIRROR, etag=None)
    [hit] = (await search(directory, "socks"))["results"]
    assert hit["source"] == "mirror" and not hit["reachable"]  # never seen directly
    await directory.seen(store)
    assert (await directory.store(store))["reachable"]
    await directory.failed(store, "timeout")
    info = await directory.store(store)
    assert not info["reachable"] and info["failures"] == 1 and info["source"] == "mirror"
    await directory.seen(store)
    clock.now += 2 * DAY
    assert not (await directory.store(store))["reachable"]  # not seen for longer than the window


async def test_expire_forgets_expired_catalogs_and_drops_long_unreachable_stores(directory, clock):
    expiring, gone, fine = onion(), onion(), onion()
    await directory.index(catalog(expiring, [listing("e")], issued_at=NOW - 8 * DAY), source=Source.DIRECT, etag=None)
    await directory.index(catalog(gone, [listing("g")]), source=Source.DIRECT, etag=None)
    await directory.index(catalog(fine, [listing("f")]), source=Source.DIRECT, etag=None)
    assert await directory.expire(drop_after=14 * DAY) == 1
    assert await directory.mirror(expiring) is None
    held = await directory.held(expiring)
    assert held is not None and held.seq is None  # the crawl state stays, the catalog is gone
    clock.now += 15 * DAY
    await directory.failed(gone, "timeout")
    await directory.seen(fine)
    await directory.expire(drop_after=14 * DAY)
    assert await directory.held(gone) is None
    assert (await search(directory, "socks"))["total"] == 0  # fine's catalog expired too (issued 15 days ago)
    assert await directory.held(fine) is not None


# -- mirrors and thumbnails --------------------------------------------------------------
async def test_mirror_is_byte_identical_and_capped(opened, tmp_path, clock):
    directory = await opened.directory(tmp_path, clock, mirror_store_bytes=2000, mirror_total_bytes=5000)
    big, stores = onion(), [onion() for _ in range(4)]
    cat = catalog(big, [listing()], pad=3000)
    assert await directory.index(cat, source=Source.DIRECT, etag=None) == 1  # indexed...
    assert await directory.mirror(big) is None  # ...but not kept for mirroring
    cats = []
    for i, store in enumerate(stores):
        clock.now = NOW + i
        cats.append(catalog(store, [listing()], pad=1500))
        await directory.index(cats[-1], source=Source.DIRECT, etag=None)
    assert await directory.mirror(stores[0]) is None  # the oldest is evicted past the total
    for store, cat in zip(stores[1:], cats[1:], strict=True):
        assert await directory.mirror(store) == cat.raw


async def test_thumbnails_are_capped(opened, tmp_path, clock):
    directory = await opened.directory(tmp_path, clock, thumb_bytes=100, thumbs_total_bytes=250)
    store = onion()
    await directory.put_thumb(store, "big", b"x" * 101)
    assert await directory.thumb(store, "big") is None
    for i in range(3):
        clock.now = NOW + i
        await directory.put_thumb(store, f"t{i}", bytes([i]) * 100)
    assert await directory.thumb(store, "t0") is None
    assert await directory.thumb(store, "t1") == b"\x01" * 100
    assert await directory.thumb(store, "t2") == b"\x02" * 100


async def test_stores_and_categories(directory):
    a, b = onion(), onion()
    await directory.index(
        catalog(a, [listing("1"), listing("2", category="home")], name="Beta"), source=Source.DIRECT, etag=None
    )
    await directory.index(catalog(b, [listing("3", category="home")], name="alpha"), source=Source.DIRECT, etag=None)
    assert [s["name"] for s in await directory.stores()] == ["alpha", "Beta"]
    assert await directory.categories() == [("home", 2), ("clothing", 1)]
    info = await directory.store(a)
    assert (info["listings"], info["catalog_seq"], info["blocked"]) == (2, 1, False)
    assert await directory.store(onion()) is None


async def test_a_query_with_more_matches_than_the_cap_lists_the_newest_unranked(directory, monkeypatch):
    from node.discovery import directory_read

    monkeypatch.setattr(directory_read, "COUNT_CAP", 10)
    store = onion()
    listings = [listing(f"l{i:02}", f"Candle {i}", "candle " * (1 + i % 3)) for i in range(30)]
    await directory.index(catalog(store, listings), source=Source.DIRECT, etag=None)
    page = await search(directory, "candle", limit=5)
    assert page["total"] == 11  # "more than 10"
    assert ids(page) == ["l29", "l28", "l27", "l26", "l25"]  # most recently indexed first
    assert all(r["score"] == 0.0 for r in page["results"])
    assert MARK_OPEN in page["results"][0]["snippet"]
    assert ids(await search(directory, "candle", limit=5, offset=5)) == ["l24", "l23", "l22", "l21", "l20"]
    narrow = await search(directory, "candle 7", limit=20)
    assert narrow["total"] == 1 and narrow["results"][0]["score"] > 0


async def test_concurrent_index_calls_share_transactions_and_each_gets_its_count(directory):
    import asyncio

    stores = [onion() for _ in range(20)]
    cats = [catalog(s, [listing(f"{i}-{j}", f"Item {i}") for j in range(i % 4 + 1)]) for i, s in enumerate(stores)]
    counts = await asyncio.gather(*(directory.index(c, source=Source.DIRECT, etag=None) for c in cats))
    assert counts == [i % 4 + 1 for i in range(20)]
    assert await directory.counts() == (20, sum(counts))


async def test_a_cancelled_caller_does_not_lose_the_others_results(directory):
    import asyncio

    cats = [catalog(onion(), [listing(f"x{i}")]) for i in range(6)]
    tasks = [asyncio.ensure_future(directory.index(c, source=Source.DIRECT, etag=None)) for c in cats]
    await asyncio.sleep(0)  # let them all queue
    tasks[0].cancel()
    results = await asyncio.gather(*tasks[1:])
    assert results == [1] * 5
    assert (await directory.counts())[0] in (5, 6)  # the cancelled one may have been written already


async def test_a_broad_query_with_filters_counts_among_the_newest_matches(directory, monkeypatch):
    from node.discovery import directory_read

    monkeypatch.setattr(directory_read, "COUNT_CAP", 10)
    monkeypatch.setattr(directory_read, "SCAN_CAP", 15)
    store = onion()
    listings = [listing(f"l{i:02}", f"Candle {i}", category="even" if i % 2 == 0 else "odd") for i in range(30)]
    await directory.index(catalog(store, listings), source=Source.DIRECT, etag=None)
    page = await search(directory, "candle", category="even", limit=3)
    assert page["total"] == 7  # the even ones among the 15 indexed last
    assert ids(page) == ["l28", "l26", "l24"]


async def test_stored_text_never_holds_the_snippet_marks(directory):
    store = onion()
    await directory.index(
        catalog(store, [listing("a", "Heron \ue000trap\ue001", "heron \ue001 x \ue000")]),
        source=Source.DIRECT,
        etag=None,
    )
    [hit] = (await search(directory, "heron"))["results"]
    assert hit["title"] == "Heron trap"
    assert hit["snippet"].count(MARK_OPEN) == hit["snippet"].count(MARK_CLOSE) == 1


# -- the same matches on both backends ------------------------------------------------
async def test_words_are_cut_at_punctuation_and_a_word_of_several_tokens_is_a_phrase(directory):
    store = onion()
    listings = [
        listing("tee", "Cotton t-shirt", "Size M"),
        listing("rev", "Shirt t", "Reversed words"),
        listing("num", "Lens 1.5 mm", "Mail shop@example.com or see shop.example.com/lens"),
        listing("und", "snake_case mug", "A mug"),
    ]
    await directory.index(catalog(store, listings), source=Source.DIRECT, etag=None)
    assert ids(await search(directory, "t-shirt")) == ["tee"]
    assert set(ids(await search(directory, "T SHIRT"))) == {"tee", "rev"}  # two words: anywhere
    assert ids(await search(directory, "1.5")) == ["num"]
    assert ids(await search(directory, "example")) == ["num"]
    assert ids(await search(directory, "shop@example.com")) == ["num"]
    assert ids(await search(directory, "lens mm")) == ["num"]
    assert ids(await search(directory, "snake")) == ["und"]
    assert ids(await search(directory, "case mug")) == ["und"]


async def test_column_weights_order_title_tags_category_description(directory):
    store = onion()
    listings = [
        listing("d", "Plain box", "A heron drawn on the lid", category="misc", tags=("wood",)),
        listing("c", "Plain box", "Nothing", category="heron", tags=("wood",)),
        listing("t", "Plain box", "Nothing", category="misc", tags=("heron",)),
        listing("h", "Heron box", "Nothing", category="misc", tags=("wood",)),
    ]
    await directory.index(catalog(store, listings), source=Source.DIRECT, etag=None)
    page = await search(directory, "heron")
    assert ids(page) == ["h", "t", "c", "d"]
    scores = [r["score"] for r in page["results"]]
    assert scores == sorted(scores, reverse=True) and scores[-1] > 0


async def test_a_long_description_gives_a_cut_snippet_around_the_match(directory):
    words = [f"w{i}" for i in range(60)]
    words[30] = "heron"
    store = onion()
    await directory.index(catalog(store, [listing("a", "Box", " ".join(words))]), source=Source.DIRECT, etag=None)
    [hit] = (await search(directory, "heron"))["results"]
    assert f"{MARK_OPEN}heron{MARK_CLOSE}" in hit["snippet"]
    assert hit["snippet"].startswith("…") and hit["snippet"].endswith("…")
    assert len(hit["snippet"].split()) <= 20


async def test_nul_characters_are_not_stored(directory):
    store = onion()
    cat = catalog(store, [listing("a", "Nul\x00 kettle", "Hot\x00 water")], name="Sho\x00p")
    assert await directory.index(cat, source=Source.DIRECT, etag=None) == 1
    [hit] = (await search(directory, "kettle"))["results"]
    assert (hit["title"], hit["store_name"]) == ("Nul kettle", "Shop")
