"""The buyer's purchases pages (node/web/purchases.py): what each page shows for each state, rendered with the
real templates and routes from purchase views built here, and the checkout form from a real signed catalog
held in a real directory database.
"""

from __future__ import annotations

import html as htmllib
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web

from node.adapters import directory_schema
from node.adapters.sqlite import SQLiteDatabase
from node.app import templates_dir
from node.core.config import Config
from node.core.crypto import StoreKey
from node.core.errors import NotFound
from node.core.models import Listing, Profile
from node.discovery.catalogs import verify_catalog
from node.discovery.directory import Directory, DirectoryLimits
from node.discovery.models import Source
from node.market import catalog as market_catalog
from node.messaging.models import Delivery, InMessage, OutMessage
from node.operations.order_views import node_message_views, order_detail
from node.purchases.views import MessageView, PurchaseView
from node.web import admin, admin_orders, appkeys, directory, purchases, render
from node.web.purchase_offer import Offer, load_offer
from tests.regtest import Regtest
from tests.unit.order_helpers import order as make_order

from .conftest import PASSWORD
from .pages import check_headers, check_html
from .test_orders_api import Served, core_settings, node_wallet, prepare, serve

STORE = "a" * 56
MODERATOR = "b" * 56
NO_PAGES = {"newer": None, "older": None}
ESCROW = "bcrt1qescrowaddressxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"


def _app() -> web.Application:
    app = web.Application()
    admin.add_routes(app)
    admin_orders.add_routes(app)
    directory.add_admin_routes(app)
    purchases.add_routes(app)
    return app


APP = _app()
ENV = render.make_env(templates_dir())


def rendered(template: str, ctx: dict[str, Any]) -> str:
    base = {"app": APP, "csrf": "token123", "notice": "", "when": admin_orders.when, "btc": purchases.btc}
    html = ENV.get_template(f"admin/{template}").render({**base, **ctx})
    check_html(html, template)
    return html


def text(html: str) -> str:
    """The page's visible words, on one line each run of whitespace."""
    body = re.sub(r"<[^>]+>", " ", html[html.index("<main") :])
    return " ".join(htmllib.unescape(body).split())


def view(state: str, **extra: Any) -> PurchaseView:
    """A purchase as ``GET /purchases/<id>`` shows it."""
    base: dict[str, Any] = {
        "id": "0123456789abcdef0123456789abcdef", "state": state, "reason": "", "store": STORE, "listing": "mug",
        "listing_hash": "sha256:" + "0" * 64, "title": "Heron <mug>", "sku": None, "qty": 2, "shipping": "Post",
        "coupon": None, "moderator": MODERATOR, "priced_sat": 123_456, "amount_sat": 123_456,
        "escrow_address": None, "descriptor": None, "timeout_blocks": None, "vendor_address": "",
        "refund_address": "bcrt1qrefund", "pay_by": None, "paying": False, "paid_txid": None, "paid_sat": 0,
        "confirmations": 0, "created_at": 1_700_000_000, "updated_at": 1_700_000_000,
        "history": [{"at": 1_700_000_000, "state": "queued", "note": "order written to the outbox"}],
        "messages": [
            {"id": "1" * 32, "kind": "order", "delivery": "queued", "direction": "out", "at": 1_700_000_000},
        ],
        "pending_payout": None,
        "payout_refused": "",
        "disputed": False,
        "review": None,
    }  # fmt: skip
    return cast(PurchaseView, {**base, **extra})


def forms(html: str) -> list[str]:
    return re.findall(r'<form[^>]*action="([^"]+)"', html)


