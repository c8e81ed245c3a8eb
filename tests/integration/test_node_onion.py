"""The node onion's listener: gossip, mirrors and thumbnails only; hostile bodies are 4xx JSON, never 5xx.

In process: ``create_node_app`` over a real Gossip and a real Directory (SQLite files on tmp_path)
behind a real aiohttp server on 127.0.0.1. Then a real ``pasar run --no-tor`` node whose node-onion
listener (``node_url`` in the data dir's lock) serves a catalog seeded into its ``directory.sqlite``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from node.adapters import directory_schema, gossip_schema
from node.adapters.loophttp import LoopbackHttp
from node.adapters.sqlite import SQLiteDatabase
from node.core.config import Config
from node.core.crypto import StoreKey
from node.core.errors import Unreachable
from node.discovery import gossip_wire
from node.discovery.catalogs import verify_catalog
from node.discovery.crawler import Crawler, CrawlLimits
from node.discovery.directory import Directory, DirectoryLimits
from node.discovery.gossip import Gossip, GossipLimits
from node.discovery.models import Source
from node.market import catalog, listings, profile
from node.web import appkeys, render
from node.web.directory_app import create_directory_app
from node.web.nodeonion import MAX_GOSSIP_BYTES, create_node_app

from .conftest import Node
from .pages import check_headers

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
THUMB = b"\xff\xd8\xff\xe0" + b"thumbnail" * 10


def signed_catalog(key: StoreKey, *, now: int, n: int = 3, name: str = "Heron Prints", image: str = "") -> bytes:
    """A real store catalog (market.catalog.build), as the store's own onion serves it."""
    items = listings.validate_new(
        [
            {
                "title": f"Heron print {i}",
                "description": f"A giclee print of a grey heron, number {i}",
                "kind": "physical",
                "price_sat": 1000 * (i + 1),
                "category": "Prints",
                "tags": ["birds"],
                "shipping": [{"name": "Post", "regions": ["WORLDWIDE"], "price_sat": 500}],
                "images": [image] if image and i == 0 else [],
            }
            for i in range(n)
        ],
        max_images=8,
        now=now,
    )
    prof = profile.validate({"name": name, "description": "Prints of water birds"})
    return catalog.build(key, prof, items, seq=now, now=now, ttl=7 * 86400).envelope_bytes


class Offline:
    async def exchange(self, peer: str, message: bytes) -> bytes:
        raise Unreachable("no peers in this test")


@dataclass
class Parts:
    gossip: Gossip
    directory: Directory
    store: str
    raw: bytes
    thumb_id: str


async def open_parts(data_dir: Path, *, now: int) -> tuple[Parts, list[SQLiteDatabase]]:
    config = Config(data_dir=data_dir)
    gdb = SQLiteDatabase(data_dir / "gossip.sqlite", gossip_schema.MIGRATIONS, synchronous="NORMAL")
    ddb = SQLiteDatabase(data_dir / "directory.sqlite", directory_schema.MIGRATIONS, synchronous="NORMAL")
    await gdb.open()
    await ddb.open()
    directory = Directory(ddb, limits=DirectoryLimits.from_config(config))
    await directory.open()
    gossip = Gossip(gdb, Offline(), me=None, limits=GossipLimits.from_config(config))
    await gossip.open()
    key = StoreKey.generate()
    thumb_id = hashlib.sha256(b"photo").hexdigest()
    raw = signed_catalog(key, now=now, image=thumb_id)
    await directory.index(verify_catalog(raw, store=key.onion, now=now), source=Source.DIRECT, etag=None)
    await directory.put_thumb(key.onion, thumb_id, THUMB)
    return Parts(gossip, directory, key.onion, raw, thumb_id), [gdb, ddb]


def holder(parts: Parts | None) -> web.Application:
    """What the node app reads from the admin app: discovery's parts, templates and stylesheet."""
    admin = web.Application()
    admin[appkeys.JINJA] = render.make_env(TEMPLATES)
    admin[appkeys.CSS] = (TEMPLATES / "static" / "style.css").read_bytes()
    if parts is not None:
        admin[appkeys.GOSSIP], admin[appkeys.DIRECTORY] = parts.gossip, parts.directory
    return admin


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[Parts]:
    opened, dbs = await open_parts(tmp_path, now=int(time.time()))
    yield opened
    for db in dbs:
        await db.close()


