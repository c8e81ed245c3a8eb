"""Checkout and the buyer's order page over real HTTP, as Tor Browser with JavaScript off would use them.

Real everything (tests/integration/checkout_nodes.py): a vendor node and a moderator node in process,
a regtest bitcoind with a wallet per party. The buyer is a plain HTTP client on the store's own
listener; it takes its key and refund address from the "buyer" wallet, pays from it, and signs the
payout PSBT in it with ``walletprocesspsbt`` (outside Pasar) before uploading it.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from node.core.errors import ValidationError
from node.payments.models import OrderState
from node.web import appkeys, checkout, orderview
from node.web.formtokens import FormTokens
from tests.regtest import Regtest

from .checkout_nodes import PRICE, SHIPPING, TERMS, TIMEOUT_BLOCKS, Shop, buyer_fields, free_port, open_shop
from .pages import check_headers, check_html

AMOUNT = PRICE + SHIPPING
WATCH_DEADLINE = 20.0
JSON_FIELDS = {
    "state",
    "history",
    "escrow_address",
    "amount_sat",
    "paid_sat",
    "descriptor",
    "timeout_blocks",
    "refund_address",
    "moderator",
    "pending",
}
_TOKEN = re.compile(r'name="form_token" value="([^"]+)"')
_NONCE = re.compile(r'name="form_nonce" value="([^"]+)"')


@pytest.fixture
async def shop(tmp_path: Path, regtest: Regtest) -> AsyncIterator[Shop]:
    async with open_shop(tmp_path, regtest) as opened:
        yield opened


async def page(url: str) -> tuple[aiohttp.ClientResponse, str]:
    async with aiohttp.ClientSession() as s, s.get(url, allow_redirects=False) as r:
        return r, await r.text()


async def form_keys(shop: Shop, listing: str) -> dict[str, str]:
    """The checkout form's hidden token and nonce, from the listing page as a buyer gets it."""
    _, html = await page(f"{shop.url}/listing/{listing}")
    token, nonce = _TOKEN.search(html), _NONCE.search(html)
    assert token and nonce, html[-3000:]
    return {"form_token": token.group(1), "form_nonce": nonce.group(1)}


async def post(url: str, data: object, headers: dict[str, str] | None = None) -> tuple[aiohttp.ClientResponse, str]:
    async with aiohttp.ClientSession() as s, s.post(url, data=data, headers=headers, allow_redirects=False) as r:
        return r, await r.text()


async def place(shop: Shop, regtest: Regtest, **overrides: str) -> str:
    """Check out like Tor Browser in its safest mode (``Origin: null``); the order's path."""
    fields = buyer_fields(regtest, shop, **overrides)
    fields.update(await form_keys(shop, fields["listing"]))
    resp, body = await post(f"{shop.url}/checkout", fields, {"Origin": "null"})
    assert resp.status == 303, body[-3000:]
    location = resp.headers["Location"]
    assert re.fullmatch(r"/order/[A-Za-z0-9_-]{32}", location), location
    return location


async def order_json(shop: Shop, path: str) -> dict[str, object]:
    async with aiohttp.ClientSession() as s, s.get(f"{shop.url}{path}.json") as r:
        assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
        body: dict[str, object] = await r.json()
        return body


async def watch_until(shop: Shop, path: str, check: Callable[[dict[str, object]], bool]) -> dict[str, object]:
    """Run the payment watcher until the order's JSON passes ``check`` (Core's wallet sees a payment a moment
    after ``sendtoaddress`` returns: its notifications are asynchronous)."""
    deadline = time.monotonic() + WATCH_DEADLINE
    while True:
        await shop.payments.watch_once()
        view = await order_json(shop, path)
        if check(view):
            return view
        assert time.monotonic() < deadline, f"the order never got there: {view}"
        await asyncio.sleep(0.1)


async def pay_and_confirm(shop: Shop, regtest: Regtest, path: str, sat: int = AMOUNT) -> None:
    view = await order_json(shop, path)
    regtest.fund("buyer", str(view["escrow_address"]), sat)
    regtest.mine(1)
    await watch_until(shop, path, lambda v: v["state"] == OrderState.CONFIRMED.value)


