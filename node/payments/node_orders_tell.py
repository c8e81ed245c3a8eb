"""What the vendor's node tells a buyer's node about an order: the fields of each message it sends.

Pure: ``plan`` lists every message an order calls for now (the escrow, one
``state`` per history entry, one ``message`` per vendor message, the payout
waiting for the buyer's signature), each with a deterministic id
(``message_id``), so sending the plan again sends nothing twice: the mailbox
keeps one message per id.

The ``escrow`` message carries the store's receipt for the order
(``core.reviews.seal_receipt``), issued at the order's creation time so the
same order always gets the same receipt bytes (ed25519 signatures are
deterministic): the buyer's review embeds it, and only a key the store took an
order from can review the store.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from ..core import reviews
from ..core.crypto import StoreKey
from .checkout import MODERATOR_ANSWER, PEER
from .models import Order, Party, Payout

Fields = dict[str, object]


@dataclass(frozen=True)
class Planned:
    """One message of the plan; ``text`` is the plain text a ``message`` carries boxed (sealed at send)."""

    id: str
    kind: str
    fields: Fields
    sealed: str = ""  # a vendor message's text sealed to the store (opened and boxed to the buyer at send)


def message_id(order_id: str, what: str) -> str:
    """``sha256(order id + ":" + what)[:32]``: the same message gets the same id however often it is planned."""
    return hashlib.sha256(f"{order_id}:{what}".encode()).hexdigest()[:32]


def peer(order: Order) -> str:
    return order.extra.get(PEER, "")


def receipt(order: Order, key: StoreKey) -> dict[str, object]:
    """The store's receipt for ``order`` (the same bytes every time: issued at the order's creation)."""
    return reviews.seal_receipt(
        key,
        order=order.id,
        buyer=peer(order),
        address=order.escrow.address,
        listing_hash=order.item.listing_hash,
        now=order.created_at,
    )


def escrow_fields(order: Order, accept_window: int, key: StoreKey | None = None) -> Fields:
    """The ``escrow`` message; with the store ``key`` it carries the store's ``receipt`` for the order."""
    e, item = order.escrow, order.item
    answer = order.extra.get(MODERATOR_ANSWER, "")
    fields: Fields = {
        "escrow": {
            "descriptor": e.descriptor,
            "address": e.address,
            "buyer": e.buyer.descriptor_key(),
            "vendor": e.vendor.descriptor_key(),
            "moderator": e.moderator.descriptor_key(),
            "vendor_timeout": e.vendor_timeout.descriptor_key(),
            "timeout_blocks": e.timeout_blocks,
        },
        "amount_sat": int(order.amount_sat),
        "pay_by": order.pay_by,
        "accept_window": accept_window,
        "vendor_address": order.vendor_address,
        "moderator_answer": json.loads(answer) if answer else None,
        "item": {
            "listing": item.listing_id,
            "listing_hash": item.listing_hash,
            "title": item.title,
            "sku": item.sku,
            "qty": item.qty,
            "unit_price_sat": int(item.unit_price_sat),
            "shipping": item.shipping,
            "shipping_sat": int(item.shipping_sat),
            "discount_sat": int(item.discount_sat),
        },
    }
    if key is not None:
        fields["receipt"] = receipt(order, key)
    return fields


def last_txid(order: Order) -> str | None:
    """The txid of the payout broadcast last (pending until confirmed, then among ``payouts``)."""
    if order.pending is not None and order.pending.txid is not None:
        return order.pending.txid
    return order.payouts[-1].txid if order.payouts else None


def state_fields(order: Order, index: int) -> Fields:
    entry = order.history[index]
    return {
        "state": entry.state.value,
        "note": entry.note,
        "at": entry.at,
        "index": index,
        "paid_sat": int(order.funding.paid_sat),
        "confirmations": order.funding.confirmations,
        "txid": last_txid(order),
    }


def payout_fields(payout: Payout) -> Fields:
    outputs = [{"address": o.address, "amount_sat": int(o.amount_sat), "role": o.role.value} for o in payout.outputs]
    return {"payout": {"kind": payout.kind.value, "psbt": payout.psbt, "outputs": outputs, "fee_sat": payout.fee_sat}}


def plan(
    order: Order,
    accept_window: int,
    psbt_for_buyer: Callable[[Order], str | None],
    *,
    key: StoreKey | None = None,
) -> list[Planned]:
    """Every message the buyer's node should hold about ``order`` now, in the order they are to be sent.

    History entries and vendor messages by time (an entry first at the same second), the payout last.
    ``key`` is the store key: the escrow message carries the store's receipt signed with it (without it
    the buyer's node refuses the escrow; only tests of the plan's order leave it out).
    """
    oid = order.id
    steps: list[tuple[int, int, int, Planned]] = []
    for i in range(len(order.history)):
        planned = Planned(message_id(oid, f"h{i}"), "state", state_fields(order, i))
        steps.append((order.history[i].at, 0, i, planned))
    for i, message in enumerate(order.messages):
        if message.sender is Party.VENDOR:
            steps.append((message.at, 1, i, Planned(message_id(oid, f"m{i}"), "message", {}, message.sealed)))
    out = [Planned(message_id(oid, "escrow"), "escrow", escrow_fields(order, accept_window, key))]
    out.extend(p for *_, p in sorted(steps, key=lambda s: s[:3]))
    psbt = psbt_for_buyer(order)
    if psbt is not None and order.pending is not None:
        digest = hashlib.sha256(psbt.encode()).hexdigest()
        out.append(Planned(message_id(oid, f"p{digest}"), "payout", payout_fields(order.pending)))
    return out


def fingerprint(order: Order) -> tuple[object, ...]:
    """What changes whenever ``plan`` may change (``NodeOrders.sync_all`` skips orders told already)."""
    pending = order.pending
    return (
        order.updated_at,
        order.state,
        len(order.history),
        len(order.messages),
        pending.psbt if pending is not None else "",
        pending.txid if pending is not None else "",
    )
