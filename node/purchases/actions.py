"""The buyer's actions on a purchase: pay, release, dispute, message, review.

``pay`` funds the escrow from the buyer's wallet only when the store's escrow
answer passed every check, before ``pay_by``, once: the funding transaction is
built and signed (``Bitcoin.fund``), stored (txid + hex) and only then
broadcast, so a crash or a broadcast error in between never leads to paying
twice: a retry, the watcher or a restart broadcasts the stored transaction again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
from collections.abc import Awaitable, Callable

from ..core import reviews
from ..core.errors import Conflict, PasarError, PsbtRefused, ValidationError
from ..payments.models import PayoutKind
from . import sending
from .checks import in_dispute
from .context import Ctx, event, sign_pending
from .models import REVIEWABLE, Note, Purchase, PurchaseState

log = logging.getLogger(__name__)
MAX_TEXT = 2000


class Actions:
    def __init__(self, ctx: Ctx) -> None:
        self._ctx = ctx
        self._publish: Callable[[bytes], Awaitable[None]] | None = None
        self._paying = asyncio.Lock()

    # -- pay -------------------------------------------------------------------------------------
    def _payable(self, p: Purchase, now: int) -> tuple[str, int]:
        if p.state != PurchaseState.AWAITING_PAYMENT or p.escrow is None or p.escrow_amount_sat is None:
            raise Conflict(
                f"purchase {p.id} is {p.state}: only a purchase awaiting payment with a checked escrow is paid"
            )
        if p.paid_txid is not None:
            raise Conflict(f"purchase {p.id} is paid already (transaction {p.paid_txid})")
        if p.pay_by is not None and now >= p.pay_by:
            raise Conflict(f"the store's payment window for purchase {p.id} has closed: nothing was paid")
        return p.escrow.address, p.escrow_amount_sat

    async def pay(self, purchase_id: str, *, address: str | None = None, amount_sat: int | None = None) -> Purchase:
        """Fund the escrow from the buyer's wallet; ``address``/``amount_sat`` (the confirm page's) must match.

        The signed transaction is stored (txid + hex) before it is broadcast; a retry after a crash or a
        broadcast error sends that same transaction again, never a second one."""
        btc = self._ctx.wallet()
        async with self._paying:
            p = await self._ctx.store.get(purchase_id)
            if p.paid_txid is not None and p.paid_hex is not None and not p.paid_sent:
                return await self.rebroadcast(p)
            to, amount = self._payable(p, self._ctx.clock())
            if (address is not None and address != to) or (amount_sat is not None and amount_sat != amount):
                raise Conflict(f"the escrow is {amount} sat to {to}, not what was confirmed: reload the page")
            if await btc.unspent([to]):
                raise Conflict(
                    f"coins are in the escrow {to} already: check your wallet's transactions; "
                    "this node records the payment once its wallet sees it"
                )
            txid, tx_hex = await btc.fund(to, amount)
            now = self._ctx.clock()
            said = f"payment of {amount} sat to {to} signed by this node's wallet (transaction {txid})"

            def store(c: Purchase) -> Purchase:
                if c.paid_txid is not None:
                    raise Conflict(f"purchase {c.id} is paid already (transaction {c.paid_txid})")
                return event(dataclasses.replace(c, paid_txid=txid, paid_hex=tx_hex), said, now=now)

            return await self.rebroadcast(await self._ctx.store.update(p.id, store))

    async def rebroadcast(self, p: Purchase) -> Purchase:
        """Broadcast the stored funding transaction (again: harmless, the same txid); a failure is noted."""
        if p.paid_hex is None or p.paid_sent:
            return p
        now = self._ctx.clock()
        try:
            await self._ctx.wallet().broadcast(p.paid_hex)
        except PasarError as exc:
            said = f"the payment {p.paid_txid} is not broadcast yet ({exc.message}): this node sends it again"
            log.warning("purchase %s: %s", p.id, said)
            return await self._ctx.store.update(p.id, lambda c: c if c.paid_sent else _once(c, said, now))
        said = f"payment {p.paid_txid} broadcast"
        return await self._ctx.store.update(
            p.id, lambda c: c if c.paid_sent else event(dataclasses.replace(c, paid_sent=True), said, now=now)
        )

    # -- payouts ---------------------------------------------------------------------------------
    async def release(self, purchase_id: str) -> Purchase:
        """Sign the release the store sent (after the same PSBT checks as the vendor's) and send it back."""
        p = await self._ctx.store.get(purchase_id)
        if p.pending is None or p.pending.kind is not PayoutKind.RELEASE:
            raise Conflict(
                f"purchase {p.id} has no release waiting for your signature (the store sends one once it ships)"
            )
        if p.pending.signed:
            return p
        try:
            return await sign_pending(self._ctx, p)
        except PsbtRefused as exc:
            said, now = f"release refused: {exc.message}", self._ctx.clock()
            await self._ctx.store.update(p.id, lambda c: event(c, said, now=now))
            raise

    # -- texts -----------------------------------------------------------------------------------
    async def _note(self, purchase_id: str, kind: str, text: str, change: Callable[[Purchase], Purchase]) -> Purchase:
        text = text.strip()
        if not text or len(text) > MAX_TEXT:
            raise ValidationError({"text": f"1..{MAX_TEXT} characters"})
        note_id, now = secrets.token_hex(16), self._ctx.clock()

        def add(current: Purchase) -> Purchase:
            note = Note(id=note_id, at=now, direction="out", kind=kind, text=text)
            return change(dataclasses.replace(current, notes=(*current.notes, note), updated_at=now))

        p = await self._ctx.store.update(purchase_id, add)  # recorded first: the watcher re-queues it after a crash
        await sending.send_note(self._ctx.outbox, p, note_id, kind, text)
        self._ctx.wake()
        return p

    async def message(self, purchase_id: str, text: str) -> Purchase:
        """A message to the store (end-to-end encrypted to its key)."""
        return await self._note(purchase_id, "message", text, lambda p: p)

    async def dispute(self, purchase_id: str, statement: str) -> Purchase:
        """Open a dispute: the statement goes to the store's node, which sends the case to the moderator."""
        p = await self._ctx.store.get(purchase_id)
        if p.escrow is None or p.final:
            raise Conflict(f"purchase {p.id} is {p.state}: only a purchase with an escrow, not finished, is disputed")
        if p.paid_txid is None and not p.funding and p.paid_sat == 0:
            raise Conflict(f"purchase {p.id} is not paid: there is nothing in the escrow to dispute")
        if p.disputed or in_dispute(p):
            raise Conflict(f"purchase {p.id} is in dispute already: write to the store to add to your statement")
        now = self._ctx.clock()
        return await self._note(
            purchase_id,
            "dispute",
            statement,
            lambda c: event(dataclasses.replace(c, disputed=True), "you opened a dispute", now=now),
        )

    # -- review ----------------------------------------------------------------------------------
    async def _funding(self, p: Purchase) -> tuple[str, str]:
        """The funding outpoint ``txid:vout`` and its block, from the record or Core."""
        if p.funding and p.funding_block:
            return f"{p.funding[0][0]}:{p.funding[0][1]}", p.funding_block
        btc, txid = self._ctx.wallet(), p.paid_txid or (p.funding[0][0] if p.funding else None)
        block = None if txid is None else await btc.tx_block(txid)
        if txid is None or block is None or p.escrow is None:
            raise Conflict(f"purchase {p.id}: the escrow's funding is not confirmed in a block this node knows")
        for vout in range(len(p.funding) + 8):
            found = await btc.output_at(txid, vout, block)
            if found is not None and found[0] == p.escrow.address:
                return f"{txid}:{vout}", block
        raise Conflict(f"purchase {p.id}: transaction {txid} does not pay the escrow address")

    async def review(self, purchase_id: str, rating: int, text: str) -> Purchase:
        """Sign a review with the purchase's key, send it to the store and gossip it."""
        p = await self._ctx.store.get(purchase_id)
        if p.state not in REVIEWABLE and not (p.state == PurchaseState.REFUNDED and in_dispute(p)):
            raise Conflict(f"purchase {p.id} is {p.state}: review it once it is completed or its dispute resolved")
        if p.escrow is None:
            raise Conflict(f"purchase {p.id} never had an escrow: there is nothing to review")
        if p.receipt is None:
            raise Conflict(f"purchase {p.id} has no receipt from the store: a review could not be proven")
        outpoint, block = await self._funding(p)
        now, seq = self._ctx.clock(), p.review_seq + 1
        review = reviews.build(
            sending.order_key(p),
            store=p.store,
            order=p.id,
            listing=p.listing_id,
            listing_hash=p.listing_hash,
            outpoint=outpoint,
            block=block,
            address=p.escrow.address,
            rating=rating,
            text=text.strip(),
            receipt=json.loads(p.receipt),
            seq=seq,
            now=now,
        )
        raw = review.raw.decode()
        stored = await self._ctx.store.update(
            p.id,
            lambda c: event(dataclasses.replace(c, review=raw, review_seq=seq), f"you rated it {rating}/5", now=now),
        )
        mid = sending.message_id(p.id, f"review{seq}")
        await sending.send(self._ctx.outbox, stored, "review", {"review": review.envelope()}, message_id=mid)
        self._ctx.wake()
        if self._publish is not None:
            try:
                await self._publish(review.raw)
            except PasarError as exc:  # the store has it; gossip carries it at the next chance
                log.warning("purchase %s: the review was not gossiped: %s", p.id, exc.message)
        return stored


def _once(p: Purchase, note: str, now: int) -> Purchase:
    """``p`` with a history line, unless the last line says the same."""
    if p.history and p.history[-1].note == note:
        return p
    return event(p, note, now=now)
