"""Payout plans: amounts per kind, fee from the vsize estimate, dust dropped to the fee, claim height."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.core.errors import Conflict, ValidationError
from node.core.models import Sats
from node.payments import escrow, payouts
from node.payments.models import (
    Funding,
    KeyRef,
    ModeratorTerms,
    Order,
    OrderItem,
    OrderState,
    Party,
    PayoutKind,
)

KEYS = (
    "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
    "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5",
    "02f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9",
    "02e493dbf1c10d80f3581e4904930b1404cc6c13900ee0758474fa94abe8c4cd13",
)
BUYER_ADDR = "bcrt1qdavt4j2sd7dlhqsavtnfxvzppw6k7qy97tmnu9"  # P2WPKH
VENDOR_ADDR = "bcrt1qan8gntac7z7me2ejt4hpru42ad2f759fmy0m3ejvs98656znv7eqga4uhv"  # P2WSH
MOD_ADDR = "bcrt1pfwxjqvtt4tcxrtdluukfmy2dv7xd2qzdfy6kajv5nwn4yam3wxkq3553uh"  # P2TR
LEGACY_ADDR = "mfhE6jAUwjUDNZhaX1PAsDTKfneQF2Nshc"  # P2PKH


def make_order(amount: int = 100_000, paid: tuple[int, ...] = (100_000,), timeout: int = 144) -> Order:
    b, v, m, v2 = (KeyRef(k) for k in KEYS)
    desc = escrow.descriptor(b, v, m, v2, timeout)
    script = escrow.witness_script(b, v, m, v2, timeout)
    built = escrow.build_escrow(
        b, v, m, v2, timeout, escrow.descriptor_checksum(desc), "regtest", escrow.escrow_address(script, "regtest")
    )
    item = OrderItem("l1", "h", "Thing", None, 1, Sats(amount), None, Sats(0), None, Sats(0))
    funding = Funding(
        paid_sat=Sats(sum(paid)),
        outpoints=tuple((f"{i:064x}", i, p) for i, p in enumerate(paid)),
        confirmations=1 if paid else 0,
        first_seen_height=200 if paid else None,
    )
    return Order(
        id="o1",
        store="s" * 56,
        token_hash="t",
        state=OrderState.CONFIRMED,
        created_at=1,
        updated_at=1,
        item=item,
        amount_sat=Sats(amount),
        refund_address=BUYER_ADDR,
        ship_to_sealed="",
        escrow=built,
        moderator=ModeratorTerms("m" * 56, m, 2, Sats(0), "sha256:x"),
        pay_by=100,
        funding=funding,
        vendor_address=VENDOR_ADDR,
    )


def amounts(plan: payouts.PayoutPlan) -> dict[Party, int]:
    return {o.role: o.amount_sat for o in plan.outputs}


def test_witness_sizes_are_conservative() -> None:
    b, v, m, v2 = (KeyRef(k) for k in KEYS)
    script = len(escrow.witness_script(b, v, m, v2, 65535))
    assert script == payouts.MAX_ESCROW_SCRIPT
    # multisig: count + empty + 2 sigs (73 + push) + script (push + 148)
    assert payouts.escrow_witness_size(claim=False) == 1 + 1 + 74 + 74 + 1 + 148
    assert payouts.escrow_witness_size(claim=True) == 1 + 74 + 1 + 1 + 148


def test_estimate_vsize() -> None:
    # 1 input, 1 P2WPKH output: base 4+4+1+1+41+31 = 82 -> 328 WU; witness 2 + 299 -> ceil(629/4) = 158
    assert payouts.estimate_vsize(1, [BUYER_ADDR], claim=False) == 158
    assert payouts.estimate_vsize(1, [BUYER_ADDR], claim=True) < 158
    two = payouts.estimate_vsize(2, [BUYER_ADDR, VENDOR_ADDR], claim=False)
    assert two == (4 * (10 + 82 + 31 + 43) + 2 + 2 * 299 + 3) // 4


def test_release_pays_the_vendor_less_fee_and_returns_the_surplus() -> None:
    order = make_order(amount=100_000, paid=(60_000, 50_000))
    plan = payouts.plan(PayoutKind.RELEASE, order=order, fee_rate=10)
    fee = 10 * payouts.estimate_vsize(2, [VENDOR_ADDR, BUYER_ADDR], claim=False)
    assert amounts(plan) == {Party.VENDOR: 100_000 - fee, Party.BUYER: 10_000}
    assert plan.fee_sat == fee and plan.dust_sat == 0 and plan.note == ""
    assert plan.inputs == ((f"{0:064x}", 0, 0xFFFFFFFE), (f"{1:064x}", 1, 0xFFFFFFFE))
    assert plan.psbt_outputs == [(VENDOR_ADDR, 100_000 - fee), (BUYER_ADDR, 10_000)]


def test_release_with_a_dust_surplus_drops_it_to_the_fee() -> None:
    order = make_order(amount=100_000, paid=(100_100,))
    plan = payouts.plan(PayoutKind.RELEASE, order=order, fee_rate=10)
    need = 10 * payouts.estimate_vsize(1, [VENDOR_ADDR], claim=False)
    assert [o.role for o in plan.outputs] == [Party.VENDOR]
    assert plan.dust_sat == 100 and plan.fee_sat == need  # the dust pays part of the fee
    assert plan.outputs[0].amount_sat == 100_100 - need
    assert "buyer" in plan.note and "dust" in plan.note


def test_refund_pays_the_buyer() -> None:
    plan = payouts.plan(PayoutKind.REFUND, order=make_order(paid=(70_000,)), fee_rate=3)
    fee = 3 * payouts.estimate_vsize(1, [BUYER_ADDR], claim=False)
    assert amounts(plan) == {Party.BUYER: 70_000 - fee}


def test_claim_uses_the_timeout_sequence_and_the_claim_address() -> None:
    plan = payouts.plan(PayoutKind.CLAIM, order=make_order(timeout=300), fee_rate=5, claim_address=MOD_ADDR)
    assert plan.inputs[0][2] == 300
    assert plan.outputs[0].address == MOD_ADDR and plan.outputs[0].role is Party.VENDOR
    assert plan.fee_sat == 5 * payouts.estimate_vsize(1, [MOD_ADDR], claim=True)


def test_split_takes_the_fee_pro_rata_from_buyer_and_vendor() -> None:
    order = make_order(amount=100_000)
    plan = payouts.plan(
        PayoutKind.SPLIT, order=order, fee_rate=10, split=(30_000, 68_000, 2_000), moderator_address=MOD_ADDR
    )
    fee = 10 * payouts.estimate_vsize(1, [BUYER_ADDR, VENDOR_ADDR, MOD_ADDR], claim=False)
    got = amounts(plan)
    assert got[Party.MODERATOR] == 2_000
    assert got[Party.BUYER] == 30_000 - fee * 30_000 // 98_000
    assert got[Party.BUYER] + got[Party.VENDOR] == 98_000 - fee


def test_fixed_fee_rebuilds_a_plan_exactly() -> None:
    order = make_order(amount=100_000, paid=(60_000, 40_000))
    split = (30_000, 68_000, 2_000)
    theirs = payouts.plan(PayoutKind.SPLIT, order=order, fee_rate=7, split=split, moderator_address=MOD_ADDR)
    ours = payouts.plan(
        PayoutKind.SPLIT, order=order, fee_rate=1, split=split, moderator_address=MOD_ADDR, fixed_fee=theirs.fee_sat
    )
    assert ours == theirs
    tiny_buyer = payouts.plan(
        PayoutKind.SPLIT, order=order, fee_rate=1, split=(200, 97_800, 2_000), moderator_address=MOD_ADDR, fixed_fee=500
    )
    assert [o.role for o in tiny_buyer.outputs] == [Party.VENDOR, Party.MODERATOR]
    assert tiny_buyer.fee_sat == 500 and tiny_buyer.dust_sat == 200
    with pytest.raises(ValidationError, match="fixed fee"):
        payouts.plan(PayoutKind.REFUND, order=order, fee_rate=1, fixed_fee=-1)


def test_split_errors() -> None:
    order = make_order()
    with pytest.raises(ValidationError, match="exactly what was paid"):
        payouts.plan(PayoutKind.SPLIT, order=order, fee_rate=1, split=(1, 2, 3), moderator_address=MOD_ADDR)
    with pytest.raises(ValidationError, match="moderator's address"):
        payouts.plan(PayoutKind.SPLIT, order=order, fee_rate=1, split=(50_000, 49_000, 1_000))
    with pytest.raises(ValidationError, match="cannot both be 0"):
        payouts.plan(PayoutKind.SPLIT, order=order, fee_rate=1, split=(0, 0, 100_000), moderator_address=MOD_ADDR)
    with pytest.raises(ValidationError, match="split"):
        payouts.plan(PayoutKind.SPLIT, order=order, fee_rate=1)
    with pytest.raises(ValidationError, match="split"):
        payouts.plan(PayoutKind.SPLIT, order=order, fee_rate=1, split=(-1, 100_001, 0))


def test_a_winner_takes_all_split_has_no_zero_outputs() -> None:
    plan = payouts.plan(PayoutKind.SPLIT, order=make_order(), fee_rate=1, split=(100_000, 0, 0))
    assert [o.role for o in plan.outputs] == [Party.BUYER]


def test_nothing_payable() -> None:
    with pytest.raises(Conflict, match="holds nothing"):
        payouts.plan(PayoutKind.REFUND, order=make_order(paid=()), fee_rate=1)
    with pytest.raises(Conflict, match="do not cover the network fee"):
        payouts.plan(PayoutKind.REFUND, order=make_order(paid=(1_000,)), fee_rate=10)
    with pytest.raises(ValidationError, match="fee rate"):
        payouts.plan(PayoutKind.REFUND, order=make_order(), fee_rate=0)
    with pytest.raises(ValidationError, match="vendor payout address"):
        payouts.plan(PayoutKind.RELEASE, order=dataclasses.replace(make_order(), vendor_address=""), fee_rate=1)


def test_dust_limits_by_output_type() -> None:
    assert payouts.dust_limit(BUYER_ADDR) == payouts.DUST_P2WPKH == 294
    assert payouts.dust_limit(VENDOR_ADDR) == payouts.dust_limit(MOD_ADDR) == payouts.DUST_OTHER == 330
    assert payouts.dust_limit(LEGACY_ADDR) == 546
    assert payouts.dust_limit("2MxFajLApXpYk4VodBSZSt7rw8y4ryABkfA") == 540


def test_claim_height() -> None:
    assert payouts.claim_height(make_order(timeout=144)) == 344
    assert payouts.claim_height(make_order(paid=())) is None


def test_claim_spends_only_utxos_old_enough() -> None:
    """Review finding 4: dust paid late must not push the claim back; the claim leaves it in the escrow."""
    order = make_order(paid=(100_000, 400), timeout=144)
    (big, dust) = order.funding.outpoints
    heights = ((big[0], big[1], 200), (dust[0], dust[1], 340))
    order = dataclasses.replace(order, funding=dataclasses.replace(order.funding, heights=heights))
    assert payouts.claim_height(order) == 344
    assert payouts.claimable(order, 343) == ()
    assert payouts.claimable(order, 344) == (big,)
    assert payouts.claimable(order, 484) == (big, dust)
    legacy = make_order(paid=(100_000, 400), timeout=144)  # stored before per-UTXO heights: every UTXO from the base
    assert payouts.claimable(legacy, 344) == legacy.funding.outpoints and payouts.claimable(legacy, 343) == ()


def test_moderator_fee_for_the_order() -> None:
    terms = make_order(amount=105_000).moderator
    assert terms.fee_for(Sats(105_000)) == 2_100  # 0 sat + 2%
    assert dataclasses.replace(terms, fee_sat=Sats(1_000)).fee_for(Sats(105_000)) == 3_100


@given(
    st.sampled_from(list(PayoutKind)),
    st.lists(st.integers(1, 3_000_000), min_size=1, max_size=4),
    st.integers(1, 2_000_000),
    st.integers(1, 300),
    st.sampled_from([BUYER_ADDR, LEGACY_ADDR]),
    st.data(),
)
def test_plans_always_balance(
    kind: PayoutKind, paid: list[int], amount: int, rate: int, refund: str, data: st.DataObject
) -> None:
    order = dataclasses.replace(make_order(amount=amount, paid=tuple(paid)), refund_address=refund)
    total = sum(paid)
    split = None
    if kind is PayoutKind.SPLIT:
        buyer = data.draw(st.integers(0, total))
        moderator = data.draw(st.integers(0, total - buyer))
        split = (buyer, total - buyer - moderator, moderator)
    try:
        plan = payouts.plan(kind, order=order, fee_rate=rate, split=split, moderator_address=MOD_ADDR)
    except Conflict:
        return
    except ValidationError as exc:
        assert kind is PayoutKind.SPLIT and "cannot both be 0" in str(exc)
        return
    assert sum(o.amount_sat for o in plan.outputs) + plan.fee_sat == total
    assert all(o.amount_sat >= payouts.dust_limit(o.address) for o in plan.outputs)
    assert plan.fee_sat >= rate * plan.vsize
    assert plan.fee_sat <= rate * plan.vsize + plan.dust_sat
