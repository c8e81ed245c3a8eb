"""Admin JSON API under /api/v1/ (bearer token; admin listener only)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ..core.errors import BadRequest, NotFound
from ..hosting import client_auth
from ..market.market import Market
from . import appkeys
from .bodies import read_form, read_json

PREFIX = "/api/v1"


def _market(request: web.Request) -> Market:
    return request.app[appkeys.MARKET]


async def _store(request: web.Request) -> str:
    return await _market(request).resolve(request.match_info["store"])


def store_summary(request: web.Request, record: dict[str, Any]) -> dict[str, Any]:
    onion = record["onion"]
    return {
        "onion": onion,
        "address": f"{onion}.onion",
        "name": record["profile"]["name"],
        "seq": record["seq"],
        "local_url": request.app[appkeys.LISTENERS].get(onion),
        "status": request.app[appkeys.STATUS].get(onion, "stopped"),
        "invite_only": Market.access_options(record)["invite_only"],
        "port": record["port"],  # saved; None = a free port at each start
    }


def _detail(request: web.Request, record: dict[str, Any]) -> dict[str, Any]:
    return {
        **store_summary(request, record),
        "profile": record["profile"],
        "onion_service": client_auth.public_view(Market.access_options(record)),
    }


def tor_state(request: web.Request) -> dict[str, Any]:
    """The node's tor connection, for the API and the admin page."""
    publisher = request.app.get(appkeys.PUBLISHER)
    if publisher is None:
        return {"mode": "off", "state": "stores are served on loopback only (pasar run --no-tor)"}
    return publisher.state.as_json()


async def get_tor(request: web.Request) -> web.Response:
    return web.json_response(tor_state(request))


async def list_stores(request: web.Request) -> web.Response:
    stores = await _market(request).stores()
    return web.json_response([store_summary(request, s) for s in stores])


async def create_store(request: web.Request) -> web.Response:
    record = await _market(request).create_store(await read_json(request))
    return web.json_response(_detail(request, record), status=201)


async def get_store(request: web.Request) -> web.Response:
    record = await _market(request).store(request.match_info["store"])
    return web.json_response(_detail(request, record))


async def update_store(request: web.Request) -> web.Response:
    """Profile fields and/or ``"port"`` (a number or ``"auto"``; a running listener moves at once)."""
    market, onion = _market(request), await _store(request)
    record = await market.update_store(onion, await read_json(request))
    return web.json_response(_detail(request, record))


async def delete_store(request: web.Request) -> web.Response:
    """``{"confirm": "<the store's onion address>"}``; moves the store's folder to ``<data-dir>/deleted/``."""
    onion = await _store(request)
    body = await read_json(request) if request.body_exists else {}
    confirm = body.get("confirm") if isinstance(body, dict) else None
    gone = await _market(request).delete_store(onion, confirm)
    return web.json_response({"onion": gone.onion, "name": gone.name, "moved_to": str(gone.moved_to)})


async def update_access(request: web.Request) -> web.Response:
    """``{"invite_only": bool, "max_streams": int, "pow": bool}``, any subset; republishes the onion."""
    options = await _market(request).set_access(await _store(request), await read_json(request))
    return web.json_response(client_auth.public_view(options))


def _client_json(onion: str, client: dict[str, Any]) -> dict[str, Any]:
    return {**client, "auth_private": f"{onion}:descriptor:x25519:{client['private']}"}


async def get_client(request: web.Request) -> web.Response:
    """One client key with its private half, to give (again) to the invited buyer."""
    onion = await _store(request)
    options = Market.access_options(await _market(request).store(onion))
    for client in options["clients"]:
        if client["id"] == request.match_info["client"]:
            return web.json_response(_client_json(onion, client))
    raise NotFound(f"no client key {request.match_info['client']!r} in this store")


async def add_client(request: web.Request) -> web.Response:
    """A new client key ``{"name": ...}``; the reply carries the private key for the invited buyer."""
    onion = await _store(request)
    client = await _market(request).add_client(onion, await read_json(request))
    return web.json_response(_client_json(onion, client), status=201)


