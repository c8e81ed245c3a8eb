"""Directory pages' inputs and outputs: the query string as a SearchQuery, results as what templates show."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from markupsafe import Markup, escape

from ..discovery.models import SearchQuery, SearchResult
from . import render
from .auth import SESSION
from .directory_state import ONION, state

MAX_QUERY = 200
MARK_OPEN, MARK_CLOSE = "\ue000", "\ue001"
_PAGE = re.compile(r"[0-9]{1,6}")
_SATS = re.compile(r"[0-9]{1,15}")
_REGION = re.compile(r"[A-Za-z]{2}|WORLDWIDE", re.I)
FILTERS = ("q", "category", "min_price", "max_price", "ships_to", "store")
# After a redirect, ?done=<code> shows one of these (never text from the URL).
NOTICES = {
    "blocked": "Blocked: its listings are gone from the directory and it is no longer crawled, mirrored or relayed.",
    "unblocked": "Unblocked: it is crawled again at the next pass.",
}


def page_number(value: str | None) -> int:
    return max(1, int(value)) if value and _PAGE.fullmatch(value) else 1


def _sats(text: str) -> int | None:
    text = text.strip().replace(",", "").replace("_", "")
    return int(text) if _SATS.fullmatch(text) else None


def filters(query: Mapping[str, str]) -> dict[str, str]:
    """The search form as typed (shown again, and kept in the pager's links); bounded lengths."""
    return {name: query.get(name, "").strip()[: MAX_QUERY if name == "q" else 80] for name in FILTERS}


def search_query(form: Mapping[str, str], *, number: int, size: int) -> SearchQuery:
    """Filters that can't be read (a price with letters, a region that is not two letters) are ignored."""
    region, store = form["ships_to"], form["store"].lower().removesuffix(".onion")
    return SearchQuery(
        q=form["q"],
        limit=size,
        offset=(number - 1) * size,
        category=form["category"],
        min_price_sat=_sats(form["min_price"]),
        max_price_sat=_sats(form["max_price"]),
        ships_to=region.upper() if _REGION.fullmatch(region) else "",
        store=store if ONION.fullmatch(store) else "",
    )


def marked(snippet: str) -> Markup:
    """Plain text with matched terms between U+E000 and U+E001 -> escaped HTML with balanced ``<mark>``."""
    out: list[str] = []
    open_ = False
    for part in re.split(f"([{MARK_OPEN}{MARK_CLOSE}])", snippet):
        if part == MARK_OPEN:
            if not open_:
                out.append("<mark>")
            open_ = True
        elif part == MARK_CLOSE:
            if open_:
                out.append("</mark>")
            open_ = False
        else:
            out.append(str(escape(part)))
    if open_:
        out.append("</mark>")
    return Markup("".join(out).replace("<mark></mark>", ""))  # noqa: S704 - every piece of text is escaped above


def when(ts: int | None) -> str:
    """A moment as ``YYYY-MM-DD HH:MM UTC`` ("" when unknown or out of range)."""
    if not ts:
        return ""
    try:
        return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, OSError, ValueError):
        return ""


def listing_url(store: str, listing: str) -> str:
    """The listing on the store's own onion: the point of a directory (never this node's URL)."""
    return f"http://{store}.onion/listing/{listing}"


@dataclass(frozen=True)
class Hit:
    """One result as the page shows it."""

    result: SearchResult
    snippet: Markup
    href: str
    offline: bool  # served from a mirror, or the store stopped answering: "merchant offline, catalog as of"
    as_of: str


def hits(results: list[SearchResult]) -> list[Hit]:
    return [
        Hit(
            result=r,
            snippet=marked(r["snippet"]),
            href=listing_url(r["store"], r["listing"]),
            offline=r["source"] == "mirror" or not r["reachable"],
            as_of=when(r["as_of"]),
        )
        for r in results
    ]


@dataclass(frozen=True)
class Pager:
    number: int
    pages: int
    total: int
    prev: dict[str, str] | None  # query strings of the neighbouring pages
    next: dict[str, str] | None


def pager(form: Mapping[str, str], *, number: int, size: int, total: int) -> Pager:
    pages = max(1, -(-total // size))
    kept = {k: v for k, v in form.items() if v}

    def at(n: int) -> dict[str, str]:
        return {**kept, "page": str(n)}

    return Pager(
        number, pages, total, at(number - 1) if number > 1 else None, at(number + 1) if number < pages else None
    )


def page(request: web.Request, template: str, ctx: dict[str, Any], status: int = 200) -> web.Response:
    """Render under the admin layout (admin app) or the public directory's own."""
    admin = state(request).admin
    session = request.get(SESSION)
    base: dict[str, Any] = {
        "layout": "admin/base.html" if admin else "directory/base.html",
        "admin": admin,
        "csrf": session.csrf if session else "",
        "notice": NOTICES.get(request.query.get("done", ""), ""),
        "form": filters({}),
        "when": when,
    }
    return render.page(request, f"directory/{template}", {**base, **ctx}, status=status)
