"""The SQL of ``gossip.sqlite`` (schema: ``node/adapters/gossip_schema.py``), run through ``ports.Database``.

Every function here takes a connection and runs inside one read or write job
(``execute_fn`` / ``execute_write_fn``): a write job may read, decide and
write with no other write in between. They touch no in-memory state; the
caller updates its memory from what they return.

Announcements carry ``counter``, the node's local acceptance counter: each
accepted (new or higher-seq) announcement takes the next value, so "what is
new since counter N" is one indexed range query (the since-cursor of
docs/protocol.md). ``epoch`` is a random value chosen when the file is
created: a peer holding a cursor of another epoch (this file was wiped)
starts over from 0. Past capacity, the announcement expiring soonest makes
room for one that expires later. ``rank`` records how one arrived (0 = pushed
by an unauthenticated sender, 1 = pulled from a peer this node chose).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..core.ports import SqlConnection
from ..core.reviews import REVIEW_TYPE, Review
from .models import Announcement

PUSHED = 0
PULLED = 1


class Outcome(StrEnum):
    NEW = "new"  # stored (new store or higher seq)
    DUPLICATE = "duplicate"  # same seq held: counted, not an error
    STALE = "stale"  # lower seq than held: a replay
    REFUSED = "refused"  # table full of announcements that outlive it


@dataclass(frozen=True)
class Held:
    """What the node keeps in memory about one held announcement (or review: ``subject`` is its store)."""

    seq: int
    expires_at: int
    tags: tuple[str, ...] = ()
    subject: str = ""  # a review's reviewed store; "" for an announcement


@dataclass(frozen=True)
class Stored:
    """What one ``store_batch`` did: an outcome per input, the stores added or evicted, the counter after it, and
    while the table is full, the expires_at a newcomer must beat."""

    outcomes: list[Outcome]
    final: dict[str, Announcement | Review | None]  # every key added (its item) or evicted (None), as it ends
    counter: int
    floor: int | None


@dataclass
class OwnRow:
    store: str
    seq: int
    issued_at: int
    expires_at: int
    raw: bytes
    state: str  # "pending" (due_at: stem then) | "sent" (awaiting its return) | "back" (seen from a peer)
    due_at: int
    stem_peer: str | None
    attempts: int


@dataclass
class PeerRow:
    """One gossip peer (mutable: the peer table updates it, then saves it)."""

    onion: str
    source: str
    added_at: int
    last_success: int | None
    last_attempt: int | None
    failures: int
    score: float
    next_try: int
    banned: bool
    banned_until: int
    strikes: int
    pull_epoch: str | None
    pull_after: int
    push_after: int


@dataclass(frozen=True)
class Loaded:
    epoch: str
    counter: int
    held: dict[str, Held]
    peers: list[PeerRow]
    own: list[OwnRow]


def init(conn: SqlConnection) -> Loaded:
    """(write) Create the epoch on first use, then everything the node keeps in memory."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
    if row is None:
        epoch = secrets.token_hex(8)
        conn.execute("INSERT INTO meta (key, value) VALUES ('epoch', ?), ('counter', '0')", (epoch,))
    else:
        epoch = str(row[0])
    held = {
        str(r[0]): _held(int(r[1]), int(r[2]), bytes(r[3]))
        for r in conn.execute("SELECT store, seq, expires_at, raw FROM announcements").fetchall()
    }
    peers = [PeerRow(*_peer_values(r)) for r in conn.execute(_SELECT_PEERS).fetchall()]
    own = [OwnRow(*r) for r in conn.execute(_SELECT_OWN).fetchall()]
    return Loaded(epoch, _counter(conn), held, peers, own)


def _held(seq: int, expires_at: int, raw: bytes) -> Held:
    """What memory keeps of a stored (verified when stored) announcement's tags, or a review's store."""
    env = json.loads(raw)
    if env["type"] == REVIEW_TYPE:
        return Held(seq, expires_at, (), subject=str(env["body"]["store"]))
    return Held(seq, expires_at, tuple(str(t) for t in env["body"]["tags"]))


def _counter(conn: SqlConnection) -> int:
    return int(conn.execute("SELECT value FROM meta WHERE key = 'counter'").fetchone()[0])


def store_batch(
    conn: SqlConnection,
    batch: list[tuple[Announcement | Review, int]],
    *,
    capacity: int,
    now: int,
    origin: str | None,
    evict: Sequence[str] = (),
) -> Stored:
    """(write) Store verified items ``(announcement or review, rank)``: dedupe by (signer, seq), evict past capacity.

    An item is kept under its signer (``store`` column): a store's announcement under the store, a review under
    the buyer's order key. ``origin`` is the node they came from, if known (not pushed back to it). ``evict``:
    reviews (by signer) that make room for new ones (``gossip_items.ReviewRoom``), deleted first.
    """
    counter = _counter(conn)
    final: dict[str, Announcement | Review | None] = {}
    for key in evict:
        conn.execute("DELETE FROM announcements WHERE store = ?", (key,))
        final[key] = None
    count = int(conn.execute("SELECT count(*) FROM announcements").fetchone()[0])
    outcomes: list[Outcome] = []
    for ann, rank in batch:
        key = ann.store if isinstance(ann, Announcement) else ann.signer
        row = conn.execute("SELECT seq, rank FROM announcements WHERE store = ?", (key,)).fetchone()
        if row is not None and int(row[0]) >= ann.seq:
            if int(row[0]) == ann.seq and rank > int(row[1]):
                conn.execute("UPDATE announcements SET rank = ? WHERE store = ?", (rank, key))
            outcomes.append(Outcome.DUPLICATE if int(row[0]) == ann.seq else Outcome.STALE)
            continue
        if row is None and count >= capacity:
            victim = conn.execute("SELECT store, expires_at FROM announcements ORDER BY expires_at LIMIT 1").fetchone()
            if victim is None or int(victim[1]) >= ann.expires_at:
                outcomes.append(Outcome.REFUSED)
                continue
            conn.execute("DELETE FROM announcements WHERE store = ?", (victim[0],))
            final[str(victim[0])] = None
            count -= 1
        counter += 1
        conn.execute(
            "INSERT OR REPLACE INTO announcements"
            " (store, seq, issued_at, expires_at, counter, rank, received_at, origin, raw)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, ann.seq, ann.issued_at, ann.expires_at, counter, rank, now, origin, ann.raw),
        )
        count += row is None
        final[key] = ann
        outcomes.append(Outcome.NEW)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'counter'", (str(counter),))
    return Stored(outcomes, final, counter, _floor(conn) if count >= capacity else None)


