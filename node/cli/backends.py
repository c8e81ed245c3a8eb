"""How CLI commands reach the data: directly, or through the running node.

Only one process may own a data directory (TinyDB is single-writer). When a
node is running it holds ``node.lock``; the CLI then sends the same operations
to its admin API with the bearer token, so commands work either way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp

from ..adapters.datadir import read_lock_info
from ..adapters.store import Storage
from ..app import limits_from, port_probe, read_token, url_for_host
from ..core.config import Config
from ..core.errors import NodeBusy, PasarError, StorageError, ValidationError
from ..market.market import Market


class Backend(Protocol):
    where: str

    async def create_store(self, data: dict[str, Any]) -> dict[str, Any]: ...
    async def stores(self) -> list[dict[str, Any]]: ...
    async def resolve(self, ref: str) -> str: ...
    async def listings(self, onion: str) -> list[dict[str, Any]]: ...
    # The listings stored: any whose ``import_key`` the store already held are left out (skipped).
    async def add_listings(self, onion: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]: ...
    async def remove_listing(self, onion: str, listing_id: str) -> None: ...
    async def add_image(self, onion: str, data: bytes) -> dict[str, Any]: ...
    async def delete_store(self, onion: str) -> dict[str, Any]: ...
    async def set_port(self, onion: str, port: str) -> dict[str, Any]: ...


class LocalBackend:
    where = "data directory"

    def __init__(self, market: Market, config: Config) -> None:
        self._market, self._config = market, config

    def _summary(self, record: dict[str, Any]) -> dict[str, Any]:
        port = record["port"]
        return {
            "onion": record["onion"],
            "address": f"{record['onion']}.onion",
            "name": record["profile"]["name"],
            "seq": record["seq"],
            "local_url": url_for_host(self._config.store_host, port) if port else None,
            "status": "stopped",
            "port": port,
        }

    async def create_store(self, data: dict[str, Any]) -> dict[str, Any]:
        return self._summary(await self._market.create_store(data))

    async def stores(self) -> list[dict[str, Any]]:
        return [self._summary(r) for r in await self._market.stores()]

    async def resolve(self, ref: str) -> str:
        return await self._market.resolve(ref)

    async def listings(self, onion: str) -> list[dict[str, Any]]:
        return await self._market.listings(onion)

    async def add_listings(self, onion: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return await self._market.add_listings(onion, items)

    async def remove_listing(self, onion: str, listing_id: str) -> None:
        await self._market.remove_listing(onion, listing_id)

    async def add_image(self, onion: str, data: bytes) -> dict[str, Any]:
        return await self._market.add_image(onion, data)

    async def delete_store(self, onion: str) -> dict[str, Any]:
        gone = await self._market.delete_store(onion, onion)
        return {"onion": gone.onion, "name": gone.name, "moved_to": str(gone.moved_to)}

    async def set_port(self, onion: str, port: str) -> dict[str, Any]:
        return self._summary(await self._market.set_port(onion, port))


class RemoteError(PasarError):
    code = "remote"


class RemoteBackend:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self._session, self._base = session, base.rstrip("/") + "/api/v1"
        self.where = f"running node at {base}"

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            async with self._session.request(method, self._base + path, **kw) as resp:
                if resp.status == 204:
                    return None
                body = await resp.json(content_type=None)
        except aiohttp.ClientConnectionError as exc:  # disconnected, reset, refused: the node went away
            raise RemoteError(
                f"the {self.where} stopped answering ({exc or type(exc).__name__}): it may have stopped or "
                "crashed (see its log)"
            ) from None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise RemoteError(f"cannot talk to the {self.where}: {exc or type(exc).__name__}") from None
        if resp.status >= 400:
            if not isinstance(body, dict):
                raise RemoteError(f"the node answered HTTP {resp.status}")
            if isinstance(body.get("fields"), dict):  # same error as without a node running
                raise ValidationError(body["fields"], body.get("summary"))
            error = RemoteError(str(body.get("error", f"HTTP {resp.status}")))
            error.status = resp.status
            raise error
        return body

    async def create_store(self, data: dict[str, Any]) -> dict[str, Any]:
        return await self._call("POST", "/stores", json=data)  # type: ignore[no-any-return]

    async def stores(self) -> list[dict[str, Any]]:
        return await self._call("GET", "/stores")  # type: ignore[no-any-return]

    async def resolve(self, ref: str) -> str:
        return (await self._call("GET", f"/stores/{quote(ref, safe='')}"))["onion"]  # type: ignore[no-any-return]

    async def listings(self, onion: str) -> list[dict[str, Any]]:
        return await self._call("GET", f"/stores/{onion}/listings")  # type: ignore[no-any-return]

    async def add_listings(self, onion: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return await self._call("POST", f"/stores/{onion}/listings", json={"listings": items})  # type: ignore[no-any-return]

    async def remove_listing(self, onion: str, listing_id: str) -> None:
        await self._call("DELETE", f"/stores/{onion}/listings/{listing_id}")

    async def add_image(self, onion: str, data: bytes) -> dict[str, Any]:
        return await self._call("POST", f"/stores/{onion}/images", data=data)  # type: ignore[no-any-return]

    async def delete_store(self, onion: str) -> dict[str, Any]:
        return await self._call("DELETE", f"/stores/{onion}", json={"confirm": onion})  # type: ignore[no-any-return]

    async def set_port(self, onion: str, port: str) -> dict[str, Any]:
        return await self._call("PATCH", f"/stores/{onion}", json={"port": port})  # type: ignore[no-any-return]


@asynccontextmanager
async def open_backend(config: Config) -> AsyncIterator[Backend]:
    storage = Storage(config.data_dir)
    try:
        try:
            await storage.open()
        except NodeBusy:
            node_running = True
        else:
            node_running = False
            yield LocalBackend(Market(storage, limits_from(config), port_free=port_probe(config.store_host)), config)
    finally:
        await storage.close()
    if not node_running:
        return
    url = read_lock_info(config.data_dir).get("admin_url")
    if not url:
        raise StorageError("a node is starting or stopping on this data directory; try again in a moment")
    headers = {"Authorization": f"Bearer {read_token(config)}"}
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=300)) as session:
        yield RemoteBackend(session, url)
