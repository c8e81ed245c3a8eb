"""Builders shared by the directory tests: real VerifiedCatalog records and a real directory.sqlite."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

from node.adapters.directory_schema import MIGRATIONS
from node.adapters.sqlite import SQLiteDatabase
from node.core.addresses import address_from_pubkey
from node.core.models import Sats
from node.discovery.directory import Directory, DirectoryLimits
from node.discovery.models import CatalogListing, VerifiedCatalog

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
    dbs: list[SQLiteDatabase] = field(default_factory=list)

    async def directory(self, path, clock: Clock, **limits: int) -> Directory:
        db = SQLiteDatabase(path / "directory.sqlite", MIGRATIONS, synchronous="NORMAL")
        await db.open()
        self.dbs.append(db)
        directory = Directory(db, limits=DirectoryLimits(**limits), clock=clock)
        await directory.open()
        return directory

    async def close(self) -> None:
        for db in self.dbs:
            await db.close()