def test_a_queued_purchase_says_the_store_is_not_reachable_and_offers_no_payment() -> None:
    html = rendered("purchase.html", purchases.purchase_context(view("queued")))
    words = text(html)
    assert purchases.QUEUED_SENDING in words and "not reachable" not in words  # no attempt failed yet
    failed = {"id": "1" * 32, "kind": "order", "delivery": "queued", "direction": "out", "at": 1, "attempts": 2}
    tried = view("queued", messages=[{**failed, "reason": "the store's onion did not answer"}])
    words = text(rendered("purchase.html", purchases.purchase_context(tried)))
    assert "not reachable now (the store's onion did not answer)" in words
    no_tor = text(rendered("purchase.html", purchases.purchase_context(tried, tor=False)))
    assert "runs without tor: the order waits until it runs with tor" in no_tor and "not reachable" not in no_tor
    assert "nothing is paid before the store answers" in words
    assert "Heron <mug>" in words and "&lt;mug&gt;" in html  # escaped
    assert "queued" in words and "to the store" in words
    assert purchases.actions(view("queued")) == ["message"]
    assert [f.rsplit("/", 1)[1] for f in forms(html) if "/purchases/" in f] == ["message"]
    assert 'name="csrf" value="token123"' in html


def test_awaiting_payment_shows_the_exact_amount_and_address_and_sends_them_back() -> None:
    v = view("awaiting_payment", escrow_address=ESCROW, descriptor="wsh(...)", pay_by=int(time.time()) + 3600)
    html = rendered("purchase.html", purchases.purchase_context(v))
    words = text(html)
    assert "123,456 sats" in words and "0.00123456 BTC" in words and ESCROW in words
    assert "nothing is paid before the store answers" not in words
    pay = html[html.index('action="/purchases/0123456789abcdef0123456789abcdef/pay"') :]
    pay = pay[: pay.index("</form>")]
    assert f'name="address" value="{ESCROW}"' in pay and 'name="amount_sat" value="123456"' in pay
    assert "csrf" in pay
    # paid already: no second payment form
    assert "pay" not in purchases.actions({**v, "paid_txid": "ab" * 32})


def test_each_action_is_shown_only_when_it_applies() -> None:
    release = {"kind": "release", "outputs": [{"address": "bcrt1qv", "amount_sat": 120_000, "role": "vendor"}]}
    pending = {**release, "fee_sat": 300, "signed": False, "txid": None, "received_at": 1, "waiting": ""}
    fulfilled = view("fulfilled", escrow_address=ESCROW, paid_txid="ab" * 32, pending_payout=pending)
    assert purchases.actions(fulfilled) == ["release", "dispute", "message"]
    html = rendered("purchase.html", purchases.purchase_context(fulfilled))
    assert "Release the payment" in html and "120,000 sats" in text(html) and "Open a dispute" in html
    assert "Sign and send the review" not in html
    assert purchases.actions(view("completed")) == ["review"]
    reviewed = view("completed", review={"rating": 4, "text": "Good <mug>", "seq": 1})
    done = rendered("purchase.html", purchases.purchase_context(reviewed))
    assert "Update your review" in done and done.count('name="rating"') == 5 and "Good &lt;mug&gt;" in done
    assert 'value="4" required checked' in done
    assert "Message to the store" not in done
    assert purchases.actions(view("refunded", disputed=True)) == ["review"]
    assert purchases.actions(view("refunded")) == []
    # disputed already (by the buyer or reported by the store): no second dispute form
    assert purchases.actions({**fulfilled, "disputed": True}) == ["release", "message"]
    # not paid: nothing to dispute; past pay_by: no payment form
    assert "dispute" not in purchases.actions(view("accepted", escrow_address=ESCROW))
    late = view("awaiting_payment", escrow_address=ESCROW, pay_by=1_700_003_600)
    assert "pay" not in purchases.actions(late, now=1_700_003_600)
    assert "pay" in purchases.actions(late, now=1_700_003_599)
    refused = view("refused", reason="the price changed: it is now 130,000 sat; check out again")
    assert purchases.actions(refused) == []
    assert "Refused: the price changed: it is now 130,000 sat" in text(
        rendered("purchase.html", purchases.purchase_context(refused))
    )
    signed = view("fulfilled", escrow_address=ESCROW, pending_payout={**pending, "signed": True})
    assert "release" not in purchases.actions(signed)
    assert "pay" not in purchases.actions(
        view("awaiting_payment", escrow_address=ESCROW, paying=True, paid_txid="ab" * 32)
    )
    assert purchases.actions(view("placed")) == ["message"]


def test_a_refused_action_is_named_on_the_page() -> None:
    ctx = purchases.purchase_context(view("completed"), ("invalid input", {"rating": "a whole number from 1 to 5"}))
    words = text(rendered("purchase.html", ctx))
    assert "invalid input" in words and "rating: a whole number from 1 to 5" in words


