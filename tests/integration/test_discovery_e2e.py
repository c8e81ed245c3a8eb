"""Discovery end to end on the private Tor network (node/testnet/), real processes only.

Nodes A, B and C each run a store; D runs none. Each node runs its own
(embedded) tor joined to the private network, and knows one other node's
onion: D knows only A, A knows B, B knows C. Gossip then tells D about C's
store, D's crawler fetches C's signed catalog over tor, and D's directory
finds, by full-text search, a listing only C sells. Then C stops, and a new
node E that knows only A still finds C's listing: from a mirror copy (A's),
marked offline.

Waits are on conditions with generous deadlines (a first run on a loaded
2-core machine is the slowest); gossip and crawl intervals are set to a few
seconds so the network converges quickly.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from node.testnet import TestNet

from .conftest import Node, make_node

pytestmark = pytest.mark.slow
CONVERGE_TIMEOUT = 420.0  # gossip rounds + onion descriptor fetches + crawls, on a busy machine
FAST = ["--gossip-interval", "5", "--crawl-interval", "5", "--log-level", "debug"]
ONLY_C_SELLS = "Zanzibar saffron threads"


def api(node: Node, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(node.admin_url + path, data=data, method=method, headers=node.auth)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


def wait_for(what: str, check: Callable[[], Any], nodes: list[Node], timeout: float = CONVERGE_TIMEOUT) -> Any:
    """Poll ``check`` until it returns something truthy; the nodes' logs explain a timeout."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(1.0)
    logs = "\n\n".join(f"--- {n.data_dir.parent.name} ---\n{n.read_log()}" for n in nodes)
    raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {last!r})\n{logs}")


def node_onion(node: Node) -> str:
    """The node onion, read (and made on first use) on the stopped node's data directory."""
    return str(json.loads(node.cli("node", "--json").stdout)["onion"])


def search(node: Node, query: str) -> dict[str, Any]:
    result: dict[str, Any] = api(node, "GET", "/api/v1/search?" + urllib.parse.urlencode({"q": query}))
    return result


def add_store(node: Node, name: str, title: str) -> str:
    # Port base 0: each store listens on a free port at each start (the nodes share this machine).
    onion = node.cli("store", "create", name, PASAR_STORE_PORT_BASE="0").stdout.strip().removesuffix(".onion")
    node.cli(
        "listing", "add", "--store", onion, "--title", title, "--price-sat", "4200", "--kind", "physical",
        "--shipping", "Post | WORLDWIDE | 1500",
    )  # fmt: skip
    return onion


@pytest.fixture(scope="module")
def network(tornet: TestNet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base: Path = tmp_path_factory.mktemp("discovery")
    nodes = {name: make_node(base / name) for name in "abcde"}
    stores = {
        "a": add_store(nodes["a"], "Alpha Goods", "Handmade walnut spoon"),
        "b": add_store(nodes["b"], "Beta Goods", "Linen tea towel"),
        "c": add_store(nodes["c"], "Gamma Spices", ONLY_C_SELLS),
    }
    onions = {name: node_onion(node) for name, node in nodes.items()}
    seeds = {"d": "a", "a": "b", "b": "c", "e": "a"}
    member = ["--tor-extra-torrc", str(tornet.root / "member.torrc")]
    for name, node in nodes.items():
        seed = ["--seed-peers", onions[seeds[name]]] if name in seeds else []
        node.run_args = [*member, *FAST, *seed]
    try:
        for name in "abcd":
            nodes[name].start()
        yield {"nodes": nodes, "stores": stores, "onions": onions}
    finally:
        for node in nodes.values():
            node.stop()


def test_node_info_names_the_node_onion_and_counts(network):
    nodes, onions = network["nodes"], network["onions"]
    info = api(nodes["d"], "GET", "/api/v1/node")
    assert info["onion"] == onions["d"] and len(info["onion"]) == 56
    assert info["onion"] not in network["stores"].values()  # its own key, never a store's
    for field in ("peers", "announcements", "listings_indexed"):
        assert isinstance(info[field], int)
    assert [p["onion"] for p in api(nodes["d"], "GET", "/api/v1/peers")] == [onions["a"]]


def test_a_node_finds_a_listing_two_hops_away_by_full_text_search(network):
    nodes, stores = network["nodes"], network["stores"]
    running = [nodes[n] for n in "abcd"]

    def found() -> dict[str, Any] | None:
        hits = [r for r in search(nodes["d"], "saffron")["results"] if r["store"] == stores["c"]]
        return hits[0] if hits else None

    hit = wait_for("D finds C's listing", found, running)
    assert hit["title"] == ONLY_C_SELLS and hit["price_sat"] == 4200 and hit["source"] == "direct"
    assert "saffron" in hit["snippet"].lower() or "saffron" in hit["title"].lower()
    store = api(nodes["d"], "GET", f"/api/v1/directory/stores/{stores['c']}")
    assert store["reachable"] and store["catalog_seq"] and store["last_seen"]
    info = api(nodes["d"], "GET", "/api/v1/node")
    assert info["announcements"] >= 3 and info["listings_indexed"] >= 1 and info["peers"] >= 1
    # D learned of B and C as peers through A (peer exchange), not only of A.
    wait_for("D learns peers beyond A", lambda: len(api(nodes["d"], "GET", "/api/v1/peers")) >= 2, running)


def test_an_offline_store_is_still_found_from_a_mirror(network):
    nodes, stores = network["nodes"], network["stores"]
    a, c, e = nodes["a"], nodes["c"], nodes["e"]

    def a_holds_c() -> bool:
        try:
            return bool(api(a, "GET", f"/api/v1/directory/stores/{stores['c']}")["catalog_seq"])
        except urllib.error.HTTPError:
            return False

    wait_for("A holds C's catalog (to mirror it)", a_holds_c, [a, c])
    c.stop()
    e.start()

    def mirrored() -> dict[str, Any] | None:
        hits = [r for r in search(e, "saffron")["results"] if r["store"] == stores["c"]]
        return hits[0] if hits else None

    hit = wait_for("E finds C's listing from a mirror", mirrored, [e, a])
    assert hit["source"] == "mirror" and hit["as_of"] > 0 and not hit["reachable"]
    store = api(e, "GET", f"/api/v1/directory/stores/{stores['c']}")
    assert store["source"] == "mirror" and not store["reachable"]
