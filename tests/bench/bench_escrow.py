"""Escrow flows benchmark: Bitcoin Core RPC calls and wall time per order, fund to payout, on a real regtest.

Run from the repository root (needs bitcoind: deploy/build-bitcoind.sh or PASAR_BITCOIND)::

    .venv/bin/python tests/bench/bench_escrow.py                      # all parts, about 40 s
    .venv/bin/python tests/bench/bench_escrow.py --orders 1           # quick look
    .venv/bin/python tests/bench/bench_escrow.py --only checkouts --checkouts 100

What runs: one regtest bitcoind (temp datadir, free loopback ports, cookie auth)
with the wallets "miner", "buyer", "vendor", "moderator"; the vendor's real
``Payments`` over a real ``OrderStore`` and ``Market``; the moderator's real
``ModeratorService`` reached by the real ``ModeratorClient`` in-process
(``tests/integration/escrow_world.py``). For each flow and order: checkout,
the buyer pays from its wallet, blocks are mined, the vendor acts, the buyer
signs with ``walletprocesspsbt`` and uploads (or the moderator decides).

Figures per flow, per order: the vendor node's RPC calls excluding the
watcher's polling (``listunspent``, ``getblockcount`` and ``gettransaction`` in ``watch_once``;
target <= 20 for a normal release), the moderator node's RPC calls, and the
wall time of what Pasar does (checkout, the vendor's and buyer's actions, the
watcher rounds that move the order), excluding mining and the buyer's wallet.

Parts (``--only``): ``render`` (the buyer's order page with a 500-entry
history, on the real node app over loopback), ``flows`` (the five flows
above) and ``checkouts``: ``--checkouts`` (default 100) checkouts at once
through the real ``Payments.checkout`` (same world, its own orders.sqlite and
watch-only wallets) for a listing holding 60% of the units asked (1 each,
``max_unpaid`` raised so that only stock limits them). Prints orders/s placed,
the refusals by reason, the vendor's and moderator's RPC calls per checkout,
and checks in the order store that no unit was sold twice (units placed <=
inventory, and the stock table agrees with the orders).

A benchmark, not a test: it asserts nothing about timing and exits 0 unless
something broke (then non-zero with a one-line reason). bitcoind is stopped by
its PID; the temporary directory is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiohttp

from node.adapters.bitcoin import BitcoinCore
from node.core.errors import PasarError
from node.payments.models import HistoryEntry, Order, OrderState
from node.payments.pricing import CheckoutForm
from node.payments.service import Payments
from tests.integration.checkout_nodes import buyer_fields, open_shop
from tests.integration.escrow_world import AMOUNT, TIMEOUT, World, open_world
from tests.regtest import COIN, Regtest, btc

POLLING = {"listunspent", "getblockcount", "gettransaction"}  # the watcher asking whether anything changed
T = TypeVar("T")


@dataclass
class Meter:
    """RPCs and wall time of Pasar's own steps (polling counted apart)."""

    vendor: BitcoinCore
    moderator: BitcoinCore
    seconds: float = 0.0
    vendor_calls: Counter[str] = field(default_factory=Counter)
    moderator_calls: int = 0

    async def step(self, work: Awaitable[T], *, polling: bool = False) -> T:
        before, mod_before = Counter(self.vendor.calls), sum(self.moderator.calls.values())
        started = time.perf_counter()
        result = await work
        self.seconds += time.perf_counter() - started
        made = Counter(self.vendor.calls)
        made.subtract(before)
        for method, n in made.items():
            if n and not (polling and method in POLLING):
                self.vendor_calls[method] += n
        self.moderator_calls += sum(self.moderator.calls.values()) - mod_before
        return result


async def _paid(w: World, p: Payments, m: Meter, *, accept: bool) -> tuple[Order, str]:
    order, token = await m.step(p.checkout(w.store_onion, w.form()))
    w.pay(order.escrow.address, AMOUNT)
    w.regtest.mine(1)
    await m.step(p.watch_once(), polling=True)
    await w.moderator.watch_once()  # the moderator's own sighting of the funded escrow (its node, not timed)
    if accept:
        order = await m.step(p.accept(order.id))
    return order, token


