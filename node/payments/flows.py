"""Payouts of an escrow: build, check, sign, combine, broadcast (docs/design.md "Escrow").

Every PSBT, built here or uploaded by the buyer or answered by the moderator,
passes ``psbt_check.check_payout`` before our wallet signs it or before it is
combined. Every state change is written before the external effect it leads
to: a complete payout is stored with its txid BEFORE ``sendrawtransaction``,
so a crash in between is finished by the watcher (``resume``), and
re-broadcasting a transaction Core already knows is harmless.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

from ..core.errors import Conflict, PsbtRefused, WalletError
from ..core.models import Sats
from ..core.ports import Bitcoin, DecodedPsbt
from ..market.market import Market
from . import orders, payouts, psbt_check, psbt_raw, settlement
from .models import (
    HistoryEntry,
    ModeratorOffer,
    ModeratorTerms,
    Order,
    OrderState,
    Party,
    Payout,
    PayoutKind,
    PayoutOutput,
    SignedTerms,
)
from .moderation_wire import CaseAnswer, KeyRequest
from .order_store import OrderStore
from .settings import PaymentSettings

log = logging.getLogger(__name__)

S = OrderState
FINAL_OF = settlement.FINAL_OF
settle = settlement.settle
txid_of = settlement.txid_of


class ModeratorLink(Protocol):
    """What the vendor's node asks of a moderator's node (``moderator_client.ModeratorClient``)."""

    async def offer(self, onion: str) -> ModeratorOffer: ...
    async def request_key(
        self, store: str, moderator_onion: str, order_id: str, details: KeyRequest
    ) -> ModeratorTerms: ...
    async def signed_key(self, store: str, moderator_onion: str, order_id: str, details: KeyRequest) -> SignedTerms: ...
    async def refund(self, order: Order, psbt: str) -> CaseAnswer: ...
    async def dispute(self, order: Order, vendor_address: str) -> CaseAnswer: ...
    async def poll(self, order: Order) -> CaseAnswer: ...


@dataclass
class Ctx:
    """What every flow needs: the order store, the wallet, the moderator link, settings, the clock."""

    store: OrderStore
    market: Market
    bitcoin: Bitcoin | None
    moderation: ModeratorLink
    settings: PaymentSettings
    clock: Callable[[], int]
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # Checkouts under way in this process (they ask Core and a moderator before the order is stored):
    # "store/listing/sku" -> units, "store" -> orders. Checkout counts them with what is stored, so
    # concurrent checkouts do not all pass the stock check and the unpaid cap and then draw keys for nothing.
    placing: dict[str, int] = field(default_factory=dict)

    def lock(self, order_id: str) -> asyncio.Lock:
        """One lock per order: every read-change-write of an order in this process runs under it, so a
        watcher round and a buyer's message cannot overwrite each other (``expect`` guards the rest)."""
        if len(self.locks) > 1000:
            self.locks = {k: v for k, v in self.locks.items() if v.locked()}
        return self.locks.setdefault(order_id, asyncio.Lock())

    @asynccontextmanager
    async def locked(self, order_id: str) -> AsyncIterator[Order]:
        """The order as stored now, read under its lock (held until the block ends)."""
        async with self.lock(order_id):
            yield await self.store.get(order_id)

    def now(self) -> int:
        return int(self.clock())

    def wallet(self) -> Bitcoin:
        if self.bitcoin is None:
            raise WalletError("payments are paused: this node has no Bitcoin Core configured (set bitcoin_rpc_url)")
        return self.bitcoin


# -- transactions ----------------------------------------------------------------
def outpoints(order: Order) -> list[tuple[str, int]]:
    return [(txid, vout) for txid, vout, _amount in order.funding.outpoints]


def sequence_of(order: Order, kind: PayoutKind) -> int:
    """Every input's nSequence in a ``kind`` payout: N for the timeout claim, final (no RBF) otherwise."""
    return order.escrow.timeout_blocks if kind is PayoutKind.CLAIM else payouts.SEQUENCE_FINAL_NO_RBF


def own_key(order: Order, kind: PayoutKind) -> str:
    """The vendor's key that signs ``kind``: V2 (timeout) for a claim, V otherwise."""
    return order.escrow.vendor_timeout.pubkey if kind is PayoutKind.CLAIM else order.escrow.vendor.pubkey


async def check(
    ctx: Ctx,
    order: Order,
    psbt: str,
    outputs: Sequence[PayoutOutput],
    own_pubkey: str | None,
    *,
    raw: bool = False,
    spends: Sequence[tuple[str, int]] = (),
    kind: PayoutKind,
) -> DecodedPsbt:
    """``psbt`` decoded, after ``check_payout`` found it spends exactly the escrow to exactly ``outputs``.

    ``raw``: also read each signature's sighash byte (for PSBTs signed outside this node). ``spends``: the
    escrow outpoints a stored payout was built on (default: what the escrow holds now). ``kind`` sets the
    nSequence every input must have.
    """
    decoded = await ctx.wallet().decode_psbt(psbt)
    psbt_check.check_payout(
        decoded,
        escrow=order.escrow,
        outpoints=list(spends) or outpoints(order),
        plan_outputs=outputs,
        own_pubkey=own_pubkey,
        max_fee_rate=ctx.settings.max_fee_rate,
        raw=psbt if raw else None,
        sequence=sequence_of(order, kind),
    )
    return decoded