def test_the_list_shows_state_store_title_amount_and_delivery() -> None:
    messages: list[MessageView] = [
        {"id": "1", "kind": "order", "delivery": "delivered", "direction": "out", "at": 1},
        {"id": "2", "kind": "message", "delivery": "failed: not delivered in 14 days", "direction": "out", "at": 2},
        {"id": "3", "kind": "escrow", "delivery": "delivered", "direction": "in", "at": 3},
    ]
    rows = [{**view("awaiting_payment", messages=messages), "delivery_summary": purchases.delivery_summary(messages)}]
    html = rendered("purchases.html", {"purchases": rows, "names": {STORE: "Heron shop"}, "pages": NO_PAGES, "skip": 0})
    words = text(html)
    assert "awaiting payment" in words and "Heron shop" in words and "2 × Heron <mug>" in words
    assert "123,456 sats" in words and "1 delivered, 1 failed" in words
    empty = {"purchases": [], "names": {}, "pages": NO_PAGES, "skip": 0}
    assert "No purchases yet" in text(rendered("purchases.html", empty))


# -- the checkout form from a real catalog held by a real directory ------------------------------------------
def _listing(now: int, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "mug", "created_at": now, "updated_at": now, "title": "Heron mug", "description": "A mug.",
        "description_format": "text", "kind": "physical", "price_sat": 40_000, "ref_price": None,
        "category": "Kitchen", "tags": [], "images": [], "inventory": None, "min_qty": 1, "max_qty": 5,
        "expires_at": None, "coupons": [{"code": "TEN", "percent": 10, "amount_sat": None}], "active": True,
        "shipping": [
            {"name": "Post", "regions": ["WORLDWIDE"], "price_sat": 2_500},
            {"name": "Courier", "regions": ["DE", "FR"], "price_sat": 9_000},
        ],
        "variants": [
            {"sku": "blue", "label": "Blue", "price_sat": None, "inventory": None},
            {"sku": "red", "label": "Red <b>", "price_sat": 45_000, "inventory": None},
        ],
    }  # fmt: skip
    return {**base, **fields}


async def _held(tmp_path: Path, key: StoreKey, profile: dict[str, Any]) -> tuple[Directory, SQLiteDatabase]:
    now = int(time.time())
    listings = [cast(Listing, _listing(now))]
    snap = market_catalog.build(key, cast(Profile, profile), listings, seq=1, now=now, ttl=86400)
    db = SQLiteDatabase(tmp_path / "directory.sqlite", directory_schema.MIGRATIONS, synchronous="NORMAL")
    await db.open()
    held = Directory(db, limits=DirectoryLimits.from_config(Config(data_dir=tmp_path)))
    await held.open()
    await held.index(verify_catalog(snap.envelope_bytes, store=key.onion, now=now), source=Source.DIRECT, etag=None)
    return held, db


PROFILE: dict[str, Any] = {
    "name": "Heron shop", "description": "", "policies": {}, "vacation": False, "display_unit": "sat",
    "moderators": [MODERATOR, "c" * 56], "escrow_timeout_blocks": 1000,
    "moderator_terms": [{"onion": MODERATOR, "fee_percent": 2, "fee_sat": 1000, "terms": "I decide in 7 days."}],
}  # fmt: skip


