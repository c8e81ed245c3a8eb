"""SQLite adapter: one writer thread, read pool, WAL, migrations, errors, close (real files in tmp_path)."""

import asyncio
import os
import sqlite3
import stat
import threading
import time

import pytest

from node.adapters import sqlite as sqlite_adapter
from node.adapters.sqlite import SQLiteDatabase
from node.adapters.sqlite_schema import Migration, require_fts5, statements
from node.core.errors import StorageError

ITEMS = Migration(1, "items", "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);")
COUNTER = Migration(2, "counter", "CREATE TABLE counter (n INTEGER NOT NULL); INSERT INTO counter (n) VALUES (0);")


@pytest.fixture
async def open_db(tmp_path):
    opened = []

    async def make(migrations=(ITEMS, COUNTER), name="test.db", **kwargs):
        db = SQLiteDatabase(tmp_path / name, migrations, **kwargs)
        await db.open()
        opened.append(db)
        return db

    yield make
    for db in opened:
        await db.close()


def insert(name):
    def run(conn):
        return conn.execute("INSERT INTO items (name) VALUES (?)", (name,)).lastrowid

    return run


async def names(db):
    return [row["name"] for row in await db.execute("SELECT name FROM items ORDER BY id")]


# -- shape ---------------------------------------------------------------------
async def test_wal_pragmas_and_a_private_file(open_db, tmp_path):
    db = await open_db()
    assert (await db.execute("PRAGMA journal_mode"))[0][0] == "wal"
    assert (await db.execute("PRAGMA foreign_keys"))[0][0] == 1
    assert await db.execute_write_fn(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == 2  # FULL
    assert await db.execute_write_fn(lambda c: c.execute("PRAGMA busy_timeout").fetchone()[0]) > 0
    assert stat.S_IMODE(os.stat(tmp_path / "test.db").st_mode) == 0o600
    assert db.schema_version == 2


async def test_rows_by_name_and_position(open_db):
    db = await open_db()
    await db.execute_write_fn(insert("wool"))
    (row,) = await db.execute("SELECT id, name FROM items WHERE name = :name", {"name": "wool"})
    assert row["name"] == row[1] == "wool" and row.keys() == ["id", "name"]


async def test_reads_are_read_only(open_db):
    db = await open_db()
    with pytest.raises(StorageError, match="read-only") as caught:
        await db.execute("INSERT INTO items (name) VALUES ('x')")
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    assert await names(db) == []


async def test_fts5_is_available_to_migrations(open_db):
    fts = Migration(1, "search", "CREATE VIRTUAL TABLE docs USING fts5(body);")
    db = await open_db((fts,), name="fts.db")
    await db.execute_write_fn(lambda c: c.execute("INSERT INTO docs (body) VALUES ('amber honey tea')"))
    assert len(await db.execute("SELECT * FROM docs WHERE docs MATCH 'honey'")) == 1


def test_missing_fts5_is_refused_with_what_to_do():
    class NoFts5:
        def execute(self, sql):
            raise sqlite3.OperationalError("no such module: fts5")

    with pytest.raises(StorageError, match="FTS5") as caught:
        require_fts5(NoFts5())
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)


# -- writes --------------------------------------------------------------------
async def test_concurrent_writes_are_serialised_and_none_is_lost(open_db):
    db = await open_db()
    threads = set()

    def bump(conn):  # read-modify-write: loses updates unless writes are serialised
        threads.add(threading.get_ident())
        (n,) = conn.execute("SELECT n FROM counter").fetchone()
        time.sleep(0.0005)
        conn.execute("UPDATE counter SET n = ?", (n + 1,))
        return n + 1

    results = await asyncio.gather(*(db.execute_write_fn(bump) for _ in range(200)))
    await asyncio.gather(*(db.execute_write_fn(insert(f"item {i}")) for i in range(100)))
    assert sorted(results) == list(range(1, 201))
    assert (await db.execute("SELECT n FROM counter"))[0]["n"] == 200
    assert len(await names(db)) == 100
    assert len(threads) == 1 and threading.get_ident() not in threads


