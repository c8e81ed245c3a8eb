"""Shared helpers for the gossip tests: real nodes (Gossip + SQLiteDatabase) joined by an in-memory transport."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from node.adapters.gossip_schema import MIGRATIONS
from node.adapters.sqlite import SQLiteDatabase
from node.core.crypto import StoreKey
from node.core.errors import PayloadTooLarge, Unreachable, ValidationError
from node.discovery import announce
from node.discovery.gossip import Gossip, GossipLimits
from node.discovery.models import AnnounceBody, Announcement

NOW = 1_800_000_000


def store_key(i: int) -> StoreKey:
    return StoreKey(i.to_bytes(4, "big") + b"store".ljust(28, b"."))


def node_onion(i: int) -> str:
    return StoreKey(i.to_bytes(4, "big") + b"node".ljust(28, b"-")).onion


def make_body(name: str = "Shop", tags: tuple[str, ...] = ("wool",)) -> AnnounceBody:
    return AnnounceBody(
        name=name,
        description="things",
        tags=sorted(tags),
        ships_to=["WORLDWIDE"],
        listings=3,
        catalog_seq=1,
        catalog_hash="sha256:" + "0" * 64,
    )


def make_ann(i: int, *, seq: int = NOW, now: int = NOW, ttl: int = 7 * 86400, tags: tuple[str, ...] = ("wool",)):
    return announce.build(store_key(i), make_body(f"Shop {i}", tags), seq=seq, now=now, ttl=ttl)


@dataclass
class Clock:
    t: float = NOW

    def __call__(self) -> float:
        return self.t


@dataclass
class Net:
    """An in-memory network: ``exchange`` hands the bytes to the peer node's real ``handle``."""

    nodes: dict[str, Gossip] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    log: list[tuple[str | None, str, bytes, bytes | None]] = field(default_factory=list)
    record: bool = True
    bytes_sent: int = 0
    alone: list[bytes] = field(default_factory=list)  # messages sent on a circuit of their own

    def link(self, src: str | None) -> Link:
        return Link(self, src)


@dataclass
class Link:
    net: Net
    src: str | None

    async def exchange(self, peer: str, message: bytes, *, alone: bool = False) -> bytes:
        self.net.bytes_sent += len(message)
        if alone and self.net.record:
            self.net.alone.append(message)
        node = self.net.nodes.get(peer)
        if node is None or peer in self.net.down:
            if self.net.record:
                self.net.log.append((self.src, peer, message, None))
            raise Unreachable(f"{peer}.onion is down")
        try:
            answer = await node.handle(message)
        except (ValidationError, PayloadTooLarge) as exc:
            raise Unreachable(f"{peer}.onion answered HTTP {exc.status}") from exc
        if self.net.record:
            self.net.log.append((self.src, peer, message, answer))
        return answer

    def sent_to(self, peer: str) -> list[dict[str, object]]:
        return [json.loads(m) for s, p, m, _ in self.net.log if s == self.src and p == peer]


async def open_node(
    tmp_path: Path,
    net: Net,
    i: int,
    *,
    clock: Clock,
    limits: GossipLimits | None = None,
    opened: list[SQLiteDatabase] | None = None,
    name: str | None = None,
    **kwargs: object,
) -> Gossip:
    onion = node_onion(i)
    db = SQLiteDatabase(tmp_path / (name or f"gossip-{i}.sqlite"), MIGRATIONS, readers=1, synchronous="NORMAL")
    await db.open()
    if opened is not None:
        opened.append(db)
    node = Gossip(
        db, net.link(onion), me=onion, limits=limits or GossipLimits(gossip_interval=60), clock=clock, **kwargs
    )
    await node.open()
    net.nodes[onion] = node
    return node


def push_message(items: list[object], *, sender: str | None = None, cursor: object = None, peers=()) -> bytes:
    return json.dumps({"v": 1, "from": sender, "cursor": cursor, "push": items, "peers": list(peers)}).encode()


def raw_items(anns: list[Announcement]) -> list[object]:
    return [json.loads(a.raw) for a in anns]
