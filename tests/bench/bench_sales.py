"""Sales benchmark: order and stock writes, the next storefront page after a sale, concurrent checkouts.

Run from the repository root::

    .venv/bin/python tests/bench/bench_sales.py                      # about 2 minutes
    .venv/bin/python tests/bench/bench_sales.py --listings 2000 --orders 200 --rounds 10   # quick look
    .venv/bin/python tests/bench/bench_sales.py --only writes        # A and C only (no node)

A, writes (in this process): a fresh ``orders.sqlite`` (the node's schema,
``synchronous=FULL``) through the real ``OrderStore``; 1,000 orders placed
over 10,000 listings, then timed: an order state change (compare-and-set
update), a stock change (a checkout: stock check + reservation + order row,
one transaction) and a stock release (an order expires). Each is one durable
write (one fsync). Target <= 15 ms.

B, pages: a real node (``pasar run --no-tor``) with one store of 10,000
listings imported from CSV. Each round places an order for another listing
in the node's own ``orders.sqlite`` (as its checkout does), moves another
order's state, then fetches the store's home page and the ordered listing's
page over loopback HTTP. An order write does not touch the catalog, so the
catalog seq is unchanged and pages come from the page cache (the listing page
fills its stock-left part per request). For contrast, the same run makes a
few listing writes through the API (PUT .../inventory), the anchor's case,
and times the next home page. Target <= 50 ms.

C, concurrent checkouts: 100 checkouts at once through ``OrderStore.insert``
competing for fewer units than asked; prints orders/s and checks that no
listing sold more than its inventory.

Anchors (issue 10, NOTES.md): a listing write took about 110 ms and the next
storefront page about 0.84 s with 10,000 listings.

This is a benchmark, not a test: it asserts nothing about timing and exits 0
unless something broke. Every process it starts is stopped by PID, every wait
is bounded, all traffic goes to 127.0.0.1, and the data directories are
temporary ones removed afterwards. pytest does not collect this file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import hashlib
import inspect
import json
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import procs
from bench_instore_search import START_TIMEOUT, store_url
from bench_storefront import http, make_listings
from procs import BenchError, pasar

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from node.adapters.payments_schema import FILE_NAME, open_order_db  # noqa: E402
from node.core.errors import Conflict  # noqa: E402
from node.core.models import Listing, Sats  # noqa: E402
from node.payments import orders as machine  # noqa: E402
from node.payments.models import Escrow, KeyRef, ModeratorTerms, Order, OrderState  # noqa: E402
from node.payments.order_store import OrderStore  # noqa: E402
from node.payments.pricing import CheckoutForm, Reservation, price  # noqa: E402

ANCHOR_WRITE_MS, ANCHOR_PAGE_S = 110, 0.84
TARGET_WRITE_MS, TARGET_PAGE_MS = 15, 50
STORE = "s" * 56
AWAITING = OrderState.AWAITING_PAYMENT
KEY = KeyRef("02" + "ab" * 32, "[d34db33f/84h/1h/0h/0/7]")
DESCRIPTOR = (
    "wsh(or_d(multi(2," + ",".join([KEY.descriptor_key()] * 3) + "),and_v(v:pk(" + KEY.pubkey + "),older(6480))))"
)


# -- records ---------------------------------------------------------------------
def fake_listing(n: int, inventory: int | None, now: int) -> Listing:
    return {
        "id": f"l{n:011d}",
        "created_at": now - 86_400,
        "updated_at": now - 86_400,
        "title": f"Bench item #{n}",
        "description": "x" * 200,
        "description_format": "text",
        "kind": "digital",
        "price_sat": Sats(50_000 + n),
        "ref_price": None,
        "category": "Bench",
        "tags": [],
        "images": [],
        "shipping": [],
        "variants": [],
        "inventory": inventory,
        "min_qty": 1,
        "max_qty": None,
        "expires_at": None,
        "coupons": [],
        "active": True,
    }


def new_order(store: str, listing: Listing, now: int, qty: int = 1) -> tuple[Order, Reservation]:
    """An order as checkout stores it: priced by the real pricing code, escrow fields of realistic size."""
    form = CheckoutForm(listing=listing["id"], qty=str(qty), ship_to="Bench street 1, 12345 Town")
    item, res = price(listing, form, now=now, store=store)
    order = Order(
        id=secrets.token_hex(8),
        store=store,
        token_hash=hashlib.sha256(secrets.token_bytes(24)).hexdigest(),
        state=OrderState.AWAITING_PAYMENT,
        created_at=now,
        updated_at=now,
        item=item,
        amount_sat=item.total_sat,
        refund_address="bcrt1q" + "q" * 38,
        ship_to_sealed=secrets.token_urlsafe(120),
        escrow=Escrow(KEY, KEY, KEY, KEY, 6480, DESCRIPTOR + "#abcdefgh", "bcrt1q" + "p" * 58),
        moderator=ModeratorTerms("m" * 56, KEY, 2, Sats(0), "sha256:" + "0" * 64),
        pay_by=now + 7200,
    )
    return order, res


# -- timing helpers ----------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms_line(label: str, values: list[float], target: str, anchor: str) -> str:
    if not values:
        return f"  {label:44} (no samples)"
    p50, p99 = 1e3 * pct(values, 0.5), 1e3 * pct(values, 0.99)
    return f"  {label:44} p50 {p50:8.2f} ms  p99 {p99:8.2f} ms  n={len(values):<5} {target:>10}  {anchor}"


async def timed(fn: Callable[[], Awaitable[object]], into: list[float]) -> object:
    t0 = time.perf_counter()
    result = await fn()
    into.append(time.perf_counter() - t0)
    return result


# -- A: writes -------------------------------------------------------------------------
async def part_writes(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    now = int(time.time())
    listings = [fake_listing(n, 1_000, now) for n in range(args.listings)]
    db = await open_order_db(work / FILE_NAME)
    store = OrderStore(db)
    rng = random.Random(5)
    placed: list[Order] = []
    inserts: list[float] = []
    try:
        for _ in range(args.orders):  # the 1,000 orders: each a checkout (stock + order row)
            order, res = new_order(STORE, rng.choice(listings), now)
            t0 = time.perf_counter()
            placed.append(await store.insert(order, res))
            inserts.append(time.perf_counter() - t0)
        states: list[float] = []
        for order in rng.sample(placed, min(args.samples, len(placed))):
            funded = machine.transition(order, OrderState.FUNDED, now=now + 1, note="0-conf seen")
            await timed(lambda f=funded: store.update(f, expect_state=AWAITING), states)
        releases: list[float] = []
        unpaid = [o for o in placed if (await store.get(o.id)).state is OrderState.AWAITING_PAYMENT]
        for order in unpaid[: args.samples]:
            expired = machine.transition(order, OrderState.EXPIRED, now=now + 7201, note="not paid in time")
            await timed(lambda e=expired: store.update(e, expect_state=AWAITING), releases)
        reads: list[float] = []
        for order in rng.sample(placed, min(args.samples, len(placed))):
            lst = listings[int(order.item.listing_id[1:])]
            await timed(lambda lst=lst: store.available(STORE, lst), reads)
        opened: list[float] = []
        await timed(OrderStore(db).open_orders, opened)  # a fresh OrderStore (as after a restart): all decoded
        again: list[float] = []
        for order in rng.sample(
            placed, min(10, len(placed))
        ):  # a watcher poll after a few changes: the rest decoded before
            await store.update(machine.with_extra(await store.get(order.id), "poll", "1", now=now + 2))
            await timed(store.open_orders, again)
        opened_again = again
    finally:
        await db.close()
    size = (work / FILE_NAME).stat().st_size
    return {
        "inserts": inserts,
        "states": states,
        "releases": releases,
        "reads": reads,
        "open": opened,
        "open_again": opened_again,
        "size": size,
    }


# -- C: concurrent checkouts ----------------------------------------------------------
async def part_concurrent(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    now = int(time.time())
    inventory = 20
    listings = [fake_listing(n, inventory, now) for n in range(3)]  # 60 units for 100 checkouts
    db = await open_order_db(work / "concurrent.sqlite")
    store = OrderStore(db)
    try:
        rng = random.Random(7)
        batch = [
            new_order(STORE, rng.choice(listings), now, qty=rng.choice((1, 1, 1, 2))) for _ in range(args.concurrent)
        ]

        async def checkout(order: Order, res: Reservation) -> bool:
            try:
                await store.insert(order, res)
            except Conflict:
                return False
            return True

        t0 = time.perf_counter()
        done = await asyncio.gather(*(checkout(o, r) for o, r in batch))
        wall = time.perf_counter() - t0
        sold: dict[str, int] = {}
        for order in await store.list(STORE, limit=10 * args.concurrent):
            sold[order.item.listing_id] = sold.get(order.item.listing_id, 0) + order.item.qty
        committed = {lst["id"]: (await store.committed(STORE, lst["id"])).get(None, 0) for lst in listings}
    finally:
        await db.close()
    oversold = sum(max(0, n - inventory) for n in sold.values())
    if oversold or committed != {k: sold.get(k, 0) for k in committed}:
        raise BenchError(f"stock broken: sold {sold}, committed {committed}, inventory {inventory} each")
    asked = sum(r.qty for _, r in batch)
    return {"wall": wall, "accepted": sum(done), "refused": len(done) - sum(done), "sold": sold,
            "asked": asked, "units": inventory * len(listings), "oversold": oversold}  # fmt: skip


# -- B: the next storefront page --------------------------------------------------------
def write_csv(path: Path, listings: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["title", "price_sat", "kind", "category", "tags", "description", "inventory"])
        for x in listings:
            row = [x["title"], x["price_sat"], x["kind"], x["category"], ", ".join(x["tags"]), x["description"], 50]
            out.writerow(row)


def get(url: str, into: list[float]) -> bytes:
    t0 = time.perf_counter()
    status, body = http("GET", url)
    into.append(time.perf_counter() - t0)
    if status != 200:
        raise BenchError(f"GET {url} -> {status}")
    return bytes(body)


def api(admin_port: int, data_dir: Path) -> tuple[str, dict[str, str]]:
    token = (data_dir / "admin.token").read_text().strip()
    return f"http://127.0.0.1:{admin_port}/api/v1", {"Authorization": f"Bearer {token}"}


async def sales_rounds(args: argparse.Namespace, data_dir: Path, base: str, listings: list[Listing]) -> dict[str, Any]:
    """Each round: a checkout and a state change in the node's orders.sqlite, then the next pages."""
    result: dict[str, list[float]] = {k: [] for k in ("insert", "state", "home", "listing_first", "listing_again")}
    db = await open_order_db(data_dir / FILE_NAME)  # the node's own file; a second writer process waits its turn
    store = OrderStore(db)
    rng = random.Random(11)
    now = int(time.time())
    previous: Order | None = None
    try:
        for lst in rng.sample(listings, min(args.rounds, len(listings))):
            order, res = new_order(args.store, lst, now)
            t0 = time.perf_counter()
            placed = await store.insert(order, res)
            result["insert"].append(time.perf_counter() - t0)
            if previous is not None:
                funded = machine.transition(previous, OrderState.FUNDED, now=now + 1)
                await timed(lambda f=funded: store.update(f, expect_state=AWAITING), result["state"])
            previous = placed
            await asyncio.to_thread(get, f"{base}/", result["home"])
            await asyncio.to_thread(get, f"{base}/listing/{lst['id']}", result["listing_first"])
            await asyncio.to_thread(get, f"{base}/listing/{lst['id']}", result["listing_again"])
    finally:
        await db.close()
    return result