async def remove_client(request: web.Request) -> web.Response:
    await _market(request).remove_client(await _store(request), request.match_info["client"])
    return web.Response(status=204)


async def list_listings(request: web.Request) -> web.Response:
    return web.json_response(await _market(request).listings(await _store(request)))


async def add_listings(request: web.Request) -> web.Response:
    """One listing object, or ``{"listings": [...]}`` stored in one atomic write.

    Each may carry an ``import_key``: a listing whose key is already stored is
    skipped, so the reply (the listings stored) is then shorter than the
    request; one listing alone answers 409 instead.
    """
    onion, body = await _store(request), await read_json(request)
    if isinstance(body, dict) and set(body) == {"listings"} and isinstance(body["listings"], list):
        return web.json_response(await _market(request).add_listings(onion, body["listings"]), status=201)
    return web.json_response(await _market(request).add_listing(onion, body), status=201)


async def get_listing(request: web.Request) -> web.Response:
    return web.json_response(await _market(request).listing(await _store(request), request.match_info["id"]))


async def update_listing(request: web.Request) -> web.Response:
    onion, body = await _store(request), await read_json(request)
    return web.json_response(await _market(request).update_listing(onion, request.match_info["id"], body))


async def delete_listing(request: web.Request) -> web.Response:
    await _market(request).remove_listing(await _store(request), request.match_info["id"])
    return web.Response(status=204)


async def set_inventory(request: web.Request) -> web.Response:
    onion, body, listing_id = await _store(request), await read_json(request), request.match_info["id"]
    if not isinstance(body, dict):
        raise BadRequest('body must map SKU (or "" without variants) to a count or null')
    await _market(request).listing(onion, listing_id)  # 404 before 422 for a missing listing
    await _market(request).set_inventory(onion, {listing_id: body})
    return web.json_response(await _market(request).listing(onion, listing_id))


async def upload_image(request: web.Request) -> web.Response:
    """Raw image bytes as the body, or multipart with an ``image`` file field."""
    onion = await _store(request)
    if request.content_type.startswith("multipart/"):
        field = (await read_form(request)).get("image")
        if not isinstance(field, web.FileField):
            raise BadRequest("multipart upload needs a file field named 'image'")
        data = await asyncio.to_thread(field.file.read)
    else:
        data = await request.read()
    return web.json_response(await _market(request).add_image(onion, data), status=201)


async def get_catalog(request: web.Request) -> web.Response:
    snap = await _market(request).snapshot(await _store(request))
    return web.Response(body=snap.envelope_bytes, content_type="application/json")


def add_routes(app: web.Application) -> None:
    r, s, item = app.router, f"{PREFIX}/stores/{{store}}", f"{PREFIX}/stores/{{store}}/listings/{{id}}"
    r.add_get(f"{PREFIX}/stores", list_stores, name="api-stores")
    r.add_post(f"{PREFIX}/stores", create_store)
    r.add_get(s, get_store, name="api-store")
    r.add_patch(s, update_store)
    r.add_delete(s, delete_store)
    r.add_get(f"{PREFIX}/tor", get_tor, name="api-tor")
    r.add_patch(f"{s}/access", update_access, name="api-access")
    r.add_post(f"{s}/clients", add_client, name="api-clients")
    r.add_get(f"{s}/clients/{{client}}", get_client, name="api-client")
    r.add_delete(f"{s}/clients/{{client}}", remove_client)
    r.add_get(f"{s}/listings", list_listings, name="api-listings")
    r.add_post(f"{s}/listings", add_listings)
    r.add_get(item, get_listing, name="api-listing")
    r.add_put(item, update_listing)
    r.add_delete(item, delete_listing)
    r.add_put(f"{item}/inventory", set_inventory)
    r.add_post(f"{s}/images", upload_image, name="api-images")
    r.add_get(f"{s}/catalog", get_catalog, name="api-catalog")
