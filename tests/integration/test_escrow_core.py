"""Our escrow script, address and checks against a real regtest Bitcoin Core (tests/regtest.py).

- descriptor checksum, address and witness script == Core's ``getdescriptorinfo`` / ``deriveaddresses`` /
  ``decodescript`` for random keys and timeouts; every wallet address type decodes as ``validateaddress`` says;
- real payouts: the planned PSBT passes, a buyer-signed upload passes, the combined tx is accepted and no
  bigger than the vsize estimate (multisig and timeout-claim paths);
- tampered PSBTs built by real Core (extra output, changed amount, huge fee, sighash NONE, foreign input)
  are refused before any wallet signs.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from node.adapters.bitcoin import BitcoinCore
from node.core.errors import PsbtRefused, ValidationError
from node.core.models import Sats
from node.core.ports import DecodedPsbt
from node.payments import escrow, payouts, psbt_check
from node.payments.models import Escrow, Funding, KeyRef, Order, PayoutKind
from tests.regtest import Regtest, RegtestError
from tests.unit.test_payouts import make_order

TIMEOUTS = (1, 16, 17, 127, 128, 255, 256, 6480, 32767, 32768, 65535)


def random_key(rng: random.Random) -> KeyRef:
    """A valid compressed key without any EC library: a random x that is on the curve, either parity."""
    while True:
        candidate = rng.choice(("02", "03")) + rng.getrandbits(256).to_bytes(32, "big").hex()
        try:
            return escrow.parse_key(candidate)
        except ValidationError:  # off-curve x: draw again
            continue


def expected_asm(keys: tuple[KeyRef, ...], n: int) -> str:
    b, v, m, v2 = (k.pubkey for k in keys)
    return (
        f"2 {b} {v} {m} 3 OP_CHECKMULTISIG OP_IFDUP OP_NOTIF {v2} OP_CHECKSIGVERIFY {n} OP_CHECKSEQUENCEVERIFY OP_ENDIF"
    )


def test_script_address_and_checksum_match_core(regtest: Regtest) -> None:
    rng = random.Random(10)
    timeouts = [*TIMEOUTS, *(rng.randint(1, 65535) for _ in range(8))]
    wallet_keys = [escrow.parse_key(regtest.key(w)) for w in ("buyer", "vendor", "moderator", "vendor")]
    for index, n in enumerate(timeouts):
        keys = tuple(wallet_keys) if index % 3 == 0 else tuple(random_key(rng) for _ in range(4))
        b, v, m, v2 = keys
        desc = escrow.descriptor(b, v, m, v2, n)
        script = escrow.witness_script(b, v, m, v2, n)
        info = regtest.cli("getdescriptorinfo", desc)
        assert info["checksum"] == escrow.descriptor_checksum(desc), desc
        [core_address] = regtest.cli("deriveaddresses", f"{desc}#{info['checksum']}")
        assert core_address == escrow.escrow_address(script, "regtest"), n
        decoded = regtest.cli("decodescript", script.hex())
        assert decoded["asm"] == expected_asm(keys, n)
        if "segwit" in decoded:
            assert decoded["segwit"]["address"] == core_address
        built = escrow.build_escrow(b, v, m, v2, n, info["checksum"], "regtest", core_address)
        assert escrow.parse_descriptor(built.descriptor) == (b, v, m, v2, n)


def test_duplicate_keys_are_refused_by_core_too(regtest: Regtest) -> None:
    b, v, m, v2 = (escrow.parse_key(regtest.key(w)) for w in ("buyer", "vendor", "moderator", "vendor"))
    desc = escrow.descriptor(b, v, m, v2, 144).replace(v2.descriptor_key(), b.descriptor_key())
    with pytest.raises(RegtestError):
        regtest.cli("getdescriptorinfo", desc)


@pytest.mark.parametrize("kind", ["legacy", "p2sh-segwit", "bech32", "bech32m"])
def test_addresses_decode_as_core_says(regtest: Regtest, kind: str) -> None:
    address = str(regtest.cli("getnewaddress", "", kind, wallet="buyer"))
    info = regtest.cli("validateaddress", address)
    assert escrow.parse_address(address, "regtest") == address
    assert escrow.script_pubkey(address).hex() == info["scriptPubKey"]


# ---- real payouts --------------------------------------------------------------------------


async def make_escrow(regtest: Regtest, core: BitcoinCore, timeout: int) -> Escrow:
    v, v2 = await core.new_key(), await core.new_key()
    keys = (
        escrow.parse_key(regtest.key("buyer")),
        KeyRef(v.pubkey, v.origin),
        escrow.parse_key(regtest.key("moderator")),
        KeyRef(v2.pubkey, v2.origin),
    )
    desc = escrow.descriptor(*keys, timeout)
    built = escrow.build_escrow(*keys, timeout, await core.checksum(desc), "regtest", await core.derive_address(desc))
    await core.watch(built.descriptor)
    return built


async def funded(regtest: Regtest, core: BitcoinCore, built: Escrow, amount: int, paid: list[int]) -> Order:
    for sat in paid:
        regtest.fund("buyer", built.address, sat)
    regtest.mine(1)
    utxos = await core.unspent([built.address])
    confirmations = min(u.confirmations for u in utxos)
    funding = Funding(
        paid_sat=Sats(sum(u.amount_sat for u in utxos)),
        outpoints=tuple((u.txid, u.vout, u.amount_sat) for u in utxos),
        confirmations=confirmations,
        first_seen_height=regtest.height() - confirmations + 1,
    )
    assert funding.paid_sat == sum(paid)
    return dataclasses.replace(
        make_order(amount=amount),
        escrow=built,
        funding=funding,
        refund_address=regtest.address("buyer"),
        vendor_address=(await core.new_key()).address,
    )


def check(
    order: Order, plan: payouts.PayoutPlan, decoded: DecodedPsbt, own: str | None, raw: str | None = None
) -> None:
    psbt_check.check_payout(
        decoded,
        escrow=order.escrow,
        outpoints=order.funding.outpoints,
        plan_outputs=plan.outputs,
        own_pubkey=own,
        max_fee_rate=500,
        raw=raw,
    )


async def test_release_signed_by_vendor_and_buyer(regtest: Regtest, vendor_core: BitcoinCore) -> None:
    order = await funded(regtest, vendor_core, await make_escrow(regtest, vendor_core, 144), 100_000, [60_000, 50_000])
    plan = payouts.plan(PayoutKind.RELEASE, order=order, fee_rate=await vendor_core.fee_rate())
    psbt = await vendor_core.create_psbt(plan.inputs, plan.psbt_outputs, order.escrow.descriptor)
    check(order, plan, await vendor_core.decode_psbt(psbt), order.escrow.vendor.pubkey, psbt)
    signed = await vendor_core.sign(psbt)
    pending = await vendor_core.decode_psbt(signed)
    assert all(order.escrow.vendor.pubkey in i.partial_sig_pubkeys for i in pending.inputs)
    for finalize in (False, True):  # the buyer's wallet may finalize itself or leave it to us
        uploaded = regtest.cli("walletprocesspsbt", signed, True, "ALL", True, finalize, wallet="buyer")["psbt"]
        decoded = await vendor_core.decode_psbt(uploaded)
        psbt_check.check_upload(decoded, pending, escrow=order.escrow)
        check(order, plan, decoded, None, uploaded)
        with pytest.raises(PsbtRefused, match="no new signature"):
            psbt_check.check_upload(pending, pending, escrow=order.escrow)
    final = await vendor_core.finalize(await vendor_core.combine([signed, uploaded]))
    assert final.complete and final.hex is not None
    assert await vendor_core.test_accept(final.hex) is None
    tx = regtest.cli("decoderawtransaction", final.hex)
    assert tx["vsize"] <= plan.vsize <= tx["vsize"] + 4 * len(order.funding.outpoints)  # conservative, not wasteful
    await vendor_core.broadcast(final.hex)
    regtest.mine(1)
    assert await vendor_core.unspent([order.escrow.address]) == []


async def test_claim_path_waits_for_the_timeout(regtest: Regtest, vendor_core: BitcoinCore) -> None:
    order = await funded(regtest, vendor_core, await make_escrow(regtest, vendor_core, 3), 50_000, [50_000])
    claim_to = (await vendor_core.new_key()).address
    plan = payouts.plan(PayoutKind.CLAIM, order=order, fee_rate=await vendor_core.fee_rate(), claim_address=claim_to)
    psbt = await vendor_core.create_psbt(plan.inputs, plan.psbt_outputs, order.escrow.descriptor)
    check(order, plan, await vendor_core.decode_psbt(psbt), order.escrow.vendor_timeout.pubkey, psbt)
    final = await vendor_core.finalize(await vendor_core.sign(psbt))
    assert final.complete and final.hex is not None
    height = payouts.claim_height(order)
    assert height is not None
    while regtest.height() + 1 < height:
        assert await vendor_core.test_accept(final.hex) == "non-BIP68-final"
        regtest.mine(1)
    assert await vendor_core.test_accept(final.hex) is None
    tx = regtest.cli("decoderawtransaction", final.hex)
    assert tx["vsize"] <= plan.vsize <= tx["vsize"] + 4


async def test_tampered_psbts_are_refused(regtest: Regtest, vendor_core: BitcoinCore) -> None:
    order = await funded(regtest, vendor_core, await make_escrow(regtest, vendor_core, 144), 100_000, [100_000])
    plan = payouts.plan(PayoutKind.REFUND, order=order, fee_rate=await vendor_core.fee_rate())
    [(to, sat)] = plan.psbt_outputs
    desc = order.escrow.descriptor
    foreign = regtest.cli("listunspent", wallet="buyer")[0]
    variants = {
        "not in the agreed payout": (plan.inputs, [(to, sat - 1_000), (regtest.address("miner"), 1_000)]),
        "the agreed amount is": (plan.inputs, [(to, sat + 100)]),
        "the agreed amount is 9": (plan.inputs, [(to, sat - 40_000)]),
        "not an escrow output": ((*plan.inputs, (foreign["txid"], foreign["vout"], 0xFFFFFFFE)), [(to, sat)]),
    }
    vendor = order.escrow.vendor.pubkey
    for reason, (inputs, outputs) in variants.items():
        psbt = await vendor_core.create_psbt(inputs, outputs, desc)
        with pytest.raises(PsbtRefused, match=reason):
            check(order, plan, await vendor_core.decode_psbt(psbt), vendor, psbt)
    # A huge fee the other side agreed to (say, a split built by the moderator's node): the caps refuse it.
    greedy = await vendor_core.create_psbt(plan.inputs, [(to, sat - 40_000)], desc)
    with pytest.raises(PsbtRefused, match="10%"):
        psbt_check.check_payout(
            await vendor_core.decode_psbt(greedy),
            escrow=order.escrow,
            outpoints=order.funding.outpoints,
            plan_outputs=[(to, sat - 40_000)],
            own_pubkey=vendor,
            max_fee_rate=500,
        )
    good = await vendor_core.create_psbt(plan.inputs, plan.psbt_outputs, desc)
    none = regtest.cli("walletprocesspsbt", good, True, "NONE", True, False, wallet="buyer")["psbt"]
    with pytest.raises(PsbtRefused, match="sighash"):
        check(order, plan, await vendor_core.decode_psbt(none), None, none)
    with pytest.raises(PsbtRefused, match="sighash 0x02"):
        psbt_check.check_signatures(none)
    check(order, plan, await vendor_core.decode_psbt(good), vendor, good)