async def test_the_listing_page_carries_the_checkout_form(shop: Shop) -> None:
    url = f"{shop.url}/listing/{shop.listings['Blue heron print']}"
    for _ in range(2):  # rendered, then from the page cache: the live parts are filled in both times
        resp, html = await page(url)
        assert resp.status == 200
        check_headers(resp)
        check_html(html, url)
        assert '<form class="checkout-form" method="post" action="/checkout">' in html
        assert _TOKEN.search(html) and "\ue001" not in html
        assert f'name="moderator" value="{shop.moderator_onion}"' in html and "fee 2%" in html and TERMS in html
        assert f"{TIMEOUT_BLOCKS} blocks" in html and "5 available" in html
        assert 'getnewaddress "" bech32' in html and "getaddressinfo" in html
        assert "Bitcoin Core 26 or newer" in html and "Electrum 4.3.4" in html
        for name in ("qty", "shipping", "buyer_pubkey", "refund_address", "ship_to"):
            assert f'name="{name}"' in html, name
    _, poster = await page(f"{shop.url}/listing/{shop.listings['Egret poster']}")
    assert re.search(r'<option value="A3"[^>]* disabled>\s*A3 size: 60,000 sats \(sold out\)', poster), poster
    assert re.search(r'<option value="A2" selected>\s*A2 size: 90,000 sats \(2 left\)', poster)


async def test_bad_fields_show_the_form_again_with_every_reason(shop: Shop, regtest: Regtest) -> None:
    listing = shop.listings["Blue heron print"]
    fields = buyer_fields(regtest, shop, buyer_pubkey="02zz", refund_address="bc1qnotthisnetwork", qty="9")
    fields.update(await form_keys(shop, listing))
    resp, html = await post(f"{shop.url}/checkout", fields)
    assert resp.status == 422, html[-2000:]
    check_headers(resp)
    check_html(html)
    for name in ("buyer_pubkey", "refund_address", "qty"):
        assert f'id="e-{name}"' in html, name
    assert "R. Heron, 1 Estuary Lane" in html and 'value="02zz"' in html  # what the buyer typed is kept
    assert _TOKEN.search(html)  # with a fresh token, ready to send again
    assert await shop.orders() == []


