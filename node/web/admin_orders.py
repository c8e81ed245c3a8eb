"""The admin's orders, disputes and moderation pages (POST forms with the admin CSRF token, no JavaScript).

Every vendor action (accept, decline, fulfill, release, refund, claim,
dispute, message) and every moderator action (the offer, deciding a
dispute) is a form here and an operation of ``node.operations.payments``
(the API and the CLI run the same calls). The dashboard's sales chart is an
SVG drawn on the server (``sales_chart``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..core.errors import PasarError, ValidationError
from ..operations import payments as P
from ..operations.base import NoInput
from ..operations.order_views import node_message_views, order_detail, order_view
from ..payments.models import Order, OrderState
from ..payments.orders import can
from . import appkeys
from .api import WebContext
from .auth import SESSION
from .render import page

NOTICES = {
    "accept": "Order accepted: ship it, then mark it fulfilled.",
    "decline": "Order declined: a refund signed by your wallet waits for the buyer's signature.",
    "fulfill": "Marked fulfilled: a release signed by your wallet waits for the buyer's signature.",
    "release": "Your wallet signed the payout; it is broadcast once every signature is there.",
    "refund": "Refund signed by your wallet; it waits for the buyer's signature.",
    "claim": "Timeout claim broadcast.",
    "dispute": "Dispute opened: the moderator has both statements.",
    "message": "Message sent.",
    "moderation-saved": "Moderation offer saved.",
    "decided": "Decision signed by your wallet: the winning side co-signs.",
}
CHART_DAYS = 30
DASHBOARD_ORDERS = 10
S = OrderState
# Where declining is called refunding: after the vendor accepted (or later).
_DECLINE = {S.AWAITING_PAYMENT, S.FUNDED, S.CONFIRMED, S.EXPIRED}


def when(ts: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts)) if ts else ""


def _page(request: web.Request, template: str, ctx: dict[str, Any], status: int = 200) -> web.Response:
    session = request.get(SESSION)
    notice = NOTICES.get(request.query.get("done", ""), "")
    base = {"csrf": session.csrf if session else "", "notice": notice, "tor": WebContext(request.app).tor()}
    return page(request, f"admin/{template}", {**base, "when": when, **ctx}, status=status)


def _see(request: web.Request, name: str, done: str, **parts: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(request.app.router[name].url_for(**parts).with_query({"done": done}))


def actions(order: Order) -> list[str]:
    """The vendor's actions that make sense for ``order`` now (the service checks again)."""
    found = []
    if can(order, S.ACCEPTED):
        found.append("accept")
    if can(order, S.FULFILLED):
        found.append("fulfill")
    if can(order, S.DECLINED) and (order.funding.paid_sat > 0 or order.state is not S.AWAITING_PAYMENT):
        found.append("decline" if order.state in _DECLINE else "refund")
    if order.pending is not None and "vendor" not in [p.value for p in order.pending.signed_by]:
        found.append("release")
    if can(order, S.DISPUTED):
        found.append("dispute")
    if can(order, S.CLAIMED):
        found.append("claim")
    return found


# -- the sales chart -----------------------------------------------------------
@dataclass(frozen=True)
class Bar:
    x: int
    y: int
    height: int
    day: str
    orders: int
    sats: int


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bar_width: int
    bars: list[Bar]
    max_sats: int
    total_orders: int
    total_sats: int
    first: str
    last: str


def sales_chart(days: list[tuple[str, int, int]], *, width: int = 600, height: int = 160) -> Chart:
    """Bar geometry for an inline SVG: one bar per day, its height the day's sats (paid orders)."""
    top = max((s for _, _, s in days), default=0)
    step = width // max(1, len(days))
    bars = []
    for i, (day, orders, sats) in enumerate(days):
        h = 0 if top == 0 else max(1 if sats else 0, round(sats * (height - 1) / top))
        bars.append(Bar(x=i * step, y=height - h, height=h, day=day, orders=orders, sats=sats))
    return Chart(
        width=step * len(days) or width,
        height=height,
        bar_width=max(1, step - 2),
        bars=bars,
        max_sats=top,
        total_orders=sum(o for _, o, _ in days),
        total_sats=sum(s for _, _, s in days),
        first=days[0][0] if days else "",
        last=days[-1][0] if days else "",
    )


async def dashboard_parts(app: web.Application) -> dict[str, Any]:
    """What the dashboard shows of payments: the newest orders, the sales chart and whether checkout is paused."""
    payments = app.get(appkeys.PAYMENTS)
    if payments is None:
        return {"orders": [], "chart": None, "paused": "payments are starting", "when": when}
    recent = (await payments.orders())[:DASHBOARD_ORDERS]
    return {
        "orders": [order_view(o) for o in recent],
        "chart": sales_chart(await payments.store.counts_by_day(None, CHART_DAYS)),
        "paused": await payments.paused(),
        "when": when,
    }


# -- orders ----------------------------------------------------------------------
PAGE_ORDERS = 100