@pytest.fixture
async def client(parts: Parts) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(create_node_app(holder(parts)), host="127.0.0.1")) as c:
        yield c


def mirror_path(store: str) -> str:
    return f"/.well-known/pasar/mirror/{store}/catalog.json"


async def test_mirror_is_byte_identical_with_a_strong_etag(parts: Parts, client: TestClient) -> None:
    resp = await client.get(mirror_path(parts.store))
    assert resp.status == 200 and resp.content_type == "application/json"
    body = await resp.read()
    assert body == parts.raw
    assert verify_catalog(body, store=parts.store, now=int(time.time())).store == parts.store
    check_headers(resp)
    etag = resp.headers["ETag"]
    assert etag == f'"{hashlib.sha256(parts.raw).hexdigest()}"'  # strong: no W/
    again = await client.get(mirror_path(parts.store), headers={"If-None-Match": f'"other", {etag}'})
    assert again.status == 304 and await again.read() == b""
    stale = await client.get(mirror_path(parts.store), headers={"If-None-Match": '"other"'})
    assert stale.status == 200 and await stale.read() == parts.raw


async def test_unknown_or_malformed_mirrors_are_404_json(parts: Parts, client: TestClient) -> None:
    for path in (
        mirror_path(StoreKey.generate().onion),
        mirror_path("not-an-onion"),
        mirror_path(parts.store.upper()),
        f"/.well-known/pasar/mirror/{parts.store}/images/{'0' * 64}.thumb.jpg",
        f"/.well-known/pasar/mirror/{parts.store}/images/..%2f..%2fetc.thumb.jpg",
        f"/.well-known/pasar/mirror/{parts.store}/images/{parts.thumb_id.upper()}.thumb.jpg",
    ):
        resp = await client.get(path)
        assert resp.status == 404, path
        assert (await resp.json())["code"] == "not_found", path


async def test_thumbnail(parts: Parts, client: TestClient) -> None:
    resp = await client.get(f"/.well-known/pasar/mirror/{parts.store}/images/{parts.thumb_id}.thumb.jpg")
    assert resp.status == 200 and resp.content_type == "image/jpeg"
    assert await resp.read() == THUMB
    check_headers(resp)


async def test_a_valid_gossip_exchange_answers_json(parts: Parts, client: TestClient) -> None:
    message = gossip_wire.encode_request(None, None, [], [])
    resp = await client.post("/.well-known/pasar/gossip", data=message, headers={"Content-Type": "application/json"})
    assert resp.status == 200 and resp.content_type == "application/json"
    assert resp.headers["Cache-Control"] == "no-store"
    gossip_wire.parse_answer(await resp.read())
    check_headers(resp)


def message(**fields: object) -> bytes:
    return json.dumps({"v": 1, "from": None, "cursor": None, "push": [], "peers": [], **fields}).encode()


def hostile_bodies() -> list[tuple[str, bytes]]:
    onion = StoreKey.generate().onion
    return [
        ("empty", b""),
        ("not json", b"hello"),
        ("truncated", b'{"v": 1, "push": ['),
        ("not utf-8", b'{"v": 1, "from": "\xff\xfe"}'),
        ("json null", b"null"),
        ("a list", b"[]"),
        ("a number", b"1e999999"),
        ("nan", b'{"v": NaN}'),
        ("deep", b"[" * 100_000 + b"]" * 100_000),
        ("deep object", b'{"a":' * 5000 + b"1" + b"}" * 5000),
        ("wrong version", message(v=99)),
        ("unknown field", message(x=1)),
        ("bad from", message(**{"from": "1" * 56})),
        ("push not a list", message(push={})),
        ("too many peers", message(peers=[onion] * 500)),
        ("huge cursor", message(cursor={"epoch": "ab", "after": 2**80})),
        ("bad epoch", message(cursor={"epoch": "<script>", "after": 0})),
        ("duplicate keys", b'{"v": 1, "v": 1, "from": null, "cursor": null, "push": [], "peers": []}'),
        ("too many items", message(push=[{}] * 5000)),
    ]


