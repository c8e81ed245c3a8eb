"""The market service over real storage: catalog signing, caching, expiry, browse."""

import asyncio
import dataclasses
import io
import json

import pytest
from PIL import Image

from node.adapters import dbfiles
from node.adapters.store import Storage
from node.core import envelope
from node.core.config import Config
from node.core.errors import Conflict, NotFound, ValidationError
from node.core.events import StoreChange, StoreChanged
from node.market.catalog import CATALOG_TYPE, browse
from node.market.market import Limits, Market
from node.market.stores import next_port


def limits(tmp_path, **kw):
    """The settings table's limits, with ``kw`` changed."""
    return dataclasses.replace(Limits.from_config(Config(data_dir=tmp_path)), **kw)


class Events:
    """An observer that keeps what it heard."""

    def __init__(self):
        self.heard: list[StoreChanged] = []

    async def __call__(self, event):
        self.heard.append(event)

    def of(self, change):
        return [e.record for e in self.heard if e.change is change]


class Clock:
    def __init__(self, t=1_800_000_000):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
async def market(tmp_path):
    dbfiles.initialise(tmp_path)
    storage = Storage(tmp_path)
    await storage.open()
    clock = Clock()
    m = Market(storage, limits(tmp_path, catalog_ttl=1000, store_port_base=0), clock=clock)
    m.clock = clock
    yield m
    await storage.close()


def item(title="Socks", **kw):
    return {"title": title, "price_sat": 1000, "kind": "digital", **kw}


async def test_catalog_is_signed_by_the_store_and_lists_active_listings(market):
    store = await market.create_store({"name": "Shop", "description": "Nice things"})
    onion = store["onion"]
    await market.add_listings(onion, [item("A"), item("B", active=False), item("C", expires_at=market.clock.t + 50)])
    snap = await market.snapshot(onion)
    env = envelope.open_(json.loads(snap.envelope_bytes), now=market.clock.t, expected_type=CATALOG_TYPE)
    assert env["store"] == onion and env["expires_at"] - env["issued_at"] == 1000
    assert sorted(x["title"] for x in env["body"]["listings"]) == ["A", "C"]
    assert env["body"]["profile"]["name"] == "Shop"
    assert all(x["hash"].startswith("sha256:") for x in env["body"]["listings"])


async def test_snapshot_is_cached_until_a_change_and_seq_grows(market):
    onion = (await market.create_store({"name": "Shop"}))["onion"]
    first = await market.snapshot(onion)
    assert await market.snapshot(onion) is first
    await market.add_listing(onion, item())
    second = await market.snapshot(onion)
    assert second is not first and second.seq > first.seq and second.etag != first.etag
    await market.update_profile(onion, {"vacation": True})
    third = await market.snapshot(onion)
    assert third.seq > second.seq and third.profile["vacation"] is True and third.profile["name"] == "Shop"


async def test_listing_expiry_rebuilds_with_higher_seq(market):
    onion = (await market.create_store({"name": "Shop"}))["onion"]
    await market.add_listing(onion, item("Soon gone", expires_at=market.clock.t + 10))
    before = await market.snapshot(onion)
    assert len(before.listings) == 1 and before.refresh_at == market.clock.t + 10
    market.clock.t += 11
    after = await market.snapshot(onion)
    assert after.listings == [] and after.seq > before.seq


async def test_batch_add_is_all_or_nothing(market):
    onion = (await market.create_store({"name": "Shop"}))["onion"]
    with pytest.raises(ValidationError) as exc:
        await market.add_listings(onion, [item("ok"), item("", price_sat=0)])
    assert set(exc.value.fields) == {"[1].title", "[1].price_sat"}
    assert await market.listings(onion) == []


async def test_update_inventory_and_remove(market):
    onion = (await market.create_store({"name": "Shop"}))["onion"]
    a = await market.add_listing(onion, item(variants=[{"sku": "S", "label": "Small", "inventory": 1}]))
    b = await market.add_listing(onion, item("Plain", inventory=5))
    (updated,) = await market.set_inventory(onion, {a["id"]: {"S": 0}, b["id"]: {"": 5}})  # b unchanged
    assert updated["variants"][0]["inventory"] == 0 and updated["created_at"] == a["created_at"]
    for bad in ({a["id"]: {"XL": 1}}, {b["id"]: {"S": 1}}, {b["id"]: {"": -1}}, {"nope": {"": 1}}):
        with pytest.raises(ValidationError):
            await market.set_inventory(onion, {a["id"]: {"S": 9}, **bad})  # nothing written
    assert (await market.listing(onion, a["id"]))["variants"][0]["inventory"] == 0
    await market.remove_listing(onion, a["id"])
    with pytest.raises(NotFound):
        await market.listing(onion, a["id"])