def listing_writes(admin: str, auth: dict[str, str], base: str, store: str, ids: list[str], n: int) -> dict[str, Any]:
    """The anchor's case: a listing write through the API, then the next home page (the catalog changed)."""
    writes: list[float] = []
    pages: list[float] = []
    for i, listing_id in enumerate(ids[:n]):
        t0 = time.perf_counter()
        status, _ = http("PUT", f"{admin}/stores/{store}/listings/{listing_id}/inventory", {"": 40 + i}, auth)
        writes.append(time.perf_counter() - t0)
        if status != 200:
            raise BenchError(f"PUT inventory -> {status}")
        get(f"{base}/", pages)
    return {"writes": writes, "pages": pages}


def available_reads_storage() -> bool:
    """Whether the node's ``Payments.available`` reads the listing from storage (every listing page would)."""
    from node.payments import service

    method = getattr(getattr(service, "Payments", None), "available", None)
    return method is not None and "market.listing(" in inspect.getsource(method)


def node_main(argv: list[str]) -> int:
    """``pasar ARGS`` with ``Payments.available`` reading the catalog snapshot's view (bench only)."""
    from node.cli import main
    from node.core.errors import NotFound
    from node.payments.service import Payments

    async def available(self: Any, store: str, listing_id: str) -> dict[str | None, int | None]:
        item = (await self.ctx.market.snapshot(store)).by_id.get(listing_id)
        if item is None:
            raise NotFound(f"no listing {listing_id!r} in this store")
        return dict(await self.ctx.store.available(store, item))

    setattr(Payments, "available", available)  # noqa: B010 - the shim replaces a method in this process only
    return main(argv)


