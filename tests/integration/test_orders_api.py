"""Orders, disputes and moderation through the admin API, the admin pages and the CLI, on regtest.

Two nodes run in this process on loopback: a moderator node (its node onion
served on its own listener) and a vendor node that reaches it through
``LoopbackHttp``. Each signs with its own wallet of the real regtest
bitcoind (tests/regtest.py); the buyer signs with the "buyer" wallet outside
Pasar and uploads on the order page, as a Tor-Browser buyer does. The
watcher's rounds are run by the test (``watch_once``), waiting on conditions
with deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web

from node import operations as ops
from node.adapters import dbfiles, keyfiles
from node.adapters.loophttp import LoopbackHttp
from node.app import create_app
from node.app.payments import watch_wallet_name
from node.cli.backends import Backend, LocalBackend, RemoteBackend, open_backend
from node.core import config as cfg
from node.core.addresses import address_from_pubkey
from node.core.crypto import hash_password
from node.core.errors import ConfigError, PasarError, ValidationError, WalletError
from node.core.ports import Bitcoin, Http
from node.payments.pricing import CheckoutForm
from node.web import appkeys
from node.web.admin_orders import sales_chart
from tests.regtest import Regtest, RegtestError

from .conftest import PASSWORD, Node, cli_env, free_port
from .pages import check_headers, check_html

DEADLINE = 60.0
# The admin's session is stored under a str key (node/web/auth.py); aiohttp warns, and with the nodes
# in this process that warning would be an error (filterwarnings = error). Subprocess nodes never see it.
PRICE = 150_000


@dataclass
class Served:
    app: web.Application
    runner: web.AppRunner
    url: str
    data_dir: Path
    stopped: bool = False

    async def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.runner.cleanup()

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.app[appkeys.AUTH].api_token}"}

    async def api(self, method: str, path: str, body: object = None, status: int = 200) -> Any:
        async with aiohttp.ClientSession(headers=self.auth) as s:
            async with s.request(method, f"{self.url}/api/v1{path}", json=body) as r:
                answer = await r.json()
                assert r.status == status, (r.status, answer)
                return answer


def _toml(values: dict[str, object]) -> str:
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


def prepare(data_dir: Path, settings: dict[str, object]) -> cfg.Config:
    """An initialised data directory (password, token) whose pasar.toml holds ``settings``."""
    data_dir.mkdir(parents=True)
    dbfiles.initialise(data_dir)
    dbfiles.set_admin_password_hash(data_dir, hash_password(PASSWORD))
    (data_dir / "admin.token").write_text(secrets.token_urlsafe(32))
    (data_dir / "pasar.toml").write_text(_toml({"store_port_base": 0, **settings}))
    return cfg.load(data_dir, env={})


async def serve(config: cfg.Config, *, bitcoin: Bitcoin | None = None, http: Http | None = None) -> Served:
    app = create_app(config, bitcoin=bitcoin, http=http)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    app[appkeys.AUTH].set_port("127.0.0.1", port)
    return Served(app, runner, f"http://127.0.0.1:{port}", config.data_dir)


def node_wallet(config: cfg.Config) -> str:
    """The watch-only wallet the node (and the CLI on its data directory) uses: named by its node key."""
    return watch_wallet_name(keyfiles.load_or_create(config.data_dir / "node.key").onion)


def core_settings(regtest: Regtest, wallet: str) -> dict[str, object]:
    return {**regtest.config_overrides(wallet), "payment_poll_interval": 3600.0}


@dataclass
class Pair:
    vendor: Served
    moderator: Served
    moderator_onion: str
    store: str
    listing: str


async def open_pair(regtest: Regtest, tmp_path: Path) -> tuple[Pair, LoopbackHttp]:
    """A moderator node offering moderation, and a vendor node with a store that accepts it."""
    mod_config = prepare(tmp_path / "moderator", core_settings(regtest, "moderator"))
    mod_core = regtest.adapter("moderator", node_wallet(mod_config))
    moderator = await serve(mod_config, bitcoin=mod_core)
    onion = moderator.app[appkeys.MODERATION].onion
    node_url = moderator.app[appkeys.DISCOVERY_URLS]["node"]
    http = LoopbackHttp(lambda o: node_url if o == onion else None)
    vendor_config = prepare(tmp_path / "vendor", {**core_settings(regtest, "vendor"), "gossip": False})
    vendor_core = regtest.adapter("vendor", node_wallet(vendor_config))
    vendor = await serve(vendor_config, bitcoin=vendor_core, http=http)
    offer = await moderator.api("PATCH", "/moderation", {"enabled": True, "fee_percent": 2, "terms": "Fair."})
    assert offer == {"onion": onion, "enabled": True, "fee_percent": 2, "fee_sat": 0, "terms": "Fair."}
    store = (await vendor.api("POST", "/stores", {"name": "Tea"}, 201))["onion"]
    listing = {"title": "Tea", "price_sat": PRICE, "kind": "digital"}
    made = await vendor.api("POST", f"/stores/{store}/listings", listing, 201)
    moderators = await vendor.api("PATCH", f"/stores/{store}/moderators", {"moderators": [f"{onion}.onion"]})
    terms = [{"onion": onion, "fee_percent": 2, "fee_sat": 0, "terms": "Fair."}]
    assert moderators == {"store": store, "moderators": [onion], "moderator_terms": terms, "warnings": []}
    return Pair(vendor, moderator, onion, store, made["id"]), http


async def close_pair(pair: Pair, http: LoopbackHttp, regtest: Regtest) -> None:
    await pair.vendor.stop()
    await pair.moderator.stop()
    await http.close()
    for node in (pair.vendor, pair.moderator):  # keep the shared bitcoind light
        with contextlib.suppress(RegtestError):
            regtest.cli("unloadwallet", node_wallet(node.app[appkeys.CONFIG]), False)


@pytest.fixture
async def pair(regtest: Regtest, tmp_path: Path) -> AsyncIterator[Pair]:
    made, http = await open_pair(regtest, tmp_path)
    try:
        yield made
    finally:
        await close_pair(made, http, regtest)


async def place(pair: Pair, regtest: Regtest) -> tuple[str, str]:
    """A buyer's checkout (as the storefront form sends it); the order id and the buyer's token."""
    form = CheckoutForm(
        listing=pair.listing,
        moderator=pair.moderator_onion,
        buyer_pubkey=regtest.key("buyer"),
        refund_address=regtest.address("buyer"),
        ship_to="Jane, 1 Road",
    )
    order, token = await pair.vendor.app[appkeys.PAYMENTS].checkout(pair.store, form)
    return order.id, token


async def settle(node: Served, order_id: str, *states: str) -> dict[str, Any]:
    """Run watcher rounds until the order is in one of ``states`` (bounded)."""
    payments = node.app[appkeys.PAYMENTS]
    async with asyncio.timeout(DEADLINE):
        while True:
            await payments.watch_once()
            order = await node.api("GET", f"/orders/{order_id}")
            if order["state"] in states:
                return order
            await asyncio.sleep(0.1)


async def pay(pair: Pair, regtest: Regtest, order_id: str, sat: int | None = None) -> dict[str, Any]:
    order = await pair.vendor.api("GET", f"/orders/{order_id}")
    regtest.fund("buyer", order["escrow_address"], sat or order["amount_sat"])
    regtest.mine(1)
    return await settle(pair.vendor, order_id, "confirmed")


async def upload(pair: Pair, token: str, psbt: str) -> None:
    """The buyer's signed PSBT, pasted into the order page's form on the store's own listener."""
    base = pair.vendor.app[appkeys.LISTENERS][pair.store]
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{base}/order/{token}/psbt", data={"psbt": psbt}, allow_redirects=False) as r:
            assert r.status in (200, 303), await r.text()


