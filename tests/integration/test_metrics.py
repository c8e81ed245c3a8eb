"""``GET /metrics`` on a real node after real traffic, parsed with ``prometheus_client.parser``.

Two nodes in process (``create_app`` with every cleanup context, on temp data dirs): A is scraped, B
has a store A learns of by gossip. Traffic over real loopback HTTP: pages of A's own store, a gossip
push to A's node onion (one valid announcement of B's store, one with a broken signature, one that is
not an announcement), a gossip round of A with B, a crawl of B's store through A's API. With the
regtest bitcoind: an order placed on a storefront, and an RPC Core refuses.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from node.adapters import dbfiles
from node.adapters.loophttp import LoopbackHttp
from node.adapters.sqlite import SQLiteDatabase
from node.app import create_app
from node.app.payments import PARTS
from node.core import config as cfg
from node.core.crypto import StoreKey
from node.core.errors import StorageError, ValidationError, WalletError
from node.discovery import announce
from node.discovery.crawl_plan import CrawlProgress
from node.discovery.gossip import GOSSIP_PATH
from node.discovery.gossip_types import RoundStats
from node.discovery.models import AnnounceBody
from node.web import appkeys, middlewares
from node.web.auth import AdminAuth
from node.web.metrics import METRICS, Metrics, RequestMetrics, add_routes
from tests.regtest import Regtest

from .checkout_nodes import Shop, open_shop
from .test_checkout_web import place

LISTING = {
    "title": "Blue heron print",
    "price_sat": 40_000,
    "kind": "physical",
    "inventory": 5,
    "shipping": [{"name": "Post", "regions": ["WORLDWIDE"], "price_sat": 2_500}],
}
FAMILIES = {
    *("pasar_http_requests", "pasar_http_request_duration_seconds", "pasar_onion_state", "pasar_orders"),
    *("pasar_outbox_messages", "pasar_outbox_depth", "pasar_gossip_rounds", "pasar_gossip_exchanges"),
    *("pasar_gossip_accepted", "pasar_gossip_rejections", "pasar_gossip_peers", "pasar_crawl_passes"),
    *("pasar_crawl_stores", "pasar_crawl_listings_indexed", "pasar_info"),
}


def config(root: Path, **flags: str) -> cfg.Config:
    dbfiles.initialise(root)
    (root / "admin.token").write_text(secrets.token_urlsafe(32))
    values = {"store_port_base": "0", "node_port": "0", "gossip": "true", "payments": "false"}
    values.update(flags)
    return cfg.load(root, flags=values, env={})


@dataclass
class World:
    a: web.Application
    b: web.Application
    a_url: str  # A's admin listener
    a_store: str
    b_store: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.a[appkeys.AUTH].api_token}"}

    @property
    def scrape(self) -> dict[str, str]:  # the scrape-only token, as Prometheus sends it
        return {"Authorization": f"Bearer {(self.a[appkeys.CONFIG].data_dir / 'metrics.token').read_text().strip()}"}


async def start(stack: AsyncExitStack, app: web.Application, *, bind: bool = False) -> str:
    runner = web.AppRunner(app)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    if not bind:
        return ""
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    app[appkeys.AUTH].set_port("127.0.0.1", port)  # as serve() does
    return f"http://127.0.0.1:{port}"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with AsyncExitStack() as stack:
        b = create_app(config(tmp_path / "b"))
        await start(stack, b)

        def resolve(onion: str) -> str | None:
            if onion == b[appkeys.DISCOVERY].node_onion:
                return b[appkeys.DISCOVERY_URLS]["node"]
            return b[appkeys.LISTENERS].get(onion)

        http = LoopbackHttp(resolve)
        stack.push_async_callback(http.close)
        # Long intervals: the loops' first round and pass run at start, the test drives the rest.
        a = create_app(config(tmp_path / "a", gossip_interval="3600", crawl_interval="3600"), http=http)
        a_url = await start(stack, a, bind=True)
        stores = []
        for node, name in ((a, "Heron Prints"), (b, "Egret Posters")):
            market = node[appkeys.MARKET]
            onion = (await market.create_store({"name": name, "description": "Prints of water birds"}))["onion"]
            await market.add_listings(onion, [LISTING])
            stores.append(onion)
        yield World(a, b, a_url, stores[0], stores[1])


async def b_announcement(world: World) -> bytes:
    market, now = world.b[appkeys.MARKET], int(time.time())
    body = announce.body_of(await market.snapshot(world.b_store))
    return announce.build(await market.key(world.b_store), body, seq=now, now=now, ttl=3600).raw


def broken_signature() -> bytes:
    """Another store's announcement, its name changed after it was signed."""
    now = int(time.time())
    ann = announce.build(StoreKey.generate(), _body(), seq=now, now=now, ttl=3600)
    env = json.loads(ann.raw)
    env["body"]["name"] = "Someone Else"
    return json.dumps(env, sort_keys=True, separators=(",", ":")).encode()