async def test_images_must_be_uploaded_to_the_same_store(market):
    a = (await market.create_store({"name": "A"}))["onion"]
    b = (await market.create_store({"name": "B"}))["onion"]
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(buf, "PNG")
    img = await market.add_image(a, buf.getvalue())
    assert (await market.add_listing(a, item(images=[img["id"]])))["images"] == [img["id"]]
    with pytest.raises(ValidationError, match="never uploaded"):
        await market.add_listing(b, item(images=[img["id"]]))
    assert market.image_path(a, f"{img['id']}.thumb.jpg").is_file()
    assert not market.image_path(b, f"{img['id']}.jpg").exists()  # each store has its own folder
    for bad in ("../key", "x.jpg", f"{img['id']}.png"):
        with pytest.raises(NotFound):
            market.image_path(a, bad)
    published = (await market.snapshot(a)).image_ids
    assert market.image_path(a, f"{img['id']}.jpg", published=published).is_file()
    with pytest.raises(NotFound):
        market.image_path(a, f"{img['id']}.jpg", published=frozenset())


async def test_resolve_by_address_prefix_and_name(market):
    a = (await market.create_store({"name": "Alpha"}))["onion"]
    await market.create_store({"name": "Beta"})
    assert await market.resolve(a) == a
    assert await market.resolve(a[:8]) == a and await market.resolve(a[:8].upper() + ".onion") == a
    assert await market.resolve("alpha") == a
    with pytest.raises(NotFound):
        await market.resolve("gamma")


def test_next_port():
    assert next_port({8421, 8422}, 8421, frozenset({8423})) == 8424
    assert next_port(set(), 0, frozenset()) is None


async def test_browse_search_category_and_paging(market):
    onion = (await market.create_store({"name": "Shop"}))["onion"]
    await market.add_listings(
        onion,
        [item(f"Red sock {i}", category="Socks", tags=["wool"]) for i in range(5)]
        + [item("Blue hat", category="Hats & Caps", description="warm WOOL hat")],
    )
    snap = await market.snapshot(onion)
    assert [(c.name, c.slug, c.count) for c in snap.categories] == [
        ("Hats & Caps", "hats-caps", 1),
        ("Socks", "socks", 5),
    ]
    assert browse(snap, query="wool").total == 6
    assert browse(snap, query="WOOL hat").total == 1
    assert browse(snap, category="hats-caps").items[0]["title"] == "Blue hat"
    assert browse(snap, category="nope").total == 0
    page2 = browse(snap, category="socks", page=2, size=2)
    assert (page2.number, page2.pages, len(page2.items)) == (2, 3, 2)
    assert browse(snap, page=99, size=4).number == 2


async def test_concurrent_store_creation_gives_distinct_ports(tmp_path):
    dbfiles.initialise(tmp_path)
    storage = Storage(tmp_path)
    await storage.open()
    try:
        m = Market(storage, limits(tmp_path, store_port_base=50100, reserved_ports=frozenset({50101})))
        made = await asyncio.gather(*(m.create_store({"name": f"S{i}"}) for i in range(5)))
        assert sorted(s["port"] for s in made) == [50100, 50102, 50103, 50104, 50105]
    finally:
        await storage.close()


async def test_each_snapshot_gets_its_own_seq_even_after_restart(tmp_path):
    dbfiles.initialise(tmp_path)
    seqs, onion = [], None
    for _ in range(2):
        storage = Storage(tmp_path)
        await storage.open()
        m = Market(storage, limits(tmp_path, store_port_base=0))
        onion = onion or (await m.create_store({"name": "S"}))["onion"]
        seqs.append((await m.snapshot(onion)).seq)
        await storage.close()
    assert seqs[1] > seqs[0]


