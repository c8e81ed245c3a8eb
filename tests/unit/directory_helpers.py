"""Builders shared by the directory tests: real VerifiedCatalog records and a real directory database.

``opened`` (import it into a test module: it overrides tests/unit/conftest.py's, and the conftest's
``directory`` fixture then uses it) runs each test on both backends: a directory.sqlite in tmp_path,
and a fresh database in the session's throwaway PostgreSQL (``postgres`` fixture of tests/conftest.py:
skipped without PostgreSQL binaries, a failure under ``CI``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from node.adapters import directory_pg_schema
from node.adapters.directory_schema import MIGRATIONS
from node.adapters.pg import PgDatabase
from node.adapters.sqlite import SQLiteDatabase
from node.core.addresses import address_from_pubkey
from node.core.models import Sats
from node.discovery.directory import Directory, DirectoryLimits
from node.discovery.directory_dialect import POSTGRES, SQLITE
from node.discovery.models import CatalogListing, VerifiedCatalog
from tests.pg import ThrowawayPostgres

NOW = 1_800_000_000
DAY = 86400


def onion() -> str:
    return address_from_pubkey(os.urandom(32))


def listing(
    id: str = "l1",
    title: str = "Wool socks",
    description: str = "Warm socks knitted from sheep wool",
    *,
    category: str = "clothing",
    tags: tuple[str, ...] = ("wool",),
    price_sat: int = 10_000,
    ships_to: tuple[str, ...] = ("WORLDWIDE",),
    created_at: int = NOW - DAY,
    thumb: str | None = None,
) -> CatalogListing:
    return CatalogListing(
        id=id,
        title=title,
        description=description,
        category=category,
        tags=tags,
        price_sat=Sats(price_sat),
        ships_to=ships_to,
        created_at=created_at,
        thumb=thumb,
    )


def catalog(
    store: str, listings: list[CatalogListing], *, seq: int = 1, issued_at: int = NOW - 60, pad: int = 0, name="Shop"
) -> VerifiedCatalog:
    body = {"store": store, "seq": seq, "listings": [x.id for x in listings], "pad": "x" * pad}
    raw = json.dumps(body, sort_keys=True).encode()
    return VerifiedCatalog(
        store=store,
        seq=seq,
        issued_at=issued_at,
        expires_at=issued_at + 7 * DAY,
        name=name,
        description=f"{name} sells things",
        listings=tuple(listings),
        raw=raw,
        hash="sha256:" + hashlib.sha256(raw).hexdigest(),
    )


@dataclass
class Clock:
    now: float = NOW

    def __call__(self) -> float:
        return self.now


@dataclass
class Opened:
    backend: str = "sqlite"
    postgres: ThrowawayPostgres | None = None
    dbs: list[SQLiteDatabase | PgDatabase] = field(default_factory=list)
    dsns: dict[Path, str] = field(default_factory=dict)  # one database per tmp_path: reopening finds the data

    async def directory(self, path, clock: Clock, **limits: int) -> Directory:
        if self.backend == "pg":
            assert self.postgres is not None
            if path not in self.dsns:
                self.dsns[path] = await asyncio.to_thread(self.postgres.create_database)
            db: SQLiteDatabase | PgDatabase = PgDatabase(
                self.dsns[path], directory_pg_schema.MIGRATIONS, component=directory_pg_schema.COMPONENT
            )
            dialect = POSTGRES
        else:
            db = SQLiteDatabase(path / "directory.sqlite", MIGRATIONS, synchronous="NORMAL")
            dialect = SQLITE
        await db.open()
        self.dbs.append(db)
        directory = Directory(db, limits=DirectoryLimits(**limits), clock=clock, dialect=dialect)
        await directory.open()
        return directory

    async def close(self) -> None:
        for db in self.dbs:
            await db.close()


BACKENDS = ("sqlite", "pg")


@pytest.fixture(params=BACKENDS)
async def opened(request: pytest.FixtureRequest) -> AsyncIterator[Opened]:
    """Directories on each backend (the PG one in the session's throwaway PostgreSQL)."""
    postgres = request.getfixturevalue("postgres") if request.param == "pg" else None
    o = Opened(request.param, postgres)
    yield o
    await o.close()
