"""Refuse requests that another web site makes a browser send (CSRF, cross-site probing).

One check for every listener (admin, API, storefronts). A browser tells us
where a request comes from in two headers:

1. ``Sec-Fetch-Site`` (Fetch Metadata; Chromium 76+, Firefox 90+ and so Tor
   Browser). The browser sets it and no page can forge it. ``same-origin``
   and ``none`` (typed, bookmarked) are ours; ``same-site`` (another port of
   127.0.0.1: another store) and ``cross-site`` may only *navigate* here with
   a safe method: following a link is fine, posting a form or embedding a
   page element is not.
2. ``Origin``, for browsers without Fetch Metadata. Browsers send
   ``Origin: null`` on a same-origin form POST from a page whose referrer
   policy is ``no-referrer`` (Fetch spec, "serializing a request origin"),
   and older ones send no Origin at all, so neither can be told apart from a
   request of our own; only an Origin that names another host is refused.

What gets through both, a non-browser client or a browser that sends
neither header, still needs the per-session CSRF token that every admin form
carries and the ``SameSite=Strict`` session cookie (or the API's bearer
token, which no page can add to a cross-site request).
"""

from __future__ import annotations

from collections.abc import Collection

from aiohttp import web

from ..core.errors import Forbidden

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
OUR_SITES = frozenset({"same-origin", "none"})


def check_same_origin(request: web.Request, hosts: Collection[str]) -> None:
    """Raise Forbidden for a request another origin made; ``hosts`` are our own ``host:port`` names."""
    site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
    if site:
        if site in OUR_SITES:
            return
        mode = request.headers.get("Sec-Fetch-Mode", "").strip().lower()
        if request.method in SAFE_METHODS and mode == "navigate":
            return
        raise Forbidden(f"cross-site request refused ({site} {request.method} from another web page)")
    origin = request.headers.get("Origin", "").strip().lower()
    if not origin or origin == "null":
        return
    scheme, _, rest = origin.partition("://")
    if scheme not in ("http", "https") or rest not in hosts:
        raise Forbidden("cross-origin request refused")
