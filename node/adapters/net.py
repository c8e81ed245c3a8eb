"""Outbound HTTP, only to onion services, only through tor's SocksPort.

Every destination store gets its own aiohttp session whose SOCKS username
and password are unique to that store, so tor's ``IsolateSOCKSAuth`` (on by
default) keeps streams to different stores on different circuits: a peer
watching its onion cannot link this node's visits to other stores. Names are
resolved by tor (``rdns=True``), never locally, and nothing but ``.onion``
URLs is accepted, so the node never makes a direct clearnet connection.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import yarl
from aiohttp_socks import ProxyConnectionError, ProxyConnector, ProxyError, ProxyTimeoutError, ProxyType

from ..core import addresses
from ..core.errors import BadRequest, Unreachable
from ..core.models import HttpReply

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=45)
USER_AGENT = "Pasar"
# What a request through tor can raise when the other side is unreachable
# (SOCKS errors from aiohttp-socks are not aiohttp.ClientError).
UNREACHABLE = (aiohttp.ClientError, ProxyError, ProxyConnectionError, ProxyTimeoutError, OSError, TimeoutError)
GET_DEADLINE = 120.0  # seconds one ``get`` may take, all attempts together
GET_ATTEMPTS = 8
RETRY_PAUSES = (0.5, 1.0, 2.0, 4.0, 8.0)  # between attempts; the last one repeats
MAX_BYTES = 64 * 1024 * 1024  # the largest response read by default (a big catalog is ~7 MB)


class TooLarge(aiohttp.ClientError):
    """A response over the caller's size limit (treated like an unreachable peer)."""


