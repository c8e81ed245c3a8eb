"""The PostgreSQL directory backend: frontends sharing one index, the node choosing it, the adapter's contract.

A real throwaway PostgreSQL (tests/pg.py, the session ``postgres`` fixture); the directory behaviour
itself is tested on both backends by test_directory*.py and test_reviews_directory.py.
"""

from contextlib import AsyncExitStack

import pytest

from node.adapters import directory_pg_schema
from node.adapters.pg import PgDatabase, PgMigration, describe, pg_sql
from node.app.discovery import open_directory
from node.core.config import Config
from node.core.errors import StorageError
from node.discovery.directory import Directory, DirectoryLimits
from node.discovery.directory_dialect import POSTGRES, SQLITE
from node.discovery.models import SearchQuery, Source
from tests.unit.directory_helpers import Clock, catalog, listing, onion


def test_placeholders_become_psycopg_ones_outside_literals():
    assert pg_sql("SELECT ? FROM t WHERE a = '?' AND b LIKE 'x%' AND c = ?") == (
        "SELECT %s FROM t WHERE a = '?' AND b LIKE 'x%%' AND c = %s"
    )
    assert pg_sql("VALUES ('it''s ?', ?)") == "VALUES ('it''s ?', %s)"


def test_the_dsn_is_described_without_its_password():
    text = describe("host=/run/pg dbname=dir user=u password=hunter2")
    assert "hunter2" not in text and "dir" in text
    assert "hunter2" not in describe("postgresql://u:hunter2@db.internal/dir")


@pytest.fixture
async def pg_db(postgres):
    opened = []

    async def open_db(dsn=None, migrations=directory_pg_schema.MIGRATIONS):
        db = PgDatabase(dsn or postgres.create_database(), migrations, component=directory_pg_schema.COMPONENT)
        await db.open()
        opened.append(db)
        return db

    yield open_db
    for db in opened:
        await db.close()


async def frontend(db, clock=None):
    directory = Directory(db, limits=DirectoryLimits(), clock=clock or Clock(), dialect=POSTGRES)
    await directory.open()
    return directory


async def test_two_frontends_share_one_index_and_its_blocks(pg_db, postgres):
    dsn = postgres.create_database()
    a, b = await frontend(await pg_db(dsn)), await frontend(await pg_db(dsn))
    store, other = onion(), onion()
    await a.index(catalog(store, [listing("s", "Wool socks")]), source=Source.DIRECT, etag=None)
    assert [r["listing"] for r in (await b.search(SearchQuery(q="socks")))["results"]] == ["s"]
    await a.block("store", other)
    # b has not re-read the blocks yet, but its writes check the table: the block wins.
    assert await b.index(catalog(other, [listing("o")]), source=Source.DIRECT, etag=None) == 0
    assert not b.is_blocked(other)
    await b.refresh_blocks()
    assert b.is_blocked(other)


async def test_a_write_that_raises_is_rolled_back(pg_db):
    db = await pg_db()

    def write(conn):
        conn.execute("INSERT INTO subscriptions (onion, added_at) VALUES (?, ?)", ("x", 1))
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await db.execute_write_fn(write)
    assert await db.execute("SELECT count(*) AS n FROM subscriptions") == [(0,)]
    [row] = await db.execute("SELECT count(*) AS n FROM subscriptions")
    assert row["n"] == 0 and row.keys() == ["n"]


async def test_reopening_migrates_once_and_a_newer_schema_is_refused(pg_db, postgres):
    dsn = postgres.create_database()
    first = await pg_db(dsn)
    again = await pg_db(dsn)
    assert first.schema_version == again.schema_version == len(directory_pg_schema.MIGRATIONS)
    older = directory_pg_schema.MIGRATIONS[:0]
    with pytest.raises(StorageError, match="newer pasar"):
        await pg_db(dsn, older)
    newer = (*directory_pg_schema.MIGRATIONS, PgMigration(2, "extra", "CREATE TABLE extra (x INTEGER)"))
    assert (await pg_db(dsn, newer)).schema_version == 2


