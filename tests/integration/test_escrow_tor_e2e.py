"""Escrow end to end over the private Tor network (node/testnet/), real processes only.

A vendor node and a moderator node, each the real ``pasar run`` process with its
own embedded tor joined to the private network and its own wallet in one regtest
bitcoind ("vendor", "moderator"). The buyer has only an HTTP client (Tor Browser
stand-in) on the store's listener and the "buyer" wallet outside Pasar.

Every node-to-moderator request goes over tor: the vendor's node fetches the
moderator's signed offer (so the checkout form lists it), asks it for the
order's escrow key at checkout, tells it the escrow, sends the buyer's dispute,
and polls for the decision; the moderator's operator decides a split through its
own API and the vendor co-signs it. The split pays the moderator's fee.

Waits are on conditions with generous deadlines (onion descriptors on a busy
2-core machine); the nodes' logs explain a timeout.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.testnet import TestNet
from tests.regtest import Regtest

from .conftest import Node, make_node
from .test_discovery_e2e import api, wait_for

pytestmark = pytest.mark.slow
TOR_TIMEOUT = 420.0  # onion descriptors + the first requests over fresh circuits, on a busy machine
WATCH_TIMEOUT = 240.0
PRICE, SHIPPING = 50_000, 2_000
FEE_SAT, FEE_PERCENT = 1_000, 2
_HIDDEN = re.compile(r'name="(form_token|form_nonce)" value="([^"]+)"')


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def fetch(url: str, data: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """GET or form-POST like Tor Browser in its safest mode (``Origin: null``); no redirects followed."""
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers={"Origin": "null"} if data is not None else {})
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(req, timeout=120) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def bitcoin_flags(regtest: Regtest, wallet: str) -> list[str]:
    """The node's Bitcoin Core settings as command-line flags (``cli_env`` drops PASAR_* variables)."""
    flags: list[str] = []
    for name, value in regtest.config_overrides(wallet).items():
        flags += ["--" + name.replace("_", "-"), str(value)]
    return flags


def node_onion(node: Node) -> str:
    return str(json.loads(node.cli("node", "--json").stdout)["onion"])