async def _buyer(w: World, p: Payments, m: Meter, order_id: str, token: str) -> Order:
    order = await p.order(order_id)
    psbt = p.psbt_for_buyer(order)
    if psbt is None:
        raise RuntimeError(f"order {order_id} ({order.state}) has nothing for the buyer to sign")
    signed = w.buyer_sign(psbt)
    return await m.step(p.upload_psbt(w.store_onion, token, signed))


async def release(w: World, p: Payments, m: Meter) -> Order:
    order, token = await _paid(w, p, m, accept=True)
    await m.step(p.fulfill(order.id, "shipped"))
    return await _buyer(w, p, m, order.id, token)


async def refund(w: World, p: Payments, m: Meter) -> Order:
    order, token = await _paid(w, p, m, accept=False)
    await m.step(p.decline(order.id, "out of stock"))
    return await _buyer(w, p, m, order.id, token)


async def silent_vendor(w: World, p: Payments, m: Meter) -> Order:
    order, token = await _paid(w, p, m, accept=False)
    order = await p.order(order.id)
    assert order.accept_by is not None
    w.clock.t = order.accept_by + 1
    await m.step(p.watch_once(), polling=True)
    return await _buyer(w, p, m, order.id, token)


async def split(w: World, p: Payments, m: Meter) -> Order:
    order, token = await _paid(w, p, m, accept=True)
    await m.step(p.buyer_dispute(w.store_onion, token, "never arrived"))
    case = next(c for c in await w.moderator.disputes() if c.order_id == order.id)
    fee = case.moderator_sat
    await m.step(w.moderator.decide(case.id, 50_000, AMOUNT - 50_000 - fee))
    await m.step(p.watch_once(), polling=True)
    return await m.step(p.release(order.id))


async def claim(w: World, p: Payments, m: Meter) -> Order:
    order, _ = await _paid(w, p, m, accept=True)
    w.regtest.mine(TIMEOUT)
    await m.step(p.watch_once(), polling=True)
    return await m.step(p.claim(order.id))


FLOWS: dict[str, tuple[Callable[[World, Payments, Meter], Awaitable[Order]], OrderState]] = {
    "release": (release, OrderState.COMPLETED),
    "refund after decline": (refund, OrderState.REFUNDED),
    "refund, vendor silent": (silent_vendor, OrderState.REFUNDED),
    "dispute split": (split, OrderState.RESOLVED),
    "timeout claim": (claim, OrderState.CLAIMED),
}


def _setup(root: Path) -> Regtest:
    node = Regtest(root / "bitcoind")
    node.start()
    for name in ("miner", "buyer", "vendor", "moderator"):
        node.create_wallet(name)
    node.mine(101, to_wallet="miner")
    node.cli("sendmany", "", {node.address("buyer"): btc(COIN) for _ in range(30)}, wallet="miner")
    node.mine(1)
    return node


async def _render(root: Path, node: Regtest, rounds: int) -> None:
    """GET /order/<token> (HTML and .json) of an order with a 500-entry history, on the real node app."""
    async with open_shop(root / "shop", node) as shop:
        order, token = await shop.payments.checkout(shop.store, CheckoutForm(**buyer_fields(node, shop)))
        entries = tuple(
            HistoryEntry(at=order.created_at + i, state=order.state, note=f"note {i}: " + "x" * 60) for i in range(499)
        )
        await shop.payments.store.update(dataclasses.replace(order, history=order.history + entries))
        url = f"{shop.url}/order/{token}"
        async with aiohttp.ClientSession() as session:
            for suffix in ("", ".json"):
                times = []
                for _ in range(rounds + 1):
                    started = time.perf_counter()
                    async with session.get(url + suffix) as reply:
                        body = await reply.read()
                        if reply.status != 200:
                            raise RuntimeError(f"GET /order/<token>{suffix}: HTTP {reply.status}")
                    times.append(time.perf_counter() - started)
                times = times[1:]  # the first warms the template cache
                label = "order page" if not suffix else "order .json"
                print(
                    f"{label} with a 500-entry history: median {statistics.median(times) * 1000:.1f} ms, "
                    f"max {max(times) * 1000:.1f} ms over {rounds} GETs ({len(body)} bytes)"
                )


def _reason(exc: BaseException) -> str:
    """The refusal with its numbers folded ("only N left"), so refusals group by kind."""
    message = getattr(exc, "message", None) or str(exc)
    return f"{type(exc).__name__}: {re.sub(r'[0-9]+', 'N', message)}"


