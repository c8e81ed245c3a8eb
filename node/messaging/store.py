"""The SQL of ``messages.sqlite`` (schema: ``node/adapters/messages_schema.py``): functions of one connection.

Each public function here runs inside one transaction of the database's
single writer (``execute_write_fn``) or one read snapshot (``execute_fn``);
``Mailbox`` decides which. Nothing here touches the network or the clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..core.errors import StorageError
from ..core.ports import SqlConnection, SqlRow
from . import wire
from .models import Delivery, InMessage, OutMessage

WAITING = ("queued", "sent")
_OUT_COLUMNS = "id, order_id, peer, kind, seq, created_at, delivery, reason, attempts, next_try, raw"
_IN_COLUMNS = "id, order_id, sender, kind, seq, received_at, applied, raw"


def out_message(row: SqlRow) -> OutMessage:
    return OutMessage(
        id=row["id"],
        order=row["order_id"],
        peer=row["peer"],
        kind=row["kind"],
        seq=row["seq"],
        created_at=row["created_at"],
        delivery=Delivery(row["delivery"]),
        reason=row["reason"],
        attempts=row["attempts"],
        next_try=row["next_try"],
        raw=bytes(row["raw"]),
    )


def in_message(row: SqlRow) -> InMessage:
    try:
        body = json.loads(bytes(row["raw"]))["body"]
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(
            f"a received message in messages.sqlite is damaged ({exc}): restore the file from a backup"
        ) from exc
    return InMessage(
        id=row["id"],
        order=row["order_id"],
        sender=row["sender"],
        kind=row["kind"],
        seq=row["seq"],
        received_at=row["received_at"],
        body=body,
        applied=row["applied"],
    )


# -- outbox ------------------------------------------------------------------------
@dataclass(frozen=True)
class NewOut:
    """A message to queue; ``sign(seq)`` returns its envelope's canonical bytes once the seq is known."""

    id: str
    order: str
    sender: str
    peer: str
    kind: str
    now: int
    sign: Callable[[int], bytes]


def out_by_id(conn: SqlConnection, message_id: str) -> OutMessage | None:
    row = conn.execute(f"SELECT {_OUT_COLUMNS} FROM outbox WHERE id = ?", (message_id,)).fetchone()  # noqa: S608
    return None if row is None else out_message(row)


def queue(conn: SqlConnection, new: NewOut) -> OutMessage:
    """Queue ``new`` with the next seq of (order, sender); a held id returns the held message unchanged."""
    held = out_by_id(conn, new.id)
    if held is not None:
        return held
    last = conn.execute(
        "SELECT COALESCE(MAX(seq), 0) FROM outbox WHERE order_id = ? AND sender = ?", (new.order, new.sender)
    ).fetchone()[0]
    seq = int(last) + 1
    raw = new.sign(seq)
    conn.execute(
        "INSERT INTO outbox (id, order_id, sender, peer, kind, seq, created_at, updated_at, delivery, next_try, raw)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
        (new.id, new.order, new.sender, new.peer, new.kind, seq, new.now, new.now, new.now, raw),
    )
    return OutMessage(new.id, new.order, new.peer, new.kind, seq, new.now, Delivery.QUEUED, "", 0, new.now, raw)


def outgoing(conn: SqlConnection, order: str) -> list[OutMessage]:
    rows = conn.execute(f"SELECT {_OUT_COLUMNS} FROM outbox WHERE order_id = ? ORDER BY sender, seq", (order,))  # noqa: S608
    return [out_message(r) for r in rows.fetchall()]


def due(conn: SqlConnection, now: int) -> list[OutMessage]:
    rows = conn.execute(
        f"SELECT {_OUT_COLUMNS} FROM outbox WHERE delivery IN ('queued', 'sent') AND next_try <= ?"  # noqa: S608
        " ORDER BY peer, order_id, seq",
        (now,),
    )
    return [out_message(r) for r in rows.fetchall()]


def pending_for(conn: SqlConnection, peer: str, order: str, limit: int) -> list[OutMessage]:
    rows = conn.execute(
        f"SELECT {_OUT_COLUMNS} FROM outbox WHERE peer = ? AND order_id = ? AND delivery IN ('queued', 'sent')"  # noqa: S608
        " ORDER BY seq LIMIT ?",
        (peer, order, limit),
    )
    return [out_message(r) for r in rows.fetchall()]