@pytest.fixture(scope="module")
def market(tornet: TestNet, bitcoind: Regtest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base: Path = tmp_path_factory.mktemp("escrow-tor")
    vendor, moderator = make_node(base / "vendor"), make_node(base / "moderator")
    store = vendor.cli("store", "create", "Heron Prints", PASAR_STORE_PORT_BASE="0").stdout.strip()
    store = store.removesuffix(".onion")
    vendor.cli(
        "listing", "add", "--store", store, "--title", "Heron print", "--price-sat", str(PRICE),
        "--kind", "physical", "--shipping", f"Post | WORLDWIDE | {SHIPPING}",
    )  # fmt: skip
    mod_onion = node_onion(moderator)
    member = ["--tor-extra-torrc", str(tornet.root / "member.torrc"), "--log-level", "debug"]
    fast = ["--payment-poll-interval", "1", "--escrow-timeout-blocks", "144", "--confirmations", "1"]
    vendor.run_args = [*member, *fast, *bitcoin_flags(bitcoind, "vendor")]
    moderator.run_args = [*member, *fast, *bitcoin_flags(bitcoind, "moderator")]
    nodes = [vendor, moderator]
    try:
        for node in nodes:
            node.start()
        api(moderator, "PATCH", "/api/v1/moderation", {
            "enabled": True, "fee_percent": FEE_PERCENT, "fee_sat": FEE_SAT, "terms": "Both statements, 7 days.",
        })  # fmt: skip
        api(vendor, "PATCH", f"/api/v1/stores/{store}/moderators", {"moderators": [mod_onion]})
        yield {"vendor": vendor, "moderator": moderator, "store": store, "mod_onion": mod_onion, "nodes": nodes}
    finally:
        for node in nodes:
            node.stop()


def store_url(market: dict[str, Any]) -> str:
    stores = api(market["vendor"], "GET", "/api/v1/stores")
    url = next(s["local_url"] for s in stores if s["onion"] == market["store"])
    assert url and url.startswith("http://127.0.0.1:"), stores
    return str(url)


def test_an_order_is_escrowed_disputed_and_split_through_a_moderator_over_tor(market, bitcoind: Regtest):
    vendor, moderator, nodes = market["vendor"], market["moderator"], market["nodes"]
    base = store_url(market)
    listing = api(vendor, "GET", f"/api/v1/stores/{market['store']}/listings")[0]["id"]

    # 1. The vendor's node fetches the moderator's signed offer over tor: the form then offers it.
    def form() -> dict[str, str] | None:
        status, _, html = fetch(f"{base}/listing/{listing}")
        if status != 200 or market["mod_onion"] not in html:
            return None
        return dict(_HIDDEN.findall(html))

    hidden = wait_for("the moderator's offer on the checkout form", form, nodes, TOR_TIMEOUT)

    # 2. Checkout: the vendor's node asks the moderator's node for the escrow key, over tor.
    fields = {
        **hidden, "listing": listing, "qty": "1", "shipping": "Post", "moderator": market["mod_onion"],
        "buyer_pubkey": bitcoind.key("buyer"), "refund_address": bitcoind.address("buyer"),
        "ship_to": "R. Heron, 1 Estuary Lane",
    }  # fmt: skip
    status, headers, body = fetch(f"{base}/checkout", fields)
    assert status == 303, body[-3000:]
    order_url = base + headers["Location"]
    order = json.loads(fetch(order_url + ".json")[2])
    assert order["state"] == "awaiting_payment" and order["amount_sat"] == PRICE + SHIPPING
    assert order["moderator"] == market["mod_onion"] and order["descriptor"].startswith("wsh(or_d(multi(2,")

    # 3. The buyer pays from its own wallet; the vendor's watcher sees it confirmed.
    bitcoind.fund("buyer", order["escrow_address"], order["amount_sat"])
    bitcoind.mine(1)
    wait_for(
        "the order confirmed",
        lambda: json.loads(fetch(order_url + ".json")[2])["state"] == "confirmed",
        nodes,
        WATCH_TIMEOUT,
    )

    # 4. The buyer disputes on the order page; the statement reaches the moderator's node over tor.
    status, _, body = fetch(order_url + "/dispute", {"statement": "The print never arrived."})
    assert status in (200, 303), body[-3000:]

    def case() -> dict[str, Any] | None:
        cases = [c for c in api(moderator, "GET", "/api/v1/disputes") if c["state"] == "disputed"]
        return cases[0] if cases else None

    opened = wait_for("the dispute at the moderator", case, nodes, TOR_TIMEOUT)
    assert any("never arrived" in s["text"] for s in opened["statements"]), opened
    fee = FEE_SAT + (PRICE + SHIPPING) * FEE_PERCENT // 100
    assert opened["moderator_sat"] == fee

    # 5. The moderator decides a split; the vendor's node polls the decision over tor and co-signs.
    paid = opened["paid_sat"] or order["amount_sat"]
    buyer_sat = (paid - fee) // 2
    decided = api(moderator, "POST", f"/api/v1/disputes/{opened['id']}/decide", {
        "buyer_sat": buyer_sat, "vendor_sat": paid - fee - buyer_sat,
    })  # fmt: skip
    assert decided["state"] == "decided" and decided["psbt"]
    order_id = api(vendor, "GET", "/api/v1/orders")[0]["id"]
    wait_for(
        "the decision at the vendor",
        lambda: api(vendor, "GET", f"/api/v1/orders/{order_id}")["state"] == "decided",
        nodes,
        TOR_TIMEOUT,
    )
    released = api(vendor, "POST", f"/api/v1/orders/{order_id}/release", {})
    assert released["state"] in ("decided", "resolved"), released
    bitcoind.mine(1)
    done = wait_for(
        "the split confirmed",
        lambda: (o := api(vendor, "GET", f"/api/v1/orders/{order_id}"))["state"] == "resolved" and o,
        nodes,
        WATCH_TIMEOUT,
    )
    outputs = {o["role"]: o["amount_sat"] for o in done["payouts"][-1]["outputs"]}
    assert outputs["moderator"] == fee  # the fee output, to the moderator's own wallet
    assert outputs["buyer"] < buyer_sat and outputs["vendor"] < paid - fee - buyer_sat  # network fee pro rata
