"""Directory pages: search other nodes' stores, store pages, newest listings, thumbnails, reports.

The same handlers serve the node owner's own directory on the admin app
(behind the admin login, under the admin layout, with block buttons) and the
public directory onion's app (``directory_app``). Results link to each
store's own onion; this node serves only the search.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..core.errors import Forbidden, NotFound, ValidationError
from ..discovery.models import SearchPage, SearchQuery
from . import appkeys, directory_admin
from .directory_state import DIRWEB, IMAGE_ID, ONION, DirectoryWeb, crawler, directory, state
from .directory_views import filters, hits, page, page_number, pager, search_query

MAX_LISTING_ID = 128
MAX_REASON = 1000


def _size(request: web.Request) -> int:
    return state(request).admin_app[appkeys.CONFIG].page_size


async def search(request: web.Request) -> web.Response:
    form, number, size = filters(request.query), page_number(request.query.get("page")), _size(request)
    directory_, problems = directory(request), {}
    try:
        found = await directory_.search(search_query(form, number=number, size=size))
    except ValidationError as exc:  # a page too far, a filter the directory refuses: say so on the page
        found, problems = SearchPage(total=0, results=[]), exc.fields
    ctx = {
        "form": form,
        "hits": hits(found["results"]),
        "pager": pager(form, number=number, size=size, total=found["total"]),
        "categories": await directory_.categories(),
        "searched": any(form.values()),
        "problems": problems,
    }
    return page(request, "search.html", ctx, 422 if problems else 200)


async def newest(request: web.Request) -> web.Response:
    found = await directory(request).newest(limit=_size(request))
    return page(request, "new.html", {"hits": hits(found)})


async def store(request: web.Request) -> web.Response:
    onion = request.match_info["onion"]
    found = await directory(request).store(onion) if ONION.fullmatch(onion) else None
    if found is None:
        raise NotFound("this directory knows no store at that address")
    number, size = page_number(request.query.get("page")), _size(request)
    try:
        listed = await directory(request).search(SearchQuery(store=onion, limit=size, offset=(number - 1) * size))
    except ValidationError as exc:
        raise NotFound("this store's listings have no such page") from exc
    ctx = {
        "store": found,
        "hits": hits(listed["results"]),
        "pager": pager({}, number=number, size=size, total=listed["total"]),
    }
    return page(request, "store.html", ctx)


async def thumb(request: web.Request) -> web.Response:
    onion, image = request.match_info["store"], request.match_info["id"]
    data, lazy = None, crawler(request)
    if ONION.fullmatch(onion) and IMAGE_ID.fullmatch(image):
        held = directory(request)
        data = await held.thumb(onion, image)
        # Fetched over tor only for stores the directory lists: a visitor can't send this node to any onion.
        if data is None and lazy is not None and await held.held(onion) is not None:
            data = await lazy.thumb(onion, image)
    if data is None:
        raise NotFound("no thumbnail for that listing")
    headers = {"Cache-Control": "public, max-age=86400"}
    return web.Response(body=data, content_type="image/jpeg", headers=headers)


def _subject(store_: str, listing: str) -> tuple[str, str]:
    if not ONION.fullmatch(store_) or not 0 < len(listing) <= MAX_LISTING_ID or not listing.isprintable():
        raise NotFound("there is no such listing to report")
    return store_, listing


async def _report_page(
    request: web.Request, store_: str, listing: str, *, reason: str = "", errors: dict[str, str] | None = None
) -> web.Response:
    ctx = {
        "store": store_,
        "listing": listing,
        "store_name": ((await directory(request).store(store_)) or {"name": ""})["name"],
        "token": state(request).tokens.issue(f"{store_}/{listing}"),
        "reason": reason,
        "errors": errors or {},
        "max_reason": MAX_REASON,
    }
    return page(request, "report.html", ctx, 422 if errors else 200)


async def report_form(request: web.Request) -> web.Response:
    store_, listing = _subject(request.query.get("store", ""), request.query.get("listing", ""))
    return await _report_page(request, store_, listing)


def _field(form: Any, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


async def report(request: web.Request) -> web.Response:
    form = await request.post()
    store_, listing = _subject(_field(form, "store"), _field(form, "listing"))
    reason = _field(form, "reason")[: MAX_REASON * 2]
    st: DirectoryWeb = state(request)
    if not st.tokens.valid(_field(form, "token"), f"{store_}/{listing}"):
        raise Forbidden("this report form is older than an hour or was not made here: open it again and resend")
    if not reason.strip():
        return await _report_page(request, store_, listing, reason=reason, errors={"reason": "say what is wrong"})
    if not await directory(request).has_listing(store_, listing):  # before the budget: junk must not use it up
        raise NotFound("this directory holds no such listing (it may have been removed since)")
    st.limiter.take(store_, listing)
    try:
        await directory(request).report(store_, listing, reason.strip()[:MAX_REASON])
    except ValidationError as exc:
        return await _report_page(request, store_, listing, reason=reason, errors=exc.fields)
    raise web.HTTPSeeOther(request.app.router["directory-reported"].url_for().with_query({"store": store_}))


async def reported(request: web.Request) -> web.Response:
    onion = request.query.get("store", "")
    return page(request, "reported.html", {"store": onion if ONION.fullmatch(onion) else ""})


def add_pages(app: web.Application, settings: DirectoryWeb) -> None:
    """The pages both apps serve (``settings`` says which app this is)."""
    app[DIRWEB] = settings
    r = app.router
    r.add_get("/directory", search, name="directory")
    r.add_get("/directory/new", newest, name="directory-new")
    r.add_get("/directory/stores/{onion}", store, name="directory-store")
    r.add_get("/directory/thumbs/{store}/{id}.jpg", thumb, name="directory-thumb")
    r.add_get("/directory/report", report_form, name="directory-report")
    r.add_post("/directory/report", report)
    r.add_get("/directory/reported", reported, name="directory-reported")


def add_admin_routes(app: web.Application) -> None:
    """The node owner's directory on the admin app (the admin guard protects every page and form)."""
    add_pages(app, DirectoryWeb(app, admin=True))
    directory_admin.add_routes(app)
