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
import secrets
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import yarl
from aiohttp_socks import ProxyConnectionError, ProxyConnector, ProxyError, ProxyTimeoutError, ProxyType

from ..core import addresses
from ..core.errors import BadRequest

DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=45)
USER_AGENT = "Pasar"
# What a request through tor can raise when the other side is unreachable
# (SOCKS errors from aiohttp-socks are not aiohttp.ClientError).
UNREACHABLE = (aiohttp.ClientError, ProxyError, ProxyConnectionError, ProxyTimeoutError, OSError, TimeoutError)


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


class TorHttp:
    """aiohttp sessions through tor, one per destination store (bounded, least recently used)."""

    def __init__(
        self,
        socks: tuple[str, int],
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
        self._closing: set[asyncio.Task[None]] = set()
        self._fresh: dict[str, int] = {}  # onion -> how many times its circuits were replaced

    def isolation(self, onion: str) -> tuple[str, str]:
        """SOCKS username and password for streams to ``onion``."""
        return f"pasar-{onion[:16]}", f"{self._salt}-{onion}-{self._fresh.get(onion, 0)}"

    async def forget(self, url: str) -> None:
        """After a failure: drop the store's connections and move it to new circuits.

        A tor client keeps using a rendezvous circuit it believes is open; after
        the store's tor restarts that circuit is dead and requests on the same
        isolation hang for minutes (measured: 50-180 s on the private network).
        New SOCKS credentials make tor build new circuits (measured: ~6 s).
        """
        onion = onion_of(url)
        self._fresh[onion] = self._fresh.get(onion, 0) + 1
        session = self._sessions.pop(onion, None)
        if session is not None:
            await session.close()

    def session(self, url: str) -> aiohttp.ClientSession:
        """The session for the store ``url`` points at (creating it if needed)."""
        onion = onion_of(url)
        session = self._sessions.pop(onion, None)
        if session is None or session.closed:
            username, password = self.isolation(onion)
            connector = ProxyConnector(
                host=self.socks[0],
                port=self.socks[1],
                proxy_type=ProxyType.SOCKS5,
                username=username,
                password=password,
                rdns=True,
                limit_per_host=self.connections_per_store,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=self.timeout,
                headers={"User-Agent": USER_AGENT},
                trace_configs=[_only_to(onion)],
            )
        self._sessions[onion] = session
        while len(self._sessions) > self.max_sessions:
            # Callers keep fewer stores in flight than max_sessions, so the oldest is idle.
            gone, oldest = self._sessions.popitem(last=False)
            self._fresh.pop(gone, None)
            task = asyncio.get_running_loop().create_task(oldest.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return session

    async def close(self) -> None:
        sessions = list(self._sessions.values())
        self._sessions.clear()
        await asyncio.gather(*(s.close() for s in sessions), *self._closing)
