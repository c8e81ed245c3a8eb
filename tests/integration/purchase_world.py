"""The buyer's node on regtest with the store's node played by hand (tests/integration/test_purchases.py).

The buyer side is real: ``Purchases`` over a real ``purchases.sqlite`` and a real ``Mailbox``
(``messages.sqlite``), the "buyer" wallet of the regtest bitcoind through ``BitcoinCore``. The store's
side is this module: its catalog is a real signed ``pasar.catalog`` envelope, its messages are
``pasar.msg`` envelopes signed with the store key (``node.messaging.wire``), received by the buyer's
mailbox and applied by ``Purchases.apply``; its keys and signatures come from the "vendor" and
"moderator" wallets.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from node.adapters.bitcoin import BitcoinCore
from node.core import crypto, envelope, reviews
from node.core.crypto import StoreKey
from node.core.ports import WalletKey
from node.market.catalog import CATALOG_TYPE
from node.market.listings import public_view
from node.messaging import boxes, wire
from node.messaging.mailbox import Mailbox
from node.payments import escrow
from node.payments import moderation_wire as mw
from node.payments.models import KeyRef, ModeratorTerms
from node.purchases.models import Purchase, PurchaseRequest
from node.purchases.service import Purchases
from tests.regtest import Regtest
from tests.unit.order_helpers import listing

STORE_KEY = StoreKey(bytes(range(40, 72)))
MODERATOR_KEY = StoreKey(bytes(range(80, 112)))
STORE, MODERATOR = STORE_KEY.onion, MODERATOR_KEY.onion
TIMEOUT = 144
UNIT, SHIPPING, QTY = 70_000, 10_000, 2
AMOUNT = UNIT * QTY + SHIPPING
MODERATOR_FEE = AMOUNT // 100  # its signed terms: 1 %, no fixed fee
NON_RBF = 0xFFFFFFFE
FEE = 2_000


def catalog(now: int) -> bytes:
    """The store's signed catalog: one physical listing (70,000 sat, "post" 10,000) and one moderator."""
    item = public_view(
        listing(price_sat=UNIT, shipping=[{"name": "post", "regions": ["WORLDWIDE"], "price_sat": SHIPPING}])
    )
    profile = {
        "name": "Tea shop",
        "description": "Tea",
        "policies": {"shipping": "", "returns": "", "terms": "", "privacy": ""},
        "moderators": [MODERATOR],
        "vacation": False,
        "display_unit": "sat",
        "escrow_timeout_blocks": TIMEOUT,
    }
    env = envelope.seal(
        STORE_KEY,
        CATALOG_TYPE,
        {"profile": profile, "listings": [item]},
        seq=1,
        issued_at=now - 60,
        expires_at=now + 86400,
    )
    return crypto.canonical_json(env)


class Directory:
    """The directory's ``mirror`` for one store (what ``placing.offer`` reads)."""

    def __init__(self, raw: bytes | None) -> None:
        self.raw = raw

    async def mirror(self, store: str) -> bytes | None:
        return self.raw if store == STORE else None


def request(**changes: Any) -> PurchaseRequest:
    base = {
        "store": STORE,
        "listing": "lst000000001",
        "qty": QTY,
        "shipping": "post",
        "moderator": MODERATOR,
        "ship_to": "1 Tea Road",
    }
    return PurchaseRequest(**{**base, **changes})


