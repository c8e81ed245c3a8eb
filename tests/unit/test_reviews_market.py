"""Reviews in the vendor's market: kept per signer, replaced by a higher seq, capped, published in the catalog."""

import dataclasses
import json

import pytest

from node.adapters import dbfiles
from node.adapters.store import Storage
from node.core import envelope, reviews
from node.core.config import Config
from node.core.crypto import StoreKey
from node.core.errors import NotFound, SignatureError, ValidationError
from node.market import reviews as R
from node.market.catalog import CATALOG_TYPE
from node.market.market import Limits, Market
from tests.unit.review_helpers import NOW, make, receipt, shop


class Clock:
    def __init__(self, t=NOW):
        self.t = t

    def __call__(self):
        return self.t


async def _open(tmp_path, clock):
    storage = Storage(tmp_path)
    await storage.open()
    lim = dataclasses.replace(Limits.from_config(Config(data_dir=tmp_path)), catalog_ttl=1000, store_port_base=0)
    return storage, Market(storage, lim, clock=clock)


@pytest.fixture
async def world(tmp_path):
    dbfiles.initialise(tmp_path)
    clock = Clock()
    storage, market = await _open(tmp_path, clock)
    onion = shop(await market.key((await market.create_store({"name": "Shop"}))["onion"]))
    yield market, onion, clock
    await storage.close()


async def _catalog(market, onion, clock):
    snap = await market.snapshot(onion)
    return snap, envelope.open_(json.loads(snap.envelope_bytes), now=clock.t, expected_type=CATALOG_TYPE)


async def test_store_without_reviews_publishes_no_reviews_field(world, tmp_path):
    market, onion, clock = world
    _, env = await _catalog(market, onion, clock)
    assert set(env["body"]) == {"profile", "listings"}
    stored = json.loads((tmp_path / "stores" / onion / "store.json").read_text())
    assert "reviews" not in stored


async def test_review_goes_into_the_catalog_and_verifies_alone(world):
    market, onion, clock = world
    before, _ = await _catalog(market, onion, clock)
    review = make(onion, rating=4, text="as described")
    await market.add_review(onion, review.envelope())
    snap, env = await _catalog(market, onion, clock)
    assert snap.seq > before.seq
    (published,) = env["body"]["reviews"]
    assert reviews.verify(published, now=clock.t) == review


async def test_one_review_per_signer_higher_seq_replaces_lower_or_equal_ignored(world):
    market, onion, clock = world
    key = StoreKey.generate()
    await market.add_review(onion, make(onion, key=key, seq=2, text="two").envelope())
    snap, _ = await _catalog(market, onion, clock)
    for seq in (1, 2):
        await market.add_review(onion, make(onion, key=key, seq=seq, text="ignored").envelope())
    assert await market.snapshot(onion) is snap  # nothing changed: same catalog
    clock.t += 5
    await market.add_review(onion, make(onion, key=key, seq=3, text="three", now=clock.t).envelope())
    await market.add_review(onion, make(onion, text="another buyer", now=clock.t).envelope())
    _, env = await _catalog(market, onion, clock)
    texts = sorted(r["body"]["text"] for r in env["body"]["reviews"])
    assert texts == ["another buyer", "three"]


async def test_review_of_another_store_or_forged_is_refused(world):
    market, onion, _ = world
    with pytest.raises(ValidationError) as info:
        await market.add_review(onion, make(shop()).envelope())
    assert "store" in info.value.fields
    forged = make(onion).envelope()
    forged["body"]["rating"] = 1
    with pytest.raises(SignatureError):
        await market.add_review(onion, forged)
    with pytest.raises(ValidationError):
        await market.add_review(onion, {"type": "pasar.review"})
    other = shop()
    with pytest.raises(NotFound):
        await market.add_review(other, make(other).envelope())


