"""Helpers for the messaging tests (a mailbox on a real SQLite file, keys, a clock) and their own checks."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from node.adapters import messages_schema
from node.adapters.sqlite import SQLiteDatabase
from node.core.crypto import StoreKey
from node.messaging import wire
from node.messaging.mailbox import Mailbox
from node.messaging.models import InMessage

T0 = 1_780_000_000
FIRST, CAP, GIVE_UP = 15.0, 3600.0, 14 * 86400


@dataclass
class Clock:
    now: int = T0

    def __call__(self) -> int:
        return self.now


@dataclass
class Side:
    """One node's mailbox and the keys it holds."""

    db: SQLiteDatabase
    mailbox: Mailbox
    keys: dict[str, StoreKey] = field(default_factory=dict)
    applied: list[InMessage] = field(default_factory=list)

    def me(self, to: str) -> StoreKey | None:
        return self.keys.get(to)

    def add(self, key: StoreKey) -> str:
        self.keys[key.onion] = key
        return key.onion

    async def apply(self, msg: InMessage) -> None:
        self.applied.append(msg)


async def open_side(path: Path, clock: Callable[[], int], *, seed: int = 7) -> Side:
    db = await messages_schema.open_messages_db(path)
    mailbox = Mailbox(db, clock=clock, retry_first=FIRST, retry_cap=CAP, give_up=GIVE_UP, rng=random.Random(seed))
    return Side(db, mailbox)


async def anyone(order: str, sender: str) -> str | None:
    return None


def order_fields(store: str) -> dict[str, object]:
    return {"store": store, "listing": "l1", "qty": 1, "amount_sat": 10_000}


def test_ids_and_addresses():
    key = StoreKey.generate()
    assert wire.key_address(key) == key.onion and wire.is_address(key.onion)
    assert wire.is_order_id(wire.new_order_id()) and wire.is_message_id(wire.new_message_id())
    assert wire.new_message_id() != wire.new_message_id()