async def test_concurrent_writes_never_sign_stale_content_under_a_new_seq(market):
    onion = (await market.create_store({"name": "Shop"}))["onion"]
    seen: dict[int, bytes] = {}
    for round_ in range(10):
        results = await asyncio.gather(
            market.snapshot(onion), market.add_listing(onion, item(f"L{round_}")), market.snapshot(onion)
        )
        for snap in (results[0], results[2]):
            body = json.loads(snap.envelope_bytes)["body"]
            assert seen.setdefault(snap.seq, snap.envelope_bytes) == snap.envelope_bytes, "one seq, two contents"
            assert len(body["listings"]) in (round_, round_ + 1)
    final = await market.snapshot(onion)
    assert len(json.loads(final.envelope_bytes)["body"]["listings"]) == 10


async def test_update_racing_a_delete_does_not_resurrect(market):
    onion = (await market.create_store({"name": "Shop"}))["onion"]
    for _ in range(5):
        x = await market.add_listing(onion, item("Doomed"))
        results = await asyncio.gather(
            market.update_listing(onion, x["id"], item("Edited")),
            market.remove_listing(onion, x["id"]),
            return_exceptions=True,
        )
        assert all(r is None or isinstance(r, (dict, NotFound)) for r in results)
        with pytest.raises(NotFound):
            await market.listing(onion, x["id"])


# -- store names, deletion and ports (issue 7, "Stores") ----------------------


@pytest.mark.parametrize("twin", ["ALPHA", "  alpha ", "Ａｌｐｈａ", "alpha\u200b"])
async def test_a_second_store_with_the_same_name_is_refused(market, twin):
    await market.create_store({"name": "Alpha"})
    with pytest.raises(ValidationError) as exc:
        await market.create_store({"name": twin})
    assert "already named 'Alpha'" in exc.value.fields["name"]
    assert len(await market.stores()) == 1


async def test_casefold_not_lower_decides_what_is_the_same_name(market):
    await market.create_store({"name": "Straße"})
    with pytest.raises(ValidationError):
        await market.create_store({"name": "STRASSE"})
    await market.create_store({"name": "Cafe\u0301"})  # NFC makes it "Café"
    with pytest.raises(ValidationError):
        await market.create_store({"name": "CAFÉ"})


async def test_concurrent_creation_of_one_name_makes_one_store(market):
    results = await asyncio.gather(*(market.create_store({"name": "Twin"}) for _ in range(4)), return_exceptions=True)
    assert sum(isinstance(r, dict) for r in results) == 1
    assert all(isinstance(r, ValidationError) for r in results if not isinstance(r, dict))


async def test_rename_to_another_stores_name_is_refused_but_recasing_your_own_is_fine(market):
    a = (await market.create_store({"name": "Alpha"}))["onion"]
    b = (await market.create_store({"name": "Beta"}))["onion"]
    with pytest.raises(ValidationError) as exc:
        await market.update_profile(b, {"name": "aLPHA"})
    assert "already named" in exc.value.fields["name"]
    assert (await market.store(b))["profile"]["name"] == "Beta"
    assert (await market.update_profile(a, {"name": "ALPHA"}))["name"] == "ALPHA"
    assert (await market.update_profile(a, {"vacation": True}))["vacation"] is True


@pytest.mark.parametrize("name", ["Shop.", "Best.onion", "Corner Shop.ONION", "shop...", "a/b?c#d", "x.onion."])
async def test_any_allowed_name_resolves_by_name(market, name):
    onion = (await market.create_store({"name": name}))["onion"]
    await market.create_store({"name": "Other"})
    assert await market.resolve(name) == onion
    assert await market.resolve(name.upper()) == onion


async def test_a_name_cannot_be_an_onion_address_or_start_another_stores_address(market):
    other = (await market.create_store({"name": "Other"}))["onion"]
    for bad in (other, other + ".onion", other[:8], other[:6].upper() + ".onion"):
        with pytest.raises(ValidationError) as exc:
            await market.create_store({"name": bad})
        assert "name" in exc.value.fields
    for bad in (".", ".."):
        with pytest.raises(ValidationError, match="URL"):
            await market.create_store({"name": bad})
    await market.create_store({"name": other[:5]})  # too short to be a prefix


async def test_a_legacy_name_that_is_another_stores_prefix_is_ambiguous_not_captured(market):
    a = (await market.create_store({"name": "A"}))["onion"]
    b = (await market.create_store({"name": "B"}))["onion"]
    await market._storage.update_profile(
        b, {**(await market.store(b))["profile"], "name": a[:8]}, lambda s: s + 1
    )  # from before
    with pytest.raises(Conflict, match="full onion address"):
        await market.resolve(a[:8])
    assert await market.resolve(a) == a and await market.resolve(b) == b
    assert await market.resolve(a[:10]) == a


