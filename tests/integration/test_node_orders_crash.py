"""kill -9 of the buyer's or the vendor's node at random moments of node-to-node order flows.

Three real ``pasar run`` nodes on the private Tor network (node_orders_world.py). While the test drives a
few orders (place, messages both ways, pay, accept; the last one also fulfilled and released), a seeded
chaos thread kills one of the two nodes with SIGKILL at random moments (about 20 kills: mostly the buyer,
which needs no onion of its own; a few of the vendor, whose onion must then be published again) and starts
it again at once. Each node keeps its client tor, so a restart takes seconds. Paying and signing the
release are not cut (the test holds the chaos off around those two calls).

At the end every message is delivered exactly once: each message the buyer's node sent is in the vendor's
inbox once and applied once (its text once in the vendor's order, the order itself once), each the vendor
sent is at the buyer once, and neither side's history of an order has a repeated entry.
"""

from __future__ import annotations

import collections
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from node.testnet import TestNet
from tests.regtest import Regtest

from . import node_orders_world as w

pytestmark = pytest.mark.slow
SEED = int(os.environ.get("PASAR_CRASH_SEED", "11"))  # another seed: other moments, other victims
KILLS, VENDOR_KILLS = 20, 3
ORDERS = 3
GAP = (3.0, 8.0)  # seconds between kills (the random moment of each)
STEP_TIMEOUT = 300.0
SETTLE_TIMEOUT = 360.0
FAST = ["--message-retry-first", "2", "--message-retry-cap", "10", "--purchase-poll-interval", "2"]


