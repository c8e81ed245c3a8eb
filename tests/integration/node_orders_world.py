"""The world of the node-to-node order tests and benchmark: three real ``pasar run`` nodes on the private
Tor network (node/testnet/) and one regtest bitcoind with a wallet per party.

(Helper F's harness; helper B's in-process kit is node_orders_vendor_kit.py.)

- vendor: one store with one physical listing (stock, one shipping option), accepting the third node as
  moderator; Bitcoin Core wallet "vendor".
- buyer: no store; its directory crawls the vendor's store (gossip seed: the vendor's node); it orders,
  pays and signs from wallet "buyer".
- third: the moderator (an offer, wallet "moderator") and a directory (seeds: vendor and buyer) that must
  show the buyer's review.

Each node talks to its own client tor of the network (``--tor-control``), started here and stopped here
by PID: a node killed or stopped leaves its tor running, so a restart takes seconds, not a tor bootstrap.
A stopped vendor node is offline all the same (its onions go with its control connection).

Every wait is on a condition with a bounded deadline; a timeout shows the nodes' logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.testnet import ClientTor, TestNet
from tests.regtest import Regtest

from .conftest import Node, make_node

__all__ = [
    "DELIVERED", "PRICE", "SHIPPING", "STOCK", "ApiError", "Node", "World", "all_delivered", "api",
    "bitcoin_flags", "build", "deliveries", "logs", "message_rows", "running_world", "start", "stop",
    "wait_crawled", "wait_for",
]  # fmt: skip

PRICE, SHIPPING, STOCK = 40_000, 2_000, 1_000
SHIP_OPTION = "Post"
FEE_SAT, FEE_PERCENT = 500, 1
TOR_TIMEOUT = 420.0  # onion descriptors + first circuits on a busy 2-core machine
FAST_DISCOVERY = ["--gossip-interval", "5", "--crawl-interval", "5"]
FAST_PAYMENTS = ["--payment-poll-interval", "1", "--escrow-timeout-blocks", "144", "--confirmations", "1"]
DELIVERED = "delivered"


class ApiError(AssertionError):
    def __init__(self, status: int, body: str, what: str) -> None:
        super().__init__(f"{what}: HTTP {status}: {body[:2000]}")
        self.status, self.body = status, body


def api(node: Node, method: str, path: str, body: Any = None, *, timeout: float = 60) -> Any:
    """One admin API call; an HTTP error raises ``ApiError`` with the node's answer."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(node.admin_url + path, data=data, method=method, headers=node.auth)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        raise ApiError(exc.code, exc.read().decode(errors="replace"), f"{method} {path}") from None
    return json.loads(raw) if raw else None


def logs(nodes: list[Node], chars: int = 6000) -> str:
    out = []
    for n in nodes:
        path = n.data_dir / "node.log"
        text = path.read_text(errors="replace")[-chars:] if path.exists() else ""
        out.append(f"--- {n.data_dir.parent.name} ---\n{text}")
    return "\n\n".join(out)


def wait_for(
    what: str, check: Callable[[], Any], nodes: list[Node], timeout: float = TOR_TIMEOUT, pause: float = 1.0
) -> Any:
    """Poll ``check`` until it returns something truthy (an ``ApiError`` or ``OSError`` counts as not yet)."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (ApiError, OSError) as exc:  # a node restarting, or a state not reached yet
            last = exc
        else:
            if last:
                return last
        time.sleep(pause)
    raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {last!r})\n{logs(nodes)}")


def bitcoin_flags(regtest: Regtest, wallet: str) -> list[str]:
    flags: list[str] = []
    for name, value in regtest.config_overrides(wallet).items():
        flags += ["--" + name.replace("_", "-"), str(value)]
    return flags


def node_onion(node: Node) -> str:
    return str(json.loads(node.cli("node", "--json").stdout)["onion"])


@dataclass
class World:
    tornet: TestNet
    bitcoind: Regtest
    vendor: Node
    buyer: Node
    third: Node
    store: str = ""
    listing: str = ""
    onions: dict[str, str] = field(default_factory=dict)  # node onions by role
    tors: dict[str, ClientTor] = field(default_factory=dict)

    @property
    def nodes(self) -> list[Node]:
        return [self.vendor, self.buyer, self.third]

    @property
    def moderator(self) -> str:
        return self.onions["third"]

    # -- processes -------------------------------------------------------------------
    def running(self) -> list[Node]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def kill(self, node: Node) -> None:
        """kill -9 of a node this world started (by its PID), reaped."""
        assert node.proc is not None
        os.kill(node.proc.pid, signal.SIGKILL)
        node.proc.wait(timeout=15)
        node.stop()  # closes the log, forgets the process

    def restart(self, node: Node) -> None:
        node.start()

    # -- views -------------------------------------------------------------------------
    def store_url(self) -> str:
        stores = api(self.vendor, "GET", "/api/v1/stores")
        url = next(s["local_url"] for s in stores if s["onion"] == self.store)
        assert url and url.startswith("http://127.0.0.1:"), stores
        return str(url)

    def catalog(self) -> dict[str, Any]:
        """The vendor's signed catalog as its store serves it (loopback listener)."""
        with urllib.request.urlopen(self.store_url() + "/.well-known/pasar/catalog.json", timeout=30) as resp:
            data: dict[str, Any] = json.loads(resp.read())
        return data

    def purchase(self, order: str) -> dict[str, Any]:
        data: dict[str, Any] = api(self.buyer, "GET", f"/api/v1/purchases/{order}")
        return data

    def order(self, order: str) -> dict[str, Any]:
        data: dict[str, Any] = api(self.vendor, "GET", f"/api/v1/orders/{order}")
        return data

    def place(self, note: str = "R. Heron, 1 Estuary Lane") -> dict[str, Any]:
        body = {
            "store": self.store, "listing": self.listing, "sku": None, "qty": 1, "shipping": SHIP_OPTION,
            "moderator": self.moderator, "ship_to": note,
        }  # fmt: skip
        data: dict[str, Any] = api(self.buyer, "POST", "/api/v1/purchases", body)
        return data