async def test_legacy_duplicate_names_say_how_to_get_out(market):
    a = (await market.create_store({"name": "Dup"}))["onion"]
    b = (await market.create_store({"name": "Other"}))["onion"]
    await market._storage.update_profile(b, {**(await market.store(b))["profile"], "name": "DUP"}, lambda s: s + 1)
    with pytest.raises(Conflict, match="rename one"):
        await market.resolve("dup")
    await market.update_profile(b, {"vacation": True})  # its own (duplicate) name is kept
    await market.update_profile(b, {"name": "Renamed"})
    assert await market.resolve("dup") == a


async def test_delete_moves_the_folder_with_its_key_and_can_be_restored(tmp_path):
    dbfiles.initialise(tmp_path)
    storage = Storage(tmp_path)
    await storage.open()
    events = Events()
    m = Market(storage, limits(tmp_path, store_port_base=0), observer=events)

    def deleted():
        return [record["onion"] for record in events.of(StoreChange.DELETED)]

    keep = (await m.create_store({"name": "Keep"}))["onion"]
    doomed = await m.create_store({"name": "Doomed"})
    onion = doomed["onion"]
    await m.add_listing(onion, item("Last one"))
    seed = (tmp_path / "stores" / onion / "key").read_bytes()
    for wrong in (None, "", "Doomed", onion[:10], keep):
        with pytest.raises(ValidationError) as exc:
            await m.delete_store(onion, wrong)
        assert "confirm" in exc.value.fields
    assert (tmp_path / "stores" / onion / "key").exists() and deleted() == []
    gone = await m.delete_store(onion, onion.upper() + ".onion")
    assert deleted() == [onion] and gone.name == "Doomed"
    assert gone.moved_to.parent == tmp_path / "deleted" and gone.moved_to.name.startswith(onion + "-")
    assert (gone.moved_to / "key").read_bytes() == seed and not (tmp_path / "stores" / onion).exists()
    assert [s["onion"] for s in await m.stores()] == [keep]
    for call in (m.resolve(onion), m.listings(onion), m.add_listing(onion, item()), m.delete_store(onion, onion)):
        with pytest.raises(NotFound):
            await call
    await m.create_store({"name": "Doomed"})  # the name is free again
    await storage.close()
    (gone.moved_to).rename(tmp_path / "stores" / onion)  # restore: move it back with the node stopped
    storage = Storage(tmp_path)
    await storage.open()
    try:
        m = Market(storage, limits(tmp_path, store_port_base=0))
        assert [x["title"] for x in await m.listings(onion)] == ["Last one"]
        assert (await m.key(onion)).onion == onion
    finally:
        await storage.close()


async def test_ports_can_be_changed_and_are_checked(tmp_path):
    dbfiles.initialise(tmp_path)
    storage = Storage(tmp_path)
    await storage.open()
    try:
        events = Events()
        lim = limits(tmp_path, store_port_base=50200, reserved_ports=frozenset({50300}))
        m = Market(storage, lim, observer=events)

        def moved():
            return [(record["onion"], record["port"]) for record in events.of(StoreChange.PORT_CHANGED)]

        a = (await m.create_store({"name": "A"}))["onion"]
        b = (await m.create_store({"name": "B"}))["onion"]
        assert (await m.set_port(a, 50250))["port"] == 50250
        assert (await m.set_port(b, "50251"))["port"] == 50251
        for bad, why in (
            (50250, "another store"),
            (50300, "admin"),
            (80, "1024"),
            (70000, "1024"),
            ("x", "auto"),
            (True, "auto"),
            (None, "auto"),
            (1.5, "auto"),
        ):
            with pytest.raises(ValidationError, match=why):
                await m.set_port(b, bad)
        assert (await m.set_port(b, 50251))["port"] == 50251  # unchanged: no restart
        assert (await m.set_port(a, "auto"))["port"] == 50200
        assert moved() == [(a, 50250), (b, 50251), (a, 50200)]
        assert (await m.store(a))["port"] == 50200
        record = await m.update_store(b, {"port": "auto", "description": "moved"})
        assert record["port"] == 50201 and record["profile"]["description"] == "moved"
        with pytest.raises(ValidationError):
            await m.update_store(b, {"port": 1, "description": "not saved"})
        assert (await m.store(b))["profile"]["description"] == "moved"
    finally:
        await storage.close()


