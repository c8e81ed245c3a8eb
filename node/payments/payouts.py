"""Payout plans: who gets what from the escrow, the network fee, and the dust dropped.

- release: the vendor gets the price less the fee; any surplus goes back to the buyer's refund address.
- refund: the buyer gets everything paid less the fee.
- split: the moderator's decision ``(buyer_sat, vendor_sat, moderator_sat)`` summing to what was paid;
  the fee comes out of the buyer's and vendor's outputs pro rata.
- claim: the vendor alone (key V2, input sequence N) gets everything paid less the fee.

An output under its dust limit is dropped to the fee (said in ``note``), never a
failed broadcast. Limits are Core's at 3 sat/vB: 294 sat for P2WPKH, 330 for
P2WSH and P2TR, and 546 / 540 for legacy P2PKH / P2SH (330 would not relay there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..core.errors import Conflict, ValidationError
from ..core.models import Sats
from .escrow import script_pubkey
from .models import Order, Party, PayoutKind, PayoutOutput

DUST_P2WPKH = 294
DUST_OTHER = 330
DUST_P2PKH = 546
DUST_P2SH = 540
SEQUENCE_FINAL_NO_RBF = 0xFFFFFFFE  # locktime 0, no replace-by-fee
MAX_ESCROW_SCRIPT = 148  # 105 (multi) + 2 + 34 (V2) + 1 + 4 (N up to 65535) + 2
SIG = 1 + 73  # push + DER signature (at most 72) + sighash byte


@dataclass(frozen=True)
class PayoutPlan:
    kind: PayoutKind
    outputs: tuple[PayoutOutput, ...]
    fee_sat: Sats  # inputs - outputs (the dust dropped included)
    dust_sat: Sats
    note: str
    inputs: tuple[tuple[str, int, int], ...]  # (txid, vout, sequence)
    vsize: int  # the estimate the fee was computed on

    @property
    def psbt_outputs(self) -> list[tuple[str, int]]:
        return [(o.address, int(o.amount_sat)) for o in self.outputs]


def dust_limit(address: str) -> int:
    spk = script_pubkey(address)
    if len(spk) == 22 and spk[0] == 0:
        return DUST_P2WPKH
    if spk[:1] == b"\x76":
        return DUST_P2PKH
    if spk[:1] == b"\xa9":
        return DUST_P2SH
    return DUST_OTHER


def _varint_len(n: int) -> int:
    return 1 if n < 0xFD else 3 if n <= 0xFFFF else 5


def escrow_witness_size(claim: bool) -> int:
    """Witness bytes of one escrow input: [empty, sigB, sigV, script] or, for a claim, [sigV2, empty, script]."""
    script = _varint_len(MAX_ESCROW_SCRIPT) + MAX_ESCROW_SCRIPT
    return 1 + (SIG + 1 + script if claim else 1 + 2 * SIG + script)


def estimate_vsize(n_inputs: int, outputs: Sequence[str | PayoutOutput], claim: bool) -> int:
    """Virtual size of a payout spending ``n_inputs`` escrow outputs, witnesses counted (an upper bound)."""
    spks = [script_pubkey(o if isinstance(o, str) else o.address) for o in outputs]
    base = 4 + 4 + _varint_len(n_inputs) + _varint_len(len(spks)) + 41 * n_inputs
    base += sum(8 + _varint_len(len(s)) + len(s) for s in spks)
    weight = 4 * base + 2 + n_inputs * escrow_witness_size(claim)
    return (weight + 3) // 4


@dataclass(frozen=True)
class _Share:
    address: str
    gross: int  # before the fee
    role: Party
    pays_fee: bool


def _deduct(shares: list[_Share], fee: int) -> list[int]:
    """Net amounts: ``fee`` taken from the fee payers pro rata (the last payer takes the rounding)."""
    payers = [i for i, s in enumerate(shares) if s.pays_fee] or list(range(len(shares)))
    base = sum(shares[i].gross for i in payers)
    net = [s.gross for s in shares]
    left = fee
    for i in payers[:-1]:
        part = fee * shares[i].gross // base if base else 0
        net[i] -= part
        left -= part
    net[payers[-1]] -= left
    return net


def _settle(
    shares: list[_Share], n_inputs: int, fee_rate: int, claim: bool, fixed_fee: int | None
) -> tuple[list[tuple[_Share, int]], int, int, str]:
    """(kept (share, net) pairs, vsize, dust dropped, note): drop outputs under dust until every one stands."""
    dust = 0
    notes: list[str] = []
    while shares:
        vsize = estimate_vsize(n_inputs, [s.address for s in shares], claim)
        need = fee_rate * vsize if fixed_fee is None else fixed_fee
        net = _deduct(shares, max(0, need - dust))
        small = [i for i, s in enumerate(shares) if net[i] < dust_limit(s.address)]
        if not small:
            return list(zip(shares, net, strict=True)), vsize, dust, "; ".join(notes)
        for i in small:
            amount = max(0, net[i])
            notes.append(
                f"the {shares[i].role.value}'s {amount} sat is under the dust limit and goes to the network fee"
            )
        dust += sum(shares[i].gross for i in small)
        shares = [s for i, s in enumerate(shares) if i not in small]
    return [], 0, dust, "; ".join(notes)


def _vendor_address(order: Order, vendor_address: str | None, claim_address: str | None) -> str:
    address = vendor_address or claim_address or order.vendor_address
    if not address:
        raise ValidationError({"vendor_address": "the order has no vendor payout address"})
    return address


def _split_shares(order: Order, split: tuple[int, int, int] | None, vendor: str, moderator: str | None) -> list[_Share]:
    if split is None or any(part < 0 for part in split):
        raise ValidationError({"split": "a split needs buyer_sat, vendor_sat and the moderator's fee (each >= 0)"})
    buyer_sat, vendor_sat, moderator_sat = split
    paid = order.funding.paid_sat
    if buyer_sat + vendor_sat + moderator_sat != paid:
        raise ValidationError(
            {"split": f"buyer_sat + vendor_sat + moderator fee must be exactly what was paid ({paid} sat)"}
        )
    if buyer_sat + vendor_sat == 0:
        raise ValidationError({"split": "the buyer's and vendor's parts pay the network fee: they cannot both be 0"})
    if moderator_sat and not moderator:
        raise ValidationError({"moderator_address": "a split with a moderator fee needs the moderator's address"})
    shares = [
        _Share(order.refund_address, buyer_sat, Party.BUYER, True),
        _Share(vendor, vendor_sat, Party.VENDOR, True),
        _Share(moderator or "", moderator_sat, Party.MODERATOR, False),
    ]
    return [s for s in shares if s.gross > 0]


def _shares(
    order: Order, kind: PayoutKind, split: tuple[int, int, int] | None, vendor: str, moderator: str | None
) -> list[_Share]:
    paid = order.funding.paid_sat
    if kind is PayoutKind.RELEASE:
        price = min(paid, order.amount_sat)
        shares = [
            _Share(vendor, price, Party.VENDOR, True),
            _Share(order.refund_address, paid - price, Party.BUYER, False),
        ]
        return [s for s in shares if s.gross > 0]
    if kind is PayoutKind.REFUND:
        return [_Share(order.refund_address, paid, Party.BUYER, True)]
    if kind is PayoutKind.CLAIM:
        return [_Share(vendor, paid, Party.VENDOR, True)]
    return _split_shares(order, split, vendor, moderator)


def plan(
    kind: PayoutKind,
    *,
    order: Order,
    fee_rate: int,
    split: tuple[int, int, int] | None = None,
    claim_address: str | None = None,
    vendor_address: str | None = None,
    moderator_address: str | None = None,
    fixed_fee: int | None = None,
) -> PayoutPlan:
    """The payout of everything ``order``'s escrow holds, as ``kind`` says (see the module docstring).

    The vendor's address is ``vendor_address``, else ``claim_address`` (a fresh vendor-wallet address for a
    claim), else the order's ``vendor_address``. ``fixed_fee`` (e.g. read from a PSBT the other side
    built) sets the network fee exactly instead of ``fee_rate`` x vsize. Conflict when nothing is left
    once the fee is paid.
    """
    if fee_rate < 1 or (fixed_fee is not None and fixed_fee < 0):
        raise ValidationError({"fee_rate": "the fee rate must be at least 1 sat/vB (and a fixed fee >= 0)"})
    if not order.funding.outpoints or order.funding.paid_sat <= 0:
        raise Conflict(f"order {order.id}: the escrow holds nothing to pay out")
    vendor = "" if kind is PayoutKind.REFUND else _vendor_address(order, vendor_address, claim_address)
    claim = kind is PayoutKind.CLAIM
    shares = _shares(order, kind, split, vendor, moderator_address)
    kept, vsize, dust, note = _settle(shares, len(order.funding.outpoints), fee_rate, claim, fixed_fee)
    if not kept:
        raise Conflict(
            f"order {order.id}: the {order.funding.paid_sat} sat in escrow do not cover the network fee at "
            f"{fee_rate} sat/vB; wait for lower fees"
        )
    outputs = tuple(PayoutOutput(s.address, Sats(net), s.role) for s, net in kept)
    sequence = order.escrow.timeout_blocks if claim else SEQUENCE_FINAL_NO_RBF
    return PayoutPlan(
        kind=kind,
        outputs=outputs,
        fee_sat=Sats(order.funding.paid_sat - sum(o.amount_sat for o in outputs)),
        dust_sat=Sats(dust),
        note=note,
        inputs=tuple((txid, vout, sequence) for txid, vout, _amount in order.funding.outpoints),
        vsize=vsize,
    )


def claim_height(order: Order) -> int | None:
    """The first block height a timeout claim can be mined in (None until an escrow UTXO confirmed).

    ``funding.first_seen_height`` is the height of the OLDEST confirmed escrow UTXO; BIP68 lets a spend of
    it with sequence N into a block at that height + N. A later payment (dust from anyone who knows the
    address) does not push the claim back: the claim spends only the UTXOs old enough (``claimable``).
    """
    base = order.funding.first_seen_height
    return None if base is None else base + order.escrow.timeout_blocks


def claimable(order: Order, block: int) -> tuple[tuple[str, int, int], ...]:
    """The escrow UTXOs (txid, vout, amount) a timeout claim mined in ``block`` may spend: each confirmed at a
    height h with h + N <= ``block``. Orders stored before per-UTXO heights were kept count every UTXO from
    ``first_seen_height``."""
    n = order.escrow.timeout_blocks
    if not order.funding.heights:
        possible = claim_height(order)
        return order.funding.outpoints if possible is not None and possible <= block else ()
    ripe = {(txid, vout) for txid, vout, height in order.funding.heights if height + n <= block}
    return tuple(o for o in order.funding.outpoints if (o[0], o[1]) in ripe)
