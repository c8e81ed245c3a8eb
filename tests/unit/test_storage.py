"""TinyDB adapter: persistence, atomic batches, single owner, schema guard."""

import json
import os
import stat

import pytest

from node.adapters import dbfiles
from node.adapters.jsonstore import AtomicJSONStorage
from node.adapters.store import SCHEMA_VERSION, Storage
from node.core.crypto import StoreKey
from node.core.errors import ConfigError, NodeBusy, NotFound, StorageError


@pytest.fixture
async def storage(tmp_path):
    dbfiles.initialise(tmp_path)
    s = Storage(tmp_path)
    await s.open()
    yield s
    await s.close()


async def make_store(storage, name="Shop", port=None, now=1_800_000_000):
    key = StoreKey.generate()
    await storage.create_store(key.onion, key.seed, {"name": name}, lambda used: port, now=now)
    return key


def bump(seq):
    """A seq rule as the market passes one (the rule itself is the market's)."""
    return seq + 1


async def test_uninitialised_dir_is_a_clear_error(tmp_path):
    s = Storage(tmp_path)
    with pytest.raises(ConfigError, match="pasar init"):
        await s.open()
    await s.close()


async def test_store_round_trip_and_key_file_mode(storage, tmp_path):
    key = await make_store(storage, port=9001)
    rec = await storage.get_store(key.onion)
    assert rec["profile"] == {"name": "Shop"} and rec["port"] == 9001 and rec["seq"] > 0
    assert rec["seq"] == rec["created_at"] == 1_800_000_000  # the market's time, not the adapter's
    assert await storage.read_key(key.onion) == key.seed
    mode = stat.S_IMODE(os.stat(tmp_path / "stores" / key.onion / "key").st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "stores").st_mode) == 0o700


async def test_listings_persist_across_reopen_and_seq_increases(storage, tmp_path):
    key = await make_store(storage)
    seq0 = (await storage.get_store(key.onion))["seq"]
    seq1 = (await storage.put_listings(key.onion, [{"id": "a", "title": "A"}, {"id": "b", "title": "B"}], bump)).seq
    seq2 = (await storage.put_listings(key.onion, [{"id": "a", "title": "A2"}], bump)).seq
    seq3 = await storage.delete_listing(key.onion, "b", bump)
    assert seq0 < seq1 < seq2 < seq3 and seq3 == seq0 + 3  # each write stores the seq the rule gave
    seq4 = await storage.update_profile(key.onion, {"name": "Shop"}, lambda seq: seq + 10)
    seq5 = await storage.replace_listing(key.onion, {"id": "a", "title": "A3"}, bump)
    record, items = await storage.seal_data(key.onion, bump)
    assert (seq4, seq5, record["seq"]) == (seq3 + 10, seq3 + 11, seq3 + 12) and items == [{"id": "a", "title": "A3"}]
    with pytest.raises(NotFound):
        await storage.delete_listing(key.onion, "b", bump)
    assert (await storage.get_store(key.onion))["seq"] == seq3 + 12  # a failed write takes no seq
    await storage.close()
    again = Storage(tmp_path)
    await again.open()
    try:
        assert await again.listings(key.onion) == [{"id": "a", "title": "A3"}]
        assert (await again.get_store(key.onion))["seq"] == seq3 + 12
        with pytest.raises(NotFound):
            await again.delete_listing(key.onion, "b", bump)
    finally:
        await again.close()


async def test_one_listing_is_read_as_a_copy_without_the_others(storage):
    key = await make_store(storage)
    await storage.put_listings(key.onion, [{"id": "a", "title": "A", "tags": ["x"]}, {"id": "b", "title": "B"}], bump)
    one = await storage.listing(key.onion, "a")
    assert one == {"id": "a", "title": "A", "tags": ["x"]}
    one["tags"].append("changed")  # a copy: the stored listing is untouched
    assert (await storage.listing(key.onion, "a"))["tags"] == ["x"]
    assert await storage.listing(key.onion, "missing") is None
    with pytest.raises(NotFound):
        await storage.listing("a" * 56, "a")