async def sign_checked(
    ctx: Ctx,
    order: Order,
    psbt: str,
    outputs: Sequence[PayoutOutput],
    kind: PayoutKind,
    spends: Sequence[tuple[str, int]] = (),
) -> str:
    """``psbt`` signed by the vendor's wallet, after the checks; ``WalletError`` if the wallet did not sign."""
    pubkey = own_key(order, kind)
    await check(ctx, order, psbt, outputs, pubkey, raw=True, spends=spends, kind=kind)
    signed = await ctx.wallet().sign(psbt)
    decoded = await ctx.wallet().decode_psbt(signed)
    if not all(pubkey in i.partial_sig_pubkeys or i.final for i in decoded.inputs):
        raise WalletError(
            f"the wallet did not sign the {kind.value} payout: is bitcoin_wallet the wallet that gave the "
            "order's vendor key (and unlocked)?"
        )
    return signed


async def build(
    ctx: Ctx,
    order: Order,
    kind: PayoutKind,
    *,
    split: tuple[int, int, int] | None = None,
    claim_address: str | None = None,
    sign: bool = True,
) -> Payout:
    """A payout of ``order``'s escrow planned by ``payouts.plan``, checked, and signed by us when ``sign``."""
    sent = order.pending
    if sent is not None and sent.txid is not None:
        raise Conflict(
            f"order {order.id}: its {sent.kind.value} payout {sent.txid} is broadcast; wait for its confirmation"
        )
    btc = ctx.wallet()
    plan = payouts.plan(kind, order=order, fee_rate=await btc.fee_rate(), split=split, claim_address=claim_address)
    outs = [(o.address, int(o.amount_sat)) for o in plan.outputs]
    psbt = await btc.create_psbt(plan.inputs, outs, order.escrow.descriptor)
    if sign:
        psbt = await sign_checked(ctx, order, psbt, plan.outputs, kind)
    else:
        await check(ctx, order, psbt, plan.outputs, None, kind=kind)
    return Payout(
        kind=kind,
        outputs=plan.outputs,
        fee_sat=plan.fee_sat,
        dust_sat=plan.dust_sat,
        psbt=psbt,
        signed_by=(Party.VENDOR,) if sign else (),
        created_at=ctx.now(),
        note=plan.note,
        inputs=tuple(outpoints(order)),
        expected_txid=_txid(psbt),
    )


def _txid(psbt: str) -> str:
    try:
        return psbt_raw.unsigned_txid(psbt)
    except psbt_raw.PsbtFormatError as exc:
        raise PsbtRefused(f"the payout PSBT does not parse: {exc}") from exc


async def vendor_sign_pending(ctx: Ctx, order: Order) -> Order:
    """The vendor's wallet co-signs the pending payout (a split or a moderator's refund) and broadcasts it."""
    pending = order.pending
    if pending is None or pending.txid is not None:
        raise Conflict(f"order {order.id} has no payout waiting for the vendor's signature")
    if Party.VENDOR in pending.signed_by:
        raise Conflict(
            f"the {pending.kind.value} payout of order {order.id} waits for the buyer's signature, not yours"
        )
    signed = await sign_checked(ctx, order, pending.psbt, pending.outputs, pending.kind, pending.inputs)
    return await settle(
        ctx, order, dataclasses.replace(pending, psbt=signed, signed_by=(*pending.signed_by, Party.VENDOR))
    )


async def check_signed(ctx: Ctx, order: Order, psbt: str, base: Payout) -> DecodedPsbt:
    """``psbt`` (signed by another party) is ``base``'s transaction with a new escrow signature, paying ``base``'s
    outputs with SIGHASH_ALL signatures only; refused (``PsbtRefused``) otherwise."""
    decoded = await check(ctx, order, psbt, base.outputs, None, raw=True, spends=base.inputs, kind=base.kind)
    psbt_check.check_upload(decoded, await ctx.wallet().decode_psbt(base.psbt), escrow=order.escrow)
    return decoded


async def cosign(ctx: Ctx, order: Order, party: Party, psbt: str) -> Order:
    """``psbt`` (signed by ``party`` outside the node) combined with the pending payout and broadcast."""
    pending = order.pending
    if pending is None or pending.txid is not None:
        raise Conflict(f"order {order.id} has no payout waiting for a signature")
    await check_signed(ctx, order, psbt, pending)
    combined = await ctx.wallet().combine([pending.psbt, psbt])
    signed = dataclasses.replace(pending, psbt=combined, signed_by=(*pending.signed_by, party))
    return await settle(ctx, order, signed)