def _body() -> AnnounceBody:
    return AnnounceBody(
        name="A Shop",
        description="things",
        tags=["wool"],
        ships_to=["WORLDWIDE"],
        listings=1,
        catalog_seq=1,
        catalog_hash="sha256:" + "0" * 64,
    )


async def traffic(world: World, s: aiohttp.ClientSession) -> None:
    store_url = world.a[appkeys.LISTENERS][world.a_store]
    for path in ("/", "/", "/search?q=heron", "/nothing-here"):
        async with s.get(store_url + path) as r:
            assert r.status in (200, 404)
    push = [await b_announcement(world), broken_signature(), b'{"type":"pasar.nonsense"}']
    message = b'{"v":1,"from":null,"cursor":"head","peers":[],"push":[' + b",".join(push) + b"]}"
    async with s.post(world.a[appkeys.DISCOVERY_URLS]["node"] + GOSSIP_PATH, data=message) as r:
        assert r.status == 200, await r.text()
    peer = {"onion": world.b[appkeys.DISCOVERY].node_onion}
    async with s.post(f"{world.a_url}/api/v1/peers", json=peer, headers=world.auth) as r:
        assert r.status == 201, await r.text()
    stats = await world.a[appkeys.GOSSIP].round()
    assert stats.succeeded == 1, stats
    async with s.post(f"{world.a_url}/api/v1/crawl", headers=world.auth) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["indexed"] >= 1


def samples(text: str) -> dict[str, list[Sample]]:
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(found: dict[str, list[Sample]], family: str, sample: str, **labels: str) -> float:
    matching = [s.value for s in found[family] if s.name == sample and labels.items() <= s.labels.items()]
    assert len(matching) == 1, (family, sample, labels, found.get(family))
    return matching[0]


async def test_metrics_parse_and_count_real_traffic(world: World) -> None:
    async with aiohttp.ClientSession() as s:
        await traffic(world, s)
        async with s.get(f"{world.a_url}/metrics", headers=world.scrape) as r:
            assert r.status == 200, await r.text()
            assert r.headers["Content-Type"].startswith("text/plain; version=")
            text = await r.text()
    found = samples(text)
    assert set(found) >= FAMILIES, sorted(set(found))
    req = "pasar_http_requests_total"
    home = value(found, "pasar_http_requests", req, listener="store", route="home", method="GET", status="200")
    assert home == 2
    assert value(found, "pasar_http_requests", req, listener="store", route="search", status="200") == 1
    assert value(found, "pasar_http_requests", req, listener="store", route="(none)", status="404") == 1
    assert value(found, "pasar_http_requests", req, listener="node", route="gossip", status="200") == 1
    assert value(found, "pasar_http_requests", req, listener="admin", route="api-add-peer", status="201") == 1
    assert not any("/nothing-here" in str(s.labels) for s in found["pasar_http_requests"])  # never a raw path
    hist = "pasar_http_request_duration_seconds"
    assert value(found, hist, hist + "_count", listener="store", route="home") == 2
    assert value(found, hist, hist + "_bucket", listener="store", route="home", le="+Inf") == 2
    # Without tor every onion is served locally.
    onions = {(s.labels["onion"], s.labels["role"]) for s in found["pasar_onion_state"] if s.value == 1}
    assert (world.a_store, "store") in onions and (world.a[appkeys.DISCOVERY].node_onion, "node") in onions
    assert {s.labels["state"] for s in found["pasar_onion_state"] if s.value == 1} == {"local"}
    assert value(found, "pasar_gossip_accepted", "pasar_gossip_accepted_total", direction="pushed") == 1
    rejections = "pasar_gossip_rejections_total"
    assert value(found, "pasar_gossip_rejections", rejections, direction="pushed", reason="bad_signature") == 1
    assert value(found, "pasar_gossip_rejections", rejections, direction="pushed", reason="invalid") == 1
    assert value(found, "pasar_gossip_rounds", "pasar_gossip_rounds_total") >= 1
    assert value(found, "pasar_gossip_exchanges", "pasar_gossip_exchanges_total", result="succeeded") >= 1
    assert value(found, "pasar_crawl_stores", "pasar_crawl_stores_total", result="indexed") == 1
    assert value(found, "pasar_crawl_listings_indexed", "pasar_crawl_listings_indexed_total") >= 1
    assert value(found, "pasar_crawl_passes", "pasar_crawl_passes_total") >= 1
    assert value(found, "pasar_orders", "pasar_orders", state="awaiting_payment") == 0  # payments off: none
    assert value(found, "pasar_outbox_depth", "pasar_outbox_depth") == 0


