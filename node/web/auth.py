"""Admin authentication: session cookie + CSRF for the UI, bearer token for the API.

The admin listener binds to loopback only; on top of that every request must
name that loopback address in ``Host`` (defeats DNS rebinding) and must not
come from another web page (``origin.check_same_origin``: Fetch Metadata, then
Origin), so no web page can drive the admin.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Middleware

from ..core.crypto import check_password
from ..core.errors import Forbidden, Unauthorized
from .bodies import read_form
from .origin import check_same_origin

COOKIE = "pasar_admin"
SESSION_TTL = 12 * 3600
PUBLIC_PATHS = ("/login", "/static/", "/favicon.ico")
# The JSON API: the admin API token (``admin.token``) as a bearer token, no session.
TOKEN_PATHS = ("/api/",)
# The Prometheus scrape: the scrape-only ``metrics.token`` (not the admin token), accepted nowhere else.
METRICS_PATH = "/metrics"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Session:
    csrf: str
    expires: float


# The logged-in admin session of a request (set by the guard on pages and forms).
SESSION: web.RequestKey[Session] = web.RequestKey("session", Session)


@dataclass
class AdminAuth:
    password_hash: bytes | None
    api_token: str
    metrics_token: str = ""  # set with the /metrics route (``web/metrics.py``); empty: no scrape
    allowed_hosts: set[str] = field(default_factory=set)
    sessions: dict[str, Session] = field(default_factory=dict)
    _failures: int = 0
    # One attempt at a time, so parallel guesses queue behind the delay.
    _login_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def set_port(self, host: str, port: int) -> None:
        names = {host, "localhost"} | (
            {"127.0.0.1"} if host.startswith("127.") else {"[::1]"} if host == "::1" else set()
        )
        self.allowed_hosts = {f"{n}:{port}" for n in names}

    async def login(self, password: str) -> str:
        async with self._login_lock:
            # Slow down guessing: each failure since the last success costs more.
            await asyncio.sleep(min(self._failures, 10) * 0.5)
            ok = self.password_hash is not None and await asyncio.to_thread(
                check_password, self.password_hash, password
            )
            if not ok:
                self._failures += 1
                raise Unauthorized("wrong password")
            self._failures = 0
        sid = secrets.token_urlsafe(32)
        self.sessions[sid] = Session(secrets.token_urlsafe(32), time.time() + SESSION_TTL)
        return sid

    def session(self, request: web.Request) -> Session | None:
        sid = request.cookies.get(COOKIE, "")
        found = self.sessions.get(sid)
        if found is None:
            return None
        if found.expires < time.time():
            del self.sessions[sid]
            return None
        return found

    def logout(self, request: web.Request) -> None:
        self.sessions.pop(request.cookies.get(COOKIE, ""), None)

    def check_token(self, request: web.Request) -> None:
        self._check_bearer(request, self.api_token, "admin.token")

    def check_metrics_token(self, request: web.Request) -> None:
        """``GET /metrics``: the scrape-only token; the admin token is refused (monitoring never holds it)."""
        self._check_bearer(request, self.metrics_token, "metrics.token")

    @staticmethod
    def _check_bearer(request: web.Request, expected: str, file: str) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized(f"missing token: send 'Authorization: Bearer <{file}>'")
        if not expected or not hmac.compare_digest(token.strip().encode(), expected.encode()):
            raise Unauthorized(f"wrong token: use the one in <data-dir>/{file}")

    def check_origin(self, request: web.Request) -> None:
        # The raw header: aiohttp's request.host would look up this machine's name.
        if request.headers.get("Host", "").lower() not in self.allowed_hosts:
            raise Forbidden(f"the admin answers only as http://{sorted(self.allowed_hosts)[0]}")
        check_same_origin(request, self.allowed_hosts)


def set_session_cookie(response: web.StreamResponse, sid: str) -> None:
    response.set_cookie(COOKIE, sid, httponly=True, samesite="Strict", path="/", max_age=SESSION_TTL)


def make_guard(auth: AdminAuth) -> Middleware:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        auth.check_origin(request)
        if request.path == METRICS_PATH:
            auth.check_metrics_token(request)
            return await handler(request)
        if request.path.startswith(TOKEN_PATHS):
            auth.check_token(request)
            return await handler(request)
        if request.path.startswith(PUBLIC_PATHS):
            return await handler(request)
        session = auth.session(request)
        if session is None:
            if request.method in ("GET", "HEAD"):
                raise web.HTTPSeeOther("/login")
            raise Forbidden("not logged in (or the session expired): log in again")
        if request.method not in ("GET", "HEAD"):
            form = await read_form(request)
            token = str(form.get("csrf", ""))
            if not hmac.compare_digest(token.encode(), session.csrf.encode()):
                raise Forbidden("missing or wrong form token: reload the page and try again")
        request[SESSION] = session
        return await handler(request)

    return guard