async def _one(p: Payments, store: str, form: CheckoutForm, started: float) -> tuple[Order | str, float]:
    """(the placed order, or why it was refused; seconds from the common start to the answer)."""
    try:
        order, _ = await p.checkout(store, form)
        return order, time.perf_counter() - started
    except PasarError as exc:
        return _reason(exc), time.perf_counter() - started


async def _no_oversell(w: World, p: Payments, placed: list[Order], units: int) -> None:
    """Raise unless the order store holds exactly the placed orders and their units fit in stock."""
    stored = [
        o
        for o in await p.store.list(store=w.store_onion, limit=10 * len(placed) + 10)
        if o.item.listing_id == w.listing_id
    ]
    sold = sum(o.item.qty for o in stored)
    held = sum((await p.store.committed(w.store_onion, w.listing_id)).values())
    left = (await p.available(w.store_onion, w.listing_id)).get(None)
    print(
        f"  order store: {len(stored)} orders for the listing, {sold} units in them, stock table committed {held}, "
        f"{left} left of {units}"
    )
    if {o.id for o in stored} != {o.id for o in placed}:
        raise RuntimeError("the order store does not hold exactly the orders checkout returned")
    if sold > units or held != sold or left != units - sold:
        raise RuntimeError(f"stock oversold or miscounted: {sold} units in orders, {held} committed, {units} in stock")
    print(f"  no stock oversold: {sold} units placed <= {units} in stock")


def _calls(core: BitcoinCore, before: Counter[str]) -> Counter[str]:
    made = Counter(core.calls)
    made.subtract(before)
    return +made


def _by_method(calls: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(calls.items()))


async def _solo(w: World, p: Payments, node: Regtest) -> tuple[float, Counter[str], Counter[str]]:
    """One checkout alone (another listing): its seconds and the vendor's and moderator's RPCs by method."""
    solo = await w.market.add_listing(
        w.store_onion,
        {
            "title": "Warm-up socks",
            "price_sat": 100_000,
            "kind": "physical",
            "inventory": 5,
            "shipping": [{"name": "post", "regions": ["WORLDWIDE"], "price_sat": 5_000}],
        },
    )
    form = w.form(listing=solo["id"], buyer_pubkey=node.key("buyer"))
    v0, m0 = Counter(w.vendor.calls), Counter(w.moderator_core.calls)
    started = time.perf_counter()
    await p.checkout(w.store_onion, form)
    return time.perf_counter() - started, _calls(w.vendor, v0), _calls(w.moderator_core, m0)


async def _checkouts(root: Path, node: Regtest, n: int, max_unpaid: int, deadline: float) -> None:
    """``n`` checkouts at once through ``Payments.checkout`` for a listing of 60% of the units asked."""
    units = max(1, n * 3 // 5)
    vendor = node.adapter("vendor", "bench-watch-vendor-checkouts")
    moderator = node.adapter("moderator", "bench-watch-moderator-checkouts")
    await vendor.ensure_wallets()
    await moderator.ensure_wallets()
    cap = max_unpaid or 2 * n
    async with open_world(node, vendor, moderator, root / "checkouts", inventory=units, max_unpaid=cap) as w:
        p = w.payments()
        forms = [w.form(buyer_pubkey=node.key("buyer")) for _ in range(n)]  # a fresh buyer key each, made before
        alone, one_v, one_m = await _solo(w, p, node)
        v0, m0 = Counter(vendor.calls), Counter(moderator.calls)
        started = time.perf_counter()
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(_one(p, w.store_onion, f, started) for f in forms)), timeout=deadline
            )
        except TimeoutError as exc:
            raise RuntimeError(f"the {n} checkouts did not all answer within {deadline:g} s") from exc
        wall = time.perf_counter() - started
        made_v, made_m = _calls(vendor, v0), _calls(moderator, m0)
        placed = [r for r, _ in results if isinstance(r, Order)]
        refused = Counter(r for r, _ in results if isinstance(r, str))
        placed_at = sorted(t for r, t in results if isinstance(r, Order))
        print(
            f"concurrent checkouts: {n} at once through Payments.checkout, 1 unit each, listing of {units} units "
            f"(max_unpaid {cap}, a fresh buyer key each)"
        )
        last = placed_at[-1] if placed_at else wall
        print(
            f"  placed {len(placed)}, refused {sum(refused.values())}, all answered in {wall:.2f} s: "
            f"{len(placed) / last if placed_at else 0:.1f} orders/s placed (last placed at {last:.2f} s; "
            f"latency p50 {statistics.median(t for _, t in results):.2f} s, max {max(t for _, t in results):.2f} s)"
        )
        for reason, count in refused.most_common():
            print(f"  refused {count:>4} x {reason}")
        print(
            f"  one checkout alone: {alone * 1000:.0f} ms, vendor RPCs {sum(one_v.values())} "
            f"({_by_method(one_v)}), moderator RPCs {sum(one_m.values())} ({_by_method(one_m)})"
        )
        print(
            f"  the {n} at once: vendor RPCs {sum(made_v.values())} ({sum(made_v.values()) / n:.1f} per checkout, "
            f"{sum(made_v.values()) / max(1, len(placed)):.1f} per order placed; "
            f"{_by_method(made_v)}), "
            f"moderator RPCs {sum(made_m.values())} ({sum(made_m.values()) / n:.1f} per checkout)"
        )
        await _no_oversell(w, p, placed, units)
        unpaid = await p.store.count(store=w.store_onion, state=OrderState.AWAITING_PAYMENT)
        verdict = "within it" if unpaid <= cap else "EXCEEDED: the cap is checked before, not inside, the insert"
        print(f"  unpaid orders held by the store now: {unpaid} (max_unpaid {cap}: {verdict})")


