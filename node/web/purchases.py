"""The buyer's purchases pages on the admin listener (POST forms with the admin CSRF token, no JavaScript).

Every page calls the operation the JSON API runs (``node.operations.purchases``: ``GET /purchases``,
``POST /purchases``, ``POST /purchases/{id}/pay`` ...) and renders its JSON view (``PurchaseView``). Only
the checkout form reads the directory itself (``purchase_offer``): what a store's held signed catalog
offers is not an operation. ``add_routes(app)`` registers the pages.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from ..core.errors import NotFound, PasarError, Unavailable, ValidationError
from ..operations import purchases as PO
from ..payments.models import OrderState
from ..payments.orders import ALLOWED
from ..purchases.models import FINAL, REVIEWABLE, PurchaseState
from ..purchases.views import MessageView, PurchaseView
from . import appkeys
from .admin_orders import when
from .api import WebContext
from .auth import SESSION
from .directory_state import ONION
from .orderview import days, fee_text
from .purchase_offer import Offer, load_offer
from .render import page, sats

NOTICES = {
    "placed": "Order placed: your node sends it to the store and pays nothing before the store answers.",
    "pay": "Payment made from your wallet to the escrow address: its transaction is shown below.",
    "release": "Your wallet signed the release: the vendor is paid once it is broadcast.",
    "dispute": "Dispute opened: the moderator has your statement.",
    "review": "Review signed: it goes to the store and to the directories.",
    "message": "Message queued for the store.",
}
QUEUED_SENDING = "Sending the order to the store's node… nothing is paid before the store answers."
QUEUED_UNREACHABLE = (
    "The store's node is not reachable now ({reason}); your order is sent when it is; "
    "nothing is paid before the store answers."
)
QUEUED_NO_TOR = (
    "This node runs without tor: the order waits until it runs with tor (set tor_enabled and restart); "
    "nothing is paid before the store answers."
)


def queued_text(view: PurchaseView, *, tor: bool) -> str:
    """Why the order still waits in the outbox: no tor, an attempt failed (with its reason), or not tried yet."""
    order = next((m for m in view["messages"] if m.get("kind") == "order" and m.get("direction") == "out"), None)
    if not tor:
        return QUEUED_NO_TOR
    if order is not None and order.get("attempts", 0) > 0:
        return QUEUED_UNREACHABLE.format(reason=order.get("reason") or "the last attempt failed")
    return QUEUED_SENDING


FORM_FIELDS = ("store", "listing", "sku", "qty", "shipping", "moderator", "ship_to", "coupon")
ACTION_FIELDS: dict[str, tuple[str, ...]] = {
    "pay": ("address", "amount_sat"),
    "release": (),
    "dispute": ("statement",),
    "review": ("rating", "text"),
    "message": ("text",),
}
NUMBERS = ("qty", "amount_sat", "rating")
PAGE_PURCHASES = 100
S = OrderState
VENDOR_STATES = frozenset(s.value for s in OrderState)


# -- operations ---------------------------------------------------------------------
ACTIONS = {
    op.path.rsplit("/", 1)[1]: op
    for op in (PO.purchases_pay, PO.purchases_release, PO.purchases_dispute, PO.purchases_review, PO.purchases_message)
}


def _number(text: str) -> object:
    """A form field as the API's JSON would carry it: digits as a number, anything else as typed (refused there)."""
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) < 19 else text


def _form_body(form: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, object]:
    body: dict[str, object] = {}
    for name in names:
        value = form.get(name, "")
        text = value if isinstance(value, str) else ""
        if name in NUMBERS:
            body[name] = _number(text)
        elif name in ("sku", "shipping", "coupon"):
            body[name] = text.strip() or None
        else:
            body[name] = text
    return body


def _problem(exc: PasarError) -> tuple[str, dict[str, str]]:
    if isinstance(exc, ValidationError):
        return exc.headline, exc.fields
    return exc.message, {}


