"""A store's own listener: storefront pages, images and the signed catalog.

One application per store and one listener each, so two stores of one node
share no host, port, cookie or URL space. Nothing here knows other stores.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..core.errors import Misdirected, NotFound
from ..market.catalog import Page, Snapshot, browse
from . import appkeys, bodies, middlewares, render
from .origin import check_same_origin

CATALOG_PATH = "/.well-known/pasar/catalog.json"
MAX_QUERY = 100
# Reserved for the payments issue (see docs/design.md): /cart, /checkout, /orders/{id}.


_PAGE = re.compile(r"[0-9]{1,6}")


def _int(value: str | None, default: int = 1) -> int:
    return int(value) if value and _PAGE.fullmatch(value) else default


async def _page(
    request: web.Request, template: str, context: Callable[[Snapshot], dict[str, Any]], *, cache: bool = True
) -> web.Response:
    """Render once per catalog version and page; then serve from memory.

    The cache key is the path and the page number, and a page is cached only
    if that page exists, so no query string can push real pages out. Search
    results (unbounded queries) are rendered each time.
    """
    app = request.app
    onion = app[appkeys.STORE]
    snap = await app[appkeys.MARKET].snapshot(onion)
    pages, number = app[appkeys.PAGES], _int(request.query.get("page"))
    key = f"{request.path}?page={number}"
    body = pages.get(onion, snap.seq, key) if cache else None
    if body is None:
        ctx: dict[str, object] = {
            "profile": snap.profile,
            "categories": snap.categories,
            "unit": snap.profile["display_unit"],
            "query": "",
        }
        ctx.update(context(snap))
        body = render.render(request, template, ctx).encode("utf-8")
        page = ctx.get("page")
        if cache and (not isinstance(page, Page) or page.number == number):
            pages.put(onion, snap.seq, key, body)
    return web.Response(body=body, content_type="text/html", charset="utf-8")


async def home(request: web.Request) -> web.Response:
    size = request.app[appkeys.CONFIG].page_size
    number = _int(request.query.get("page"))
    return await _page(request, "home.html", lambda s: {"page": browse(s, page=number, size=size)})


async def search(request: web.Request) -> web.Response:
    size = request.app[appkeys.CONFIG].page_size
    query = request.query.get("q", "")[:MAX_QUERY]
    number = _int(request.query.get("page"))

    def ctx(snap: Snapshot) -> dict[str, Any]:
        return {"page": browse(snap, query=query, page=number, size=size), "query": query}

    return await _page(request, "home.html", ctx, cache=False)


async def category(request: web.Request) -> web.Response:
    size = request.app[appkeys.CONFIG].page_size
    slug, number = request.match_info["slug"], _int(request.query.get("page"))

    def ctx(snap: Snapshot) -> dict[str, Any]:
        found = browse(snap, category=slug, page=number, size=size)
        if found.category is None:
            raise NotFound("no such category in this store")
        return {"page": found}

    return await _page(request, "home.html", ctx)


async def listing(request: web.Request) -> web.Response:
    def ctx(snap: Snapshot) -> dict[str, Any]:
        item = snap.by_id.get(request.match_info["id"])
        if item is None:
            raise NotFound("this listing does not exist or is no longer offered")
        return {"listing": item}

    return await _page(request, "listing.html", ctx)


async def policies(request: web.Request) -> web.Response:
    return await _page(request, "policies.html", lambda s: {})


async def image(request: web.Request) -> web.FileResponse:
    market, onion = request.app[appkeys.MARKET], request.app[appkeys.STORE]
    # Only images of listings on show: a removed photo stops being served.
    published = (await market.snapshot(onion)).image_ids
    path = market.image_path(onion, request.match_info["name"], published=published)
    return web.FileResponse(
        path, headers={"Content-Type": "image/jpeg", "Cache-Control": "public, max-age=31536000, immutable"}
    )


async def css(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[appkeys.CSS], content_type="text/css", headers={"Cache-Control": "public, max-age=3600"}
    )


async def catalog(request: web.Request) -> web.Response:
    snap = await request.app[appkeys.MARKET].snapshot(request.app[appkeys.STORE])
    headers = {"ETag": snap.etag, "Cache-Control": "no-cache"}
    if snap.etag in [t.strip() for t in request.headers.get("If-None-Match", "").split(",")]:
        return web.Response(status=304, headers=headers)
    return web.Response(body=snap.envelope_bytes, content_type="application/json", headers=headers)


def loopback_hosts(port: int) -> set[str]:
    return {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}


@web.middleware
async def only_own_host(request: web.Request, handler: middlewares.Handler) -> web.StreamResponse:
    """Answer only to this store's names: a web page that rebinds some domain to
    127.0.0.1 must not be able to read which store this node runs."""
    if request.headers.get("Host", "").lower() not in request.app[appkeys.HOSTS]:
        raise Misdirected("this listener serves one store, under its own address only")
    hosts: set[str] = request.app[appkeys.HOSTS]
    check_same_origin(request, hosts)
    return await handler(request)


def create_store_app(parent: web.Application, onion: str) -> web.Application:
    """The storefront application of one store; shares the parent's market and templates."""
    app = web.Application(
        middlewares=[middlewares.errors, only_own_host, bodies.parse_forms], client_max_size=64 * 1024
    )
    app[appkeys.HOSTS] = {f"{onion}.onion", f"{onion}.onion:80"}  # + loopback names once bound
    app.on_response_prepare.append(middlewares.security_headers)
    app[appkeys.CONFIG] = parent[appkeys.CONFIG]
    app[appkeys.MARKET] = parent[appkeys.MARKET]
    app[appkeys.PAGES] = parent[appkeys.PAGES]
    app[appkeys.CSS] = parent[appkeys.CSS]
    app[appkeys.STORE] = onion
    render.attach(app, parent[appkeys.JINJA])
    app.router.add_get("/", home, name="home")
    app.router.add_get("/search", search, name="search")
    app.router.add_get("/c/{slug}", category, name="category")
    app.router.add_get("/listing/{id}", listing, name="listing")
    app.router.add_get("/policies", policies, name="policies")
    app.router.add_get("/images/{name}", image, name="image")
    app.router.add_get("/static/style.css", css, name="css")
    app.router.add_get("/favicon.ico", render.no_favicon)
    app.router.add_get(CATALOG_PATH, catalog, name="catalog")
    return app