async def _flows(root: Path, node: Regtest, orders: int) -> None:
    vendor = node.adapter("vendor", "bench-watch-vendor")
    moderator = node.adapter("moderator", "bench-watch-moderator")
    await vendor.ensure_wallets()
    await moderator.ensure_wallets()
    async with open_world(node, vendor, moderator, root / "world", inventory=10_000) as w:
        # One Payments for every order, as on a running node: a fresh one per order (a restart each) restarts
        # its ModeratorClient's seq at clock-ms + random(1000), and this world's clock stands still.
        p = w.payments()
        print(f"escrow flows on regtest, {orders} order(s) each; RPCs per order (vendor excl. polling)")
        print(f"{'flow':24} {'vendor RPCs':>11} {'moderator':>9} {'wall ms':>9}   vendor RPCs by method")
        for name, (flow, final) in FLOWS.items():
            meters = []
            for _ in range(orders):
                m = Meter(vendor, moderator)
                sent = await flow(w, p, m)
                node.mine(1)  # the payout is final at its first confirmation (the watcher's round sees it)
                await m.step(p.watch_once(), polling=True)
                done = await p.order(sent.id)
                if done.state is not final:
                    raise RuntimeError(f"{name}: the order ended {done.state}, not {final}")
                meters.append(m)
            calls = statistics.mean(sum(m.vendor_calls.values()) for m in meters)
            mod = statistics.mean(m.moderator_calls for m in meters)
            wall = statistics.median(m.seconds for m in meters) * 1000
            detail = ", ".join(
                f"{k} {v / orders:g}" for k, v in sorted(sum((m.vendor_calls for m in meters), Counter()).items())
            )
            print(f"{name:24} {calls:>11.1f} {mod:>9.1f} {wall:>9.0f}   {detail}")
        print("target: <= 20 vendor RPC calls for a normal release (issue 10)")


async def _run(root: Path, args: argparse.Namespace) -> None:
    node = _setup(root)
    try:
        if args.only in (None, "render"):
            await _render(root, node, args.renders)
        if args.only in (None, "flows"):
            await _flows(root, node, args.orders)
        if args.only in (None, "checkouts"):
            await _checkouts(root, node, args.checkouts, args.max_unpaid, args.deadline)
    finally:
        node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("flows", "checkouts", "render"), help="run one part only")
    parser.add_argument("--orders", type=int, default=3, help="orders per flow")
    parser.add_argument("--renders", type=int, default=20, help="GETs of the order page timed")
    parser.add_argument("--checkouts", type=int, default=100, help="checkouts at once (listing holds 60%% of them)")
    parser.add_argument("--max-unpaid", type=int, default=0, help="max_unpaid for the checkouts (0: twice --checkouts)")
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds the concurrent checkouts may take")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pasar-bench-escrow-") as tmp:
        try:
            asyncio.run(_run(Path(tmp), args))
        except Exception as exc:  # a benchmark reports what broke in one line
            print(f"bench_escrow failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
