"""The node onion's own listener: gossip with peers, mirrors of other stores' catalogs, and moderation.

Moderation (docs/protocol.md, "Moderation"): the signed offer, key requests
and case messages from vendors' nodes, answered by this node's
``ModeratorService`` (absent: 404).

Served only here, never on a store onion or the admin listener, and nothing
else is: no admin page, no API. Every reply is JSON or bytes; errors are the
one error renderer's ``{"error", "code"}``.
"""

from __future__ import annotations

import hashlib
import logging
import re

from aiohttp import web

from ..core import crypto, envelope
from ..core.errors import (
    BadRequest,
    Misdirected,
    NotFound,
    PasarError,
    PayloadTooLarge,
    StorageError,
    Unavailable,
    WalletError,
)
from ..core.models import Envelope
from ..payments import moderation_wire
from ..payments.moderation import ModeratorService
from . import appkeys, middlewares, render
from .directory_state import DIRWEB, IMAGE_ID, ONION, DirectoryWeb
from .origin import check_same_origin
from .storefront import loopback_hosts

log = logging.getLogger(__name__)
GOSSIP_PATH = "/.well-known/pasar/gossip"
MIRROR_PATH = "/.well-known/pasar/mirror/{store}"
MAX_GOSSIP_BYTES = 256 * 1024
_ONION_HOST = re.compile(r"[a-z2-7]{56}\.onion(?::80)?")


def allowed_host(request: web.Request) -> bool:
    """The app's own names (``HOSTS``), the loopback names of the port this request came in on, and, when
    the app's onion is not named, any v3 onion (tor hands this listener only requests for its own onion)."""
    host = request.headers.get("Host", "").lower()
    hosts = request.app[appkeys.HOSTS]
    if host in hosts:
        return True
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    if isinstance(sock, tuple) and len(sock) >= 2 and host in loopback_hosts(int(sock[1])):
        return True
    return not any(h.endswith(".onion") for h in hosts) and _ONION_HOST.fullmatch(host) is not None


@web.middleware
async def only_own_host(request: web.Request, handler: middlewares.Handler) -> web.StreamResponse:
    """As storefronts: a web page that rebinds some domain to 127.0.0.1 gets nothing."""
    if not allowed_host(request):
        raise Misdirected("this listener answers only to its own onion address")
    hosts: set[str] = request.app[appkeys.HOSTS]
    # The Host just checked is ours: an Origin naming it is this listener's own page.
    check_same_origin(request, hosts | {request.headers.get("Host", "").lower()})
    return await handler(request)


def _admin(request: web.Request) -> web.Application:
    return request.app[DIRWEB].admin_app


def _off(what: str) -> web.Response:
    """Discovery is off or still starting: a normal state, answered (503) without logging an error."""
    error = Unavailable(f"this node {what} (discovery is off or still starting)")
    return web.json_response(error.to_json(), status=error.status, headers={"Retry-After": "300"})


async def gossip(request: web.Request) -> web.Response:
    peer = _admin(request).get(appkeys.GOSSIP)
    if peer is None:
        return _off("does not gossip")
    if (request.content_length or 0) > MAX_GOSSIP_BYTES:
        raise PayloadTooLarge(f"a gossip message is at most {MAX_GOSSIP_BYTES} bytes")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"a gossip message is at most {MAX_GOSSIP_BYTES} bytes") from None
    try:
        answer = await peer.handle(body)
    except RecursionError:  # the JSON parser on absurdly nested input: the sender's fault, not a 500
        raise BadRequest("gossip message nested too deeply") from None
    return web.Response(body=answer, content_type="application/json", headers={"Cache-Control": "no-store"})


def _store(request: web.Request) -> str:
    store = request.match_info["store"]
    if not ONION.fullmatch(store):
        raise NotFound("no mirror of that store here")
    return store


async def mirror_catalog(request: web.Request) -> web.Response:
    directory = _admin(request).get(appkeys.DIRECTORY)
    if directory is None:
        return _off("keeps no mirrors")
    raw = await directory.mirror(_store(request))
    if raw is None:
        raise NotFound("this node holds no catalog of that store")
    etag = f'"{hashlib.sha256(raw).hexdigest()}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if etag in [t.strip() for t in request.headers.get("If-None-Match", "").split(",")]:
        return web.Response(status=304, headers=headers)
    return web.Response(body=raw, content_type="application/json", headers=headers)


