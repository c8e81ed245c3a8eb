"""Reviews on a real node's directory: the store page (rating, reviews with their chain mark, the "omits
reviews" flag; escaped, no script) and ``GET /api/v1/directory/stores/<onion>``."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from node.adapters import directory_schema
from node.adapters.sqlite import SQLiteDatabase
from node.core.config import Config
from node.core.crypto import StoreKey
from node.discovery.catalogs import verify_catalog
from node.discovery.directory import Directory, DirectoryLimits
from node.discovery.models import Source
from node.market import catalog as market_catalog
from node.market import profile
from node.market import reviews as market_reviews
from tests.unit.review_helpers import make

from .conftest import Node, make_node
from .pages import check_html

_ONION_LINK = re.compile(r'href="http://[a-z2-7]{56}\.onion/[^"]*"')
HOSTILE = '<script>alert(1)</script> "great" & <b>fast</b>'
# An escrow-type (P2WSH) address of the node's network (main, the default): the running node's review checks
# find it well formed and, with no Bitcoin Core to ask, leave the reviews "unchecked".
P2WSH = "bc1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qccfmv3"


async def _seed(data_dir: Path) -> tuple[str, str]:
    """A store whose catalog carries two reviews; gossip carries a third, old one the catalog leaves out."""
    now = int(time.time())
    key = StoreKey.generate()
    in_catalog = [
        make(key, rating=5, text=HOSTILE, now=now - 60, address=P2WSH),
        make(key, rating=4, now=now - 50, address=P2WSH),
    ]
    left_out = make(key, rating=1, text="never arrived", now=now - 3 * 86400, address=P2WSH)
    held = [market_reviews.stored(r) for r in in_catalog]
    snap = market_catalog.build(
        key, profile.validate({"name": "Reviewed"}), [], seq=now, now=now, ttl=86400, reviews=held
    )
    db = SQLiteDatabase(data_dir / "directory.sqlite", directory_schema.MIGRATIONS, synchronous="NORMAL")
    await db.open()
    try:
        directory = Directory(db, limits=DirectoryLimits.from_config(Config(data_dir=data_dir)))
        await directory.open()
        await directory.add_reviews([left_out])
        catalog = verify_catalog(snap.envelope_bytes, store=key.onion, now=now)
        await directory.index(catalog, source=Source.DIRECT, etag=None)
        await directory.set_chain(in_catalog[1], "failed: block has no such output")
        return key.onion, in_catalog[0].signer
    finally:
        await db.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, str, str]]:
    node = make_node(tmp_path_factory.mktemp("reviews"))
    with ThreadPoolExecutor(1) as pool:
        store, signer = pool.submit(lambda: asyncio.run(_seed(node.data_dir))).result(timeout=60)
    with open(node.data_dir / "pasar.toml", "a") as toml:
        toml.write("\ndirectory_public = true\n")
    node.start()
    try:
        yield node, store, signer
    finally:
        node.stop()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as resp:
        return int(resp.status), resp.read().decode()


def test_store_page_shows_rating_reviews_marks_and_the_flag(site):
    node, store, _ = site
    url = node.lock_info()["directory_url"]
    status, html = _get(f"{url}/directory/stores/{store}")
    assert status == 200
    check_html(_ONION_LINK.sub('href=""', html), "store page")  # a directory links stores' own onions
    assert "3.00 of 5 from 2 reviews" in html  # the failed one counts in neither rating nor flag
    assert "Omits reviews: its catalog leaves out 1 review that gossip carries" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<b>fast</b>" not in html
    assert "never arrived" in html and "not in the store" in html
    assert "Chain check failed: block has no such output" in html
    assert "Escrow payment not checked" in html


def test_api_gives_reviews_rating_and_omitted(site):
    node, store, signer = site
    status, body = _get(f"{node.admin_url}/api/v1/directory/stores/{store}", node.auth)
    got = json.loads(body)
    assert status == 200
    assert got["rating"] == {"count": 2, "mean": 3.0, "stars": [1, 0, 0, 0, 1]}
    assert got["omitted"] == 1
    by_signer = {r["signer"]: r for r in got["reviews"]}
    first = by_signer[signer]
    assert first["text"] == HOSTILE and first["rating"] == 5 and first["in_catalog"] and not first["gossip"]
    assert set(first) >= {"rating", "text", "listing", "order", "issued_at", "chain", "in_catalog", "gossip"}
    assert sorted(r["chain"] for r in got["reviews"]) == ["failed: block has no such output", "unchecked", "unchecked"]
