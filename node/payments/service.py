"""The payments service: the one facade the web, the operations and the app use (docs/design.md "Escrow").

``Payments`` places orders (``checkout``), runs the vendor's actions on them,
takes the buyer's signed PSBTs and messages, and watches the escrows
(``watch_once`` / ``run``). The flows themselves live in ``checkout``,
``flows`` and ``watcher``; this module checks who may do what in which state.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..core import addresses
from ..core.errors import Conflict, NotFound, PasarError, Unavailable, Unreachable, ValidationError, WalletError
from ..core.models import ModeratorTermsRecord
from ..core.ports import Bitcoin
from ..market import profile as P
from ..market.market import Market
from ..messaging.models import InMessage, OutMessage
from . import checkout, flows, orders, watcher
from .flows import Ctx, ModeratorLink
from .models import Dispute, Message, ModeratorOffer, Order, OrderState, Party, PayoutKind
from .order_store import OrderStore
from .pricing import CheckoutForm
from .readiness import Answer, Readiness, merged_terms, terms_record
from .sealing import open_for_store, seal_to_onion
from .settings import PaymentSettings

log = logging.getLogger(__name__)

S = OrderState
MAX_TEXT = 4000  # characters of a message, statement, note or reason
# Where the buyer's signature is what the pending payout waits for.
_BUYER_SIGNS = {S.FULFILLED, S.DECLINED, S.REFUNDING, S.DECIDED, S.DISPUTED}


def _now() -> int:
    return int(time.time())


@dataclass(frozen=True)
class CheckoutOptions:
    """What the checkout form offers: the store's moderators that answered, the escrow terms, the pause."""

    moderators: list[ModeratorOffer]
    timeout_blocks: int  # the store's N (its profile's, else the node's setting)
    confirmations: int
    paused: str | None
    accept_window: int = 3 * 86400  # seconds the vendor has to accept a paid order (the store's, else the node's)


def clean_text(value: str, name: str, *, required: bool = True) -> str:
    """``value`` stripped; ``ValidationError`` when empty (if ``required``) or over ``MAX_TEXT``."""
    text = value.strip()
    if required and not text:
        raise ValidationError({name: "required"}, f"{name}: write something")
    if len(text) > MAX_TEXT:
        raise ValidationError({name: f"at most {MAX_TEXT} characters"}, f"{name}: at most {MAX_TEXT} characters")
    return text