async def mirror_thumb(request: web.Request) -> web.Response:
    directory = _admin(request).get(appkeys.DIRECTORY)
    if directory is None:
        return _off("keeps no mirrors")
    image = request.match_info["id"]
    data = await directory.thumb(_store(request), image) if IMAGE_ID.fullmatch(image) else None
    if data is None:
        raise NotFound("this node holds no such thumbnail")
    headers = {"Cache-Control": "public, max-age=31536000, immutable"}
    return web.Response(body=data, content_type="image/jpeg", headers=headers)


def _moderation(request: web.Request) -> ModeratorService:
    service = _admin(request).get(appkeys.MODERATION)
    if service is None:
        raise NotFound("this node does not offer moderation")
    return service


def _signed(env: Envelope) -> web.Response:
    return web.Response(
        body=crypto.canonical_json(env), content_type="application/json", headers={"Cache-Control": "no-store"}
    )


async def _envelope(request: web.Request) -> object:
    """The posted envelope, parsed strictly (``envelope.loads``); verified by the moderation service."""
    limit = moderation_wire.MAX_BYTES
    if (request.content_length or 0) > limit:
        raise PayloadTooLarge(f"a moderation message is at most {limit} bytes")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"a moderation message is at most {limit} bytes") from None
    try:
        return envelope.loads(raw)
    except RecursionError:
        raise BadRequest("moderation message nested too deeply") from None


async def moderation_offer(request: web.Request) -> web.Response:
    return _signed(await _moderation(request).signed_offer())


def _internal(exc: PasarError) -> Unavailable:
    """A failure inside this node (its Bitcoin Core, its database), as other nodes may read it: no address,
    path or wallet name of ours; the operator's log has the details."""
    log.warning("a moderation request failed inside this node (%s): %s", exc.code, exc.message)
    return Unavailable("this moderator cannot answer right now; try again later")


async def moderation_key(request: web.Request) -> web.Response:
    service = _moderation(request)
    try:
        return _signed(await service.key_request(await _envelope(request)))
    except (WalletError, StorageError) as exc:
        raise _internal(exc) from exc


async def moderation_case(request: web.Request) -> web.Response:
    service = _moderation(request)
    try:
        return _signed(await service.case_message(await _envelope(request)))
    except (WalletError, StorageError) as exc:
        raise _internal(exc) from exc


async def css(request: web.Request) -> web.Response:
    """Only for the error page of a browser that wandered here."""
    return web.Response(body=request.app[appkeys.CSS], content_type="text/css")


def create_node_app(admin_app: web.Application, *, onion: str | None = None) -> web.Application:
    """The node onion's app; ``onion`` (56 chars) names it in the Host check (else any v3 onion).

    Loopback names of the port a request arrives on are accepted without being listed.
    """
    app = web.Application(middlewares=[middlewares.errors, only_own_host], client_max_size=MAX_GOSSIP_BYTES)
    app[appkeys.HOSTS] = {f"{onion}.onion", f"{onion}.onion:80"} if onion else set()
    app.on_response_prepare.append(middlewares.security_headers)
    app[DIRWEB] = DirectoryWeb(admin_app, admin=False)
    app[appkeys.CSS] = admin_app[appkeys.CSS]
    render.attach(app, admin_app[appkeys.JINJA])
    app.router.add_post(GOSSIP_PATH, gossip, name="gossip")
    app.router.add_get(f"{MIRROR_PATH}/catalog.json", mirror_catalog, name="mirror-catalog")
    app.router.add_get(f"{MIRROR_PATH}/images/{{id}}.thumb.jpg", mirror_thumb, name="mirror-thumb")
    app.router.add_get(moderation_wire.OFFER_PATH, moderation_offer, name="moderation-offer")
    app.router.add_post(moderation_wire.KEY_PATH, moderation_key, name="moderation-key")
    app.router.add_post(moderation_wire.CASE_PATH, moderation_case, name="moderation-case")
    app.router.add_get("/static/style.css", css, name="css")
    app.router.add_get("/favicon.ico", render.no_favicon)
    return app