@pytest.fixture(scope="module")
def world(tornet: TestNet, bitcoind: Regtest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[w.World]:
    base: Path = tmp_path_factory.mktemp("node-orders-crash")
    with w.running_world(tornet, bitcoind, base, "crash", extra={"buyer": FAST, "vendor": FAST}) as world:
        yield world


class Chaos(threading.Thread):
    """Kills ``KILLS`` times (``VENDOR_KILLS`` of them the vendor), restarting the node each time."""

    def __init__(self, world: w.World, rng: random.Random) -> None:
        super().__init__(name="chaos", daemon=True)
        self.world, self.rng = world, rng
        victims = ["vendor"] * VENDOR_KILLS + ["buyer"] * (KILLS - VENDOR_KILLS)
        rng.shuffle(victims)
        self.victims = victims
        self.done: list[tuple[str, float]] = []
        self.hold = threading.Lock()  # held by the test around a call that must not be cut (paying)
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for victim in self.victims:
                if self.halt.wait(self.rng.uniform(*GAP)):
                    return
                node = getattr(self.world, victim)
                with self.hold:
                    self.world.kill(node)
                    self.done.append((victim, time.monotonic()))
                    self.world.restart(node)
        except BaseException as exc:  # shown by the test
            self.error = exc


def attempt(what: str, call: Callable[[], Any], done: Callable[[], Any], nodes: list[w.Node]) -> Any:
    """``call`` until it answers; after a cut connection, ``done()`` says whether it took effect anyway."""

    def once() -> Any:
        try:
            found = done()
            if found:
                return found
            return call()
        except w.ApiError as exc:
            if exc.status < 500:
                raise
            return None
        except OSError:  # killed mid-call: the next round asks done() first
            return None

    return w.wait_for(what, once, nodes, timeout=STEP_TIMEOUT)


def place(world: w.World, note: str) -> str:
    before = {
        p["id"] for p in w.wait_for("the buyer's purchases", lambda: purchases(world) or [{"id": ""}], world.nodes)
    }

    def new() -> str | None:
        ids = [p["id"] for p in purchases(world) if p["id"] not in before]
        return ids[0] if ids else None

    return str(attempt("placing an order", lambda: world.place(note)["id"], new, world.nodes))


def purchases(world: w.World) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = w.api(world.buyer, "GET", "/api/v1/purchases")
    return got


def buyer_says(world: w.World, order: str, text: str) -> None:
    def held() -> bool:
        return any(m.get("text") == text for m in world.purchase(order)["messages"])

    path = f"/api/v1/purchases/{order}/message"
    attempt(f"buyer message {text}", lambda: w.api(world.buyer, "POST", path, {"text": text}), held, world.nodes)


def vendor_says(world: w.World, order: str, text: str) -> None:
    def held() -> bool:
        return any(m["text"] == text for m in world.order(order)["messages"])

    path = f"/api/v1/orders/{order}/message"
    attempt(f"vendor message {text}", lambda: w.api(world.vendor, "POST", path, {"text": text}), held, world.nodes)


def state_is(world: w.World, order: str, states: tuple[str, ...], side: str) -> Any:
    view = world.purchase(order) if side == "buyer" else world.order(order)
    return view if view["state"] in states else None


def flow(world: w.World, chaos: Chaos, bitcoind: Regtest, i: int) -> str:
    nodes = world.nodes
    order = place(world, f"Crash Lane {i}")
    buyer_says(world, order, f"b{i}-1 before the escrow")
    w.wait_for("the escrow", lambda: state_is(world, order, ("awaiting_payment",), "buyer"), nodes, STEP_TIMEOUT)
    buyer_says(world, order, f"b{i}-2 paying now")
    vendor_says(world, order, f"v{i}-1 thanks")

    def pay() -> Any:
        with chaos.hold:  # paying is not what this test cuts (a cut there could pay twice)
            w.wait_for("both nodes up", lambda: len(world.running()) == 3, nodes, 60)
            return w.api(world.buyer, "POST", f"/api/v1/purchases/{order}/pay", {})

    attempt("paying", pay, lambda: world.purchase(order)["paid_txid"], nodes)
    bitcoind.sync()
    bitcoind.mine(1)
    w.wait_for("confirmed", lambda: state_is(world, order, ("confirmed",), "vendor"), nodes, STEP_TIMEOUT)

    def accepted() -> Any:
        return state_is(world, order, ("accepted",), "vendor")

    attempt("accepting", lambda: w.api(world.vendor, "POST", f"/api/v1/orders/{order}/accept", {}), accepted, nodes)
    vendor_says(world, order, f"v{i}-2 accepted")
    if i == ORDERS - 1:
        fulfil_and_release(world, chaos, bitcoind, order)
    return order


def fulfil_and_release(world: w.World, chaos: Chaos, bitcoind: Regtest, order: str) -> None:
    """The last order also goes through a payout: the vendor's PSBT to the buyer, the buyer's back."""
    nodes = world.nodes
    path = f"/api/v1/orders/{order}/fulfill"
    fulfilled = lambda: state_is(world, order, ("fulfilled",), "vendor")  # noqa: E731
    attempt("fulfilling", lambda: w.api(world.vendor, "POST", path, {"note": "tracked"}), fulfilled, nodes)
    w.wait_for("the release at the buyer", lambda: world.purchase(order)["pending_payout"], nodes, STEP_TIMEOUT)

    def release() -> Any:
        with chaos.hold:  # signing and broadcasting is not what this test cuts
            w.wait_for("both nodes up", lambda: len(world.running()) == 3, nodes, 60)
            return w.api(world.buyer, "POST", f"/api/v1/purchases/{order}/release", {})

    def signed() -> bool:
        pending = world.purchase(order)["pending_payout"]
        return pending is None or bool(pending["signed"])

    attempt("releasing", release, signed, nodes)
    w.wait_for("the release in the mempool", lambda: bitcoind.cli("getrawmempool"), nodes, STEP_TIMEOUT)
    bitcoind.mine(1)
    w.wait_for("completed", lambda: state_is(world, order, ("completed",), "vendor"), nodes, STEP_TIMEOUT)


def settled(world: w.World) -> bool:
    for p in purchases(world):
        view = world.purchase(p["id"])
        sold = world.order(p["id"])
        if view["state"] != sold["state"] or not w.all_delivered(view):
            return False
        if any(m["delivery"] != w.DELIVERED for m in sold["node_messages"]):
            return False
    out = w.message_rows(world.buyer, "outbox") + w.message_rows(world.vendor, "outbox")
    return all(r["delivery"] == w.DELIVERED for r in out)


def once(items: list[Any]) -> list[Any]:
    """The items that occur more than once."""
    return [item for item, n in collections.Counter(items).items() if n > 1]


def check_exactly_once(world: w.World) -> None:
    bought = [p["id"] for p in purchases(world)]
    sold = [o["id"] for o in w.api(world.vendor, "GET", "/api/v1/orders")]
    assert sorted(bought) == sorted(sold), (bought, sold)  # no order lost, none taken twice
    b_out, v_out = w.message_rows(world.buyer, "outbox"), w.message_rows(world.vendor, "outbox")
    b_in, v_in = w.message_rows(world.buyer, "inbox"), w.message_rows(world.vendor, "inbox")
    assert {r["id"] for r in b_out} == {r["id"] for r in v_in}, "a buyer message lost (or foreign)"
    assert {r["id"] for r in v_out} == {r["id"] for r in b_in}, "a vendor message lost (or foreign)"
    assert not once([r["id"] for r in v_in + b_in]), "a message stored twice"
    for rows in (v_in, b_in):
        assert all(r["applied"] == "applied" for r in rows), [r for r in rows if r["applied"] != "applied"]
        for order in {r["order_id"] for r in rows}:
            by_sender = collections.defaultdict(list)
            for r in rows:
                if r["order_id"] == order:
                    by_sender[r["sender"]].append(r["seq"])
            for seqs in by_sender.values():
                assert sorted(seqs) == list(range(1, len(seqs) + 1)), seqs  # no gap, no repeat
    for order in bought:
        view, sale = world.purchase(order), world.order(order)
        said = [m["text"] for m in view["messages"] if m.get("direction") == "out" and m["kind"] == "message"]
        got = [m["text"] for m in sale["messages"] if m["sender"] == "buyer"]
        assert sorted(said) == sorted(got) and not once(got), (said, got)  # each applied once
        told = [m["id"] for m in sale["node_messages"]]
        assert not once(told) and set(told) == {m["id"] for m in view["messages"]}, (told, view["messages"])
        history = [(h["state"], h["note"]) for h in sale["history"]]
        assert not once(history), sale["history"]
        heard = [(h["state"], h["note"]) for h in view["history"]]
        assert not once(heard), view["history"]  # each of the vendor's state messages applied once
        assert {s for s, _ in history} <= {s for s, _ in heard}, (heard, history)  # and none lost


def test_kill_9_of_either_node_loses_no_message_and_applies_none_twice(world: w.World, bitcoind: Regtest) -> None:
    rng = random.Random(SEED)
    chaos = Chaos(world, rng)
    started = time.monotonic()
    chaos.start()
    try:
        orders = [flow(world, chaos, bitcoind, i) for i in range(ORDERS)]
        chaos.join(timeout=KILLS * (GAP[1] + 60))
    finally:
        chaos.halt.set()
        chaos.join(timeout=120)
    assert chaos.error is None, f"the chaos thread failed: {chaos.error!r}"
    assert len(chaos.done) == KILLS, chaos.done
    assert sum(v == "vendor" for v, _ in chaos.done) == VENDOR_KILLS
    for node in world.nodes:
        if node.proc is None:
            node.start()
    w.wait_for("every message delivered on both sides", lambda: settled(world), world.nodes, SETTLE_TIMEOUT)
    check_exactly_once(world)
    assert [world.order(o)["state"] for o in orders] == ["accepted"] * (ORDERS - 1) + ["completed"]
    print(f"seed {SEED}: {KILLS} kills in {time.monotonic() - started:.0f}s")
