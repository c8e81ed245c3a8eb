"""What the market tells the rest of the node when a store changes.

The market calls one observer with a typed event; the app decides, in one
place and in an explicit order, what each part of the node does about it
(store listeners, onion publishing, and later gossip, the crawler, orders).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

from .models import StoreRecord


class StoreChange(Enum):
    CREATED = "created"
    DELETED = "deleted"  # ``record`` is the store's last record, already moved to deleted/
    PORT_CHANGED = "port_changed"
    ACCESS_CHANGED = "access_changed"  # onion-service options or client keys
    PROFILE_CHANGED = "profile_changed"
    CATALOG_CHANGED = "catalog_changed"  # listings, stock or images; ``record["seq"]`` is the new seq


@dataclass(frozen=True)
class StoreChanged:
    change: StoreChange
    record: StoreRecord


StoreObserver = Callable[[StoreChanged], Awaitable[None]]


async def ignore(event: StoreChanged) -> None:
    """The observer of a market nobody watches (the CLI working on a data directory)."""
