"""Error rendering and security headers, in one place for every listener."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..core.errors import PasarError, Unavailable, ValidationError
from . import appkeys, metrics
from .render import page

log = logging.getLogger(__name__)


class _WithoutBuyerData(logging.Filter):
    """aiohttp's server logs a malformed request with its request line and a
    traceback; on a store listener that line is what a buyer sent (a search,
    a listing), so the record keeps only that something failed."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = "a storefront connection failed at the HTTP level (what the buyer sent is not logged)"
        record.args, record.exc_info, record.exc_text, record.stack_info = (), None, None, None
        # A malformed request is the sender's problem, not the node's: debug level.
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return STORE_SERVER_LOG.isEnabledFor(logging.DEBUG)


# Store listeners' aiohttp servers log here instead of "aiohttp.server".
STORE_SERVER_LOG = logging.getLogger("pasar.storefront.http")
STORE_SERVER_LOG.addFilter(_WithoutBuyerData())
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CSP = "default-src 'self'; script-src 'none'; form-action 'self'; frame-ancestors 'none'"
HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
    # aiohttp would otherwise announce "Python/3.x aiohttp/3.y".
    "Server": "pasar",
}


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every listener's ``on_response_prepare``: the headers, and the request counted with its final status."""
    response.headers.update(HEADERS)
    metrics.sent(request, response)


async def admin_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Admin pages and API replies carry secrets (client keys, CSRF tokens): never cached."""
    response.headers.update(HEADERS)
    metrics.sent(request, response)
    if response.content_type in ("text/html", "application/json"):
        response.headers["Cache-Control"] = "no-store"


def _wants_json(request: web.Request) -> bool:
    return request.path.startswith("/api/") or request.path.startswith("/.well-known/")


def _render(request: web.Request, status: int, code: str, message: str, payload: dict[str, object]) -> web.Response:
    if _wants_json(request):
        return web.json_response(payload, status=status)
    return page(request, "error.html", {"status": status, "code": code, "message": message}, status=status)


def _where(request: web.Request) -> str:
    """The request as the log names it: a storefront's paths may hold a buyer's secret (``/order/<token>``),
    so there only the route's name is logged."""
    if appkeys.STORE in request.app:
        route = request.match_info.route.name if request.match_info.route else None
        return f"{request.method} storefront route {route or '(none)'}"
    return f"{request.method} {request.path}"


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every error (below); the request is counted in the node's metrics (``web/metrics.py``) when its
    response (a redirect too) is prepared, with the status sent: ``security_headers``/``admin_headers``.
    (A client that leaves before the answer cancels the handler: that request is not counted.)"""
    metrics.received(request)
    return await _rendered(request, handler)


async def _rendered(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except PasarError as exc:
        if isinstance(exc, Unavailable):  # a part that is off, by the operator's choice: nothing went wrong
            log.info("%s: %s", _where(request), exc.message)
        elif exc.status >= 500 and not isinstance(exc, ValidationError):
            # The reply is one line; the log keeps the traceback and its causes (``raise ... from exc``).
            log.error("%s: %s", _where(request), exc.message, exc_info=exc)
        return _render(request, exc.status, exc.code, exc.message, exc.to_json())
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = {404: "Nothing here.", 405: "That method is not allowed here."}.get(exc.status, exc.reason)
        code = "not_found" if exc.status == 404 else "http_error"
        return _render(request, exc.status, code, message, {"error": message, "code": code})
    except Exception as exc:  # rendered as a 500 and logged with its traceback
        if appkeys.STORE in request.app:
            # A storefront's paths, and messages that may quote what a buyer sent, stay out of the log:
            # the exception's type and where it was raised are enough to find the bug.
            frames = "".join(traceback.format_tb(exc.__traceback__))
            log.error("unhandled %s on a storefront request (details withheld)\n%s", type(exc).__name__, frames)
        else:
            log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
        message = "Something went wrong on this node; the operator can see the details in its log."
        return _render(request, 500, "internal", message, {"error": message, "code": "internal"})