# -- what the pages show ------------------------------------------------------------
def delivery_summary(messages: Sequence[MessageView]) -> str:
    """The delivery states of the messages this node sent: "2 delivered, 1 queued" ("" when none)."""
    counts = Counter(m.get("delivery", "").split(":")[0] for m in messages if m.get("direction") == "out")
    order = ("queued", "sent", "delivered", "failed")
    return ", ".join(f"{counts[d]} {d}" for d in order if counts[d])


def actions(view: PurchaseView, now: int | None = None) -> list[str]:
    """The buyer's actions that make sense for the purchase now (the service checks again)."""
    state, found = view["state"], []
    open_window = view["pay_by"] is None or (now if now is not None else int(time.time())) < view["pay_by"]
    if state == S.AWAITING_PAYMENT and view["escrow_address"] and not view["paid_txid"] and open_window:
        found.append("pay")
    pending = view["pending_payout"]
    if pending is not None and pending["kind"] == "release" and not pending["signed"]:
        found.append("release")
    paid = bool(view["paid_txid"] or view["paid_sat"])
    if state in VENDOR_STATES and S.DISPUTED in ALLOWED[S(state)] and paid and not view["disputed"]:
        found.append("dispute")
    if state in REVIEWABLE or (state == S.REFUNDED and view["disputed"]):
        found.append("review")
    if state not in FINAL:
        found.append("message")
    return found


def btc(value: int) -> str:
    return sats(value, "BTC")


def _page(request: web.Request, template: str, ctx: dict[str, Any], status: int = 200) -> web.Response:
    session = request.get(SESSION)
    notice = NOTICES.get(request.query.get("done", ""), "")
    base = {"csrf": session.csrf if session else "", "notice": notice, "when": when, "btc": btc}
    return page(request, f"admin/{template}", {**base, **ctx}, status=status)