async def test_the_checkout_form_offers_what_the_signed_catalog_says(tmp_path: Path) -> None:
    key = StoreKey.generate()
    held, db = await _held(tmp_path, key, PROFILE)
    try:
        offer = await load_offer(held, key.onion, "mug")
        with pytest.raises(NotFound, match="no such listing"):
            await load_offer(held, key.onion, "plate")
        with pytest.raises(NotFound, match="pasar crawl"):
            await load_offer(held, STORE, "mug")
    finally:
        await db.close()
    assert isinstance(offer, Offer) and offer.store_name == "Heron shop" and offer.accepts_coupons
    assert [(v.sku, v.price_sat) for v in offer.variants] == [("blue", 40_000), ("red", 45_000)]
    assert [m.fee_percent for m in offer.moderators] == [2, None] and offer.timeout_blocks == 1000
    html = rendered("purchase_new.html", purchases.checkout_context(offer, {}))
    words = text(html)
    assert "Buy “Heron mug”" in words and "Red <b>: 45,000 sats" in words and "Courier: 9,000 sats" in words
    assert "fee 2% + 1,000 sats (1,800 sats on this item's price)" in words and "fee not published" in words
    assert "I decide in 7 days." in words and "1000 blocks" in words
    for name in ("store", "listing", "sku", "qty", "shipping", "moderator", "ship_to", "coupon", "csrf"):
        assert f'name="{name}"' in html, name
    assert f'name="store" value="{key.onion}"' in html and 'action="/purchases"' in html
    problem = ("invalid input: 2 problem(s)", {"qty": "at most 5", "ship_to": "required"})
    again = rendered(
        "purchase_new.html", purchases.checkout_context(offer, {"qty": "9", "shipping": "Courier"}, problem)
    )
    words = text(again)
    assert "qty: at most 5" in words and "ship to: required" in words
    assert 'value="9"' in again and 'value="Courier" required checked' in again
    assert "Place order" in html
    alone = text(rendered("purchase_new.html", purchases.checkout_context(replace(offer, moderators=()), {})))
    assert "names no moderator" in alone and "Place order" not in alone  # nothing it could take


# -- the pages of a running node: forms with Origin: null and the admin CSRF token ---------------------------
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def _buyer_node(regtest: Regtest, tmp_path: Path) -> tuple[Served, str]:
    """A node with payments on the regtest "buyer" wallet whose directory holds a store it cannot reach."""
    config = prepare(tmp_path / "buyer", core_settings(regtest, "buyer"))
    node = await serve(config, bitcoin=regtest.adapter("buyer", node_wallet(config)))
    key, now = StoreKey.generate(), int(time.time())
    snap = market_catalog.build(key, cast(Profile, PROFILE), [cast(Listing, _listing(now))], seq=1, now=now, ttl=86400)
    verified = verify_catalog(snap.envelope_bytes, store=key.onion, now=now)
    await node.app[appkeys.DIRECTORY].index(verified, source=Source.DIRECT, etag=None)
    return node, key.onion