@dataclass
class StoreSide:
    """The store's node, by hand: reads the buyer's messages, sends its own (seq 1, 2, ...)."""

    regtest: Regtest
    vendor: BitcoinCore
    moderator: BitcoinCore
    mailbox: Mailbox
    purchases: Purchases
    seq: dict[str, int] = field(default_factory=dict)
    escrows: dict[str, tuple[escrow.Escrow, str]] = field(default_factory=dict)  # order -> (escrow, vendor address)

    async def order_message(self, order: str) -> dict[str, Any]:
        [sent] = [m for m in await self.mailbox.outgoing(order) if m.kind == "order"]
        return dict(json.loads(sent.raw)["body"])

    async def buyer(self, order: str) -> str:
        return wire.key_address(await self.purchases.key(order))

    async def send(self, order: str, kind: str, fields: dict[str, Any], *, key: StoreKey = STORE_KEY) -> str:
        """One signed message from the store, received by the buyer's mailbox and applied; its ``applied``."""
        now = int(time.time())
        self.seq[order] = self.seq.get(order, 0) + 1
        to = await self.buyer(order)
        body = wire.message_body(wire.new_message_id(), order, kind, to, fields)
        env = envelope.seal(key, wire.MSG_TYPE, body, seq=self.seq[order], issued_at=now, expires_at=now + wire.MSG_TTL)
        own = await self.purchases.key(order)
        got = await self.mailbox.receive(
            [dict(env)], me=lambda a: own if a == to else None, party=self.purchases.party, now=now
        )
        assert not got.refused, got.refused
        await self.mailbox.apply_ready(order, key.onion, self.purchases.apply)
        [done] = [m for m in await self.mailbox.incoming(order) if m.id == body["id"]]
        return done.applied

    async def keys(self) -> tuple[WalletKey, WalletKey, WalletKey, str]:
        v, v2, m = await self.vendor.new_key(), await self.vendor.new_key(), await self.moderator.new_key()
        return v, v2, m, (await self.vendor.new_key()).address

    async def escrow_fields(self, order: str, **changes: Any) -> dict[str, Any]:
        """A true escrow answer for the order (the vendor watches it); ``changes`` override fields."""
        placed = await self.order_message(order)
        b = escrow.parse_key(placed["buyer_key"])
        v, v2, m, pay_to = await self.keys()
        vk, v2k, mk = KeyRef(v.pubkey, v.origin), KeyRef(v2.pubkey, v2.origin), KeyRef(m.pubkey, m.origin)
        bare = escrow.descriptor(b, vk, mk, v2k, TIMEOUT)
        full = f"{bare}#{escrow.descriptor_checksum(bare)}"
        address = escrow.escrow_address(escrow.witness_script(b, vk, mk, v2k, TIMEOUT), "regtest")
        await self.vendor.watch(full)
        self.escrows[order] = (escrow.Escrow(b, vk, mk, v2k, TIMEOUT, full, address), pay_to)
        terms = ModeratorTerms(MODERATOR, mk, 1, 0, "sha256:" + "0" * 64)
        answer = mw.KeyAnswer(terms=terms, order_id=order, store=STORE, descriptor=full, address=address)
        now = int(time.time())
        signed = mw.sealed(MODERATOR_KEY, mw.KEY_TYPE, mw.key_answer_body(answer, "sig"), now=now, seq=1)
        fields = {
            "escrow": {
                "descriptor": full,
                "address": address,
                "buyer": b.descriptor_key(),
                "vendor": vk.descriptor_key(),
                "moderator": mk.descriptor_key(),
                "vendor_timeout": v2k.descriptor_key(),
                "timeout_blocks": TIMEOUT,
            },
            "amount_sat": AMOUNT,
            "pay_by": now + 7200,
            "accept_window": 86400,
            "vendor_address": pay_to,
            "moderator_answer": dict(signed),
            "receipt": reviews.seal_receipt(
                STORE_KEY,
                order=order,
                buyer=await self.buyer(order),
                address=address,
                listing_hash=placed["listing_hash"],
                now=now,
            ),
            "item": {
                "listing": placed["listing"],
                "listing_hash": placed["listing_hash"],
                "title": "Wool socks",
                "sku": None,
                "qty": QTY,
                "unit_price_sat": UNIT,
                "shipping": "post",
                "shipping_sat": SHIPPING,
                "discount_sat": 0,
            },
        }
        fields.update(changes)
        return fields

    async def state(self, order: str, state: str, index: int, **extra: Any) -> str:
        fields = {
            "state": state,
            "note": "",
            "at": int(time.time()),
            "index": index,
            "paid_sat": AMOUNT,
            "confirmations": 1,
            "txid": None,
        }
        return await self.send(order, "state", fields | extra)

    async def payout_psbt(
        self, order: str, outputs: list[tuple[str, int]], *, signer: BitcoinCore | None = None
    ) -> str:
        """A PSBT spending the escrow's coins to ``outputs``, signed by the vendor's wallet (or ``signer``'s)."""
        built, _ = self.escrows[order]
        coins = await self.vendor.unspent([built.address])
        psbt = await self.vendor.create_psbt([(c.txid, c.vout, NON_RBF) for c in coins], outputs, built.descriptor)
        return await (signer or self.vendor).sign(psbt)

    async def payout(self, order: str, kind: str, psbt: str, outputs: list[tuple[str, int, str]]) -> str:
        listed = [{"address": a, "amount_sat": n, "role": r} for a, n, r in outputs]
        return await self.send(
            order, "payout", {"payout": {"kind": kind, "psbt": psbt, "outputs": listed, "fee_sat": FEE}}
        )

    def unbox(self, p: Purchase, boxed: str) -> str:
        return boxes.unbox(STORE_KEY, wire.key_address(StoreKey(bytes.fromhex(p.order_key))), boxed)
