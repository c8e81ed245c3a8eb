"""Upgrades: a data dir in the oldest format this pasar reads is opened by the current code.

The fixture (tests/fixtures/v1-datadir, made by tests/fixtures/make_v1_datadir.py) has every SQLite
database at migration 1 and ``node.json`` at schema 1, with stores, listings and an image, a gossip
peer, an order and a crawled catalog in the directory. Opening it runs every later migration and
keeps every row; opening it again changes nothing; a file from a newer pasar is refused with what to do.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from node.adapters import dbfiles
from node.adapters.sqlite import SQLiteDatabase
from node.core.errors import StorageError
from tests.fixtures.make_v1_datadir import DATABASES, PEER, schema, v1_schema

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "v1-datadir"
ROOT = Path(__file__).resolve().parents[2]
MIGRATION_LOG = "applied schema migration"
# Each database's path from the fixture (migration 1) to this pasar, step by step. A new migration
# must be added here: the test then proves it runs on real old data and keeps the rows.
UPGRADE_PATHS: dict[str, list[str]] = {
    "gossip.sqlite": [],
    "directory.sqlite": ["2 (reviews)"],
    "orders.sqlite": [],
    "moderation.sqlite": [],
    "messages.sqlite": [],
    "purchases.sqlite": [],
}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(FIXTURE, copy)
    copy.chmod(0o700)  # git keeps no directory modes
    return copy


def user_version(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def pasar(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASAR_")}
    return subprocess.run(
        [sys.executable, "-m", "node", "--data-dir", str(data_dir), "--log-level", "info", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_fixture_is_the_oldest_format() -> None:
    for name, migrations in DATABASES.items():
        assert user_version(FIXTURE / name) == 1, name
        conn = sqlite3.connect(f"file:{FIXTURE / name}?mode=ro&immutable=1", uri=True)  # creates no file
        try:  # names and CREATE statements exactly as migration 1 makes them today
            assert schema(conn) == v1_schema(migrations), f"{name}: {sorted(schema(conn) ^ v1_schema(migrations))}"
        finally:
            conn.close()
    node = json.loads((FIXTURE / "node.json").read_text())
    assert node["meta"]["1"]["schema"] == 1
    # node.json's upgrade path is empty today; a node.json migration must come with a test here
    # that the fixture's schema-1 file is upgraded (and its rows kept).
    assert dbfiles.SCHEMA_VERSION == 1, "node.json gained a migration: test it on the fixture"
    assert any(len(m) > 1 for m in DATABASES.values()), "some database must have a migration to run"


async def test_every_migration_runs_once_and_keeps_the_rows(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="node.adapters.sqlite_schema")
    before = {name: _row_counts(data_dir / name) for name in DATABASES}
    for name, migrations in DATABASES.items():
        db = SQLiteDatabase(data_dir / name, migrations)
        await db.open()
        await db.close()
        assert user_version(data_dir / name) == len(migrations), name
        after = _row_counts(data_dir / name)
        assert {t: n for t, n in after.items() if t in before[name]} == before[name], name
    applied = [r.getMessage() for r in caplog.records if MIGRATION_LOG in r.getMessage()]
    assert set(UPGRADE_PATHS) == set(DATABASES), "every database needs its upgrade path in UPGRADE_PATHS"
    expected = [f"{name}: {MIGRATION_LOG} {step}" for name, steps in UPGRADE_PATHS.items() for step in steps]
    assert applied == expected, "a migration was added or removed: update UPGRADE_PATHS"
    for name, migrations in DATABASES.items():
        assert [f"{m.version} ({m.name})" for m in migrations[1:]] == UPGRADE_PATHS[name], name

    caplog.clear()
    for name, migrations in DATABASES.items():  # the second open is a no-op
        db = SQLiteDatabase(data_dir / name, migrations)
        await db.open()
        await db.close()
    assert not [r for r in caplog.records if MIGRATION_LOG in r.getMessage()]


def _row_counts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables}
    finally:
        conn.close()


def test_the_cli_reads_everything_after_the_upgrade(data_dir: Path) -> None:
    done = pasar(data_dir, "store", "list", "--json")
    assert done.returncode == 0, done.stderr
    stores = {s["name"]: s["onion"] for s in json.loads(done.stdout)}
    assert set(stores) == {"Corner Shop", "Book Nook"}
    done = pasar(data_dir, "listing", "list", "--store", "Corner Shop")
    assert done.returncode == 0 and "Mug" in done.stdout and "Wool socks" in done.stdout, done.stderr
    images = list((data_dir / "stores" / stores["Corner Shop"] / "images").glob("*.jpg"))
    assert len(images) == 2  # the image and its thumbnail

    done = pasar(data_dir, "peers", "list")
    assert done.returncode == 0 and PEER in done.stdout, done.stderr
    assert "applied schema migration 2 (reviews)" in done.stderr  # the directory's upgrade, logged
    done = pasar(data_dir, "search", "atlas")
    assert done.returncode == 0 and "Old atlas" in done.stdout, done.stderr
    done = pasar(data_dir, "orders", "list", "--json")
    assert done.returncode == 0, done.stderr
    [order] = json.loads(done.stdout)
    assert order["store"] == stores["Corner Shop"] and order["state"] == "awaiting_payment"
    assert MIGRATION_LOG not in pasar(data_dir, "node").stderr  # nothing left to migrate


async def test_a_database_from_a_newer_pasar_is_refused(data_dir: Path) -> None:
    path = data_dir / "gossip.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    db = SQLiteDatabase(path, DATABASES["gossip.sqlite"])
    with pytest.raises(StorageError, match="written by a newer pasar"):
        await db.open()
    await db.close()
    done = pasar(data_dir, "peers", "list")
    assert done.returncode == 1
    assert "schema version 99" in done.stderr and "restore a backup" in done.stderr
    assert user_version(path) == 99  # left as it was


def test_a_node_json_from_a_newer_pasar_is_refused(data_dir: Path) -> None:
    node = json.loads((data_dir / "node.json").read_text())
    node["meta"]["1"]["schema"] = dbfiles.SCHEMA_VERSION + 1
    (data_dir / "node.json").write_text(json.dumps(node))
    done = pasar(data_dir, "store", "list")
    assert done.returncode == 1
    assert "written by a newer Pasar" in done.stderr