async def decided_split(ctx: Ctx, order: Order, psbt: str, split: tuple[int, int, int]) -> Payout:
    """The moderator's signed split as a pending payout, after checking it pays exactly the decision.

    The moderator chose its own fee rate and address: the plan is rebuilt with the PSBT's fee rate and the
    one output that is neither the buyer's nor the vendor's; every check then applies as to our own PSBTs.
    """
    agreed = order.moderator.fee_for(order.amount_sat)
    if split[2] != agreed:
        raise PsbtRefused(
            f"the moderator's split takes {split[2]} sat as its fee; the fee agreed at checkout is {agreed} sat "
            f"({order.moderator.fee_sat} sat + {order.moderator.fee_percent}%): ask the moderator to decide again"
        )
    decoded = await ctx.wallet().decode_psbt(psbt)
    dispute = order.dispute
    vendor = (dispute.vendor_address if dispute is not None else "") or order.vendor_address
    others = [o.address for o in decoded.outputs if o.address not in (order.refund_address, vendor)]
    moderator = others[0] if len(others) == 1 else None
    fee = decoded.fee_sat or 0
    first = payouts.plan(
        PayoutKind.SPLIT, order=order, fee_rate=1, split=split, vendor_address=vendor, moderator_address=moderator
    )
    rate = max(1, fee // max(1, first.vsize))
    for guess in (rate, rate + 1, rate - 1):
        plan = payouts.plan(
            PayoutKind.SPLIT,
            order=order,
            fee_rate=max(1, guess),
            split=split,
            vendor_address=vendor,
            moderator_address=moderator,
        )
        if plan.fee_sat == fee:
            break
    await check(ctx, order, psbt, plan.outputs, None, raw=True, kind=PayoutKind.SPLIT)
    moderator_key = order.escrow.moderator.pubkey
    if not all(moderator_key in i.partial_sig_pubkeys for i in decoded.inputs):
        raise PsbtRefused("the moderator's split does not carry the moderator's signature on every input")
    return Payout(
        kind=PayoutKind.SPLIT,
        outputs=plan.outputs,
        fee_sat=plan.fee_sat,
        dust_sat=plan.dust_sat,
        psbt=psbt,
        signed_by=(Party.MODERATOR,),
        created_at=ctx.now(),
        note=plan.note,
        inputs=tuple(outpoints(order)),
        expected_txid=_txid(psbt),
    )


async def claim(ctx: Ctx, order: Order) -> Order:
    """The vendor's timeout key alone takes the escrow (to a fresh wallet address), from ``claim_height`` on."""
    if not holding(order):
        raise Conflict(f"order {order.id}: the escrow holds no payment to claim")
    orders.check(order, OrderState.CLAIMED)
    btc = ctx.wallet()
    possible, height = payouts.claim_height(order), await btc.height()
    if possible is None:
        raise Conflict("the timeout claim counts from the payment's confirmation: wait until it confirms")
    if height + 1 < possible:
        raise Conflict(
            f"the timeout claim is possible from block {possible}; the chain is at block {height} "
            f"({possible - height - 1} more blocks)"
        )
    mature = payouts.claimable(order, height + 1)
    ripe = dataclasses.replace(
        order,
        funding=dataclasses.replace(order.funding, outpoints=mature, paid_sat=Sats(sum(a for _t, _v, a in mature))),
    )
    address = (await btc.new_key()).address
    payout = await build(ctx, ripe, PayoutKind.CLAIM, claim_address=address)
    return await settle(ctx, order, payout)


def stale(order: Order) -> bool:
    """The pending payout no longer spends exactly what the escrow holds (a payment arrived or vanished since)."""
    pending = order.pending
    if pending is None or pending.txid is not None or not pending.inputs:
        return False
    return sorted(pending.inputs) != sorted(outpoints(order))


async def rebuild(ctx: Ctx, order: Order) -> Order:
    """A stale vendor-signed release or refund built again over what the escrow holds now."""
    pending = order.pending
    assert pending is not None
    if Party.VENDOR not in pending.signed_by or pending.kind not in (PayoutKind.RELEASE, PayoutKind.REFUND):
        log.warning("order %s: the escrow changed under the %s payout signed by others", order.id, pending.kind)
        return order
    fresh = await build(ctx, order, pending.kind)
    now = ctx.now()
    note = f"the escrow now holds {order.funding.paid_sat} sat: the {pending.kind.value} payout was made again"
    moved = orders.with_pending(order, fresh, now=now)
    moved = dataclasses.replace(moved, history=(*moved.history, HistoryEntry(at=now, state=order.state, note=note)))
    return await ctx.store.update(moved, expect=order)


def holding(order: Order) -> bool:
    return orders.holds_funds(order.state) and order.funding.paid_sat > 0