async def test_release_through_the_api_after_the_buyer_signs(pair: Pair, regtest: Regtest):
    order_id, token = await place(pair, regtest)
    (listed,) = await pair.vendor.api("GET", "/orders")
    assert {k: listed[k] for k in ("id", "state", "amount_sat")} == {
        "id": order_id,
        "state": "awaiting_payment",
        "amount_sat": PRICE,
    }
    assert listed["escrow_address"].startswith("bcrt1q") and listed["moderator"] == pair.moderator_onion
    assert await pair.vendor.api("GET", "/orders?state=completed") == []
    bad = await pair.vendor.api("GET", "/orders?state=lost", status=422)
    assert "state" in bad["fields"]
    early = await pair.vendor.api("POST", f"/orders/{order_id}/accept", status=409)
    assert early["code"] == "conflict" and "awaiting payment" in early["error"]

    paid = await pay(pair, regtest, order_id)
    assert paid["paid_sat"] == PRICE and paid["missing_sat"] == 0 and paid["ship_to"] == "Jane, 1 Road"
    assert (await pair.vendor.api("POST", f"/orders/{order_id}/accept"))["state"] == "accepted"
    done = await pair.vendor.api("POST", f"/orders/{order_id}/fulfill", {"note": "tracking 42"})
    assert done["state"] == "fulfilled" and done["fulfillment_note"] == "tracking 42"
    pending = done["pending"]
    assert pending["action"] == "release" and pending["signed_by"] == ["vendor"]
    await upload(pair, token, regtest.sign("buyer", pending["psbt"]))
    sent = await pair.vendor.api("GET", f"/orders/{order_id}")  # broadcast: final once it has a confirmation
    said = re.fullmatch(
        r"release payout broadcast, txid ([0-9a-f]{64}), waiting for a confirmation", sent["history"][-1]["note"]
    )
    assert said is not None, sent["history"]
    txid = said[1]
    assert sent["state"] == "fulfilled" and regtest.in_mempool(txid) and sent["payouts"] == []
    regtest.mine(1)
    final = await settle(pair.vendor, order_id, "completed")
    assert final["pending"] is None and final["payouts"][0]["txid"] == txid
    assert [h["state"] for h in final["history"]][-1] == "completed"
    refused = await pair.vendor.api("POST", f"/orders/{order_id}/claim", status=409)
    assert refused["code"] == "conflict"
    dashboard = await admin_pages(pair.vendor, f"/orders/{order_id}", f"/orders?state=completed&store={pair.store}")
    assert "Sales, last 30 days" in dashboard and dashboard.count("<rect") == 30 and order_id in dashboard


