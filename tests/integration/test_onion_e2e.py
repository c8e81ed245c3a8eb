"""End to end over a private Tor network on 127.0.0.1 (node/testnet/).

Node A runs its own (embedded) tor that joins the private network and hosts
two stores; node B attaches to a tor the harness started (the "system tor"
path) and hosts one. A buyer's tor fetches every storefront and signed
catalog by its real ``.onion`` address, through ``node.adapters.net``.

Waits are on conditions, with deadlines that only a failure runs into. After a
store's tor restarts or its descriptor changes, the buyer's tor still holds the
old descriptor (measured under load: it kept introducing itself at the dead
tor's introduction points, which still acked, for ~80 s before refetching).
So the tests wait until the buyer's tor holds a descriptor newer than the one
it had (``Buyer.fresh_descriptor``), fetching it from every HSDir, and then use
new circuits (``TorHttp.forget``); ``fetch`` does both again after a failure
(``TorHttp.get`` retries, bounded in count and time, on new circuits).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import stem.control
from aiohttp_socks import ProxyError

from node.adapters.net import TorHttp, onion_of
from node.adapters.tor import Tor, TorSettings
from node.core import envelope
from node.core.config import Config
from node.core.errors import TorError, Unreachable
from node.market.catalog import CATALOG_TYPE
from node.testnet import ClientTor, TestNet
from node.testnet.tools import log_tail

from .conftest import Node, make_node

PUBLISH_TIMEOUT = 90.0
FETCH_DEADLINE = 180.0  # a fetch retries this long; only a failure comes near it
FETCH_ATTEMPTS = 400  # at 0.5 s pauses more than fit in FETCH_DEADLINE: the deadline ends a failing fetch
FRESH_TIMEOUT = 120.0  # for the buyer's tor to hold a newer descriptor
REFETCH_EVERY = 5.0
# Per attempt; a 15 s sock_connect (the whole SOCKS handshake: descriptor, introduction,
# rendezvous) was not enough on a loaded 2-core machine.
ATTEMPT_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=30)
pytestmark = pytest.mark.slow


def api(node: Node, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(node.admin_url + path, data=data, method=method, headers=node.auth)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def wait_published(node: Node, onions: list[str], timeout: float = PUBLISH_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    status: dict[str, str] = {}
    while time.monotonic() < deadline:
        status = {s["onion"]: s["status"] for s in api(node, "GET", "/api/v1/stores")}
        if all(status.get(o) == "published" for o in onions):
            return
        time.sleep(0.25)
    raise AssertionError(f"not published within {timeout}s: {status}\n{node.read_log()}")


def wait_reconnected(node: Node, before: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while api(node, "GET", "/api/v1/tor")["reconnects"] <= before:
        assert time.monotonic() < deadline, f"node never noticed tor going away\n{node.read_log()}"
        time.sleep(0.1)


@dataclass
class Buyer:
    """The buyer's tor and an HTTP client through it."""

    tor: ClientTor
    hsdirs: list[str]
    http: TorHttp

    def control(self) -> stem.control.Controller:
        controller = stem.control.Controller.from_port("127.0.0.1", self.tor.control_port)
        controller.authenticate()
        return controller

    def revision(self, onion: str) -> int:
        """Revision counter of the descriptor of ``onion`` this tor has cached (-1: none)."""
        with self.control() as controller:
            try:
                text = controller.get_info(f"hs/client/desc/id/{onion}")
            except stem.ControllerError:
                return -1
        match = re.search(r"^revision-counter (\d+)$", text, re.M)
        return int(match.group(1)) if match else -1

    def refetch(self, onion: str) -> None:
        """Ask every HSDir for the descriptor now; tor keeps the newest it gets, never an older one."""
        servers = " ".join(f"SERVER={fp}" for fp in self.hsdirs)
        with self.control() as controller:
            reply = controller.msg(f"HSFETCH {onion} {servers}")
        assert reply.is_ok(), str(reply)

    async def fresh_descriptor(self, onion: str, *, newer_than: int, timeout: float = FRESH_TIMEOUT) -> int:
        """Wait until this tor holds a descriptor of ``onion`` other than revision ``newer_than``.

        Other, not higher: revision counters start again low when a new shared-random period
        begins (every few minutes on the private network), so a newer descriptor can carry a
        lower number than the old one.
        """
        deadline, asked = time.monotonic() + timeout, -REFETCH_EVERY
        while (revision := self.revision(onion)) in (newer_than, -1):
            now = time.monotonic()
            if now > deadline:
                raise AssertionError(
                    f"the buyer's tor got no descriptor of {onion} newer than revision {newer_than} "
                    f"within {timeout:.0f}s (has {revision})\n{log_tail(self.tor.data_dir, 30)}"
                )
            if now - asked >= REFETCH_EVERY:
                self.refetch(onion)
                asked = now
            await asyncio.sleep(0.25)
        return revision


