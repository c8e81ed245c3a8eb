"""Checkout and the buyer's order pages on a store's own listener (Tor Browser, JavaScript off).

The listing page is cached per catalog version (storefront ``_page``), but
what a sale changes is not in the catalog: the stock left after open orders,
whether payments are paused (Bitcoin Core down), the moderators that answer,
and the checkout form's token. So the cached page carries three marks
(``live('stock')``, ``live('variants')``, ``live('checkout')``) and every
request fills them from the blocks of ``checkout_form.html`` (about a
millisecond). The form token is therefore made per request: an HMAC
(``FormTokens``) over the store, the listing, a fresh nonce and the time,
valid four hours and until the node restarts. No token goes stale in a
cached page, and no key rotation is needed.

Checkout CSRF without accounts: the form token, plus ``check_same_origin``
(the store app's middleware; Tor Browser's ``Origin: null`` passes it and
the token decides). A form that fails the token is shown again empty, with a
fresh token. The token is not bound to the buyer's browser (there is no
account or cookie to bind it to): a site could fetch a fresh token itself and
serve a pre-filled form, which the same-origin check refuses in every browser
that sends ``Sec-Fetch-Site`` or a real ``Origin`` (all current ones).

What a buyer reads of a failure is our own refusal (a bad field, out of
stock, paused); a failure inside the node (Bitcoin Core's address or error,
the order database) is logged for the operator and shown as "paused". A form sent twice (a double
click over a slow Tor circuit) leads to the one order its first sending
placed (``OncePerForm``, keyed by the nonce).

An order is reached only through its secret token (``/order/<token>``; only
its hash is stored); the forms on that page are authorised by it. The page's
QR code is a PNG (Tor Browser at "Safest" draws no SVG); ``qr.svg`` is there too.
"""

from __future__ import annotations

import base64
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp_jinja2
from aiohttp import web
from markupsafe import Markup

from ..core.errors import NotFound, PasarError, StorageError, Unavailable, Unreachable, ValidationError, WalletError
from ..core.models import PublicListing
from ..market.catalog import Snapshot
from ..payments.models import Order
from ..payments.pricing import CheckoutForm
from . import appkeys, orderview, render
from .formtokens import FormTokens, OncePerForm

if TYPE_CHECKING:
    from ..payments.service import Payments

log = logging.getLogger(__name__)
CHECKOUT_TTL = 4 * 3600
FIELDS = ("listing", "sku", "qty", "shipping", "coupon", "moderator", "buyer_pubkey", "refund_address", "ship_to")
ORDER_PATH = "/order/{token:[A-Za-z0-9_-]{16,64}}"
ADMIN_APP: web.AppKey[web.Application] = web.AppKey("checkout_admin_app")
TOKENS: web.AppKey[FormTokens] = web.AppKey("checkout_tokens")
ONCE: web.AppKey[OncePerForm] = web.AppKey("checkout_once")
NONCE = re.compile(r"[A-Za-z0-9_-]{22,64}")
OFF = "Payments are off on this node, so orders cannot be placed here right now."
VACATION = "This store is on vacation: orders are paused."
PAUSED = "Payments are paused on this store right now; nothing was placed or paid. Please try again later."
NO_MODERATOR = "None of this store's moderators can be reached right now, so orders are paused. Try again later."
EXPIRED_FORM = (
    "This checkout form expired (a form is valid for four hours, and until the store's node restarts) "
    "or was not made by this store. Fill it in again below."
)
DONE = {
    "psbt": "Your signed PSBT was accepted.",
    "message": "Message sent.",
    "dispute": "Dispute opened: the moderator will look at both sides.",
}

_MARK = "\ue001" + secrets.token_hex(8)  # a private-use character and a per-process secret: no store text has it
SLOTS = ("stock", "variants", "checkout")
_SLOT = re.compile(re.escape(_MARK) + "(" + "|".join(SLOTS) + ")" + re.escape(_MARK))


def live(name: str) -> Markup:
    """Where the per-request part ``name`` goes in a cached listing page."""
    if name not in SLOTS:
        raise ValueError(f"no live part {name!r}")
    return Markup(_MARK + name + _MARK)  # noqa: S704 - our own mark, no user text