async def test_expired_reviews_drop_out_of_the_catalog(world):
    market, onion, clock = world
    await market.add_review(onion, make(onion, text="kept").envelope())
    held = await market._storage.reviews(onion)
    assert [r["envelope"]["body"]["text"] for r in held] == ["kept"]
    clock.t = held[0]["expires_at"] - 10
    snap, env = await _catalog(market, onion, clock)
    assert len(env["body"]["reviews"]) == 1 and snap.refresh_at <= held[0]["expires_at"]
    clock.t = held[0]["expires_at"]
    _, env = await _catalog(market, onion, clock)
    assert "reviews" not in env["body"]


async def test_reviews_are_kept_in_the_store_file_across_reopen(tmp_path):
    dbfiles.initialise(tmp_path)
    clock = Clock()
    storage, market = await _open(tmp_path, clock)
    onion = shop(await market.key((await market.create_store({"name": "Shop"}))["onion"]))
    review = make(onion)
    await market.add_review(onion, review.envelope())
    await storage.close()
    storage, market = await _open(tmp_path, clock)
    try:
        _, env = await _catalog(market, onion, clock)
        assert [reviews.verify(r, now=clock.t) for r in env["body"]["reviews"]] == [review]
    finally:
        await storage.close()


def test_merge_keeps_the_newest_up_to_the_cap():
    onion = shop()
    held: list = []
    made = [make(onion, now=NOW + i) for i in range(5)]
    for r in made:
        held = R.merged(held, r, now=NOW, cap=3) or held
    assert [h["signer"] for h in held] == [r.signer for r in reversed(made[2:])]
    oldest = make(onion, now=NOW - 100)
    assert R.merged(held, oldest, now=NOW, cap=3) is None
    assert R.MAX_REVIEWS == 1000


def test_merge_drops_expired_reviews():
    onion = shop()
    old = make(onion, now=NOW)
    held = R.merged([], old, now=NOW)
    later = old.expires_at + 1
    fresh = make(onion, now=later)
    kept = R.merged(held, fresh, now=later)
    assert [h["signer"] for h in kept] == [fresh.signer]


async def test_market_keeps_the_newest_reviews_up_to_the_cap(world, monkeypatch):
    market, onion, clock = world
    monkeypatch.setattr(R, "MAX_REVIEWS", 3)
    made = [make(onion, now=NOW + i, text=f"r{i}") for i in range(5)]
    for r in made:
        clock.t = r.issued_at
        await market.add_review(onion, r.raw)  # JSON bytes work as well as the object
    _, env = await _catalog(market, onion, clock)
    assert [r["body"]["text"] for r in env["body"]["reviews"]] == ["r4", "r3", "r2"]
    await market.add_review(onion, make(onion, now=NOW - 10, text="too old").envelope())
    _, env = await _catalog(market, onion, clock)
    assert [r["body"]["text"] for r in env["body"]["reviews"]] == ["r4", "r3", "r2"]


async def test_one_review_per_order_the_first_signer_wins(world):
    market, onion, clock = world
    await market.add_review(onion, make(onion, order="dd" * 8, text="first").envelope())
    snap, _ = await _catalog(market, onion, clock)
    await market.add_review(onion, make(onion, order="dd" * 8, text="second signer").envelope())
    assert await market.snapshot(onion) is snap  # ignored: nothing changed
    _, env = await _catalog(market, onion, clock)
    assert [r["body"]["text"] for r in env["body"]["reviews"]] == ["first"]


async def test_a_review_with_another_stores_receipt_is_refused(world):
    market, onion, _ = world
    buyer = StoreKey.generate()
    with pytest.raises(ValidationError) as info:
        make(onion, key=buyer, receipt_of=receipt(shop(), buyer))
    assert "receipt" in info.value.fields
    good = make(onion, key=buyer)
    forged = dict(good.envelope())
    body = dict(forged["body"], receipt=receipt(shop(), buyer, order=good.order))
    resigned = envelope.seal(buyer, "pasar.review", body, seq=2, issued_at=NOW, expires_at=NOW + 1000)
    with pytest.raises(ValidationError):
        await market.add_review(onion, dict(resigned))
