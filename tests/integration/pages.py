"""Checks every storefront/admin page must pass (no-JavaScript contract)."""

from __future__ import annotations

import re

from aiohttp import ClientResponse

# src=, href=, action=, srcset=, formaction=, url(...) pointing at any host.
_EXTERNAL = re.compile(
    r"""(?:src|href|action|srcset|formaction|poster|data)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//""", re.I
)
_CSS_URL = re.compile(r"url\(\s*['\"]?\s*(?:[a-z]+:)?//", re.I)
REQUIRED_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'none'; form-action 'self'; frame-ancestors 'none'",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


def check_headers(resp: ClientResponse) -> None:
    for name, value in REQUIRED_HEADERS.items():
        assert resp.headers.get(name) == value, (resp.url, name, resp.headers.get(name))
    server = resp.headers.get("Server", "")
    assert not re.search(r"\d", server) and "aiohttp" not in server.lower() and "python" not in server.lower()


def check_html(html: str, url: object = "", *, allow_loopback: bool = False) -> None:
    """``allow_loopback``: admin pages may link the node's own store listeners."""
    if allow_loopback:
        html = re.sub(r"http://127\.0\.0\.1:\d+", "", html)
    low = html.lower()
    assert "<script" not in low, url
    assert not re.search(r"\son[a-z]+\s*=", low), f"inline event handler in {url}"
    assert not _EXTERNAL.search(html), f"absolute URL in {url}: {_EXTERNAL.search(html)}"
    assert not _CSS_URL.search(html), url
    assert "style=" not in low, f"inline style (blocked by CSP) in {url}"