def onion_of(url: str) -> str:
    """The store onion name a URL points at; BadRequest for anything but http://<onion>.onion/."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme != "http" or not host.endswith(".onion") or not addresses.is_address(host):
        raise BadRequest(f"only http://<store>.onion/ URLs can be fetched through tor, not {url!r}")
    return addresses.normalize(host)


def _only_to(onion: str) -> aiohttp.TraceConfig:
    """A session for one store refuses any other destination, redirects included.

    Streams to another store would then share this store's SOCKS identity, and
    anything but an onion would leave the onion network.
    """
    trace = aiohttp.TraceConfig()

    def check(url: yarl.URL) -> None:
        if onion_of(str(url)) != onion:
            raise BadRequest(f"this session only talks to {onion}.onion, not {url.host}")

    async def on_start(session: aiohttp.ClientSession, context: object, params: Any) -> None:
        check(params.url)

    async def on_redirect(session: aiohttp.ClientSession, context: object, params: Any) -> None:
        # params.url is the URL that answered; the next hop is its Location.
        check(params.url.join(yarl.URL(params.response.headers.get("Location", ""))))

    trace.on_request_start.append(on_start)
    trace.on_request_redirect.append(on_redirect)
    return trace


Endpoint = tuple[str, int]


class TorHttp:
    """aiohttp sessions through tor, one per destination store (bounded, least recently used).

    ``socks`` is tor's SocksPort, or a function that tells where it is now: an
    embedded tor listens on a new port after each restart, and sessions made
    through the old one are replaced.
    """

    def __init__(
        self,
        socks: Endpoint | Callable[[], Endpoint | None],
        *,
        max_sessions: int = 64,
        connections_per_store: int = 8,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
    ) -> None:
        self.socks = socks
        self.connections_per_store = connections_per_store
        self.max_sessions = max_sessions
        self.timeout = timeout
        # Secret per node run: isolation usernames are not guessable across runs.
        self._salt = secrets.token_hex(8)
        self._sessions: OrderedDict[str, aiohttp.ClientSession] = OrderedDict()
        self._via: dict[str, Endpoint] = {}  # onion -> the SocksPort its session goes through
        self._closing: set[asyncio.Task[None]] = set()
        self._fresh: dict[str, int] = {}  # onion -> how many times its circuits were replaced

    def isolation(self, onion: str) -> tuple[str, str]:
        """SOCKS username and password for streams to ``onion`` (or to a ``_key`` of one: its circuits)."""
        return f"pasar-{onion[:16]}", f"{self._salt}-{onion}-{self._fresh.get(onion, 0)}"

    async def forget(self, url: str, isolation: str = "") -> None:
        """After a failure: drop the store's connections and move it to new circuits.

        A tor client keeps using a rendezvous circuit it believes is open; after
        the store's tor restarts that circuit is dead and requests on the same
        isolation hang for minutes (measured: 50-180 s on the private network).
        New SOCKS credentials make tor build new circuits (measured: ~6 s).
        """
        key = _key(onion_of(url), isolation)
        self._fresh[key] = self._fresh.get(key, 0) + 1
        session = self._sessions.pop(key, None)
        if session is not None:
            await session.close()

    def session(self, url: str, isolation: str = "") -> aiohttp.ClientSession:
        """The session for the store ``url`` points at (creating it if needed); ``isolation`` names circuits
        of their own to that store (e.g. one purchase's: nothing at the network level links two of them)."""
        onion, endpoint = onion_of(url), self.endpoint()
        key = _key(onion, isolation)
        session = self._sessions.pop(key, None)
        if session is not None and self._via.get(key) != endpoint:
            self._close_later(session)
            session = None
        if session is None or session.closed:
            self._via[key] = endpoint
            session = self._new_session(onion, endpoint, *self.isolation(key))
        self._sessions[key] = session
        while len(self._sessions) > self.max_sessions:
            # Callers keep fewer stores in flight than max_sessions, so the oldest is idle.
            gone, oldest = self._sessions.popitem(last=False)
            self._fresh.pop(gone, None)
            self._via.pop(gone, None)
            self._close_later(oldest)
        return session

    def _new_session(
        self, onion: str, endpoint: Endpoint, username: str, password: str, *, one_off: bool = False
    ) -> aiohttp.ClientSession:
        connector = ProxyConnector(
            host=endpoint[0],
            port=endpoint[1],
            proxy_type=ProxyType.SOCKS5,
            username=username,
            password=password,
            rdns=True,
            limit_per_host=self.connections_per_store,
            force_close=one_off,
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=self.timeout,
            headers={"User-Agent": USER_AGENT},
            trace_configs=[_only_to(onion)],
        )

    def endpoint(self) -> Endpoint:
        """tor's SocksPort now; ``Unreachable`` while tor has none (not connected yet)."""
        endpoint = self.socks() if callable(self.socks) else self.socks
        if endpoint is None:
            raise Unreachable("tor has no SOCKS port right now (not connected yet); try again shortly")
        return endpoint

    def _close_later(self, session: aiohttp.ClientSession) -> None:
        task = asyncio.get_running_loop().create_task(session.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def get(
        self,
        url: str,
        *,
        deadline: float = GET_DEADLINE,
        attempts: int = GET_ATTEMPTS,
        allow_redirects: bool = False,
        before_retry: Callable[[], object] | None = None,
        pauses: Sequence[float] = RETRY_PAUSES,
        headers: Mapping[str, str] | None = None,
        max_bytes: int = MAX_BYTES,
    ) -> HttpReply:
        """GET ``url`` and read the whole response, retrying what tor makes transient.

        A failure to reach the store (SOCKS or proxy errors, a connection that
        drops, a timeout) moves it to new circuits (``forget``), calls
        ``before_retry`` and tries again after the next of ``pauses`` (the
        last one repeats): at most ``attempts`` times, never past ``deadline``
        seconds (an attempt still running then is cut short). Then
        ``Unreachable``, caused by the last failure. Any HTTP status is a
        reply, not a failure.
        """
        request = _Request("GET", url, None, dict(headers or {}), allow_redirects, max_bytes, False)
        return await self._send(request, deadline, attempts, before_retry, pauses)

    async def post(
        self,
        url: str,
        body: bytes,
        *,
        deadline: float = GET_DEADLINE,
        attempts: int = GET_ATTEMPTS,
        content_type: str = "application/json",
        max_bytes: int = MAX_BYTES,
        pauses: Sequence[float] = RETRY_PAUSES,
        fresh_circuit: bool = False,
        isolation: str = "",
    ) -> HttpReply:
        """POST ``body``, retried like ``get`` (so only for messages that are safe to receive twice).

        ``fresh_circuit``: on a SOCKS identity of its own, used once (a circuit no other request shares).
        ``isolation``: on circuits kept for this name and this store only (reused by the next such request).
        """
        headers = {"Content-Type": content_type}
        request = _Request("POST", url, body, headers, False, max_bytes, fresh_circuit, isolation)
        return await self._send(request, deadline, attempts, None, pauses)

    async def _send(
        self,
        request: _Request,
        deadline: float,
        attempts: int,
        before_retry: Callable[[], object] | None,
        pauses: Sequence[float],
    ) -> HttpReply:
        url = request.url
        began = time.monotonic()
        give_up, failures = began + deadline, []
        for attempt in range(max(1, attempts)):
            started = time.monotonic()
            try:
                async with asyncio.timeout_at(_loop_time(give_up)):
                    return await self._once(request)
            except UNREACHABLE as exc:
                failures.append(f"{exc!r} after {time.monotonic() - started:.1f}s")
                last = exc
            pause = pauses[min(attempt, len(pauses) - 1)]
            if attempt + 1 >= attempts or time.monotonic() + pause >= give_up:
                break
            log.debug("%s: attempt %d failed (%s); retrying on new circuits", url, attempt + 1, failures[-1])
            await self.forget(url, request.isolation)  # a dead rendezvous circuit would stall this store
            if before_retry is not None:
                before_retry()
            await asyncio.sleep(pause)
        elapsed = time.monotonic() - began
        raise Unreachable(f"{url} did not answer ({len(failures)} attempts in {elapsed:.0f}s): {failures}") from last

    async def _once(self, request: _Request) -> HttpReply:
        if request.fresh_circuit:
            onion = onion_of(request.url)
            name, secret = f"pasar-{secrets.token_hex(8)}", secrets.token_hex(16)
            async with self._new_session(onion, self.endpoint(), name, secret, one_off=True) as session:
                return await self._request_on(session, request)
        return await self._request_on(self.session(request.url, request.isolation), request)

    async def _request_on(self, session: aiohttp.ClientSession, request: _Request) -> HttpReply:
        async with session.request(
            request.method,
            request.url,
            data=request.body,
            headers=request.headers,
            allow_redirects=request.allow_redirects,
        ) as resp:
            body = await read_capped(resp, request.max_bytes)
            return HttpReply(status=resp.status, body=body, headers=dict(resp.headers))

    async def close(self) -> None:
        sessions = list(self._sessions.values())
        self._sessions.clear()
        await asyncio.gather(*(s.close() for s in sessions), *self._closing)


@dataclass(frozen=True)
class _Request:
    method: str
    url: str
    body: bytes | None
    headers: dict[str, str]
    allow_redirects: bool
    max_bytes: int
    fresh_circuit: bool
    isolation: str = ""


def _key(onion: str, isolation: str) -> str:
    """Where sessions, circuits and failure counts are kept: per store, or per (store, isolation name)."""
    return f"{onion}/{isolation}" if isolation else onion


async def read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, or ``TooLarge`` as soon as it passes ``limit`` bytes (never read further)."""
    if resp.content_length is not None and resp.content_length > limit:
        raise TooLarge(f"the response is {resp.content_length} bytes, over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the response is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _loop_time(monotonic: float) -> float:
    """A ``time.monotonic()`` instant on the running loop's clock."""
    return asyncio.get_running_loop().time() + (monotonic - time.monotonic())