async def test_hostile_gossip_bodies_are_4xx_json(client: TestClient) -> None:
    for name, body in hostile_bodies():
        resp = await client.post("/.well-known/pasar/gossip", data=body, headers={"Content-Type": "application/json"})
        assert 400 <= resp.status < 500, (name, resp.status, await resp.text())
        answer = await resp.json()
        assert set(answer) >= {"error", "code"}, (name, answer)


async def test_oversized_gossip_is_413_before_it_is_read(client: TestClient) -> None:
    big = b'{"v": 1, "push": ["' + b"a" * MAX_GOSSIP_BYTES + b'"]}'
    resp = await client.post("/.well-known/pasar/gossip", data=big, headers={"Content-Type": "application/json"})
    assert resp.status == 413 and (await resp.json())["code"] == "too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the cap still holds
        for _ in range(40):
            yield b"a" * 8192

    resp = await client.post("/.well-known/pasar/gossip", data=chunks())
    assert resp.status == 413 and (await resp.json())["code"] == "too_large"


async def test_no_admin_or_api_routes(client: TestClient) -> None:
    for method, path in [
        ("GET", "/"),
        ("GET", "/admin"),
        ("GET", "/login"),
        ("POST", "/login"),
        ("GET", "/stores"),
        ("GET", "/directory"),
        ("GET", "/api/v1/node"),
        ("GET", "/api/v1/stores"),
        ("POST", "/api/v1/peers"),
        ("GET", "/api/v1/search?q=heron"),
        ("GET", "/.well-known/pasar/catalog.json"),
        ("GET", "/.well-known/pasar/blocklist.json"),
    ]:
        resp = await client.request(method, path)
        assert resp.status == 404, (method, path, resp.status)
        check_headers(resp)
    assert (await client.get("/.well-known/pasar/gossip")).status == 405


async def test_host_check(parts: Parts) -> None:
    onion = StoreKey.generate().onion
    app = create_node_app(holder(parts), onion=onion)
    async with TestClient(TestServer(app, host="127.0.0.1")) as c:
        path = mirror_path(parts.store)
        port = c.server.port
        for host, status in [
            (f"127.0.0.1:{port}", 200),
            (f"localhost:{port}", 200),
            (f"{onion}.onion", 200),
            (f"{onion}.onion:80", 200),
            (f"{StoreKey.generate().onion}.onion", 421),  # another onion: not this listener's
            (f"rebound.example:{port}", 421),
            (f"127.0.0.1:{port + 1}", 421),
            ("", 421),
        ]:
            resp = await c.get(path, headers={"Host": host})
            assert resp.status == status, (host, resp.status)
        # A browser page elsewhere may not make a browser post gossip here.
        resp = await c.post(
            "/.well-known/pasar/gossip",
            data=gossip_wire.encode_request(None, None, [], []),
            headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"},
        )
        assert resp.status == 403


async def test_discovery_off_is_503_json() -> None:
    async with TestClient(TestServer(create_node_app(holder(None)), host="127.0.0.1")) as c:
        store = StoreKey.generate().onion
        for method, path in [
            ("POST", "/.well-known/pasar/gossip"),
            ("GET", mirror_path(store)),
            ("GET", f"/.well-known/pasar/mirror/{store}/images/{'0' * 64}.thumb.jpg"),
        ]:
            resp = await c.request(method, path)
            assert resp.status == 503, (path, resp.status)
            assert (await resp.json())["code"] == "unavailable"


# -- a real node --------------------------------------------------------------------------------


def seed_directory(data_dir: Path) -> tuple[str, bytes]:
    """Index one real signed catalog into the node's directory.sqlite before the node starts."""

    async def run() -> tuple[str, bytes]:
        parts, dbs = await open_parts(data_dir, now=int(time.time()))
        for db in dbs:
            await db.close()
        return parts.store, parts.raw

    return asyncio.run(run())


