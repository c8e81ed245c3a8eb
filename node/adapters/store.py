"""Persistent state in TinyDB, owned by one executor thread.

Layout under the data directory::

    node.json                 node-wide state (schema version, admin password hash)
    node.lock                 flock held by the process that owns this data dir
    stores/<onion>/key        the store's 32-byte ed25519 seed (mode 0600)
    stores/<onion>/store.json profile, listings and the catalog ``seq``
    stores/<onion>/images/    re-encoded images, named by content hash
    deleted/<onion>-<time>/   a deleted store's folder, as it was (move it back to restore)

Every store has its own files, so no query can join two stores. TinyDB is not
thread-safe: all access goes through ``_call``, which runs on one thread.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tinydb import Query, TinyDB
from tinydb.table import Document

from ..core.errors import ConfigError, Conflict, NotFound, StorageError
from .datadir import DataDirLock
from .fsutil import atomic_write, fsync_dir, make_private_dir
from .jsonstore import AtomicJSONStorage, remove_stale_temp_files

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1
T = TypeVar("T")
# schema version -> function upgrading a store db from that version by one step.
MIGRATIONS: dict[int, Callable[[TinyDB], None]] = {}


def _open_db(path: Path) -> TinyDB:
    return TinyDB(path, storage=AtomicJSONStorage)


def _storage(db: TinyDB) -> AtomicJSONStorage:
    storage = db.storage
    assert isinstance(storage, AtomicJSONStorage)
    return storage


def _table(db: TinyDB, name: str) -> Any:
    return db.table(name, cache_size=0)


@dataclass(frozen=True)
class Put:
    """What ``put_listings`` did: the store's new ``seq`` and the ids it skipped (import key already stored)."""

    seq: int
    skipped: list[str]


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
            self._remove_leftovers()
            self._node = _open_db(self.data_dir / "node.json")
            self._check_schema(self._node, "node.json")
            for onion in self._store_dirs():
                self._db(onion)
            opened = True
        finally:
            if not opened:  # release the lock and whatever was opened, whatever went wrong
                self._close()

    def _remove_leftovers(self) -> None:
        """Temp files and half-made stores left by a crash (kill -9) of an earlier owner.

        We hold the data dir's lock and every writer of these folders holds it
        too, so nothing else can be writing them: whatever matches is stale.
        """
        dirs = [self.data_dir]
        for store in self._store_dirs():
            dirs += [self.stores_dir / store, self.stores_dir / store / "images"]
        removed = [p for d in dirs for p in remove_stale_temp_files(d)]
        if self.stores_dir.exists():
            for half_made in self.stores_dir.glob(".new-*"):  # create_store cut off before its rename
                shutil.rmtree(half_made, ignore_errors=True)
                removed.append(half_made)
        if removed:
            names = ", ".join(p.name for p in removed)
            log.info("removed %d file(s) left by an interrupted write: %s", len(removed), names)

    def _close(self) -> None:
        for db in self._dbs.values():
            db.close()
        self._dbs.clear()
        if self._node is not None:
            self._node.close()
            self._node = None
        self.lock.release()

    @staticmethod
    def initialise(data_dir: Path) -> bool:
        """Create the data dir and node.json; False if it already existed."""
        make_private_dir(data_dir / "stores")
        path = data_dir / "node.json"
        if path.exists():
            return False
        doc = {"meta": {"1": {"schema": SCHEMA_VERSION, "created_at": int(time.time())}}}
        atomic_write(path, json.dumps(doc).encode())
        return True

    def _check_schema(self, db: TinyDB, what: str) -> None:
        meta = _table(db, "meta")
        doc = meta.get(doc_id=1) or {}
        version = doc.get("schema", 0)
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise StorageError(f"{what}: its schema version {version!r} is damaged; restore the file from a backup")
        if version > SCHEMA_VERSION:
            raise StorageError(f"{what} was written by a newer Pasar (schema {version}); upgrade")
        while version < SCHEMA_VERSION:
            if version not in MIGRATIONS:
                raise StorageError(f"{what}: no migration from schema {version}")
            with _storage(db).batch():
                MIGRATIONS[version](db)
                version += 1
                meta.update({"schema": version}, doc_ids=[1])

    def _store_dirs(self) -> list[str]:
        if not self.stores_dir.exists():
            return []
        return sorted(p.name for p in self.stores_dir.iterdir() if (p / "key").exists() and not p.name.startswith("."))

    def _db(self, onion: str) -> TinyDB:
        db = self._dbs.get(onion)
        if db is None:
            path = self.stores_dir / onion / "store.json"
            if not path.exists():
                raise NotFound(f"no store {onion}")
            db = _open_db(path)
            self._check_schema(db, f"store {onion}")
            self._dbs[onion] = db
        return db

    # -- node-wide -------------------------------------------------------
    async def admin_password_hash(self) -> bytes | None:
        def run() -> bytes | None:
            assert self._node is not None
            doc = _table(self._node, "admin").get(doc_id=1)
            return doc["password_hash"].encode() if doc else None

        return await self._call(run)

    @staticmethod
    def has_admin_password(data_dir: Path) -> bool:
        """Read-only peek (files are replaced atomically, so no lock is needed)."""
        try:
            doc = json.loads((data_dir / "node.json").read_bytes())
        except (OSError, ValueError):
            return False
        return bool(doc.get("admin", {}).get("1", {}).get("password_hash"))

    @staticmethod
    def set_admin_password_hash(data_dir: Path, password_hash: bytes) -> None:
        """Used by ``pasar init``, which holds the data dir's lock meanwhile."""
        db = _open_db(data_dir / "node.json")
        try:
            _table(db, "admin").upsert({"password_hash": password_hash.decode()}, Query().password_hash.exists())
        finally:
            db.close()

    # -- stores ----------------------------------------------------------
    async def list_stores(self) -> list[dict[str, Any]]:
        return await self._call(lambda: [self._store_record(o) for o in self._store_dirs()])

    async def get_store(self, onion: str) -> dict[str, Any]:
        return await self._call(self._store_record, onion)

    def _store_record(self, onion: str) -> dict[str, Any]:
        db = self._db(onion)
        meta = _table(db, "meta").get(doc_id=1) or {}
        profile = _table(db, "profile").get(doc_id=1) or {}
        service = _table(db, "onion_service").get(doc_id=1)
        return {
            "onion": onion,
            "seq": int(meta.get("seq", 0)),
            "port": meta.get("port"),
            "created_at": meta.get("created_at"),
            "profile": copy.deepcopy(dict(profile)),
            "onion_service": copy.deepcopy(dict(service)) if service else None,
        }

    async def create_store(
        self, onion: str, seed: bytes, profile: dict[str, Any], choose_port: Callable[[set[int]], int | None]
    ) -> dict[str, Any]:
        """``choose_port`` gets the ports other stores hold; it runs in the same
        storage job as the write, so concurrent creations never share a port."""

        def run() -> dict[str, Any]:
            final = self.stores_dir / onion
            if final.exists():
                raise Conflict(f"store {onion} already exists")
            used = {p for p in (self._store_record(o)["port"] for o in self._store_dirs()) if p}
            port = choose_port(used)
            tmp = self.stores_dir / f".new-{onion}"
            shutil.rmtree(tmp, ignore_errors=True)
            make_private_dir(tmp / "images")
            atomic_write(tmp / "key", seed)
            now = int(time.time())
            doc = {
                "meta": {"1": {"schema": SCHEMA_VERSION, "seq": now, "port": port, "created_at": now}},
                "profile": {"1": profile},
                "listings": {},
            }
            atomic_write(tmp / "store.json", json.dumps(doc, ensure_ascii=False).encode())
            os.rename(tmp, final)
            fsync_dir(self.stores_dir)
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

    def _bump_seq(self, db: TinyDB) -> int:
        meta = _table(db, "meta")
        current = int((meta.get(doc_id=1) or {}).get("seq", 0))
        seq = max(current + 1, int(time.time()))
        meta.update({"seq": seq}, doc_ids=[1])
        return seq

    async def seal_data(self, onion: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Take a new ``seq`` and read profile + listings, all in one storage job.

        Every envelope sealed from this gets its own ``seq``, and no write can
        land between reading the ``seq`` and reading what it covers.
        """

        def run() -> tuple[dict[str, Any], list[dict[str, Any]]]:
            db = self._db(onion)
            with _storage(db).batch():
                self._bump_seq(db)
            items = [copy.deepcopy(dict(d)) for d in _table(db, "listings").all()]
            return self._store_record(onion), items

        return await self._call(run)

    async def update_profile(self, onion: str, profile: dict[str, Any]) -> int:
        def run() -> int:
            db = self._db(onion)
            with _storage(db).batch():
                _table(db, "profile").update(profile, doc_ids=[1])
                return self._bump_seq(db)

        return await self._call(run)

    async def set_onion_service(self, onion: str, options: dict[str, Any]) -> None:
        """Replace the store's onion-service options (access keys, limits)."""

        def run() -> None:
            db = self._db(onion)
            _table(db, "onion_service").upsert(Document(options, doc_id=1))

        await self._call(run)

    async def set_port(self, onion: str, choose_port: Callable[[set[int]], int | None]) -> dict[str, Any]:
        """Give the store the port ``choose_port`` picks from the ports other stores hold.

        Like ``create_store``, the choice and the write are one storage job.
        """

        def run() -> dict[str, Any]:
            db = self._db(onion)
            used = {p for p in (self._store_record(o)["port"] for o in self._store_dirs() if o != onion) if p}
            _table(db, "meta").update({"port": choose_port(used)}, doc_ids=[1])
            return self._store_record(onion)

        return await self._call(run)

    async def delete_store(self, onion: str) -> Path:
        """Move ``stores/<onion>`` (key, database, images) to ``deleted/<onion>-<UTC time>/``.

        Nothing is destroyed: moving the folder back into ``stores/`` (named
        ``<onion>``) while no node runs restores the store.
        """

        def run() -> Path:
            source = self.stores_dir / onion
            if not (source / "store.json").is_file():
                raise NotFound(f"no store {onion}")
            db = self._dbs.pop(onion, None)
            if db is not None:
                db.close()
            trash = self.data_dir / "deleted"
            make_private_dir(trash)
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            target, n = trash / f"{onion}-{stamp}", 1
            while target.exists():
                n += 1
                target = trash / f"{onion}-{stamp}-{n}"
            try:
                os.rename(source, target)
            except OSError as exc:
                raise StorageError(
                    f"could not move store {onion} to {target} ({exc.strerror}); nothing was deleted"
                ) from None
            fsync_dir(self.stores_dir)
            fsync_dir(trash)
            return target

        return await self._call(run)

    # -- listings --------------------------------------------------------
    async def listings(self, onion: str) -> list[dict[str, Any]]:
        def run() -> list[dict[str, Any]]:
            return [copy.deepcopy(dict(d)) for d in _table(self._db(onion), "listings").all()]

        return await self._call(run)

    async def put_listings(self, onion: str, listings: list[dict[str, Any]]) -> Put:
        """Insert or replace listings (by ``id``) in one atomic write (import, restore).

        A new listing whose ``import_key`` is already stored (or comes earlier
        in ``listings``) is skipped, in the same job as the write: re-sending
        an import batch that was stored before never duplicates it.
        """

        def run() -> Put:
            db = self._db(onion)
            table = _table(db, "listings")
            # One pass over the stored dicts (no Document per row) and one table
            # update for all replacements: a batch costs one scan, not one per row.
            raw = (_storage(db).read() or {}).get("listings", {})
            doc_ids = {doc["id"]: int(key) for key, doc in raw.items()}
            keys = {doc["import_key"] for doc in raw.values() if doc.get("import_key")}
            replaced = {x["id"]: copy.deepcopy(x) for x in listings if x["id"] in doc_ids}
            fresh, skipped = [], []
            for x in listings:
                if x["id"] in doc_ids:
                    continue
                key = x.get("import_key")
                if key in keys:
                    skipped.append(x["id"])
                    continue
                if key:
                    keys.add(key)
                fresh.append(copy.deepcopy(x))
            if not replaced and not fresh:  # nothing to write
                return Put(seq=int((_table(db, "meta").get(doc_id=1) or {}).get("seq", 0)), skipped=skipped)

            def replace(doc: dict[str, Any]) -> None:
                doc.update(replaced[doc["id"]])

            with _storage(db).batch():
                if replaced:
                    table.update(replace, doc_ids=[doc_ids[i] for i in replaced])
                table.insert_multiple(fresh)
                return Put(seq=self._bump_seq(db), skipped=skipped)

        return await self._call(run)

    async def replace_listing(self, onion: str, listing: dict[str, Any]) -> int:
        """Update an existing listing; NotFound if it was removed meanwhile."""

        def run() -> int:
            db = self._db(onion)
            table = _table(db, "listings")
            with _storage(db).batch():
                if not table.update(copy.deepcopy(listing), Query().id == listing["id"]):
                    raise NotFound(f"no listing {listing['id']!r} in this store")
                return self._bump_seq(db)

        return await self._call(run)

    async def delete_listing(self, onion: str, listing_id: str) -> int:
        def run() -> int:
            db = self._db(onion)
            with _storage(db).batch():
                if not _table(db, "listings").remove(Query().id == listing_id):
                    raise NotFound(f"no listing {listing_id!r} in this store")
                return self._bump_seq(db)

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