# -- the message databases (helper A's messages.sqlite), read-only from outside the node -------
def message_rows(node: Node, table: str) -> list[dict[str, Any]]:
    """Every row of ``table`` (outbox | inbox | cursors) in the node's messages.sqlite, read-only."""
    if table not in ("outbox", "inbox", "cursors"):
        raise ValueError(f"no table {table!r} in messages.sqlite")
    path = node.data_dir / "messages.sqlite"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(f"SELECT * FROM {table}")]
    finally:
        conn.close()


def build(
    tornet: TestNet, bitcoind: Regtest, base: Path, prefix: str, *, extra: dict[str, list[str]] | None = None
) -> World:
    """Nodes initialised with their store, listing and settings (not started); client tors started."""
    world = World(tornet, bitcoind, make_node(base / "vendor"), make_node(base / "buyer"), make_node(base / "third"))
    store = world.vendor.cli("store", "create", "Heron Prints", PASAR_STORE_PORT_BASE="0").stdout.strip()
    world.store = store.removesuffix(".onion")
    world.vendor.cli(
        "listing", "add", "--store", world.store, "--title", "Heron print", "--price-sat", str(PRICE),
        "--kind", "physical", "--inventory", str(STOCK), "--shipping", f"{SHIP_OPTION} | WORLDWIDE | {SHIPPING}",
    )  # fmt: skip
    world.onions = {role: node_onion(getattr(world, role)) for role in ("vendor", "buyer", "third")}
    wallets = {"vendor": "vendor", "buyer": "buyer", "third": "moderator"}
    seeds = {"vendor": [], "buyer": ["vendor"], "third": ["vendor", "buyer"]}
    try:
        for role in ("vendor", "buyer", "third"):
            world.tors[role] = tornet.start_client(f"{prefix}-{role}", timeout=120)
    except BaseException:
        stop(world)
        raise
    for role, wallet in wallets.items():
        node: Node = getattr(world, role)
        seed = ["--seed-peers", ",".join(world.onions[s] for s in seeds[role])] if seeds[role] else []
        node.run_args = [
            "--tor-control", f"127.0.0.1:{world.tors[role].control_port}", "--log-level", "debug",
            *FAST_DISCOVERY, *FAST_PAYMENTS, *seed, *bitcoin_flags(bitcoind, wallet), *(extra or {}).get(role, []),
        ]  # fmt: skip
    return world


def start(world: World) -> None:
    """Start the three nodes, offer moderation, accept the moderator; wait until the buyer can order."""
    for node in (world.third, world.vendor, world.buyer):
        node.start()
    api(world.third, "PATCH", "/api/v1/moderation", {
        "enabled": True, "fee_percent": FEE_PERCENT, "fee_sat": FEE_SAT, "terms": "Both statements, 7 days.",
    })  # fmt: skip
    world.listing = api(world.vendor, "GET", f"/api/v1/stores/{world.store}/listings")[0]["id"]
    path, body = f"/api/v1/stores/{world.store}/moderators", {"moderators": [world.moderator]}

    def accepted() -> bool:  # the vendor's node reaches the moderator's offer over tor (a fresh onion)
        reply = api(world.vendor, "PATCH", path, body, timeout=180)
        return not reply["warnings"] and any(t["onion"] == world.moderator for t in reply["moderator_terms"])

    wait_for("the vendor reaches the moderator's offer", accepted, world.nodes, pause=5)
    wait_crawled(world)


def wait_crawled(world: World) -> int:
    """Wait until the buyer's directory holds the vendor's current catalog (the one naming the moderator)."""
    seq = int(world.catalog()["seq"])

    def held() -> bool:
        try:
            got = api(world.buyer, "GET", f"/api/v1/directory/stores/{world.store}")
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return bool(got["catalog_seq"] and got["catalog_seq"] >= seq)

    wait_for("the buyer's directory holds the vendor's catalog", held, world.nodes)
    return seq


def stop(world: World) -> None:
    """Stop what this world started, by PID: the nodes, then their client tors."""
    for node in world.nodes:
        with contextlib.suppress(Exception):
            node.stop()
    for tor in world.tors.values():
        with contextlib.suppress(Exception):
            world.tornet.stop_client(tor)


@contextlib.contextmanager
def running_world(
    tornet: TestNet, bitcoind: Regtest, base: Path, prefix: str, *, extra: dict[str, list[str]] | None = None
) -> Iterator[World]:
    world = build(tornet, bitcoind, base, prefix, extra=extra)
    try:
        start(world)
        yield world
    finally:
        stop(world)


# -- checks shared by the tests ------------------------------------------------------------
def deliveries(view: dict[str, Any]) -> dict[str, str]:
    """Message id -> delivery state, from a purchase's or an order's ``messages``."""
    return {m["id"]: m["delivery"] for m in view.get("messages", []) if "id" in m and "delivery" in m}


def all_delivered(view: dict[str, Any]) -> bool:
    states = deliveries(view)
    return bool(states) and all(s == DELIVERED for s in states.values())
