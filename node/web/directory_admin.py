"""Admin-only directory pages: buyers' reports, and blocking a store or a tag (POST forms, admin CSRF)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..core.errors import ValidationError
from .directory_state import directory
from .directory_views import page

KINDS = ("store", "tag")


def _see(request: web.Request, done: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(request.app.router["directory-reports"].url_for().with_query({"done": done}))


def _field(form: Any, name: str, limit: int = 200) -> str:
    value = form.get(name, "")
    return value.strip()[:limit] if isinstance(value, str) else ""


async def reports(request: web.Request) -> web.Response:
    directory_ = directory(request)
    ctx = {"reports": await directory_.reports(), "blocks": await directory_.blocks(), "errors": {}}
    return page(request, "reports.html", ctx)


async def block(request: web.Request) -> web.Response:
    form = await request.post()
    kind, value = _field(form, "kind"), _field(form, "value").lower().removesuffix(".onion")
    directory_ = directory(request)
    try:
        if kind not in KINDS:
            raise ValidationError({"kind": "block a store or a tag"})
        await directory_.block(kind, value, _field(form, "reason", 500))
    except ValidationError as exc:
        ctx = {"reports": await directory_.reports(), "blocks": await directory_.blocks(), "errors": exc.fields}
        return page(request, "reports.html", ctx, 422)
    raise _see(request, "blocked")


async def unblock(request: web.Request) -> web.Response:
    form = await request.post()
    await directory(request).unblock(_field(form, "kind"), _field(form, "value"))
    raise _see(request, "unblocked")


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/directory/reports", reports, name="directory-reports")
    r.add_post("/directory/blocks", block, name="directory-block")
    r.add_post("/directory/blocks/delete", unblock, name="directory-unblock")