def test_real_node_serves_its_node_onion(running_node_with_directory: tuple[Node, str, bytes]) -> None:
    node, store, raw = running_node_with_directory
    node_url = node.lock_info().get("node_url")
    assert isinstance(node_url, str) and node_url.startswith("http://127.0.0.1:"), node.lock_info()

    async def check() -> None:
        async with aiohttp.ClientSession() as s:
            async with s.get(node_url + mirror_path(store)) as resp:
                assert resp.status == 200 and await resp.read() == raw
                check_headers(resp)
            for path in ("/", "/login", "/api/v1/node", "/api/v1/stores", "/directory"):
                async with s.get(node_url + path, headers=node.auth) as resp:
                    assert resp.status == 404, (path, resp.status)
            async with s.post(node_url + "/.well-known/pasar/gossip", data=b"{") as resp:
                assert 400 <= resp.status < 500 and "code" in await resp.json()
            async with s.get(node.admin_url + "/api/v1/node", headers=node.auth) as resp:
                info = await resp.json()
                assert len(info["onion"]) == 56 and info["listings_indexed"] >= 3, info

    asyncio.run(check())


@pytest.fixture
def running_node_with_directory(node_factory: Callable[[], Node]) -> tuple[Node, str, bytes]:
    node = node_factory()
    store, raw = seed_directory(node.data_dir)
    node.start()
    return node, store, raw


# -- the directory's thumbnails: fetched lazily, only for stores it lists ---------------------------


async def test_directory_thumbnails_are_fetched_only_for_listed_stores(parts: Parts) -> None:
    """Real Crawler over LoopbackHttp: a visitor cannot make the node fetch from an onion it doesn't list,
    nor fetch images no indexed listing shows."""
    hits: list[str] = []
    photo = hashlib.sha256(b"another photo").hexdigest()
    other = StoreKey.generate()  # an indexed store whose listing shows ``photo``, not fetched yet
    now = int(time.time())
    raw = signed_catalog(other, now=now, image=photo)
    await parts.directory.index(verify_catalog(raw, store=other.onion, now=now), source=Source.DIRECT, etag=None)

    async def image(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(body=THUMB, content_type="image/jpeg")

    store_app = web.Application()
    store_app.router.add_get("/images/{name}", image)
    stranger = StoreKey.generate().onion
    async with TestServer(store_app, host="127.0.0.1") as store_server:
        base = str(store_server.make_url("")).rstrip("/")
        http = LoopbackHttp(lambda onion: base if onion in (parts.store, other.onion, stranger) else None)
        crawler = Crawler(http, parts.directory, parts.gossip, limits=CrawlLimits())
        admin = holder(parts)
        admin[appkeys.CRAWLER], admin[appkeys.CONFIG] = crawler, Config(data_dir=Path("/nonexistent"))
        try:
            async with TestClient(TestServer(create_directory_app(admin), host="127.0.0.1")) as c:
                held = await c.get(f"/directory/thumbs/{parts.store}/{parts.thumb_id}.jpg")
                assert held.status == 200 and await held.read() == THUMB and hits == []
                unlisted = await c.get(f"/directory/thumbs/{parts.store}/{photo}.jpg")  # no listing of it shows it
                assert unlisted.status == 404 and hits == []
                fetched = await c.get(f"/directory/thumbs/{other.onion}/{photo}.jpg")
                assert fetched.status == 200 and await fetched.read() == THUMB
                assert hits == [f"/images/{photo}.thumb.jpg"]
                refused = await c.get(f"/directory/thumbs/{stranger}/{photo}.jpg")
                assert refused.status == 404 and hits == [f"/images/{photo}.thumb.jpg"]
                again = await c.get(f"/directory/thumbs/{other.onion}/{photo}.jpg")
                assert again.status == 200 and len(hits) == 1  # kept after the first fetch
                check_headers(again)
        finally:
            await http.close()