# -- the observer, the seq rule and the limits (issue 8) ---------------------


async def test_the_observer_hears_every_change_after_it_is_saved(tmp_path):
    dbfiles.initialise(tmp_path)
    storage = Storage(tmp_path)
    await storage.open()
    try:
        events = Events()
        m = Market(storage, limits(tmp_path, store_port_base=50400), observer=events)
        onion = (await m.create_store({"name": "Shop"}))["onion"]
        await m.update_profile(onion, {"vacation": True})
        x = await m.add_listing(onion, item())
        await m.update_listing(onion, x["id"], item("Edited"))
        await m.set_inventory(onion, {x["id"]: {"": 3}})
        await m.remove_listing(onion, x["id"])
        await m.set_access(onion, {"max_streams": 5})
        await m.add_client(onion, {"name": "alice"})
        await m.set_port(onion, 50410)
        await m.delete_store(onion, onion)
        C = StoreChange
        assert [e.change for e in events.heard] == [
            C.CREATED, C.PROFILE_CHANGED, *[C.CATALOG_CHANGED] * 4, C.ACCESS_CHANGED, C.ACCESS_CHANGED,
            C.PORT_CHANGED, C.DELETED,
        ]  # fmt: skip
        records = [e.record for e in events.heard]
        assert all(r["onion"] == onion for r in records)
        assert records[1]["profile"]["vacation"] is True
        seqs = [r["seq"] for r in records[:6]]
        assert seqs == sorted(set(seqs)), "each catalog change carries its new, higher seq"
        assert records[7]["onion_service"]["clients"][0]["name"] == "alice"
        assert records[8]["port"] == 50410 and records[9]["port"] == 50410
    finally:
        await storage.close()


async def test_nothing_changed_tells_nothing(market):
    events = Events()
    market._observer = events
    onion = (await market.create_store({"name": "Shop"}))["onion"]
    x = await market.add_listing(onion, item(inventory=2, import_key="k"))
    events.heard.clear()
    assert await market.set_inventory(onion, {x["id"]: {"": 2}}) == []  # unchanged stock
    assert await market.add_listings(onion, [item(import_key="k")]) == []  # already imported
    with pytest.raises(ValidationError):
        await market.update_profile(onion, {"name": ""})
    assert events.heard == []


async def test_a_store_deleted_right_after_a_write_keeps_the_write_answered(market, monkeypatch):
    """The catalog event reads the store after the write; a delete in between must not turn it into a 404."""
    events = Events()
    market._observer = events
    onion = (await market.create_store({"name": "Shop"}))["onion"]
    events.heard.clear()

    async def gone(ref):
        raise NotFound("no such store")

    monkeypatch.setattr(market._storage, "get_store", gone)
    added = await market.add_listing(onion, item())
    assert added["title"] == "Socks" and events.heard == []


async def test_the_seq_rule_is_the_markets_clock_and_always_grows(market):
    onion = (await market.create_store({"name": "Shop"}))["onion"]
    assert (await market.store(onion))["seq"] == market.clock.t  # a new store starts at the time
    await market.add_listing(onion, item("A"))
    await market.add_listing(onion, item("B"))  # same second: one more
    assert (await market.store(onion))["seq"] == market.clock.t + 2
    market.clock.t += 100
    assert (await market.snapshot(onion)).seq == market.clock.t  # the time again, once it is ahead
    market.clock.t -= 1000  # the clock was set back: the seq still grows
    await market.add_listing(onion, item("C"))
    assert (await market.store(onion))["seq"] == market.clock.t + 1001


def test_limits_come_from_the_settings_table(tmp_path):
    config = Config(data_dir=tmp_path, admin_port=9000, catalog_ttl=7200, max_images=3)
    lim = Limits.from_config(config)
    assert (lim.catalog_ttl, lim.max_images, lim.reserved_ports) == (7200, 3, frozenset({9000}))
    assert (lim.max_image_bytes, lim.max_image_side, lim.store_port_base) == (
        config.max_image_bytes,
        config.max_image_side,
        config.store_port_base,
    )
