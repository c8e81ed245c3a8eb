"""Receiving order messages: verify a batch (off the event loop), then store it under the order rules.

Order of checks (docs/protocol.md "Order messages"): shape and signature and
freshness (``envelope.open_``), the body's header, the recipient is one of
our keys, then, in the write transaction: dedupe by id (a held message is
acknowledged again, never stored twice), the sender's seq is not taken by
another message, and the order's parties: the first message of an order
this node never spoke on must be kind ``order`` with seq 1, which fixes the
buyer's key; an order id held by another buyer is refused.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core import envelope
from ..core.crypto import StoreKey
from ..core.errors import SignatureError, ValidationError
from ..core.models import Envelope
from ..core.ports import SqlConnection
from . import verify, wire
from .models import InMessage


@dataclass(frozen=True)
class Checked:
    """A message whose signature, freshness and header verified, addressed to one of our keys."""

    header: wire.Header
    sender: str
    seq: int
    body: Mapping[str, object]
    raw: bytes  # canonical JSON of the envelope
    ack: Envelope  # signed ahead (on the worker thread); handed out only once the message is stored or held


@dataclass(frozen=True)
class Refusal:
    id: str
    reason: str


Me = Callable[[str], StoreKey | None]


def _guess_id(raw: object) -> str:
    body = raw.get("body") if isinstance(raw, dict) else None
    value = body.get("id") if isinstance(body, dict) else None
    return value if isinstance(value, str) and wire.is_message_id(value) else ""


def _limit_problem(env: Envelope, head: wire.Header, size: int) -> str | None:
    """Why a verified message is too big to hold (None: it is not); permanent refusals."""
    if env["seq"] > wire.MAX_SEQ:
        return f"seq must be at most {wire.MAX_SEQ}"
    if env["expires_at"] - env["issued_at"] > wire.MSG_TTL + wire.TTL_SLACK:
        return f"a message lives at most {wire.MSG_TTL} seconds (expires_at - issued_at)"
    if size > wire.max_bytes(head.kind):
        return f"{head.kind} messages are at most {wire.max_bytes(head.kind)} bytes; this one is {size}"
    return None


def check_one(raw: object, now: int, key_for: Callable[[str], StoreKey | None]) -> Checked | Refusal:
    """Verify one received message and sign its ack (pure: runs on a worker thread)."""
    try:
        value: Any = envelope.loads(raw) if isinstance(raw, bytes | str) else raw
    except ValidationError:
        return Refusal("", "not valid JSON")
    try:
        env, canonical = verify.open_message(value, now=now)
        head = wire.header(env["body"])
    except SignatureError as exc:
        if exc.message in verify.STALE:  # signed well; the clocks disagree: the sender tries again later
            return Refusal(_guess_id(value), f"{wire.RETRY_LATER}{exc.message}")
        return Refusal(_guess_id(value), f"bad signature: {exc.message}")
    except ValidationError as exc:
        return Refusal(_guess_id(value), exc.message)
    problem = _limit_problem(env, head, len(canonical))
    if problem is not None:
        return Refusal(head.id, problem)
    key = key_for(head.to)
    if key is None:
        return Refusal(head.id, "not addressed to this node")
    ack = wire.seal_ack(key, message_id=head.id, order=head.order, sender=env["store"], seq=env["seq"], now=now)
    return Checked(head, env["store"], env["seq"], env["body"], canonical, ack)


def check_batch(raws: Sequence[object], now: int, me: Me) -> list[Checked | Refusal]:
    """Verify a batch and sign an ack for each message addressed to us (one key derivation per recipient)."""
    keys: dict[str, StoreKey | None] = {}

    def key_for(to: str) -> StoreKey | None:
        if to not in keys:
            found = me(to)
            keys[to] = None if found is None else wire.held_key(found)
        return keys[to]

    return [check_one(raw, now, key_for) for raw in raws]


# -- the write ----------------------------------------------------------------------
@dataclass(frozen=True)
class Stored:
    """What the write did: messages stored now, ids held already (ack again), refusals."""

    new: list[InMessage]
    held: list[Checked]
    refused: list[Refusal]


def _opener(conn: SqlConnection, order: str, openers: dict[str, str | None]) -> str | None:
    """The sender of the order's ``order`` message (cached for one transaction: a batch is mostly one order)."""
    if order not in openers:
        row = conn.execute("SELECT sender FROM inbox WHERE order_id = ? AND kind = 'order'", (order,)).fetchone()
        openers[order] = None if row is None else str(row["sender"])
    return openers[order]


class NewOrderLimit:
    """New orders from keys a store never saw: at most ``per_hour`` per store (recipient) in any hour.

    Checked inside the write transaction (the one writer serializes it); kept in memory, so a restart forgets."""

    def __init__(self, per_hour: int = wire.NEW_ORDERS_PER_HOUR) -> None:
        self.per_hour = per_hour
        self._seen: dict[str, deque[int]] = {}

    def admit(self, store: str, now: int) -> bool:
        seen = self._seen.setdefault(store, deque())
        while seen and seen[0] <= now - 3600:
            seen.popleft()
        if len(seen) >= self.per_hour:
            return False
        seen.append(now)
        return True


