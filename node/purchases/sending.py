"""What the buyer's node sends on a purchase, through the mailbox (``messaging.mailbox.Mailbox``).

Messages that repeat after a crash carry deterministic ids
(``sha256(order + ":" + what)[:32]``), so sending one again returns the held
message instead of a second one: the order itself, each signed payout, each
review. Free texts get the id of the note that records them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Protocol

from ..core.crypto import StoreKey
from ..messaging import boxes
from ..messaging.models import InMessage, OutMessage
from .models import Purchase


class Outbox(Protocol):
    """What purchases use of the node's ``Mailbox``."""

    async def send(
        self,
        key: StoreKey,
        *,
        peer: str,
        order: str,
        kind: str,
        fields: Mapping[str, object],
        to: str,
        message_id: str | None = None,
    ) -> OutMessage: ...

    async def outgoing(self, order: str) -> list[OutMessage]: ...

    async def incoming(self, order: str) -> list[InMessage]: ...


def message_id(order: str, what: str) -> str:
    return hashlib.sha256(f"{order}:{what}".encode()).hexdigest()[:32]


def order_key(p: Purchase) -> StoreKey:
    return StoreKey(bytes.fromhex(p.order_key))


def order_fields(p: Purchase) -> dict[str, object]:
    """The ``order`` message's fields (the shipping address boxed to the store's key)."""
    return {
        "store": p.store,
        "listing": p.listing_id,
        "listing_hash": p.listing_hash,
        "sku": p.sku,
        "qty": p.qty,
        "shipping": p.shipping,
        "coupon": p.coupon,
        "moderator": p.moderator,
        "buyer_key": p.buyer_key.descriptor_key(),
        "refund_address": p.refund_address,
        "amount_sat": p.amount_sat,
        "ship_to": boxes.box(order_key(p), p.store, p.ship_to),
    }


async def send(
    outbox: Outbox, p: Purchase, kind: str, fields: Mapping[str, object], *, message_id: str | None = None
) -> OutMessage:
    return await outbox.send(
        order_key(p), peer=p.store, order=p.id, kind=kind, fields=fields, to=p.store, message_id=message_id
    )


async def send_order(outbox: Outbox, p: Purchase) -> OutMessage:
    return await send(outbox, p, "order", order_fields(p), message_id=message_id(p.id, "order"))


async def send_note(outbox: Outbox, p: Purchase, note_id: str, kind: str, text: str) -> OutMessage:
    """A ``message`` (field ``text``) or ``dispute`` (field ``statement``), boxed to the store's key."""
    field = "statement" if kind == "dispute" else "text"
    return await send(outbox, p, kind, {field: boxes.box(order_key(p), p.store, text)}, message_id=note_id)


async def resend_missing(outbox: Outbox, p: Purchase, sent: Sequence[OutMessage]) -> int:
    """Queue again what a crash may have left unsent: the order, and our notes; how many were missing."""
    held = {m.id for m in sent}
    missing = 0
    if message_id(p.id, "order") not in held:
        await send_order(outbox, p)
        missing += 1
    for note in p.notes:
        if note.direction == "out" and note.id not in held:
            await send_note(outbox, p, note.id, note.kind, note.text)
            missing += 1
    return missing