async def fetch(buyer: Buyer, url: str, *, deadline: float = FETCH_DEADLINE) -> tuple[int, bytes]:
    """GET through tor, retrying until ``deadline`` on new circuits with a refetched descriptor."""
    try:
        reply = await buyer.http.get(
            url,
            deadline=deadline,
            attempts=FETCH_ATTEMPTS,
            pauses=(0.5,),  # retry often: a fresh descriptor may arrive at any moment
            # an old descriptor names introduction points that are gone
            before_retry=lambda: buyer.refetch(onion_of(url)),
        )
    except Unreachable as exc:
        raise AssertionError(f"{exc.message}\n{log_tail(buyer.tor.data_dir, 30)}") from exc
    return reply.status, reply.body


@pytest.fixture(scope="module")
def buyer_tor(tornet: TestNet) -> Iterator[ClientTor]:
    client = tornet.start_client("buyer")
    yield client
    tornet.stop_client(client)


@pytest.fixture(scope="module")
def merchants(tornet: TestNet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("merchants")
    a, b = make_node(base / "a"), make_node(base / "b")
    a.run_args = ["--tor-extra-torrc", str(tornet.root / "member.torrc")]
    b_tor = tornet.start_client("merchant-b")
    b.run_args = ["--tor-control", f"127.0.0.1:{b_tor.control_port}"]

    def create(node: Node, name: str) -> str:
        return node.cli("store", "create", name, PASAR_STORE_PORT_BASE="0").stdout.strip().removesuffix(".onion")

    stores = {"a1": create(a, "Alpha Books"), "a2": create(a, "Alpha Tea"), "b1": create(b, "Beta Tools")}
    a.cli(
        "listing",
        "add",
        "--store",
        stores["a1"],
        "--title",
        "A field guide",
        "--price-sat",
        "25000",
        "--kind",
        "digital",
    )
    started = time.monotonic()
    a.start()
    b.start()
    try:
        wait_published(a, [stores["a1"], stores["a2"]])
        wait_published(b, [stores["b1"]])
        yield {"a": a, "b": b, "b_tor": b_tor, "stores": stores, "published_after": time.monotonic() - started}
    finally:
        a.stop()
        b.stop()
        tornet.stop_client(b_tor)


@pytest.fixture
async def buyer(buyer_tor: ClientTor, tornet: TestNet) -> AsyncIterator[Buyer]:
    client = TorHttp(("127.0.0.1", buyer_tor.socks_port), timeout=ATTEMPT_TIMEOUT)
    yield Buyer(buyer_tor, tornet.hsdir_fingerprints(), client)
    await client.close()


async def test_every_store_is_reachable_by_its_onion_and_its_catalog_verifies(merchants, buyer):
    for name, onion in merchants["stores"].items():
        status, body = await fetch(buyer, f"http://{onion}.onion/")
        assert status == 200 and b"<script" not in body, name
        status, body = await fetch(buyer, f"http://{onion}.onion/.well-known/pasar/catalog.json")
        assert status == 200
        env = envelope.open_(envelope.loads(body), now=int(time.time()), expected_type=CATALOG_TYPE)
        assert env["store"] == onion
    status, body = await fetch(buyer, f"http://{merchants['stores']['a1']}.onion/")
    assert b"A field guide" in body
    tor_state = api(merchants["a"], "GET", "/api/v1/tor")  # bootstrap progress comes from tor's events
    assert tor_state["mode"] == "embedded" and tor_state["bootstrap"] == 100 and tor_state["summary"] == "Done"


async def test_the_admin_is_not_reachable_through_any_onion(merchants, buyer):
    for onion in merchants["stores"].values():
        for path in ("/login", "/api/v1/stores", "/stores", "/api/v1/tor", "/logout"):
            status, body = await fetch(buyer, f"http://{onion}.onion{path}")
            assert status == 404, (path, status)
            assert b"password" not in body.lower() and b"csrf" not in body.lower()


async def test_the_onion_comes_back_after_its_tor_restarts(merchants, buyer, tornet):
    b, onion = merchants["b"], merchants["stores"]["b1"]
    before, revision = api(b, "GET", "/api/v1/tor"), buyer.revision(onion)
    assert before["mode"] == "system" and before["state"] == "connected"
    merchants["b_tor"] = tornet.restart_client(merchants["b_tor"])
    wait_reconnected(b, before["reconnects"])
    wait_published(b, [onion])
    await buyer.fresh_descriptor(onion, newer_than=revision)  # the old one names the old tor's intro points
    await buyer.http.forget(f"http://{onion}.onion/")  # its rendezvous circuit died with that tor
    assert (await fetch(buyer, f"http://{onion}.onion/"))[0] == 200

    a, a_onion = merchants["a"], merchants["stores"]["a2"]
    before, revision = api(a, "GET", "/api/v1/tor"), buyer.revision(a_onion)
    assert before["mode"] == "embedded"
    tor_pid = int((a.data_dir / "tor" / "tor.pid").read_text())
    os.kill(tor_pid, signal.SIGKILL)  # the node's own tor: the node starts a new one
    wait_reconnected(a, before["reconnects"])
    wait_published(a, [a_onion])
    assert int((a.data_dir / "tor" / "tor.pid").read_text()) != tor_pid
    await buyer.fresh_descriptor(a_onion, newer_than=revision)
    await buyer.http.forget(f"http://{a_onion}.onion/")
    assert (await fetch(buyer, f"http://{a_onion}.onion/"))[0] == 200


async def test_an_invite_only_store_needs_its_client_key(merchants, buyer):
    b, onion = merchants["b"], merchants["stores"]["b1"]
    url, revision = f"http://{onion}.onion/", buyer.revision(onion)
    options = api(b, "PATCH", f"/api/v1/stores/{onion}/access", {"invite_only": True})
    try:
        assert options["invite_only"] and len(options["clients"]) == 1  # a first key is made
        wait_published(b, [onion])
        revision = await buyer.fresh_descriptor(onion, newer_than=revision)
        client = api(b, "POST", f"/api/v1/stores/{onion}/clients", {"name": "alice"})
        assert client["auth_private"] == f"{onion}:descriptor:x25519:{client['private']}"
        wait_published(b, [onion])
        await buyer.fresh_descriptor(onion, newer_than=revision)  # the one that names alice's key
        for _ in range(3):  # tor has the descriptor but cannot decrypt it: refused at once, not a timeout
            await buyer.http.forget(url)
            with pytest.raises(ProxyError):
                async with buyer.http.session(url).get(url):
                    pass
        with buyer.control() as controller:
            reply = controller.msg(f"ONION_CLIENT_AUTH_ADD {onion} x25519:{_b64_private(client['private'])}")
            assert reply.content()[0][0] in ("250", "251", "252"), str(reply)  # 252: decrypted the cached one
        assert (await fetch(buyer, url))[0] == 200
    finally:
        api(b, "PATCH", f"/api/v1/stores/{onion}/access", {"invite_only": False})


def _b64_private(b32: str) -> str:
    import base64

    raw = base64.b32decode(b32 + "=" * (-len(b32) % 8))
    return base64.b64encode(raw).decode()


async def test_a_socks_port_given_as_control_port_is_named(buyer_tor, tmp_path):
    tor = Tor(TorSettings.from_config(Config(data_dir=tmp_path, tor_control=f"127.0.0.1:{buyer_tor.socks_port}")))
    try:
        with pytest.raises(TorError, match="is tor's SOCKS port, not its control port"):
            await tor.start(on_lost=lambda: None, on_descriptor=lambda *a: None, on_bootstrap=lambda *a: None)
    finally:
        await tor.close()


async def test_a_store_created_while_the_node_runs_is_published(merchants, buyer):
    b = merchants["b"]
    created = api(b, "POST", "/api/v1/stores", {"name": "Beta Late"})
    assert created["status"] in ("starting", "published")
    wait_published(b, [created["onion"]])
    status, body = await fetch(buyer, f"http://{created['onion']}.onion/.well-known/pasar/catalog.json")
    env = envelope.open_(envelope.loads(body), now=int(time.time()), expected_type=CATALOG_TYPE)
    assert status == 200 and env["store"] == created["onion"] and env["body"]["profile"]["name"] == "Beta Late"