def _see(request: web.Request, name: str, done: str, **parts: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(request.app.router[name].url_for(**parts).with_query({"done": done}))


# -- list -----------------------------------------------------------------------------
async def _store_names(request: web.Request, stores: set[str]) -> dict[str, str]:
    """The stores' names as the directory knows them (a store it no longer holds shows as its address)."""
    directory, names = request.app.get(appkeys.DIRECTORY), dict[str, str]()
    if directory is None:
        return names
    for onion in sorted(stores):
        found = await directory.store(onion) if ONION.fullmatch(onion) else None
        if found is not None and found["name"]:
            names[onion] = found["name"]
    return names


async def purchases(request: web.Request) -> web.Response:
    offset = request.query.get("offset", "")
    skip = int(offset) if offset.isascii() and offset.isdigit() and len(offset) < 10 else 0
    query = PO.PurchaseQuery(limit=str(PAGE_PURCHASES), offset=str(skip))
    found = await PO.purchases_list.call(WebContext(request.app), query)
    rows = [{**p, "delivery_summary": delivery_summary(p["messages"])} for p in found]
    names = await _store_names(request, {p["store"] for p in found})
    pages = {
        "newer": max(0, skip - PAGE_PURCHASES) if skip else None,
        "older": skip + len(found) if len(found) >= PAGE_PURCHASES else None,
    }
    return _page(request, "purchases.html", {"purchases": rows, "names": names, "pages": pages, "skip": skip})


# -- checkout ---------------------------------------------------------------------------
def _defaults(offer: Offer) -> dict[str, str]:
    return {
        "store": offer.store,
        "listing": offer.listing,
        "qty": str(offer.min_qty),
        "sku": offer.variants[0].sku if len(offer.variants) == 1 else "",
        "shipping": offer.shipping[0].name if len(offer.shipping) == 1 else "",
        "moderator": offer.moderators[0].onion if len(offer.moderators) == 1 else "",
    }


async def _checkout_page(
    request: web.Request,
    store: str,
    listing: str,
    values: Mapping[str, str] | None = None,
    problem: tuple[str, dict[str, str]] = ("", {}),
    status: int = 200,
) -> web.Response:
    directory = request.app.get(appkeys.DIRECTORY)
    if directory is None:
        raise Unavailable("the directory is starting: try again in a moment")
    if not ONION.fullmatch(store) or not 0 < len(listing) <= 128:
        raise NotFound("open a listing from the directory to buy it (no such store or listing)")
    offer = await load_offer(directory, store, listing)
    return _page(request, "purchase_new.html", checkout_context(offer, values or {}, problem), status)


def checkout_context(
    offer: Offer, values: Mapping[str, str], problem: tuple[str, dict[str, str]] = ("", {})
) -> dict[str, Any]:
    """What ``purchase_new.html`` shows: the offer, what was typed (else the defaults) and every problem."""
    return {
        "offer": offer,
        "values": {**_defaults(offer), **values},
        "problem": problem[0],
        "errors": problem[1],
        "fee_text": fee_text,
        "timeout_days": days(offer.timeout_blocks) if offer.timeout_blocks else "",
    }


async def new_purchase(request: web.Request) -> web.Response:
    store = request.query.get("store", "").strip().lower().removesuffix(".onion")
    return await _checkout_page(request, store, request.query.get("listing", "").strip())


async def place(request: web.Request) -> web.Response:
    form = await request.post()
    body = _form_body(form, FORM_FIELDS)
    store, listing = str(body["store"]).strip().lower().removesuffix(".onion"), str(body["listing"]).strip()
    body["store"], body["listing"] = store, listing
    try:
        placed = await PO.purchases_place.call(WebContext(request.app), PO.NewPurchase(body))
    except PasarError as exc:  # refused, or the wallet is down: say every problem next to what was typed
        typed = {k: str(form.get(k, "")) for k in FORM_FIELDS if isinstance(form.get(k, ""), str)}
        return await _checkout_page(request, store, listing, typed, _problem(exc), exc.status)
    raise _see(request, "purchase", "placed", id=placed["id"])


# -- one purchase -----------------------------------------------------------------------
def purchase_context(
    view: PurchaseView, problem: tuple[str, dict[str, str]] = ("", {}), *, tor: bool = True
) -> dict[str, Any]:
    """What ``purchase.html`` shows of the operation's view (and of a refused action: ``problem``)."""
    return {
        "p": view,
        "actions": actions(view),
        "queued": view["state"] == PurchaseState.QUEUED,
        "queued_text": queued_text(view, tor=tor),
        "error": problem[0],
        "errors": problem[1],
    }


async def _purchase_page(
    request: web.Request, purchase_id: str, problem: tuple[str, dict[str, str]] = ("", {}), status: int = 200
) -> web.Response:
    view = await PO.purchases_show.call(WebContext(request.app), PO.PurchaseRef(purchase_id))
    tor = appkeys.HTTP in request.app  # the courier's outbound HTTP exists only with tor
    return _page(request, "purchase.html", purchase_context(view, problem, tor=tor), status)


async def purchase(request: web.Request) -> web.Response:
    return await _purchase_page(request, request.match_info["id"])


async def purchase_action(request: web.Request) -> web.Response:
    purchase_id, verb = request.match_info["id"], request.match_info["action"]
    names, op = ACTION_FIELDS.get(verb), ACTIONS.get(verb)
    if names is None or op is None:
        raise web.HTTPNotFound()
    body = _form_body(await request.post(), names)
    try:
        await op.call(WebContext(request.app), PO.PurchaseBody(purchase_id, body))
    except PasarError as exc:  # refused (not payable now, a wallet error): say why on the page
        return await _purchase_page(request, purchase_id, _problem(exc), exc.status)
    raise _see(request, "purchase", verb, id=purchase_id)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/purchases", purchases, name="purchases")
    r.add_post("/purchases", place, name="purchase-place")
    r.add_get("/purchases/new", new_purchase, name="purchase-new")
    r.add_get("/purchases/{id}", purchase, name="purchase")
    r.add_post("/purchases/{id}/{action}", purchase_action, name="purchase-action")
