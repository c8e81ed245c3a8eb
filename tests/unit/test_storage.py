"""TinyDB adapter: persistence, atomic batches, single owner, schema guard."""

import json
import os
import stat

import pytest

from node.adapters.jsonstore import AtomicJSONStorage
from node.adapters.store import SCHEMA_VERSION, Storage
from node.core.crypto import StoreKey
from node.core.errors import ConfigError, NodeBusy, NotFound, StorageError


@pytest.fixture
async def storage(tmp_path):
    Storage.initialise(tmp_path)
    s = Storage(tmp_path)
    await s.open()
    yield s
    await s.close()


async def make_store(storage, name="Shop", port=None):
    key = StoreKey.generate()
    await storage.create_store(key.onion, key.seed, {"name": name}, lambda used: port)
    return key


async def test_uninitialised_dir_is_a_clear_error(tmp_path):
    s = Storage(tmp_path)
    with pytest.raises(ConfigError, match="pasar init"):
        await s.open()
    await s.close()


async def test_store_round_trip_and_key_file_mode(storage, tmp_path):
    key = await make_store(storage, port=9001)
    rec = await storage.get_store(key.onion)
    assert rec["profile"] == {"name": "Shop"} and rec["port"] == 9001 and rec["seq"] > 0
    assert await storage.read_key(key.onion) == key.seed
    mode = stat.S_IMODE(os.stat(tmp_path / "stores" / key.onion / "key").st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "stores").st_mode) == 0o700


async def test_listings_persist_across_reopen_and_seq_increases(storage, tmp_path):
    key = await make_store(storage)
    seq0 = (await storage.get_store(key.onion))["seq"]
    seq1 = (await storage.put_listings(key.onion, [{"id": "a", "title": "A"}, {"id": "b", "title": "B"}])).seq
    seq2 = (await storage.put_listings(key.onion, [{"id": "a", "title": "A2"}])).seq
    seq3 = await storage.delete_listing(key.onion, "b")
    assert seq0 < seq1 < seq2 < seq3
    await storage.close()
    again = Storage(tmp_path)
    await again.open()
    try:
        assert await again.listings(key.onion) == [{"id": "a", "title": "A2"}]
        assert (await again.get_store(key.onion))["seq"] == seq3
        with pytest.raises(NotFound):
            await again.delete_listing(key.onion, "b")
    finally:
        await again.close()


async def test_put_listings_skips_an_import_key_already_stored(storage, tmp_path):
    key = await make_store(storage)
    first = await storage.put_listings(key.onion, [{"id": "a", "import_key": "k1"}, {"id": "b"}])
    assert first.skipped == []
    again = [{"id": "c", "import_key": "k1"}, {"id": "d", "import_key": "k2"}, {"id": "e", "import_key": "k2"}]
    put = await storage.put_listings(key.onion, again)  # k1 stored before, k2 twice in one batch
    assert put.skipped == ["c", "e"] and put.seq > first.seq
    assert sorted(x["id"] for x in await storage.listings(key.onion)) == ["a", "b", "d"]
    nothing = await storage.put_listings(key.onion, [{"id": "f", "import_key": "k2"}])
    assert nothing.skipped == ["f"] and nothing.seq == put.seq  # nothing new: no write at all
    # Replacing a stored listing (same id, e.g. new stock) is not a duplicate of itself.
    stock = await storage.put_listings(key.onion, [{"id": "d", "import_key": "k2", "inventory": 3}])
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
    Storage.initialise(tmp_path)
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
