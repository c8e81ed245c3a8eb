"""Two frontends writing one PostgreSQL directory at the same time (review F5).

On SQLite one writer thread serialises every write; on PostgreSQL two frontends' transactions
interleave. These tests stop frontend B inside its index transaction (after it read the held seq and
the blocks), let frontend A write, then let B go on: A's write must not be undone by B's.
"""

from __future__ import annotations

import asyncio
import threading
import time

import psycopg
import pytest

from node.adapters import directory_pg_schema
from node.adapters.pg import PgDatabase
from node.discovery import directory_index
from node.discovery.directory import Directory, DirectoryLimits
from node.discovery.directory_dialect import POSTGRES
from node.discovery.models import SearchQuery, Source
from tests.unit.directory_helpers import Clock, catalog, listing, onion

DEADLINE = 20.0


@pytest.fixture
async def two_frontends(postgres):
    dsn = postgres.create_database()
    dbs = [PgDatabase(dsn, directory_pg_schema.MIGRATIONS, component=directory_pg_schema.COMPONENT) for _ in "ab"]
    frontends = []
    for db in dbs:
        await db.open()
        frontends.append(Directory(db, limits=DirectoryLimits(), clock=Clock(), dialect=POSTGRES))
        await frontends[-1].open()
    yield dsn, frontends[0], frontends[1]
    for db in dbs:
        await db.close()


class PauseOnce:
    """Replaces ``directory_index.blocked_tags``: the first call waits until released (on the writer thread)."""

    def __init__(self) -> None:
        self.reached, self.release = threading.Event(), threading.Event()
        self._real = directory_index.blocked_tags
        self._used = False

    def __call__(self, conn):
        if not self._used:
            self._used = True
            self.reached.set()
            if not self.release.wait(DEADLINE):
                raise TimeoutError("the test never released the paused write")
        return self._real(conn)


def _waiting_or_done(dsn: str, task: asyncio.Task) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        waiting = conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()
    return task.done() or bool(waiting and waiting[0])


async def _interleave(dsn: str, monkeypatch, paused_write, other_write):
    """Start ``paused_write`` (B), stop it inside its transaction, run ``other_write`` (A) until it finished
    or waits on a lock, then let B finish; both results."""
    pause = PauseOnce()
    monkeypatch.setattr(directory_index, "blocked_tags", pause)
    b = asyncio.ensure_future(paused_write)
    assert await asyncio.to_thread(pause.reached.wait, DEADLINE)
    a = asyncio.ensure_future(other_write)
    deadline = time.monotonic() + DEADLINE
    while not await asyncio.to_thread(_waiting_or_done, dsn, a):
        assert time.monotonic() < deadline, "frontend A neither finished nor waited on a lock"
        await asyncio.sleep(0.02)
    pause.release.set()
    return await asyncio.wait_for(asyncio.gather(a, b), DEADLINE)


async def test_an_older_catalog_indexed_at_the_same_time_does_not_replace_a_newer_one(two_frontends, monkeypatch):
    dsn, a, b = two_frontends
    store = onion()
    await a.index(catalog(store, [listing("v4", "Wool socks")], seq=4), source=Source.DIRECT, etag=None)
    older = catalog(store, [listing("v5", "Wool hat")], seq=5)
    newer = catalog(store, [listing("v6", "Wool scarf")], seq=6)
    await _interleave(
        dsn,
        monkeypatch,
        b.index(older, source=Source.DIRECT, etag=None),
        a.index(newer, source=Source.DIRECT, etag=None),
    )
    held = await a.held(store)
    assert held is not None and held.seq == 6
    page = await b.search(SearchQuery(q="wool"))
    assert [r["listing"] for r in page["results"]] == ["v6"]
    assert await a.mirror(store) == newer.raw


async def test_a_block_is_not_undone_by_an_index_under_way_on_another_frontend(two_frontends, monkeypatch):
    dsn, a, b = two_frontends
    store = onion()
    await a.index(catalog(store, [listing("s1", "Wool socks")], seq=1), source=Source.DIRECT, etag=None)
    await _interleave(
        dsn,
        monkeypatch,
        b.index(catalog(store, [listing("s2", "Wool socks")], seq=2), source=Source.DIRECT, etag=None),
        a.block("store", store, "scam"),
    )
    assert (await a.search(SearchQuery(q="wool")))["total"] == 0
    assert await a.mirror(store) is None and await a.held(store) is None
    assert await a.counts() == (0, 0)