async def orders(request: web.Request) -> web.Response:
    store, state = request.query.get("store", ""), request.query.get("state", "")
    offset = request.query.get("offset", "")
    ctx = WebContext(request.app)
    try:
        query = P.OrderQuery(store=store, state=state, limit=str(PAGE_ORDERS), offset=offset)
        found = await P.list_orders.call(ctx, query)
        problems: dict[str, str] = {}
    except ValidationError as exc:
        found, problems = [], exc.fields
    stores = {s["onion"]: s["profile"]["name"] for s in await ctx.market.stores()}
    skip = int(offset) if offset.isascii() and offset.isdigit() and not problems else 0
    pages = {"newer": max(0, skip - PAGE_ORDERS) if skip else None, "older": skip + len(found)}
    if len(found) < PAGE_ORDERS:
        pages["older"] = None
    view: dict[str, Any] = {"orders": found, "stores": stores, "store": store, "state": state}
    view["states"] = [s.value for s in S]
    view["pages"], view["skip"] = pages, skip
    return _page(request, "orders.html", {**view, "problems": problems}, 422 if problems else 200)


async def _order_page(request: web.Request, order_id: str, error: str = "", status: int = 200) -> web.Response:
    payments = request.app[appkeys.PAYMENTS]
    order = await payments.order(order_id)
    ship_to, messages = await payments.reveal(order)
    told = payments.node_messages
    node = node_message_views(*await told(order.id)) if told is not None else []
    ctx = {
        "order": order_detail(order, ship_to, messages, node),
        "actions": actions(order),
        "error": error,
        "paused": await payments.paused(),
    }
    return _page(request, "order.html", ctx, status)


async def order(request: web.Request) -> web.Response:
    return await _order_page(request, request.match_info["id"])


FIELDS = {"decline": "reason", "refund": "reason", "fulfill": "note", "dispute": "statement", "message": "text"}
OPS = {op.path.rsplit("/", 1)[1]: op for op in P.ORDER_ACTIONS}


async def order_action(request: web.Request) -> web.Response:
    order_id, verb = request.match_info["id"], request.match_info["action"]
    op = OPS.get(verb)
    if op is None:
        raise web.HTTPNotFound()
    form = await request.post()
    field = FIELDS.get(verb)
    body = {field: str(form.get(field, ""))} if field else {}
    try:
        await op.call(WebContext(request.app), P.OrderBody(order_id, body))
    except PasarError as exc:  # refused (a Conflict with the block height, a wallet error): say why on the page
        message = "; ".join(f"{k}: {v}" for k, v in exc.fields.items()) if isinstance(exc, ValidationError) else ""
        return await _order_page(request, order_id, message or exc.message, exc.status)
    raise _see(request, "order", verb, id=order_id)


# -- moderation ------------------------------------------------------------------
async def _moderation_page(
    request: web.Request, errors: dict[str, str], values: dict[str, Any] | None = None, status: int = 200
) -> web.Response:
    offer = await P.get_moderation.call(WebContext(request.app), NoInput())
    return _page(request, "moderation.html", {"offer": {**offer, **(values or {})}, "errors": errors}, status)


async def moderation(request: web.Request) -> web.Response:
    return await _moderation_page(request, {})


def _offer_form(form: Any) -> dict[str, Any]:
    """The form as the API's body: numbers stay text when they are not numbers (the service says so)."""
    body: dict[str, Any] = {"enabled": form.get("enabled") == "on", "terms": str(form.get("terms", ""))}
    for name in ("fee_percent", "fee_sat"):
        text = str(form.get(name, "")).strip() or "0"
        body[name] = int(text) if text.isascii() and text.isdigit() else text
    return body


async def save_moderation(request: web.Request) -> web.Response:
    body = _offer_form(await request.post())
    try:
        await P.set_moderation.call(WebContext(request.app), P.Body(body))
    except ValidationError as exc:
        return await _moderation_page(request, exc.fields, body, 422)
    raise _see(request, "moderation", "moderation-saved")


# -- disputes --------------------------------------------------------------------
async def _disputes_page(request: web.Request, errors: dict[str, str], status: int = 200) -> web.Response:
    cases = await P.list_disputes.call(WebContext(request.app), NoInput())
    return _page(request, "disputes.html", {"cases": cases, "errors": errors}, status)


async def disputes(request: web.Request) -> web.Response:
    return await _disputes_page(request, {})


def _number(form: Any, name: str) -> object:
    text = str(form.get(name, "")).strip()
    return int(text) if text.isascii() and text.isdigit() else text


async def decide(request: web.Request) -> web.Response:
    case_id, form = request.match_info["id"], await request.post()
    body = {"buyer_sat": _number(form, "buyer_sat"), "vendor_sat": _number(form, "vendor_sat")}
    try:
        await P.decide_dispute.call(WebContext(request.app), P.OrderBody(case_id, body))
    except ValidationError as exc:
        return await _disputes_page(request, {f"{case_id}.{k}": v for k, v in exc.fields.items()}, 422)
    except PasarError as exc:
        return await _disputes_page(request, {f"{case_id}.decision": exc.message}, exc.status)
    raise _see(request, "disputes", "decided")


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/orders", orders, name="orders")
    r.add_get("/orders/{id}", order, name="order")
    r.add_post("/orders/{id}/{action}", order_action, name="order-action")
    r.add_get("/moderation", moderation, name="moderation")
    r.add_post("/moderation", save_moderation, name="moderation-save")
    r.add_get("/disputes", disputes, name="disputes")
    r.add_post("/disputes/{id}/decide", decide, name="dispute-decide")