def node_rounds(args: argparse.Namespace, data_dir: Path, shim: bool) -> dict[str, Any]:
    with running_node(data_dir, shim) as (proc, admin_port):
        base = store_url(data_dir, admin_port)
        admin, auth = api(admin_port, data_dir)
        _, body = http("GET", f"{admin}/stores", headers=auth)
        onion = json.loads(body)[0]["onion"]
        _, body = http("GET", f"{admin}/stores/{onion}/listings", headers=auth)
        listings: list[Listing] = json.loads(body)
        warm: list[float] = []
        get(f"{base}/", warm)  # the first render after start (catalog built)
        get(f"{base}/", warm)
        args.store = onion
        rounds = asyncio.run(sales_rounds(args, data_dir, base, listings))
        contrast = None
        if not shim:
            contrast = listing_writes(admin, auth, base, onion, [x["id"] for x in listings[-10:]], args.listing_writes)
        if proc.poll() is not None:
            raise BenchError("the node died during the benchmark")
    return {**rounds, "warm": warm, "contrast": contrast}


def running_node(data_dir: Path, shim: bool) -> contextlib.AbstractContextManager[tuple[subprocess.Popen[bytes], int]]:
    head = [sys.executable, str(Path(__file__).resolve()), "_node"] if shim else [sys.executable, "-m", "node"]
    return procs.running_node(data_dir, head, start_timeout=START_TIMEOUT)


