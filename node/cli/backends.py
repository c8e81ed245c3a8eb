"""How CLI commands reach the data: directly, or through the running node.

Only one process may own a data directory (TinyDB is single-writer). When a
node is running it holds ``node.lock``; the CLI then sends the same
operations (``node.operations``) to its admin API with the bearer token, so
commands work either way and fail with the same error class and code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar, cast
from urllib.parse import quote

import aiohttp

from .. import operations as ops
from ..adapters.datadir import read_lock_info
from ..adapters.store import Storage
from ..app import port_probe, read_token, url_for_host
from ..app.discovery import open_parts
from ..app.messaging import Messaging, Purchasing, open_messaging, open_purchases
from ..app.payments import PaymentParts, open_payments
from ..core import errors
from ..core.config import Config
from ..core.errors import NodeBusy, PasarError, StorageError, ValidationError
from ..core.models import Listing, PublishState, StoreRecord, StoreStatus, UploadedImage
from ..discovery.service import Discovery
from ..market.limits import Limits
from ..market.market import Market
from ..payments.moderation import ModeratorService
from ..payments.service import Payments
from ..purchases.service import Purchases

In = TypeVar("In")
Out = TypeVar("Out")


class Backend(ABC):
    """Runs any operation of the table; ``LocalBackend`` and ``RemoteBackend`` differ only in ``run``."""

    where: str

    @abstractmethod
    async def run(self, op: ops.Operation[In, Out], inp: In) -> Out: ...

    async def resolve(self, ref: str) -> str:
        """A store's onion address from its address, unique prefix or name."""
        return (await self.run(ops.stores.get_store, ops.stores.StoreRef(ref)))["onion"]

    async def add_listings(self, onion: str, items: list[object]) -> list[Listing]:
        """The listings stored, in one atomic write; any whose ``import_key`` the store already held are left out."""
        stored = await self.run(ops.listings.add_listings, ops.stores.StoreBody(onion, {"listings": items}))
        return stored if isinstance(stored, list) else [stored]

    async def add_image(self, onion: str, data: bytes) -> UploadedImage:
        return await self.run(ops.listings.add_image, ops.listings.ImageUpload(onion, data))


class LocalContext:
    """Operations on the data directory of a stopped node: no listener is running, no tor."""

    def __init__(self, market: Market, config: Config) -> None:
        self._market, self._config = market, config
        self.opened: Discovery | None = None
        self.paying: PaymentParts | None = None
        self.buying: Purchasing | None = None

    @property
    def discovery(self) -> Discovery:
        if self.opened is None:
            raise RuntimeError("LocalBackend.run opens discovery before an operation that needs it")
        return self.opened

    @property
    def payments(self) -> Payments:
        return self._payment_parts().payments

    @property
    def moderation(self) -> ModeratorService:
        return self._payment_parts().moderation

    @property
    def purchases(self) -> Purchases:
        if self.buying is None:
            raise RuntimeError("LocalBackend.run opens purchases before an operation that needs them")
        return self.buying.purchases

    def _payment_parts(self) -> PaymentParts:
        if self.paying is None:
            raise RuntimeError("LocalBackend.run opens payments before an operation that needs them")
        return self.paying

    @property
    def market(self) -> Market:
        return self._market

    def status(self, onion: str) -> StoreStatus:
        return StoreStatus(PublishState.STOPPED)

    def local_url(self, record: StoreRecord) -> str | None:
        port = record["port"]
        return url_for_host(self._config.store_host, port) if port else None

    def tor(self) -> ops.TorView:
        mode = "system" if self._config.tor_control else "embedded"
        return {"mode": mode, "state": "stopped (the node is not running)"}


# Operations that read gossip or the directory: the local backend opens their databases first.
_DISCOVERY_OPS = {op.name for op in ops.discovery.OPERATIONS} | {ops.info.node_info.name}
# Operations on orders and moderation: the local backend opens their databases (and Core's client) first.
_PAYMENT_OPS = {op.name for op in ops.payments.OPERATIONS} - {ops.payments.set_store_moderators.name}
# The buyer's purchases: their database, the mailbox, the directory (catalogs) and Core's client.
_PURCHASE_OPS = {op.name for op in ops.purchases.OPERATIONS}


