"""A store's own listener: storefront pages, images and the signed catalog.

One application per store and one listener each, so two stores of one node
share no host, port, cookie or URL space. Nothing here knows other stores.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from markupsafe import Markup, escape

from ..core.errors import Misdirected, NotFound
from ..core.models import PublicListing
from ..market.catalog import Page, Snapshot, browse
from ..market.catalog import search as catalog_search
from ..messaging.wire import EXCHANGE_PATH
from . import appkeys, bodies, checkout, messages, middlewares, render
from .origin import check_same_origin

CATALOG_PATH = "/.well-known/pasar/catalog.json"
MAX_QUERY = 100
SEARCH_PAGES: web.AppKey[SearchPages] = web.AppKey("search_pages")


_PAGE = re.compile(r"[0-9]{1,6}")


def _int(value: str | None, default: int = 1) -> int:
    return int(value) if value and _PAGE.fullmatch(value) else default


async def _page(
    request: web.Request,
    template: str,
    context: Callable[[Snapshot], dict[str, Any]],
    *,
    cache: bool = True,
    live: checkout.CheckoutState | None = None,
    status: int = 200,
    cache_path: str | None = None,
) -> web.Response:
    """Render once per catalog version and page; then serve from memory.

    The cache key is the path and the page number, and a page is cached only
    if that page exists, so no query string can push real pages out. Search
    results (unbounded queries) are rendered each time. A listing page
    (``live``) has its per-request parts (stock left, checkout form) filled
    in after the cache (web/checkout.py).
    """
    app = request.app
    onion = app[appkeys.STORE]
    snap = await app[appkeys.MARKET].snapshot(onion)
    pages, number = app[appkeys.PAGES], _int(request.query.get("page"))
    key = f"{cache_path or request.path}?page={number}"
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
    if live is not None:
        body = await checkout.fill(request, snap, body, live)
    return web.Response(body=body, status=status, content_type="text/html", charset="utf-8")


async def home(request: web.Request) -> web.Response:
    size = request.app[appkeys.CONFIG].page_size
    number = _int(request.query.get("page"))
    return await _page(request, "home.html", lambda s: {"page": browse(s, page=number, size=size)})


# -- search ----------------------------------------------------------------------
_MARK = "\ue000" + secrets.token_hex(8)  # private-use char + a per-process secret: no store text contains it
_SKELETON = (
    '{% extends "home.html" %}{% block title %}' + _MARK + "title" + _MARK + "{% endblock %}"
    "{% block content %}" + _MARK + "content" + _MARK + "{% endblock %}"
)
_SLOTS = re.compile(re.escape(_MARK) + "(title|query|content)" + re.escape(_MARK))
MAX_CARDS = 10_000  # rendered cards kept per store (each a few hundred bytes)


class _Rendered:
    """What every search page of one catalog version shares: the page around the results, and the cards."""

    def __init__(self, app: web.Application, snap: Snapshot) -> None:
        env = aiohttp_jinja2.get_env(app)
        base: dict[str, Any] = {
            "app": app,
            "profile": snap.profile,
            "categories": snap.categories,
            "unit": snap.profile["display_unit"],
        }
        mark = _MARK + "query" + _MARK
        skeleton = env.from_string(_SKELETON).render({**base, "query": mark, "page": Page([], 0, 1, 1, mark, None)})
        # split() alternates text and slot names: text at even places, names at odd ones.
        self.parts = _SLOTS.split(skeleton)
        macros: dict[str, Any] = vars(env.get_template("_macros.html").make_module(base))  # its macros, by name
        self._card: Callable[[PublicListing], Markup] = macros["card"]
        self._cards: dict[str, Markup] = {}
        # The blocks get a context of their own (shared=True: these vars, with the globals copied in once).
        self.vars = {**env.globals, **base, "pager": macros["pager"], "card": self.card, "active_slug": ""}
        self.home = env.get_template("home.html")
        self.seq = snap.seq

    def card(self, item: PublicListing) -> Markup:
        html = self._cards.get(item["id"])
        if html is None:
            html = self._card(item)
            if len(self._cards) < MAX_CARDS:
                self._cards[item["id"]] = html
        return html


class SearchPages:
    """Search pages of one store's current catalog version, rendered from parts.

    ``home.html`` rendered whole costs about half a millisecond and more with
    results (a dozen ``url()`` calls, three templates, a card per result). A
    search page differs from one search to the next only in its title, the
    query in the search box and the results, so the rest is rendered once per
    catalog version with marks where those go, each listing's card once, and
    a search renders just the ``title`` and ``content`` blocks of
    ``home.html``. The bytes are the same as rendering ``home.html`` whole
    (tests/unit/test_textsearch_pages.py).
    """

    def __init__(self) -> None:
        self._current: _Rendered | None = None

    def render(self, app: web.Application, snap: Snapshot, query: str, page: Page) -> str:
        """The page ``home.html`` renders for ``query`` and ``page`` (no category)."""
        shared = self._current
        if shared is None or shared.seq != snap.seq:
            shared = self._current = _Rendered(app, snap)
        heading = "Results for “" + query + "”" if query else "All items"
        ctx = shared.home.new_context({**shared.vars, "query": query, "page": page, "heading": heading}, shared=True)
        slots = {
            "title": "".join(shared.home.blocks["title"](ctx)),
            "query": str(escape(query)),
            "content": "".join(shared.home.blocks["content"](ctx)),
        }
        return "".join(slots[part] if n % 2 else part for n, part in enumerate(shared.parts))


async def search(request: web.Request) -> web.Response:
    """Search results: the snapshot's index is queried off the event loop; see SearchPages for rendering."""
    app = request.app
    query = request.query.get("q", "")[:MAX_QUERY]
    snap = await app[appkeys.MARKET].snapshot(app[appkeys.STORE])
    size = app[appkeys.CONFIG].page_size
    found = await catalog_search(snap, query=query, page=_int(request.query.get("page")), size=size)
    body = app[SEARCH_PAGES].render(app, snap, query, found).encode("utf-8")
    return web.Response(body=body, content_type="text/html", charset="utf-8")


