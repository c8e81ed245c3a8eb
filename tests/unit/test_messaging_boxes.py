"""NaCl boxes between two per-order ed25519 keys; the wire's acks and polls; delivery texts."""

from __future__ import annotations

import pytest

from node.core.crypto import StoreKey
from node.core.errors import SignatureError, ValidationError
from node.messaging import boxes, wire
from node.messaging.models import Delivery, OutMessage

NOW = 1_780_000_000


def test_box_opens_only_between_the_two_keys():
    buyer, store, stranger = StoreKey.generate(), StoreKey.generate(), StoreKey.generate()
    sealed = boxes.box(buyer, store.onion, "Jane Doe, 1 Main St")
    assert "Jane" not in sealed
    assert boxes.unbox(store, buyer.onion, sealed) == "Jane Doe, 1 Main St"
    assert boxes.unbox(buyer, store.onion, sealed) == "Jane Doe, 1 Main St"  # the sender reads its own copy
    assert boxes.box(buyer, store.onion, "x") != boxes.box(buyer, store.onion, "x")  # fresh nonce
    for own, peer in ((stranger, buyer.onion), (store, stranger.onion)):
        with pytest.raises(ValidationError):
            boxes.unbox(own, peer, sealed)
    with pytest.raises(ValidationError):
        boxes.unbox(store, buyer.onion, sealed[:-4] + "AAAA")
    with pytest.raises(ValidationError):
        boxes.unbox(store, buyer.onion, "not base64!")
    with pytest.raises(ValidationError):
        boxes.box(buyer, "notanaddress", "x")


def test_acks_and_polls_verify():
    store, buyer = StoreKey.generate(), StoreKey.generate()
    order, mid = wire.new_order_id(), wire.new_message_id()
    ack = wire.open_ack(
        dict(wire.seal_ack(store, message_id=mid, order=order, sender=buyer.onion, seq=3, now=NOW)), now=NOW
    )
    assert (ack.id, ack.order, ack.to, ack.signer) == (mid, order, buyer.onion, store.onion)
    with pytest.raises(SignatureError):
        wire.open_ack(
            dict(wire.seal_ack(store, message_id=mid, order=order, sender=buyer.onion, seq=3, now=NOW)),
            now=NOW + wire.ACK_TTL,
        )
    poll = wire.open_poll(dict(wire.seal_poll(buyer, order=order, store=store.onion, now=NOW)), now=NOW + 10)
    assert (poll.order, poll.to, poll.signer) == (order, store.onion, buyer.onion)
    with pytest.raises(SignatureError):
        wire.open_poll(dict(wire.seal_poll(buyer, order=order, store=store.onion, now=NOW)), now=NOW + 601)
    with pytest.raises(ValidationError):  # an ack is not a poll
        wire.open_poll(
            dict(wire.seal_ack(store, message_id=mid, order=order, sender=buyer.onion, seq=3, now=NOW)), now=NOW
        )


def test_delivery_texts():
    def out(delivery: Delivery, reason: str = "") -> OutMessage:
        return OutMessage("a" * 32, "b" * 32, "c" * 56, "order", 1, NOW, delivery, reason, 0, NOW, b"{}")

    assert [out(d).delivery_text() for d in (Delivery.QUEUED, Delivery.SENT, Delivery.DELIVERED)] == [
        "queued",
        "sent",
        "delivered",
    ]
    assert out(Delivery.FAILED, "not delivered in 14 days").delivery_text() == "failed: not delivered in 14 days"
