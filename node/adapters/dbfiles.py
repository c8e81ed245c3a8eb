"""TinyDB files of a data directory: opening them, the schema guard, and ``node.json``.

``node.json`` holds node-wide state (schema version, admin password hash).
The functions working on it without an open ``Storage`` (``initialise``,
``has_admin_password``, ``set_admin_password_hash``) are for ``pasar init``,
which holds the data dir's lock meanwhile.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tinydb import Query, TinyDB

from ..core.errors import StorageError
from .fsutil import atomic_write, make_private_dir
from .jsonstore import AtomicJSONStorage

SCHEMA_VERSION = 1
# schema version -> function upgrading a store db from that version by one step.
MIGRATIONS: dict[int, Callable[[TinyDB], None]] = {}


def open_db(path: Path) -> TinyDB:
    return TinyDB(path, storage=AtomicJSONStorage)


def file_of(db: TinyDB) -> AtomicJSONStorage:
    """The db's storage: ``file_of(db).batch()`` groups writes into one atomic file write."""
    storage = db.storage
    assert isinstance(storage, AtomicJSONStorage)
    return storage


def table(db: TinyDB, name: str) -> Any:
    return db.table(name, cache_size=0)


def first(db: TinyDB, name: str) -> Any:
    """A deep copy of the table's single document (doc id 1), or None when it is missing or empty."""
    doc = table(db, name).get(doc_id=1)
    return copy.deepcopy(dict(doc)) if doc else None


def check_schema(db: TinyDB, what: str) -> None:
    """Refuse a damaged or newer schema; migrate an older one, one atomic step at a time."""
    meta = table(db, "meta")
    doc = meta.get(doc_id=1) or {}
    version = doc.get("schema", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise StorageError(f"{what}: its schema version {version!r} is damaged; restore the file from a backup")
    if version > SCHEMA_VERSION:
        raise StorageError(f"{what} was written by a newer Pasar (schema {version}); upgrade")
    while version < SCHEMA_VERSION:
        if version not in MIGRATIONS:
            raise StorageError(f"{what}: no migration from schema {version}")
        with file_of(db).batch():
            MIGRATIONS[version](db)
            version += 1
            meta.update({"schema": version}, doc_ids=[1])


def initialise(data_dir: Path) -> bool:
    """Create the data dir and node.json; False if it already existed."""
    make_private_dir(data_dir / "stores")
    path = data_dir / "node.json"
    if path.exists():
        return False
    doc = {"meta": {"1": {"schema": SCHEMA_VERSION, "created_at": int(time.time())}}}
    atomic_write(path, json.dumps(doc).encode())
    return True


def has_admin_password(data_dir: Path) -> bool:
    """Read-only peek (files are replaced atomically, so no lock is needed)."""
    try:
        doc = json.loads((data_dir / "node.json").read_bytes())
    except (OSError, ValueError):
        return False
    return bool(doc.get("admin", {}).get("1", {}).get("password_hash"))


def set_admin_password_hash(data_dir: Path, password_hash: bytes) -> None:
    """Used by ``pasar init``, which holds the data dir's lock meanwhile."""
    db = open_db(data_dir / "node.json")
    try:
        table(db, "admin").upsert({"password_hash": password_hash.decode()}, Query().password_hash.exists())
    finally:
        db.close()


def admin_password_hash(node: TinyDB) -> bytes | None:
    """The hash in an open ``node.json``, or None before ``pasar init`` set one."""
    doc = table(node, "admin").get(doc_id=1)
    return doc["password_hash"].encode() if doc else None
