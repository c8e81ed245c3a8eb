"""The shape of an operation, and what it may use (``Context``); see ``node/operations/__init__.py``."""

from __future__ import annotations

import inspect
import string
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from ..core.models import StoreRecord, StoreStatus
from ..discovery.service import Discovery
from ..market.market import Market

if TYPE_CHECKING:  # the running node's and the CLI's contexts build them; operations only call them
    from ..payments.moderation import ModeratorService
    from ..payments.service import Payments
    from ..purchases.service import Purchases

PREFIX = "/api/v1"
TorView = dict[str, object]  # "mode" and "state", and when connected bootstrap, version, socks, ...


class Context(Protocol):
    """Where an operation runs: the running node, or the CLI on a stopped node's data directory."""

    @property
    def market(self) -> Market: ...

    def status(self, onion: str) -> StoreStatus:
        """local | starting | published | error (with its reason) | stopped."""
        ...

    def local_url(self, record: StoreRecord) -> str | None:
        """The store's loopback URL, or None (no listener, or a port chosen at each start)."""
        ...

    def tor(self) -> TorView: ...

    @property
    def discovery(self) -> Discovery:
        """Gossip, the directory and the crawler (``crawler`` is None where nothing can be fetched)."""
        ...

    @property
    def payments(self) -> Payments:
        """Orders and their escrow payouts (the vendor's side)."""
        ...

    @property
    def moderation(self) -> ModeratorService:
        """This node's moderation: its offer, and the disputes it decides."""
        ...

    @property
    def purchases(self) -> Purchases:
        """This node's own purchases from other stores (the buyer's side of node-to-node orders)."""
        ...


@dataclass(frozen=True)
class NoInput:
    pass


In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(frozen=True)
class Operation(Generic[In, Out]):
    name: str
    method: str
    path: str  # under PREFIX; {names} are fields of the input
    input: Callable[..., In]
    call: Callable[[Context, In], Awaitable[Out]]
    status: int = 200  # 201 created, 204 nothing to say (the output is None)
    optional_body: bool = False  # no body reads as {}
    long_running: bool = False  # may take longer than a client's usual timeout (a whole crawl pass)

    @property
    def params(self) -> list[str]:
        """The input's fields: path parameters, ``body`` (JSON) or ``data`` (raw bytes), else query parameters."""
        return list(inspect.signature(self.input).parameters)

    @property
    def path_params(self) -> set[str]:
        return {name for _, name, _, _ in string.Formatter().parse(self.path) if name}

    @property
    def query_params(self) -> list[str]:
        """Fields read from the query string (a GET's filters): neither in the path nor the body."""
        return [p for p in self.params if p not in self.path_params and p not in ("body", "data")]
