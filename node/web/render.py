"""Template environment (one, shared by every listener) and page rendering."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp_jinja2.helpers import GLOBAL_HELPERS
from markdown_it import MarkdownIt
from markupsafe import Markup

from ..core.models import RefPrice
from ..market.listings import in_stock

# CommonMark with raw HTML off and no links or images: descriptions can't pull
# in remote resources or point buyers elsewhere; a URL stays plain text.
_MD = MarkdownIt("commonmark", {"html": False}).disable(["link", "image", "autolink", "html_inline", "html_block"])


def sats(value: int | None, unit: str = "sat") -> str:
    """Integer satoshis as text, with integer arithmetic only."""
    if value is None:
        return ""
    sign, v = ("-" if value < 0 else ""), abs(int(value))
    if unit == "BTC":
        return f"{sign}{v // 100_000_000}.{v % 100_000_000:08d} BTC"
    if unit == "mBTC":
        return f"{sign}{v // 100_000}.{v % 100_000:05d} mBTC"
    return f"{sign}{v:,} sat" + ("" if v == 1 else "s")


def fiat(ref: RefPrice | None) -> str:
    if not ref:
        return ""
    minor = int(ref["minor"])
    return f"≈ {minor // 100:,}.{minor % 100:02d} {ref['currency']}"


def markdown(text: str) -> Markup:
    return Markup(_MD.render(text))  # noqa: S704 - html disabled: input is escaped


def date(ts: int | None) -> str:
    """A day as YYYY-MM-DD; a stored value no calendar can show renders as "" rather than failing the page."""
    if not ts:
        return ""
    try:
        return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")
    except (OverflowError, OSError, ValueError):
        return ""


def make_env(templates_dir: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(GLOBAL_HELPERS)
    env.filters.update(sats=sats, fiat=fiat, markdown=markdown, date=date)
    env.tests["in_stock"] = in_stock
    return env


def attach(app: web.Application, env: jinja2.Environment) -> None:
    app[aiohttp_jinja2.APP_KEY] = env


def render(request: web.Request, template: str, context: dict[str, Any]) -> str:
    """Render with ``app`` pointing at the listener's own app (named routes)."""
    return aiohttp_jinja2.render_string(template, request, {"app": request.app, **context})


def page(request: web.Request, template: str, context: dict[str, Any], *, status: int = 200) -> web.Response:
    return web.Response(text=render(request, template, context), status=status, content_type="text/html")


async def no_favicon(request: web.Request) -> web.Response:
    """Browsers ask every site for /favicon.ico; answer "nothing here" without an error page."""
    return web.Response(status=204, headers={"Cache-Control": "max-age=86400"})
