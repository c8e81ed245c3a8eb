"""``ports.Http`` over loopback, for tests, simulations and benchmarks only (never used by the node).

``http://<onion>.onion/path`` goes to ``resolve(onion) + "/path"``, where
``resolve`` returns a loopback base URL (``http://127.0.0.1:PORT`` or with a
path prefix) or None for an onion that is "offline" (``Unreachable``). Any
other host is refused: nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

import aiohttp

from ..core.errors import Unreachable
from ..core.models import HttpReply
from .net import MAX_BYTES, read_capped

DEADLINE = 60.0


def _is_loopback(base: str) -> bool:
    host = urlsplit(base).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LoopbackHttp:
    """One aiohttp session; each onion mapped to a loopback base URL by ``resolve``."""

    def __init__(self, resolve: Callable[[str], str | None], *, limit: int = 100) -> None:
        self._resolve = resolve
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0  # how many requests went out (tests and benches read it)

    def _target(self, url: str) -> str:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme != "http" or not host.endswith(".onion"):
            raise ValueError(f"LoopbackHttp maps only http://<onion>.onion/ URLs, not {url!r}")
        base = self._resolve(host.removesuffix(".onion"))
        if base is None:
            raise Unreachable(f"{url} did not answer (offline in this simulation)")
        if not _is_loopback(base):
            raise ValueError(f"LoopbackHttp refuses a non-loopback base URL {base!r}")
        return base.rstrip("/") + (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, force_close=False)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        return self._session

    async def get(
        self,
        url: str,
        *,
        deadline: float = DEADLINE,
        attempts: int = 1,
        allow_redirects: bool = False,
        before_retry: Callable[[], object] | None = None,
        headers: Mapping[str, str] | None = None,
        max_bytes: int = MAX_BYTES,
    ) -> HttpReply:
        """One GET (``attempts`` and ``before_retry`` are accepted for the Protocol; loopback does not retry)."""
        return await self._send("GET", url, None, dict(headers or {}), allow_redirects, deadline, max_bytes)

    async def post(
        self,
        url: str,
        body: bytes,
        *,
        deadline: float = DEADLINE,
        attempts: int = 1,
        content_type: str = "application/json",
        max_bytes: int = MAX_BYTES,
        fresh_circuit: bool = False,  # no circuits on loopback
        isolation: str = "",
    ) -> HttpReply:
        return await self._send("POST", url, body, {"Content-Type": content_type}, False, deadline, max_bytes)

    async def _send(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: dict[str, str],
        allow_redirects: bool,
        deadline: float,
        max_bytes: int,
    ) -> HttpReply:
        target = self._target(url)
        self.requests += 1
        try:
            async with asyncio.timeout(deadline):
                async with self._client().request(
                    method, target, data=body, headers=headers, allow_redirects=allow_redirects
                ) as resp:
                    data = await read_capped(resp, max_bytes)  # TooLarge is a ClientError: Unreachable below
                    return HttpReply(status=resp.status, body=data, headers=dict(resp.headers))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unreachable(f"{url} did not answer: {exc!r}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
