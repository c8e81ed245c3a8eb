"""PSBT checks before signing: each tampering refused with its reason; raw PSBT sighash bytes read."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.core.errors import PsbtRefused
from node.core.ports import DecodedPsbt, PsbtInput, PsbtOutput
from node.payments import escrow, payouts, psbt_check, psbt_raw
from node.payments.models import Order, PayoutKind
from tests.unit.test_payouts import BUYER_ADDR, KEYS, LEGACY_ADDR, VENDOR_ADDR, make_order

FOREIGN = "ab" * 32


def psbt_of(order: Order, plan: payouts.PayoutPlan, **changes: Any) -> DecodedPsbt:
    """What ``decode_psbt`` would give for the unsigned PSBT of ``plan`` (fields overridable)."""
    spk = escrow.script_pubkey(order.escrow.address).hex()
    script = escrow.escrow_script(order.escrow).hex()
    inputs = tuple(
        PsbtInput(
            txid=txid,
            vout=vout,
            sequence=seq,
            utxo_amount_sat=amount,
            utxo_script_hex=spk,
            witness_script_hex=script,
            sighash=None,
            bip32_pubkeys=KEYS,
            partial_sig_pubkeys=(),
            final=False,
        )
        for (txid, vout, seq), (_t, _v, amount) in zip(plan.inputs, order.funding.outpoints, strict=True)
    )
    outputs = tuple(PsbtOutput(o.address, escrow.script_pubkey(o.address).hex(), o.amount_sat) for o in plan.outputs)
    base = DecodedPsbt(version=2, locktime=0, inputs=inputs, outputs=outputs, fee_sat=plan.fee_sat, vsize=150)
    return dataclasses.replace(base, **changes)


def check(
    decoded: DecodedPsbt, order: Order, plan: payouts.PayoutPlan, own: str | None = KEYS[1], rate: int = 500
) -> None:
    psbt_check.check_payout(
        decoded,
        escrow=order.escrow,
        outpoints=[(t, v) for t, v, _a in order.funding.outpoints],
        plan_outputs=plan.outputs,
        own_pubkey=own,
        max_fee_rate=rate,
    )


@pytest.fixture
def setup() -> tuple[Order, payouts.PayoutPlan, DecodedPsbt]:
    order = make_order(amount=100_000, paid=(60_000, 50_000))
    plan = payouts.plan(PayoutKind.RELEASE, order=order, fee_rate=10)
    return order, plan, psbt_of(order, plan)


def test_the_planned_payout_passes(setup: tuple[Order, payouts.PayoutPlan, DecodedPsbt]) -> None:
    order, plan, decoded = setup
    check(decoded, order, plan)
    check(decoded, order, plan, own=None)
    psbt_check.check_payout(
        decoded,
        escrow=order.escrow,
        outpoints=order.funding.outpoints,
        plan_outputs=plan.psbt_outputs,
        own_pubkey=KEYS[0],
        max_fee_rate=10,
    )
    # Output order does not matter (a multiset), the amounts and scripts do.
    check(dataclasses.replace(decoded, outputs=decoded.outputs[::-1]), order, plan)


def _input(decoded: DecodedPsbt, index: int = 0, **changes: Any) -> DecodedPsbt:
    inputs = list(decoded.inputs)
    inputs[index] = dataclasses.replace(inputs[index], **changes)
    return dataclasses.replace(decoded, inputs=tuple(inputs))


def _output(decoded: DecodedPsbt, index: int = 0, **changes: Any) -> DecodedPsbt:
    outputs = list(decoded.outputs)
    outputs[index] = dataclasses.replace(outputs[index], **changes)
    return dataclasses.replace(decoded, outputs=tuple(outputs))


def test_tampering_is_refused(setup: tuple[Order, payouts.PayoutPlan, DecodedPsbt]) -> None:
    order, plan, d = setup
    first = d.inputs[0]
    extra_out = PsbtOutput(LEGACY_ADDR, escrow.script_pubkey(LEGACY_ADDR).hex(), 1_000)
    foreign_in = dataclasses.replace(first, txid=FOREIGN, vout=0)
    cases: list[tuple[DecodedPsbt, str]] = [
        (dataclasses.replace(d, inputs=(*d.inputs, foreign_in)), "not an escrow output"),
        (dataclasses.replace(d, inputs=d.inputs[:1]), "does not spend escrow output"),
        (dataclasses.replace(d, inputs=(first, first)), "twice"),
        (_input(d, utxo_script_hex=escrow.script_pubkey(BUYER_ADDR).hex()), "escrow's script"),
        (_input(d, utxo_script_hex=None), "witness_utxo"),
        (_input(d, witness_script_hex="51"), "witness_script"),
        (_input(d, sighash="NONE"), "sighash NONE"),
        (_input(d, sighash="ALL|ANYONECANPAY"), "only ALL"),
        (_input(d, bip32_pubkeys=KEYS[:1]), "bip32_derivs"),
        (dataclasses.replace(d, outputs=(*d.outputs, extra_out)), "not in the agreed payout"),
        (_output(d, amount_sat=d.outputs[0].amount_sat - 1), "the agreed amount is"),
        (_output(d, 1, script_hex=escrow.script_pubkey(LEGACY_ADDR).hex(), address=LEGACY_ADDR), "not in the agreed"),
        (dataclasses.replace(d, outputs=d.outputs[:1]), "lacks an agreed output"),
        (dataclasses.replace(d, version=1), "version 2"),
        (dataclasses.replace(d, locktime=800_000), "locktime 0"),
        (dataclasses.replace(d, fee_sat=1), "not inputs - outputs"),
    ]
    for decoded, reason in cases:
        with pytest.raises(PsbtRefused, match=reason):
            check(decoded, order, plan)


def test_amount_of_an_input_must_match_the_escrow(setup: tuple[Order, payouts.PayoutPlan, DecodedPsbt]) -> None:
    order, plan, d = setup
    with pytest.raises(PsbtRefused, match="claims"):
        psbt_check.check_payout(
            _input(d, utxo_amount_sat=60_001),
            escrow=order.escrow,
            outpoints=order.funding.outpoints,
            plan_outputs=plan.outputs,
            own_pubkey=None,
            max_fee_rate=500,
        )


def test_fee_caps() -> None:
    order = make_order(amount=1_000_000, paid=(1_000_000,))
    greedy = payouts.plan(PayoutKind.REFUND, order=order, fee_rate=600)
    with pytest.raises(PsbtRefused, match="max_fee_rate"):
        check(psbt_of(order, greedy), order, greedy)
    check(psbt_of(order, greedy), order, greedy, rate=600)
    huge = payouts.plan(PayoutKind.REFUND, order=order, fee_rate=1_000)  # 158 vB * 1000 = 15.8% of the escrow
    with pytest.raises(PsbtRefused, match="10%"):
        check(psbt_of(order, huge), order, huge, rate=2_000)
    tiny = make_order(amount=20_000, paid=(20_000,))
    small = payouts.plan(PayoutKind.REFUND, order=tiny, fee_rate=20)  # 3,160 sat: 15% of a tiny escrow is fine
    check(psbt_of(tiny, small), tiny, small)
    more = make_order(amount=100_000, paid=(100_000,))
    plan = payouts.plan(PayoutKind.REFUND, order=more, fee_rate=10)
    stolen = _output(psbt_of(more, plan), amount_sat=plan.outputs[0].amount_sat + 1)
    stolen = dataclasses.replace(stolen, fee_sat=None)
    with pytest.raises(PsbtRefused, match="the agreed amount is"):
        check(stolen, more, plan, own=None)


def test_claim_fee_rate_uses_the_claim_witness() -> None:
    order = make_order(amount=1_000_000, paid=(1_000_000,), timeout=200)
    plan = payouts.plan(PayoutKind.CLAIM, order=order, fee_rate=100, claim_address=VENDOR_ADDR)
    check(psbt_of(order, plan), order, plan, own=KEYS[3], rate=100)
    with pytest.raises(PsbtRefused, match="max_fee_rate"):
        check(psbt_of(order, plan), order, plan, own=KEYS[3], rate=99)


def test_check_upload(setup: tuple[Order, payouts.PayoutPlan, DecodedPsbt]) -> None:
    order, _plan, pending = setup
    pending = _input(_input(pending, 0, partial_sig_pubkeys=(KEYS[1],)), 1, partial_sig_pubkeys=(KEYS[1],))
    signed = _input(_input(pending, 0, partial_sig_pubkeys=(KEYS[1], KEYS[0])), 1, partial_sig_pubkeys=(KEYS[0],))
    psbt_check.check_upload(signed, pending, escrow=order.escrow)
    finalized = _input(_input(pending, 0, final=True, partial_sig_pubkeys=()), 1, final=True, partial_sig_pubkeys=())
    psbt_check.check_upload(finalized, pending, escrow=order.escrow)
    with pytest.raises(PsbtRefused, match="no new signature"):
        psbt_check.check_upload(pending, pending, escrow=order.escrow)
    half = _input(pending, 0, partial_sig_pubkeys=(KEYS[1], KEYS[0]))
    with pytest.raises(PsbtRefused, match="input 1"):
        psbt_check.check_upload(half, pending, escrow=order.escrow)
    stranger = "03" + "11" * 32
    foreign_sig = _input(_input(pending, 0, partial_sig_pubkeys=(stranger,)), 1, partial_sig_pubkeys=(stranger,))
    with pytest.raises(PsbtRefused, match="escrow key"):
        psbt_check.check_upload(foreign_sig, pending, escrow=order.escrow)
    psbt_check.check_upload(foreign_sig, pending)  # without the escrow, any new key counts
    for changed in (
        dataclasses.replace(signed, locktime=1),
        dataclasses.replace(signed, version=1),
        _input(signed, 0, sequence=5),
        _output(signed, 0, amount_sat=5),
        dataclasses.replace(signed, outputs=signed.outputs[::-1]),
    ):
        with pytest.raises(PsbtRefused, match="not the payout waiting"):
            psbt_check.check_upload(changed, pending, escrow=order.escrow)


# ---- raw PSBT bytes --------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    return bytes([n]) if n < 0xFD else b"\xfd" + n.to_bytes(2, "little")


def _blob(data: bytes) -> bytes:
    return _varint(len(data)) + data


def _der(sighash: int) -> bytes:
    r = s = b"\x01" * 32
    body = b"\x02" + _blob(r) + b"\x02" + _blob(s)
    return b"\x30" + bytes([len(body)]) + body + bytes([sighash])


def raw_psbt(inputs: list[list[tuple[bytes, bytes]]], n_out: int = 1) -> str:
    tx = b"\x02\x00\x00\x00" + _varint(len(inputs))
    tx += b"".join(b"\x11" * 32 + i.to_bytes(4, "little") + b"\x00" + b"\xfe\xff\xff\xff" for i in range(len(inputs)))
    tx += _varint(n_out) + b"".join(
        (1000).to_bytes(8, "little") + _blob(b"\x00\x14" + b"\x22" * 20) for _ in range(n_out)
    )
    tx += b"\x00\x00\x00\x00"
    body = b"psbt\xff" + _blob(b"\x00") + _blob(tx) + b"\x00"
    for pairs in inputs:
        body += b"".join(_blob(k) + _blob(v) for k, v in pairs) + b"\x00"
    body += b"\x00" * n_out
    return base64.b64encode(body).decode()


def test_raw_sighash_bytes() -> None:
    key = bytes.fromhex(KEYS[0])
    witness = _varint(3) + _blob(_der(0x02)) + _blob(b"") + _blob(b"\x51" * 40)
    text = raw_psbt(
        [
            [(b"\x02" + key, _der(0x01))],
            [(b"\x02" + key, _der(0x02)), (b"\x03", (0x81).to_bytes(4, "little"))],
            [(b"\x08", witness)],
            [],
        ]
    )
    assert psbt_raw.signature_sighashes(text) == [{0x01}, {0x02, 0x81}, {0x02}, set()]
    psbt_check.check_signatures(raw_psbt([[(b"\x02" + key, _der(0x01))]]))
    with pytest.raises(PsbtRefused, match="input 1 is signed with sighash 0x02"):
        psbt_check.check_signatures(text)


@pytest.mark.parametrize(
    "text",
    [
        "not base64!",
        base64.b64encode(b"psbt\x00").decode(),
        base64.b64encode(b"psbt\xff\x00").decode(),  # no unsigned tx
        raw_psbt([[]])[:-8],  # truncated
        base64.b64encode(base64.b64decode(raw_psbt([[]])) + b"\x00").decode(),  # trailing bytes
    ],
)
def test_raw_refuses_garbage(text: str) -> None:
    with pytest.raises(PsbtRefused, match="does not parse"):
        psbt_check.check_signatures(text)


@given(st.binary(max_size=300))
def test_raw_never_crashes(data: bytes) -> None:
    try:
        psbt_raw.signature_sighashes(base64.b64encode(b"psbt\xff" + data).decode())
    except psbt_raw.PsbtFormatError:
        pass


def test_sequence_is_checked_when_given(setup: tuple[Order, payouts.PayoutPlan, DecodedPsbt]) -> None:
    """Review finding 3: a co-signer could have put a relative lock (or RBF) on a release; now refused."""
    order, plan, d = setup
    final = payouts.SEQUENCE_FINAL_NO_RBF
    kwargs: dict[str, Any] = {
        "escrow": order.escrow,
        "outpoints": order.funding.outpoints,
        "plan_outputs": plan.outputs,
        "own_pubkey": None,
        "max_fee_rate": 500,
    }
    psbt_check.check_payout(d, sequence=final, **kwargs)
    locked = _input(d, 1, sequence=0xFFFF)
    psbt_check.check_payout(locked, **kwargs)  # None: not checked (callers that predate the check)
    with pytest.raises(PsbtRefused, match="has sequence 0xffff: the agreed payout uses 0xfffffffe"):
        psbt_check.check_payout(locked, sequence=final, **kwargs)


def test_unsigned_txid_is_the_txid_of_the_signed_transaction() -> None:
    """The txid of a segwit spend is known before it is signed (review finding 2)."""
    import hashlib

    text = raw_psbt([[], []], n_out=2)
    tx = _tx_bytes(text)
    want = hashlib.sha256(hashlib.sha256(tx).digest()).digest()[::-1].hex()
    assert psbt_raw.unsigned_txid(text) == want
    with pytest.raises(psbt_raw.PsbtFormatError):
        psbt_raw.unsigned_txid(base64.b64encode(b"psbt\xff\x00").decode())


def _tx_bytes(text: str) -> bytes:
    data = base64.b64decode(text)
    pos = len(b"psbt\xff") + 2  # key length 1, key 0x00
    size = data[pos]
    if size == 0xFD:
        size, pos = int.from_bytes(data[pos + 1 : pos + 3], "little"), pos + 3
    else:
        pos += 1
    return data[pos : pos + size]