@dataclass
class _Txn:
    """What one store transaction looked up already (a batch is mostly one order)."""

    now: int
    limit: NewOrderLimit
    openers: dict[str, str | None] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)  # order -> received messages held
    cursors: dict[tuple[str, str], int] = field(default_factory=dict)  # (order, sender) -> last applied seq

    def applied(self, conn: SqlConnection, order: str, sender: str) -> int:
        if (order, sender) not in self.cursors:
            row = conn.execute(
                "SELECT applied_seq FROM cursors WHERE order_id = ? AND sender = ?", (order, sender)
            ).fetchone()
            self.cursors[(order, sender)] = 0 if row is None else int(row[0])
        return self.cursors[(order, sender)]

    def held_rows(self, conn: SqlConnection, order: str) -> int:
        if order not in self.rows:
            self.rows[order] = int(
                conn.execute("SELECT COUNT(*) FROM inbox WHERE order_id = ?", (order,)).fetchone()[0]
            )
        return self.rows[order]


def _limit_rows(conn: SqlConnection, msg: Checked, txn: _Txn) -> str | None:
    """Why ``msg`` would hold too much on its order (None: it fits); ``RETRY_LATER`` when it fits later."""
    head = msg.header
    if txn.held_rows(conn, head.order) >= wire.ORDER_ROWS:
        return f"an order holds at most {wire.ORDER_ROWS} messages"
    applied = txn.applied(conn, head.order, msg.sender)
    if msg.seq > applied + wire.SEQ_AHEAD:
        return f"{wire.RETRY_LATER}seq {msg.seq} is more than {wire.SEQ_AHEAD} past the last applied ({applied})"
    return None


def _rule_problem(conn: SqlConnection, msg: Checked, txn: _Txn) -> str | None:
    """Why ``msg`` may not be stored on its order (None: it may)."""
    head = msg.header
    openers = txn.openers
    taken = conn.execute(
        "SELECT id FROM inbox WHERE order_id = ? AND sender = ? AND seq = ?", (head.order, msg.sender, msg.seq)
    ).fetchone()
    if taken is not None:
        return f"sequence number {msg.seq} of this sender on this order is taken by another message (replay?)"
    if msg.seq < 1:
        return "sequence numbers start at 1"
    buyer = _opener(conn, head.order, openers)
    if head.kind == "order":
        # Our own order (a node buying from its own store) may reach us; another key's may not.
        ours = conn.execute("SELECT sender FROM outbox WHERE order_id = ? AND kind = 'order'", (head.order,)).fetchone()
        if buyer is not None or (ours is not None and ours["sender"] != msg.sender):
            return "this order id is taken by another buyer: place the order again with a new id"
        if msg.seq != 1:
            return "an order message must be the first message of its sender (seq 1)"
        if ours is None and not txn.limit.admit(head.to, txn.now):
            return f"{wire.RETRY_LATER}this store takes at most {txn.limit.per_hour} new orders an hour"
        return None
    if buyer is not None:
        return _limit_rows(conn, msg, txn) if buyer == msg.sender else "only the order's buyer may send messages on it"
    spoke = conn.execute("SELECT 1 FROM outbox WHERE order_id = ? LIMIT 1", (head.order,)).fetchone()
    if spoke is None:
        return "unknown order: its first message must be the order (kind order, seq 1)"
    return _limit_rows(conn, msg, txn)


def store(conn: SqlConnection, checked: Sequence[Checked], now: int, limit: NewOrderLimit | None = None) -> Stored:
    """Dedupe, apply the order rules and limits, and insert, in one transaction."""
    new: list[InMessage] = []
    held: list[Checked] = []
    refused: list[Refusal] = []
    txn = _Txn(now, limit or NewOrderLimit())
    for msg in checked:
        head = msg.header
        row = conn.execute("SELECT order_id, sender, seq FROM inbox WHERE id = ?", (head.id,)).fetchone()
        if row is not None:
            if (row["order_id"], row["sender"], row["seq"]) == (head.order, msg.sender, msg.seq):
                held.append(msg)
            else:
                refused.append(Refusal(head.id, "this message id is taken by another message"))
            continue
        problem = _rule_problem(conn, msg, txn)
        if problem is not None:
            refused.append(Refusal(head.id, problem))
            continue
        held_rows = txn.held_rows(conn, head.order)
        conn.execute(
            "INSERT INTO inbox (id, order_id, sender, recipient, kind, seq, received_at, raw)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (head.id, head.order, msg.sender, head.to, head.kind, msg.seq, now, msg.raw),
        )
        if head.kind == "order":
            txn.openers[head.order] = msg.sender
        txn.rows[head.order] = held_rows + 1
        new.append(InMessage(head.id, head.order, msg.sender, head.kind, msg.seq, now, msg.body, ""))
    return Stored(new, held, refused)
