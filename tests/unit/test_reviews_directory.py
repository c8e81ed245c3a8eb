"""Reviews in the directory: read from catalogs, taken from gossip, rating, the "omits reviews" flag, chain marks."""

import dataclasses
import json

import pytest

from node.adapters.directory_schema import MIGRATIONS
from node.adapters.sqlite import SQLiteDatabase
from node.core import envelope
from node.core.crypto import StoreKey
from node.core.errors import WalletError
from node.discovery import review_index
from node.discovery.catalogs import verify_catalog
from node.discovery.models import Source
from node.discovery.review_checks import NoChain, ReviewChecks
from node.market import catalog as market_catalog
from node.market import profile
from node.market import reviews as market_reviews
from tests.unit import directory_helpers
from tests.unit.directory_helpers import DAY, NOW, catalog, listing
from tests.unit.review_helpers import make, receipt, shop

opened = directory_helpers.opened  # every test of this file runs on SQLite and on PostgreSQL


def _signed_catalog(key, items, *, now=NOW, extra=()):
    """A real signed catalog carrying ``items`` (reviews) and ``extra`` (raw entries appended as they are)."""
    held = [market_reviews.stored(r) for r in items]
    snap = market_catalog.build(key, profile.validate({"name": "Shop"}), [], seq=now, now=now, ttl=DAY, reviews=held)
    if not extra:
        return snap.envelope_bytes
    env = json.loads(snap.envelope_bytes)
    body = dict(env["body"])
    body["reviews"] = [*body.get("reviews", []), *extra]
    return json.dumps(envelope.seal(key, "pasar.catalog", body, seq=now, issued_at=now, expires_at=now + DAY)).encode()


def test_catalog_reviews_verify_and_bad_entries_are_skipped_and_counted():
    key = StoreKey.generate()
    good = [make(key, rating=5), make(key, rating=2)]
    forged = make(key).envelope()
    forged["body"]["rating"] = 1
    elsewhere = make(shop()).envelope()
    raw = _signed_catalog(key, good, extra=[forged, elsewhere, "junk", {"type": "pasar.review"}])
    got = verify_catalog(raw, store=key.onion, now=NOW)
    assert sorted(r.rating for r in got.reviews) == [2, 5] and got.bad_reviews == 4
    assert verify_catalog(_signed_catalog(key, []), store=key.onion, now=NOW).reviews == ()


def test_catalog_with_reviews_not_a_list_still_verifies():
    key = StoreKey.generate()
    body = {"profile": profile.validate({"name": "Shop"}), "listings": [], "reviews": {"a": 1}}
    raw = json.dumps(envelope.seal(key, "pasar.catalog", body, seq=1, issued_at=NOW, expires_at=NOW + DAY)).encode()
    got = verify_catalog(raw, store=key.onion, now=NOW)
    assert got.reviews == () and got.bad_reviews == 1


def _with_reviews(store, reviews, **kw):
    return dataclasses.replace(catalog(store, [listing()], **kw), reviews=tuple(reviews))


async def test_catalog_reviews_give_the_rating_and_show_in_the_store(directory, clock):
    store = shop()
    reviews = [make(store, rating=5, text="great"), make(store, rating=4), make(store, rating=4)]
    await directory.index(_with_reviews(store, reviews), source=Source.DIRECT, etag=None)
    found = await directory.store(store)
    assert found["rating"] == {"count": 3, "mean": 4.33, "stars": [0, 0, 0, 2, 1]}
    assert found["omitted"] == 0
    shown = found["reviews"]
    assert len(shown) == 3 and all(r["in_catalog"] and not r["gossip"] and r["chain"] == "unchecked" for r in shown)
    assert {r["text"] for r in shown} == {"great", "good"}
    (listed,) = await directory.stores()
    assert listed["rating"]["count"] == 3 and "reviews" not in listed