def part_pages(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    data_dir = work / "node"
    csv_path = work / "listings.csv"
    write_csv(csv_path, make_listings(args.listings, seed=3))
    env = {"PASAR_STORE_PORT_BASE": "0", "PASAR_LOG_LEVEL": "warning"}
    pasar(data_dir, "init", **env)
    pasar(data_dir, "store", "create", "Sales", **env)
    t0 = time.perf_counter()
    pasar(data_dir, "listing", "import", "--store", "Sales", str(csv_path), **env)
    print(f"  imported {args.listings} listings in {time.perf_counter() - t0:.1f} s", flush=True)
    result = node_rounds(args, data_dir, shim=False)
    shim = args.wiring == "shim" or (args.wiring == "auto" and available_reads_storage())
    result["shimmed"] = node_rounds(args, data_dir, shim=True) if shim else None
    return result


# -- report --------------------------------------------------------------------------------
def report(
    args: argparse.Namespace, w: dict[str, Any] | None, c: dict[str, Any] | None, p: dict[str, Any] | None
) -> None:
    wt, pt = f"<= {TARGET_WRITE_MS} ms", f"<= {TARGET_PAGE_MS} ms"
    anchor_w, anchor_p = f"(anchor: listing write {ANCHOR_WRITE_MS} ms)", f"(anchor: next page {ANCHOR_PAGE_S} s)"
    print(f"\nbench_sales: {args.listings} listings, {args.orders} orders")
    if w is not None:
        print(f"A. durable writes through OrderStore (orders.sqlite, synchronous=FULL, {w['size'] // 1024} KiB)")
        print(ms_line("order state change (compare-and-set)", w["states"], wt, anchor_w))
        print(ms_line("stock change: checkout (check+reserve+insert)", w["inserts"], wt, anchor_w))
        print(ms_line("stock change: release (order expires)", w["releases"], wt, anchor_w))
        print(ms_line("read: units available for a listing", w["reads"], "", ""))
        print(ms_line(f"read: open orders ({args.orders}), first time", w["open"], "", ""))
        print(ms_line("read: open orders again (1 changed each time)", w["open_again"], "", ""))
    if p is not None:
        print("B. next storefront page after a sale (real node, loopback HTTP, node's own orders.sqlite)")
        print(ms_line("checkout write while the node serves", p["insert"], wt, anchor_w))
        print(ms_line("order state change while the node serves", p["state"], wt, anchor_w))
        print(ms_line("next page: home", p["home"], pt, anchor_p))
        print(ms_line("next page: the ordered listing (first view)", p["listing_first"], pt, anchor_p))
        print(ms_line("next page: the same listing again", p["listing_again"], pt, anchor_p))
        print(ms_line("home right after start (first, then cached)", p["warm"], "", ""))
        if p["shimmed"] is not None:
            q = p["shimmed"]
            print(
                "   the same node, Payments.available reading the catalog snapshot (bench shim, not the node's code):"
            )
            print(ms_line("next page: the ordered listing (first view)", q["listing_first"], pt, anchor_p))
            print(ms_line("next page: the same listing again", q["listing_again"], pt, anchor_p))
            print(ms_line("next page: home", q["home"], pt, anchor_p))
        print("   contrast, the anchor's case in this run (the catalog changes):")
        print(ms_line("listing write through the API (PUT inventory)", p["contrast"]["writes"], "", anchor_w))
        print(ms_line("next home page after it", p["contrast"]["pages"], "", anchor_p))
    if c is not None:
        rate = c["accepted"] / c["wall"] if c["wall"] else 0.0
        print(f"C. {args.concurrent} concurrent checkouts through OrderStore.insert")
        print(f"  {c['accepted']} placed, {c['refused']} refused (out of stock) in {1e3 * c['wall']:.0f} ms: "
              f"{args.concurrent / c['wall']:.0f} checkouts/s, {rate:.0f} orders placed/s")  # fmt: skip
        print(f"  units asked {c['asked']}, in stock {c['units']}, sold per listing {sorted(c['sold'].values())}, "
              f"oversold {c['oversold']}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_node"]:
        return node_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listings", type=int, default=10_000)
    parser.add_argument("--orders", type=int, default=1_000)
    parser.add_argument("--samples", type=int, default=300, help="timed writes of each kind in part A")
    parser.add_argument("--rounds", type=int, default=40, help="sales (and page fetches) in part B")
    parser.add_argument("--listing-writes", type=int, default=3, help="API listing writes for contrast in part B")
    parser.add_argument("--concurrent", type=int, default=100)
    parser.add_argument("--only", choices=("writes", "pages"), default=None)
    parser.add_argument(
        "--wiring",
        choices=("auto", "as-is", "shim"),
        default="auto",
        help="part B again with listing stock read from the catalog snapshot (auto: when the node reads storage)",
    )
    args = parser.parse_args(argv)
    args.store = ""
    work = Path(tempfile.mkdtemp(prefix="pasar-bench-sales-"))
    try:
        w = c = p = None
        if args.only in (None, "writes"):
            w = asyncio.run(part_writes(args, work))
            c = asyncio.run(part_concurrent(args, work))
        if args.only in (None, "pages"):
            p = part_pages(args, work)
        report(args, w, c, p)
    except BenchError as exc:
        print(f"bench_sales: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
