"""The parts of gossip other modules name: the transport, the limits, a round's figures (re-exported by gossip)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ..core import ports
from ..core.errors import Unreachable
from . import announce
from . import gossip_wire as wire

if TYPE_CHECKING:
    from ..core.config import Config

GOSSIP_PATH = "/.well-known/pasar/gossip"


class Transport(Protocol):
    async def exchange(self, peer: str, message: bytes, *, alone: bool = False) -> bytes:
        """POST ``message`` to ``peer``'s gossip endpoint; its answer. Raises ``Unreachable``.

        ``alone``: over a circuit shared with nothing else (a stem must not ride the node's named exchanges).
        """


class HttpTransport:
    """The real transport: ``POST http://<peer>.onion/.well-known/pasar/gossip`` through ``ports.Http`` (tor)."""

    def __init__(self, http: ports.Http, *, deadline: float = 60.0) -> None:
        self._http = http
        self._deadline = deadline

    async def exchange(self, peer: str, message: bytes, *, alone: bool = False) -> bytes:
        url = f"http://{peer}.onion{GOSSIP_PATH}"
        reply = await self._http.post(
            url, message, deadline=self._deadline, attempts=2, max_bytes=wire.MAX_MESSAGE_BYTES, fresh_circuit=alone
        )
        if reply.status != 200:
            raise Unreachable(f"{peer}.onion answered gossip with HTTP {reply.status}")
        return reply.body


@dataclass(frozen=True)
class GossipLimits:
    gossip_interval: int = 300
    max_peers: int = 256
    max_announcements: int = 20000
    max_reviews: int = 20000  # buyers' reviews kept, besides the announcements
    max_reviews_per_store: int = 2000  # of them about one store (its oldest make room for its new ones)
    announce_ttl: int = 7 * 86400
    fanout: int = 2
    max_message_bytes: int = wire.MAX_MESSAGE_BYTES
    per_exchange: int = 200  # announcements accepted from one message
    page_size: int = 100  # announcements in one pull answer
    pages_per_exchange: int = 4  # pull pages fetched from one peer in one round
    peers_per_message: int = wire.MAX_PEERS
    push_budget: int = 400  # pushed announcements checked per gossip_interval
    verify_batch: int = 64  # signatures checked between two yields to the event loop

    @classmethod
    def from_config(cls, config: Config) -> GossipLimits:
        return cls(
            gossip_interval=config.gossip_interval,
            max_peers=config.max_peers,
            max_announcements=config.max_announcements,
            announce_ttl=min(config.announce_ttl, announce.MAX_TTL),
        )


_SUMMED = (
    *("contacted", "succeeded", "failed", "messages", "sent_bytes", "received_bytes"),
    *("accepted", "duplicates", "rejected", "bad_signatures", "refused", "stems"),
)


@dataclass
class RoundStats:
    """What one round did (also the totals of ``handle`` calls in ``Gossip.served``, and of every round in
    ``Gossip.totals``: the node's metrics read both)."""

    contacted: int = 0
    succeeded: int = 0
    failed: int = 0
    messages: int = 0
    sent_bytes: int = 0
    received_bytes: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0  # invalid items (bad signature, shape, expired...)
    bad_signatures: int = 0  # of the rejected: a signature that does not verify
    refused: int = 0  # valid but not kept: blocked, budget, per-exchange cap, table full
    stems: int = 0
    banned: list[str] = field(default_factory=list)
    rounds: int = 0  # totals only: the rounds added up
    bans: int = 0  # totals only: peers banned (``banned`` of each round)

    def add(self, other: RoundStats, *, rounds: int = 1) -> None:
        """Add one round's figures to these totals (``banned`` is counted, not kept); ``rounds=0`` for stems
        sent between rounds."""
        for name in _SUMMED:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.rounds += rounds
        self.bans += len(other.banned)

    @contextmanager
    def adding(self, *, rounds: int = 1) -> Iterator[RoundStats]:
        """A fresh ``RoundStats`` to fill, added to these totals at the end, also when the work raises."""
        stats = RoundStats()
        try:
            yield stats
        finally:
            self.add(stats, rounds=rounds)


@dataclass
class Intake:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    bad_signatures: int = 0
    refused: int = 0

    def add_to(self, stats: RoundStats) -> None:
        stats.accepted += self.accepted
        stats.duplicates += self.duplicates
        stats.rejected += self.rejected
        stats.bad_signatures += self.bad_signatures
        stats.refused += self.refused