async def test_gossip_review_left_out_past_the_grace_flags_the_store(directory, clock):
    store = shop()
    old = make(store, now=NOW - 3 * DAY, text="left out")
    recent = make(store, now=NOW - 3600)
    assert await directory.add_reviews([old, recent]) == 2
    await directory.index(_with_reviews(store, [], issued_at=NOW - 60), source=Source.DIRECT, etag=None)
    found = await directory.store(store)
    assert found["omitted"] == 1  # the recent one is within the grace (a day)
    assert found["rating"]["count"] == 2
    assert {r["text"]: (r["gossip"], r["in_catalog"]) for r in found["reviews"]} == {
        "left out": (True, False),
        "good": (True, False),
    }
    # The next catalog carries it: no flag any more.
    await directory.index(_with_reviews(store, [old], seq=2), source=Source.DIRECT, etag=None)
    found = await directory.store(store)
    assert found["omitted"] == 0
    assert {r["text"]: (r["gossip"], r["in_catalog"]) for r in found["reviews"]}["left out"] == (True, True)
    # A later catalog that drops it again is flagged again.
    await directory.index(_with_reviews(store, [], seq=3), source=Source.DIRECT, etag=None)
    assert (await directory.store(store))["omitted"] == 1


async def test_failed_chain_check_counts_neither_in_rating_nor_flag(directory, clock):
    store = shop()
    fake = make(store, now=NOW - 3 * DAY, rating=1)
    await directory.add_reviews([fake])
    await directory.index(_with_reviews(store, []), source=Source.DIRECT, etag=None)
    assert (await directory.store(store))["omitted"] == 1
    (due,) = await directory.due_checks(limit=10, recheck_after=DAY)
    assert due == fake
    await directory.set_chain(due, "failed: the outpoint does not exist")
    found = await directory.store(store)
    assert found["omitted"] == 0 and found["rating"]["count"] == 0
    assert found["reviews"][0]["chain"] == "failed: the outpoint does not exist"
    assert await directory.due_checks(limit=10, recheck_after=DAY) == []


async def test_one_review_per_signer_higher_seq_replaces(directory, clock):
    store, key = shop(), StoreKey.generate()
    first = make(store, key=key, seq=1, rating=2, text="slow")
    await directory.add_reviews([first])
    await directory.set_chain(first, "checked")
    assert await directory.add_reviews([make(store, key=key, seq=1, rating=5, text="replay")]) == 0
    assert await directory.add_reviews([make(store, key=key, seq=2, rating=4, text="arrived after all")]) == 1
    assert await directory.store(store) is None  # no catalog held yet: the store is not shown, its review is kept
    await directory.index(_with_reviews(store, []), source=Source.DIRECT, etag=None)
    (shown,) = (await directory.store(store))["reviews"]
    assert (shown["seq"], shown["rating"], shown["text"]) == (2, 4, "arrived after all")
    assert shown["chain"] == "checked"  # same outpoint, block and address: the check still holds
    other = make(store, key=key, seq=3, vout=1)
    await directory.add_reviews([other])
    (shown,) = (await directory.store(store))["reviews"]
    assert shown["chain"] == "unchecked"


async def test_one_review_per_store_and_order_the_first_wins(directory, clock):
    store, other_store = shop(), shop()
    first = make(store, order="aa" * 8, rating=5, text="first")
    second = make(store, order="aa" * 8, rating=1, text="second signer, same order")  # the store issued two receipts
    assert await directory.add_reviews([first, second]) == 1
    assert await directory.add_reviews([make(other_store, order="aa" * 8)]) == 1  # another store's order
    await directory.index(_with_reviews(store, [second]), source=Source.DIRECT, etag=None)
    found = await directory.store(store)
    assert [r["text"] for r in found["reviews"]] == ["first"] and found["rating"]["count"] == 1
    assert await directory.add_reviews([make(store, key=StoreKey.generate(), order="bb" * 8)]) == 1


def test_a_catalog_keeps_one_review_per_order():
    key = StoreKey.generate()
    shop(key)
    one, two = make(key, order="cc" * 8, text="one"), make(key, order="cc" * 8, text="two")
    got = verify_catalog(_signed_catalog(key, [one, two]), store=key.onion, now=NOW)
    assert len(got.reviews) == 1 and got.bad_reviews == 1


def test_a_review_without_the_stores_receipt_is_skipped_in_a_catalog():
    key, buyer = StoreKey.generate(), StoreKey.generate()
    shop(key)
    good = make(key, key=buyer)
    env = good.envelope()
    body = {k: v for k, v in env["body"].items() if k != "receipt"}
    bare = envelope.seal(buyer, "pasar.review", body, seq=2, issued_at=NOW, expires_at=NOW + DAY)
    forged_receipt = dict(env["body"], receipt=receipt(StoreKey.generate(), buyer, order=good.order))
    forged = envelope.seal(buyer, "pasar.review", forged_receipt, seq=3, issued_at=NOW, expires_at=NOW + DAY)
    got = verify_catalog(_signed_catalog(key, [], extra=[dict(bare), dict(forged)]), store=key.onion, now=NOW)
    assert got.reviews == () and got.bad_reviews == 2


