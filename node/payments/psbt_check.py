"""Checks every payout PSBT passes BEFORE a wallet signs it or the node combines it.

Bitcoin Core's wallet signs whatever it is given (a PSBT paying the vendor
everything, or leaving 0.5 BTC as fee, signs fine), so the node refuses, with
a reason, any PSBT that is not exactly the agreed payout of the escrow:

- inputs exactly the escrow outpoints (no foreign input, none missing, none twice);
- each input's ``witness_utxo`` script is the escrow's P2WSH and its ``witness_script`` our compiled script;
- no sighash other than ALL (the PSBT field, and each signature's last byte when the raw PSBT is given);
- our own key named in ``bip32_derivs`` (else our wallet would not sign it);
- outputs exactly the agreed (address, amount) multiset; transaction version 2, locktime 0;
- every input's nSequence the agreed one when ``sequence`` is given (0xFFFFFFFE for a release, refund or
  split: no relative lock a co-signer did not agree to; N for the vendor's timeout claim);
- fee = inputs - outputs, its rate under ``max_fee_rate`` and at most 10% of the escrow (unless tiny).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from ..core.errors import PsbtRefused, ValidationError
from ..core.ports import DecodedPsbt, PsbtInput
from . import psbt_raw
from .escrow import escrow_script, script_pubkey
from .models import Escrow, PayoutOutput
from .payouts import estimate_vsize

SMALL_FEE = 10_000  # sat: a fee this small is never refused for being over 10% of a tiny escrow
Outpoint = tuple[str, int] | tuple[str, int, int]  # (txid, vout) or (txid, vout, amount_sat)


def _name(txid: str, vout: int) -> str:
    return f"{txid[:16]}…:{vout}"


def _check_outpoints(decoded: DecodedPsbt, outpoints: Sequence[Outpoint]) -> None:
    wanted = {(o[0], o[1]) for o in outpoints}
    spent = [(i.txid, i.vout) for i in decoded.inputs]
    for txid, vout in spent:
        if (txid, vout) not in wanted:
            raise PsbtRefused(f"input {_name(txid, vout)} is not an escrow output: a payout spends only the escrow")
    if len(set(spent)) != len(spent):
        raise PsbtRefused("the PSBT spends the same escrow output twice")
    for txid, vout in sorted(wanted - set(spent)):
        raise PsbtRefused(f"the PSBT does not spend escrow output {_name(txid, vout)}: it must spend all of them")
    amounts = {(o[0], o[1]): o[2] for o in outpoints if len(o) == 3}
    for i in decoded.inputs:
        known = amounts.get((i.txid, i.vout))
        if known is not None and i.utxo_amount_sat != known:
            raise PsbtRefused(f"input {_name(i.txid, i.vout)} claims {i.utxo_amount_sat} sat, the escrow holds {known}")


def _check_input(i: PsbtInput, spk_hex: str, script_hex: str, own_pubkey: str | None) -> None:
    where = f"input {_name(i.txid, i.vout)}"
    if i.utxo_script_hex is None or i.utxo_amount_sat is None:
        raise PsbtRefused(f"{where} has no witness_utxo: the PSBT must say what it spends (utxoupdatepsbt)")
    if i.utxo_script_hex.lower() != spk_hex:
        raise PsbtRefused(f"{where} does not spend the escrow's script")
    if not i.final and (i.witness_script_hex or "").lower() != script_hex:
        raise PsbtRefused(f"{where} carries a witness_script that is not this order's escrow script")
    if i.sighash not in (None, "ALL"):
        raise PsbtRefused(f"{where} asks for sighash {i.sighash}: only ALL is accepted (it commits to every output)")
    if own_pubkey is not None and own_pubkey not in i.bip32_pubkeys:
        raise PsbtRefused(f"{where} does not name our key in bip32_derivs: our wallet could not sign it")


def _output_scripts(outputs: Sequence[PayoutOutput | tuple[str, int]]) -> Counter[tuple[str, int]]:
    pairs = [(o.address, int(o.amount_sat)) if isinstance(o, PayoutOutput) else (o[0], int(o[1])) for o in outputs]
    try:
        return Counter((script_pubkey(a).hex(), n) for a, n in pairs)
    except ValidationError as exc:
        raise PsbtRefused(f"an agreed payout address does not decode: {exc.message}") from exc


def _check_outputs(decoded: DecodedPsbt, agreed: Counter[tuple[str, int]]) -> None:
    got = Counter((o.script_hex.lower(), o.amount_sat) for o in decoded.outputs)
    by_script = {o.script_hex.lower(): o.address or o.script_hex for o in decoded.outputs}
    agreed_amounts = {script: amount for script, amount in agreed}
    extra = sorted((got - agreed).keys(), key=lambda pair: pair[0] in agreed_amounts)  # a stranger first
    for script, amount in extra:
        if script not in agreed_amounts:
            raise PsbtRefused(f"the PSBT pays {amount} sat to {by_script[script]}, which is not in the agreed payout")
        raise PsbtRefused(
            f"the PSBT pays {amount} sat to {by_script[script]}: the agreed amount is {agreed_amounts[script]} sat"
        )
    for _script, amount in (agreed - got).keys():
        raise PsbtRefused(f"the PSBT lacks an agreed output of {amount} sat")


def _check_fee(decoded: DecodedPsbt, addresses: list[str], escrow: Escrow, max_fee_rate: int) -> None:
    paid = sum(i.utxo_amount_sat or 0 for i in decoded.inputs)
    fee = paid - sum(o.amount_sat for o in decoded.outputs)
    if decoded.fee_sat is not None and decoded.fee_sat != fee:
        raise PsbtRefused(f"the PSBT's fee ({decoded.fee_sat} sat) is not inputs - outputs ({fee} sat)")
    if fee < 0:
        raise PsbtRefused("the PSBT pays out more than the escrow holds")
    claim = bool(decoded.inputs) and all(i.sequence == escrow.timeout_blocks for i in decoded.inputs)
    vsize = estimate_vsize(len(decoded.inputs), addresses, claim)
    if fee > max_fee_rate * vsize:
        raise PsbtRefused(
            f"the fee of {fee} sat is over {max_fee_rate} sat/vB (max_fee_rate) for about {vsize} vB: "
            "wait for lower fees or raise max_fee_rate"
        )
    if fee * 10 > paid and fee > SMALL_FEE:
        raise PsbtRefused(f"the fee of {fee} sat is more than 10% of the {paid} sat in escrow: wait for lower fees")


def check_payout(
    decoded: DecodedPsbt,
    *,
    escrow: Escrow,
    outpoints: Sequence[Outpoint],
    plan_outputs: Sequence[PayoutOutput | tuple[str, int]],
    own_pubkey: str | None,
    max_fee_rate: int,
    raw: str | None = None,
    sequence: int | None = None,
) -> None:
    """``PsbtRefused`` naming the first problem unless ``decoded`` is exactly the agreed payout of ``escrow``.

    ``raw`` (the PSBT's base64), when given, also has each signature's sighash byte checked (a wallet may
    sign with NONE without writing the PSBT's sighash field). ``sequence``, when given, is every input's
    required nSequence (None: not checked).
    """
    if decoded.version != 2 or decoded.locktime != 0:
        raise PsbtRefused(
            f"payouts are version 2 with locktime 0 (this one: version {decoded.version}, locktime {decoded.locktime})"
        )
    _check_outpoints(decoded, outpoints)
    for i in decoded.inputs:
        if sequence is not None and i.sequence != sequence:
            raise PsbtRefused(
                f"input {_name(i.txid, i.vout)} has sequence {i.sequence:#x}: the agreed payout uses {sequence:#x} "
                "(a different one would lock the money or allow replacement)"
            )
    spk_hex = script_pubkey(escrow.address).hex()
    script_hex = escrow_script(escrow).hex()
    for i in decoded.inputs:
        _check_input(i, spk_hex, script_hex, own_pubkey)
    agreed = _output_scripts(plan_outputs)
    _check_outputs(decoded, agreed)
    addresses = [o.address if isinstance(o, PayoutOutput) else o[0] for o in plan_outputs]
    _check_fee(decoded, addresses, escrow, max_fee_rate)
    if raw is not None:
        check_signatures(raw)


def check_signatures(raw: str) -> None:
    """``PsbtRefused`` when any signature in the PSBT (partial or final) is not SIGHASH_ALL."""
    try:
        flags = psbt_raw.signature_sighashes(raw)
    except psbt_raw.PsbtFormatError as exc:
        raise PsbtRefused(f"the PSBT does not parse: {exc}") from exc
    for index, found in enumerate(flags):
        bad = sorted(f for f in found if f != psbt_raw.SIGHASH_ALL)
        if bad:
            raise PsbtRefused(f"input {index} is signed with sighash {bad[0]:#04x}: only ALL (0x01) is accepted")


def _tx(decoded: DecodedPsbt) -> tuple[object, ...]:
    ins = tuple((i.txid, i.vout, i.sequence) for i in decoded.inputs)
    outs = tuple((o.script_hex.lower(), o.amount_sat) for o in decoded.outputs)
    return decoded.version, decoded.locktime, ins, outs


def check_upload(decoded: DecodedPsbt, pending_decoded: DecodedPsbt, *, escrow: Escrow | None = None) -> None:
    """An uploaded PSBT must be the pending payout's very transaction, carrying a new escrow signature per input.

    A signature counts when its key is in ``escrow`` (any key when ``escrow`` is None) and was not in the
    pending PSBT; an input the uploader's wallet already finalized counts too (finalizing checks it).
    """
    if _tx(decoded) != _tx(pending_decoded):
        raise PsbtRefused(
            "the uploaded PSBT is not the payout waiting for your signature (inputs, outputs, version or "
            "locktime differ): download the current PSBT, sign it and upload it"
        )
    keys = None if escrow is None else _escrow_keys(escrow)
    for index, (mine, before) in enumerate(zip(decoded.inputs, pending_decoded.inputs, strict=True)):
        new = set(mine.partial_sig_pubkeys) - set(before.partial_sig_pubkeys)
        if keys is not None:
            new &= keys
        if not new and not (mine.final and not before.final):
            raise PsbtRefused(
                f"input {index} of the uploaded PSBT carries no new signature from an escrow key: sign it with the "
                "wallet holding your escrow key (walletprocesspsbt) and upload the result"
            )


def _escrow_keys(escrow: Escrow) -> set[str]:
    return {k.pubkey for k in (escrow.buyer, escrow.vendor, escrow.moderator, escrow.vendor_timeout)}