async def test_forged_or_cross_site_checkouts_are_refused(shop: Shop, regtest: Regtest) -> None:
    listing = shop.listings["Blue heron print"]
    fields = buyer_fields(regtest, shop, ship_to="Attacker's drop box")
    resp, html = await post(f"{shop.url}/checkout", fields)  # no form token
    assert resp.status == 403 and "expired" in html
    assert "drop box" not in html and fields["buyer_pubkey"] not in html  # a forged post is not echoed back
    assert _TOKEN.search(html)
    other = await form_keys(shop, shop.listings["Egret poster"])  # a token for another listing
    resp, _ = await post(f"{shop.url}/checkout", {**fields, **other})
    assert resp.status == 403
    good = {**fields, **await form_keys(shop, listing)}
    resp, _ = await post(f"{shop.url}/checkout", {**good, "form_nonce": "x" * 22})  # the token names another form
    assert resp.status == 403
    resp, _ = await post(f"{shop.url}/checkout", good, {"Origin": "http://evil.example"})
    assert resp.status == 403
    resp, _ = await post(f"{shop.url}/checkout", good, {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"})
    assert resp.status == 403
    tokens = shop.vendor[appkeys.RUNNERS][shop.store].app[checkout.TOKENS]
    old = FormTokens(tokens.secret, clock=lambda: time.time() - checkout.CHECKOUT_TTL - 60)
    stale = old.issue(f"checkout/{shop.store}/{listing}/{'n' * 22}")
    resp, _ = await post(f"{shop.url}/checkout", {**fields, "form_token": stale, "form_nonce": "n" * 22})
    assert resp.status == 403  # older than four hours
    assert await shop.orders() == []


async def test_a_form_sent_twice_places_one_order(shop: Shop, regtest: Regtest) -> None:
    fields = buyer_fields(regtest, shop)
    fields.update(await form_keys(shop, fields["listing"]))
    first, second = await asyncio.gather(*(post(f"{shop.url}/checkout", fields) for _ in range(2)))
    assert first[0].status == second[0].status == 303
    assert first[0].headers["Location"] == second[0].headers["Location"]
    resp, _ = await post(f"{shop.url}/checkout", fields)  # and again later
    assert resp.status == 303 and resp.headers["Location"] == first[0].headers["Location"]
    assert len(await shop.orders()) == 1
    again = {**fields, **await form_keys(shop, fields["listing"])}  # a new form: a new order
    resp, _ = await post(f"{shop.url}/checkout", again)
    assert resp.status == 303 and resp.headers["Location"] != first[0].headers["Location"]
    assert len(await shop.orders()) == 2


async def test_an_unreachable_moderator_creates_nothing_and_says_so(shop: Shop, regtest: Regtest) -> None:
    listing = shop.listings["Blue heron print"]
    _, html = await page(f"{shop.url}/listing/{listing}")
    assert "5 available" in html
    shop.offline.add(shop.moderator_onion)
    fields = {**buyer_fields(regtest, shop), **await form_keys(shop, listing)}
    resp, html = await post(f"{shop.url}/checkout", fields)
    assert resp.status == 502, html[-2000:]
    assert 'id="e-moderator"' in html and "R. Heron, 1 Estuary Lane" in html  # the form, kept, names the problem
    assert await shop.orders() == [] and "5 available" in html  # no order, no stock held
    shop.offline.clear()
    _, html = await page(f"{shop.url}/listing/{listing}")
    assert (
        "moderators can be reached right now, so orders are paused" in html
    )  # off the form until it is asked again (FAILED_OFFER_TTL)
    shop.payments.ready.forget(shop.moderator_onion)  # a minute later: asked again, answers
    resp, _ = await post(f"{shop.url}/checkout", {**fields, **await form_keys(shop, listing)})
    assert resp.status == 303


async def test_order_page_payment_request_underpaid_then_topped_up_with_a_surplus(shop: Shop, regtest: Regtest) -> None:
    _, before = await page(f"{shop.url}/listing/{shop.listings['Blue heron print']}")
    path = await place(shop, regtest)
    _, after = await page(f"{shop.url}/listing/{shop.listings['Blue heron print']}")
    assert "5 available" in before and "4 available" in after  # the cached page's stock is live
    resp, html = await page(shop.url + path)
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    check_headers(resp)
    check_html(html, path)
    view = await order_json(shop, path)
    assert set(view) == JSON_FIELDS
    address = str(view["escrow_address"])
    assert view["state"] == "awaiting_payment" and view["amount_sat"] == AMOUNT and view["paid_sat"] == 0
    assert view["timeout_blocks"] == TIMEOUT_BLOCKS and view["moderator"] == shop.moderator_onion
    assert view["pending"] is None and str(view["descriptor"]).startswith("wsh(or_d(multi(2,")
    assert re.search(r"#[a-z0-9]{8}$", str(view["descriptor"]))
    assert address in html and "42,500 sats" in html and "0.00042500" in html
    assert f'href="bitcoin:{address}?amount=0.000425"' in html
    assert f'src="{path}/qr.png"' in html and f'href="{path}/qr.svg"' in html  # Tor Browser "Safest" draws no SVG
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{shop.url}{path}/qr.svg") as r:
            svg = await r.read()
            assert r.status == 200 and r.content_type == "image/svg+xml"
            check_headers(r)
        async with s.get(f"{shop.url}{path}/qr.png") as r:
            png = await r.read()
            assert r.status == 200 and r.content_type == "image/png"
    assert svg.startswith(b"<svg") and b"<script" not in svg and b"style=" not in svg
    assert png.startswith(b"\x89PNG")

    regtest.fund("buyer", address, 30_000)
    await watch_until(shop, path, lambda v: v["paid_sat"] == 30_000)
    _, html = await page(shop.url + path)
    assert "12,500 sats still missing" in html and f"bitcoin:{address}?amount=0.000125" in html
    assert (await order_json(shop, path))["paid_sat"] == 30_000

    regtest.fund("buyer", address, 17_500)  # 5,000 more than the rest
    regtest.mine(1)
    view = await watch_until(shop, path, lambda v: v["state"] == "confirmed")
    _, html = await page(shop.url + path)
    assert view["paid_sat"] == AMOUNT + 5_000
    assert "You paid 5,000 sats more than the amount" in html and "still missing" not in html


async def test_release_signed_in_the_buyers_own_wallet_then_uploaded_as_a_file(shop: Shop, regtest: Regtest) -> None:
    path = await place(shop, regtest)
    await pay_and_confirm(shop, regtest, path)
    order = (await shop.orders())[0]
    await shop.payments.accept(order.id)
    await shop.payments.fulfill(order.id, "posted, tracking RR123")
    _, html = await page(shop.url + path)
    assert "Your signature is needed: Release the payment to the vendor" in html
    shown = re.search(r'<textarea id="psbt-out" class="mono psbt" rows="5" readonly>([^<]+)</textarea>', html)
    assert shown, html
    psbt = shown.group(1)
    view = await order_json(shop, path)
    assert view["pending"] == {"action": "release", "psbt": psbt}
    async with aiohttp.ClientSession() as s, s.get(f"{shop.url}{path}/psbt/release.psbt") as r:
        raw = await r.read()
        assert r.status == 200 and "attachment" in r.headers["Content-Disposition"]
    assert raw == base64.b64decode(psbt) and raw.startswith(b"psbt\xff")

    for bad, reason in (("hello", "not base64"), (base64.b64encode(b"not a psbt").decode(), "not a PSBT")):
        resp, html = await post(f"{shop.url}{path}/psbt", {"psbt": bad})
        assert resp.status == 422 and reason in html, html[-2000:]
    resp, html = await post(f"{shop.url}{path}/psbt", {"psbt": psbt})  # not signed by the buyer
    assert 400 <= resp.status < 500, html[-2000:]
    assert (await order_json(shop, path))["state"] == "fulfilled"

    signed = base64.b64decode(regtest.sign("buyer", psbt))
    form = aiohttp.FormData()
    form.add_field("psbt_file", signed, filename="signed.psbt", content_type="application/octet-stream")
    form.add_field("psbt", "")
    resp, html = await post(f"{shop.url}{path}/psbt", form)
    assert resp.status == 303, html[-2000:]
    assert resp.headers["Location"] == f"{path}?done=psbt#payout"
    view = await order_json(shop, path)
    assert view["state"] == "fulfilled" and view["pending"] is None  # broadcast: final once confirmed
    sent = (await shop.orders())[0]
    assert sent.pending is not None and sent.pending.txid and regtest.in_mempool(sent.pending.txid)
    _, html = await page(f"{shop.url}{path}?done=psbt")
    assert "Your signed PSBT was accepted." in html and "posted, tracking RR123" in html
    assert f"release payout broadcast, txid {sent.pending.txid}, waiting for a confirmation" in html
    regtest.mine(1)
    view = await watch_until(shop, path, lambda v: v["state"] == "completed")
    assert view["pending"] is None and (await shop.orders())[0].payouts[-1].txid == sent.pending.txid


async def test_refund_pasted_by_a_script_that_asks_for_json(shop: Shop, regtest: Regtest) -> None:
    path = await place(shop, regtest)
    await pay_and_confirm(shop, regtest, path)
    await shop.payments.decline((await shop.orders())[0].id, "out of paper")
    pending = (await order_json(shop, path))["pending"]
    assert isinstance(pending, dict) and pending["action"] == "refund"
    signed = regtest.sign("buyer", str(pending["psbt"]))
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{shop.url}{path}/psbt", data={"psbt": signed}, headers={"Accept": "application/json"}) as r,
    ):
        assert r.status == 200, await r.text()
        body = await r.json()
    assert body["state"] == "declined" and set(body) == JSON_FIELDS and body["pending"] is None
    regtest.mine(1)
    await watch_until(shop, path, lambda v: v["state"] == "refunded")


async def test_messages_and_a_dispute_from_the_order_page(shop: Shop, regtest: Regtest) -> None:
    path = await place(shop, regtest)
    resp, html = await post(f"{shop.url}{path}/message", {"text": "  "})
    assert resp.status == 422 and 'id="f-text"' in html
    resp, _ = await post(f"{shop.url}{path}/message", {"text": "Could you wrap it well?"})
    assert resp.status == 303 and resp.headers["Location"] == f"{path}?done=message#messages"
    order = (await shop.orders())[0]
    await shop.payments.vendor_message(order.id, "Of course.")
    _, html = await page(shop.url + path)
    assert "Could you wrap it well?" in html and "Of course." in html and "Vendor" in html
    assert "Open dispute" not in html  # nothing paid yet: nothing to dispute
    await pay_and_confirm(shop, regtest, path)
    _, html = await page(shop.url + path)
    assert "Open dispute" in html
    resp, _ = await post(f"{shop.url}{path}/dispute", {"statement": "It never arrived."})
    assert resp.status == 303
    _, html = await page(shop.url + path)
    assert "It never arrived." in html and (await order_json(shop, path))["state"] == "disputed"


async def test_no_orders_while_the_store_is_on_vacation(shop: Shop, regtest: Regtest) -> None:
    listing = shop.listings["Blue heron print"]
    fields = {**buyer_fields(regtest, shop), **await form_keys(shop, listing)}
    await shop.vendor[appkeys.MARKET].update_profile(shop.store, {"vacation": True})
    _, html = await page(f"{shop.url}/listing/{listing}")
    assert "This store is on vacation: orders are paused." in html and "checkout-form" not in html
    resp, html = await post(f"{shop.url}/checkout", fields)
    assert resp.status == 503 and "on vacation" in html
    assert await shop.orders() == []


async def test_unknown_orders_and_wrong_kinds_are_404(shop: Shop, regtest: Regtest) -> None:
    ghost = "/order/" + "A" * 32
    resp, html = await page(shop.url + ghost)
    assert resp.status == 404
    check_html(html)
    async with aiohttp.ClientSession() as s, s.get(f"{shop.url}{ghost}.json") as r:
        assert r.status == 404 and (await r.json())["code"] == "not_found"
    path = await place(shop, regtest)
    for kind in ("release", "refund", "nothing"):  # no payout waits for the buyer yet
        resp, html = await page(f"{shop.url}{path}/psbt/{kind}.psbt")
        assert resp.status == 404, kind
    resp, _ = await page(f"{shop.url}{path}.exe")
    assert resp.status == 404


async def test_checkout_says_payments_are_paused_while_core_is_down(tmp_path: Path, regtest: Regtest) -> None:
    dead = {"bitcoin_rpc_url": f"http://127.0.0.1:{free_port()}"}
    async with open_shop(tmp_path, regtest, vendor_flags=dead) as shop:
        listing = shop.listings["Blue heron print"]
        resp, html = await page(f"{shop.url}/listing/{listing}")
        assert resp.status == 200 and "Payments are paused" in html and "checkout-form" not in html
        check_html(html)
        store_app = shop.vendor[appkeys.RUNNERS][shop.store].app
        token = store_app[checkout.TOKENS].issue(f"checkout/{shop.store}/{listing}/{'n' * 22}")
        fields = {**buyer_fields(regtest, shop), "form_token": token, "form_nonce": "n" * 22}
        resp, html = await post(f"{shop.url}/checkout", fields)
        assert resp.status == 503 and "Payments are paused" in html
        assert await shop.orders() == []


def test_payment_request_text() -> None:
    assert orderview.btc(42_500) == "0.00042500" and orderview.btc(2 * 10**8 + 1) == "2.00000001"
    assert orderview.bip21("bcrt1qxyz", 42_500) == "bitcoin:bcrt1qxyz?amount=0.000425"
    assert orderview.bip21("bcrt1qxyz", 10**8) == "bitcoin:bcrt1qxyz?amount=1"
    assert orderview.fee_text(2, 0) == "2%" and orderview.fee_text(0, 1_000) == "1,000 sats"
    assert orderview.fee_text(1, 1) == "1% + 1 sat" and orderview.fee_text(0, 0) == "none"
    svg = orderview.qr_code("bitcoin:bcrt1qxyz?amount=0.000425", "svg")
    assert svg.startswith(b"<svg") and b"style" not in svg and b"script" not in svg
    assert orderview.qr_code("bitcoin:bcrt1qxyz?amount=0.000425", "png").startswith(b"\x89PNG")


def test_uploads_are_read_as_binary_base64_file_or_pasted_text() -> None:
    raw = b"psbt\xff" + bytes(range(40))
    text = base64.b64encode(raw).decode()
    assert orderview.psbt_from_upload(raw, "") == text
    assert orderview.psbt_from_upload(text.encode() + b"\n", "") == text
    assert orderview.psbt_from_upload(b"", text[:20] + "\n " + text[20:]) == text
    for data, pasted, reason in (
        (None, "", "choose the signed PSBT"),
        (None, "hello!", "not base64"),
        (None, base64.b64encode(b"not a psbt").decode(), "not a PSBT"),
        (b"\xff\xfe binary", "", "neither a binary PSBT"),
        (b"psbt\xff" + bytes(orderview.MAX_PSBT_BYTES), "", "larger than"),
    ):
        with pytest.raises(ValidationError) as err:
            orderview.psbt_from_upload(data, pasted)
        assert reason in err.value.fields["psbt"], (reason, err.value.fields)