async def test_metrics_need_the_scrape_token_and_only_the_admin_serves_them(world: World) -> None:
    token = world.a[appkeys.CONFIG].data_dir / "metrics.token"
    assert token.stat().st_mode & 0o777 == 0o600  # written at start for a data dir `pasar init` made before
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{world.a_url}/metrics", allow_redirects=False) as r:
            assert r.status == 401, r.status
        wrong = {"Authorization": "Bearer " + "x" * 43}
        # A wrong token, and the admin API token: monitoring never needs the node's master key.
        for headers in (wrong, world.auth):
            async with s.get(f"{world.a_url}/metrics", headers=headers, allow_redirects=False) as r:
                assert r.status == 401
        async with s.get(f"{world.a_url}/metrics", headers=world.scrape) as r:
            assert r.status == 200
        for url in (world.a[appkeys.LISTENERS][world.a_store], world.a[appkeys.DISCOVERY_URLS]["node"]):
            async with s.get(url + "/metrics", headers=world.scrape) as r:
                assert r.status == 404


async def test_the_scrape_token_opens_nothing_else(world: World) -> None:
    async with aiohttp.ClientSession() as s:
        for method, path in (("GET", "/api/v1/stores"), ("POST", "/api/v1/backup"), ("POST", "/api/v1/peers")):
            async with s.request(method, world.a_url + path, headers=world.scrape, json={}) as r:
                assert r.status == 401, (method, path, r.status)
        async with s.get(world.a_url + "/", headers=world.scrape, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/login"  # no session either


async def test_an_order_and_a_refused_rpc_show_in_the_vendors_metrics(tmp_path: Path, regtest: Regtest) -> None:
    async with open_shop(tmp_path, regtest) as shop:
        await place(shop, regtest)
        bitcoin = shop.vendor[PARTS].bitcoin
        assert bitcoin is not None
        # Answers the adapter handles are not errors: the wallets loaded at start, a bad descriptor (the
        # caller's form error), a transaction not in the wallet, an unknown block.
        with pytest.raises(ValidationError):
            await bitcoin.watch("wsh(not-a-key)")
        assert await bitcoin.tx_confirmations("ab" * 32) is None
        assert await bitcoin.tx_block("ab" * 32) is None
        assert await bitcoin.output_at("ab" * 32, 0, "zz") is None
        handled = await scrape(shop)
        # A refusal that reaches the caller is one.
        with pytest.raises(WalletError):
            await bitcoin.broadcast("00")
        found = await scrape(shop)
    assert value(found, "pasar_orders", "pasar_orders", state="awaiting_payment") == 1
    req = "pasar_http_requests_total"
    assert value(found, "pasar_http_requests", req, listener="store", route="checkout", status="303") == 1
    errors, calls = "pasar_bitcoin_rpc_errors_total", "pasar_bitcoin_rpc_calls_total"
    assert not [s for s in handled["pasar_bitcoin_rpc_errors"] if s.name == errors and s.value], handled
    assert value(found, "pasar_bitcoin_rpc_errors", errors, method="sendrawtransaction") == 1
    assert sum(s.value for s in found["pasar_bitcoin_rpc_errors"] if s.name == errors) == 1
    assert value(found, "pasar_bitcoin_rpc_calls", calls, method="loadwallet") >= 1
    assert value(found, "pasar_bitcoin_rpc_calls", calls, method="getdescriptorinfo") >= 1


async def scrape(shop: Shop) -> dict[str, list[Sample]]:
    """The vendor's metrics as ``GET /metrics`` renders them (its admin app is not bound to a port here)."""
    metrics = shop.vendor[METRICS]
    await metrics.refresh()
    return samples(generate_latest(metrics.registry).decode())


async def test_a_file_response_is_counted_with_the_status_sent(tmp_path: Path) -> None:
    """An image answer's 304 (revalidation), 206 (range) and 416 (bad range) are decided as it is sent."""
    image = tmp_path / "heron.jpg"
    image.write_bytes(b"x" * 5000)

    async def noop() -> None:
        return None

    async def serve_image(request: web.Request) -> web.FileResponse:
        return web.FileResponse(image)

    app = web.Application(middlewares=[middlewares.errors])
    app.on_response_prepare.append(middlewares.admin_headers)
    app[appkeys.AUTH] = AdminAuth(password_hash=None, api_token="t" * 43)
    registry = CollectorRegistry()
    add_routes(app, Metrics(registry, RequestMetrics(registry), noop, token="m" * 43))
    app.router.add_get("/image", serve_image, name="image")
    async with AsyncExitStack() as stack:
        runner = web.AppRunner(app)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/image"
        async with aiohttp.ClientSession() as s:
            async with s.get(url) as r:
                assert r.status == 200
                etag = r.headers["ETag"]
            for headers, status in (({"If-None-Match": etag}, 304), ({"Range": "bytes=0-9"}, 206)):
                async with s.get(url, headers=headers) as r:
                    assert r.status == status
            async with s.get(url, headers={"Range": "bytes=9000-9999"}) as r:
                assert r.status == 416
    found = samples(generate_latest(registry).decode())
    counted = {s.labels["status"]: s.value for s in found["pasar_http_requests"] if s.name.endswith("_total")}
    assert counted == {"200": 1, "304": 1, "206": 1, "416": 1}


async def test_the_last_crawl_stays_while_a_pass_runs(world: World) -> None:
    crawler = world.a[appkeys.CRAWLER]
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{world.a_url}/api/v1/crawl", headers=world.auth) as r:
            assert r.status == 200, await r.text()
    ended = crawler.progress.finished_at
    assert ended is not None
    crawler.progress = CrawlProgress(running=True, started_at=ended + 1)  # what a pass sets as it starts
    found = await scrape_app(world.a)
    last = "pasar_crawl_last_pass_timestamp_seconds"
    assert value(found, last, last) == ended


async def test_a_failing_read_leaves_its_family_out_and_is_counted(world: World) -> None:
    mailbox = world.a[appkeys.MESSAGES]
    db = mailbox._db
    assert isinstance(db, SQLiteDatabase)
    await db.close()  # as while the node stops: reads now raise StorageError
    with pytest.raises(StorageError):
        await mailbox.counts()
    found = await scrape_app(world.a)
    assert "pasar_outbox_messages" not in found and "pasar_outbox_depth" not in found
    assert "pasar_gossip_peers" in found and "pasar_onion_state" in found  # the rest is still there
    failed = "pasar_metrics_refresh_errors"
    assert value(found, failed, failed + "_total", part="outbox") == 1
    assert value(found, failed, failed + "_total", part="gossip") == 0


def test_gossip_totals_keep_a_round_that_raises_and_stems_between_rounds() -> None:
    totals = RoundStats()
    with pytest.raises(RuntimeError), totals.adding() as stats:
        stats.failed += 1
        raise RuntimeError("a bug mid-round")
    with totals.adding(rounds=0) as stems:  # stems sent on their own due time, between rounds
        stems.stems += 1
    assert (totals.rounds, totals.failed, totals.stems) == (1, 1, 1)


async def scrape_app(app: web.Application) -> dict[str, list[Sample]]:
    metrics = app[METRICS]
    await metrics.refresh()
    return samples(generate_latest(metrics.registry).decode())


def test_pasar_init_writes_the_scrape_token_and_renews_it_on_demand(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASAR_")}
    env |= {"PASAR_DATA_DIR": str(tmp_path / "node"), "PASAR_ADMIN_PASSWORD": "correct horse battery"}

    def init(*flags: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "node", "init", *flags], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "metrics.token" in init()
    path = tmp_path / "node" / "metrics.token"
    first = path.read_text().strip()
    assert path.stat().st_mode & 0o777 == 0o600 and len(first) >= 32
    assert first != (tmp_path / "node" / "admin.token").read_text().strip()
    init()
    assert path.read_text().strip() == first  # kept by a second init
    init("--new-metrics-token")
    assert path.read_text().strip() != first