def next_tries(conn: SqlConnection) -> dict[tuple[str, str], int]:
    """(peer, order) -> the earliest next try of its queued or sent messages."""
    rows = conn.execute(
        "SELECT peer, order_id, MIN(next_try) FROM outbox WHERE delivery IN ('queued', 'sent') GROUP BY peer, order_id"
    ).fetchall()
    return {(str(r[0]), str(r[1])): int(r[2]) for r in rows}


def mark_sent(conn: SqlConnection, ids: Sequence[str], now: int) -> None:
    conn.executemany(
        "UPDATE outbox SET delivery = 'sent', updated_at = ? WHERE id = ? AND delivery = 'queued'",
        [(now, i) for i in ids],
    )


@dataclass(frozen=True)
class AckCheck:
    """A verified ack: the message ``id`` on ``order``, sent by ``to``, acked by ``signer``."""

    id: str
    order: str
    to: str
    signer: str


def mark_delivered(conn: SqlConnection, acks: Sequence[AckCheck], now: int) -> list[str]:
    """Mark the acked messages delivered when each ack names our message, its order, and comes from its peer."""
    done: list[str] = []
    for ack in acks:
        row = conn.execute("SELECT order_id, sender, peer FROM outbox WHERE id = ?", (ack.id,)).fetchone()
        if row is None or (row["order_id"], row["sender"], row["peer"]) != (ack.order, ack.to, ack.signer):
            continue
        conn.execute(
            "UPDATE outbox SET delivery = 'delivered', reason = '', updated_at = ? WHERE id = ?", (now, ack.id)
        )
        if ack.id not in done:
            done.append(ack.id)
    return done


@dataclass(frozen=True)
class Retry:
    id: str
    jitter: float  # 0.8 .. 1.2


@dataclass(frozen=True)
class Backoff:
    first: float
    cap: float
    give_up: int
    ttl: int = wire.MSG_TTL  # a message older than this expired: failed for good, no longer offered

    def wait(self, attempts: int, jitter: float) -> int:
        """Seconds before attempt ``attempts + 1``: first, doubling, up to the cap, jittered, never above the cap."""
        base = min(self.cap, self.first * 2.0 ** min(max(attempts - 1, 0), 60))
        return max(1, round(min(self.cap, base * jitter)))

    def overdue(self) -> str:
        return f"not delivered in {span(self.give_up)}"


EXPIRED = "expired before it was delivered"


def retry_later(conn: SqlConnection, retries: Sequence[Retry], now: int, error: str, backoff: Backoff) -> None:
    """Back off each waiting message; past the give-up time it reads ``failed: not delivered in N days`` but stays
    waiting (still sent at the cap interval, delivered if acked later); past its lifetime it fails for good."""
    for retry in retries:
        row = conn.execute(
            "SELECT created_at, attempts, reason FROM outbox WHERE id = ? AND delivery IN ('queued', 'sent')",
            (retry.id,),
        ).fetchone()
        if row is None:
            continue
        attempts = int(row["attempts"]) + 1
        age = now - int(row["created_at"])
        if age >= backoff.ttl:
            conn.execute(
                "UPDATE outbox SET delivery = 'failed', reason = ?, attempts = ?, last_error = ?, updated_at = ?"
                " WHERE id = ?",
                (EXPIRED, attempts, error, now, retry.id),
            )
            continue
        reason = backoff.overdue() if age >= backoff.give_up else str(row["reason"])
        conn.execute(
            "UPDATE outbox SET attempts = ?, next_try = ?, reason = ?, last_error = ?, updated_at = ? WHERE id = ?",
            (attempts, now + backoff.wait(attempts, retry.jitter), reason, error, now, retry.id),
        )


def give_up_old(conn: SqlConnection, now: int, backoff: Backoff) -> list[str]:
    """Mark ``not delivered in N days`` every waiting message older than the give-up time (it stays waiting: the
    peer may still take it); fail for good those past their lifetime. The ids newly marked either way."""
    expired = [
        r["id"]
        for r in conn.execute(
            "SELECT id FROM outbox WHERE delivery IN ('queued', 'sent') AND created_at <= ?", (now - backoff.ttl,)
        ).fetchall()
    ]
    fail(conn, expired, EXPIRED, now)
    overdue = [
        r["id"]
        for r in conn.execute(
            "SELECT id FROM outbox WHERE delivery IN ('queued', 'sent') AND created_at <= ? AND reason = ''",
            (now - backoff.give_up,),
        ).fetchall()
    ]
    conn.executemany(
        "UPDATE outbox SET reason = ?, updated_at = ? WHERE id = ?", [(backoff.overdue(), now, i) for i in overdue]
    )
    return expired + overdue


