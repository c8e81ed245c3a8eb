"""Two real nodes (``pasar run --no-tor`` processes) with one ``directory_dsn``: one index, shared.

Listings indexed once are found through both nodes' search API; a store blocked through one node's
admin API is gone from the other's answers at once (the block deletes its rows in the shared tables).
Uses the session's throwaway PostgreSQL (tests/pg.py) and the node helpers of tests/integration.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest

from node.adapters import directory_pg_schema
from node.adapters.pg import PgDatabase
from node.discovery.directory import Directory, DirectoryLimits
from node.discovery.directory_dialect import POSTGRES
from node.discovery.models import Source
from tests.integration.conftest import Node, make_node
from tests.unit.directory_helpers import catalog, listing, onion


async def _seed(dsn: str, stores: list[str]) -> None:
    db = PgDatabase(dsn, directory_pg_schema.MIGRATIONS, component=directory_pg_schema.COMPONENT)
    await db.open()
    try:
        directory = Directory(db, limits=DirectoryLimits(), dialect=POSTGRES)
        await directory.open()
        for i, store in enumerate(stores):
            items = [listing(f"k{i}", f"Copper kettle {i}", "Hammered copper"), listing(f"m{i}", "Brass mug")]
            await directory.index(catalog(store, items, name=f"Shop {i}"), source=Source.DIRECT, etag=None)
    finally:
        await db.close()


@pytest.fixture
def frontends(postgres, tmp_path) -> Iterator[tuple[Node, Node, list[str]]]:
    dsn = postgres.create_database()
    stores = [onion(), onion()]
    asyncio.run(_seed(dsn, stores))
    nodes = [make_node(tmp_path / name) for name in ("a", "b")]
    for node in nodes:
        with open(node.data_dir / "pasar.toml", "a") as toml:
            toml.write(f"\ndirectory_dsn = {json.dumps(dsn)}\ngossip = false\n")
    try:
        for node in nodes:
            node.start()
        yield nodes[0], nodes[1], stores
    finally:
        for node in nodes:
            node.stop()


def _api(node: Node, method: str, path: str, body: object = None) -> tuple[int, object]:
    data = None if body is None else json.dumps(body).encode()
    headers = {**node.auth, "Content-Type": "application/json"}
    request = urllib.request.Request(f"{node.admin_url}/api/v1{path}", data=data, headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=30) as resp:
        raw = resp.read()
        return int(resp.status), json.loads(raw) if raw else None


def _found(node: Node, q: str) -> set[tuple[str, str]]:
    status, page = _api(node, "GET", "/search?" + urllib.parse.urlencode({"q": q}))
    assert status == 200 and isinstance(page, dict)
    return {(r["store"], r["listing"]) for r in page["results"]}


def test_two_nodes_answer_from_one_index_and_a_block_on_one_applies_to_both(frontends):
    a, b, (bad, good) = frontends
    both = {(bad, "k0"), (good, "k1")}
    assert _found(a, "copper kettle") == _found(b, "copper kettle") == both
    assert _found(b, "kett") == both  # the last word is a prefix on PostgreSQL too
    status, _ = _api(a, "POST", "/blocks", {"kind": "store", "value": bad, "reason": "scam"})
    assert status == 201
    assert _found(b, "kettle") == _found(a, "kettle") == {(good, "k1")}
    assert not (a.data_dir / "directory.sqlite").exists() and not (b.data_dir / "directory.sqlite").exists()