async def test_unchecked_reviews_are_rechecked_later(directory, clock):
    store = shop()
    review = make(store)
    await directory.add_reviews([review])
    (due,) = await directory.due_checks(limit=5, recheck_after=DAY)
    await directory.set_chain(due, "unchecked")
    assert await directory.due_checks(limit=5, recheck_after=DAY) == []
    clock.now += DAY + 1
    assert await directory.due_checks(limit=5, recheck_after=DAY) == [review]


async def test_blocked_and_expired_reviews_go(directory, clock):
    store, other = shop(), shop()
    await directory.index(_with_reviews(store, [make(store)]), source=Source.DIRECT, etag=None)
    await directory.block("store", store)
    assert await directory.add_reviews([make(store)]) == 0
    await directory.unblock("store", store)
    assert await directory.store(store) is None  # the block dropped the store and its reviews
    kept = make(other, now=NOW)
    await directory.add_reviews([kept])
    await directory.index(_with_reviews(other, []), source=Source.DIRECT, etag=None)
    clock.now = kept.expires_at
    await directory.expire(drop_after=10 * 365 * DAY)
    db = directory._db
    assert await db.execute_fn(lambda c: c.execute("SELECT count(*) FROM reviews").fetchone()[0]) == 0


async def test_gossip_only_reviews_are_capped_per_store(directory, clock, monkeypatch):
    monkeypatch.setattr(review_index, "MAX_GOSSIP_PER_STORE", 3)
    store = shop()
    made = [make(store, now=NOW - i) for i in range(5)]
    await directory.add_reviews(made)
    await directory.index(_with_reviews(store, []), source=Source.DIRECT, etag=None)
    shown = (await directory.store(store))["reviews"]
    assert [r["signer"] for r in shown] == [r.signer for r in made[:3]]


async def test_a_version_1_directory_file_migrates_and_keeps_its_data(tmp_path):
    path = tmp_path / "directory.sqlite"
    old = SQLiteDatabase(path, MIGRATIONS[:1], synchronous="NORMAL")
    await old.open()
    await old.execute_write_fn(
        lambda c: c.execute("INSERT INTO stores (onion, name, added_at) VALUES ('x', 'Old shop', 1)")
    )
    await old.close()
    new = SQLiteDatabase(path, MIGRATIONS, synchronous="NORMAL")
    await new.open()
    try:
        assert await new.execute_fn(lambda c: c.execute("SELECT name FROM stores").fetchone()[0]) == "Old shop"
        assert await new.execute_fn(lambda c: c.execute("SELECT count(*) FROM reviews").fetchone()[0]) == 0
    finally:
        await new.close()


@pytest.mark.parametrize("grace", [3600, 5 * DAY])
async def test_the_grace_comes_from_the_limits(opened, tmp_path, clock, grace):
    directory = await opened.directory(tmp_path, clock, review_grace=grace)
    store = shop()
    await directory.add_reviews([make(store, now=NOW - 2 * DAY)])
    await directory.index(_with_reviews(store, []), source=Source.DIRECT, etag=None)
    assert (await directory.store(store))["omitted"] == (1 if grace < 2 * DAY else 0)


class _Checker:
    def __init__(self, answers):
        self.answers, self.asked = answers, []

    async def check(self, review):
        self.asked.append(review.text)
        answer = self.answers[review.text]
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_check_rounds_are_bounded_and_a_checker_error_leaves_unchecked(directory, clock):
    store = shop()
    texts = ["a", "b", "c"]
    await directory.add_reviews([make(store, text=t, now=NOW - i) for i, t in enumerate(texts)])
    checker = _Checker({"a": "checked", "b": WalletError("Core is down"), "c": "failed: no such output"})
    checks = ReviewChecks(directory, checker, per_round=2)
    assert await checks.check_once() == 2 and await checks.check_once() == 1
    assert await checks.check_once() == 0
    await directory.index(_with_reviews(store, []), source=Source.DIRECT, etag=None)
    marks = {r["text"]: r["chain"] for r in (await directory.store(store))["reviews"]}
    assert marks == {"a": "checked", "b": "unchecked", "c": "failed: no such output"}
    assert await ReviewChecks(directory, NoChain()).check_once() == 0  # "unchecked" is retried only after a day
    clock.now += DAY + 1
    assert await ReviewChecks(directory, NoChain()).check_once() == 1
