"""The public directory onion (``directory_public = true``): the search pages for anyone, and the signed blocklist.

Same rules as a storefront: no JavaScript, no external resources, the same
security headers and Host check. No admin link or action is here: reports
go to the operator's admin (``/directory/reports`` there). The only absolute
URLs on its pages are the listed stores' own onions, which is what a
directory is for.
"""

from __future__ import annotations

from aiohttp import web

from ..core.errors import NotFound
from . import appkeys, bodies, middlewares, render
from .directory import add_pages
from .directory_state import DirectoryWeb, state
from .nodeonion import css, only_own_host

BLOCKLIST_PATH = "/.well-known/pasar/blocklist.json"


async def blocklist(request: web.Request) -> web.Response:
    publisher = state(request).admin_app.get(appkeys.BLOCKLIST)
    if publisher is None:
        raise NotFound("this directory publishes no blocklist")
    raw = await publisher.current()
    return web.Response(body=raw, content_type="application/json", headers={"Cache-Control": "no-cache"})


async def home(request: web.Request) -> web.Response:
    raise web.HTTPFound(request.app.router["directory"].url_for())


def create_directory_app(admin_app: web.Application, *, onion: str | None = None) -> web.Application:
    """The public directory's app; ``onion`` names it in the Host check (else any v3 onion, and loopback)."""
    app = web.Application(
        middlewares=[middlewares.errors, only_own_host, bodies.parse_forms], client_max_size=16 * 1024
    )
    app[appkeys.HOSTS] = {f"{onion}.onion", f"{onion}.onion:80"} if onion else set()
    app.on_response_prepare.append(middlewares.security_headers)
    app[appkeys.CSS] = admin_app[appkeys.CSS]
    render.attach(app, admin_app[appkeys.JINJA])
    add_pages(app, DirectoryWeb(admin_app, admin=False))
    app.router.add_get("/", home, name="home")
    app.router.add_get(BLOCKLIST_PATH, blocklist, name="blocklist")
    app.router.add_get("/static/style.css", css, name="css")
    app.router.add_get("/favicon.ico", render.no_favicon)
    return app
