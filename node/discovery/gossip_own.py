"""The node's own store announcements: the stem rule (docs/design.md, "Unlinkability").

- ``schedule`` holds a new announcement back for a random delay (uniform in
  0..gossip_interval), so stores created or changed together do not enter
  gossip together.
- When due, it is pushed alone, in a message of its own with ``from`` null,
  ``cursor`` "head" (it asks for nothing) and no peers, to one random peer chosen for this store
  alone ("stem"); tor hides where the message came from, and each peer is
  reached over a circuit of its own. The answer is not used.
- It enters this node's own table (so this node serves and relays it) only
  when it comes back from a peer, like anyone else's. If it has not come
  back after 3 intervals, it is stemmed again through another peer; if no
  peer is reachable it waits for the next round.
- At half its lifetime the store's announcement is renewed (the ``renew``
  callback of ``Gossip`` re-signs it), and the new one follows the same path.
- A review the node's buyer signed follows the same path (keyed by its
  signer, the order key), so nothing links the buyer's node to its review;
  it is not renewed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.errors import PayloadTooLarge, Unreachable, ValidationError
from ..core.reviews import Review
from . import gossip_items as items_
from . import gossip_state as S
from . import gossip_wire as wire
from .models import Announcement

if TYPE_CHECKING:
    from .gossip import Gossip
    from .gossip_types import RoundStats

PENDING, SENT, BACK = "pending", "sent", "back"
RESTEM_AFTER = 3  # intervals without the announcement coming back


class OwnSchedule:
    def __init__(self, gossip: Gossip) -> None:
        self._g = gossip
        self.rows: dict[str, S.OwnRow] = {}

    def load(self, rows: list[S.OwnRow]) -> None:
        self.rows = {r.store: r for r in rows}

    def next_due(self) -> int | None:
        due = [r.due_at for r in self.rows.values() if r.state != BACK]
        return min(due) if due else None

    async def _save(self, row: S.OwnRow) -> None:
        await self._g.db.execute_write_fn(lambda c: S.save_own(c, row))

    async def schedule(self, ann: Announcement | Review) -> None:
        """Stem ``ann`` after a random delay (nothing happens if a newer one is scheduled already)."""
        key = items_.key_of(ann)
        old = self.rows.get(key)
        if old is not None and old.seq >= ann.seq:
            return
        delay = int(self._g.rng.uniform(0, self._g.limits.gossip_interval))
        row = S.OwnRow(key, ann.seq, ann.issued_at, ann.expires_at, ann.raw, PENDING, self._g.now() + delay, None, 0)
        self.rows[key] = row
        await self._save(row)

    async def withdraw(self, store: str) -> None:
        self.rows.pop(store, None)
        await self._g.db.execute_write_fn(lambda c: S.delete_own(c, store))

    async def came_back(self, ann: Announcement | Review) -> None:
        row = self.rows.get(items_.key_of(ann))
        if row is not None and row.state != BACK and ann.seq >= row.seq:
            row.state = BACK
            await self._save(row)

    def renewals_due(self, now: int) -> list[str]:
        """Own stores whose announcement is past half its lifetime (reviews are not renewed)."""
        return [
            r.store
            for r in self.rows.values()
            if now >= r.issued_at + (r.expires_at - r.issued_at) // 2 and not items_.is_review(r.raw)
        ]

    async def renew_due(self, now: int) -> None:
        renew = self._g.renew
        if renew is None:
            return
        for store in self.renewals_due(now):
            fresh = await renew(store)
            if fresh is None:
                await self._g.withdraw_own(store)
            elif fresh.seq > self.rows[store].seq:
                await self.schedule(fresh)

    async def stem_due(self, now: int, stats: RoundStats) -> set[str]:
        """Stem what is due; returns the peers stemmed to (the round then leaves them alone)."""
        stemmed: set[str] = set()
        for row in list(self.rows.values()):
            if row.expires_at <= now:
                await self.withdraw(row.store)
            elif row.state != BACK and row.due_at <= now and await self._stem(row, now, stats):
                stemmed.add(str(row.stem_peer))
        return stemmed

    async def _stem(self, row: S.OwnRow, now: int, stats: RoundStats) -> bool:
        g = self._g
        due = g.peer_table.due(now)
        candidates = [p for p in due if p.onion != row.stem_peer] or due
        proven = [p for p in candidates if p.last_success is not None]
        if not candidates:
            row.due_at = now + g.limits.gossip_interval // 2  # no reachable peer: try again next round
            await self._save(row)
            return False
        peer = g.rng.choice(proven or candidates)
        message = wire.encode_request(None, wire.HEAD, [row.raw], [])
        stats.messages += 1
        stats.sent_bytes += len(message)
        try:
            reply = await g.transport.exchange(peer.onion, message, alone=True)  # a circuit of its own
            wire.parse_answer(reply, max_bytes=g.limits.max_message_bytes)
        except (Unreachable, ValidationError, PayloadTooLarge):
            stats.failed += 1
            await g.peer_table.failed(peer, now=now)
            row.due_at = now + g.limits.gossip_interval // 2
            await self._save(row)
            return False
        stats.received_bytes += len(reply)
        stats.stems += 1
        row.state, row.stem_peer, row.attempts = SENT, peer.onion, row.attempts + 1
        row.due_at = now + RESTEM_AFTER * g.limits.gossip_interval
        await self._save(row)
        return True
