"""The merchant's admin UI (HTML, no JavaScript), on the loopback admin listener."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ..core.errors import PasarError, Unauthorized, ValidationError
from ..core.models import StoreRecord
from ..market.listings import validate as validate_listing
from ..market.market import Market
from ..operations.stores import StoreSummary, summary
from . import admin_orders, appkeys, forms, render
from .api import WebContext
from .auth import COOKIE, SESSION, set_session_cookie
from .render import page

# After a redirect, ?done=<code> shows one of these (never text from the URL).
NOTICES = {
    "store-created": "Store created.",
    "profile-saved": "Profile saved.",
    "listing-saved": "Listing saved.",
    "listing-removed": "Listing removed.",
    "inventory-saved": "Inventory saved.",
    "access-saved": "Onion service settings saved; the onion is being published again.",
    "client-added": "Client key added. Give the new key to the invited buyer.",
    "client-removed": "Client key removed; it no longer opens this store.",
    "port-saved": "Port saved; the store's listener moved to it.",
    "store-deleted": (
        "Store deleted: its onion address is no longer published and its listener stopped. Its folder, "
        "with its key, was moved to the deleted/ folder of the data directory (move it back into stores/ "
        "while the node is stopped to restore it)."
    ),
}


def _market(request: web.Request) -> Market:
    return request.app[appkeys.MARKET]


def _summary(request: web.Request, record: StoreRecord) -> StoreSummary:
    return summary(WebContext(request.app), record)


def _see(request: web.Request, name: str, query: dict[str, str] | None = None, **parts: str) -> web.HTTPSeeOther:
    url = request.app.router[name].url_for(**parts)
    return web.HTTPSeeOther(url.with_query(query) if query else url)


def _page(request: web.Request, template: str, ctx: dict[str, Any], status: int = 200) -> web.Response:
    session = request.get(SESSION)
    notice = NOTICES.get(request.query.get("done", ""), "")
    base = {"csrf": session.csrf if session else "", "notice": notice, "tor": WebContext(request.app).tor()}
    return page(request, f"admin/{template}", {**base, **ctx}, status=status)


async def login_form(request: web.Request) -> web.Response:
    return _page(request, "login.html", {"error": ""})


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    try:
        sid = await request.app[appkeys.AUTH].login(str(form.get("password", "")))
    except Unauthorized as exc:
        return _page(request, "login.html", {"error": exc.message}, status=401)
    response = web.HTTPSeeOther(request.app.router["dashboard"].url_for())
    set_session_cookie(response, sid)
    raise response


async def logout(request: web.Request) -> web.Response:
    request.app[appkeys.AUTH].logout(request)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


async def _dashboard(
    request: web.Request, errors: dict[str, str], values: dict[str, str], status: int = 200
) -> web.Response:
    """The stores, the newest orders and the sales of the last 30 days (an SVG drawn here)."""
    stores = [_summary(request, s) for s in await _market(request).stores()]
    payments = await admin_orders.dashboard_parts(request.app)
    return _page(request, "dashboard.html", {"stores": stores, "errors": errors, "values": values, **payments}, status)


async def dashboard(request: web.Request) -> web.Response:
    return await _dashboard(request, {}, {})


async def create_store(request: web.Request) -> web.Response:
    form = await request.post()
    values = {"name": str(form.get("name", "")), "description": str(form.get("description", ""))}
    try:
        record = await _market(request).create_store(values)
    except ValidationError as exc:
        return await _dashboard(request, exc.fields, values, 422)
    raise _see(request, "store", {"done": "store-created"}, store=record["onion"])


async def _store_page(
    request: web.Request, onion: str, errors: dict[str, str], status: int = 200, typed: dict[str, Any] | None = None
) -> web.Response:
    """``typed``: a rejected profile form, shown again as entered."""
    market = _market(request)
    record = await market.store(onion)
    return _page(
        request,
        "store.html",
        {
            "store": _summary(request, record),
            "profile": {**record["profile"], **(typed or {})},
            "listings": await market.listings(onion),
            "access": market.access_options(record),
            "port_base": request.app[appkeys.CONFIG].store_port_base,
            "errors": errors,
        },
        status,
    )


async def store(request: web.Request) -> web.Response:
    return await _store_page(request, await _market(request).resolve(request.match_info["store"]), {})


async def update_profile(request: web.Request) -> web.Response:
    onion = await _market(request).resolve(request.match_info["store"])
    typed = forms.profile_input(await request.post())
    try:
        await _market(request).update_profile(onion, typed)
    except ValidationError as exc:
        return await _store_page(request, onion, exc.fields, 422, typed)
    raise _see(request, "store", {"done": "profile-saved"}, store=onion)


async def update_access(request: web.Request) -> web.Response:
    market = _market(request)
    onion = await market.resolve(request.match_info["store"])
    try:
        await market.set_access(onion, forms.access_input(await request.post()))
    except ValidationError as exc:
        return await _store_page(request, onion, exc.fields, 422)
    raise _see(request, "store", {"done": "access-saved"}, store=onion)


async def add_client(request: web.Request) -> web.Response:
    market = _market(request)
    onion = await market.resolve(request.match_info["store"])
    form = await request.post()
    try:
        await market.add_client(onion, {"name": str(form.get("client_name", ""))})
    except ValidationError as exc:
        return await _store_page(request, onion, {f"client_{k}": v for k, v in exc.fields.items()}, 422)
    raise _see(request, "store", {"done": "client-added"}, store=onion)


async def remove_client(request: web.Request) -> web.Response:
    market = _market(request)
    onion = await market.resolve(request.match_info["store"])
    await market.remove_client(onion, request.match_info["client"])
    raise _see(request, "store", {"done": "client-removed"}, store=onion)


async def update_port(request: web.Request) -> web.Response:
    market = _market(request)
    onion = await market.resolve(request.match_info["store"])
    form = await request.post()
    try:
        await market.set_port(onion, str(form.get("port", "")))
    except ValidationError as exc:
        return await _store_page(request, onion, exc.fields, 422)
    raise _see(request, "store", {"done": "port-saved"}, store=onion)


async def delete_store_form(request: web.Request) -> web.Response:
    """The confirmation page: what happens to the key, the onion and the listener."""
    market = _market(request)
    record = await market.store(request.match_info["store"])
    ctx = {"store": _summary(request, record), "data_dir": str(request.app[appkeys.CONFIG].data_dir)}
    return _page(request, "store_delete.html", ctx)


async def delete_store(request: web.Request) -> web.Response:
    market = _market(request)
    onion = await market.resolve(request.match_info["store"])
    await market.delete_store(onion, str((await request.post()).get("confirm", "")))
    raise _see(request, "dashboard", {"done": "store-deleted"})


async def _uploads(request: web.Request, onion: str, errors: dict[str, str]) -> list[str]:
    ids = []
    for field in (await request.post()).getall("images_upload", []):
        if isinstance(field, web.FileField) and field.filename:
            data = await asyncio.to_thread(field.file.read)
            if not data:
                continue
            try:
                ids.append((await _market(request).add_image(onion, data))["id"])
            except PasarError as exc:
                errors["images"] = f"{field.filename}: {exc.message}"
    return ids


async def _save_listing(request: web.Request, listing_id: str | None) -> web.Response:
    market, onion = _market(request), await _market(request).resolve(request.match_info["store"])
    form = await request.post()
    errors: dict[str, str] = {}
    kept = [str(i) for i in form.getall("keep_image", [])]
    images = kept + await _uploads(request, onion, errors)
    data, unreadable = forms.listing_input(form, images)
    errors.update(unreadable)
    try:
        if errors:  # don't save, but still report every other field's problem
            validate_listing(data, max_images=market.limits.max_images, now=market.now())
        else:
            await (market.update_listing(onion, listing_id, data) if listing_id else market.add_listing(onion, data))
            raise _see(request, "store", {"done": "listing-saved"}, store=onion)
    except ValidationError as exc:  # keep a line's own error over "box is empty"
        errors.update({k: v for k, v in exc.fields.items() if not any(e.startswith(k) for e in errors)})
    ctx = {"store": onion, "listing_id": listing_id, "values": forms.form_values(form, images), "errors": errors}
    return _page(request, "listing_form.html", ctx, 422)


async def new_listing(request: web.Request) -> web.Response:
    onion = await _market(request).resolve(request.match_info["store"])
    ctx = {"store": onion, "listing_id": None, "values": forms.blank_listing(), "errors": {}}
    return _page(request, "listing_form.html", ctx)


async def edit_listing(request: web.Request) -> web.Response:
    market = _market(request)
    onion = await market.resolve(request.match_info["store"])
    item = await market.listing(onion, request.match_info["id"])
    ctx = {"store": onion, "listing_id": item["id"], "values": forms.listing_values(item), "errors": {}}
    return _page(request, "listing_form.html", ctx)


async def create_listing(request: web.Request) -> web.Response:
    return await _save_listing(request, None)


async def update_listing(request: web.Request) -> web.Response:
    return await _save_listing(request, request.match_info["id"])


async def delete_listing(request: web.Request) -> web.Response:
    market = _market(request)
    onion = await market.resolve(request.match_info["store"])
    await market.remove_listing(onion, request.match_info["id"])
    raise _see(request, "store", {"done": "listing-removed"}, store=onion)


async def inventory(request: web.Request) -> web.Response:
    market = _market(request)
    onion = await market.resolve(request.match_info["store"])
    errors: dict[str, str] = {}
    if request.method == "POST":
        stock, errors = forms.inventory_input(await request.post())
        if not errors:
            try:
                await market.set_inventory(onion, stock)
            except ValidationError as exc:
                errors = exc.fields
        if not errors:
            raise _see(request, "inventory", {"done": "inventory-saved"}, store=onion)
    ctx = {"store": onion, "listings": await market.listings(onion), "errors": errors}
    return _page(request, "inventory.html", ctx, 422 if errors else 200)


async def image(request: web.Request) -> web.FileResponse:
    market = _market(request)
    onion = await market.resolve(request.match_info["store"])
    return web.FileResponse(
        market.image_path(onion, request.match_info["name"]), headers={"Content-Type": "image/jpeg"}
    )


async def css(request: web.Request) -> web.Response:
    return web.Response(body=request.app[appkeys.CSS], content_type="text/css")


def add_routes(app: web.Application) -> None:
    r, s = app.router, "/stores/{store}"
    r.add_get("/login", login_form, name="login")
    r.add_post("/login", login)
    r.add_post("/logout", logout, name="logout")
    r.add_get("/", dashboard, name="dashboard")
    r.add_post("/stores", create_store, name="store-create")
    r.add_get(s, store, name="store")
    r.add_post(f"{s}/profile", update_profile, name="store-profile")
    r.add_post(f"{s}/access", update_access, name="store-access")
    r.add_post(f"{s}/port", update_port, name="store-port")
    r.add_get(f"{s}/delete", delete_store_form, name="store-delete")
    r.add_post(f"{s}/delete", delete_store)
    r.add_post(f"{s}/clients", add_client, name="client-add")
    r.add_post(f"{s}/clients/{{client}}/delete", remove_client, name="client-remove")
    r.add_get(f"{s}/listings/new", new_listing, name="listing-new")
    r.add_post(f"{s}/listings", create_listing, name="listing-create")
    r.add_get(f"{s}/listings/{{id}}", edit_listing, name="listing-edit")
    r.add_post(f"{s}/listings/{{id}}", update_listing, name="listing-update")
    r.add_post(f"{s}/listings/{{id}}/delete", delete_listing, name="listing-delete")
    r.add_route("GET", f"{s}/inventory", inventory, name="inventory")
    r.add_post(f"{s}/inventory", inventory)
    r.add_get(f"{s}/images/{{name}}", image, name="admin-image")
    r.add_get("/static/style.css", css, name="css")
    r.add_get("/favicon.ico", render.no_favicon)
