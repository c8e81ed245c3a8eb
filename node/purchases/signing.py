"""Signing a payout the store's node sent: the same PSBT checks as the vendor's, with our key B, then sign.

The PSBT must spend exactly the escrow outputs this node's watch-only wallet
sees and pay exactly the outputs the payout message listed (already checked
for their roles by ``checks.payout``); sighash ALL only; nSequence final
without RBF. Our wallet's signature must then be on every input; a PSBT that
is complete is broadcast here too (the store's node broadcasts it as well).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..core import ports
from ..core.errors import PsbtRefused, Unavailable, WalletError
from ..payments import psbt_check
from ..payments.models import Escrow, PayoutKind
from ..payments.payouts import SEQUENCE_FINAL_NO_RBF
from . import checks
from .models import PendingPayout, Purchase

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Signed:
    psbt: str  # with our signature
    txid: str | None  # when complete and broadcast by this node


def _parts(p: Purchase) -> tuple[Escrow, PendingPayout]:
    if p.escrow is None or p.pending is None:
        raise PsbtRefused("there is no payout waiting for your signature")
    return p.escrow, p.pending


async def _check(btc: ports.Bitcoin, p: Purchase, psbt: str, max_fee_rate: int) -> None:
    escrow, pending = _parts(p)
    decoded = await btc.decode_psbt(psbt)
    if pending.kind is PayoutKind.SPLIT:
        _moderator_signed(escrow, decoded, "the store sent" if psbt == pending.psbt else "after signing")
    coins = await btc.unspent([escrow.address])
    if not coins:
        raise Unavailable(
            "this node's wallet sees no coins in the escrow (not yet, or already spent): "
            "the payout is signed once it sees them"
        )
    psbt_check.check_payout(
        decoded,
        escrow=escrow,
        outpoints=[(c.txid, c.vout, c.amount_sat) for c in coins],
        plan_outputs=pending.outputs,
        own_pubkey=escrow.buyer.pubkey,
        max_fee_rate=max_fee_rate,
        raw=psbt,
        sequence=SEQUENCE_FINAL_NO_RBF,
    )


def _moderator_signed(escrow: Escrow, decoded: ports.DecodedPsbt, when: str) -> None:
    """A split carries the moderator key's signature on every input (its decision), ``when`` checked."""
    mod = escrow.moderator.pubkey
    if not decoded.inputs or any(mod not in i.partial_sig_pubkeys for i in decoded.inputs):
        raise PsbtRefused(f"the split {when} does not carry the moderator's signature on every input: not signed")


async def check(btc: ports.Bitcoin, p: Purchase, *, max_fee_rate: int) -> None:
    """``PsbtRefused`` (the reason) unless the pending payout is exactly what it says."""
    await _check(btc, p, _parts(p)[1].psbt, max_fee_rate)


async def sign(btc: ports.Bitcoin, p: Purchase, *, max_fee_rate: int) -> Signed:
    """The pending payout checked, signed by our wallet, and broadcast when complete."""
    escrow, pending = _parts(p)
    if pending.kind is PayoutKind.SPLIT and checks.split_waits(p):
        raise PsbtRefused(checks.split_waits(p))
    await _check(btc, p, pending.psbt, max_fee_rate)
    signed = await btc.sign(pending.psbt)
    after = await btc.decode_psbt(signed)
    mine = escrow.buyer.pubkey
    if any(mine not in i.partial_sig_pubkeys and not i.final for i in after.inputs):
        raise PsbtRefused(
            "your wallet did not sign the payout: bitcoin_wallet must be the wallet that gave this purchase's "
            "escrow key"
        )
    await _check(btc, p, signed, max_fee_rate)  # still the very payout, signed with ALL
    final = await btc.finalize(signed)
    txid = None
    if final.complete and final.hex is not None:
        try:
            txid = await btc.broadcast(final.hex)
        except WalletError as exc:  # the store's node broadcasts it too; its watcher sees the outcome
            log.info("purchase %s: the %s did not broadcast from here: %s", p.id, pending.kind.value, exc.message)
    return Signed(psbt=signed, txid=txid)
