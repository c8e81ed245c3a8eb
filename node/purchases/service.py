"""``Purchases``: this node buying from other stores' nodes (docs/design.md "Buyer node").

``place`` prices the listing from the signed catalog the directory holds, takes
two fresh keys from the buyer's wallet (the escrow key B and the refund
address) and a fresh per-order ed25519 key, stores the purchase and queues the
``order`` message: it returns at once, the courier delivers it when the
store's node is reachable. Nothing is payable before the store's escrow answer
passed every check (``applying.on_escrow``). ``pay`` funds the escrow from the
buyer's wallet; payouts are signed after the PSBT checks (``signing``).
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..core import addresses, ports
from ..core.crypto import StoreKey
from ..core.errors import BadRequest, PasarError, ValidationError, WalletError
from ..core.models import Sats
from ..messaging.models import Delivery, InMessage, OutMessage
from ..payments.models import KeyRef, PayoutKind
from ..payments.pricing import CheckoutForm, price_public
from ..payments.settings import PaymentSettings
from . import applying, checks, placing, sending
from .actions import Actions
from .context import Ctx, event, sign_pending
from .models import Purchase, PurchaseRequest, PurchaseState
from .placing import Mirrors
from .sending import Outbox
from .store import PurchaseStore

log = logging.getLogger(__name__)
MAX_PAGE = 500


def _now() -> int:
    return int(time.time())


@dataclass(frozen=True)
class PurchaseDetail:
    """A purchase with the messages of its order (both directions), for the views."""

    purchase: Purchase
    outgoing: list[OutMessage]
    incoming: list[InMessage]


def _delivered(p: Purchase, outgoing: builtins.list[OutMessage]) -> Purchase:
    """``queued`` becomes ``placed`` once the order is acknowledged, ``refused`` when its delivery failed."""
    if p.state != PurchaseState.QUEUED:
        return p
    order = next((m for m in outgoing if m.kind == "order"), None)
    if order is not None and order.delivery is Delivery.DELIVERED:
        return dataclasses.replace(p, state=PurchaseState.PLACED.value)
    if order is not None and order.delivery is Delivery.FAILED:
        return dataclasses.replace(p, state=PurchaseState.REFUSED.value, reason=order.delivery_text())
    return p


def _waiting(p: Purchase, psbt: str, reason: str) -> Purchase:
    if p.pending is None or p.pending.psbt != psbt or p.pending.signed:
        return p
    return dataclasses.replace(p, pending=dataclasses.replace(p.pending, waiting=reason))


class Purchases(Actions):
    def __init__(
        self,
        db: ports.Database,
        mailbox: Outbox,
        bitcoin: ports.Bitcoin | None,
        directory: Mirrors,
        settings: PaymentSettings,
        *,
        clock: Callable[[], int] = _now,
    ) -> None:
        super().__init__(Ctx(PurchaseStore(db), mailbox, bitcoin, settings, clock))
        self._directory = directory

    def attach(
        self,
        *,
        wake: Callable[[], None] | None = None,
        publish_review: Callable[[bytes], Awaitable[None]] | None = None,
        bitcoin: ports.Bitcoin | None = None,
    ) -> None:
        """Late wiring: the courier's ``wake``, gossip's ``publish_review``, Core once it is ready."""
        if wake is not None:
            self._ctx.wake = wake
        if publish_review is not None:
            self._publish = publish_review
        if bitcoin is not None:
            self._ctx.bitcoin = bitcoin

    # -- placing ---------------------------------------------------------------------------------
    async def place(self, req: PurchaseRequest) -> Purchase:
        """Price, take keys, store, queue the order; returns at once (state ``queued``)."""
        now = self._ctx.clock()
        store = addresses.normalize(req.store.strip())
        if not addresses.is_address(store):
            raise ValidationError({"store": "a store's onion address (56 characters)"})
        offer = await placing.offer(self._directory, store, req.listing.strip(), now=now)
        problems: dict[str, str] = {}
        moderator = addresses.normalize(req.moderator.strip())
        if moderator not in offer.moderators:
            problems["moderator"] = "choose one of the store's moderators: " + (", ".join(offer.moderators) or "none")
        form = CheckoutForm(
            listing=req.listing.strip(),
            sku=req.sku or "",
            qty=str(req.qty),
            shipping=req.shipping or "",
            coupon=req.coupon or "",
            ship_to=req.ship_to,
        )
        item = price_public(offer.listing, form, now=now, problems=problems)
        btc = self._ctx.wallet()
        escrow_key, refund = await btc.new_key(), await btc.new_key()
        purchase = Purchase(
            id=secrets.token_hex(16),
            store=store,
            listing_id=item.listing_id,
            listing_hash=item.listing_hash,
            title=item.title,
            sku=item.sku,
            qty=item.qty,
            shipping=item.shipping,
            coupon=item.coupon,
            moderator=moderator,
            amount_sat=Sats(item.total_sat),
            order_key=StoreKey.generate().seed.hex(),
            buyer_key=KeyRef(escrow_key.pubkey, escrow_key.origin),
            refund_address=refund.address,
            state=PurchaseState.QUEUED.value,
            created_at=now,
            updated_at=now,
            ship_to=req.ship_to.strip(),
            store_timeout=offer.timeout_blocks,
        )
        purchase = event(purchase, "order queued for the store's node", now=now)
        await self._ctx.store.insert(purchase)
        await sending.send_order(self._ctx.outbox, purchase)
        self._ctx.wake()
        return purchase

    # -- reading ---------------------------------------------------------------------------------
    async def list(self, *, limit: int = 100, offset: int = 0) -> builtins.list[Purchase]:
        return [d.purchase for d in await self.details(limit=limit, offset=offset)]

    async def get(self, purchase_id: str) -> Purchase:
        return (await self.detail(purchase_id)).purchase

    async def detail(self, purchase_id: str) -> PurchaseDetail:
        p = await self._ctx.store.get(purchase_id)
        outgoing = await self._ctx.outbox.outgoing(p.id)
        return PurchaseDetail(_delivered(p, outgoing), outgoing, await self._ctx.outbox.incoming(p.id))

    async def details(self, *, limit: int = 100, offset: int = 0) -> builtins.list[PurchaseDetail]:
        if not 1 <= limit <= MAX_PAGE or offset < 0:
            raise ValidationError({"limit": f"1..{MAX_PAGE}", "offset": "0 or more"})
        found = []
        for p in await self._ctx.store.page(limit=limit, offset=offset):
            outgoing = await self._ctx.outbox.outgoing(p.id)
            found.append(PurchaseDetail(_delivered(p, outgoing), outgoing, await self._ctx.outbox.incoming(p.id)))
        return found

    # -- the courier's and the mailbox's callbacks -------------------------------------------------
    async def apply(self, msg: InMessage) -> None:
        """The buyer's ``Applier``: what the store's node sent on a purchase."""
        await applying.apply(self._ctx, msg)

    async def key(self, order: str) -> StoreKey | None:
        p = await self._ctx.store.find(order)
        return None if p is None else sending.order_key(p)

    async def party(self, order: str, sender: str) -> str | None:
        """For ``Mailbox.receive`` on this node: only the purchase's store speaks on it (None = allowed)."""
        p = await self._ctx.store.find(order)
        if p is None:
            return "this node has no such purchase"
        return None if sender == p.store else "only the purchase's store may send on it"

    async def open_orders(self) -> builtins.list[tuple[str, str]]:
        """(store, order) of every purchase not final: the courier polls them."""
        return [(p.store, p.id) for p in await self._ctx.store.open()]

    # -- the watcher -------------------------------------------------------------------------------
    async def watch_once(self) -> None:
        """Re-queue what a crash left unsent; record each escrow's funding outpoints and their block;
        auto-sign a refund or split still waiting (Core was down when it came)."""
        trouble: WalletError | None = None
        for p in await self._ctx.store.open():
            try:
                await self._watch(p)
            except WalletError as exc:  # Core down: raised once after the round (the loop says it once)
                trouble = trouble or exc
            except PasarError as exc:
                log.warning("purchase %s: %s", p.id, exc.message)
        if trouble is not None:
            raise trouble

    async def _watch(self, p: Purchase) -> None:
        sent = await self._ctx.outbox.outgoing(p.id)
        if await sending.resend_missing(self._ctx.outbox, p, sent):
            self._ctx.wake()
        told = _delivered(p, sent)
        if told.state != p.state:  # the order was acknowledged (placed) or gave up (refused): kept
            p = await self._ctx.store.update(p.id, lambda c: _delivered(c, sent))
        if p.escrow is None or self._ctx.bitcoin is None:
            return
        if p.paid_hex is not None and not p.paid_sent:  # stored, then a crash or a broadcast error
            p = await self.rebroadcast(p)
        await self.refresh_funding(p)
        pending = p.pending
        if pending is not None and not pending.signed and pending.kind in (PayoutKind.REFUND, PayoutKind.SPLIT):
            await self._sign_waiting(await self._ctx.store.get(p.id))

    async def _sign_waiting(self, p: Purchase) -> None:
        """A refund or split still unsigned (Core was down, or the split waited for a dispute): signed now."""
        pending = p.pending
        if pending is None or pending.signed:
            return
        waits = checks.split_waits(p) if pending.kind is PayoutKind.SPLIT else ""
        if waits:
            if waits != pending.waiting:
                await self._ctx.store.update(p.id, lambda c: _waiting(c, pending.psbt, waits))
            return
        try:
            await sign_pending(self._ctx, p)
        except BadRequest as exc:
            log.warning("purchase %s: the %s is not signed: %s", p.id, pending.kind.value, exc.message)

    async def refresh_funding(self, p: Purchase) -> Purchase:
        """The escrow's outpoints as the watch-only wallet sees them, and the block of the first one."""
        if p.escrow is None:
            return p
        btc = self._ctx.wallet()
        coins = await btc.unspent([p.escrow.address])
        funding = tuple((c.txid, c.vout, c.amount_sat) for c in coins) or p.funding
        block = p.funding_block
        if funding and (block is None or not p.funding or funding[0][:2] != p.funding[0][:2]):
            block = await btc.tx_block(funding[0][0])
        sent = p.paid_sent or any(f[0] == p.paid_txid for f in funding)
        if (funding, block, sent) == (p.funding, p.funding_block, p.paid_sent):
            return p

        def change(current: Purchase) -> Purchase:
            return dataclasses.replace(current, funding=funding, funding_block=block, paid_sent=sent)

        return await self._ctx.store.update(p.id, change)