async def admin_pages(node: Served, *paths: str) -> str:
    """Logs in through the form, checks each page (no script, security headers); the dashboard's HTML."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(node.url, cookie_jar=jar) as s:
        async with s.post("/login", data={"password": PASSWORD}, allow_redirects=False) as r:
            assert r.status == 303
        for path in ("/orders", "/disputes", "/moderation", *paths, "/"):
            async with s.get(path) as r:
                html = await r.text()
                assert r.status == 200, (path, html[:500])
                check_html(html, path, allow_loopback=True)
                check_headers(r)
    return html


async def test_dispute_decided_by_the_moderator_and_released_by_the_vendor(pair: Pair, regtest: Regtest):
    order_id, _token = await place(pair, regtest)
    await pay(pair, regtest, order_id)
    opened = await pair.vendor.api("POST", f"/orders/{order_id}/dispute", {"statement": "never paid for"})
    assert opened["state"] == "disputed"
    missing = await pair.vendor.api("POST", f"/orders/{order_id}/dispute", {}, status=422)
    assert "statement" in missing["fields"]
    (case,) = [c for c in await pair.moderator.api("GET", "/disputes") if c["order_id"] == order_id]
    assert case["state"] == "disputed" and case["statements"][0]["text"] == "never paid for"
    fee = case["moderator_sat"]
    assert fee == PRICE * 2 // 100
    wrong = await pair.moderator.api("POST", f"/disputes/{case['id']}/decide", {"buyer_sat": 1, "vendor_sat": 1}, 422)
    assert wrong["code"] == "invalid"
    vendor_sat = PRICE - fee - 50_000
    decided = await pair.moderator.api(
        "POST", f"/disputes/{case['id']}/decide", {"buyer_sat": 50_000, "vendor_sat": vendor_sat}
    )
    assert decided["state"] == "decided" and decided["psbt"]
    order = await settle(pair.vendor, order_id, "decided")
    assert order["pending"]["action"] == "split" and order["pending"]["signed_by"] == ["moderator"]
    sent = await pair.vendor.api("POST", f"/orders/{order_id}/release")
    assert sent["state"] == "decided" and "split payout broadcast" in sent["history"][-1]["note"]
    regtest.mine(1)
    resolved = await settle(pair.vendor, order_id, "resolved")
    roles = sorted((o["role"], o["amount_sat"] > 0) for o in resolved["payouts"][0]["outputs"])
    assert [r for r, _ in roles] == ["buyer", "moderator", "vendor"]


async def test_decline_refund_and_a_claim_too_early_says_from_which_block(pair: Pair, regtest: Regtest):
    order_id, token = await place(pair, regtest)
    await pay(pair, regtest, order_id)
    early = await pair.vendor.api("POST", f"/orders/{order_id}/claim", status=409)
    opens = re.search(r"block (\d+)", early["error"])
    assert opens is not None and int(opens[1]) > regtest.height() + 6000, early["error"]
    declined = await pair.vendor.api("POST", f"/orders/{order_id}/decline", {"reason": "out of tea"})
    assert declined["state"] == "declined" and declined["pending"]["action"] == "refund"
    await upload(pair, token, regtest.sign("buyer", declined["pending"]["psbt"]))
    assert (await pair.vendor.api("GET", f"/orders/{order_id}"))["state"] == "declined"  # until confirmed
    regtest.mine(1)
    await settle(pair.vendor, order_id, "refunded")
    assert (await pair.vendor.api("POST", "/orders/nope/accept", status=404))["code"] == "not_found"


async def test_the_stores_own_escrow_terms_and_its_moderators_terms_are_in_its_signed_catalog(
    pair: Pair, regtest: Regtest
):
    v, store, mod = pair.vendor, pair.store, pair.moderator_onion
    refused = await v.api("PATCH", f"/stores/{store}", {"escrow_timeout_blocks": 143, "accept_window": 60}, 422)
    assert set(refused["fields"]) == {"escrow_timeout_blocks", "accept_window"}
    await v.api("PATCH", f"/stores/{store}", {"escrow_timeout_blocks": 200, "accept_window": 7200})
    stranger = address_from_pubkey(bytes(32))
    answer = await v.api("PATCH", f"/stores/{store}/moderators", {"moderators": [mod, f"{stranger}.onion"]})
    assert answer["moderators"] == sorted([mod, stranger])
    assert answer["moderator_terms"] == [{"onion": mod, "fee_percent": 2, "fee_sat": 0, "terms": "Fair."}]
    (warning,) = answer["warnings"]
    assert stranger in warning and "did not answer" in warning
    await v.api("PATCH", f"/stores/{store}/moderators", {"moderators": ["nope"]}, 422)
    base = v.app[appkeys.LISTENERS][store]
    async with aiohttp.ClientSession() as s, s.get(f"{base}/.well-known/pasar/catalog.json") as r:
        profile = (await r.json())["body"]["profile"]
    assert (profile["escrow_timeout_blocks"], profile["accept_window"]) == (200, 7200)
    assert profile["moderator_terms"] == answer["moderator_terms"]

    order_id, _token = await place(pair, regtest)
    order = await pay(pair, regtest, order_id)
    assert order["timeout_blocks"] == 200 and "older(200)" in order["descriptor"]
    funded_at = next(h["at"] for h in order["history"] if h["state"] == "funded")
    assert order["accept_by"] == funded_at + 7200
    early = await v.api("POST", f"/orders/{order_id}/claim", status=409)
    opens = re.search(r"block (\d+)", early["error"])
    assert opens is not None and regtest.height() < int(opens[1]) <= regtest.height() + 200, early["error"]

    await v.stop()  # the CLI on the stopped node's data directory: nobody can be asked, all is still accepted
    done = await asyncio.to_thread(pasar, v.data_dir, "moderators", store, f"{mod}.onion")
    assert f"moderators of {store}.onion: {mod}.onion" in done.stdout


# -- the node without (or with the wrong) Bitcoin Core ---------------------------------------------
async def test_the_node_starts_with_core_down_and_checkout_says_paused(tmp_path: Path):
    config = prepare(
        tmp_path / "n", {"bitcoin_network": "regtest", "bitcoin_rpc_url": f"http://127.0.0.1:{free_port()}"}
    )
    node = await serve(config)
    try:
        assert await node.api("GET", "/orders") == []
        assert await node.app[appkeys.PAYMENTS].paused()
        assert (await node.api("GET", "/moderation"))["enabled"] is False
        dashboard = await admin_pages(node, "/orders?state=completed")
        assert "Checkout is closed: payments are paused" in dashboard and "No orders yet." in dashboard
    finally:
        await node.stop()


async def test_with_payments_off_the_node_runs_without_core(tmp_path: Path):
    node = await serve(prepare(tmp_path / "n", {"payments": False}))
    try:
        reason = await node.app[appkeys.PAYMENTS].paused()
        assert reason is not None and "off" in reason
        assert await node.api("GET", "/orders") == [] and await node.api("GET", "/disputes") == []
    finally:
        await node.stop()


async def test_core_on_another_chain_stops_the_start_naming_both(regtest: Regtest, tmp_path: Path):
    config = prepare(tmp_path / "n", {**core_settings(regtest, "vendor"), "bitcoin_network": "test"})
    app = create_app(config, bitcoin=regtest.adapter("vendor", f"pasar-watch-x-{uuid.uuid4().hex[:8]}"))
    runner = web.AppRunner(app)
    with pytest.raises(ConfigError) as exc:
        await runner.setup()
    await runner.cleanup()
    assert "'test'" in exc.value.message and "'regtest'" in exc.value.message


# -- the CLI, on the data directory of a stopped node ------------------------------------------------
def pasar(data_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "node", *args],
        env=cli_env(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert not check or proc.returncode == 0, proc.stderr
    return proc


async def test_the_cli_lists_shows_and_acts_on_orders_of_a_stopped_node(pair: Pair, regtest: Regtest):
    order_id, _token = await place(pair, regtest)
    await pay(pair, regtest, order_id)
    vendor_dir, moderator_dir = pair.vendor.data_dir, pair.moderator.data_dir
    await pair.vendor.stop()
    await pair.moderator.stop()
    listed = json.loads((await asyncio.to_thread(pasar, vendor_dir, "orders", "list", "--json")).stdout)
    assert [(o["id"], o["state"]) for o in listed] == [(order_id, "confirmed")]
    shown = (await asyncio.to_thread(pasar, vendor_dir, "orders", "show", order_id)).stdout
    assert f"order {order_id}" in shown and "ship to: Jane, 1 Road" in shown
    accepted = await asyncio.to_thread(pasar, vendor_dir, "orders", "accept", order_id)
    assert accepted.stdout == f"order {order_id}: accepted\n"
    again = await asyncio.to_thread(pasar, vendor_dir, "orders", "accept", order_id, check=False)
    assert again.returncode == 1 and "cannot accept" in again.stderr and "Traceback" not in again.stderr
    moderation = await asyncio.to_thread(pasar, moderator_dir, "moderation", "set", "--fee-sat", "500")
    assert "fee 2% + 500 sat" in moderation.stdout
    offer = json.loads((await asyncio.to_thread(pasar, moderator_dir, "moderation", "show", "--json")).stdout)
    assert offer["fee_sat"] == 500 and offer["enabled"] is True
    cases = json.loads((await asyncio.to_thread(pasar, moderator_dir, "disputes", "list", "--json")).stdout)
    assert [c["order_id"] for c in cases] == []  # keys given, nothing disputed
    offline = json.loads((await asyncio.to_thread(pasar, vendor_dir, "orders", "show", order_id, "--json")).stdout)
    running = Node(vendor_dir, free_port())  # the same commands through the running node's API
    await asyncio.to_thread(running.start)
    try:
        online = json.loads((await asyncio.to_thread(pasar, vendor_dir, "orders", "show", order_id, "--json")).stdout)
        listed = json.loads((await asyncio.to_thread(pasar, vendor_dir, "orders", "list", "--json")).stdout)
        again = await asyncio.to_thread(pasar, vendor_dir, "orders", "accept", order_id, check=False)
    finally:
        await asyncio.to_thread(running.stop)
    assert online == offline and listed[0]["state"] == "accepted"
    assert again.returncode == 1 and "cannot accept" in again.stderr


# -- pure parts: the chart, the inputs --------------------------------------------------------------
def test_the_sales_chart_scales_bars_to_the_best_day():
    days = [("2026-01-01", 0, 0), ("2026-01-02", 2, 1000), ("2026-01-03", 1, 1)]
    chart = sales_chart(days, width=300, height=100)
    assert [b.height for b in chart.bars] == [0, 99, 1]  # a sale is never drawn as nothing
    assert chart.bars[1].y == 1 and chart.total_orders == 3 and chart.total_sats == 1001
    assert (chart.first, chart.last, chart.max_sats) == ("2026-01-01", "2026-01-03", 1000)
    empty = sales_chart([("2026-01-01", 0, 0)])
    assert empty.bars[0].height == 0 and empty.max_sats == 0


def test_order_inputs_are_checked():
    from node.operations.payments import decision, moderators_of, state_filter, text_field

    with pytest.raises(ValidationError) as exc:
        decision({"buyer_sat": -1, "vendor_sat": True})
    assert set(exc.value.fields) == {"buyer_sat", "vendor_sat"}
    assert decision({"buyer_sat": 0, "vendor_sat": 5}) == (0, 5)
    assert text_field({"note": "  hi "}, "note") == "hi" and text_field({}, "note") == ""
    with pytest.raises(ValidationError):
        text_field({"statement": ""}, "statement", required=True)
    with pytest.raises(ValidationError):
        text_field(["x"], "note")
    with pytest.raises(ValidationError):
        moderators_of({"moderators": "abc"})
    assert state_filter("") is None and state_filter("completed") is not None


# -- every payment operation on both backends, without Bitcoin Core ------------------------------------
async def payment_operations(b: Backend, store: str) -> dict[str, object]:
    """Runs each payment operation once: reads and settings answer, actions on an unknown order are NotFound.

    tests/integration/test_operations.py runs it with the rest of the table on both backends.
    """
    p = ops.payments
    r: dict[str, object] = {
        "list_orders": await b.run(p.list_orders, p.OrderQuery(store=store)),
        "list_disputes": await b.run(p.list_disputes, ops.NoInput()),
        "set_moderation": await b.run(p.set_moderation, p.Body({"enabled": True, "fee_percent": 1})),
        "get_moderation": await b.run(p.get_moderation, ops.NoInput()),
        "set_store_moderators": await b.run(p.set_store_moderators, p.StoreBody(store, {"moderators": []})),
    }
    missing: list[tuple[ops.Operation[Any, Any], object]] = [(p.get_order, p.OrderRef("nope"))]
    missing += [(op, p.OrderBody("nope", {"statement": "x", "text": "x"})) for op in p.ORDER_ACTIONS]
    missing += [(p.decide_dispute, p.OrderBody("nope", {"buyer_sat": 1, "vendor_sat": 1}))]
    for op, inp in missing:
        with pytest.raises(PasarError) as exc:
            await b.run(op, inp)
        r[op.name] = {"error": type(exc.value).__name__, "code": exc.value.code}
    return r


async def test_each_payment_operation_answers_alike_on_the_data_dir_and_through_the_node(tmp_path: Path):
    config = prepare(
        tmp_path / "n", {"bitcoin_network": "regtest", "bitcoin_rpc_url": f"http://127.0.0.1:{free_port()}"}
    )
    await asyncio.to_thread(pasar, config.data_dir, "store", "create", "Shop")
    async with open_backend(config) as local:
        assert isinstance(local, LocalBackend)
        onion = await local.resolve("Shop")
        on_disk = await payment_operations(local, onion)
    running = Node(config.data_dir, free_port())
    await asyncio.to_thread(running.start)
    try:
        async with open_backend(config) as remote:
            assert isinstance(remote, RemoteBackend)
            through_api = await payment_operations(remote, onion)
    finally:
        await asyncio.to_thread(running.stop)
    assert set(on_disk) == {op.name for op in ops.payments.OPERATIONS}
    assert on_disk == through_api
    assert {v["error"] for k, v in on_disk.items() if isinstance(v, dict) and "error" in v} == {"NotFound"}


class Flaky:
    """Just enough of ``ports.Bitcoin`` for the start-up checks: down ``failures`` times, then on ``chain``."""

    def __init__(self, failures: int, chain: str) -> None:
        self.failures, self.chain_name, self.asked = failures, chain, 0

    async def chain(self) -> str:
        self.asked += 1
        if self.asked <= self.failures:
            raise WalletError("connection refused: is bitcoind running?")
        return self.chain_name


async def test_the_node_reconnects_to_core_and_a_wrong_chain_found_later_is_logged(caplog):
    from node.app.payments import check_chain, reconnect

    caplog.set_level(logging.INFO, logger="node.app.payments")
    up_later = Flaky(2, "regtest")
    assert await check_chain(cast(Bitcoin, up_later), "regtest") is False  # down at start: not fatal
    await asyncio.wait_for(reconnect(cast(Bitcoin, up_later), "regtest", first=0.01), DEADLINE)
    assert up_later.asked == 3 and "payments resume" in caplog.text
    wrong = Flaky(1, "main")
    await asyncio.wait_for(reconnect(cast(Bitcoin, wrong), "regtest", first=0.01), DEADLINE)
    assert "bitcoin_network is 'regtest'" in caplog.text and "'main' chain" in caplog.text
    with pytest.raises(ConfigError):
        await check_chain(cast(Bitcoin, Flaky(0, "signet")), "test")
