"""Persistent state in TinyDB, owned by one executor thread.

Layout under the data directory::

    node.json                 node-wide state (schema version, admin password hash)
    node.lock                 flock held by the process that owns this data dir
    stores/<onion>/key        the store's 32-byte ed25519 seed (mode 0600)
    stores/<onion>/store.json profile, listings, buyers' reviews and the catalog ``seq``
    stores/<onion>/images/    re-encoded images, named by content hash
    deleted/<onion>-<time>/   a deleted store's folder, as it was (move it back to restore)

Every store has its own files, so no query can join two stores. TinyDB is not
thread-safe: all access goes through ``_call``, which runs on one thread.
``Storage`` implements ``core.ports.Storage``; the catalog ``seq`` rule is the
market's (``next_seq``), applied here in the same file write as the data.
"""

from __future__ import annotations

import asyncio
import copy
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

from tinydb import Query, TinyDB
from tinydb.table import Document

from ..core.errors import ConfigError, NotFound, StorageError
from ..core.models import Listing, OnionOptions, Profile, StoredReview, StoreRecord
from ..core.ports import ChoosePort, NextSeq, Put
from . import dbfiles, storedirs
from .datadir import DataDirLock
from .dbfiles import SCHEMA_VERSION, file_of, first, open_db, table
from .fsutil import atomic_write

__all__ = ["SCHEMA_VERSION", "Put", "Storage"]
T = TypeVar("T")


def _seq(db: TinyDB) -> int:
    return int((table(db, "meta").get(doc_id=1) or {}).get("seq", 0))


def _new_seq(db: TinyDB, next_seq: NextSeq) -> int:
    """Store the seq the market's rule gives; call inside the write's ``batch()``."""
    seq = next_seq(_seq(db))
    table(db, "meta").update({"seq": seq}, doc_ids=[1])
    return seq


def _all(db: TinyDB, name: str) -> list[Any]:
    """Deep copies of a table's documents, as plain dicts."""
    return [copy.deepcopy(dict(d)) for d in table(db, name).all()]


def _split(stored: dict[str, Any], listings: Sequence[Listing]) -> tuple[dict[str, Listing], list[Listing], list[str]]:
    """(replacements by id, new listings, skipped ids) for ``put_listings``; ``stored`` is the raw table."""
    ids = {doc["id"] for doc in stored.values()}
    keys = {doc["import_key"] for doc in stored.values() if doc.get("import_key")}
    replaced = {x["id"]: copy.deepcopy(x) for x in listings if x["id"] in ids}
    fresh: list[Listing] = []
    skipped: list[str] = []
    for x in listings:
        if x["id"] in ids:
            continue
        key = x.get("import_key")
        if key in keys:
            skipped.append(x["id"])
            continue
        if key:
            keys.add(key)
        fresh.append(copy.deepcopy(x))
    return replaced, fresh, skipped