async def test_put_listings_skips_an_import_key_already_stored(storage, tmp_path):
    key = await make_store(storage)
    first = await storage.put_listings(key.onion, [{"id": "a", "import_key": "k1"}, {"id": "b"}], bump)
    assert first.skipped == []
    again = [{"id": "c", "import_key": "k1"}, {"id": "d", "import_key": "k2"}, {"id": "e", "import_key": "k2"}]
    put = await storage.put_listings(key.onion, again, bump)  # k1 stored before, k2 twice in one batch
    assert put.skipped == ["c", "e"] and put.seq > first.seq
    assert sorted(x["id"] for x in await storage.listings(key.onion)) == ["a", "b", "d"]
    nothing = await storage.put_listings(key.onion, [{"id": "f", "import_key": "k2"}], bump)
    assert nothing.skipped == ["f"] and nothing.seq == put.seq  # nothing new: no write at all
    # Replacing a stored listing (same id, e.g. new stock) is not a duplicate of itself.
    stock = await storage.put_listings(key.onion, [{"id": "d", "import_key": "k2", "inventory": 3}], bump)
    assert stock.skipped == [] and {"id": "d", "import_key": "k2", "inventory": 3} in await storage.listings(key.onion)
    assert len(await storage.listings(key.onion)) == 3


async def test_second_process_is_refused(storage, tmp_path):
    other = Storage(tmp_path)
    with pytest.raises(NodeBusy):
        await other.open()
    await other.close()


async def test_failed_batch_writes_nothing(tmp_path):
    path = tmp_path / "db.json"
    st = AtomicJSONStorage(path)
    st.write({"t": {"1": {"a": 1}}})
    with pytest.raises(RuntimeError):
        with st.batch():
            st.write({"t": {"1": {"a": 2}}})
            raise RuntimeError("boom")
    assert st.read() == {"t": {"1": {"a": 1}}}
    with st.batch():
        st.write({"t": {"1": {"a": 3}}})
        assert json.loads(path.read_text()) == {"t": {"1": {"a": 1}}}  # deferred
    assert json.loads(path.read_text()) == {"t": {"1": {"a": 3}}}
    assert [p.name for p in tmp_path.iterdir()] == ["db.json"]  # no temp files left


async def test_unwritable_file_raises_storage_error_and_reloads(tmp_path):
    path = tmp_path / "db.json"
    st = AtomicJSONStorage(path)
    st.write({"t": {"1": {"a": 1}}})
    # A directory where the temp file must go: the write fails, even for root.
    (tmp_path / f".db.json.{os.getpid()}.tmp").mkdir()
    with pytest.raises(StorageError, match="cannot write"):
        st.write({"t": {"1": {"a": 2}}})
    assert st.read() == {"t": {"1": {"a": 1}}}  # memory reloaded from disk, not ahead of it


async def test_newer_schema_is_refused(tmp_path):
    dbfiles.initialise(tmp_path)
    node = tmp_path / "node.json"
    doc = json.loads(node.read_text())
    doc["meta"]["1"]["schema"] = SCHEMA_VERSION + 1
    node.write_text(json.dumps(doc))
    s = Storage(tmp_path)
    with pytest.raises(StorageError, match="newer Pasar"):
        await s.open()
    await s.close()


async def test_images_are_per_store(storage):
    a, b = await make_store(storage, "A"), await make_store(storage, "B")
    await storage.put_image(a.onion, "x.jpg", b"data")
    assert await storage.read_image(a.onion, "x.jpg") == b"data"
    with pytest.raises(NotFound):
        await storage.read_image(b.onion, "x.jpg")


async def test_unserialisable_data_is_a_bug_not_a_storage_error(tmp_path):
    path = tmp_path / "db.json"
    st = AtomicJSONStorage(path)
    st.write({"t": {"1": {"a": 1}}})
    with pytest.raises(TypeError):  # surfaces as the bug it is, not as a 503 "cannot write"
        st.write({"t": {"1": {"a": object()}}})
    assert st.read() == {"t": {"1": {"a": 1}}}  # nothing written; memory reloaded from disk
