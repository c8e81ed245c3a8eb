"""Node-to-node orders end to end over the private Tor network (node/testnet/), real processes only.

Three real ``pasar run`` nodes (node_orders_world.py) and one regtest bitcoind with a wallet per party:
the buyer's node orders from the vendor's store through ``POST /api/v1/purchases``, pays from its own
wallet, the vendor accepts and fulfills, the buyer releases and reviews; the review shows in the vendor's
signed catalog and in the third node's directory. Then the vendor's node is stopped before a checkout:
the order waits in the buyer's outbox, re-sent with backoff, and arrives in order, with a message queued
after it, once the vendor's node is back about two minutes later.

Every wait is on a condition with a generous bounded deadline; a timeout shows the nodes' logs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.testnet import TestNet
from tests.regtest import Regtest

from . import node_orders_world as w

pytestmark = pytest.mark.slow
WATCH_TIMEOUT = 240.0
OFFLINE_FOR = 120.0  # the vendor's node stays down at least this long (the issue: "2 minutes later")
MIN_RETRIES = 2
# The buyer re-sends quickly and asks often, so the test does not wait on hour-long backoffs.
BUYER = ["--message-retry-first", "5", "--message-retry-cap", "20", "--purchase-poll-interval", "3"]
VENDOR = ["--message-retry-first", "5", "--message-retry-cap", "20"]


@pytest.fixture(scope="module")
def world(tornet: TestNet, bitcoind: Regtest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[w.World]:
    base: Path = tmp_path_factory.mktemp("node-orders")
    with w.running_world(tornet, bitcoind, base, "e2e", extra={"buyer": BUYER, "vendor": VENDOR}) as world:
        yield world


def outbox(node: w.Node, order: str) -> list[dict[str, Any]]:
    rows = [r for r in w.message_rows(node, "outbox") if r["order_id"] == order]
    return sorted(rows, key=lambda r: r["seq"])


def inbox(node: w.Node, order: str) -> list[dict[str, Any]]:
    rows = [r for r in w.message_rows(node, "inbox") if r["order_id"] == order]
    return sorted(rows, key=lambda r: r["seq"])


def delivered_both_sides(world: w.World, order: str) -> bool:
    """Every message of the order, sent by either node, acknowledged (the buyer's view, and both outboxes)."""
    sent = outbox(world.buyer, order) + outbox(world.vendor, order)
    told = world.order(order)["node_messages"]  # the vendor's view of the same messages
    return (
        w.all_delivered(world.purchase(order))
        and bool(told)
        and all(m["delivery"] == w.DELIVERED for m in told)
        and bool(sent)
        and all(r["delivery"] == w.DELIVERED for r in sent)
        and {r["id"] for r in outbox(world.buyer, order)} <= {r["id"] for r in inbox(world.vendor, order)}
        and {r["id"] for r in outbox(world.vendor, order)} <= {r["id"] for r in inbox(world.buyer, order)}
    )


def in_state(world: w.World, order: str, state: str, *, side: str = "buyer") -> Any:
    view = world.purchase(order) if side == "buyer" else world.order(order)
    return view if view["state"] == state else None


def test_a_buyer_node_orders_pays_releases_and_reviews_over_tor(world: w.World, bitcoind: Regtest) -> None:
    nodes = world.nodes
    placed = world.place()
    order = placed["id"]
    assert placed["state"] in ("queued", "placed", "awaiting_payment"), placed

    # 1. The order reaches the vendor's node; its escrow answer comes back and the buyer's node verifies it.
    bought = w.wait_for("the escrow at the buyer", lambda: in_state(world, order, "awaiting_payment"), nodes)
    sold = world.order(order)
    assert sold["id"] == order and sold["state"] == "awaiting_payment" and sold["channel"] == "node"
    assert bought["escrow_address"] == sold["escrow_address"] and bought["descriptor"].startswith("wsh(")
    assert bought["amount_sat"] == sold["amount_sat"] == w.PRICE + w.SHIPPING

    # 2. The buyer's node pays from its own wallet (the exact address and amount, as the confirm page sends).
    paid = w.api(world.buyer, "POST", f"/api/v1/purchases/{order}/pay", {
        "address": bought["escrow_address"], "amount_sat": bought["amount_sat"],
    })  # fmt: skip
    assert paid["paid_txid"], paid
    bitcoind.sync()
    bitcoind.mine(1)
    w.wait_for("the vendor sees it confirmed", lambda: in_state(world, order, "confirmed", side="vendor"), nodes)

    # 3. The vendor accepts and fulfills through its own API; the buyer's node hears of it.
    w.api(world.vendor, "POST", f"/api/v1/orders/{order}/accept", {})
    w.api(world.vendor, "POST", f"/api/v1/orders/{order}/message", {"text": "Posted today, first class."})
    w.api(world.buyer, "POST", f"/api/v1/purchases/{order}/message", {"text": "Thank you, it is a gift."})
    w.api(world.vendor, "POST", f"/api/v1/orders/{order}/fulfill", {"note": "tracking RR123"})
    pending = w.wait_for(
        "the release payout at the buyer",
        lambda: (p := world.purchase(order))["state"] == "fulfilled" and p["pending_payout"] and p,
        nodes,
    )
    texts = {m.get("text") for m in pending["messages"]}
    assert "Posted today, first class." in texts  # unboxed with the order key
    assert any("gift" in m["text"] for m in world.order(order)["messages"])  # the vendor's copy

    # 4. The buyer releases (its wallet signs after the PSBT checks); the release confirms.
    w.api(world.buyer, "POST", f"/api/v1/purchases/{order}/release", {})
    bitcoind.sync()
    bitcoind.mine(1)
    w.wait_for("the release confirmed", lambda: in_state(world, order, "completed", side="vendor"), nodes)
    w.wait_for("the buyer hears it completed", lambda: in_state(world, order, "completed"), nodes)

    # 5. The review: in the vendor's signed catalog and in the third node's directory.
    reviewed = w.api(world.buyer, "POST", f"/api/v1/purchases/{order}/review", {"rating": 5, "text": "Lovely print."})
    assert reviewed["review"], reviewed
    review = w.wait_for(
        "the review in the vendor's catalog",
        lambda: [r for r in world.catalog()["body"].get("reviews", []) if r["body"]["order"] == order],
        nodes,
    )[0]
    assert review["type"] == "pasar.review" and review["body"]["rating"] == 5 and review["store"] != world.store

    def listed() -> Any:
        got = w.api(world.third, "GET", f"/api/v1/directory/stores/{world.store}")
        hits = [r for r in got.get("reviews", []) if r["order"] == order]
        return got if hits and hits[0]["chain"] == "checked" else None

    shown = w.wait_for("the review in the third node's directory, checked on chain", listed, nodes)
    assert shown["rating"]["count"] == 1 and shown["rating"]["mean"] == 5, shown["rating"]
    hit = next(r for r in shown["reviews"] if r["order"] == order)
    assert hit["rating"] == 5 and hit["text"] == "Lovely print." and hit["listing"] == world.listing
    assert not shown["omitted"], shown

    # 6. Every message, both ways, acknowledged on both sides.
    w.wait_for("every message delivered on both sides", lambda: delivered_both_sides(world, order), nodes)
    kinds = [r["kind"] for r in outbox(world.buyer, order)]
    assert kinds[0] == "order" and {"message", "psbt", "review"} <= set(kinds), kinds
    for side in (world.vendor, world.buyer):  # each applied, none refused (a psbt of a payout already out included)
        assert all(r["applied"] == "applied" for r in inbox(side, order)), inbox(side, order)
    vendor_kinds = [r["kind"] for r in outbox(world.vendor, order)]
    assert vendor_kinds[0] == "escrow" and {"state", "payout", "message"} <= set(vendor_kinds), vendor_kinds


def test_an_order_placed_while_the_vendor_is_offline_arrives_in_order(world: w.World) -> None:
    nodes = world.nodes
    w.wait_crawled(world)  # the buyer holds the current catalog before the vendor goes away
    world.vendor.stop()
    stopped = time.monotonic()

    placed = world.place("C. Offline, 2 Marsh Road")
    order = placed["id"]
    assert placed["state"] == "queued", placed
    later = w.api(world.buyer, "POST", f"/api/v1/purchases/{order}/message", {"text": "Any chance of Friday?"})
    assert [m["kind"] for m in later["messages"] if m.get("direction", "out") == "out"] == ["order", "message"]
    assert all(m["delivery"] in ("queued", "sent") for m in later["messages"]), later["messages"]

    def retried() -> bool:  # the courier tried and failed (each failure counts one attempt)
        rows = outbox(world.buyer, order)
        return time.monotonic() - stopped >= OFFLINE_FOR and bool(rows) and rows[0]["attempts"] >= MIN_RETRIES

    w.wait_for("two minutes offline and two re-sends", retried, [world.buyer], timeout=OFFLINE_FOR + 240)
    view = world.purchase(order)
    assert view["state"] == "queued" and not view["escrow_address"], view  # nothing payable yet
    assert all(m["delivery"] in ("queued", "sent") for m in view["messages"]), view["messages"]

    world.vendor.start()
    w.wait_for("the escrow at the buyer", lambda: in_state(world, order, "awaiting_payment"), nodes)
    sold = world.order(order)
    assert any("Friday" in m["text"] for m in sold["messages"]), sold["messages"]
    received = inbox(world.vendor, order)
    assert [(r["kind"], r["seq"]) for r in received] == [("order", 1), ("message", 2)]
    assert all(r["applied"] == "applied" for r in received), received
    w.wait_for("every message delivered on both sides", lambda: delivered_both_sides(world, order), nodes)
