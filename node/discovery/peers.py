"""The gossip peer table: other nodes' onions, their reachability score, backoff and bans.

Kept in memory (at most ``max_peers`` rows) and saved through the Database
port on every change. Rules (docs/design.md, "Gossip limits"):

- score: an exponential moving average of exchange outcomes, 0..1 (a new
  peer starts at 0.5; success -> 0.8 s + 0.2, failure -> 0.8 s);
- after a failure, ``next_try = now + min(interval * 2**failures, 1 day)``;
- past ``max_peers``, the peer with the lowest score is dropped (a peer
  learned from gossip only replaces one scoring below a new peer's 0.5, so
  unverified names cannot push out peers that answer);
- a peer whose answers carry invalid signatures in ``BAN_STRIKES``
  exchanges in a row is banned for ``BAN_SECONDS``; ``ban`` bans for good.
  Only answers to requests this node sent count: the ``from`` of a received
  message is not authenticated, so it is never held against that onion.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ..core import addresses, ports
from ..core.errors import NotFound, ValidationError
from . import gossip_state as S
from .models import PeerView

Peer = S.PeerRow
INITIAL_SCORE = 0.5
DECAY = 0.8
MAX_BACKOFF = 86400
BAN_STRIKES = 3
BAN_SECONDS = 86400
SOURCES = ("seed", "manual", "gossip")


def parse_onion(onion: str) -> str:
    """A peer's node onion, normalised; ValidationError if it is not a v3 onion address."""
    name = addresses.normalize(onion) if isinstance(onion, str) else ""
    if not addresses.is_address(name):
        raise ValidationError({"onion": "must be a v3 onion address (56 characters, optionally ending in .onion)"})
    return name


class PeerTable:
    def __init__(self, db: ports.Database, *, me: str | None, max_peers: int, interval: int) -> None:
        self._db = db
        self._me = me
        self._max = max_peers
        self._interval = interval
        self.by_onion: dict[str, Peer] = {}

    def load(self, rows: list[Peer]) -> None:
        self.by_onion = {p.onion: p for p in rows}

    def __len__(self) -> int:
        return len(self.by_onion)

    @staticmethod
    def view(peer: Peer, now: int) -> PeerView:
        return PeerView(
            onion=peer.onion,
            source=peer.source,
            added_at=peer.added_at,
            last_success=peer.last_success,
            last_attempt=peer.last_attempt,
            failures=peer.failures,
            score=round(peer.score, 4),
            next_try=peer.next_try,
            banned=PeerTable.is_banned(peer, now),
        )

    @staticmethod
    def is_banned(peer: Peer, now: int) -> bool:
        return peer.banned or peer.banned_until > now

    # -- changes -------------------------------------------------------------------
    async def add(self, onion: str, source: str, *, now: int, push_after: int) -> Peer | None:
        """Add (or, for a manual/seed add, unban and refresh) a peer; None if the table is full of better ones."""
        name = parse_onion(onion)
        if name == self._me:
            raise ValidationError({"onion": "that is this node's own onion"})
        if source not in SOURCES:
            raise ValueError(f"unknown peer source {source!r}")
        peer = self.by_onion.get(name)
        if peer is not None:
            if source != "gossip":
                peer.banned, peer.banned_until, peer.strikes, peer.next_try = False, 0, 0, now
                peer.source = source if peer.source == "gossip" else peer.source
                await self._save(peer)
            return peer
        if len(self.by_onion) >= self._max and not await self._make_room(source):
            return None
        peer = Peer(name, source, now, None, None, 0, INITIAL_SCORE, now, False, 0, 0, None, 0, push_after)
        self.by_onion[name] = peer
        await self._save(peer)
        return peer

    async def _make_room(self, source: str) -> bool:
        candidates = [p for p in self.by_onion.values() if not p.banned]
        if source == "gossip":
            candidates = [p for p in candidates if p.source == "gossip" and p.score < INITIAL_SCORE]
        else:
            candidates = [p for p in candidates if p.source == "gossip"] or candidates
        if not candidates:
            return False
        victim = min(candidates, key=lambda p: (p.score, p.added_at))
        await self.remove(victim.onion)
        return True

    async def add_many(self, onions: list[str], *, now: int, push_after: int) -> int:
        """Peers learned from gossip (invalid names and this node are skipped); returns how many are new."""
        added = 0
        for onion in onions:
            if onion == self._me or onion in self.by_onion or not addresses.is_address(onion):
                continue
            added += await self.add(onion, "gossip", now=now, push_after=push_after) is not None
        return added

    async def remove(self, onion: str) -> None:
        name = addresses.normalize(onion)
        if self.by_onion.pop(name, None) is None:
            raise NotFound(f"{name} is not a gossip peer of this node (see `pasar peers list`)")
        await self._db.execute_write_fn(lambda conn: S.delete_peer(conn, name))

    async def ban(self, onion: str, *, now: int) -> Peer:
        """Ban for good (kept in the table so gossip does not add it again); an unknown onion is added banned."""
        name = parse_onion(onion)
        peer = self.by_onion.get(name)
        if peer is None:
            if len(self.by_onion) >= self._max:
                await self._make_room("manual")
            peer = Peer(name, "manual", now, None, None, 0, 0.0, now, True, 0, 0, None, 0, 0)
            self.by_onion[name] = peer
        peer.banned = True
        await self._save(peer)
        return peer

    async def succeeded(self, peer: Peer, *, now: int) -> None:
        peer.last_attempt = peer.last_success = now
        peer.failures = 0
        peer.score = DECAY * peer.score + (1 - DECAY)
        peer.next_try = now
        await self._save(peer)

    async def failed(self, peer: Peer, *, now: int) -> None:
        peer.last_attempt = now
        peer.failures += 1
        peer.score *= DECAY
        peer.next_try = now + min(self._interval * 2**peer.failures, MAX_BACKOFF)
        await self._save(peer)

    async def judged(self, peer: Peer, *, bad_signatures: int, now: int) -> bool:
        """Count an answer's invalid signatures; True when this bans the peer."""
        strikes = peer.strikes + 1 if bad_signatures else 0
        if strikes == peer.strikes:
            return False
        peer.strikes = strikes
        banned = strikes >= BAN_STRIKES
        if banned:
            peer.banned_until, peer.strikes = now + BAN_SECONDS, 0
        await self._save(peer)
        return banned

    async def _save(self, peer: Peer) -> None:
        if peer.onion in self.by_onion:
            await self._db.execute_write_fn(lambda conn: S.save_peer(conn, peer))

    # -- choosing ------------------------------------------------------------------
    def due(self, now: int) -> list[Peer]:
        """Peers that may be contacted now (not banned, not backing off)."""
        return [p for p in self.by_onion.values() if not self.is_banned(p, now) and p.next_try <= now]

    def sample(
        self, k: int, rng: random.Random, *, now: int, keep: Callable[[Peer], bool] = lambda p: True
    ) -> list[str]:
        """Up to ``k`` random peers that answered at least once and are not banned."""
        good = [p.onion for p in self.by_onion.values() if p.last_success is not None and not self.is_banned(p, now)]
        good = [o for o in good if keep(self.by_onion[o])]
        return rng.sample(good, min(k, len(good)))