async def test_the_checkout_form_places_a_queued_order_and_names_every_problem(
    regtest: Regtest, tmp_path: Path
) -> None:
    node, store = await _buyer_node(regtest, tmp_path)
    try:
        async with aiohttp.ClientSession(node.url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            async with s.post("/login", data={"password": PASSWORD}, allow_redirects=False) as r:
                assert r.status == 303
            async with s.get("/directory", params={"q": "heron"}) as r:
                html = await r.text()
                assert r.status == 200 and "Buy with this node" in html, html[-3000:]
            async with s.get("/purchases/new", params={"store": store, "listing": "mug"}) as r:
                html = await r.text()
                assert r.status == 200, html
                check_html(html, r.url, allow_loopback=True)
                check_headers(r)
            csrf = _CSRF.findall(html)[0]
            form = {"csrf": csrf, "store": store, "listing": "mug", "sku": "blue", "qty": "1", "shipping": "Post"}
            null = {"Origin": "null"}
            async with s.post("/purchases", data={**form, "ship_to": "R. Heron"}, headers=null) as r:
                words = text(await r.text())
                assert r.status == 422 and "moderator: required" in words, words
            bad = {**form, "qty": "9", "moderator": MODERATOR, "ship_to": "R. Heron"}
            async with s.post("/purchases", data=bad, headers=null) as r:
                page_ = await r.text()
                assert r.status == 422 and "qty" in text(page_), text(page_)
                assert ">R. Heron</textarea>" in page_ and 'value="9"' in page_
            async with s.post("/purchases", data={**bad, "qty": "2", "csrf": "forged"}, headers=null) as r:
                assert r.status == 403
            evil = {"Origin": "http://evil.example"}
            async with s.post("/purchases", data={**bad, "qty": "2"}, headers=evil, allow_redirects=False) as r:
                assert r.status == 403
            async with s.post("/purchases", data={**bad, "qty": "2"}, headers=null, allow_redirects=False) as r:
                assert r.status == 303, await r.text()
                where = r.headers["Location"]
            async with s.get(where) as r:
                html = await r.text()
                assert r.status == 200
                check_html(html, where, allow_loopback=True)
            words = text(html)
            assert purchases.QUEUED_NO_TOR in words and "Order placed" in words, words  # this node runs without tor
            purchase_id = where.split("?")[0].rsplit("/", 1)[1]
            act = f"/purchases/{purchase_id}"
            message = {"csrf": csrf, "text": "Gift wrap, please <b>"}
            async with s.post(f"{act}/message", data=message, headers=null, allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == f"{act}?done=message"
            async with s.post(f"{act}/pay", data={"csrf": csrf}, headers=null) as r:
                html = await r.text()
                assert r.status >= 400 and 'role="alert"' in html, html  # nothing to pay before the store answers
                assert "Confirm payment" not in html
            async with s.post(f"{act}/review", data={"csrf": csrf, "rating": "9"}, headers=null) as r:
                assert r.status == 422 and "rating: a whole number from 1 to 5" in text(await r.text())
            async with s.post(f"{act}/unknown", data={"csrf": csrf}, headers=null) as r:
                assert r.status == 404
            async with s.get(act) as r:
                html = await r.text()
                assert "Gift wrap, please &lt;b&gt;" in html and html.count('class="delivery">queued<') == 2
            async with s.get("/purchases") as r:
                words = text(await r.text())
                assert "Heron mug" in words and "queued" in words
        view = await node.api("GET", f"/purchases/{purchase_id}")
        assert view["state"] == "queued" and view["qty"] == 2 and view["sku"] == "blue"
        assert view["messages"][0]["delivery"] == "queued"
    finally:
        await node.stop()


def test_a_waiting_split_and_a_refused_payout_say_why() -> None:
    split = {"kind": "split", "outputs": [{"address": "bcrt1qm", "amount_sat": 1_000, "role": "moderator"}]}
    why = "a split is signed only in a dispute: it waits until you or the store open one"
    pending = {**split, "fee_sat": 300, "signed": False, "txid": None, "received_at": 1, "waiting": why}
    refused = "the split pays the moderator 140000 sat, more than its agreed fee of 1500 sat"
    v = view("fulfilled", escrow_address=ESCROW, pending_payout=pending, payout_refused=refused)
    words = text(rendered("purchase.html", purchases.purchase_context(v)))
    assert f"Not signed yet: {why}" in words
    assert f"refused the store's last payout and signed nothing: {refused}" in words


def test_the_vendors_order_page_lists_each_node_message_with_its_delivery() -> None:
    """A node order on the vendor's side: every signed message both ways, where it is (issue 11: on both sides)."""
    sold = make_order()
    sold = replace(sold, extra={**sold.extra, "channel": "node"})
    out = [
        OutMessage(
            id=f"{n}" * 32, order=sold.id, peer="p" * 56, kind=kind, seq=n, created_at=1_700_000_000 + n,
            delivery=delivery, reason=reason, attempts=a, next_try=0, raw=b"{}",
        )
        for n, kind, delivery, reason, a in (
            (1, "escrow", Delivery.DELIVERED, "", 0),
            (2, "state", Delivery.SENT, "", 1),
            (3, "payout", Delivery.QUEUED, "not delivered in 14 days", 9),
        )
    ]  # fmt: skip
    came = [
        InMessage(id="a" * 32, order=sold.id, sender="p" * 56, kind="order", seq=1, received_at=1_700_000_000,
                  body={}, applied="applied"),
        InMessage(id="b" * 32, order=sold.id, sender="p" * 56, kind="message", seq=3, received_at=1_700_000_009,
                  body={}, applied=""),
    ]  # fmt: skip
    detail = order_detail(sold, "", [], node_message_views(out, came))
    assert detail["channel"] == "node"
    html = rendered("order.html", {"order": detail, "actions": [], "error": "", "paused": None})
    words = text(html)
    section = words[words.index("Messages with the buyer's node") :]  # the section to the page's end
    assert "Messages with the buyer's node" in section
    for said in ("delivered", "sent", "failed: not delivered in 14 days", "waits for an earlier message"):
        assert said in section, said
    assert section.count("from the buyer") == 2 and section.count("to the buyer") == 3