async def category(request: web.Request) -> web.Response:
    size = request.app[appkeys.CONFIG].page_size
    slug, number = request.match_info["slug"], _int(request.query.get("page"))

    def ctx(snap: Snapshot) -> dict[str, Any]:
        found = browse(snap, category=slug, page=number, size=size)
        if found.category is None:
            raise NotFound("no such category in this store")
        return {"page": found}

    return await _page(request, "home.html", ctx)


def _listing_ctx(listing_id: str) -> Callable[[Snapshot], dict[str, Any]]:
    def ctx(snap: Snapshot) -> dict[str, Any]:
        item = snap.by_id.get(listing_id)
        if item is None:
            raise NotFound("this listing does not exist or is no longer offered")
        return {"listing": item, "live": checkout.live}

    return ctx


async def listing(request: web.Request) -> web.Response:
    listing_id = request.match_info["id"]
    live = checkout.CheckoutState(listing_id)
    return await _page(request, "listing.html", _listing_ctx(listing_id), live=live)


async def place_order(request: web.Request) -> web.Response:
    """POST /checkout: 303 to the new order's page, or the listing page again with the reasons (4xx/5xx)."""
    again = await checkout.place_order(request)
    # Cached under the listing's own path, so the cache holds the same page whichever way it was reached.
    if not again.listing_id:
        raise NotFound("this listing does not exist or is no longer offered")
    path = str(request.app.router["listing"].url_for(id=again.listing_id))
    ctx = _listing_ctx(again.listing_id)
    return await _page(request, "listing.html", ctx, live=again, status=again.status, cache_path=path)


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
    app[SEARCH_PAGES] = SearchPages()
    render.attach(app, parent[appkeys.JINJA])
    checkout.setup(app, parent)
    app.router.add_get("/", home, name="home")
    app.router.add_get("/search", search, name="search")
    app.router.add_get("/c/{slug}", category, name="category")
    app.router.add_get("/listing/{id}", listing, name="listing")
    app.router.add_post("/checkout", place_order, name="checkout")
    app.router.add_get("/policies", policies, name="policies")
    app.router.add_get("/images/{name}", image, name="image")
    app.router.add_get("/static/style.css", css, name="css")
    app.router.add_get("/favicon.ico", render.no_favicon)
    app.router.add_get(CATALOG_PATH, catalog, name="catalog")
    app.router.add_post(EXCHANGE_PATH, messages.exchange, name="messages")
    return app