@dataclass
class CheckoutState:
    """The checkout form as it is shown again: what was entered, what is wrong, with which status."""

    listing_id: str
    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    problem: str = ""
    status: int = 200


def payments(request: web.Request) -> Payments | None:
    return request.app[ADMIN_APP].get(appkeys.PAYMENTS)


def _service(request: web.Request) -> Payments:
    found = payments(request)
    if found is None:
        raise Unavailable("payments are off on this node: orders cannot be shown right now, try again later")
    return found


def _field(form: Any, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def _subject(store: str, listing_id: str, nonce: str) -> str:
    return f"checkout/{store}/{listing_id}/{nonce}"


# -- the listing page's live parts ---------------------------------------------------
def _catalog_stock(item: PublicListing) -> dict[str | None, int | None]:
    if item["variants"]:
        return {v["sku"]: v["inventory"] for v in item["variants"]}
    return {None: item["inventory"]}


def _defaults(item: PublicListing, stock: dict[str | None, int | None], moderators: list[str]) -> dict[str, str]:
    free = [v["sku"] for v in item["variants"] if (stock.get(v["sku"]) or 0) > 0 or stock.get(v["sku"]) is None]
    return {
        "listing": item["id"],
        "qty": str(max(1, item["min_qty"])),
        "sku": free[0] if free else "",
        "shipping": item["shipping"][0]["name"] if len(item["shipping"]) == 1 else "",
        "moderator": moderators[0] if len(moderators) == 1 else "",
    }


def buyer_text(exc: PasarError) -> str:
    """What a buyer may read of ``exc``: our own refusals as they are, the node's internals never."""
    internal = isinstance(exc, (WalletError, StorageError)) or (
        exc.status >= 500 and not isinstance(exc, (Unavailable, Unreachable))
    )
    if internal:
        log.warning("a buyer's request failed inside the node (%s): %s", exc.code, exc.message)
        return PAUSED
    return exc.message


async def _live_context(
    request: web.Request, snap: Snapshot, item: PublicListing, state: CheckoutState
) -> dict[str, Any]:
    store, service = request.app[appkeys.STORE], payments(request)
    stock, options = _catalog_stock(item), None
    paused: str | None = OFF
    if service is not None:
        try:
            options = await service.checkout_options(store)
            paused = options.paused
            stock = await service.available(store, item["id"])
        except (Unavailable, StorageError) as exc:  # Core or the order database down: the page stays up, paused
            paused = buyer_text(exc)
    moderators = list(options.moderators) if options is not None else []
    if paused is None and snap.profile["vacation"]:
        paused = VACATION
    if paused is None and not moderators and "moderator" not in state.errors:
        paused = NO_MODERATOR  # (right after a moderator failed, the form stays: it says why, keeps what was typed)
    timeout = options.timeout_blocks if options is not None else 0
    nonce = secrets.token_urlsafe(16)
    return {
        "listing": item,
        "profile": snap.profile,
        "unit": snap.profile["display_unit"],
        "stock": stock,
        "in_stock": any(left is None or left > 0 for left in stock.values()),
        "paused": paused,
        "options": options,
        "moderators": moderators,
        "timeout_blocks": timeout,
        "timeout_days": orderview.days(timeout),
        "fee_text": orderview.fee_text,
        "values": {**_defaults(item, stock, [m.onion for m in moderators]), **state.values},
        "errors": state.errors,
        "problem": state.problem,
        "form_nonce": nonce,
        "form_token": request.app[TOKENS].issue(_subject(store, item["id"], nonce)),
    }


async def fill(request: web.Request, snap: Snapshot, body: bytes, state: CheckoutState) -> bytes:
    """The cached listing page ``body`` with its live parts rendered for this request."""
    parts = _SLOT.split(body.decode("utf-8"))
    item = snap.by_id.get(state.listing_id)
    if len(parts) == 1 or item is None:
        return body
    template = aiohttp_jinja2.get_env(request.app).get_template("checkout_form.html")
    ctx = template.new_context({"app": request.app, **await _live_context(request, snap, item, state)})
    slots = {name: "".join(template.blocks[name](ctx)) for name in SLOTS}
    return "".join(slots[part] if n % 2 else part for n, part in enumerate(parts)).encode("utf-8")


# -- POST /checkout ------------------------------------------------------------------
async def place_order(request: web.Request) -> CheckoutState:
    """Place the order and redirect (303) to its page, or say what to show again (the caller renders it)."""
    form = await request.post()
    values = {name: _field(form, name) for name in FIELDS}
    store, listing_id, nonce = request.app[appkeys.STORE], values["listing"].strip(), _field(form, "form_nonce")
    if not NONCE.fullmatch(nonce) or not request.app[TOKENS].valid(
        _field(form, "form_token"), _subject(store, listing_id, nonce)
    ):
        return CheckoutState(listing_id, problem=EXPIRED_FORM, status=403)
    service = payments(request)
    if service is None:
        return CheckoutState(listing_id, values, problem=OFF, status=503)
    if (await request.app[appkeys.MARKET].store(store))["profile"]["vacation"]:
        return CheckoutState(listing_id, values, problem=VACATION, status=503)

    async def place() -> str:
        return (await service.checkout(store, CheckoutForm(**values)))[1]

    try:
        token = await request.app[ONCE].run(nonce, place)
    except ValidationError as exc:
        return CheckoutState(listing_id, values, errors=exc.fields, problem=exc.headline, status=exc.status)
    except Unreachable as exc:  # the chosen moderator did not answer: offer the others
        return CheckoutState(listing_id, values, errors={"moderator": exc.message}, problem=exc.message, status=502)
    except PasarError as exc:  # out of stock (409), payments paused (503): nothing was created
        return CheckoutState(listing_id, values, problem=buyer_text(exc), status=exc.status)
    raise web.HTTPSeeOther(str(request.app.router["order"].url_for(token=token)))


# -- the order page and its twins ----------------------------------------------------
async def _order(request: web.Request) -> tuple[Payments, Order]:
    service = _service(request)
    return service, await service.by_token(request.app[appkeys.STORE], request.match_info["token"])


def _wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _back(request: web.Request, done: str, fragment: str = "") -> web.HTTPSeeOther:
    url = request.app.router["order"].url_for(token=request.match_info["token"]).with_query(done=done)
    return web.HTTPSeeOther(str(url.with_fragment(fragment or None)))


async def _order_page(
    request: web.Request, service: Payments, order: Order, *, status: int = 200, problem: str = "", **extra: Any
) -> web.Response:
    snap = await request.app[appkeys.MARKET].snapshot(request.app[appkeys.STORE])
    _, messages = await service.reveal(order)
    psbt = service.psbt_for_buyer(order)
    token = request.match_info["token"]
    ctx: dict[str, Any] = {
        "profile": snap.profile,
        "categories": snap.categories,
        "unit": snap.profile["display_unit"],
        "query": "",
        "order": order,
        "token": token,
        "listed": order.item.listing_id in snap.by_id,
        "view": orderview.OrderView.of(order, psbt=psbt, messages=messages),
        "timeout_days": orderview.days(order.escrow.timeout_blocks),
        "fee_text": orderview.fee_text,
        "done": DONE.get(request.query.get("done", ""), ""),
        "problem": problem,
        "values": {},
        **extra,
    }
    response = render.page(request, "order.html", ctx, status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


async def order_page(request: web.Request) -> web.Response:
    service, order = await _order(request)
    return await _order_page(request, service, order)


async def order_json(request: web.Request) -> web.Response:
    try:
        service, order = await _order(request)
    except PasarError as exc:
        return web.json_response(exc.to_json(), status=exc.status, headers={"Cache-Control": "no-store"})
    body = orderview.order_json(order, service.psbt_for_buyer(order))
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def qr(request: web.Request) -> web.Response:
    _, order = await _order(request)
    kind = request.match_info["kind"]
    body = orderview.qr_code(orderview.bip21(order.escrow.address, orderview.to_pay(order)), kind)
    content_type = "image/svg+xml" if kind == "svg" else "image/png"
    return web.Response(body=body, content_type=content_type, headers={"Cache-Control": "no-store"})


async def download_psbt(request: web.Request) -> web.Response:
    service, order = await _order(request)
    psbt, kind = service.psbt_for_buyer(order), request.match_info["kind"]
    if psbt is None or order.pending is None or order.pending.kind.value != kind:
        raise NotFound("no payout of that kind waits for your signature now: open the order page again")
    headers = {
        "Content-Disposition": f'attachment; filename="order-{order.id}-{kind}.psbt"',
        "Cache-Control": "no-store",
    }
    return web.Response(body=base64.b64decode(psbt), content_type="application/octet-stream", headers=headers)


def _psbt_fields(form: Any) -> tuple[bytes | None, str]:
    """(file bytes or None, pasted text): a file may come as ``psbt_file`` or, from scripts, as ``psbt``."""
    data, text = None, ""
    for name in ("psbt_file", "psbt"):
        value = form.get(name)
        if isinstance(value, web.FileField):
            data = data if data is not None else value.file.read(orderview.MAX_PSBT_BYTES + 1)
        elif name == "psbt" and isinstance(value, str):
            text = value
    return data, text


async def upload_psbt(request: web.Request) -> web.StreamResponse:
    try:
        service, order = await _order(request)
    except PasarError as exc:
        if _wants_json(request):
            return web.json_response(exc.to_json(), status=exc.status)
        raise
    data, text = _psbt_fields(await request.post())
    try:
        psbt = orderview.psbt_from_upload(data, text)
        order = await service.upload_psbt(request.app[appkeys.STORE], request.match_info["token"], psbt)
    except PasarError as exc:  # refused before anything was combined or sent: say why
        problem = buyer_text(exc)
        if _wants_json(request):
            return web.json_response({"error": problem, "code": exc.code}, status=exc.status)
        return await _order_page(request, service, order, status=exc.status, problem=problem, psbt_error=True)
    if _wants_json(request):
        return web.json_response(orderview.order_json(order, service.psbt_for_buyer(order)))
    raise _back(request, "psbt", "payout")


async def _text_form(
    request: web.Request,
    name: str,
    act: Callable[[Payments, str, str, str], Awaitable[Order]],
    done: str,
    fragment: str,
) -> web.Response:
    """A one-field form of the order page (a message, a dispute): done -> back to the page; refused -> the page
    again with the reason and what was typed."""
    service, order = await _order(request)
    text = _field(await request.post(), name)
    try:
        await act(service, request.app[appkeys.STORE], request.match_info["token"], text)
    except PasarError as exc:
        values = {name: text}
        return await _order_page(request, service, order, status=exc.status, problem=buyer_text(exc), values=values)
    raise _back(request, done, fragment)


async def message(request: web.Request) -> web.Response:
    return await _text_form(request, "text", lambda p, *a: p.buyer_message(*a), "message", "messages")


async def dispute(request: web.Request) -> web.Response:
    return await _text_form(request, "statement", lambda p, *a: p.buyer_dispute(*a), "dispute", "dispute")


def setup(app: web.Application, parent: web.Application) -> None:
    """The order routes of one store app; ``parent`` is the admin app, where the payments service lives."""
    app[ADMIN_APP] = parent
    app[TOKENS] = FormTokens(ttl=CHECKOUT_TTL)
    app[ONCE] = OncePerForm()
    order = ORDER_PATH
    app.router.add_get(order, order_page, name="order")
    app.router.add_get(order + ".json", order_json, name="order_json")
    app.router.add_get(order + "/qr.{kind:svg|png}", qr, name="order_qr")
    app.router.add_get(order + "/psbt/{kind:[a-z]{1,16}}.psbt", download_psbt, name="order_psbt_file")
    app.router.add_post(order + "/psbt", upload_psbt, name="order_psbt")
    app.router.add_post(order + "/message", message, name="order_message")
    app.router.add_post(order + "/dispute", dispute, name="order_dispute")