async def test_reads_see_committed_data_while_a_write_is_pending(open_db):
    db = await open_db()
    await db.execute_write_fn(insert("before"))
    inside, release = threading.Event(), threading.Event()

    def slow_write(conn):
        conn.execute("INSERT INTO items (name) VALUES ('during')")
        inside.set()
        assert release.wait(10), "the test never released the write"

    pending = asyncio.ensure_future(db.execute_write_fn(slow_write))
    assert await asyncio.to_thread(inside.wait, 10)
    assert await asyncio.wait_for(names(db), 5) == ["before"]  # WAL: not blocked, sees the last commit
    assert not pending.done()
    release.set()
    await pending
    assert await names(db) == ["before", "during"]


async def test_a_failing_write_rolls_back_only_its_own_transaction(open_db):
    db = await open_db()

    def insert_then_fail(conn):
        conn.execute("INSERT INTO items (name) VALUES ('doomed')")
        raise ValueError("domain rule says no")

    first = db.execute_write_fn(insert("first"))
    failing = db.execute_write_fn(insert_then_fail)
    last = db.execute_write_fn(insert("last"))
    outcome = await asyncio.gather(first, failing, last, return_exceptions=True)
    assert isinstance(outcome[1], ValueError) and str(outcome[1]) == "domain rule says no"
    assert await names(db) == ["first", "last"]


async def test_a_write_fn_may_not_commit_itself(open_db):
    db = await open_db()

    def commits(conn):
        conn.execute("INSERT INTO items (name) VALUES ('x')")
        conn.execute("COMMIT")

    with pytest.raises(RuntimeError, match="must not commit"):
        await db.execute_write_fn(commits)
    await db.execute_write_fn(insert("after"))
    assert "after" in await names(db)


async def test_the_event_loop_is_not_blocked(open_db):
    db = await open_db()
    ticks = 0
    writing = threading.Event()

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            if writing.is_set():
                ticks += 1

    def slow_write(conn):
        writing.set()
        time.sleep(0.2)
        writing.clear()
        return "done"

    task = asyncio.ensure_future(ticker())
    try:
        assert await db.execute_write_fn(slow_write) == "done"
    finally:
        task.cancel()
    assert ticks > 10  # the loop kept turning while the write slept

    # Deterministic: the read can only finish if the loop runs the code that releases it.
    release = threading.Event()

    def waiting_read(conn):
        return release.wait(10)

    read = asyncio.ensure_future(db.execute_fn(waiting_read))
    for _ in range(3):
        await asyncio.sleep(0)
    release.set()
    assert await read is True


async def test_a_cancelled_caller_does_not_cancel_a_queued_write(open_db):
    db = await open_db()
    release = threading.Event()
    blocker = asyncio.ensure_future(db.execute_write_fn(lambda c: release.wait(10)))
    cancelled = asyncio.ensure_future(db.execute_write_fn(insert("still written")))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    release.set()
    await blocker
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await db.execute_write_fn(lambda c: None)  # after the cancelled one in the queue
    assert await names(db) == ["still written"]


# -- close ---------------------------------------------------------------------
async def test_close_waits_for_queued_writes(tmp_path):
    db = SQLiteDatabase(tmp_path / "t.db", (ITEMS,))
    await db.open()
    release = threading.Event()
    blocker = asyncio.ensure_future(db.execute_write_fn(lambda c: release.wait(10)))
    writes = [asyncio.ensure_future(db.execute_write_fn(insert(f"n{i}"))) for i in range(50)]
    await asyncio.sleep(0)  # every write is on the queue
    closing = asyncio.ensure_future(db.close())
    await asyncio.sleep(0.05)
    assert not closing.done()
    release.set()
    await closing
    assert blocker.result() is True
    assert all(w.done() and not w.cancelled() for w in writes)
    assert sorted(w.result() for w in writes) == list(range(1, 51))
    with pytest.raises(StorageError, match="closed"):
        await db.execute_write_fn(insert("late"))
    with pytest.raises(StorageError, match="closed"):
        await db.execute("SELECT 1")
    await db.close()  # twice is fine
    assert not (tmp_path / "t.db-wal").exists()  # last connection closed: WAL checkpointed away
    with sqlite3.connect(tmp_path / "t.db") as raw:
        assert raw.execute("SELECT count(*) FROM items").fetchone()[0] == 50
    raw.close()