def _floor(conn: SqlConnection) -> int | None:
    row = conn.execute("SELECT expires_at FROM announcements ORDER BY expires_at LIMIT 1").fetchone()
    return None if row is None else int(row[0])


def page(
    conn: SqlConnection,
    *,
    after: int,
    limit: int,
    now: int,
    skip_origin: str | None = None,
    received_since: int = 0,
) -> tuple[list[tuple[int, str, bytes]], int, bool]:
    """(read) Up to ``limit`` announcements with counter > ``after``, oldest first.

    Returns the live ones as (counter, store, raw), less those that came from
    ``skip_origin`` and those received before ``received_since``; the counter
    of the last one looked at; and whether there are more.
    """
    rows = conn.execute(
        "SELECT counter, store, raw, expires_at, origin FROM announcements"
        " WHERE counter > ? AND received_at >= ? ORDER BY counter LIMIT ?",
        (after, received_since, limit + 1),
    ).fetchall()
    scanned = rows[:limit]
    items = [
        (int(r[0]), str(r[1]), bytes(r[2]))
        for r in scanned
        if int(r[3]) > now and (skip_origin is None or r[4] != skip_origin)
    ]
    return items, int(scanned[-1][0]) if scanned else after, len(rows) > limit


def all_raw(conn: SqlConnection, *, now: int) -> list[bytes]:
    """(read) Every live announcement held."""
    return [bytes(r[0]) for r in conn.execute("SELECT raw FROM announcements WHERE expires_at > ?", (now,)).fetchall()]


def one_raw(conn: SqlConnection, store: str) -> bytes | None:
    row = conn.execute("SELECT raw FROM announcements WHERE store = ?", (store,)).fetchone()
    return None if row is None else bytes(row[0])


def expire(conn: SqlConnection, *, now: int) -> list[str]:
    """(write) Drop expired announcements; returns their stores."""
    gone = [str(r[0]) for r in conn.execute("SELECT store FROM announcements WHERE expires_at <= ?", (now,)).fetchall()]
    conn.execute("DELETE FROM announcements WHERE expires_at <= ?", (now,))
    return gone


def forget(conn: SqlConnection, store: str) -> None:
    conn.execute("DELETE FROM announcements WHERE store = ?", (store,))


# -- peers -----------------------------------------------------------------------
_PEER_COLUMNS = (
    "onion, source, added_at, last_success, last_attempt, failures, score, next_try, banned, "
    "banned_until, strikes, pull_epoch, pull_after, push_after"
)
_SELECT_PEERS = (
    "SELECT onion, source, added_at, last_success, last_attempt, failures, score, next_try, "
    "banned, banned_until, strikes, pull_epoch, pull_after, push_after FROM peers"
)
_SAVE_PEER = (
    "INSERT OR REPLACE INTO peers (onion, source, added_at, last_success, last_attempt, "
    "failures, score, next_try, banned, banned_until, strikes, pull_epoch, pull_after, "
    "push_after) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _peer_values(r: Any) -> tuple[Any, ...]:
    values = tuple(r)
    return (*values[:8], bool(values[8]), *values[9:])


def save_peer(conn: SqlConnection, peer: PeerRow) -> None:
    values = tuple(getattr(peer, c.strip()) for c in _PEER_COLUMNS.split(","))
    conn.execute(_SAVE_PEER, values)


def delete_peer(conn: SqlConnection, onion: str) -> None:
    conn.execute("DELETE FROM peers WHERE onion = ?", (onion,))


# -- own announcements -----------------------------------------------------------
_OWN_COLUMNS = "store, seq, issued_at, expires_at, raw, state, due_at, stem_peer, attempts"
_SELECT_OWN = "SELECT store, seq, issued_at, expires_at, raw, state, due_at, stem_peer, attempts FROM own"
_SAVE_OWN = (
    "INSERT OR REPLACE INTO own (store, seq, issued_at, expires_at, raw, state, due_at, "
    "stem_peer, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def save_own(conn: SqlConnection, own: OwnRow) -> None:
    values = tuple(getattr(own, c.strip()) for c in _OWN_COLUMNS.split(","))
    conn.execute(_SAVE_OWN, values)


def delete_own(conn: SqlConnection, store: str) -> None:
    conn.execute("DELETE FROM own WHERE store = ?", (store,))
