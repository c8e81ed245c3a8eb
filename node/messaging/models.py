"""Records of order messages: what this node sent, what it received, and how delivery stands."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from ..core.errors import PasarError
from ..core.models import Envelope


class Delivery(StrEnum):
    """Where a sent message stands; ``failed`` carries a reason (``OutMessage.reason``)."""

    QUEUED = "queued"  # stored, not handed to the peer yet
    SENT = "sent"  # handed to the peer (posted, or returned to its poll), no ack yet
    DELIVERED = "delivered"  # the peer's signed ack verified
    FAILED = "failed"  # refused by the peer for good, or expired (``MSG_TTL``) before delivery


@dataclass(frozen=True)
class OutMessage:
    """One message this node sends (signed, stored before it is ever sent)."""

    id: str
    order: str
    peer: str  # the store onion (buyer side) or the buyer's order-key address (vendor side)
    kind: str
    seq: int
    created_at: int
    delivery: Delivery
    reason: str  # why it failed, or (still queued/sent) that it is overdue; "" otherwise
    attempts: int
    next_try: int
    raw: bytes  # the signed envelope, canonical JSON

    def delivery_text(self) -> str:
        """``queued`` | ``sent`` | ``delivered`` | ``failed: <reason>``.

        A message still waiting past the give-up time reads ``failed: not delivered in N days`` though it is
        still offered (its ``delivery`` stays queued/sent) and turns ``delivered`` if the peer acks it later."""
        if self.delivery is Delivery.FAILED:
            return f"failed: {self.reason}" if self.reason else "failed"
        if self.delivery is not Delivery.DELIVERED and self.reason:
            return f"failed: {self.reason}"
        return self.delivery.value


@dataclass(frozen=True)
class InMessage:
    """One message this node received, verified (signature, freshness, recipient, party)."""

    id: str
    order: str
    sender: str  # the sender's key address for this order
    kind: str
    seq: int
    received_at: int
    body: Mapping[str, object]  # the whole envelope body (id, order, kind, to and the kind's fields)
    applied: str  # "" waiting | "applied" | "rejected: <reason>"


class ApplyError(PasarError):
    """A message the owning feature refuses for good: it is marked ``rejected: <message>`` and skipped.

    Any other ``PasarError`` raised by an applier is transient: the message stays and is retried later.
    """

    status = 422
    code = "message_rejected"


@dataclass(frozen=True)
class Received:
    """What ``Mailbox.receive`` did with one batch."""

    acks: list[Envelope]  # one signed ack per message stored now or held already
    refused: list[tuple[str, str]]  # (message id, or "" when it had none; reason): permanent
    new: list[InMessage]  # stored now (not applied yet)