async def test_an_unreachable_database_says_what_to_do(tmp_path):
    db = PgDatabase(
        f"host={tmp_path} dbname=nothing user=u password=hunter2", directory_pg_schema.MIGRATIONS, component="directory"
    )
    with pytest.raises(StorageError) as caught:
        await db.open()
    assert "check that PostgreSQL is running" in caught.value.message
    assert "hunter2" not in caught.value.message


async def test_the_node_uses_postgres_when_directory_dsn_is_set(postgres, tmp_path):
    async with AsyncExitStack() as stack:
        on_pg = await open_directory(Config(data_dir=tmp_path, directory_dsn=postgres.create_database()), stack)
        on_file = await open_directory(Config(data_dir=tmp_path), stack)
        assert (on_pg.dialect, on_file.dialect) == (POSTGRES, SQLITE)
        assert (tmp_path / "directory.sqlite").exists()
        await on_pg.index(catalog(onion(), [listing()]), source=Source.DIRECT, etag=None)
        assert (await on_pg.search(SearchQuery(q="wool")))["total"] == 1
        assert (await on_file.search(SearchQuery(q="wool")))["total"] == 0


# -- review F8: the DSN checked at load, a lost connection replaced, a search that runs too long ----------
def test_a_malformed_directory_dsn_is_refused_when_the_settings_load(tmp_path):
    from node.core.config import ConfigError, load

    with pytest.raises(ConfigError, match=r"directory_dsn.*PostgreSQL connection string") as caught:
        load(tmp_path, env={"PASAR_DIRECTORY_DSN": "host=127.0.0.1 user=pasar password=my secret dbname=x"})
    assert "secret" not in caught.value.message.replace("(not shown: a secret)", "")
    for good in ("", "host=/run/postgresql dbname=pasar password='my secret'", "postgresql://u@db/pasar"):
        assert load(tmp_path, env={"PASAR_DIRECTORY_DSN": good}).directory_dsn == good


async def test_an_unparsable_dsn_is_reported_without_its_text():
    db = PgDatabase("host=/nowhere user=pasar password=my secret dbname=x", component="directory")
    with pytest.raises(StorageError, match="not a valid PostgreSQL connection string") as caught:
        await db.open()
    assert "secret" not in caught.value.message and caught.value.__cause__ is None


def _drop_connections(admin_dsn: str, dbname: str) -> int:
    import psycopg

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        ).fetchall()
    return len(rows)


async def test_after_postgres_drops_every_connection_the_next_write_and_read_work(pg_db, postgres):
    import asyncio

    dsn = postgres.create_database()
    db = await pg_db(dsn)
    directory = await frontend(db)
    await directory.index(catalog(onion(), [listing("a", "Wool socks")]), source=Source.DIRECT, etag=None)
    # What a PostgreSQL restart does to the pool: every open connection is closed by the server.
    assert await asyncio.to_thread(_drop_connections, postgres.dsn(), dsn.rsplit("dbname=", 1)[1]) >= 3
    await directory.index(catalog(onion(), [listing("b", "Wool hat")]), source=Source.DIRECT, etag=None)
    for _ in range(2):  # both readers
        assert (await directory.search(SearchQuery(q="wool")))["total"] == 2


async def test_a_read_that_runs_past_the_statement_timeout_says_narrow_your_search(postgres):
    from node.core.errors import BadRequest

    db = PgDatabase(postgres.create_database(), component="directory", readers=1, statement_timeout=0.05)
    await db.open()
    try:
        with pytest.raises(BadRequest, match="narrow your search"):
            await db.execute("SELECT pg_sleep(2)")
        assert await db.execute("SELECT 1") == [(1,)]  # the reader works on
    finally:
        await db.close()