class LocalBackend(Backend):
    where = "data directory"

    def __init__(self, market: Market, config: Config, stack: AsyncExitStack) -> None:
        self._context = LocalContext(market, config)
        self._config, self._stack = config, stack
        self._messaging: Messaging | None = None

    async def run(self, op: ops.Operation[In, Out], inp: In) -> Out:
        if op.name in _DISCOVERY_OPS and self._context.opened is None:
            self._context.opened = await open_parts(self._config, self._stack, None)
            self._context.opened.gossip_on = self._config.gossip
        if op.name in _PURCHASE_OPS | _PAYMENT_OPS and self._context.paying is None:
            market = self._context.market
            paying = await open_payments(self._config, self._stack, market=market, http=None)
            self._context.paying = paying
            self._messaging = await open_messaging(self._config, self._stack, paying.payments)  # delivery states
        if op.name in _PURCHASE_OPS and self._context.buying is None:
            await self._open_purchases()
        return await op.call(self._context, inp)

    async def _open_purchases(self) -> None:
        """The buyer's side on a stopped node: what it places waits in the outbox until the node runs."""
        if self._context.opened is None:
            self._context.opened = await open_parts(self._config, self._stack, None)
        if self._messaging is None:
            raise RuntimeError("LocalBackend.run opens the mailbox with payments")
        self._context.buying = await open_purchases(
            self._config,
            self._stack,
            mailbox=self._messaging.mailbox,
            bitcoin=self._context._payment_parts().bitcoin,
            discovery=self._context.opened,
            http=None,
        )


class RemoteError(PasarError):
    code = "remote"


def _error_classes(base: type[PasarError] = PasarError) -> dict[str, type[PasarError]]:
    """code -> class, for every error of ``node.core.errors`` (the API sends the code)."""
    found = {base.code: base} if base.__module__ == errors.__name__ else {}
    for sub in base.__subclasses__():
        found.update(_error_classes(sub))
    return found


def _api_error(status: int, body: object) -> PasarError:
    """The error the node raised, as the same class (and code) it has without a node running."""
    if not isinstance(body, dict):
        return RemoteError(f"the node answered HTTP {status}")
    if isinstance(body.get("fields"), dict):  # same error as without a node running
        return ValidationError(body["fields"], body.get("summary"))
    message = str(body.get("error", f"HTTP {status}"))
    cls = _error_classes().get(str(body.get("code")))
    if cls is None or cls is ValidationError:
        error: PasarError = RemoteError(message)
        error.status = status
        return error
    return cls(message)


def _request(op: ops.Operation[Any, Any], inp: object) -> tuple[str, dict[str, Any]]:
    """The path and the body (``json=`` or ``data=``) of ``op`` for ``inp``."""
    parts: dict[str, str] = {}
    kw: dict[str, Any] = {}
    for name in op.params:
        value = getattr(inp, name)
        if name == "body":
            kw["json"] = value
        elif name == "data":
            kw["data"] = value
        elif name in op.path_params:
            parts[name] = quote(value, safe="")
        elif value != "":
            kw.setdefault("params", {})[name] = value
    return op.path.format(**parts), kw


class RemoteBackend(Backend):
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self._session, self._base = session, base.rstrip("/") + ops.PREFIX
        self.where = f"running node at {base}"

    async def run(self, op: ops.Operation[In, Out], inp: In) -> Out:
        path, kw = _request(op, inp)
        if op.long_running:  # the node answers when it is done; the CLI shows progress meanwhile
            kw["timeout"] = aiohttp.ClientTimeout(total=None, sock_connect=30)
        return cast(Out, await self._call(op.method, path, **kw))

    async def _call(self, method: str, path: str, **kw: Any) -> object:
        try:
            async with self._session.request(method, self._base + path, **kw) as resp:
                if resp.status == 204:
                    return None
                body: object = await resp.json(content_type=None)
        except aiohttp.ClientConnectionError as exc:  # disconnected, reset, refused: the node went away
            raise RemoteError(
                f"the {self.where} stopped answering ({exc or type(exc).__name__}): it may have stopped or "
                "crashed (see its log)"
            ) from exc
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise RemoteError(f"cannot talk to the {self.where}: {exc or type(exc).__name__}") from exc
        if resp.status >= 400:
            raise _api_error(resp.status, body)
        return body


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
            async with AsyncExitStack() as stack:
                market = Market(storage, Limits.from_config(config), port_free=port_probe(config.store_host))
                yield LocalBackend(market, config, stack)
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