class Payments:
    def __init__(
        self,
        *,
        store: OrderStore,
        market: Market,
        bitcoin: Bitcoin | None,
        moderation: ModeratorLink,
        settings: PaymentSettings,
        clock: Callable[[], int] = _now,
    ) -> None:
        self.ctx = Ctx(store, market, bitcoin, moderation, settings, clock)
        self.settings = settings
        self.ready = Readiness(self.ctx, status_ttl=settings.status_ttl, offer_ttl=settings.offer_ttl)
        self._terms_lock = asyncio.Lock()
        self._terms_due = 0  # when the stores' published moderator terms are next refreshed
        # Set by ``NodeOrders`` where orders come from buyers' nodes: told of each order an action changed, and
        # after each watcher round (it tells the buyer's node); absent, nothing else happens.
        self.on_change: Callable[[Order], Awaitable[None]] | None = None
        self.on_round: Callable[[], Awaitable[None]] | None = None
        # The messages of a node order both ways, with delivery states (set by ``NodeOrders``; None: no mailbox).
        self.node_messages: Callable[[str], Awaitable[tuple[list[OutMessage], list[InMessage]]]] | None = None

    @property
    def store(self) -> OrderStore:
        return self.ctx.store

    # -- status and the checkout form --------------------------------------------------------------
    async def paused(self) -> str | None:
        """None while checkout is open; else the reason shown (payments off, Core down, wrong chain).

        From memory (``Readiness``): a page never waits long on Core."""
        if not self.settings.enabled:
            return "payments are turned off on this node"
        return await self.ready.paused()

    async def checkout_options(self, store: str) -> CheckoutOptions:
        record = await self.ctx.market.store(store)
        profile = record["profile"]
        answers = await asyncio.gather(*(self.ready.answer(m) for m in profile["moderators"]))
        blocks, window = checkout.store_terms(profile, self.settings)
        return CheckoutOptions(
            moderators=[offer for offer, _ in answers if offer is not None],
            timeout_blocks=blocks,
            confirmations=self.settings.confirmations,
            paused=await self.paused(),
            accept_window=window,
        )

    async def moderator_terms(
        self, onions: list[str], published: list[ModeratorTermsRecord] | None = None
    ) -> tuple[list[ModeratorTermsRecord], list[str]]:
        """The moderators' offers asked now (over tor): the terms of those offering moderation, and a
        warning naming each that did not answer or offers none (it stays accepted). One that did not answer
        keeps its ``published`` terms, if any; else it is listed without terms until it answers."""
        answers = await asyncio.gather(*(self.ready.fetch_offer(o) for o in onions))
        kept = {t["onion"]: t for t in published or []}
        records, warnings = [], []
        for onion, (offer, answered) in zip(onions, answers, strict=True):
            if offer is not None:
                records.append(terms_record(offer))
            elif not answered and onion in kept:
                records.append(kept[onion])
                warnings.append(f"{onion}.onion did not answer: its terms stay as published until it answers")
            elif answered:
                warnings.append(f"{onion}.onion offers no moderation now: buyers cannot choose it until it does")
            else:
                warnings.append(
                    f"{onion}.onion did not answer: it is accepted and listed without fee and terms until it answers"
                )
        return records, warnings

    async def _publish_terms(self, onion: str, answers: dict[str, Answer]) -> None:
        """Writes the store's ``moderator_terms`` when the moderators' answers changed them (a write re-signs
        the catalog, so nothing is written otherwise); a failure is logged, the checkout form still shows."""
        async with self._terms_lock:
            try:
                profile = (await self.ctx.market.store(onion))["profile"]
                wanted = P.validate({"moderator_terms": merged_terms(profile, answers)}, partial=profile)
                if wanted.get("moderator_terms", []) != profile.get("moderator_terms", []):
                    await self.ctx.market.update_profile(onion, {"moderator_terms": wanted.get("moderator_terms", [])})
            except PasarError as exc:
                log.warning("store %s: the moderators' terms are not published (%s)", onion, exc.message)

    async def checkout(
        self, store: str, form: CheckoutForm, *, node: checkout.NodeBuyer | None = None
    ) -> tuple[Order, str]:
        """The placed order (awaiting payment) and the buyer's secret token (its URL ``/order/<token>``);
        ``node``: placed by a buyer's node (``node_orders``), its token is of no use."""
        if not self.settings.enabled:
            raise Unavailable("payments are turned off on this node: this store takes no orders")
        down = self.ready.seen_down()
        if down is not None:
            raise WalletError(down)  # just seen down: no RPC; otherwise a Core that is down fails the RPCs below
        moderator = addresses.normalize(form.moderator.strip())
        shown = (self.ready.cached(moderator) or (None, False))[0]
        try:
            return await checkout.place(self.ctx, store, form, shown=shown, node=node)
        except Unreachable:  # the moderator did not take it: off the form until asked again
            self.ready.failed(moderator)
            raise
        except checkout.TermsChanged:  # the next page asks it again and shows its new terms
            self.ready.forget(moderator)
            raise

    async def available(self, store: str, listing_id: str) -> dict[str | None, int | None]:
        item = (await self.ctx.market.snapshot(store)).by_id.get(listing_id)
        if item is None:
            raise NotFound("this listing does not exist or is no longer offered")
        return await self.ctx.store.available(store, item)

    # -- the buyer (authorised by the secret token) ------------------------------------------------
    async def by_token(self, store: str, token: str) -> Order:
        if not token or len(token) > 200:
            raise NotFound("no such order: check the link you were given at checkout")
        return await self.ctx.store.by_token(store, checkout.token_hash(token))

    def psbt_for_buyer(self, order: Order) -> str | None:
        """The pending payout's PSBT while it waits for the buyer's signature; else None."""
        pending = order.pending
        if pending is None or pending.txid is not None or Party.BUYER in pending.signed_by:
            return None
        return pending.psbt if order.state in _BUYER_SIGNS else None

    async def upload_psbt(self, store: str, token: str, psbt_b64: str) -> Order:
        """The buyer's signed PSBT: checked, combined with the pending payout, broadcast."""
        psbt = "".join(psbt_b64.split())
        if not psbt:
            raise ValidationError({"psbt": "paste the signed PSBT (base64) or upload its file"})

        async def upload(order: Order) -> Order:
            if self.psbt_for_buyer(order) is None:
                raise Conflict("nothing waits for your signature on this order now")
            return await flows.cosign(self.ctx, order, Party.BUYER, psbt)

        return await self._act_token(store, token, upload)

    async def buyer_message(self, store: str, token: str, text: str) -> Order:
        said = clean_text(text, "message")
        return await self._act_token(store, token, lambda order: self._message(order, Party.BUYER, said))

    async def buyer_dispute(self, store: str, token: str, statement: str) -> Order:
        said = clean_text(statement, "statement")
        return await self._act_token(store, token, lambda order: self._dispute(order, Party.BUYER, said))

    # -- the vendor ---------------------------------------------------------------------------------
    async def orders(
        self, store: str | None = None, state: str | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[Order]:
        """Newest first."""
        return list(await self.ctx.store.list(store=store, state=state, limit=limit, offset=offset))

    async def order(self, order_id: str) -> Order:
        return await self.ctx.store.get(order_id)

    async def reveal(self, order: Order) -> tuple[str, list[tuple[Message, str]]]:
        """The shipping address / contact and the messages, opened with the store's key (vendor side only)."""
        key = await self.ctx.market.key(order.store)
        ship_to = open_for_store(key, order.ship_to_sealed) if order.ship_to_sealed else ""
        return ship_to, [(m, open_for_store(key, m.sealed)) for m in order.messages]

    async def accept(self, order_id: str) -> Order:
        return await self.act(order_id, self._accept)

    async def _accept(self, order: Order) -> Order:
        moved = orders.transition(order, S.ACCEPTED, now=self.ctx.now(), note="accepted by the vendor")
        return await self.ctx.store.update(moved, expect=order)

    async def fulfill(self, order_id: str, note: str) -> Order:
        """Shipped: the release payout, signed by the vendor's wallet, waits for the buyer's signature."""
        text = clean_text(note, "note", required=False)
        return await self.act(order_id, lambda order: self._fulfill(order, text))

    async def _fulfill(self, order: Order, text: str) -> Order:
        orders.check(order, S.FULFILLED)
        payout = await flows.build(self.ctx, order, PayoutKind.RELEASE)
        now = self.ctx.now()
        moved = orders.with_pending(orders.with_fulfillment(order, text, now=now), payout, now=now)
        said = f"fulfilled: {text}" if text else "fulfilled"
        moved = orders.transition(moved, S.FULFILLED, now=now, note=f"{said}; the release waits for the buyer")
        return await self.ctx.store.update(moved, expect=order)

    async def decline(self, order_id: str, reason: str) -> Order:
        return await self.refund(order_id, reason)

    async def refund(self, order_id: str, reason: str) -> Order:
        """Everything back to the buyer: co-signs a moderator's refund, else a vendor-signed refund waits."""
        text = clean_text(reason, "reason", required=False)
        return await self.act(order_id, lambda order: self._refund(order, text))

    async def _refund(self, order: Order, text: str) -> Order:
        now = self.ctx.now()
        if order.state is S.AWAITING_PAYMENT and order.funding.paid_sat == 0:
            note = f"cancelled by the vendor before payment: {text}" if text else "cancelled by the vendor"
            return await self.ctx.store.update(orders.transition(order, S.EXPIRED, now=now, note=note), expect=order)
        pending = order.pending
        if pending is not None and pending.kind is PayoutKind.REFUND and Party.VENDOR not in pending.signed_by:
            return await flows.vendor_sign_pending(self.ctx, order)
        orders.check(order, S.DECLINED)
        payout = await flows.build(self.ctx, order, PayoutKind.REFUND)
        note = f"refund by the vendor: {text}" if text else "refund by the vendor"
        moved = orders.transition(orders.with_pending(order, payout, now=now), S.DECLINED, now=now, note=note)
        return await self.ctx.store.update(moved, expect=order)

    async def release(self, order_id: str) -> Order:
        """The vendor's wallet co-signs the pending payout (a moderator's split or refund) and broadcasts it."""
        return await self.act(order_id, lambda order: flows.vendor_sign_pending(self.ctx, order))

    async def claim(self, order_id: str) -> Order:
        """The timeout path: the vendor's key V2 alone, possible from ``claim_height``; broadcast at once."""
        return await self.act(order_id, lambda order: flows.claim(self.ctx, order))

    async def dispute(self, order_id: str, statement: str) -> Order:
        said = clean_text(statement, "statement")
        return await self.act(order_id, lambda order: self._dispute(order, Party.VENDOR, said))

    async def vendor_message(self, order_id: str, text: str) -> Order:
        said = clean_text(text, "message")
        return await self.act(order_id, lambda order: self._message(order, Party.VENDOR, said))

    # -- shared ---------------------------------------------------------------------------------------
    async def act(self, order_id: str, action: Callable[[Order], Awaitable[Order]]) -> Order:
        """``action`` on the order as stored now, under the order's lock (see ``Ctx.lock``); ``on_change`` then."""
        async with self.ctx.locked(order_id) as order:
            changed = await action(order)
        await self._changed(changed)
        return changed

    async def _changed(self, order: Order) -> None:
        """Tells ``on_change`` (a failure is logged: the next watcher round tells it again)."""
        if self.on_change is None:
            return
        try:
            await self.on_change(order)
        except PasarError as exc:
            log.warning("order %s: the buyer's node is not told yet (%s); retried", order.id, exc.message)

    async def _act_token(self, store: str, token: str, action: Callable[[Order], Awaitable[Order]]) -> Order:
        return await self.act((await self.by_token(store, token)).id, action)

    async def _message(self, order: Order, sender: Party, text: str) -> Order:
        now = self.ctx.now()
        message = Message(at=now, sender=sender, sealed=seal_to_onion(order.store, text))
        return await self.ctx.store.update(orders.with_message(order, message, now=now), expect=order)

    async def _dispute(self, order: Order, party: Party, statement: str) -> Order:
        """Opens the dispute (or adds ``party``'s statement to it); the watcher sends it to the moderator."""
        return await self.disputed(order, await self.dispute_change(order, party, statement))

    async def dispute_change(self, order: Order, party: Party, statement: str) -> Order:
        """``order`` with the dispute opened (or ``party``'s statement added), not stored yet."""
        now = self.ctx.now()
        if order.state is S.DISPUTED and order.dispute is not None:
            dispute = dataclasses.replace(
                order.dispute, statements=(*order.dispute.statements, (party, statement)), sent_at=None
            )
            return orders.with_dispute(order, dispute, now=now)
        orders.check(order, S.DISPUTED)
        address = order.vendor_address or (await self.ctx.wallet().new_key()).address
        dispute = Dispute(opened_by=party, opened_at=now, statements=((party, statement),), vendor_address=address)
        changed = orders.with_dispute(order, dispute, now=now)  # a pending release or refund may still settle it
        return orders.transition(changed, S.DISPUTED, now=now, note=f"dispute opened by the {party.value}")

    async def disputed(self, order: Order, changed: Order) -> Order:
        """Stores ``changed`` (a ``dispute_change`` of ``order``) and sends the statements to the moderator."""
        stored = await self.ctx.store.update(changed, expect=order)
        try:
            return await watcher.send_dispute(self.ctx, stored)
        except PasarError as exc:
            log.warning("order %s: the dispute is not sent yet (%s); the watcher retries", order.id, exc.message)
            return stored

    # -- watching ---------------------------------------------------------------------------------------
    async def watch_once(self) -> None:
        await watcher.watch_once(self.ctx)
        if self.on_round is not None:
            try:
                await self.on_round()
            except PasarError as exc:
                log.warning("buyers' nodes are not told of this round yet (%s); next round", exc.message)

    async def refresh(self, *, terms: bool = False) -> None:
        """What pages read from memory: Core's status each round, moderators' offers and the stores' published
        terms once per ``offer_ttl`` or now with ``terms`` (a terms change re-signs that store's catalog)."""
        if not self.settings.enabled:
            return
        await self.ready.check_status()
        now = self.ctx.now()
        if now < self._terms_due and not terms:
            return
        self._terms_due = now + self.settings.offer_ttl
        for record in await self.ctx.market.stores():
            onions = record["profile"]["moderators"]
            answers = await asyncio.gather(*(self.ready.fetch_offer(o) for o in onions))
            by_onion = dict(zip(onions, answers, strict=True))
            if merged_terms(record["profile"], by_onion) != record["profile"].get("moderator_terms", []):
                await self._publish_terms(record["onion"], by_onion)

    async def run(self) -> None:
        """Watch forever at ``poll_interval``; Core being down only skips rounds (logged once per outage)."""
        down = False
        while True:
            try:
                await self.refresh()
                await self.watch_once()
                if down:
                    log.info("Bitcoin Core answers again: payment watching resumed")
                down = False
            except WalletError as exc:
                if not down:
                    log.warning("payment watching paused: %s", exc.message)
                down = True
            await asyncio.sleep(self.settings.poll_interval)