def fail(conn: SqlConnection, ids: Sequence[str], reason: str, now: int) -> None:
    conn.executemany(
        "UPDATE outbox SET delivery = 'failed', reason = ?, updated_at = ? WHERE id = ? AND delivery != 'delivered'",
        [(reason, now, i) for i in ids],
    )


def counts(conn: SqlConnection) -> dict[str, int]:
    rows = conn.execute("SELECT delivery, COUNT(*) FROM outbox GROUP BY delivery").fetchall()
    found = {str(r[0]): int(r[1]) for r in rows}
    return {d.value: found.get(d.value, 0) for d in Delivery}


def inbox_counts(conn: SqlConnection) -> dict[str, int]:
    """Received messages: ``waiting`` (to apply), ``applied``, ``rejected``."""
    row = conn.execute(
        "SELECT COALESCE(SUM(applied = ''), 0), COALESCE(SUM(applied = 'applied'), 0),"
        " COALESCE(SUM(applied LIKE 'rejected:%'), 0) FROM inbox"
    ).fetchone()
    return {"waiting": int(row[0]), "applied": int(row[1]), "rejected": int(row[2])}


def span(seconds: int) -> str:
    """``14 days``, ``1 day``, ``3 hours``, ``90 seconds``: a give-up time as people read it."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


# -- inbox -------------------------------------------------------------------------
def incoming(conn: SqlConnection, order: str) -> list[InMessage]:
    rows = conn.execute(f"SELECT {_IN_COLUMNS} FROM inbox WHERE order_id = ? ORDER BY sender, seq", (order,))  # noqa: S608
    return [in_message(r) for r in rows.fetchall()]


def held_ids(conn: SqlConnection, ids: Sequence[str]) -> dict[str, tuple[str, str, int]]:
    """Of ``ids``, those held: id -> (order, sender, seq)."""
    held: dict[str, tuple[str, str, int]] = {}
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT id, order_id, sender, seq FROM inbox WHERE id IN ({marks})"  # noqa: S608
        for row in conn.execute(sql, chunk).fetchall():
            held[row["id"]] = (row["order_id"], row["sender"], int(row["seq"]))
    return held


def opener(conn: SqlConnection, order: str) -> str | None:
    """The sender of the order's ``order`` message (its buyer key), when received."""
    row = conn.execute("SELECT sender FROM inbox WHERE order_id = ? AND kind = 'order'", (order,)).fetchone()
    return None if row is None else str(row["sender"])


def unapplied(conn: SqlConnection) -> list[tuple[str, str]]:
    rows = conn.execute("SELECT DISTINCT order_id, sender FROM inbox WHERE applied = '' ORDER BY order_id, sender")
    return [(str(r[0]), str(r[1])) for r in rows.fetchall()]


def ready(conn: SqlConnection, order: str, sender: str, limit: int) -> list[InMessage]:
    """The waiting messages of (order, sender) that follow the last applied one with no gap, in seq order."""
    row = conn.execute("SELECT applied_seq FROM cursors WHERE order_id = ? AND sender = ?", (order, sender)).fetchone()
    expected = 1 if row is None else int(row[0]) + 1
    rows = conn.execute(
        f"SELECT {_IN_COLUMNS} FROM inbox WHERE order_id = ? AND sender = ? AND seq >= ? AND applied = ''"  # noqa: S608
        " ORDER BY seq LIMIT ?",
        (order, sender, expected, limit),
    ).fetchall()
    result: list[InMessage] = []
    for r in rows:
        if int(r["seq"]) != expected:
            break
        result.append(in_message(r))
        expected += 1
    return result


def mark_applied(conn: SqlConnection, order: str, sender: str, outcomes: Mapping[str, tuple[int, str]]) -> None:
    """Record outcomes (id -> (seq, "applied" | "rejected: ...")) and move the cursor to the highest seq."""
    if not outcomes:
        return
    conn.executemany("UPDATE inbox SET applied = ? WHERE id = ?", [(text, i) for i, (_, text) in outcomes.items()])
    top = max(seq for seq, _ in outcomes.values())
    conn.execute(
        "INSERT INTO cursors (order_id, sender, applied_seq) VALUES (?, ?, ?)"
        " ON CONFLICT (order_id, sender) DO UPDATE SET applied_seq = MAX(applied_seq, excluded.applied_seq)",
        (order, sender, top),
    )