class Storage:
    """Async facade; every method runs on the single storage thread."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.stores_dir = data_dir / "stores"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pasar-db")
        self._node: TinyDB | None = None
        self._dbs: dict[str, TinyDB] = {}
        self.lock = DataDirLock(data_dir)
        self._closed = False

    # -- lifecycle -------------------------------------------------------
    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    async def open(self) -> None:
        await self._call(self._open)

    async def close(self) -> None:
        """Close every file and release the lock; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)

    def _open(self) -> None:
        if not (self.data_dir / "node.json").exists():
            raise ConfigError(f"{self.data_dir} is not initialised: run `pasar init` first")
        self.lock.acquire()
        opened = False
        try:
            storedirs.remove_leftovers(self.data_dir, self.stores_dir)
            self._node = open_db(self.data_dir / "node.json")
            dbfiles.check_schema(self._node, "node.json")
            for onion in storedirs.store_names(self.stores_dir):
                self._db(onion)
            opened = True
        finally:
            if not opened:  # release the lock and whatever was opened, whatever went wrong
                self._close()

    def _close(self) -> None:
        for db in self._dbs.values():
            db.close()
        self._dbs.clear()
        if self._node is not None:
            self._node.close()
            self._node = None
        self.lock.release()

    def _db(self, onion: str) -> TinyDB:
        db = self._dbs.get(onion)
        if db is None:
            path = self.stores_dir / onion / "store.json"
            if not path.exists():
                raise NotFound(f"no store {onion}")
            db = open_db(path)
            dbfiles.check_schema(db, f"store {onion}")
            self._dbs[onion] = db
        return db

    async def snapshot(self, copy_files: Callable[[Path], T]) -> T:
        """Run ``copy_files(data_dir)`` on the storage thread: no store or node.json write lands meanwhile."""
        return await self._call(copy_files, self.data_dir)

    # -- node-wide -------------------------------------------------------
    async def admin_password_hash(self) -> bytes | None:
        def run() -> bytes | None:
            assert self._node is not None
            return dbfiles.admin_password_hash(self._node)

        return await self._call(run)

    # -- stores ----------------------------------------------------------
    async def list_stores(self) -> list[StoreRecord]:
        return await self._call(lambda: [self._store_record(o) for o in storedirs.store_names(self.stores_dir)])

    async def get_store(self, onion: str) -> StoreRecord:
        return await self._call(self._store_record, onion)

    def _store_record(self, onion: str) -> StoreRecord:
        db = self._db(onion)
        meta = table(db, "meta").get(doc_id=1) or {}
        profile: Any = first(db, "profile") or {}
        return StoreRecord(
            onion=onion,
            seq=int(meta.get("seq", 0)),
            port=meta.get("port"),
            created_at=meta.get("created_at"),
            profile=profile,
            onion_service=first(db, "onion_service"),
        )

    def _used_ports(self, other_than: str | None = None) -> set[int]:
        records = (self._store_record(o) for o in storedirs.store_names(self.stores_dir) if o != other_than)
        return {r["port"] for r in records if r["port"]}

    async def create_store(
        self, onion: str, seed: bytes, profile: Profile, choose_port: ChoosePort, *, now: int
    ) -> StoreRecord:
        """``choose_port`` gets the ports other stores hold; it runs in the same
        storage job as the write, so concurrent creations never share a port.
        ``now`` is the store's ``created_at`` and its first catalog ``seq``."""

        def run() -> StoreRecord:
            port = choose_port(self._used_ports())
            doc = {
                "meta": {"1": {"schema": SCHEMA_VERSION, "seq": now, "port": port, "created_at": now}},
                "profile": {"1": profile},
                "listings": {},
            }
            storedirs.write_new_store(self.stores_dir, onion, seed, doc)
            return self._store_record(onion)

        return await self._call(run)

    async def read_key(self, onion: str) -> bytes:
        def run() -> bytes:
            self._db(onion)
            seed = (self.stores_dir / onion / "key").read_bytes()
            if len(seed) != 32:
                raise StorageError(f"store {onion}: key file is damaged")
            return seed

        return await self._call(run)

    async def seal_data(self, onion: str, next_seq: NextSeq) -> tuple[StoreRecord, list[Listing]]:
        """Take a new ``seq`` and read profile + listings, all in one storage job.

        Every envelope sealed from this gets its own ``seq``, and no write can
        land between reading the ``seq`` and reading what it covers.
        """

        def run() -> tuple[StoreRecord, list[Listing]]:
            db = self._db(onion)
            with file_of(db).batch():
                _new_seq(db, next_seq)
            return self._store_record(onion), _all(db, "listings")

        return await self._call(run)

    async def update_profile(self, onion: str, profile: Profile, next_seq: NextSeq) -> int:
        """Replace the profile; returns the new catalog ``seq`` (written with it)."""

        def run() -> int:
            db = self._db(onion)
            with file_of(db).batch():
                table(db, "profile").update(profile, doc_ids=[1])
                return _new_seq(db, next_seq)

        return await self._call(run)

    async def set_onion_service(self, onion: str, options: OnionOptions) -> None:
        """Replace the store's onion-service options (access keys, limits)."""

        def run() -> None:
            db = self._db(onion)
            table(db, "onion_service").upsert(Document(options, doc_id=1))

        await self._call(run)

    async def set_port(self, onion: str, choose_port: ChoosePort) -> StoreRecord:
        """Give the store the port ``choose_port`` picks from the ports other stores hold.

        Like ``create_store``, the choice and the write are one storage job.
        """

        def run() -> StoreRecord:
            db = self._db(onion)
            table(db, "meta").update({"port": choose_port(self._used_ports(other_than=onion))}, doc_ids=[1])
            return self._store_record(onion)

        return await self._call(run)

    async def delete_store(self, onion: str) -> Path:
        """Move ``stores/<onion>`` (key, database, images) to ``deleted/<onion>-<UTC time>/``.

        Nothing is destroyed: moving the folder back into ``stores/`` (named
        ``<onion>``) while no node runs restores the store.
        """

        def run() -> Path:
            storedirs.require_store(self.stores_dir, onion)
            db = self._dbs.pop(onion, None)
            if db is not None:
                db.close()
            return storedirs.move_to_trash(self.data_dir, self.stores_dir, onion)

        return await self._call(run)

    # -- listings --------------------------------------------------------
    async def listings(self, onion: str) -> list[Listing]:
        def run() -> list[Listing]:
            return _all(self._db(onion), "listings")

        return await self._call(run)

    async def listing(self, onion: str, listing_id: str) -> Listing | None:
        """One listing (a copy), or None; does not copy the store's other listings."""

        def run() -> Listing | None:
            found = table(self._db(onion), "listings").get(Query().id == listing_id)
            return cast(Listing, copy.deepcopy(dict(found))) if isinstance(found, dict) else None

        return await self._call(run)

    async def put_listings(self, onion: str, listings: Sequence[Listing], next_seq: NextSeq) -> Put:
        """Insert or replace listings (by ``id``) in one atomic write (import, restore).

        A new listing whose ``import_key`` is already stored (or comes earlier
        in ``listings``) is skipped, in the same job as the write: re-sending
        an import batch that was stored before never duplicates it. With
        nothing to write, nothing is written (the ``seq`` stays).
        """

        def run() -> Put:
            db = self._db(onion)
            # One pass over the stored dicts (no Document per row) and one table
            # update for all replacements: a batch costs one scan, not one per row.
            raw = (file_of(db).read() or {}).get("listings", {})
            replaced, fresh, skipped = _split(raw, listings)
            if not replaced and not fresh:
                return Put(seq=_seq(db), skipped=skipped)
            doc_ids = {doc["id"]: int(key) for key, doc in raw.items()}

            def replace(doc: dict[str, Any]) -> None:
                doc.update(replaced[doc["id"]])

            with file_of(db).batch():
                if replaced:
                    table(db, "listings").update(replace, doc_ids=[doc_ids[i] for i in replaced])
                table(db, "listings").insert_multiple(fresh)
                return Put(seq=_new_seq(db, next_seq), skipped=skipped)

        return await self._call(run)

    async def replace_listing(self, onion: str, listing: Listing, next_seq: NextSeq) -> int:
        """Update an existing listing; NotFound if it was removed meanwhile."""

        def run() -> int:
            db = self._db(onion)
            with file_of(db).batch():
                if not table(db, "listings").update(copy.deepcopy(listing), Query().id == listing["id"]):
                    raise NotFound(f"no listing {listing['id']!r} in this store")
                return _new_seq(db, next_seq)

        return await self._call(run)

    async def delete_listing(self, onion: str, listing_id: str, next_seq: NextSeq) -> int:
        def run() -> int:
            db = self._db(onion)
            with file_of(db).batch():
                if not table(db, "listings").remove(Query().id == listing_id):
                    raise NotFound(f"no listing {listing_id!r} in this store")
                return _new_seq(db, next_seq)

        return await self._call(run)

    # -- images ----------------------------------------------------------
    def image_path(self, onion: str, name: str) -> Path:
        return self.stores_dir / onion / "images" / name

    async def missing_images(self, onion: str, names: set[str]) -> set[str]:
        def run() -> set[str]:
            return {n for n in names if not self.image_path(onion, n).is_file()}

        return await self._call(run)

    async def put_image(self, onion: str, name: str, data: bytes) -> None:
        def run() -> None:
            self._db(onion)
            path = self.image_path(onion, name)
            if not path.exists():
                atomic_write(path, data, mode=0o644)

        await self._call(run)

    async def read_image(self, onion: str, name: str) -> bytes:
        def run() -> bytes:
            try:
                return self.image_path(onion, name).read_bytes()
            except FileNotFoundError:
                raise NotFound("no such image") from None

        return await self._call(run)

    # -- reviews ---------------------------------------------------------
    async def reviews(self, onion: str) -> list[StoredReview]:
        """The store's reviews (a store made before reviews existed has no table: none)."""

        def run() -> list[StoredReview]:
            return cast(list[StoredReview], _all(self._db(onion), "reviews"))

        return await self._call(run)

    async def update_reviews(
        self, onion: str, change: Callable[[list[StoredReview]], list[StoredReview] | None], next_seq: NextSeq
    ) -> bool:
        """``change(current)`` decides and the write follows in the same job; None writes nothing."""

        def run() -> bool:
            db = self._db(onion)
            kept = change(cast(list[StoredReview], _all(db, "reviews")))
            if kept is None:
                return False
            with file_of(db).batch():
                table(db, "reviews").truncate()
                table(db, "reviews").insert_multiple(copy.deepcopy(kept))
                _new_seq(db, next_seq)
            return True

        return await self._call(run)
