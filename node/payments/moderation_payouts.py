"""The moderator's two signatures: a refund after the accept window, a split as its operator decided.

Both must spend every input with nSequence 0xFFFFFFFE (final, no RBF, no
relative timelock: the vendor's timeout path is never co-signed here).

What the escrow holds is what this node's own watch-only wallet sees
(``unspent``), never what the vendor's message says. Every PSBT passes
``psbt_check.check_payout`` before the signing wallet sees it, and the signed
PSBT must carry this node's signature on every input.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..core import ports
from ..core.errors import Conflict, PsbtRefused, ValidationError, WalletError
from ..core.models import Sats
from . import payouts, psbt_check
from .models import Funding, Party, PayoutKind, PayoutOutput
from .moderation_store import Case

REFUND_FEE_MULTIPLE = 3  # a refund's fee rate is at most this many times this node's own Core estimate


@dataclass(frozen=True)
class Split:
    psbt: str  # base64, signed by this node
    note: str  # e.g. an output dropped as dust
    fee_rate: int  # sat/vB it was planned with
    moderator_address: str | None  # this node's fee output (None: no fee)


async def _funding(bitcoin: ports.Bitcoin, case: Case) -> Funding:
    utxos = await bitcoin.unspent([case.escrow.address])
    if not utxos:
        raise Conflict(
            f"the escrow of order {case.order_id} holds nothing this node sees (not paid yet, or already spent)"
        )
    utxos.sort(key=lambda u: (u.txid, u.vout))
    return Funding(
        paid_sat=Sats(sum(u.amount_sat for u in utxos)),
        outpoints=tuple((u.txid, u.vout, u.amount_sat) for u in utxos),
        confirmations=min(u.confirmations for u in utxos),
    )


async def sighted(bitcoin: ports.Bitcoin, case: Case, now: int) -> Case | None:
    """``case`` with ``funded_at`` = ``now`` when this node's watch-only wallet sees its escrow funded for the
    first time; None when it was seen before or holds nothing yet."""
    if case.funded_at is not None or not await bitcoin.unspent([case.escrow.address]):
        return None
    return replace(case, funded_at=now, updated_at=now)


async def _sign(bitcoin: ports.Bitcoin, psbt: str, case: Case) -> str:
    signed = await bitcoin.sign(psbt)
    decoded = await bitcoin.decode_psbt(signed)
    mine = case.escrow.moderator.pubkey
    if not all(mine in i.partial_sig_pubkeys or i.final for i in decoded.inputs):
        raise WalletError(
            f"this node's wallet did not sign the payout of order {case.order_id}: is bitcoin_wallet still the "
            "wallet that gave the moderator key?"
        )
    return signed


async def sign_refund(bitcoin: ports.Bitcoin, case: Case, psbt: str, *, max_fee_rate: int) -> str:
    """``psbt`` signed by this node if it pays everything in escrow, less a sane fee, to the buyer's refund
    address. Sane: at most ``REFUND_FEE_MULTIPLE`` times this node's own ``fee_rate()`` (the requester's rate
    is not trusted), never above ``max_fee_rate``, and at most 10% of the escrow."""
    funding = await _funding(bitcoin, case)
    cap = min(max_fee_rate, REFUND_FEE_MULTIPLE * await bitcoin.fee_rate())
    decoded = await bitcoin.decode_psbt(psbt)
    fee = decoded.fee_sat
    if fee is None:
        raise PsbtRefused("the refund PSBT does not say the amounts of its inputs (witness_utxo missing)")
    outputs = (PayoutOutput(case.refund_address, Sats(funding.paid_sat - fee), Party.BUYER),)
    psbt_check.check_payout(
        decoded,
        escrow=case.escrow,
        outpoints=funding.outpoints,
        plan_outputs=outputs,
        own_pubkey=case.escrow.moderator.pubkey,
        max_fee_rate=cap,
        raw=psbt,
        sequence=payouts.SEQUENCE_FINAL_NO_RBF,
    )
    return await _sign(bitcoin, psbt, case)


async def sign_split(bitcoin: ports.Bitcoin, case: Case, split: tuple[Sats, Sats], *, max_fee_rate: int) -> Split:
    """The split PSBT (buyer / vendor / this node's fee) built with ``payouts.plan``, checked and signed."""
    if case.order is None or case.vendor_address is None:
        raise Conflict(f"order {case.order_id}: no dispute with the order record has arrived yet")
    funding = await _funding(bitcoin, case)
    buyer_sat, vendor_sat = split
    fee = case.moderator_sat
    if buyer_sat + vendor_sat + fee != funding.paid_sat:
        raise ValidationError(
            {
                "buyer_sat": f"buyer_sat + vendor_sat must be {funding.paid_sat - fee} sat: the escrow holds "
                f"{funding.paid_sat} sat and this node's fee is {fee} sat"
            }
        )
    order = replace(case.order, funding=replace(funding, first_seen_height=case.order.funding.first_seen_height))
    fee_rate = min(await bitcoin.fee_rate(), max_fee_rate)
    fee_address = (await bitcoin.new_key()).address if fee > 0 else None
    plan = payouts.plan(
        PayoutKind.SPLIT,
        order=order,
        fee_rate=fee_rate,
        split=(buyer_sat, vendor_sat, fee),
        vendor_address=case.vendor_address,
        moderator_address=fee_address,
    )
    psbt = await bitcoin.create_psbt(plan.inputs, plan.psbt_outputs, case.escrow.descriptor)
    psbt_check.check_payout(
        await bitcoin.decode_psbt(psbt),
        escrow=case.escrow,
        outpoints=funding.outpoints,
        plan_outputs=plan.outputs,
        own_pubkey=case.escrow.moderator.pubkey,
        max_fee_rate=max_fee_rate,
        sequence=payouts.SEQUENCE_FINAL_NO_RBF,
    )
    return Split(await _sign(bitcoin, psbt, case), plan.note, fee_rate, fee_address)
