"""Admin JSON API under /api/v1/ (bearer token; admin listener only).

One route per entry of ``node.operations.TABLE``; only what is truly web
(reading the body, multipart image uploads, the raw signed catalog) is here.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import operations as ops
from ..core.errors import BadRequest
from ..core.models import PublishState, StoreRecord, StoreStatus
from ..discovery.service import Discovery
from ..market.market import Market
from . import appkeys
from .bodies import read_form, read_json
from .middlewares import Handler

if TYPE_CHECKING:  # the running node's and the CLI's contexts build them; operations only call them
    from ..payments.moderation import ModeratorService
    from ..payments.service import Payments
    from ..purchases.service import Purchases

PREFIX = ops.PREFIX


class WebContext:
    """Operations as the running node sees them: its listeners, store statuses and tor."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    @property
    def market(self) -> Market:
        return self._app[appkeys.MARKET]

    def status(self, onion: str) -> StoreStatus:
        return self._app[appkeys.STATUS].get(onion, StoreStatus(PublishState.STOPPED))

    def local_url(self, record: StoreRecord) -> str | None:
        return self._app[appkeys.LISTENERS].get(record["onion"])

    def tor(self) -> ops.TorView:
        publisher = self._app.get(appkeys.PUBLISHER)
        if publisher is None:
            return {"mode": "off", "state": "stores are served on loopback only (pasar run --no-tor)"}
        return publisher.state.as_json()

    @property
    def discovery(self) -> Discovery:
        return self._app[appkeys.DISCOVERY]

    @property
    def payments(self) -> Payments:
        return self._app[appkeys.PAYMENTS]

    @property
    def moderation(self) -> ModeratorService:
        return self._app[appkeys.MODERATION]

    @property
    def purchases(self) -> Purchases:
        return self._app[appkeys.PURCHASES]


async def _upload(request: web.Request) -> bytes:
    """Raw image bytes as the body, or multipart with an ``image`` file field."""
    if not request.content_type.startswith("multipart/"):
        return await request.read()
    field = (await read_form(request)).get("image")
    if not isinstance(field, web.FileField):
        raise BadRequest("multipart upload needs a file field named 'image'")
    return await asyncio.to_thread(field.file.read)


async def _input(op: ops.Operation[Any, Any], request: web.Request) -> Any:
    """The operation's input from the path and the body; the store is found before the body is read."""
    args: dict[str, object] = {}
    for name in op.params:
        if name == "store" and name in op.path_params:  # 404 for an unknown store before the body is read
            args[name] = await request.app[appkeys.MARKET].resolve(request.match_info[name])
        elif name == "body":
            args[name] = await read_json(request) if request.body_exists or not op.optional_body else {}
        elif name == "data":
            args[name] = await _upload(request)
        elif name in op.path_params:
            args[name] = request.match_info[name]
        else:  # a filter from the query string
            args[name] = request.query.get(name, "")
    return op.input(**args)


def _handler(op: ops.Operation[Any, Any]) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        result = await op.call(WebContext(request.app), await _input(op, request))
        if op.status == 204:
            return web.Response(status=204)
        return web.json_response(result, status=op.status)

    return handle


async def get_catalog(request: web.Request) -> web.Response:
    """The store's signed catalog, byte for byte as published."""
    market = request.app[appkeys.MARKET]
    snap = await market.snapshot(await market.resolve(request.match_info["store"]))
    return web.Response(body=snap.envelope_bytes, content_type="application/json")


def add_routes(app: web.Application) -> None:
    for op in ops.TABLE:
        name = "api-" + op.name.replace("_", "-")
        if op.method == "GET":  # answers HEAD too
            app.router.add_get(PREFIX + op.path, _handler(op), name=name)
        else:
            app.router.add_route(op.method, PREFIX + op.path, _handler(op), name=name)
    app.router.add_get(f"{PREFIX}/stores/{{store}}/catalog", get_catalog, name="api-catalog")
