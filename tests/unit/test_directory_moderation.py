"""Directory moderation: blocked stores and tags never show up, subscribed blocklists, bounded reports."""

import pytest

from node.core.errors import NotFound, ValidationError
from node.discovery.models import SearchQuery, Source
from tests.unit import directory_helpers
from tests.unit.directory_helpers import catalog, listing, onion

opened = directory_helpers.opened  # every test of this file runs on SQLite and on PostgreSQL


async def found(directory, q):
    page = await directory.search(SearchQuery(q=q))
    return {(r["store"], r["listing"]) for r in page["results"]}


async def test_blocking_a_store_drops_its_listings_and_mirror_and_keeps_it_out(directory):
    bad, good = onion(), onion()
    await directory.index(catalog(bad, [listing("b")]), source=Source.DIRECT, etag=None)
    await directory.index(catalog(good, [listing("g")]), source=Source.DIRECT, etag=None)
    await directory.put_thumb(bad, "t", b"jpeg")
    block = await directory.block("store", bad.upper() + ".onion", reason="scam")
    assert (block["kind"], block["value"], block["source"]) == ("store", bad, "operator")
    assert directory.is_blocked(bad) and not directory.is_blocked(good)
    assert await found(directory, "socks") == {(good, "g")}
    assert await directory.mirror(bad) is None and await directory.thumb(bad, "t") is None
    assert await directory.index(catalog(bad, [listing("b")], seq=2), source=Source.DIRECT, etag=None) == 0
    await directory.seen(bad)
    await directory.failed(bad, "x")
    assert await directory.held(bad) is None
    assert (await directory.store(bad))["blocked"]
    assert await directory.counts() == (1, 1)
    await directory.unblock("store", bad)
    assert not directory.is_blocked(bad)
    assert await directory.index(catalog(bad, [listing("b")], seq=2), source=Source.DIRECT, etag=None) == 1


async def test_blocking_a_tag_drops_the_listings_carrying_it(directory):
    store = onion()
    listings = [listing("ok", tags=("wool",)), listing("bad", tags=("wool", "weapons"))]
    await directory.index(catalog(store, listings), source=Source.DIRECT, etag='"e"')
    await directory.block("tag", "Weapons")
    assert directory.is_blocked(store, ["WEAPONS"]) and not directory.is_blocked(store, ["wool"])
    assert await found(directory, "socks") == {(store, "ok")}
    assert (await directory.store(store))["listings"] == 1

    assert await directory.index(catalog(store, listings, seq=2), source=Source.DIRECT, etag='"e"') == 1
    await directory.unblock("tag", "weapons")
    assert (await directory.held(store)).etag is None  # the next crawl fetches the whole catalog again
    assert await directory.index(catalog(store, listings, seq=3), source=Source.DIRECT, etag=None) == 2


async def test_block_validation_and_unknown_unblock(directory):
    with pytest.raises(ValidationError):
        await directory.block("store", "not-an-onion")
    with pytest.raises(ValidationError):
        await directory.block("colour", "red")
    with pytest.raises(ValidationError):
        await directory.block("tag", "two words")
    with pytest.raises(NotFound):
        await directory.unblock("tag", "never")


async def test_blocks_survive_a_restart(opened, tmp_path, clock, directory):
    store = onion()
    await directory.block("store", store)
    await directory.block("tag", "spam")
    await opened.close()
    again = await opened.directory(tmp_path, clock)
    assert again.is_blocked(store) and again.is_blocked(onion(), ["spam"])
    assert {(b["kind"], b["value"]) for b in await again.blocks()} == {("store", store), ("tag", "spam")}


async def test_a_subscribed_blocklist_replaces_its_own_entries_only(directory):
    listed, later, mine = onion(), onion(), onion()
    source = onion()
    await directory.index(catalog(later, [listing("l", tags=("drugs",))]), source=Source.DIRECT, etag=None)
    await directory.block("store", mine)
    await directory.replace_blocks(source, [listed, "garbage"], ["drugs"])
    assert directory.is_blocked(listed) and directory.is_blocked(mine)
    assert await found(directory, "socks") == set()
    await directory.replace_blocks(source, [later], [])
    assert not directory.is_blocked(listed) and directory.is_blocked(later) and directory.is_blocked(mine)
    assert not directory.is_blocked(onion(), ["drugs"])
    sources = {(b["value"], b["source"]) for b in await directory.blocks()}
    assert sources == {(later, source), (mine, "operator")}


async def test_reports_are_validated_and_bounded(opened, tmp_path, clock):
    directory = await opened.directory(tmp_path, clock, max_reports=3)
    store = onion()
    await directory.index(catalog(store, [listing("a")]), source=Source.DIRECT, etag=None)
    report = await directory.report(store, "a", "  fake\x00 listing\n")
    assert (report["store"], report["listing"], report["reason"]) == (store, "a", "fake listing")
    with pytest.raises(ValidationError):
        await directory.report(store, "missing", "why")
    with pytest.raises(ValidationError):
        await directory.report("nope", "a", "why")
    with pytest.raises(ValidationError):
        await directory.report(store, "a", " \n ")
    for i in range(5):
        await directory.report(store, "a", f"r{i}")
    reports = await directory.reports()
    assert [r["reason"] for r in reports] == ["r4", "r3", "r2"]
    long = await directory.report(store, "a", "x" * 10_000)
    assert len(long["reason"]) == 500


async def test_subscriptions(directory):
    source, listed = onion(), onion()
    await directory.subscribe(source + ".onion")
    await directory.subscribe(source)
    assert await directory.subscriptions() == [source]
    await directory.replace_blocks(source, [listed], [])
    assert directory.is_blocked(listed)
    await directory.unsubscribe(source)
    assert not directory.is_blocked(listed) and await directory.subscriptions() == []
    with pytest.raises(NotFound):
        await directory.unsubscribe(source)
    with pytest.raises(ValidationError):
        await directory.subscribe("nope")


async def test_a_catalog_carrying_a_blocked_tag_is_not_mirrored(directory):
    tagged, clean = onion(), onion()
    await directory.index(catalog(tagged, [listing("x", tags=("weapons",))]), source=Source.DIRECT, etag=None)
    await directory.index(catalog(clean, [listing("y")]), source=Source.DIRECT, etag=None)
    assert await directory.mirror(tagged) is not None
    await directory.block("tag", "weapons")  # its signed copy still holds that listing: no longer served
    assert await directory.mirror(tagged) is None and await directory.mirror(clean) is not None
    later = catalog(tagged, [listing("x", tags=("weapons",)), listing("z")], seq=2)
    assert await directory.index(later, source=Source.DIRECT, etag=None) == 1  # the clean listing is listed
    assert await directory.mirror(tagged) is None  # but the catalog is not mirrored