# -- migrations ----------------------------------------------------------------
async def test_migrations_apply_once_and_in_order(tmp_path):
    applied = []

    def record(version):
        def step(conn):
            applied.append((version, conn.execute("PRAGMA user_version").fetchone()[0]))

        return step

    v1 = Migration(1, "items", "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT);", record(1))
    v2 = Migration(2, "price", "ALTER TABLE items ADD COLUMN price_sat INTEGER NOT NULL DEFAULT 0;", record(2))
    v3 = Migration(3, "seed", "INSERT INTO items (name, price_sat) VALUES ('a;b', 5);", record(3))
    path = tmp_path / "m.db"
    for migrations in ((v1, v2), (v1, v2), (v1, v2, v3)):
        db = SQLiteDatabase(path, migrations)
        await db.open()
        assert db.schema_version == len(migrations)
        await db.close()
    assert applied == [(1, 0), (2, 1), (3, 2)]  # each once, in order, after the one before committed
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 3
        assert raw.execute("SELECT name, price_sat FROM items").fetchall() == [("a;b", 5)]
    raw.close()


async def test_a_failing_migration_leaves_the_version_before_it(tmp_path):
    def fail(conn):
        raise sqlite3.OperationalError("disk I/O error")

    broken = Migration(2, "broken", "CREATE TABLE half (x);", fail)
    db = SQLiteDatabase(tmp_path / "m.db", (ITEMS, broken))
    with pytest.raises(StorageError):
        await db.open()
    with sqlite3.connect(tmp_path / "m.db") as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 1
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    raw.close()
    assert "items" in tables and "half" not in tables


async def test_a_newer_database_is_refused(tmp_path):
    path = tmp_path / "new.db"
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version = 7")
    raw.close()
    db = SQLiteDatabase(path, (ITEMS, COUNTER))
    with pytest.raises(StorageError, match=r"schema version 7.*up to 2.*newer pasar"):
        await db.open()
    await db.close()


def test_migrations_must_be_numbered_in_order(tmp_path):
    with pytest.raises(ValueError, match="numbered"):
        SQLiteDatabase(tmp_path / "x.db", (COUNTER, ITEMS))


def test_statements_keep_semicolons_inside_strings_and_triggers():
    script = """
        CREATE TABLE t (x TEXT);
        INSERT INTO t VALUES ('a;b');
        CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET x = x || ';'; END;
    """
    assert len(statements(script)) == 3


# -- errors --------------------------------------------------------------------
async def test_a_damaged_file_is_a_storage_error_with_its_cause(tmp_path):
    path = tmp_path / "bad.db"
    path.write_bytes(b"this is not a database at all" * 200)
    db = SQLiteDatabase(path, (ITEMS,))
    with pytest.raises(StorageError, match="restore it from a backup") as caught:
        await db.open()
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)
    await db.close()


async def test_a_missing_folder_is_a_storage_error_with_its_cause(tmp_path):
    db = SQLiteDatabase(tmp_path / "no such folder" / "x.db", (ITEMS,))
    with pytest.raises(StorageError, match="check that its folder exists") as caught:
        await db.open()
    assert isinstance(caught.value.__cause__, FileNotFoundError)


async def test_a_broken_constraint_is_a_storage_error_naming_a_bug(open_db):
    db = await open_db()
    await db.execute_write_fn(insert("once"))
    with pytest.raises(StorageError, match="bug in pasar") as caught:
        await db.execute_write_fn(insert("once"))
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)


async def test_a_lock_held_by_another_process_is_named(open_db, tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_adapter, "BUSY_TIMEOUT_MS", 50)
    db = await open_db()
    other = sqlite3.connect(tmp_path / "test.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StorageError, match="locked by another process") as caught:
            await db.execute_write_fn(insert("blocked"))
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
        other.execute("ROLLBACK")
    finally:
        other.close()
    await db.execute_write_fn(insert("after"))  # the writer survives the failure
    assert await names(db) == ["after"]


async def test_api_misuse_is_left_as_a_bug(open_db):
    db = await open_db()
    with pytest.raises(sqlite3.ProgrammingError):
        await db.execute("SELECT ?", ())
